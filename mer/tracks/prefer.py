"""MER-Prefer track (``track=prefer``, MER2026 Track3): which of two emotion descriptions of a clip
people prefer, learned from labelled pairs, cross-validated and submitted.

What is public (MERTools HEAD ``89120b7``): the training pairs ``track3_emoprefer.csv`` (574,
majority of 3 annotators) and ``track3_emopreferv2.csv`` (2,096, one annotator), the 10,000
``track3_candidate.csv`` pairs to predict (``MER2026/README.md``); the files' columns ``name``
(the clip), ``a1``, ``a2`` and, in the labelled files, ``preference`` (read, commented out for
the candidates, in ``MER2026_Track3/main_dpo_batch.py``); the answers ``a1 | a2 | same`` and the
metric: two-class weighted F1 (WAF, primary) and accuracy, the ``same`` answers of people left
out and a predicted ``same`` counted as ``a1`` (``MER2026_Track3/utils/common.py``;
:mod:`mer.evaluation.preference`). Not public: the submission file (written with the
``mer2026_prefer`` schema, ``name,preference``) and the platform. So the columns
(``track.columns``), the answer strings (``track.labels``) and the schema are configurable.

Items: one row per pair, joined to the dataset's samples by the clip name; a labelled pair has a
preference, a candidate none (rows of ``track.pairs`` with an empty preference join the
candidates). Pairs that people judged equal (``same``) are left out of training and scoring, as
the two-class metric leaves them out; how many is recorded.

Features of a description ``d`` of clip ``c`` (:class:`PairFeaturizer`)::

    phi(d, c) = [ e(d),  e(d) * P c,  log(1 + words), log(1 + emotion words), cos(e(d), P c) ]

``e``: the description's embedding (``track.encoder``: all-MiniLM-L6-v2 as the ``minilm`` text
stream loads it, or TF-IDF over every pair's descriptions, no labels); ``c``: the clip's fused
features (:class:`mer.tracks._common.FlatFeatures`, every stream of the run); ``P``: the clip
projected into the description space (``track.projection``: ``ridge`` from the clip features to
the embedding of the description people preferred, fitted on the training folds only; or
``random``, a seeded Gaussian map). Emotion words are counted by the offline OV word reader
(:class:`mer.ov.describe.OfflineWordExtractor`). Columns are scaled by their RMS over the
training pairs' differences (never centred: centring would break the symmetry below).

Predictors (``track.predictors``), each giving ``p = P(A preferred over B)``, ``a1`` when
``p >= 0.5``:

``always_a``       the floor: always ``a1``;
``longer``         the floor: the description with more characters (a tie: ``a1``);
``bradley_terry``  a linear utility ``u(d, c) = w . phi(d, c)``, ``p = sigmoid(u(A) - u(B))``:
                   logistic regression without intercept on ``phi(A) - phi(B)``, fitted on both
                   orders of every pair, so ``p(A, B) + p(B, A) = 1`` exactly;
``boosted``, ``mlp``  gradient-boosted trees / a one-hidden-layer MLP on the same differences,
                   both orders, made antisymmetric by ``p = (f(D) + 1 - f(-D)) / 2``.

Protocol, as ``track=ov``: seeded stratified K folds (``train.n_folds``, one split per seed of
``train.seeds``; :func:`mer.training.cv.stratified_folds` on the answer; when a clip has several
pairs, its pairs stay in one fold) over the labelled pairs; every predictor and the projection are
fitted on the training folds only, so every score is out of fold. The submission uses
``track.submit`` (``auto``: the best CV WAF, floors included), refitted on every labelled pair;
one validated file per split holding candidate pairs, ``submissions/prefer-<split>.csv``.

Demo pairs (:func:`demo_prefer_pairs`, :func:`demo_candidate_pairs`): the demo corpus has no
preference labels. For each labelled training clip, two descriptions from templates: one faithful
to the generator's record of the clip (``demo-cues.csv``: its class at its intensity, what face,
voice and words show), and a rival that names a wrong class (its cues that showed the class too)
or, for a share of clips, a vaguer one-line guess; which is ``a1`` is a coin seeded by the corpus
seed and the clip name; people "prefer" the faithful one. Test clips get two detailed descriptions
of two seeded classes and no answer: their cues (labels) are never read. Deterministic per
(corpus seed, clip).
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier

from mer.core.config import option
from mer.core.errors import UserError
from mer.core.rng import keyed_rng
from mer.evaluation.preference import preference_scores
from mer.ov.describe import OfflineWordExtractor
from mer.ov.predictors import load_text_encoder
from mer.tracks._common import FlatFeatures, mean_std, safe_name
from mer.tracks.base import STRATEGIES, Strategy, TrackData, TrackOutcome
from mer.tracks.ov import DEMO_PLAIN, DEMO_TIERS
from mer.training.cv import stratified_folds
from mer.training.data import Split
from mer.training.folds import make_folds
from submissions.schema import get_schema
from submissions.validate import validate_submission
from submissions.writers import write_submission

log = logging.getLogger("mer")

FLOORS = ("always_a", "longer")
MODELS = ("bradley_terry", "boosted", "mlp")
PREDICTORS = FLOORS + MODELS
ENCODERS = ("auto", "minilm", "tfidf")
PROJECTIONS = ("ridge", "random")
ANSWERS = ("a1", "a2", "same")
"""The answers as the official files and scorer spell them; ``track.labels`` maps a file's own."""

DEMO_FAITHFUL = (
    "The face looks {face}, the voice sounds {voice} and the words are {text}; overall the person is {word}.",
    "Overall {word}: a {face} face, a {voice} voice and {text} words.",
)
DEMO_VAGUE = ("The person may be a little {plain}.", "Perhaps somewhat {plain}.")
DEMO_VAGUE_SHARE = 0.35
"""Share of demo clips whose rival description is a vague guess rather than a wrong class."""


# --- the pairs -------------------------------------------------------------------------------
@dataclass
class PairRows:
    """Pairs as read: the clip of each (``names``), its two descriptions, the answer (``a1 | a2 |
    same``, None for a candidate) and where each row came from (``file:line``, for messages)."""

    names: list[str] = field(default_factory=list)
    a: list[str] = field(default_factory=list)
    b: list[str] = field(default_factory=list)
    preference: list[str | None] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)

    def add(self, name: str, a: str, b: str, preference: str | None, origin: str) -> None:
        self.names.append(name)
        self.a.append(a)
        self.b.append(b)
        self.preference.append(preference)
        self.origin.append(origin)

    def take(self, idx: Sequence[int]) -> "PairRows":
        return PairRows([self.names[i] for i in idx], [self.a[i] for i in idx], [self.b[i] for i in idx],
                        [self.preference[i] for i in idx], [self.origin[i] for i in idx])

    def __len__(self) -> int:
        return len(self.names)


def _demo_description(rng: np.random.Generator, word: str, face: str, voice: str, text: str) -> str:
    template = DEMO_FAITHFUL[int(rng.integers(len(DEMO_FAITHFUL)))]
    return template.format(word=word, face=DEMO_PLAIN[face], voice=DEMO_PLAIN[voice], text=DEMO_PLAIN[text])


def _tier_word(rng: np.random.Generator, cls: str, tier: int) -> str:
    tiers = DEMO_TIERS[cls]
    words = tiers[min(tier, len(tiers) - 1)]
    return words[int(rng.integers(len(words)))]


def demo_prefer_pairs(cues_csv: str | Path, seed: int, names: Sequence[str]) -> PairRows:
    """Labelled demo pairs for ``names`` (training clips) from the generator's ``demo-cues.csv``
    (module docstring); only the rows of ``names`` are read."""
    keep = set(names)
    classes = list(DEMO_TIERS)
    out = PairRows()
    with open(cues_csv, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            name, cls = row["name"], row["discrete"]
            if name not in keep:
                continue
            rng = keyed_rng(seed, name, "prefer-demo")
            level = float(row["intensity"])
            tier = 0 if level < 0.55 else 1 if level < 0.8 else 2
            cues = (row["face_cue"], row["voice_cue"], row["text_cue"])
            faithful = _demo_description(rng, _tier_word(rng, cls, tier), *cues)
            if rng.random() < DEMO_VAGUE_SHARE:
                rival = DEMO_VAGUE[int(rng.integers(len(DEMO_VAGUE)))].format(plain=DEMO_PLAIN[cls])
            else:
                wrong = [c for c in classes if c != cls][int(rng.integers(len(classes) - 1))]
                rival = _demo_description(rng, _tier_word(rng, wrong, tier), *[wrong if c == cls else c for c in cues])
            if rng.random() < 0.5:
                out.add(name, faithful, rival, "a1", f"{cues_csv}:{name}")
            else:
                out.add(name, rival, faithful, "a2", f"{cues_csv}:{name}")
    return out


def demo_candidate_pairs(seed: int, names: Sequence[str]) -> PairRows:
    """Unlabelled demo pairs for ``names`` (test clips): two detailed descriptions of two seeded
    classes each; nothing about the clips is read."""
    classes = list(DEMO_TIERS)
    out = PairRows()
    for name in names:
        rng = keyed_rng(seed, name, "prefer-demo-candidate")
        first, second = rng.choice(len(classes), size=2, replace=False)
        a, b = classes[int(first)], classes[int(second)]
        out.add(name, _demo_description(rng, _tier_word(rng, a, 1), a, a, a),
                _demo_description(rng, _tier_word(rng, b, 1), b, b, b), None, f"demo:{name}")
    return out


def read_pairs(path: str | Path, columns: Mapping[str, str], labels: Mapping[str, str]) -> PairRows:
    """Pairs from a CSV whose columns ``track.columns`` names (``name``, ``a``, ``b`` and, where
    it has answers, ``preference``); answers are mapped to ``a1 | a2 | same`` by ``track.labels``;
    an empty answer makes the row a candidate."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path} is not a file (a pairs CSV: {', '.join(columns.values())})")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    needed = [columns[k] for k in ("name", "a", "b")]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise UserError(f"{path} has no column(s) {missing} (has {list(frame.columns)}); set track.columns "
                        f"(name, a, b, preference) to the file's own")
    answer_of = {str(labels["a"]): "a1", str(labels["b"]): "a2", str(labels["tie"]): "same"}
    pref_col = columns.get("preference")
    has_answers = bool(pref_col) and pref_col in frame.columns
    out = PairRows()
    for i, row in enumerate(frame.itertuples(index=False), start=2):      # line 1 is the header
        values = dict(zip(frame.columns, row))
        raw = values[pref_col].strip() if has_answers else ""
        if raw and raw not in answer_of:
            raise UserError(f"{path} line {i}: preference {raw!r} is none of {sorted(answer_of)} "
                            f"(track.labels maps the file's answers to a1, a2, same)")
        out.add(values[needed[0]].strip(), _flat(values[needed[1]]), _flat(values[needed[2]]),
                answer_of[raw] if raw else None, f"{path}:{i}")
    return out


def _flat(text: str) -> str:
    """A description on one line, as the organisers' code reads them (``replace('\\n', ' ')``)."""
    return " ".join(str(text).replace("\t", " ").split())


def _paths(value: Any) -> list[Path]:
    if value in (None, "", "none"):
        return []
    items = [value] if isinstance(value, (str, Path)) else list(value)
    return [Path(str(v)).expanduser() for v in items]


def load_pairs(ctx) -> tuple[PairRows, PairRows, str]:
    """``(labelled, candidates, source)``: the labelled pairs and those to predict, every clip
    checked against the dataset (a clip it lacks is a one-line error naming it)."""
    cfg, manifest = ctx.cfg, ctx.manifest
    t = cfg.track
    columns = dict(option(t, "columns", "track"))
    labels = dict(option(t, "labels", "track"))
    pair_files, cand_files = _paths(option(t, "pairs", "track")), _paths(option(t, "candidates", "track"))
    labelled, candidates = PairRows(), PairRows()
    sources = []
    for p in pair_files:
        rows = read_pairs(p, columns, labels)
        has = [i for i, a in enumerate(rows.preference) if a is not None]
        lab, cand = rows.take(has), rows.take([i for i in range(len(rows)) if rows.preference[i] is None])
        for part, into in ((lab, labelled), (cand, candidates)):
            for i in range(len(part)):
                into.add(part.names[i], part.a[i], part.b[i], part.preference[i], part.origin[i])
        sources.append(str(p))
    for p in cand_files:
        rows = read_pairs(p, columns, labels)
        for i in range(len(rows)):                 # a candidates file's answers are never read
            candidates.add(rows.names[i], rows.a[i], rows.b[i], None, rows.origin[i])
        sources.append(str(p))
    cues = Path(str(manifest.root or "")) / "demo-cues.csv"
    if not pair_files:
        if cfg.data.name != "demo" or not cues.is_file():
            raise UserError(f"track=prefer needs labelled pairs: track.pairs=/path/to/track3_emoprefer.csv "
                            f"(columns {', '.join(columns.values())}; names of {manifest.dataset} samples). "
                            f"Only the demo corpus derives its own.")
        labelled = demo_prefer_pairs(cues, int(cfg.data.demo.seed), [s.name for s in ctx.train_samples()])
        sources.append(f"derived from {cues} (demo cues)")
        if not cand_files:
            names = [s.name for sp in manifest.test_splits for s in manifest.split(sp)]
            candidates = demo_candidate_pairs(int(cfg.data.demo.seed), names)
    known = set(manifest.names())
    for what, rows in (("track.pairs", labelled), ("track.candidates", candidates)):
        unknown = [(n, o) for n, o in zip(rows.names, rows.origin) if n not in known]
        if unknown:
            shown = ", ".join(f"{n} ({o})" for n, o in unknown[:3])
            raise UserError(f"{what}: {len(unknown)} of {len(rows)} pairs name clips that are not "
                            f"{manifest.dataset} samples: {shown}; is data.root the right dataset?")
    seen: dict[str, str] = {}
    for n, o in zip(candidates.names, candidates.origin):
        if n in seen:
            raise UserError(f"track.candidates: clip {n} has two candidate pairs ({seen[n]} and {o}); a "
                            f"name,preference submission holds one answer per clip")
        seen[n] = o
    return labelled, candidates, "; ".join(sources)


def _write_pairs(rows: PairRows, path: Path) -> None:
    frame = pd.DataFrame({"name": rows.names, "a1": rows.a, "a2": rows.b})
    if any(p is not None for p in rows.preference):
        frame["preference"] = [p or "" for p in rows.preference]
    frame.to_csv(path, index=False)


# --- features --------------------------------------------------------------------------------
def description_statistics(texts: Sequence[str]) -> np.ndarray:
    """``[N, 2]``: log(1 + words), log(1 + emotion words) of each description."""
    reader = OfflineWordExtractor()
    return np.log1p(np.array([[len(t.split()), len(reader.words(t))] for t in texts], dtype=np.float64))


def embed_descriptions(texts: Sequence[str], encoder: str, tfidf: Mapping[str, Any], language: str
                       ) -> tuple[np.ndarray, str]:
    """``[N, D]`` L2-normalised embeddings of ``texts`` (each distinct text embedded once; an
    empty one is the zero vector) and a line saying how."""
    unique = sorted(set(texts))
    idx = {t: i for i, t in enumerate(unique)}
    if encoder == "minilm":
        model = load_text_encoder()
        E = np.zeros((len(unique), int(model.dim)), np.float32)
        filled = [i for i, t in enumerate(unique) if t.strip()]
        if filled:
            E[filled] = model.embed([unique[i] for i in filled])
        how = "minilm (all-MiniLM-L6-v2, the minilm stream's weights)"
    else:
        char = language in ("chinese", "japanese")
        vec = TfidfVectorizer(analyzer="char_wb" if char else "word", ngram_range=(1, 3) if char else (1, 2),
                              sublinear_tf=True, min_df=int(tfidf["min_df"]), max_features=int(tfidf["max_features"]))
        E = vec.fit_transform(unique).toarray().astype(np.float32)
        how = f"tfidf ({E.shape[1]} n-grams over every pair's descriptions, no labels)"
    return E[[idx[t] for t in texts]], how


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


class PairFeaturizer:
    """``phi(d, c)`` of both descriptions of each pair (module docstring). ``fit`` learns the
    projection (``ridge``: on the preferred descriptions of the rows given, i.e. the training
    folds) and the column scales."""

    def __init__(self, projection: str = "ridge", alpha: float = 10.0, seed: int = 0) -> None:
        self.projection = projection
        self.alpha = alpha
        self.seed = seed

    def fit(self, C: np.ndarray, Ea: np.ndarray, Eb: np.ndarray, Sa: np.ndarray, Sb: np.ndarray,
            y: np.ndarray) -> "PairFeaturizer":
        """``C [N, Dc]`` clip features, ``E* [N, Dt]`` embeddings, ``S* [N, 2]`` statistics,
        ``y [N]`` 1 where A is preferred."""
        if self.projection == "ridge":
            preferred = np.where(np.asarray(y)[:, None] == 1, Ea, Eb)
            self.ridge_ = Ridge(alpha=self.alpha).fit(C, preferred)
        elif self.projection == "random":
            rng = np.random.default_rng([self.seed, 2026])
            self.matrix_ = rng.normal(size=(C.shape[1], Ea.shape[1])) / np.sqrt(max(C.shape[1], 1))
        else:
            raise UserError(f"track.projection={self.projection}; one of {', '.join(PROJECTIONS)}")
        Fa, Fb = self._phi(C, Ea, Eb, Sa, Sb)
        self.scale_ = np.sqrt(np.mean((Fa - Fb) ** 2, axis=0)) + 1e-6
        return self

    def _project(self, C: np.ndarray) -> np.ndarray:
        P = self.ridge_.predict(C) if self.projection == "ridge" else C @ self.matrix_
        return _unit(np.asarray(P, dtype=np.float64))

    def _phi(self, C, Ea, Eb, Sa, Sb) -> tuple[np.ndarray, np.ndarray]:
        P = self._project(C)

        def one(E: np.ndarray, S: np.ndarray) -> np.ndarray:
            E = np.asarray(E, dtype=np.float64)
            return np.concatenate([E, E * P, S, (E * P).sum(1, keepdims=True)], axis=1)

        return one(Ea, Sa), one(Eb, Sb)

    def transform(self, C, Ea, Eb, Sa, Sb) -> tuple[np.ndarray, np.ndarray]:
        """``(phi(A), phi(B))``, each ``[N, 2 Dt + 3]``, scaled."""
        Fa, Fb = self._phi(C, Ea, Eb, Sa, Sb)
        return Fa / self.scale_, Fb / self.scale_


# --- pairwise models -------------------------------------------------------------------------
class BradleyTerry:
    """``P(A > B) = sigmoid(w . (phi(A) - phi(B)))``: logistic regression without intercept on
    both orders of every pair, so swapping a pair gives exactly the complementary probability."""

    def __init__(self, C: float = 1.0, max_iter: int = 2000) -> None:
        self.C = C
        self.max_iter = max_iter

    def fit(self, Fa: np.ndarray, Fb: np.ndarray, y: np.ndarray) -> "BradleyTerry":
        D = Fa - Fb
        self.model_ = LogisticRegression(C=self.C, fit_intercept=False, max_iter=self.max_iter)
        self.model_.fit(np.concatenate([D, -D]), np.concatenate([y, 1 - y]))
        return self

    def predict_proba(self, Fa: np.ndarray, Fb: np.ndarray) -> np.ndarray:
        """``[N]`` P(A preferred)."""
        return expit(self.model_.decision_function(Fa - Fb))


class SymmetricPairwise:
    """A classifier ``f`` of ``D = phi(A) - phi(B)`` fitted on both orders of every pair and read
    antisymmetrically, ``p = (f(D) + 1 - f(-D)) / 2``: ``kind`` ``boosted`` (histogram gradient
    boosting) or ``mlp`` (one hidden layer)."""

    def __init__(self, kind: str, options: Mapping[str, Any], seed: int = 0) -> None:
        self.kind = kind
        self.options = dict(options)
        self.seed = seed

    def _model(self):
        o, where = self.options, f"track.predictor_options.{self.kind}"
        if self.kind == "boosted":
            return HistGradientBoostingClassifier(
                max_iter=int(option(o, "max_iter", where)), learning_rate=float(option(o, "learning_rate", where)),
                max_leaf_nodes=int(option(o, "max_leaf_nodes", where)),
                l2_regularization=float(option(o, "l2_regularization", where)), early_stopping=False,
                random_state=self.seed)
        return MLPClassifier(hidden_layer_sizes=(int(option(o, "hidden", where)),), alpha=float(option(o, "alpha", where)),
                             max_iter=int(option(o, "max_iter", where)), random_state=self.seed)

    def fit(self, Fa: np.ndarray, Fb: np.ndarray, y: np.ndarray) -> "SymmetricPairwise":
        D = Fa - Fb
        self.model_ = self._model().fit(np.concatenate([D, -D]), np.concatenate([y, 1 - y]))
        return self

    def predict_proba(self, Fa: np.ndarray, Fb: np.ndarray) -> np.ndarray:
        D = Fa - Fb
        col = list(self.model_.classes_).index(1)
        return 0.5 * (self.model_.predict_proba(D)[:, col] + 1.0 - self.model_.predict_proba(-D)[:, col])


def build_pair_model(name: str, options: Mapping[str, Any], seed: int):
    if name == "bradley_terry":
        return BradleyTerry(C=float(option(options, "C", "track.predictor_options.bradley_terry")))
    if name in ("boosted", "mlp"):
        return SymmetricPairwise(name, options, seed)
    raise UserError(f"unknown preference model {name!r}; known: {', '.join(MODELS)}")


def floor_probability(name: str, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """``[N]`` P(A preferred) of a floor: ``always_a`` 1; ``longer`` 1, 0.5 or 0 as A has more,
    as many or fewer characters than B."""
    if name == "always_a":
        return np.ones(len(a))
    la, lb = np.array([len(t) for t in a]), np.array([len(t) for t in b])
    return 0.5 + 0.5 * np.sign(la - lb)


def answers(p: np.ndarray) -> list[str]:
    """``a1`` where ``p >= 0.5`` (the scorer counts a tie as ``a1`` too), else ``a2``."""
    return ["a1" if x >= 0.5 else "a2" for x in np.asarray(p)]


# --- the strategy ----------------------------------------------------------------------------
@STRATEGIES.register("preference")
class PreferenceStrategy(Strategy):
    """``track=prefer`` (module docstring): pairwise preference models on seeded stratified folds
    of the labelled pairs, the best by CV WAF submitted for the candidate pairs."""

    name = "preference"

    def check(self, ctx) -> None:
        t = ctx.cfg.track
        unknown = [p for p in t.predictors if str(p) not in PREDICTORS]
        if unknown:
            raise UserError(f"track.predictors names {unknown}; known: {', '.join(PREDICTORS)}")
        if str(option(t, "encoder", "track")) not in ENCODERS:
            raise UserError(f"track.encoder={t.encoder}; one of {', '.join(ENCODERS)}")
        if str(option(t, "projection", "track")) not in PROJECTIONS:
            raise UserError(f"track.projection={t.projection}; one of {', '.join(PROJECTIONS)}")
        load_pairs(ctx)                       # every clip known, before any feature is extracted

    def _encoder(self, ctx) -> str:
        chosen = str(ctx.cfg.track.encoder)
        if chosen != "auto":
            return chosen
        streams = [i.get("extractor") for i in ctx.features.info.values()]
        return "tfidf" if "tfidf" in streams and "minilm" not in streams else "minilm"

    def prepare(self, ctx) -> TrackData:
        cfg, bundle, t = ctx.cfg, ctx.bundle, ctx.cfg.track
        labelled, candidates, source = load_pairs(ctx)
        if not any(p is not None for p in labelled.preference):
            raise UserError(f"track.pairs ({source}) holds no answered pair")
        if t.get("pairs") in (None, "", "none"):
            _write_pairs(labelled, ctx.out / "prefer_pairs.csv")
            _write_pairs(candidates, ctx.out / "prefer_candidates.csv")
        n_ties = sum(p == "same" for p in labelled.preference)
        labelled = labelled.take([i for i, p in enumerate(labelled.preference) if p in ("a1", "a2")])
        y = np.array([1 if p == "a1" else 0 for p in labelled.preference], dtype=np.int64)
        n_folds = int(cfg.train.n_folds)
        if min(int(y.sum()), int(len(y) - y.sum())) < n_folds:
            raise UserError(f"{len(y)} labelled pairs ({int(y.sum())} a1, {int(len(y) - y.sum())} a2) are too few "
                            f"for {n_folds} stratified folds")
        log.info("MER-Prefer: %d labelled pairs (%d ties left out), %d candidates; %s", len(y), n_ties,
                 len(candidates), source)
        clips = sorted(set(labelled.names) | set(candidates.names))
        flat = FlatFeatures().fit(bundle.take(clips))          # no labels: every pair's clip
        C_rows = flat.transform(bundle.take(clips))
        clip_row = {n: i for i, n in enumerate(clips)}
        encoder = self._encoder(ctx)
        texts = labelled.a + labelled.b + candidates.a + candidates.b
        E, how = embed_descriptions(texts, encoder, option(t, "tfidf", "track"), str(cfg.data.get("language", "english")))
        S = description_statistics(texts)
        n, m = len(labelled), len(candidates)

        def block(lo: int, size: int) -> tuple[np.ndarray, np.ndarray]:
            return E[lo:lo + size], S[lo:lo + size]

        (Ea, Sa), (Eb, Sb) = block(0, n), block(n, n)
        (Ca_, Sca), (Cb_, Scb) = block(2 * n, m), block(2 * n + m, m)
        train = Split(bundle.take(labelled.names), y, np.full(n, np.nan, np.float32))
        return TrackData(train, {}, extras=dict(
            labelled=labelled, candidates=candidates, source=source, n_ties=n_ties, flat=flat, encoder=how,
            C=C_rows[[clip_row[c] for c in labelled.names]], Ea=Ea, Eb=Eb, Sa=Sa, Sb=Sb,
            cand=dict(C=C_rows[[clip_row[c] for c in candidates.names]], Ea=Ca_, Eb=Cb_, Sa=Sca, Sb=Scb)))

    def _fit_predict(self, ctx, e: Mapping[str, Any], tr: np.ndarray, y: np.ndarray, targets: Sequence[dict],
                     seed: int) -> list[dict[str, np.ndarray]]:
        """Each predictor fitted on rows ``tr`` of the labelled pairs, its P(A preferred) for every
        ``targets`` block (``C, Ea, Eb, Sa, Sb`` and ``a``/``b`` texts), plus ``<model>@swapped``:
        the same pairs in the other order."""
        t = ctx.cfg.track
        opts = t.get("predictor_options") or {}
        feat = PairFeaturizer(str(t.projection), float(option(t, "projection_alpha", "track")), seed)
        feat.fit(e["C"][tr], e["Ea"][tr], e["Eb"][tr], e["Sa"][tr], e["Sb"][tr], y[tr])
        Fa, Fb = feat.transform(e["C"][tr], e["Ea"][tr], e["Eb"][tr], e["Sa"][tr], e["Sb"][tr])
        outs: list[dict[str, np.ndarray]] = [{} for _ in targets]
        for p in [str(p) for p in t.predictors]:
            if p in FLOORS:
                for out, blk in zip(outs, targets):
                    out[p] = floor_probability(p, blk["a"], blk["b"])
                continue
            model = build_pair_model(p, opts.get(p) or {}, seed).fit(Fa, Fb, y[tr])
            for out, blk in zip(outs, targets):
                Ga, Gb = feat.transform(blk["C"], blk["Ea"], blk["Eb"], blk["Sa"], blk["Sb"])
                out[p] = model.predict_proba(Ga, Gb)
                out[f"{p}@swapped"] = model.predict_proba(Gb, Ga)
        return outs

    def _folds(self, data: TrackData, n_folds: int, seed: int):
        names = data.train.names
        if len(set(names)) == len(names):
            return stratified_folds(data.train.y, n_folds, seed)
        # a clip with several pairs: its pairs stay in one fold (its features are shared)
        return make_folds(data.train.y, np.asarray(names, dtype=object), "stratified_group", n_folds, seed)

    def evaluate(self, ctx, data: TrackData) -> dict[str, Any]:
        """Out-of-fold P(A preferred) of every predictor per seed; ``on_fold`` hears each fold's
        ``<predictor>_waf`` / ``_acc`` and ``waf`` / ``acc`` (the best model's)."""
        cfg, e = ctx.cfg, data.extras
        lab: PairRows = e["labelled"]
        y = data.train.y
        gold = lab.preference
        oof: dict[int, dict[str, np.ndarray]] = {}
        symmetry: dict[str, float] = {}
        for seed in [int(s) for s in cfg.train.seeds]:
            oof[seed] = {}
            for k, (tr, va) in enumerate(self._folds(data, int(cfg.train.n_folds), seed)):
                held = dict(C=e["C"][va], Ea=e["Ea"][va], Eb=e["Eb"][va], Sa=e["Sa"][va], Sb=e["Sb"][va],
                            a=[lab.a[i] for i in va], b=[lab.b[i] for i in va])
                (out,) = self._fit_predict(ctx, e, tr, y, [held], seed * 1000 + k)
                record: dict[str, Any] = {"seed": seed, "fold": k, "n_train": len(tr), "n_val": len(va)}
                best = -1.0
                for p, prob in out.items():
                    if p.endswith("@swapped"):
                        symmetry[p[:-8]] = max(symmetry.get(p[:-8], 0.0), float(np.max(np.abs(prob + out[p[:-8]] - 1))))
                        continue
                    oof[seed].setdefault(p, np.full(len(y), np.nan))[va] = prob
                    sc = preference_scores([gold[i] for i in va], answers(prob))
                    record[f"{p}_waf"], record[f"{p}_acc"] = sc["waf"], sc["acc"]
                    if p in MODELS and sc["waf"] > best:
                        best, record["waf"], record["acc"] = sc["waf"], sc["waf"], sc["acc"]
                if "waf" not in record:                       # floors only
                    record["waf"] = max(v for key, v in record.items() if key.endswith("_waf"))
                    record["acc"] = max(v for key, v in record.items() if key.endswith("_acc"))
                if ctx.on_fold is not None:
                    ctx.on_fold(record)
        return {"oof": oof, "symmetry": symmetry}

    def write_outputs(self, ctx, data: TrackData, evaluation: Mapping[str, Any]) -> TrackOutcome:
        cfg, manifest, out, e, t = ctx.cfg, ctx.manifest, ctx.out, data.extras, ctx.cfg.track
        lab: PairRows = e["labelled"]
        cands: PairRows = e["candidates"]
        predictors = [str(p) for p in t.predictors]
        seeds = [int(s) for s in cfg.train.seeds]
        score_rows, frames = [], []
        for seed, probs in evaluation["oof"].items():
            frame = pd.DataFrame({"name": lab.names, "seed": seed, "preference": lab.preference})
            for p in predictors:
                sc = preference_scores(lab.preference, answers(probs[p]))
                score_rows.append({"predictor": p, "kind": "floor" if p in FLOORS else "model", "seed": seed, **sc})
                frame[f"p_a1_{p}"] = probs[p]
            frames.append(frame)
        scores = pd.DataFrame(score_rows)
        scores.to_csv(out / "prefer_scores.csv", index=False)
        (out / "predictions").mkdir(exist_ok=True)
        pd.concat(frames).to_csv(out / "predictions" / "prefer-oof.csv", index=False)

        rows, metrics = [], {}
        for p in predictors:
            grp = scores[scores.predictor == p]
            r: dict[str, Any] = {"predictor": p, "kind": grp.kind.iloc[0], "n": int(grp.n.iloc[0])}
            for k in ("waf", "acc"):
                mu, sd = mean_std(grp[k].tolist())
                r[f"cv_{k}"] = f"{mu:.4f}" + (f" ± {sd:.4f}" if len(grp) > 1 else "")
                metrics[f"prefer_{safe_name(p)}_{k}"] = mu
            rows.append(r)
        submit = str(option(t, "submit", "track"))
        if submit == "auto":
            submit = max(predictors, key=lambda p: metrics[f"prefer_{p}_waf"])
        elif submit not in predictors:
            raise UserError(f"track.submit={submit} is not one of the run's predictors {predictors}")
        for r in rows:
            r["submitted"] = "yes" if r["predictor"] == submit else ""
        metrics["prefer_waf"], metrics["prefer_acc"] = metrics[f"prefer_{submit}_waf"], metrics[f"prefer_{submit}_acc"]
        metrics["prefer_n_labelled"] = float(len(lab))

        subs: dict[str, Path] = {}
        schema = get_schema(str(option(t, "schema", "track")))
        split_of = {n: manifest[n].split for n in cands.names}
        held = [sp for sp in manifest.splits if sp in set(split_of.values())]
        wanted = held if option(t, "submit_splits", "track") == "all" else [str(s) for s in t.submit_splits]
        for sp in [s for s in wanted if s not in held]:
            log.warning("track.submit_splits names %s, which holds no candidate pair; no file for it", sp)
        wanted = [s for s in wanted if s in held]
        if wanted and len(cands):
            allrows = np.arange(len(lab))
            blk = dict(e["cand"], a=cands.a, b=cands.b)
            (final,) = self._fit_predict(ctx, e, allrows, data.train.y, [blk], seeds[0])
            p_final = final[submit]
            frame = pd.DataFrame({"name": cands.names, "split": [split_of[n] for n in cands.names],
                                  "p_a1": p_final, "preference": answers(p_final)})
            for sp in wanted:
                part = frame[frame.split == sp]
                part.to_csv(out / "predictions" / f"prefer-{sp}.csv", index=False)
                names = part.name.tolist()
                path = write_submission(schema, dict(zip(names, part.preference)),
                                        out / "submissions" / f"{t.name}-{sp}.csv", names)
                problems = validate_submission(path, schema, names=names)
                if problems:
                    raise RuntimeError(f"{t.name} submission {path} failed validation: {problems}")
                subs[f"{t.name}-{sp}"] = path
        elif not len(cands):
            log.warning("MER-Prefer: no candidate pairs (track.candidates), so no submission file")
        summary = {"prefer": {
            "pairs": e["source"], "n_labelled": len(lab), "n_ties_left_out": e["n_ties"], "n_candidates": len(cands),
            "columns": dict(t.columns), "labels": dict(t.labels), "encoder": e["encoder"],
            "projection": str(t.projection), "projection_alpha": float(t.projection_alpha),
            "features": e["flat"].describe(), "predictors": predictors, "submitted": submit,
            "selection": "best CV WAF" if str(t.submit) == "auto" else "track.submit",
            "metric": "MER2026 two-class WAF (same left out; MER2026_Track3/utils/common.py), accuracy beside",
            "symmetry_max_error": evaluation["symmetry"], "schema": schema.name, "seeds": seeds,
            "n_folds": int(cfg.train.n_folds), "folds": "stratified on the answer (a clip's pairs kept together)"}}
        log.info("MER-Prefer: submitted %s (CV WAF %.4f, accuracy %.4f)", submit, metrics["prefer_waf"],
                 metrics["prefer_acc"])
        artifacts = [out / n for n in ("prefer_scores.csv", "prefer_pairs.csv", "prefer_candidates.csv")]
        return TrackOutcome(rows, metrics, subs, summary, artifacts)
