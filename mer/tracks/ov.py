"""MER-OV track (``track=ov``): open-vocabulary emotion words, cross-validated and submitted.

The labelled OV set is the ground truth ``track.gold`` (a ``name,openset`` file whose names are
samples of the dataset, e.g. MER2024's ``check-openset.csv``: 332 MER2023 training samples). On
the demo corpus, which has no OV labels, :func:`demo_ov_gold` derives them from the generator's
own record of each clip (``demo-cues.csv``, see below).

Protocol: seeded stratified K folds (``train.n_folds``, one split per seed of ``train.seeds``;
:func:`mer.training.cv.stratified_folds` on the samples' discrete class) over the labelled OV
samples; every predictor is fitted on the training folds only and predicts the held-out fold, so
every score is out-of-fold:

``probabilities``  a 6-class logistic regression on the run's features (:class:`FlatFeatures`),
                   trained on every labelled training clip *except* the held-out fold, its class
                   probabilities mapped to words (``ProbabilityVocabularyPredictor``);
``multilabel``     one-vs-rest logistic regression over the training folds' OV vocabulary
                   (``MultiLabelOVPredictor``; ``k``/threshold by inner CV under the headline
                   grouper);
``embedding``      zero-shot similarity between the transcript and the training folds' words
                   (``EmbeddingSimilarityPredictor``, all-MiniLM-L6-v2; the run's MiniLM text
                   features are reused when the text stream is ``minilm``).

Scores are the MER2024 OV metric (set accuracy, recall, their mean) under every configured
grouper (``track.grouper`` is the headline; ``track.also_score`` adds others), and every score
names its grouper. ``official_cache`` is used only where the official groupings cover every
labelled sample; since they were made for the words of the ground truth and the example prediction,
words a predictor adds may be absent from them (they then match only themselves): the share of
predicted words the cached groups hold is reported as ``coverage``. A reference prediction
(``track.reference``; auto: ``predict-openset.csv`` beside the gold file) is scored beside them.

Submission: the predictor chosen by ``track.submit`` (``auto``: best CV score under the headline
grouper), refitted on all labelled OV samples, predicts the test splits; one validated
``name,openset`` file per split under ``submissions/``.

Demo ground truth (:func:`demo_ov_gold`): the generator records, per clip, its class, its
emotional intensity and the class each modality shows (face, voice, text cues). A clip's OV words
are (1) a word of its own class at its intensity (three strength tiers per class, e.g. annoyed /
angry / furious; within a tier the word is drawn with a generator seeded by the corpus seed and
the clip name) and (2) the plain word of every other non-neutral emotion one of its modalities
shows (a viewer would name a visible surprised face on a worried clip). Deterministic per
(corpus seed, clip), and graded so that the exact grouper and a synonym grouper disagree, as on
real data.
"""
from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from mer.core.config import option
from mer.core.errors import UserError
from mer.ov.groupers import GROUPERS, OfflineGrouper, WheelGrouper, parse_groups, resolve_path_option
from feature_extractors.mllm.prompts import build_spec
from mer.ov.describe import LLMWordExtractor, OfflineWordExtractor, describe_words
from mer.ov.io import read_openset_csv, write_openset_csv
from mer.ov.metric import mer2024_ov_score, wheel_ov_score
from mer.ov.predictors import (
    EmbeddingSimilarityPredictor,
    MultiLabelOVPredictor,
    ProbabilityVocabularyPredictor,
    load_text_encoder,
)
from mer.tracks._common import FlatFeatures, mean_std, safe_name
from mer.tracks.base import STRATEGIES, Strategy, TrackData, TrackOutcome
from mer.tracks.mllm import build_predictor
from submissions.schema import get_schema
from submissions.validate import validate_submission
from submissions.writers import write_submission
from mer.training.cv import stratified_folds
from mer.training.data import Split

log = logging.getLogger("mer")

PREDICTORS = ("probabilities", "multilabel", "embedding", "mllm")
OUTPUTS = ("words", "description")

DEMO_TIERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "neutral": (("calm", "relaxed", "peaceful"),),
    "angry": (("annoyed", "irritated"), ("angry",), ("furious", "enraged")),
    "happy": (("pleased", "glad"), ("happy", "cheerful"), ("delighted", "joyful")),
    "sad": (("down",), ("sad", "sorrowful"), ("heartbroken",)),
    "worried": (("uneasy", "concerned"), ("worried", "nervous"), ("anxious",)),
    "surprise": (("surprised",), ("surprised", "amazed"), ("astonished", "shocked")),
}
"""Demo OV words per class, weakest tier first (tier by intensity: < 0.55, < 0.8, else)."""
DEMO_PLAIN = {"neutral": "calm", "angry": "angry", "happy": "happy", "sad": "sad", "worried": "worried",
              "surprise": "surprised"}


def demo_ov_gold(cues_csv: str | Path, seed: int, names: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Open-vocabulary words for demo clips from the generator's ``demo-cues.csv`` (module docstring)."""
    out: dict[str, list[str]] = {}
    keep = None if names is None else set(names)
    with open(cues_csv, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            name, cls = row["name"], row["discrete"]
            if keep is not None and name not in keep:
                continue
            tiers = DEMO_TIERS[cls]
            level = float(row["intensity"])
            tier = tiers[min(len(tiers) - 1, 0 if level < 0.55 else 1 if level < 0.8 else 2)]
            digest = hashlib.sha1(f"{seed}:{name}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            words = [tier[int(rng.integers(len(tier)))]]
            for cue in (row["face_cue"], row["voice_cue"], row["text_cue"]):
                if cue not in ("neutral", cls) and DEMO_PLAIN[cue] not in words:
                    words.append(DEMO_PLAIN[cue])
            out[name] = words
    return out


def load_ov_gold(ctx) -> tuple[dict[str, list[str]], str]:
    """The labelled OV set ``name -> words`` and where it came from."""
    cfg, manifest = ctx.cfg, ctx.manifest
    gold_path = cfg.track.get("gold")
    if gold_path:
        path = Path(str(gold_path)).expanduser()
        if not path.is_file():
            raise SystemExit(f"track.gold={path} is not a file (a name,openset ground truth)")
        try:
            gold = read_openset_csv(path)
        except (TypeError, ValueError) as err:          # the user's ground-truth file

            raise UserError(f"track.gold: {err}") from err
        known = set(manifest.names())
        unknown = [n for n in gold if n not in known]
        if unknown:
            raise SystemExit(f"{len(unknown)} of {len(gold)} names in {path} are not {manifest.dataset} samples "
                             f"(e.g. {unknown[:3]}); is data.root the right dataset?")
        return gold, str(path)
    cues = Path(str(manifest.root or "")) / "demo-cues.csv"
    if cfg.data.name == "demo" and cues.is_file():
        names = [s.name for s in ctx.train_samples()]
        gold = demo_ov_gold(cues, int(cfg.data.demo.seed), names)
        write_openset_csv(gold, ctx.out / "ov_gold.csv", names)
        return gold, f"derived from {cues} (demo cues; written to ov_gold.csv)"
    raise SystemExit(f"track=ov needs open-vocabulary labels: track.gold=/path/to/check-openset.csv "
                     f"(name,openset; names of {manifest.dataset} samples). Only the demo corpus derives its own.")


def build_groupers(cfg, gold_path: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    """``{name: grouper}`` for the headline and extra groupers; ``{name: why skipped}``. Each
    grouper class reads its own options from the track config (``from_track``)."""
    t = cfg.track
    folder = Path(gold_path).parent if gold_path and Path(gold_path).is_file() else None
    names = [str(t.grouper)] + [str(g) for g in (t.get("also_score") or []) if str(g) != str(t.grouper)]
    out, skipped = {}, {}
    for name in names:
        try:
            grouper = GROUPERS.get(name).from_track(t, folder)
        except FileNotFoundError as err:                 # a wheel_dir that is not the assets' folder
            raise UserError(f"track grouper {name}: {err}; set track.wheel_dir=/path/to/emotion-wheel") from None
        if isinstance(grouper, str):
            skipped[name] = grouper
        else:
            out[name] = grouper
    return out, skipped


def word_extractor(cfg, groupers: Mapping[str, Any]) -> Any:
    """How ``track.output: description`` turns a description into scored words
    (``track.extractor``: ``offline``, on the emotion-wheel assets when a wheel or offline grouper
    has them, or ``llm`` over the ``mllm`` endpoint); None for word outputs."""
    t = cfg.track
    if str(t.get("output", "words")) != "description":
        return None
    if str(t.get("extractor", "offline")) == "llm":
        return LLMWordExtractor(build_predictor(cfg, progress=False).endpoint, str(cfg.mllm.cache_dir))
    assets = next((g.assets for g in groupers.values() if isinstance(g, WheelGrouper)), None)
    if assets is None:
        assets = next((g._assets for g in groupers.values() if isinstance(g, OfflineGrouper) and g._assets), None)
    return OfflineWordExtractor(assets)


def _coverage(grouper, gold: Mapping[str, list[str]], pred: Mapping[str, list[str]]) -> float:
    """Share of predicted words that the official cached groups of their sample hold."""
    texts = grouper._load()
    hit = tot = 0
    for n in gold:
        words = {w.strip().lower() for g in parse_groups(texts.get(n, "")) for w in g}
        for w in pred.get(n, []):
            tot += 1
            hit += w.strip().lower() in words
    return hit / tot if tot else float("nan")


def score_all(gold, pred, groupers: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{grouper: {accuracy, recall, score, n_samples[, coverage]}}``; a grouper that cannot
    score these samples (official groupings without them) is left out."""
    out = {}
    for gname, g in groupers.items():
        if gname == "official_cache" and not set(gold) <= set(g.samples()):
            continue
        if isinstance(g, WheelGrouper):
            w = wheel_ov_score(gold, pred, g.assets)
            prf = [x for level in w.per_wheel.values() for x in level]
            out[gname] = {"accuracy": float(np.mean([p for p, _, _ in prf])),
                          "recall": float(np.mean([r for _, r, _ in prf])), "score": w.score,
                          "n_samples": int(max(max(c) for c in w.n_samples.values())),
                          **{f"{lvl}_f": v for lvl, v in w.level_scores.items()}}
            continue
        r = mer2024_ov_score(gold, pred, g)
        out[gname] = {"accuracy": r.accuracy, "recall": r.recall, "score": r.score, "n_samples": r.n_samples}
        if gname == "official_cache":
            out[gname]["coverage"] = _coverage(g, gold, pred)
    return out


class _OVModels:
    """The configured predictors, fitted on one set of labelled OV samples."""

    def __init__(self, ctx, X: np.ndarray, row: Mapping[str, int], texts: Mapping[str, str],
                 text_vectors: np.ndarray | None, key, headline, seed: int, extractor: Any = None) -> None:
        self.ctx, self.X, self.row, self.texts, self.tv = ctx, X, row, texts, text_vectors
        self.key, self.headline, self.seed = key, headline, seed
        t = ctx.cfg.track
        self.opts = {p: dict((t.get("predictor_options") or {}).get(p) or {}) for p in PREDICTORS}
        self.classes = list(ctx.manifest.label_spec.classes)
        self.train_rows = [(s.name, self.classes.index(s.discrete)) for s in ctx.train_samples()]
        self._encoder = None
        self._mllm = None
        self.output = str(t.get("output", "words"))
        if self.output not in OUTPUTS:
            raise UserError(f"track.output={self.output}; one of {', '.join(OUTPUTS)}")
        self.extractor = extractor
        self.outputs: dict[str, dict[str, Any]] = {}
        self.unusable: dict[str, int] = {}

    def fit_predict(self, predictor: str, gold: Mapping[str, list[str]], fit_names: Sequence[str],
                    pred_names: Sequence[str]) -> dict[str, list[str]]:
        """The words ``predictor`` (fitted on ``fit_names``) gives ``pred_names``, as scored. With
        ``track.output: description`` the predictor's output is a description (a word predictor's
        words through :func:`describe_words`; the MLLM's own), kept in ``self.outputs`` for the
        submission, and the scored words are the ones the track's extractor reads in it."""
        if predictor == "mllm":
            raw: Mapping[str, Any] = self._ask_mllm(pred_names)
        else:
            raw = self._fit_predict_words(predictor, gold, fit_names, pred_names)
        if self.output == "words":
            self.outputs.setdefault(predictor, {}).update(raw)
            return dict(raw)
        described = {n: raw[n] if isinstance(raw[n], str) else describe_words(raw[n]) for n in pred_names}
        self.outputs.setdefault(predictor, {}).update(described)
        return {n: self.extractor.words(described[n]) for n in pred_names}

    def _ask_mllm(self, pred_names: Sequence[str]) -> dict[str, Any]:
        """Zero-shot answers (words, or descriptions with ``track.output: description``), cached
        per sample; an unusable answer predicts nothing (and is counted)."""
        o = self.opts["mllm"]
        if self._mllm is None:
            self._mllm = build_predictor(self.ctx.cfg, progress=bool(self.ctx.cfg.get("progress", True)))
        task = "ov" if self.output == "words" else "description"
        spec = build_spec(task, tuple(o.get("inputs") or ("text", "video")), (),
                          int(self.ctx.cfg.mllm.get("frames", 3)), templates=self.ctx.cfg.mllm.get("templates"))
        assert self._mllm is not None
        preds = self._mllm.predict([self.ctx.manifest[n] for n in pred_names], spec)
        self.unusable["mllm"] = self.unusable.get("mllm", 0) + sum(not p.ok for p in preds)
        empty: Any = [] if task == "ov" else describe_words([])
        return {n: (p.value if p.ok else empty) for n, p in zip(pred_names, preds)}

    def _fit_predict_words(self, predictor: str, gold: Mapping[str, list[str]], fit_names: Sequence[str],
                           pred_names: Sequence[str]) -> dict[str, list[str]]:
        X, row = self.X, self.row
        Xp = X[[row[n] for n in pred_names]]
        o = self.opts[predictor]

        def opt(key: str) -> Any:           # the defaults live in conf/track/ov.yaml, not here
            return option(o, key, f"track.predictor_options.{predictor}")

        if predictor == "probabilities":
            held = set(pred_names)
            rows = [(row[n], y) for n, y in self.train_rows if n not in held]
            clf = LogisticRegression(C=float(opt("C")), max_iter=2000)
            clf.fit(X[[r for r, _ in rows]], [y for _, y in rows])
            probs = np.zeros((len(pred_names), len(self.classes)))
            probs[:, clf.classes_] = clf.predict_proba(Xp)
            return ProbabilityVocabularyPredictor(self.classes, o.get("class_words"),
                                                  min_prob=float(opt("min_prob")),
                                                  max_classes=int(opt("max_classes"))).predict(probs, pred_names)
        words = [gold[n] for n in fit_names]
        if predictor == "multilabel":
            m = MultiLabelOVPredictor(key=self.key, min_count=int(opt("min_count")),
                                      C=float(opt("C")), seed=self.seed)
            m.select(X[[row[n] for n in fit_names]], words, list(fit_names), self.headline,
                     n_splits=int(opt("inner_folds")))
            return m.predict(Xp, list(pred_names))
        if predictor == "embedding":
            min_count = int(opt("min_count"))
            counts = Counter(w.lower() for ws in words for w in dict.fromkeys(ws))
            vocab = sorted(w for w, c in counts.items() if c >= min_count) or sorted(counts)
            if self._encoder is None:
                self._encoder = load_text_encoder()
            emb = EmbeddingSimilarityPredictor(vocab, k=int(opt("k")), encoder=self._encoder)
            tv = None if self.tv is None else self.tv[[row[n] for n in pred_names]]
            return emb.predict_texts([self.texts[n] for n in pred_names], list(pred_names), tv)
        raise SystemExit(f"unknown OV predictor {predictor!r}; known: {', '.join(PREDICTORS)}")


@STRATEGIES.register("open_vocabulary")
class OpenVocabularyStrategy(Strategy):
    """``track=ov`` (module docstring): the OV predictors cross-validated on seeded stratified
    folds of the labelled OV samples (stratified on their discrete class where they have one), scored
    under every grouper, the best refitted on them all for the submission."""

    name = "open_vocabulary"

    def prepare(self, ctx) -> TrackData:
        cfg, manifest, bundle = ctx.cfg, ctx.manifest, ctx.bundle
        t = cfg.track
        gold, source = load_ov_gold(ctx)
        log.info("OV ground truth: %d samples, %s", len(gold), source)
        groupers, skipped = build_groupers(cfg, str(t.gold) if t.get("gold") else None)
        if str(t.grouper) not in groupers:
            raise UserError(f"track.grouper={t.grouper} cannot score this run: {skipped.get(str(t.grouper))}")
        headline = groupers[str(t.grouper)]
        extractor = word_extractor(cfg, groupers)
        predictors = [str(p) for p in t.predictors]
        unknown = [p for p in predictors if p not in PREDICTORS]
        if unknown:
            raise SystemExit(f"track.predictors names {unknown}; known: {', '.join(PREDICTORS)}")
        ov_names = list(gold)
        n_folds = int(cfg.train.n_folds)
        if len(ov_names) < 2 * n_folds:
            raise SystemExit(f"{len(ov_names)} labelled OV samples are too few for {n_folds} folds")
        flat = FlatFeatures().fit(bundle.take([s.name for s in ctx.train_samples()]))
        X = flat.transform(bundle)
        row = {n: i for i, n in enumerate(bundle.names)}
        tv = None
        for stream, info in ctx.features.info.items():
            if info["extractor"] == "minilm":
                tv = np.asarray(bundle.modalities[stream].X, dtype=np.float32)
        lang = str(cfg.data.get("language", "english"))
        classes = list(manifest.label_spec.classes)
        # fold strata: the samples' discrete class where known (one stratum for the rest)
        strata = np.array([classes.index(manifest[n].discrete) if manifest[n].discrete in classes else len(classes)
                           for n in ov_names])
        train = Split(bundle.take(ov_names), strata, np.full(len(ov_names), np.nan, np.float32))
        return TrackData(train, {}, extras=dict(
            gold=gold, source=source, groupers=groupers, skipped=skipped, headline=headline,
            key=headline.key if hasattr(headline, "key") else OfflineGrouper().key, predictors=predictors,
            flat=flat, X=X, row=row, tv=tv, texts={s.name: (s.text(lang) or "") for s in manifest.samples},
            extractor=extractor))

    def _models(self, ctx, data: TrackData, seed: int) -> "_OVModels":
        e = data.extras
        return _OVModels(ctx, e["X"], e["row"], e["texts"], e["tv"], e["key"], e["headline"], seed, e["extractor"])

    def evaluate(self, ctx, data: TrackData) -> dict[str, Any]:
        """Out-of-fold predictions of every predictor per seed; ``on_fold`` hears each fold's
        scores under the headline grouper (``score``: the best predictor's)."""
        e, cfg = data.extras, ctx.cfg
        gold, predictors, names = e["gold"], list(e["predictors"]), data.train.names
        headline = {str(cfg.track.grouper): e["headline"]}
        oof: dict[int, dict[str, dict[str, list[str]]]] = {}
        dropped: dict[str, str] = {}
        for seed in [int(s) for s in cfg.train.seeds]:
            models = self._models(ctx, data, seed)
            oof[seed] = {p: {} for p in predictors if p not in dropped}
            for k, (tr, va) in enumerate(stratified_folds(data.train.y, int(cfg.train.n_folds), seed)):
                fit, held = [names[i] for i in tr], [names[i] for i in va]
                record: dict[str, Any] = {"seed": seed, "fold": k, "n_train": len(fit), "n_val": len(held)}
                for p in list(oof[seed]):
                    try:
                        pred = models.fit_predict(p, gold, fit, held)
                    except ValueError as err:      # e.g. too few repeated words for a vocabulary
                        log.warning("OV predictor %s skipped: %s", p, err)
                        dropped[p] = str(err)
                        for run in oof.values():
                            run.pop(p, None)
                        continue
                    oof[seed][p].update(pred)
                    scores = score_all({n: gold[n] for n in held}, pred, headline)
                    record[f"{p}_score"] = next(iter(scores.values()))["score"] if scores else float("nan")
                fold_scores = [v for key, v in record.items() if key.endswith("_score")]
                record["score"] = max(fold_scores) if fold_scores else float("nan")
                if ctx.on_fold is not None:
                    ctx.on_fold(record)
        predictors = [p for p in predictors if p not in dropped]
        if not predictors:
            raise SystemExit(f"no OV predictor could be fitted: {dropped}")
        return {"oof": oof, "predictors": predictors, "dropped": dropped}

    def write_outputs(self, ctx, data: TrackData, evaluation: Mapping[str, Any]) -> TrackOutcome:
        cfg, manifest, out, e = ctx.cfg, ctx.manifest, ctx.out, data.extras
        t = cfg.track
        gold, groupers, headline_name = e["gold"], e["groupers"], str(t.grouper)
        ov_names, predictors, seeds = data.train.names, evaluation["predictors"], [int(s) for s in cfg.train.seeds]
        score_rows: list[dict[str, Any]] = []
        per_sample: list[pd.DataFrame] = []
        for seed, oof in evaluation["oof"].items():
            frame = pd.DataFrame({"name": ov_names, "seed": seed, "gold": [repr(gold[n]) for n in ov_names]})
            for p, pred in oof.items():
                frame[p] = [repr(pred[n]) for n in ov_names]
                for gname, sc in score_all(gold, pred, groupers).items():
                    score_rows.append({"seed": seed, "predictor": p, "grouper": gname, **sc})
            per_sample.append(frame)
        ref_path = resolve_path_option(t.get("reference", "auto"),
                            Path(str(t.gold)).parent / "predict-openset.csv" if t.get("gold") else None)
        if ref_path is not None:
            ref = read_openset_csv(ref_path)
            if set(gold) <= set(ref):
                for gname, sc in score_all(gold, ref, groupers).items():
                    score_rows.append({"seed": None, "predictor": "reference", "grouper": gname, **sc})
            else:
                log.warning("reference %s does not cover the labelled OV samples; not scored", ref_path)

        scores = pd.DataFrame(score_rows)
        scores["seed"] = scores["seed"].astype("Int64")        # blank for the reference prediction
        scores.insert(3, "grouper_description", [groupers[g].describe() for g in scores.grouper])
        scores.to_csv(out / "ov_scores.csv", index=False)
        (out / "predictions").mkdir(exist_ok=True)
        pd.concat(per_sample).to_csv(out / "predictions" / "ov-oof.csv", index=False)

        rows, metrics = [], {}
        for (p, gname), grp in scores.groupby(["predictor", "grouper"], sort=False):
            r = {"predictor": p, "grouper": gname, "n": int(grp.n_samples.iloc[0])}
            for k in ("accuracy", "recall", "score"):
                m, s = mean_std(grp[k].tolist())
                r[k] = f"{m:.4f}" + (f" ± {s:.4f}" if len(grp) > 1 else "")
                metrics[f"ov_{safe_name(p)}_{gname}_{k}"] = m
            if "coverage" in grp and grp.coverage.notna().any():
                r["coverage"] = f"{grp.coverage.mean():.3f}"
                metrics[f"ov_{safe_name(p)}_{gname}_coverage"] = float(grp.coverage.mean())
            rows.append(r)

        submit = str(t.get("submit", "auto"))
        if submit == "auto":
            submit = max(predictors, key=lambda p: metrics.get(f"ov_{p}_{headline_name}_score", -1.0))
        elif submit not in predictors:
            raise SystemExit(f"track.submit={submit} is not one of the run's predictors {predictors}")
        metrics[f"ov_score_{headline_name}"] = metrics[f"ov_{submit}_{headline_name}_score"]

        subs: dict[str, Path] = {}
        splits = manifest.test_splits if t.get("submit_splits", "all") == "all" else list(t.submit_splits)
        test_names = {sp: [s.name for s in manifest.split(sp)] for sp in splits}
        wanted = [n for sp in splits for n in test_names[sp]]
        schema = get_schema(str(t.get("schema") or "mer2024_ov"))
        prefix = str(t.name)
        if wanted:
            final_models = self._models(ctx, data, seeds[0])
            final_models.fit_predict(submit, gold, ov_names, wanted)
            final = final_models.outputs[submit]
            for sp in splits:
                file_name = (f"{prefix}-{sp}-openset.npz" if schema.container == "npz"
                             else f"{prefix}-{sp}.csv")
                path = write_submission(schema, {n: final[n] for n in test_names[sp]},
                                        out / "submissions" / file_name, test_names[sp])
                problems = validate_submission(path, schema, names=test_names[sp])
                if problems:
                    raise RuntimeError(f"{prefix} submission {path} failed validation: {problems}")
                subs[f"{prefix}-{sp}"] = path
        summary = {"ov": {"gold": e["source"], "n_labelled": len(ov_names), "predictors": predictors,
                          "output": str(t.get("output", "words")), "schema": schema.name,
                          "extractor": e["extractor"].describe() if e["extractor"] is not None else None,
                          "dropped": evaluation["dropped"], "headline_grouper": headline_name, "submitted": submit,
                          "groupers": {g: groupers[g].describe() for g in groupers},
                          "groupers_skipped": e["skipped"], "reference": str(ref_path) if ref_path else None,
                          "features": e["flat"].describe(), "seeds": seeds, "n_folds": int(cfg.train.n_folds),
                          "folds": "stratified on the discrete class"}}
        log.info("OV: submitted %s (CV %s score %.4f)", submit, headline_name, metrics[f"ov_score_{headline_name}"])
        return TrackOutcome(rows, metrics, subs, summary, [out / "ov_scores.csv", out / "ov_gold.csv"])
