"""MER-Cross track (``track=cross``, MER2026 Track1): the emotion of the interlocutor of a dyadic
exchange, from their own clip and their partner's.

What is public (MERTools, ``MER2026/MER2026_Track1``): in a dyadic conversation s1 speaks and s2
listens; earlier tracks predicted the speaker's emotion, MER-Cross predicts the listener's (its
``README.md``). The release has ``track1_train.csv`` (9,395 same-person clips, ``name,discrete``),
``track1_track2_candidate.csv`` (the 20,000 clips to predict) and ``subtitle_chieng.csv``
(``toolkit/preprocess/mer2026.py``: the test labels are set to ``neutral`` placeholders); the score
is the weighted F1 of the discrete label (``evaluation.py``); a submission is ``name,discrete``
(``submission.py``; schema ``mer2026_cross``, the platform's file name is not public). Not public:
which clip is whose partner. mer reads that from ``track.pairs``, a CSV ``name,partner[,exchange]``
(``track.columns`` renames them): each row says that ``partner`` is the other speaker of
``name``'s exchange. A sample with no row has no partner (its partner streams are absent and
masked, as a missing face is).

Pairing (``track.pairing``), stream by stream of the run (``text``, ``audio``, ``visual``...):

``none``        the sample's own streams: the same-person baseline;
``concat``      the own streams and the partner's as streams of their own (``partner_<stream>``):
                the fusion model sees both speakers side by side (``fusion=attention`` attends
                across the two speakers' streams: cross-attention between them);
``difference``  the own streams and ``<stream> - partner_<stream>`` (``diff_<stream>``) where both
                are present: what differs from the partner.

``track.target_streams``: the own streams kept (the listener is seen, not heard: ``[visual]``);
null keeps every one. With a pairing, the own-streams-only setting is cross-validated on the same
folds beside the paired one (``track.compare_unpaired``), so the table shows what the partner adds.

Folds: an exchange (the ``exchange`` column, else the pair itself) is a group, and the folds are
stratified by label and grouped by exchange (``stratified_group``): two partners never sit on both
sides of a fold, where one's features would carry the other's held-out clip.

Demo: the demo corpus has no exchanges; ``track.pairs: null`` pairs each split's clips at random
(seeded by ``track.demo_seed``), which exercises the whole track but carries no signal: on the
demo the partner streams add nothing, by construction.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from mer.core.config import option
from mer.core.errors import UserError
from mer.core.rng import keyed_rng
from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.training.folds import check_protocol

from .base import STRATEGIES, TrackData
from .supervised import Evaluation, SupervisedStrategy, make_estimator
from .outputs import cv_label

log = logging.getLogger("mer")

PAIRINGS = ("none", "concat", "difference")
PARTNER, DIFF = "partner_", "diff_"
GROUPED = "stratified_group"


@dataclass(frozen=True)
class Pairs:
    """``partner[name]`` and ``exchange[name]`` for the samples that have a partner; ``source``
    says where they came from."""

    partner: Mapping[str, str]
    exchange: Mapping[str, str]
    source: str

    def group_of(self, name: str) -> str:
        return self.exchange.get(name, f"solo:{name}")


def read_pairs(path: str | Path, columns: Mapping[str, str], known: set[str]) -> Pairs:
    """Pairs from a CSV (module docstring); every clip must be a sample of the dataset, and a
    sample names one partner only."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"track.pairs={path} is not a file (a CSV {columns['name']},{columns['partner']}"
                        f"[,{columns['exchange']}])")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    need = [columns["name"], columns["partner"]]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise UserError(f"{path} has no column(s) {missing} (has {list(frame.columns)}); set track.columns "
                        f"(name, partner, exchange) to the file's own")
    ex_col = columns.get("exchange")
    partner: dict[str, str] = {}
    exchange: dict[str, str] = {}
    for line, row in enumerate(frame.to_dict("records"), start=2):
        a, b = row[need[0]].strip(), row[need[1]].strip()
        for n in (a, b):
            if n not in known:
                raise UserError(f"{path} line {line}: {n!r} is not a sample of the dataset; is data.root the "
                                f"right dataset?")
        if a == b:
            raise UserError(f"{path} line {line}: {a} is its own partner")
        if partner.get(a, b) != b:
            raise UserError(f"{path} line {line}: {a} has two partners ({partner[a]} and {b})")
        partner[a] = b
        ex = str(row.get(ex_col, "")).strip() if ex_col and ex_col in frame.columns else ""
        exchange[a] = ex or exchange.get(b) or "pair:" + "|".join(sorted((a, b)))
        exchange.setdefault(b, exchange[a])
    return Pairs(partner, exchange, str(path))


def demo_pairs(splits: Mapping[str, Sequence[str]], seed: int) -> Pairs:
    """Each split's clips paired at random (seeded): consecutive clips of a shuffled order are one
    exchange, each the other's partner; an odd clip out has none. No label is read."""
    partner, exchange = {}, {}
    for sp, names in splits.items():
        order = list(names)
        keyed_rng(seed, sp, "cross-demo").shuffle(order)
        for i in range(0, len(order) - 1, 2):
            a, b = order[i], order[i + 1]
            partner[a], partner[b] = b, a
            exchange[a] = exchange[b] = f"{sp}:{i // 2:05d}"
    return Pairs(partner, exchange, f"demo: each split's clips paired at random (seed {seed}); no signal")


def _absent_like(f: ModalityFeatures, n: int) -> ModalityFeatures:
    shape = (n,) + f.X.shape[1:]
    lengths = None if f.lengths is None else np.zeros(n, np.int64)
    times = None if f.times is None else np.full(shape[:2], np.nan)
    return ModalityFeatures(np.zeros(shape, np.float32), np.zeros(n, bool), f.source, lengths, times)


def partner_features(f: ModalityFeatures, index: np.ndarray) -> ModalityFeatures:
    """Row ``i``: the features of row ``index[i]`` of ``f``, absent where ``index[i] < 0``."""
    has = index >= 0
    out = _absent_like(f, len(index))
    if not has.any():
        return out
    got = f.rows(index[has])
    X = np.zeros((len(index),) + got.X.shape[1:], np.float32)
    X[has] = got.X
    present = np.zeros(len(index), bool)
    present[has] = got.present
    lengths = times = None
    if f.lengths is not None:
        lengths = np.zeros(len(index), np.int64)
        lengths[has] = got.lengths
    if got.times is not None:
        times = np.full(X.shape[:2], np.nan)
        times[has] = got.times
    return replace(out, X=X, present=present, lengths=lengths, times=times)


def paired_bundle(bundle: FeatureBundle, pairs: Pairs, pairing: str, target_streams: Sequence[str] | None
                  ) -> FeatureBundle:
    """The run's bundle with the partner streams of ``pairing`` added and the own streams cut to
    ``target_streams`` (module docstring). Row order and names stay."""
    if pairing not in PAIRINGS:
        raise UserError(f"track.pairing={pairing}; one of {', '.join(PAIRINGS)}")
    streams = sorted(bundle.modalities)
    own = list(streams) if target_streams is None else [str(s) for s in target_streams]
    unknown = [s for s in own if s not in bundle.modalities]
    if unknown:
        raise UserError(f"track.target_streams names {unknown}; the run's streams are {streams}")
    pos = {n: i for i, n in enumerate(bundle.names)}
    index = np.array([pos.get(pairs.partner.get(n, ""), -1) for n in bundle.names], dtype=np.int64)
    mods = {s: bundle.modalities[s] for s in own}
    if pairing == "concat":
        mods.update({PARTNER + s: partner_features(bundle.modalities[s], index) for s in streams})
    elif pairing == "difference":
        for s in own:
            f = bundle.modalities[s]
            if f.is_sequence:
                raise UserError(f"track.pairing=difference needs utterance-level streams; {s} is frame level "
                                f"(pool it, or track.pairing=concat)")
            p = partner_features(f, index)
            both = f.present & p.present
            mods[DIFF + s] = ModalityFeatures(np.where(both[:, None], f.X - p.X, 0).astype(np.float32), both,
                                              f.source)
    return FeatureBundle(list(bundle.names), mods)


@STRATEGIES.register("cross")
class CrossStrategy(SupervisedStrategy):
    """The supervised protocol over paired streams, folds grouped by exchange (module docstring)."""

    name = "cross"

    def _pairs(self, ctx) -> Pairs:
        t, manifest = ctx.cfg.track, ctx.manifest
        columns = dict(option(t, "columns", "track"))
        path = t.get("pairs")
        if path not in (None, "", "none"):
            return read_pairs(path, columns, set(manifest.names()))
        if ctx.cfg.data.name != "demo":
            raise UserError(f"track=cross needs the exchanges: track.pairs=/path/to/pairs.csv "
                            f"({columns['name']},{columns['partner']}[,{columns['exchange']}], names of "
                            f"{manifest.dataset} samples); only the demo corpus pairs its clips itself")
        return demo_pairs({sp: [s.name for s in manifest.split(sp)] for sp in manifest.splits},
                          int(option(t, "demo_seed", "track")))

    def check(self, ctx) -> None:
        super().check(ctx)
        pairs = self._pairs(ctx)
        pairing = str(option(ctx.cfg.track, "pairing", "track"))
        if pairing not in PAIRINGS:
            raise UserError(f"track.pairing={pairing}; one of {', '.join(PAIRINGS)}")
        m = ctx.manifest
        train = [s for s in m.split(m.train_split) if m.label_spec.has_target(s)]
        groups = [pairs.group_of(s.name) for s in train]
        try:
            check_protocol(GROUPED, groups, int(ctx.cfg.train.n_folds), f"split {m.train_split!r} of {m.dataset}")
        except ValueError as err:
            raise UserError(f"track=cross folds by exchange: {err}") from None
        ctx.info["protocol"] = GROUPED
        ctx.info["cross_pairs"] = pairs

    def prepare(self, ctx) -> TrackData:
        t = ctx.cfg.track
        pairs: Pairs = ctx.info.get("cross_pairs") or self._pairs(ctx)
        pairing = str(t.pairing)
        own_streams = sorted(ctx.bundle.modalities) if t.get("target_streams") is None else \
            [str(s) for s in t.target_streams]
        ctx.features.bundle = paired_bundle(ctx.bundle, pairs, pairing, t.get("target_streams"))
        for m in ctx.bundle.modalities:
            base = m[len(PARTNER):] if m.startswith(PARTNER) else m[len(DIFF):] if m.startswith(DIFF) else m
            if m != base and base in ctx.features.info:
                ctx.features.info[m] = {**ctx.features.info[base], "paired": f"{pairing} of {base}"}
        data = super().prepare(ctx)
        for split in [data.train, *data.tests.values()]:
            split.groups = np.asarray([pairs.group_of(n) for n in split.names], dtype=object)
            split.protocol = GROUPED
        n_paired = sum(n in pairs.partner for n in data.train.names)
        log.info("MER-Cross: pairing=%s, own streams %s; %d of %d training samples have a partner (%s)", pairing,
                 own_streams, n_paired, len(data.train), pairs.source)
        self._write_pairs(ctx.out, pairs)
        data.extras.update(cross=dict(pairing=pairing, own_streams=own_streams, source=pairs.source,
                                      n_paired_train=n_paired, n_exchanges=len(set(pairs.exchange.values()))))
        return data

    @staticmethod
    def _write_pairs(out: Path | None, pairs: Pairs) -> None:
        if out is None:
            return
        names = sorted(pairs.partner)
        pd.DataFrame({"name": names, "partner": [pairs.partner[n] for n in names],
                      "exchange": [pairs.exchange[n] for n in names]}).to_csv(out / "cross_pairs.csv", index=False)

    def evaluate(self, ctx, data: TrackData) -> Evaluation:
        evaluation = super().evaluate(ctx, data)
        cross = data.extras["cross"]
        if cross["pairing"] != "none" and bool(option(ctx.cfg.track, "compare_unpaired", "track")):
            cfg = ctx.cfg
            own = cross["own_streams"]
            est = make_estimator(cfg, ctx.manifest, data.extras["metric"], ctx.device)
            res = self.cross_validate(est, data.select(own), seeds=[int(s) for s in cfg.train.seeds],
                                      n_folds=int(cfg.train.n_folds), progress=bool(cfg.progress),
                                      label=cv_label(own, str(cfg.fusion.name), "unpaired"), on_fold=None)
            evaluation.settings.insert(len(evaluation.settings) - 1, (own, res))
        return evaluation

    def write_outputs(self, ctx, data: TrackData, evaluation: Evaluation):
        outcome = super().write_outputs(ctx, data, evaluation)
        cross = data.extras["cross"]
        metrics: dict[str, Any] = dict(outcome.metrics)
        metrics["cross_n_paired_train"] = float(cross["n_paired_train"])
        summary = {**outcome.summary, "cross": cross}
        artifacts = [*outcome.artifacts, ctx.out / "cross_pairs.csv"]
        return replace(outcome, metrics=metrics, summary=summary, artifacts=artifacts)
