"""``track=mllm``: a multimodal chat model as a zero-shot predictor (GPT-4V-emotion's protocol),
scored with the official metrics, compared with a linear floor on the run's own features, and
submitted like any model.

Per input setting of ``track.settings`` (the paper's ablation: ``text``, ``video``, ``multi`` =
text + frames; ``audio`` and ``multi+audio`` for endpoints that take audio) the model is asked
about every sample of the asked splits (:class:`feature_extractors.mllm.predictor.MLLMPredictor`:
the discrete task ranks the dataset's classes; with valence data and ``track.valence`` a second
request asks for the valence). Answers are cached per sample, so a rerun makes no request.

Scores: nothing is trained, so every labelled row of ``track.score_split`` (the training split by
default) is held out; each setting's accuracy, weighted F1 (and valence MSE and the MER2023
combined figure) are computed *as submitted*, an unusable answer taking the fallback class
(``track.fallback``: the training split's most frequent class), beside the share of usable
answers and the figure over those alone. The floor: a multinomial logistic regression on the run's
feature streams (:class:`FlatFeatures`, by default the text features), cross-validated on the same
rows with seeded stratified folds (``train.n_folds``, each seed of ``train.seeds``), out of fold.

Outputs: ``answers.jsonl`` (every sample's raw answer, its reading, why it was unusable),
``predictions/<setting>/<split>.csv``, the validated submissions of ``track.submit``'s setting
(``data.submissions``), and metrics ``mllm_<setting>_<metric>``, requests, cache hits, tokens and
the cost in MLflow (the key is read from the environment variable ``mllm.api_key_env``; neither it
nor anything derived from it is logged).
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from feature_extractors.mllm.answers import AnswerCache
from feature_extractors.mllm.client import ChatEndpoint
from feature_extractors.mllm.media import MediaSettings
from feature_extractors.mllm.predictor import MLLMPredictor, Prediction, Usage
from feature_extractors.mllm.prompts import build_spec, input_set
from feature_extractors.visual.faces import face_config_from
from mer.core.errors import UserError
from mer.core.samples import Sample
from mer.data.frames import masked_mean
from mer.evaluation.metrics import accuracy, combined, mse, weighted_f1
from mer.tracks._common import FlatFeatures, mean_std
from mer.tracks.base import STRATEGIES, Strategy, TrackData, TrackOutcome
from mer.tracks.outputs import fmt_mean_std, write_submission_frames
from mer.training.cv import stratified_folds
from mer.training.data import Split

log = logging.getLogger("mer")

SETTING_INPUTS: Mapping[str, tuple[str, ...]] = {
    "text": ("text",), "video": ("video",), "audio": ("audio",), "multi": ("text", "video"),
    "multi+audio": ("text", "video", "audio"), "video+audio": ("video", "audio"),
}


def setting_inputs(name: str) -> tuple[str, ...]:
    """The inputs of a setting name (``multi`` = text + video; ``text+audio``... also read)."""
    if name in SETTING_INPUTS:
        return SETTING_INPUTS[name]
    return tuple(sorted(input_set(name.split("+"))))


def is_stream_setting(setting: str) -> bool:
    """``features.<stream>``: the run's own stream of class scores (a zero-shot extractor such as
    ``clip_zeroshot``, or ``mllm`` with task discrete) predicts, without any request."""
    return setting.startswith("features.")


def stream_predictions(ctx, stream: str, samples: Sequence[Sample]) -> list[Prediction]:
    """Each sample's classes ranked by a class-score stream (its columns in its extractor's
    ``labels`` order, the dataset's classes when it has none);
    a sample without the feature has no prediction (its failure is in failures.jsonl)."""
    if stream not in ctx.bundle.modalities:
        raise UserError(f"features.{stream} produced no stream for this dataset")
    feats = ctx.bundle.modalities[stream]
    classes = list(ctx.manifest.label_spec.classes)
    X = np.asarray(feats.X, dtype=np.float64)
    if X.ndim == 3:                                   # frame level: mean over the valid frames
        X = masked_mean(X, np.asarray(feats.lengths), dtype=np.float64)
    if X.shape[1] < len(classes):
        raise UserError(f"features.{stream} has {X.shape[1]} columns, fewer than the {len(classes)} classes: "
                        f"it is not a class-score stream")
    extractor = next((x.extractor for x in ctx.features.streams if x.stream == stream), None)
    labels = [str(c) for c in (getattr(getattr(extractor, "config", None), "labels", None) or classes)]
    missing = [c for c in classes if c not in labels]
    if missing:
        raise UserError(f"features.{stream} scores the labels {labels}, which lack the dataset's {missing}")
    X = X[:, [labels.index(c) for c in classes]]      # its columns follow its own labels' order
    row = {n: i for i, n in enumerate(ctx.bundle.names)}
    out = []
    for s in samples:
        i = row.get(s.name)
        if i is None or not feats.present[i]:
            out.append(Prediction(s.name, False, reason=f"no {stream} feature", failure="no_feature"))
            continue
        order = np.argsort(-X[i, :len(classes)], kind="stable")
        out.append(Prediction(s.name, True, [classes[k] for k in order]))
    return out


def build_predictor(cfg, *, progress: bool = True, context: Any = None) -> MLLMPredictor:
    """The predictor ``cfg.mllm`` describes (endpoint, answer cache, frames, concurrency, prices)."""
    m = cfg.mllm
    if not m.get("endpoint") or not m.get("model"):
        raise UserError("track=mllm needs an endpoint and a model: mllm.endpoint=http://HOST:PORT/v1 "
                        "mllm.model=NAME (the key, if any, in the environment variable mllm.api_key_env). "
                        "To try it offline: python -m mer.mllm serve-demo --port 8000, then "
                        "mllm.endpoint=http://127.0.0.1:8000/v1 mllm.model=demo")
    endpoint = ChatEndpoint(str(m.endpoint), str(m.model), m.get("api_key_env") or None,
                            float(m.get("timeout_s", 120)), int(m.get("max_retries", 4)),
                            backoff_s=float(m.get("backoff_s", 1.0)),
                            requests_per_minute=float(m.get("requests_per_minute") or 0),
                            temperature=float(m.get("temperature", 0.0)), max_tokens=int(m.get("max_tokens", 512)),
                            extra_body=dict(m.get("extra_body") or {}))
    media = MediaSettings(int(m.get("frames", 3)), int(m.get("frame_size", 336)), str(m.get("frame_source", "frame")),
                          language=cfg.data.get("language"),
                          face=face_config_from(m.get("face")) if m.get("face") else MediaSettings().face)
    price = m.get("price") or {}
    return MLLMPredictor(endpoint, AnswerCache(str(m.cache_dir)), media,
                         concurrency=int(m.get("concurrency", 4)),
                         samples_per_request=int(m.get("samples_per_request", 1)),
                         prices=(float(price.get("input_per_1m", 0.0)), float(price.get("output_per_1m", 0.0))),
                         system_prompt=m.get("system_prompt") or None, progress=progress, context=context)


@STRATEGIES.register("mllm_zero_shot")
class MLLMZeroShot(Strategy):
    """See the module docstring."""

    def run_tags(self, cfg) -> dict[str, str]:
        return {"model": str(cfg.mllm.get("model") or "none").replace("/", "_")}

    def check(self, ctx) -> None:
        settings = [str(s) for s in ctx.cfg.track.settings]
        if any(not is_stream_setting(s) for s in settings):
            build_predictor(ctx.cfg, progress=False)        # endpoint and model set, settings valid
        spec = ctx.manifest.label_spec
        if not spec.has_discrete and not spec.has_valence:
            raise UserError("track=mllm: the dataset has neither classes nor valence to ask about")
        for s in settings:
            if is_stream_setting(s):
                stream = s.split(".", 1)[1]
                if not (ctx.cfg.features.get(stream) or {}).get("name"):
                    raise UserError(f"track.settings names {s}, but features.{stream} is not set (e.g. "
                                    f"features/visual=clip_zeroshot features.visual.options.model_path=/models/clip)")
            else:
                setting_inputs(s)
        if str(ctx.cfg.track.submit) not in [str(s) for s in ctx.cfg.track.settings]:
            raise UserError(f"track.submit={ctx.cfg.track.submit} is not one of track.settings "
                            f"{list(ctx.cfg.track.settings)}")

    def prepare(self, ctx) -> TrackData:
        cfg, manifest = ctx.cfg, ctx.manifest
        t = cfg.track
        splits = list(manifest.splits) if str(t.get("splits", "all")) == "all" else [str(s) for s in t.splits]
        missing = [s for s in splits if s not in manifest.splits]
        if missing:
            raise UserError(f"track.splits names {missing}; the dataset has {manifest.splits}")
        score_split = str(t.get("score_split") or manifest.train_split)
        labelled = [s for s in manifest.split(score_split) if s.is_labelled]
        spec = manifest.label_spec
        valence = spec.has_valence and str(t.get("valence", "auto")) in ("auto", "true", "True")
        counts = Counter(s.discrete for s in manifest.split(manifest.train_split) if s.discrete is not None)
        fallback = counts.most_common(1)[0][0] if counts else (spec.classes[0] if spec.classes else None)
        return TrackData(Split(ctx.bundle.take([s.name for s in labelled]),
                               np.array([spec.index(s.discrete) if s.discrete is not None else -1 for s in labelled]),
                               np.array([np.nan if s.valence is None else s.valence for s in labelled], np.float32)),
                         {}, extras=dict(splits=splits, labelled=labelled, valence=valence, fallback=fallback,
                                         score_split=score_split))

    def evaluate(self, ctx, data: TrackData) -> dict[str, Any]:
        cfg, manifest = ctx.cfg, ctx.manifest
        e = data.extras
        spec = manifest.label_spec
        settings = [str(s) for s in cfg.track.settings]
        predictor = None if all(is_stream_setting(s) for s in settings) else \
            build_predictor(cfg, progress=bool(cfg.get("progress", True)))
        asked: list[Sample] = [s for sp in e["splits"] for s in manifest.split(sp)]
        frames = int(cfg.mllm.get("frames", 3))
        answers: dict[str, dict[str, list[Prediction]]] = {}
        for setting in settings:
            if is_stream_setting(setting):
                answers[setting] = {"discrete": stream_predictions(ctx, setting.split(".", 1)[1], asked)}
                log.info("zero-shot %s: %s", setting, _usable_line(answers[setting]))
                continue
            assert predictor is not None
            inputs = setting_inputs(setting)
            answers[setting] = {}
            if spec.has_discrete:
                ps = build_spec("discrete", inputs, spec.classes, frames, spec.valence_range,
                                cfg.mllm.get("templates"))
                answers[setting]["discrete"] = predictor.predict(asked, ps)
            if e["valence"]:
                ps = build_spec("valence", inputs, (), frames, spec.valence_range, cfg.mllm.get("templates"))
                answers[setting]["valence"] = predictor.predict(asked, ps)
            log.info("MLLM %s: %s", setting, _usable_line(answers[setting]))
        baseline = self._baseline(ctx, data) if cfg.track.get("baseline", True) and spec.has_discrete else None
        return {"answers": answers, "asked": asked, "usage": predictor.usage if predictor else Usage(),
                "baseline": baseline, "model": str(cfg.mllm.get("model") or "-")}

    def _baseline(self, ctx, data: TrackData) -> dict[str, Any] | None:
        """Logistic regression on the run's features, out of fold on the scored rows."""
        bundle = data.train.X
        if not bundle.modalities:
            return None
        y = data.train.y
        flat = FlatFeatures().fit(bundle)
        X = flat.transform(bundle)
        scores: dict[str, list[float]] = {"acc": [], "wf1": []}
        for seed in [int(s) for s in ctx.cfg.train.seeds]:
            pred = np.full(len(y), -1)
            for tr, te in stratified_folds(y, int(ctx.cfg.train.n_folds), seed):
                model = LogisticRegression(C=float(ctx.cfg.track.get("baseline_C", 1.0)), max_iter=2000)
                model.fit(X[tr], y[tr])
                pred[te] = model.predict(X[te])
            scores["acc"].append(accuracy(y, pred))
            scores["wf1"].append(weighted_f1(y, pred))
        return {"features": flat.describe(), **{k: mean_std(v) for k, v in scores.items()},
                "n_seeds": len(ctx.cfg.train.seeds)}

    def write_outputs(self, ctx, data: TrackData, evaluation: Mapping[str, Any]) -> TrackOutcome:
        cfg, manifest, out = ctx.cfg, ctx.manifest, ctx.out
        e = data.extras
        spec = manifest.label_spec
        answers, asked = evaluation["answers"], evaluation["asked"]
        usage = evaluation["usage"]
        label_of = {s.name: s for s in e["labelled"]}
        rows, metrics = [], dict(usage.as_metrics())
        with open(out / "answers.jsonl", "w", encoding="utf-8") as f:
            for setting, tasks in answers.items():
                for task, preds in tasks.items():
                    for s, p in zip(asked, preds):
                        f.write(json.dumps({"setting": setting, "task": task, "name": s.name, "split": s.split,
                                            "ok": p.ok, "value": p.value, "reason": p.reason, "raw": p.raw,
                                            "cached": p.cached, "failure": p.failure}, ensure_ascii=False,
                                           default=str) + "\n")
        frames_by_setting: dict[str, dict[str, pd.DataFrame]] = {}
        for setting, tasks in answers.items():
            table = self._table(asked, tasks, spec, e["fallback"])
            frames_by_setting[setting] = {sp: table[table.split == sp].drop(columns="split")
                                          for sp in e["splits"]}
            pred_dir = out / "predictions" / _metric_name(setting)
            pred_dir.mkdir(parents=True, exist_ok=True)
            for sp, df in frames_by_setting[setting].items():
                df.to_csv(pred_dir / f"{sp}.csv", index=False)
            scored = table[table.name.isin(label_of)]
            method = (f"{ctx.features.info[setting.split('.', 1)[1]]['extractor']} zero-shot"
                      if is_stream_setting(setting) else f"{evaluation['model']} zero-shot")
            row = {"setting": setting, "method": method, "n": len(scored)}
            sc = self._scores(scored, label_of, spec)
            row.update({k: f"{v:.4f}" for k, v in sc.items()})
            metrics.update({f"mllm_{_metric_name(setting)}_{k}": v for k, v in sc.items()})
            rows.append(row)
        base = evaluation.get("baseline")
        if base is not None:
            (acc_m, acc_s), (wf1_m, wf1_s) = base["acc"], base["wf1"]
            rows.append({"setting": "features", "method": f"logistic regression on {base['features']} (OOF)",
                         "n": len(data.train.y), "acc": fmt_mean_std(acc_m, acc_s, base["n_seeds"]),
                         "wf1": fmt_mean_std(wf1_m, wf1_s, base["n_seeds"])})
            metrics.update({"baseline_acc": acc_m, "baseline_wf1": wf1_m})
        submit = str(cfg.track.submit)
        to_submit = frames_by_setting[submit]
        if spec.has_valence and any("valence" not in df for df in to_submit.values()):
            # the schema needs a valence the setting did not ask for: the training mean, said so
            known = [x.valence for x in manifest.split(manifest.train_split) if x.valence is not None]
            mean_v = float(np.mean(known)) if known else 0.0
            to_submit = {sp: df.assign(valence=mean_v) if "valence" not in df else df for sp, df in to_submit.items()}
            e["constant_valence"] = mean_v
        subs = write_submission_frames(cfg, manifest, to_submit, out)
        n_fallback = {sp: int(df["fallback"].sum()) for sp, df in frames_by_setting[submit].items()
                      if "fallback" in df}
        summary = {"mllm": {"model": evaluation["model"], "settings": list(answers), "submitted": submit,
                            "scored_on": e["score_split"], "fallback_class": e["fallback"],
                            "fallback_rows": n_fallback, "usage": usage.as_metrics(prefix="")}}
        notes = [f"MLLM {evaluation['model']}: {int(usage.requests)} requests ({int(usage.retries)} retries, "
                 f"{int(usage.failed_requests)} failed), {int(usage.cache_hits)} answers from the cache, "
                 f"{usage.prompt_tokens + usage.completion_tokens} tokens, US$ {usage.cost_usd:.4f}"]
        if "constant_valence" in e:
            notes.append(f"no valence was asked ({submit}): the submissions carry the training mean "
                         f"{e['constant_valence']:.3f} for every row")
        if any(n_fallback.values()):
            notes.append(f"submission rows with an unusable answer got the fallback class {e['fallback']!r}: "
                         + ", ".join(f"{sp} {n}" for sp, n in n_fallback.items() if n))
        return TrackOutcome(rows, metrics, subs, summary, [out / "answers.jsonl"], notes=notes)

    @staticmethod
    def _table(asked: Sequence[Sample], tasks: Mapping[str, list[Prediction]], spec, fallback) -> pd.DataFrame:
        df = pd.DataFrame({"name": [s.name for s in asked], "split": [s.split for s in asked]})
        if "discrete" in tasks:
            preds = tasks["discrete"]
            df["usable"] = [p.ok for p in preds]
            df["discrete"] = [p.value[0] if p.ok else fallback for p in preds]
            df["fallback"] = [not p.ok for p in preds]
            for c in spec.classes:
                df[f"rank_{c}"] = [(p.value.index(c) + 1 if p.ok and c in p.value else 0) for p in preds]
        if "valence" in tasks:
            preds = tasks["valence"]
            df["valence_usable"] = [p.ok for p in preds]
            df["valence"] = [float(p.value) if p.ok else 0.0 for p in preds]
        return df

    @staticmethod
    def _scores(scored: pd.DataFrame, label_of: Mapping[str, Sample], spec) -> dict[str, float]:
        out: dict[str, float] = {}
        if "discrete" in scored:
            truth = np.array([spec.index(label_of[n].discrete) for n in scored.name])
            pred = np.array([spec.index(c) for c in scored.discrete])
            ok = scored.usable.to_numpy(bool)
            out.update(acc=accuracy(truth, pred), wf1=weighted_f1(truth, pred), usable=float(ok.mean()))
            if ok.any():
                out["wf1_usable_only"] = weighted_f1(truth[ok], pred[ok])
        if "valence" in scored:
            v = np.array([label_of[n].valence for n in scored.name], dtype=float)
            known = np.isfinite(v)
            if known.any():
                out["mse"] = mse(v[known], scored.valence.to_numpy(float)[known])
                if "wf1" in out:
                    out["combined"] = combined(out["wf1"], out["mse"])
        return out


def _usable_line(tasks: Mapping[str, list[Prediction]]) -> str:
    parts = []
    for task, preds in tasks.items():
        ok = sum(p.ok for p in preds)
        cached = sum(p.cached for p in preds)
        parts.append(f"{task} {ok}/{len(preds)} usable ({cached} cached)")
    return "; ".join(parts)


def _metric_name(setting: str) -> str:
    return setting.replace("+", "_").replace("features.", "stream_")

