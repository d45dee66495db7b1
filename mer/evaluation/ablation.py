"""Ablation tables from many runs: one row per cell (features × modalities × fusion model), mean ±
std over every seed of every run in the cell; bars with error bars; per-modality contribution;
feature ranking and top-n feature fusion. A single modality's row says ``-`` for fusion, as a
run's own table does, and pools the runs of every fusion model that trained it (``models``).

Runs are read from their ``results.json`` (a run folder, a Hydra multirun folder, any folder
above them) or from an MLflow experiment (each run's ``results.json`` artifact). A run's
``ablation`` list holds the fused setting and, with ``ablate_modalities``, each single modality,
so one multirun over ``features/text=a,b fusion=x,y train.seeds=[0,1,2]`` fills the whole table.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from mer.core.redact import mask_secrets
from mer.evaluation.reports import fusion_label, results_table

METRICS = ("wf1", "combined", "acc", "mse")


@dataclass
class RunRecord:
    source: str
    fusion: str
    features: dict[str, dict[str, Any]]      # stream -> {"extractor", "modality"}
    seeds: list[int]
    ablation: list[dict[str, Any]]
    metric: str = "wf1"


@dataclass
class Cell:
    features: str
    modalities: tuple[str, ...]
    fusion: str                              # "-" for a single modality (nothing fused)
    stats: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)   # metric -> [(mean, std, n)]
    tests: dict[str, list[float]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)   # the fusion models of the runs in the cell


def _fusion_of(run_dir: Path, summary: Mapping[str, Any]) -> str:
    cfg = run_dir / "config_resolved.yaml"
    if cfg.is_file():
        node = OmegaConf.load(cfg)
        return str(node.get("fusion", {}).get("name", "?"))
    return str(summary.get("fusion", "?"))


def record_from_summary(summary: Mapping[str, Any], fusion: str, source: str) -> RunRecord:
    feats = {s: {"extractor": i.get("extractor"), "modality": i.get("modality", s)}
             for s, i in (summary.get("features") or {}).items() if "@" not in s and "/" not in s}
    return RunRecord(source, fusion, feats, list(summary.get("seeds") or [0]), list(summary.get("ablation") or []),
                     str(summary.get("metric", "wf1")))


def load_folder(root: str | Path) -> list[RunRecord]:
    """Every run under ``root`` (a run folder, a multirun folder, a tune folder...)."""
    root = Path(root)
    files = [root / "results.json"] if (root / "results.json").is_file() else sorted(root.rglob("results.json"))
    out = []
    for f in files:
        summary = json.loads(f.read_text())
        out.append(record_from_summary(summary, _fusion_of(f.parent, summary), str(f.parent)))
    return out


def load_mlflow(experiment: str, tracking_uri: str | None = None) -> list[RunRecord]:
    """Every finished run of an MLflow experiment that logged a ``results.json`` artifact."""
    import mlflow  # deferred: loads mlflow only when used

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = [e.name for e in client.search_experiments()]

        where = mask_secrets(client._tracking_client.tracking_uri)
        raise SystemExit(f"no MLflow experiment {experiment!r} in {where} (have: {known})")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                    max_results=10000):
            names = {a.path for a in client.list_artifacts(r.info.run_id)}
            if "results.json" not in names:
                continue                          # a study's parent run, a trial: no results table
            p = client.download_artifacts(r.info.run_id, "results.json", tmp)
            summary = json.loads(Path(p).read_text())
            fusion = r.data.tags.get("fusion") or r.data.params.get("fusion.name", "?")
            out.append(record_from_summary(summary, fusion, f"mlflow:{r.info.run_id} ({r.info.run_name})"))
    return out


def load_runs(spec: str, tracking_uri: str | None = None) -> list[RunRecord]:
    if spec.startswith("mlflow:"):
        return load_mlflow(spec[len("mlflow:"):], tracking_uri)
    if not Path(spec).exists():
        raise SystemExit(f"{spec} is neither a folder of runs nor mlflow:<experiment>")
    return load_folder(spec)


def _features_label(rec: RunRecord, streams: Sequence[str]) -> str:
    return ", ".join(f"{s}={rec.features.get(s, {}).get('extractor') or '?'}" for s in sorted(streams))


def cells(records: Iterable[RunRecord]) -> list[Cell]:
    """Rows of every run grouped by (features of the row's streams, modalities, fusion model); a
    single stream's cell is ``-`` for fusion and holds the runs of every fusion model (each
    model's encoder and heads on that stream count as runs of their own, see ``models``)."""
    out: dict[tuple, Cell] = {}
    seen: set[tuple] = set()
    for rec in records:
        for row in rec.ablation:
            if row.get("strategy", "supervised").endswith("(baseline)"):
                continue
            mods = tuple(sorted(row["modalities"]))
            key = (_features_label(rec, mods), mods, fusion_label(mods, rec.fusion))
            cell = out.setdefault(key, Cell(*key))
            if (key, rec.fusion, tuple(rec.seeds)) in seen:    # the same setting on the same seeds in another run
                continue
            seen.add((key, rec.fusion, tuple(rec.seeds)))
            if rec.fusion not in cell.models:
                cell.models.append(rec.fusion)
            n = len(rec.seeds)
            for m in METRICS:
                v = (row.get("cv") or {}).get(f"cv_{m}")
                if v is not None:
                    cell.stats.setdefault(m, []).append((float(v["mean"]), float(v["std"]), n))
            for k, v in (row.get("test") or {}).items():
                cell.tests.setdefault(k, []).append(float(v))
            cell.sources.append(rec.source)
    return list(out.values())


def pooled(parts: Sequence[tuple[float, float, int]]) -> tuple[float, float, int]:
    """Mean and (population) std over every seed of several runs, from each run's mean, std and
    seed count (law of total variance), so a cell's spread is over seeds, not over run means."""
    n = sum(p[2] for p in parts)
    mean = sum(m * k for m, _, k in parts) / n
    var = sum(k * (s * s + (m - mean) ** 2) for m, s, k in parts) / n
    return mean, math.sqrt(max(var, 0.0)), n


def table(cell_list: Sequence[Cell], metrics: Sequence[str] = ("wf1", "combined")) -> pd.DataFrame:
    rows = []
    for c in cell_list:
        row: dict[str, Any] = {"features": c.features, "modalities": "+".join(c.modalities), "fusion": c.fusion,
                               "runs": len(c.sources), "models": "+".join(sorted(c.models))}
        for m in metrics:
            if m in c.stats:
                mean, std, n = pooled(c.stats[m])
                row[f"cv_{m}_mean"], row[f"cv_{m}_std"] = mean, std
                row["seeds"] = n
        for k, vs in sorted(c.tests.items()):
            if k.endswith(("_wf1", "_combined")):
                row[f"test_{k}"] = float(np.mean(vs))
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    first = next((f"cv_{m}_mean" for m in metrics if f"cv_{m}_mean" in df), None)
    df = df.sort_values(["modalities", first] if first else ["modalities"], ascending=[True, False] if first else True)
    return df.reset_index(drop=True)


def markdown(df: pd.DataFrame, metrics: Sequence[str] = ("wf1", "combined")) -> str:
    rows = []
    for _, r in df.iterrows():
        row = {"features": r["features"], "modalities": r["modalities"], "fusion": r["fusion"],
               "seeds": int(r.get("seeds", 0))}
        for m in metrics:
            if f"cv_{m}_mean" in r and not pd.isna(r[f"cv_{m}_mean"]):
                row[f"cv_{m}"] = f"{r[f'cv_{m}_mean']:.4f} ± {r[f'cv_{m}_std']:.4f}"
        for k in r.index:
            if k.startswith("test_") and not pd.isna(r[k]):
                row[k] = f"{r[k]:.4f}"
        rows.append(row)
    return results_table(rows)


def contributions(df: pd.DataFrame, metric: str = "wf1") -> pd.DataFrame:
    """Per fused cell and modality: leave-one-modality-out (fused − fused without it) where that
    cell exists with the same fusion model, else fused − the modality alone."""
    col = f"cv_{metric}_mean"
    if df.empty or col not in df:
        return pd.DataFrame(columns=["setting", "modality", "delta", "kind"])
    index = {(r["modalities"], r["fusion"], r["features"]): r[col] for _, r in df.iterrows()}
    out = []
    for _, r in df.iterrows():
        mods = r["modalities"].split("+")
        if len(mods) < 2:
            continue
        parts = dict(p.partition("=")[::2] for p in r["features"].split(", "))
        setting = f"{r['modalities']} ({r['fusion']}; {r['features']})"
        for m in mods:
            rest = [x for x in mods if x != m]
            rest_feats = ", ".join(f"{s}={parts[s]}" for s in sorted(rest))
            loo = index.get(("+".join(rest), r["fusion"] if len(rest) > 1 else "-", rest_feats))
            if loo is not None and len(rest) > 1:
                out.append({"setting": setting, "modality": m, "delta": r[col] - loo, "kind": "leave-one-out"})
                continue
            alone = index.get((m, "-", f"{m}={parts[m]}"))
            if len(rest) == 1 and loo is not None:     # two modalities: dropping m leaves the other alone
                out.append({"setting": setting, "modality": m, "delta": r[col] - loo, "kind": "leave-one-out"})
            elif alone is not None:
                out.append({"setting": setting, "modality": m, "delta": r[col] - alone, "kind": "fused − alone"})
    return pd.DataFrame(out, columns=["setting", "modality", "delta", "kind"])


def _figure(width: float, height: float):
    import matplotlib  # deferred: loads matplotlib only when used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: loads matplotlib only when used

    return plt.subplots(figsize=(width, height))


def plot_bars(df: pd.DataFrame, path: Path, metric: str = "wf1") -> Path:
    col, err = f"cv_{metric}_mean", f"cv_{metric}_std"
    d = df.dropna(subset=[col]).iloc[::-1]
    labels = [f"{r['modalities']} | {r['fusion']} | {r['features']}" for _, r in d.iterrows()]
    fig, ax = _figure(10, 0.45 * len(d) + 1.5)
    ax.barh(range(len(d)), d[col], xerr=d[err], capsize=3, color="#4c72b0")
    ax.set_yticks(range(len(d)), labels, fontsize=7)
    ax.set_xlabel(f"CV {metric} (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt  # deferred: loads matplotlib only when used

    plt.close(fig)
    return path


def plot_contributions(contrib: pd.DataFrame, path: Path, metric: str = "wf1") -> Path:
    settings = list(dict.fromkeys(contrib["setting"]))
    mods = sorted(set(contrib["modality"]))
    fig, ax = _figure(9, 0.5 * max(1, len(settings)) * max(1, len(mods)) / 2 + 2)
    h = 0.8 / max(1, len(mods))
    for j, m in enumerate(mods):
        vals = [contrib[(contrib.setting == s) & (contrib.modality == m)]["delta"].sum()
                if ((contrib.setting == s) & (contrib.modality == m)).any() else np.nan for s in settings]
        ax.barh(np.arange(len(settings)) + j * h, vals, height=h, label=m)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(np.arange(len(settings)) + 0.4 - h / 2, settings, fontsize=7)
    kinds = ", ".join(sorted(set(contrib["kind"])))
    ax.set_xlabel(f"Δ CV {metric} from each modality ({kinds})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt  # deferred: loads matplotlib only when used

    plt.close(fig)
    return path


# --- feature ranking and top-n fusion ---------------------------------------------------------
def feature_ranking(df: pd.DataFrame, metric: str = "wf1") -> pd.DataFrame:
    """Single features ranked by CV score within each modality (the unimodal cells; a feature
    run through several fusion models scores the mean over all their seeds)."""
    col = f"cv_{metric}_mean"
    uni = df[(~df["modalities"].str.contains("+", regex=False)) & df[col].notna()] if col in df else df.iloc[0:0]
    rows = []
    for _, r in uni.iterrows():
        stream, _, extractor = r["features"].partition("=")
        rows.append({"modality": stream.split("_")[0], "extractor": extractor,
                     "fusion": r.get("models", r["fusion"]),       # "-" in the table: the models that trained it
                     f"cv_{metric}": r[col], f"cv_{metric}_std": r[f"cv_{metric}_std"]})
    cols = ["modality", "extractor", f"cv_{metric}", f"cv_{metric}_std"]
    if not rows:
        return pd.DataFrame(columns=cols + ["fusion_models", "rank"])
    rank = (pd.DataFrame(rows).groupby(["modality", "extractor"], as_index=False)
            .agg(**{f"cv_{metric}": (f"cv_{metric}", "mean"), f"cv_{metric}_std": (f"cv_{metric}_std", "mean"),
                    "fusion_models": ("fusion", lambda f: "+".join(sorted({m for x in f for m in x.split("+")})))}))
    rank = rank.sort_values(f"cv_{metric}", ascending=metric == "mse")
    rank["rank"] = rank.groupby("modality").cumcount() + 1
    return rank.sort_values(["modality", "rank"]).reset_index(drop=True)


def top_n_overrides(ranking: pd.DataFrame, n: int, modalities: Sequence[str]) -> list[str]:
    """``mer.run`` overrides that fuse the top ``n`` features of each of ``modalities`` — each
    modality's own list, once (MERTools' two-modality modes fuse the text list twice)."""
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities {list(modalities)} name one twice")
    out = []
    for m in ("text", "audio", "visual"):
        if m not in modalities:
            out.append(f"features/{m}=none")
            continue
        top = ranking[ranking["modality"] == m].head(n)["extractor"].tolist()
        if not top:
            raise SystemExit(f"no single-{m} run to rank: run the {m} features alone first (ablate_modalities=true)")
        out.append(f"features/{m}={top[0]}")
        out += [f"+features.{m}_{k + 1}.name={name}" for k, name in enumerate(top[1:], start=1)]
    return out


def write_report(records: Sequence[RunRecord], out_dir: Path, metric: str = "wf1",
                 top_n: int | None = None, top_modalities: Sequence[str] = ()) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = [metric] + [m for m in ("wf1", "combined") if m != metric]
    df = table(cells(records), metrics)
    if df.empty:
        raise SystemExit("no run with a results table found")
    paths = {"csv": out_dir / "ablation.csv", "md": out_dir / "ablation.md",
             "bars": out_dir / "ablation_bars.png"}
    df.to_csv(paths["csv"], index=False)
    md = markdown(df, metrics)
    paths["md"].write_text(md + "\n")
    plot_bars(df, paths["bars"], metric)
    contrib = contributions(df, metric)
    if not contrib.empty:
        paths["contrib_csv"] = out_dir / "modality_contribution.csv"
        contrib.to_csv(paths["contrib_csv"], index=False)
        paths["contrib"] = plot_contributions(contrib, out_dir / "modality_contribution.png", metric)
    rank = feature_ranking(df, metric)
    if not rank.empty:
        paths["ranking"] = out_dir / "feature_ranking.csv"
        rank.to_csv(paths["ranking"], index=False)
        if top_n:
            mods = list(top_modalities) or sorted(set(rank["modality"]))
            cmd = "python -m mer.run " + " ".join(top_n_overrides(rank, top_n, mods))
            paths["topn"] = out_dir / "top_n_command.txt"
            paths["topn"].write_text(cmd + "\n")
    return paths
