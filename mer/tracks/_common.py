"""What the track runners (``runner:`` in a track config) share with ``mer.pipeline.run``.

A runner walks the same way as the pipeline up to the features (output folder, resolved config,
tracker, manifest, feature cache) through :func:`track_run`, then follows its own protocol, and
ends with :func:`finish` (``results.md``, ``results.json``, tracked metrics and artifacts).

:class:`FlatFeatures` is how runners without the fusion model see a sample: every feature stream
pooled to one vector (frame-level streams: the mean over valid frames), standardised with the
training rows' statistics over the rows that have that stream, an absent stream's block set to
zero (its training mean) and one presence indicator per stream appended. Standardisation uses
no labels, so fitting it on the whole training split does not leak labels into any fold.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig

log = logging.getLogger("mer")


@dataclass
class RunContext:
    cfg: DictConfig
    out: Path
    manifest: Any
    features: Any            # mer.pipeline.FeatureSet
    tracker: Any
    device: str
    t_start: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def bundle(self):
        return self.features.bundle

    def train_samples(self) -> list:
        """The labelled rows of the training split."""
        m = self.manifest
        return [s for s in m.split(m.train_split) if s.is_labelled]


@contextmanager
def track_run(cfg: DictConfig, out_dir=None) -> Iterator[RunContext]:
    """Output folder, resolved config, tracker, manifest and features, as ``mer.pipeline.run``."""
    from mer.pipeline import feature_set, start_run

    with start_run(cfg, out_dir, f"{cfg.data.name}-{cfg.track.name}") as started:
        out, device, tracker, manifest = started.out, started.device, started.tracker, started.manifest
        fs = feature_set(cfg, manifest, device)
        with open(out / "failures.jsonl", "w", encoding="utf-8") as f:
            for rec in fs.failures:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        tracker.log_params({f"cache.{m}.key": i["cache_key"] for m, i in fs.info.items()})
        tracker.log_params({f"cache.{m}.extractor": i["extractor"] for m, i in fs.info.items()})
        yield RunContext(cfg, out, manifest, fs, tracker, device, started.t_start)


def finish(ctx: RunContext, rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, float],
           submissions: Mapping[str, Path], summary: Mapping[str, Any], artifacts: Sequence[Path] = ()):
    """Write ``results.md``/``results.json``, track metrics and artifacts; the run's RunResult."""
    from mer.evaluation.reports import results_table
    from mer.pipeline import RunResult

    out = ctx.out
    table = results_table(rows)
    (out / "results.md").write_text(table + "\n")
    full = {"track": str(ctx.cfg.track.name), "metrics": dict(metrics), "features": ctx.features.info,
            "failures": len(ctx.features.failures), "submissions": {k: str(v) for k, v in submissions.items()},
            **summary, "seconds": round(time.perf_counter() - ctx.t_start, 1)}
    (out / "results.json").write_text(json.dumps(full, indent=1, default=str))
    ctx.tracker.log_metrics(dict(metrics))
    for p in [out / "results.json", out / "results.md", out / "config_resolved.yaml", out / "failures.jsonl",
              *artifacts]:
        if Path(p).is_file():
            ctx.tracker.log_artifact(p)
    for sub in ("predictions", "submissions"):
        if (out / sub).is_dir():
            ctx.tracker.log_artifact(out / sub, sub)
    ctx.tracker.log_metrics({"seconds_total": time.perf_counter() - ctx.t_start})
    return RunResult(out, dict(metrics), table, dict(submissions), ctx.tracker.run_id, ctx.tracker.uri)


class FlatFeatures:
    """Every stream of a FeatureBundle as one standardised vector per row (see the module docstring)."""

    def fit(self, bundle) -> "FlatFeatures":
        self.streams_ = sorted(bundle.modalities)
        self.stats_ = {}
        for m in self.streams_:
            X, present = _pooled(bundle.modalities[m])
            rows = X[present] if present.any() else X
            self.stats_[m] = (rows.mean(0), rows.std(0) + 1e-6)
        return self

    def transform(self, bundle) -> np.ndarray:
        blocks = []
        for m in self.streams_:
            X, present = _pooled(bundle.modalities[m])
            mean, std = self.stats_[m]
            Z = np.where(present[:, None], (X - mean) / std, 0.0)
            blocks += [Z, present[:, None].astype(np.float64)]
        return np.concatenate(blocks, 1).astype(np.float32) if blocks else np.zeros((len(bundle.names), 0), np.float32)

    def describe(self) -> str:
        return " + ".join(f"{m} ({len(self.stats_[m][0])})" for m in self.streams_) + \
            f" + {len(self.streams_)} presence indicator(s)"


def _pooled(f) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(f.X, dtype=np.float64)
    present = np.asarray(f.present, dtype=bool)
    if X.ndim == 3:      # frame level: mean over the valid frames
        lengths = np.asarray(f.lengths)
        mask = np.arange(X.shape[1])[None, :] < lengths[:, None]
        X = (X * mask[..., None]).sum(1) / np.maximum(lengths, 1)[:, None]
    return X, present


def safe_name(text: str) -> str:
    """A predictor/method label as an MLflow metric name piece."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in str(text))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return (float(v.mean()), float(v.std())) if len(v) else (float("nan"), float("nan"))
