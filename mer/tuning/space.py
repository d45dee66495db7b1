"""Search spaces: what a trial samples (``tune.space``, ``tune.fusion_spaces``, feature streams)
and how the sample becomes a mer.run config.

A sample is a flat ``{config key: value}`` dict. Keys are dotted config paths
(``train.lr``, ``fusion.params.dropout``) plus two special ones: ``fusion`` (the fusion model,
whose ``conf/fusion/<name>.yaml`` replaces the config's) and ``modalities`` (the feature streams
that enter the fusion, ``"audio+text"``).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
FUSION_KEY = "fusion"
FEATURES_KEY = "modalities"


def _suggest(trial, key: str, spec: Mapping[str, Any]) -> Any:
    kind = spec.get("type", "float")
    if kind == "float":
        return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))
    if kind == "int":
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
    if kind == "categorical":
        return trial.suggest_categorical(key, list(spec["choices"]))
    raise ValueError(f"tune space {key}: type {kind!r} is not float, int or categorical")


def flat_specs(node: Mapping[str, Any] | None, prefix: str = "") -> dict[str, dict[str, Any]]:
    """``{train: {lr: {type: float, ...}}}`` -> ``{"train.lr": {...}}``: a node with a ``type`` is
    a parameter; dotted keys work as well."""
    out: dict[str, dict[str, Any]] = {}
    for k, v in (node or {}).items():
        if v is None:
            continue                    # tune.space.train.lr=null drops a parameter
        v = dict(v)
        if "type" in v:
            out[f"{prefix}{k}"] = v
        else:
            out.update(flat_specs(v, f"{prefix}{k}."))
    return out


def stream_subsets(streams: Sequence[str], min_streams: int = 1) -> list[str]:
    """Every subset of ``streams`` with at least ``min_streams`` members, as ``"a+b"`` (sorted),
    the full set first."""
    streams = sorted(streams)
    out = []
    for k in range(len(streams), max(1, min_streams) - 1, -1):
        out += ["+".join(c) for c in itertools.combinations(streams, k)]
    return out


class SearchSpace:
    """``sample(trial) -> {key: value}`` and ``apply(cfg, sample) -> cfg``.

    ``streams``: the feature streams of the study's features (searched as subsets when
    ``tune.features.search``); ``fusion_models``: the models searched (one = not a choice)."""

    def __init__(self, tune: Mapping[str, Any], streams: Sequence[str], default_fusion: str) -> None:
        self.space = flat_specs(tune.get("space"))
        self.fusion_spaces = {k: flat_specs(v, "fusion.") for k, v in (tune.get("fusion_spaces") or {}).items()}
        self.fusion_models = list(tune.get("fusion_models") or [default_fusion])
        feats = tune.get("features") or {}
        self.feature_choices = (stream_subsets(streams, int(feats.get("min_streams", 1)))
                                if feats.get("search", True) and len(streams) > 1 else [])
        for m in self.fusion_models:
            if not (CONF_DIR / "fusion" / f"{m}.yaml").is_file():
                known = sorted(p.stem for p in (CONF_DIR / "fusion").glob("*.yaml"))
                raise SystemExit(f"tune.fusion_models names {m!r}, which has no conf/fusion/{m}.yaml (known: {known})")

    def sample(self, trial) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if len(self.fusion_models) > 1:
            params[FUSION_KEY] = trial.suggest_categorical(FUSION_KEY, self.fusion_models)
        fusion = params.get(FUSION_KEY, self.fusion_models[0])
        if self.feature_choices:
            params[FEATURES_KEY] = trial.suggest_categorical(FEATURES_KEY, self.feature_choices)
        for key, spec in self.space.items():
            params[key] = _suggest(trial, key, spec)
        for key, spec in self.fusion_spaces.get(fusion, {}).items():
            # one Optuna name per model: a parameter of attention is not one of mlp
            name = f"{fusion}:{key}" if len(self.fusion_models) > 1 else key
            params[key] = _suggest(trial, name, spec)
        return params

    def params_of(self, cfg: DictConfig) -> dict[str, Any]:
        """The Optuna params that reproduce ``cfg``'s own values (where the space admits them):
        the config as it stands, enqueued as the study's first trial, so the study's best is never
        a step back from it on the study's folds."""
        out: dict[str, Any] = {}
        fusion = str(cfg.fusion.name)
        if fusion not in self.fusion_models:
            return out
        if len(self.fusion_models) > 1:
            out[FUSION_KEY] = fusion
        if self.feature_choices:
            out[FEATURES_KEY] = self.feature_choices[0]           # every stream
        specs = [(k, k, v) for k, v in self.space.items()]
        specs += [(f"{fusion}:{k}" if len(self.fusion_models) > 1 else k, k, v)
                  for k, v in self.fusion_spaces.get(fusion, {}).items()]
        for name, key, spec in specs:
            value = OmegaConf.select(cfg, key)
            if value is None:
                continue
            if spec.get("type") == "categorical":
                if value in list(spec["choices"]):
                    out[name] = value
            elif float(spec["low"]) <= float(value) <= float(spec["high"]):
                out[name] = int(value) if spec.get("type") == "int" else float(value)
        return out

    @staticmethod
    def from_trial_params(trial_params: Mapping[str, Any]) -> dict[str, Any]:
        """A finished trial's Optuna params back as config keys (``attention:fusion.params.x`` ->
        ``fusion.params.x``)."""
        return {k.split(":", 1)[1] if ":" in k else k: v for k, v in trial_params.items()}


def apply_params(cfg: DictConfig, params: Mapping[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with the sample applied: ``fusion`` first (the model's YAML replaces the
    fusion node), then every dotted key."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    if FUSION_KEY in params and params[FUSION_KEY] != out.fusion.name:
        out.fusion = OmegaConf.load(CONF_DIR / "fusion" / f"{params[FUSION_KEY]}.yaml")
    for key, value in params.items():
        if key == FUSION_KEY:
            continue
        if key == FEATURES_KEY:
            out.modalities = str(value).split("+") if isinstance(value, str) else list(value)
            continue
        OmegaConf.update(out, key, value, merge=False, force_add=True)
    return out
