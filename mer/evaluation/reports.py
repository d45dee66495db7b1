"""What people read after a run: per-class tables, confusion matrices, results tables.

The numbers come from :mod:`mer.evaluation.metrics`, so a table's weighted-average F1 is the
official score. Labels may be class strings or integer indices into ``classes``.
"""
from __future__ import annotations

import math
import numbers
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from mer.evaluation.metrics import ArrayLike, per_class_scores

WEIGHTED_AVG_ROW = "weighted avg"


def _to_indices(y: ArrayLike, classes: Sequence[str]) -> np.ndarray:
    """Labels as indices into ``classes``; class strings are looked up, indices range-checked."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if y.dtype.kind in "iu":
        bad = (y < 0) | (y >= len(classes))
        if bad.any():
            raise ValueError(f"{int(bad.sum())} label indices are outside 0..{len(classes) - 1}: "
                             f"{sorted(set(y[bad].tolist()))[:5]}")
        return y.astype(np.int64)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({str(v) for v in y.tolist() if v not in index})
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not among the classes {list(classes)}")
    return np.array([index[v] for v in y.tolist()], dtype=np.int64)


def per_class_table(y_true: ArrayLike, y_pred: ArrayLike, classes: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class, plus a support-weighted ``weighted avg`` row.

    Rows are ``classes`` in their given order (absent classes included, scored 0 with support 0);
    the ``weighted avg`` F1 equals :func:`~mer.evaluation.metrics.weighted_f1`.
    """
    t, p = _to_indices(y_true, classes), _to_indices(y_pred, classes)
    scores = per_class_scores(t, p, labels=np.arange(len(classes)))
    table = pd.DataFrame({
        "precision": scores.precision,
        "recall": scores.recall,
        "f1": scores.f1,
        "support": scores.support.astype(np.int64),
    }, index=pd.Index(list(classes), name="class"))
    weights = scores.support / scores.support.sum()
    table.loc[WEIGHTED_AVG_ROW] = [
        float(weights @ scores.precision),
        float(weights @ scores.recall),
        float(weights @ scores.f1),
        int(scores.support.sum()),
    ]
    table["support"] = table["support"].astype(np.int64)
    return table


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n: int) -> np.ndarray:
    """Counts ``[n, n]``: row = true class index, column = predicted class index."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of one length, got {t.shape} and {p.shape}")
    for name, y in (("y_true", t), ("y_pred", p)):
        if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() >= n)):
            raise ValueError(f"{name} must hold class indices in 0..{n - 1}")
    return np.bincount(t * n + p, minlength=n * n).reshape(n, n)


def _row_normalised(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)


def plot_confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, classes: Sequence[str],
                          path: str | Path, title: str | None = None,
                          normalize: bool = True) -> Path:
    """Write a PNG confusion matrix; each cell shows its count and its share of the true class.

    ``normalize`` picks what the colours show: row-normalised shares (default, so small classes
    are as visible as large ones) or raw counts. Returns the written path.
    """
    # Figure + Agg canvas instead of pyplot: no global figure state to leak, and no GUI backend
    # is needed on headless machines.
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: loads matplotlib only when used
    from matplotlib.figure import Figure  # deferred: loads matplotlib only when used

    n = len(classes)
    counts = confusion_matrix(_to_indices(y_true, classes), _to_indices(y_pred, classes), n)
    shares = _row_normalised(counts)
    shown = shares if normalize else counts

    side = max(4.5, 0.9 * n + 2.5)
    fig = Figure(figsize=(side + 1.0, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, counts.max()))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                 label="share of true class" if normalize else "count")
    _annotate_cells(ax, counts, shares, shown, threshold=0.5 * (1 if normalize else counts.max()))

    ax.set_xticks(range(n), labels=list(classes), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    kind = "row-normalised" if normalize else "counts"
    ax.set_title(title or f"Confusion matrix ({kind}, n={int(counts.sum())})")
    fig.tight_layout()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path


def _annotate_cells(ax: Any, counts: np.ndarray, shares: np.ndarray, shown: np.ndarray,
                    threshold: float) -> None:
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            # White text on dark cells, black on light ones, so every number stays legible.
            colour = "white" if shown[i, j] > threshold else "black"
            ax.text(j, i, f"{counts[i, j]}\n{100 * shares[i, j]:.1f}%",
                    ha="center", va="center", fontsize=9, color=colour)


def fusion_label(modalities: Sequence[str], fusion: str) -> str:
    """What a results row says for its fusion model: the model's name where streams are fused,
    ``-`` for a single stream (nothing is fused, even though the model's encoder and heads train it)."""
    return str(fusion) if len(modalities) > 1 else "-"


def results_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                  float_digits: int = 4) -> str:
    """A Markdown table of ``rows`` (dicts), padded so it also reads well in a terminal.

    ``columns`` picks and orders the keys (default: every key, in first-seen order). Floats get
    ``float_digits`` decimals; missing values and NaN are blank; number columns align right.
    """
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_format_cell(row.get(col), float_digits) for col in columns] for row in rows]
    numeric = [_is_number_column([row.get(col) for row in rows]) for col in columns]
    header = [str(col).replace("|", "\\|") for col in columns]
    widths = [max([3, len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        padded = [v.rjust(w) if right else v.ljust(w)
                  for v, w, right in zip(values, widths, numeric)]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if right else "-" * w
                             for w, right in zip(widths, numeric)) + " |"
    return "\n".join([line(header), rule] + [line(r) for r in cells]) + "\n"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, numbers.Real) and math.isnan(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _is_number_column(values: Sequence[Any]) -> bool:
    present = [v for v in values if not _is_missing(v)]
    return bool(present) and all(_is_number(v) for v in present)


def _format_cell(value: Any, float_digits: int) -> str:
    if _is_missing(value):
        return ""
    if isinstance(value, (float, np.floating)):  # ints stay exact (counts, epochs, seeds)
        return f"{value:.{float_digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: loads matplotlib only when used
    from matplotlib.figure import Figure  # deferred: loads matplotlib only when used

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


_METRIC_LABELS = {"wf1": "weighted F1", "acc": "accuracy", "combined": "F1 - 0.25 MSE"}


def plot_robustness_curve(curves: Mapping[str, Mapping[str, float]], path: str | Path,
                          metric: str = "wf1", title: str | None = None) -> Path:
    """Write a PNG of scores against corruption strength, one line per trained model.

    ``curves``: ``{label: {condition: score}}`` with conditions ``clean``, ``snr<k>``,
    ``blur<f>`` and ``mixed`` (see :mod:`mer.data.corrupt`). Left: score against the SNR of the
    speech noise (clean at the right end); right: against the blur factor (1 = clean); the
    organisers' ``mixed`` draw is a dashed level in both."""
    fig = _figure(10.5, 4.2)
    ax_snr, ax_blur = fig.subplots(1, 2, sharey=True)
    snrs = sorted({int(m[1]) for c in curves.values() for k in c if (m := re.fullmatch(r"snr(-?\d+)", k))})
    clean_x = (max(snrs) + 3) if snrs else 0
    colours = [f"C{i}" for i in range(10)]
    for (label, pts), colour in zip(curves.items(), colours):
        snr_pts = sorted((int(k[3:]), v) for k, v in pts.items() if re.fullmatch(r"snr-?\d+", k))
        blur_pts = sorted((int(k[4:]), v) for k, v in pts.items() if re.fullmatch(r"blur\d+", k))
        if snr_pts:
            ax_snr.plot(*zip(*snr_pts), "o-", color=colour, label=label)
        if "clean" in pts:
            ax_snr.plot([clean_x], [pts["clean"]], "s", color=colour)
            if snr_pts:
                ax_snr.plot([snr_pts[-1][0], clean_x], [snr_pts[-1][1], pts["clean"]], ":", color=colour)
            blur_pts = [(1, pts["clean"])] + blur_pts
        if blur_pts:
            ax_blur.plot([math.log2(f) for f, _ in blur_pts], [v for _, v in blur_pts], "o-", color=colour,
                         label=label)
        if "mixed" in pts:
            for ax in (ax_snr, ax_blur):
                ax.axhline(pts["mixed"], color=colour, ls="--", lw=1, alpha=0.8)
    if snrs:
        ax_snr.set_xticks(snrs + [clean_x], labels=[str(s) for s in snrs] + ["clean"])
    ax_snr.set_xlabel("speech-noise SNR (dB)")
    ax_snr.set_ylabel(_METRIC_LABELS.get(metric, metric))
    factors = sorted({int(k[4:]) for c in curves.values() for k in c if re.fullmatch(r"blur\d+", k)} | {1})
    ax_blur.set_xticks([math.log2(f) for f in factors], labels=[f"x{f}" + (" (clean)" if f == 1 else "")
                                                              for f in factors])
    ax_blur.set_xlabel("pyramid blur factor")
    for ax in (ax_snr, ax_blur):
        ax.grid(alpha=0.3)
    handles, labels = ax_snr.get_legend_handles_labels()
    if any("mixed" in c for c in curves.values()):
        from matplotlib.lines import Line2D  # deferred: loads matplotlib only when used

        handles.append(Line2D([], [], color="grey", ls="--"))
        labels.append("mixed (SNR 5-10 dB, blur x1/x2/x4)")
    if handles:
        ax_blur.legend(handles, labels, loc="lower left", fontsize=8)
    fig.suptitle(title or "Robustness to MER-NOISE corruption")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path


def plot_self_training(rounds: pd.DataFrame, classes: Sequence[str], path: str | Path) -> Path:
    """Write a PNG of self-training by round: pseudo-labels per class (stacked bars) and the
    scores (CV weighted F1 and every labelled split's weighted F1) as lines."""
    fig = _figure(7.5, 5.0)
    ax = fig.add_subplot()
    x = rounds["round"].to_numpy()
    bottom = np.zeros(len(rounds))
    for i, c in enumerate(classes):
        col = f"n_pseudo_{c}"
        if col in rounds:
            h = rounds[col].fillna(0).to_numpy(float)
            ax.bar(x, h, bottom=bottom, color=f"C{i}", alpha=0.45, label=c, width=0.6)
            bottom += h
    ax.set_xlabel("round (0 = labelled data only)")
    ax.set_ylabel("pseudo-labelled pool rows")
    ax.set_xticks(x)
    ax2 = ax.twinx()
    score_cols = [c for c in rounds.columns if c in {"cv_wf1", "oof_wf1"} or
                  (c.endswith("_wf1") and not c.startswith(("cv_", "oof_")))]
    for k, col in enumerate(score_cols):
        vals = rounds[col].to_numpy(float)
        ax2.plot(x, vals, "o-", color="black" if col == "cv_wf1" else f"C{(k + 6) % 10}",
                 label=f"{col} (CV, optimistic after round 0)" if col == "cv_wf1" else col)
    ax2.set_ylabel("weighted F1")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4,
              frameon=False)
    ax.set_title("Self-training over the unlabelled pool")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path
