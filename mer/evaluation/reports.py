"""What people read after a run: per-class tables, confusion matrices, results tables.

The numbers come from :mod:`mer.evaluation.metrics`, so a table's weighted-average F1 is the
official score. Labels may be class strings or integer indices into ``classes``.
"""
from __future__ import annotations

import math
import numbers
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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
