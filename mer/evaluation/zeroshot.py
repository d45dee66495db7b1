"""Re-scoring GPT-4V-emotion's released predictions (``zeroQiaoba/gpt4v-emotion``, ``results/``)
with mer's metrics, beside the figures the paper reports.

The released files are ``results/<dataset>/label-gpt4v[-<variant>].csv`` with the columns
``name,gt,gpt4v``: the ground truth and GPT-4V's ranked answer as comma-separated labels
(``Neutral,Sadness,Disgust,Fear,Anger``; the text between the brackets of its
``{'name':, 'result': [...]}`` records). mer's reading: the top-1 prediction is the first label of
the ranking, compared case-blind and stripped with the ground truth; an empty ranking is wrong.
Scores: accuracy (= WAR), UAR (the mean per-class recall over the ground-truth classes) and the
weighted F1 (WAF).

:data:`PAPER` lists the figures of the paper's tables 3-7 (arXiv 2312.04293) for each released
file: top-1 accuracy in tables 3, 4, 5 and 7 (the captions do not name the metric; accuracy is
what the released predictions give for the datasets checked), WAR/UAR in table 6. The sentiment
datasets (CMU-MOSI, CH-SIMS) use five sentiment classes; ``sentiment="binary"`` folds them into
negative / positive, leaving neutral out, a reading the paper does not confirm.

These files carry the *test* labels of their datasets (the ``gt`` column; MER2023's are the
official test1 labels): mer's own tests never read them. They exercise this scorer on files
written in the same layout; ``python -m mer.mllm rescore DIR`` runs it on a copy a user fetched.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mer.evaluation.metrics import weighted_f1


@dataclass(frozen=True)
class PaperFigure:
    """One released file's figures in the paper: ``metrics`` maps ``acc``/``war``/``uar`` to %."""

    dataset: str
    variant: str
    table: int
    metrics: Mapping[str, float]


PAPER: Mapping[str, PaperFigure] = {
    "ckplus/label-gpt4v.csv": PaperFigure("CK+", "", 3, {"acc": 69.72}),
    "sfew2/label-gpt4v.csv": PaperFigure("SFEW 2.0", "", 3, {"acc": 57.24}),
    "rafdb/label-gpt4v-rgb.csv": PaperFigure("RAF-DB", "rgb", 3, {"acc": 75.81}),
    "ferplus/label-gpt4v.csv": PaperFigure("FERPlus", "", 3, {"acc": 64.25}),
    "affectnet/label-gpt4v.csv": PaperFigure("AffectNet", "", 3, {"acc": 42.77}),
    "abstract/label-gpt4v.csv": PaperFigure("Abstract", "", 4, {"acc": 71.81}),
    "artphoto/label-gpt4v.csv": PaperFigure("ArtPhoto", "", 4, {"acc": 80.40}),
    "twitter1/label-five-gpt4v.csv": PaperFigure("Twitter I", "5 agree", 4, {"acc": 97.81}),
    "twitter1/label-four-gpt4v.csv": PaperFigure("Twitter I", "4 agree", 4, {"acc": 94.63}),
    "twitter1/label-three-gpt4v.csv": PaperFigure("Twitter I", "3 agree", 4, {"acc": 90.71}),
    "twitter2/label-gpt4v.csv": PaperFigure("Twitter II", "", 4, {"acc": 87.95}),
    "casme1/label-gpt4v.csv": PaperFigure("CASME", "", 5, {"acc": 36.93}),
    "casme2/label-gpt4v.csv": PaperFigure("CASME II", "", 5, {"acc": 14.64}),
    "samm/label-gpt4v.csv": PaperFigure("SAMM", "", 5, {"acc": 17.04}),
    "dfew/label-gpt4v.csv": PaperFigure("DFEW (fd1)", "", 6, {"war": 43.80, "uar": 36.96}),
    "ferv39k/label-gpt4v.csv": PaperFigure("FERV39k", "", 6, {"war": 34.29, "uar": 24.92}),
    "ravdess/label-gpt4v-3.csv": PaperFigure("RAVDESS", "3 frames", 6, {"war": 34.31, "uar": 36.98}),
    "enterface/label-gpt4v-3.csv": PaperFigure("eNTERFACE05", "3 frames", 6, {"war": 33.28, "uar": 33.11}),
    "cmumosi/label-gpt4v-multi.csv": PaperFigure("CMU-MOSI", "multi", 7, {"acc": 80.43}),
    "sims/label-gpt4v-multi.csv": PaperFigure("CH-SIMS", "multi", 7, {"acc": 81.24}),
    "mer2023/label-gpt4v-multi.csv": PaperFigure("MER2023", "multi", 7, {"acc": 63.50}),
}

_SENTIMENT_BINARY = {"negative": "negative", "weakly negative": "negative",
                     "positive": "positive", "weakly positive": "positive"}


def top1(ranking: str) -> str:
    """The first label of a released ranking, lower-cased and stripped (``""`` when empty)."""
    first = str(ranking or "").split(",")[0]
    return first.strip().strip("'\"[] ").lower()


def read_released(path: str | Path) -> tuple[list[str], list[str], list[str]]:
    """``(names, ground truth, top-1 predictions)`` of one ``name,gt,gpt4v`` file, lower-cased."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"name", "gt", "gpt4v"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a released GPT-4V prediction file (no column {sorted(missing)}; "
                             f"expected name,gt,gpt4v)")
        names, gt, pred = [], [], []
        for row in reader:
            names.append(row["name"])
            gt.append(str(row["gt"] or "").strip().lower())
            pred.append(top1(row["gpt4v"]))
    return names, gt, pred


def zero_shot_scores(gt: Sequence[str], pred: Sequence[str], sentiment: str = "five") -> dict[str, float]:
    """Accuracy (WAR), UAR and weighted F1 in %, and the number of rows scored.
    ``sentiment="binary"``: five sentiment classes folded to negative / positive, neutral ground
    truth left out (module docstring)."""
    g, p = list(gt), list(pred)
    if sentiment == "binary":
        keep = [i for i, x in enumerate(g) if x in _SENTIMENT_BINARY]
        g = [_SENTIMENT_BINARY[g[i]] for i in keep]
        p = [_SENTIMENT_BINARY.get(p[i], p[i]) for i in keep]
    elif sentiment != "five":
        raise ValueError(f"sentiment must be 'five' or 'binary', got {sentiment!r}")
    if not g:
        raise ValueError("no row to score")
    classes = sorted(set(g))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[x] for x in g])
    yp = np.array([index.get(x, -1) for x in p])          # -1: a label outside the ground truth's
    acc = float((y == yp).mean())
    uar = float(np.mean([(yp[y == k] == k).mean() for k in range(len(classes))]))
    waf = weighted_f1(y, yp, labels=np.arange(len(classes)))
    return {"acc": 100 * acc, "war": 100 * acc, "uar": 100 * uar, "waf": 100 * waf, "n": float(len(g))}


def rescore_folder(results_dir: str | Path, sentiment: str = "five") -> list[dict[str, object]]:
    """One row per released file under ``results_dir`` (``<dataset>/label-gpt4v*.csv``): the paper's
    figure(s) beside mer's."""
    root = Path(results_dir)
    rows: list[dict[str, object]] = []
    for path in sorted(root.glob("*/label*gpt4v*.csv")):
        rel = f"{path.parent.name}/{path.name}"
        names, gt, pred = read_released(path)
        senti = sentiment if path.parent.name in ("cmumosi", "sims") else "five"
        mine = zero_shot_scores(gt, pred, senti)
        paper = PAPER.get(rel)
        row: dict[str, object] = {"file": rel, "dataset": paper.dataset if paper else path.parent.name,
                                  "variant": paper.variant if paper else "", "n": int(mine["n"])}
        for metric in (paper.metrics if paper else {"acc": float("nan")}):
            row[f"paper_{metric}"] = paper.metrics[metric] if paper else None
            row[f"mer_{metric}"] = round(mine[metric], 2)
        row["mer_waf"] = round(mine["waf"], 2)
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"{root}: no <dataset>/label-gpt4v*.csv file (the layout of gpt4v-emotion's results/)")
    return rows
