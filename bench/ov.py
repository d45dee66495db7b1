"""MER-OV: the golden metric, the offline grouper's agreement with the official groupings, and
mer's OV predictors on the 332 released samples.

    python -m bench.ov [--shared ../shared/data] [--folds 5] [--seed 0]

1. **Golden**: the official example prediction scored with the official cached groupings.
2. **Agreement** of groupers with the official groupings on the 332 samples (``mer.ov.agreement``:
   per-word-pair same-group agreement and the example prediction's score under each).
3. **Predictors** on the same 332 samples (all MER2023 training samples; lexical features =
   all-MiniLM-L6-v2 embeddings of their English transcripts), out-of-fold over ``--folds`` folds:
   - ``probabilities+vocabulary``: a 6-class logistic regression trained on the MER2023
     training samples *outside* the 332, its probabilities mapped to OV words;
   - ``multi-label``: one-vs-rest logistic regression over the OV vocabulary of the training
     folds (k/threshold by inner CV);
   - ``embedding similarity``: zero-shot MiniLM similarity between transcript and the training
     folds' vocabulary words;
   scored, like the official example prediction, under the offline and the exact grouper.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from mer.core.env import configure_environment

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    configure_environment()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    shared = Path(args.shared)
    ov = shared / "mer2024-ov"
    if not ov.is_dir():
        raise SystemExit(f"{ov} is absent")

    from mer.ov.agreement import grouper_agreement
    from mer.ov.groupers import build_grouper
    from mer.ov.io import read_openset_csv
    from mer.ov.metric import mer2024_ov_score

    gold = read_openset_csv(ov / "check-openset.csv")
    example = read_openset_csv(ov / "predict-openset.csv")
    official = build_grouper("official_cache", path=ov / "openset-synonym.zip")
    wheel = shared / "emotion-wheel"
    offline = build_grouper("offline", wheel_dir=wheel if wheel.is_dir() else None)
    groupers = {"official_cache": official, "offline": offline, "exact": build_grouper("exact")}

    print("== 1. golden: official example prediction, official cached groupings ==")
    s = mer2024_ov_score(gold, example, official)
    print(f"accuracy {s.accuracy!r}  recall {s.recall!r}  score {s.score!r}  ({s.n_samples} samples)")

    print("\n== 2. grouper agreement with the official groupings (332 samples) ==")
    for name, g in [("offline (broad)", offline),
                    ("offline (fine)", build_grouper("offline", wheel_dir=offline.wheel_dir, granularity="fine")),
                    ("offline (built-in only, no wheel)", build_grouper("offline")),
                    ("offline (wheel tables only)", build_grouper("offline", wheel_dir=offline.wheel_dir, use_builtin=False)),
                    ("exact", groupers["exact"])]:
        print(f"{name}: {grouper_agreement(gold, example, g, official)}")

    print("\n== 3. OV predictors, out-of-fold on the 332 samples ==")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    from mer.ov.predictors import (EmbeddingSimilarityPredictor, MultiLabelOVPredictor,
                                   ProbabilityVocabularyPredictor, load_text_encoder)
    from mer.pll.datasets import mer2023_lexical

    root = shared / "mer2023"
    names = list(gold)
    ov_fs = mer2023_lexical(root, names=names, labelled_only=False)
    pos = {n: i for i, n in enumerate(ov_fs.names)}
    X = np.zeros((len(names), ov_fs.X.shape[1]), np.float32)
    for i, n in enumerate(names):
        if n in pos:
            X[i] = ov_fs.X[pos[n]]
    print(f"{len(names)} samples, {len(pos)} with a transcript feature (the rest get a zero vector)")
    transcripts = _transcripts(root / "transcription-engchi-polish.csv")
    texts = [transcripts.get(n, "") for n in names]

    train = mer2023_lexical(root)
    outside = np.array([n not in set(names) for n in train.names])
    clf = LogisticRegression(max_iter=3000).fit(train.X[outside], train.y[outside])
    probs = clf.predict_proba(X)
    preds: dict[str, dict[str, list[str]]] = {
        "probabilities+vocabulary": ProbabilityVocabularyPredictor(train.classes).predict(probs, names)}

    encoder = load_text_encoder()
    text_vectors = X   # the cached MiniLM vectors of the transcripts (zero for empty ones)
    preds["multi-label (inner-CV k, threshold)"] = {}
    preds["embedding similarity (k=2)"] = {}
    chosen = []
    words = [gold[n] for n in names]
    for tr, va in KFold(args.folds, shuffle=True, random_state=args.seed).split(X):
        ml = MultiLabelOVPredictor(key=offline.key, seed=args.seed).select(
            X[tr], [words[i] for i in tr], [names[i] for i in tr], offline)
        chosen.append((ml.k, ml.threshold, len(ml.vocab_)))
        preds["multi-label (inner-CV k, threshold)"].update(ml.predict(X[va], [names[i] for i in va]))
        vocab = sorted({w.lower() for i in tr for w in words[i]
                        if sum(w.lower() in map(str.lower, words[j]) for j in tr) >= 2})
        emb = EmbeddingSimilarityPredictor(vocab, k=2, encoder=encoder)
        preds["embedding similarity (k=2)"].update(
            emb.predict_texts([texts[i] for i in va], [names[i] for i in va], text_vectors[va]))
    print(f"multi-label picks per fold (k, threshold, vocabulary size): {chosen}")
    preds["official example prediction"] = example
    print(f"{'predictor':<38} | " + " | ".join(f"{g:>26}" for g in ("offline", "exact", "official_cache")))
    for name, p in preds.items():
        cells = []
        for gname in ("offline", "exact", "official_cache"):
            if gname == "official_cache" and name != "official example prediction":
                cells.append(f"{'n/a (no cached grouping)':>26}")
                continue
            r = mer2024_ov_score(gold, p, groupers[gname])
            cells.append(f"acc {r.accuracy:.3f} rec {r.recall:.3f} {r.score:.3f}")
        print(f"{name:<38} | " + " | ".join(cells))


def _transcripts(path: Path) -> dict[str, str]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return {row["name"]: (row.get("english") or "").strip() for row in csv.DictReader(f)}


if __name__ == "__main__":
    main()
