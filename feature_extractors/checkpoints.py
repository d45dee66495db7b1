"""Reading PyTorch checkpoints safely.

Research code saves ``{'model': state_dict, 'optimizer', 'epoch', 'scaler', 'args': Namespace}``
(the VideoMAE/MAE-DFER ``utils.save_model`` layout). Since torch 2.6, ``torch.load`` defaults to
``weights_only=True`` and refuses the ``argparse.Namespace`` in ``args``; ``weights_only=False``
would run arbitrary code from the file. :func:`load_torch_checkpoint` keeps ``weights_only=True``
and admits exactly the extra classes such files hold (the args, numpy scalars).
"""
from __future__ import annotations

import argparse
import os
import pickle
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from mer.core.io import atomic_file

_NUMPY_SCALAR = np._core.multiarray.scalar
SAFE_CHECKPOINT_GLOBALS: tuple[Any, ...] = (
    argparse.Namespace,
    # numpy scalars: the official per-step schedule writes numpy.float64 learning rates into the
    # optimizer's param_groups, which the checkpoint keeps. Files pickled under numpy 1.x name
    # the scalar constructor numpy.core.multiarray.scalar, under numpy 2 numpy._core...
    _NUMPY_SCALAR, (_NUMPY_SCALAR, "numpy.core.multiarray.scalar"), np.dtype,
    *(getattr(np.dtypes, f"{kind}DType") for kind in ("Float64", "Float32", "Float16", "Int64", "Int32", "Bool")),
)
"""What a checkpoint may hold beyond tensors and containers: the training script's args and
numpy scalars (each constructor rebuilds a value from plain data; none runs code)."""


def load_torch_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` admitting :data:`SAFE_CHECKPOINT_GLOBALS`; raises
    ``FileNotFoundError`` or a ``ValueError`` that says what the file holds that is refused."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(list(SAFE_CHECKPOINT_GLOBALS)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds objects a weights-only load refuses ({err}); only tensors, "
                         "containers, argparse.Namespace and numpy scalars are admitted") from err


def read_checkpoint_args(path: str | os.PathLike) -> dict[str, Any]:
    """The ``args`` of an official-format checkpoint as a dict (``{}`` when it has none), without
    reading its tensors: the file is memory-mapped (a decoding worker learns the clip size this way,
    not by loading 300 MB of weights); a legacy non-zip file is read whole."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with torch.serialization.safe_globals(list(SAFE_CHECKPOINT_GLOBALS)):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:           # not the zip format: no memory map
            ckpt = load_torch_checkpoint(path)
    args = ckpt.get("args") if isinstance(ckpt, Mapping) else None
    return vars(args) if args is not None and hasattr(args, "__dict__") else dict(args or {})


def save_official_checkpoint(model: torch.nn.Module, path: str | os.PathLike, args: Any, *, epoch: Any = "best",
                             optimizer: Any = None, scaler: Any = None) -> None:
    """``model`` as the official ``utils.save_model`` of the MAE-DFER / SVFAP / HiCMAE code writes
    it: ``{'model': state_dict (float32 on the CPU), 'optimizer', 'epoch', 'scaler', 'args'}``,
    whole or not at all (:func:`mer.core.io.atomic_file`)."""
    state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
             for k, v in model.state_dict().items()}
    ckpt = {"model": state, "optimizer": optimizer.state_dict() if optimizer is not None else {}, "epoch": epoch,
            "scaler": scaler.state_dict() if scaler is not None else {}, "args": args}
    with atomic_file(path) as f:
        torch.save(ckpt, f)


def unwrap_state_dict(ckpt: Any, keys: Sequence[str] = ("model", "module", "state_dict")) -> dict[str, torch.Tensor]:
    """The state_dict inside a checkpoint: the first of ``keys`` present (``'model'`` for the
    ``save_model`` layout), else the checkpoint itself when it is a mapping of tensors."""
    if isinstance(ckpt, Mapping):
        for key in keys:
            if isinstance(ckpt.get(key), Mapping):
                return dict(ckpt[key])
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return dict(ckpt)
    top = sorted(ckpt)[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
    raise ValueError(f"no state_dict in this checkpoint (looked for {list(keys)}; it has {top})")
