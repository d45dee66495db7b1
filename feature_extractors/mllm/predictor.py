"""Asking a multimodal chat model about samples: :class:`MLLMPredictor`.

``predictor.predict(samples, spec)`` returns one :class:`Prediction` per sample, in order:

1. each sample's cache key (:meth:`MLLMPredictor.key`: model, the rendered instruction, labels,
   request settings, the media digests and transcript; never the endpoint URL or key); samples
   whose answer is cached are read from the :class:`~.answers.AnswerCache` (no request, no
   decoding);
2. the others go in requests of ``samples_per_request`` items (1 by default; GPT-4V-emotion sent
   6 multimodal / 8 video / 20 text items), ``concurrency`` requests at a time under the
   endpoint's rate limit and retries. A request whose answer holds a different number of records
   than items is asked again as two halves, down to single items (the paper's recursive
   splitting). A sample whose media cannot be read fails alone (``missing_file``, ``no_face``...);
   an endpoint error fails the samples of that request and is not cached;
3. every answer is parsed for the task (:mod:`.parse`); an unparsable one is a prediction with
   ``ok=False`` and the reason, recorded with the raw answer, never guessed.

:class:`Usage` counts requests, cache hits, tokens and their cost (``prices``: US$ per million
input / output tokens) for this call; cached answers add their stored tokens to ``cached_*`` only.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from feature_extractors.mllm.answers import AnswerCache
from feature_extractors.mllm.client import ChatEndpoint, EndpointError
from feature_extractors.mllm.media import MediaSettings, media_key, sample_parts
from feature_extractors.mllm.parse import Parsed, answer_items, parse_result
from feature_extractors.mllm.prompts import PromptSpec, setting_name
from mer.core.failures import MediaError
from mer.core.hashing import cache_key
from mer.core.samples import Sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """One sample's answer: ``ok``/``value``/``reason`` as :class:`~.parse.Parsed`; ``failure``
    is set when no answer came (media or endpoint error: ``reason`` then says which);
    ``cached`` whether it came from the cache; ``raw`` the item's text as answered."""

    name: str
    ok: bool
    value: Any = None
    reason: str = ""
    raw: str = ""
    cached: bool = False
    failure: str = ""


@dataclass
class Usage:
    """What one or more ``predict`` calls cost (module docstring)."""

    requests: int = 0
    retries: int = 0
    failed_requests: int = 0
    cache_hits: int = 0
    answered: int = 0
    unparsable: int = 0
    failed_samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: float = 0.0
    cached_completion_tokens: float = 0.0
    input_price_per_1m: float = 0.0
    output_price_per_1m: float = 0.0

    @property
    def cost_usd(self) -> float:
        return (self.prompt_tokens * self.input_price_per_1m
                + self.completion_tokens * self.output_price_per_1m) / 1e6

    @property
    def cached_cost_usd(self) -> float:
        """What the cached answers cost when they were asked."""
        return (self.cached_prompt_tokens * self.input_price_per_1m
                + self.cached_completion_tokens * self.output_price_per_1m) / 1e6

    def as_metrics(self, prefix: str = "mllm_") -> dict[str, float]:
        out = {k: float(v) for k, v in dataclasses.asdict(self).items() if not k.endswith("price_per_1m")}
        out["cost_usd"] = round(self.cost_usd, 6)
        out["cached_cost_usd"] = round(self.cached_cost_usd, 6)
        return {prefix + k: v for k, v in out.items()}


class MLLMPredictor:
    """See the module docstring. ``context`` (an ``ExtractContext``) shares face crops."""

    def __init__(self, endpoint: ChatEndpoint, cache: AnswerCache, media: MediaSettings | None = None, *,
                 concurrency: int = 4, samples_per_request: int = 1, prices: Sequence[float] = (0.0, 0.0),
                 system_prompt: str | None = None, progress: bool = True, context: Any = None) -> None:
        if concurrency < 1 or samples_per_request < 1:
            raise ValueError("mllm concurrency and samples_per_request must be at least 1")
        self.endpoint = endpoint
        self.cache = cache
        self.media = media or MediaSettings()
        self.concurrency = int(concurrency)
        self.samples_per_request = int(samples_per_request)
        self.system_prompt = system_prompt
        self.progress = progress
        self.context = context
        self.usage = Usage(input_price_per_1m=float(prices[0]), output_price_per_1m=float(prices[1]))
        self._usage_lock = threading.Lock()

    # --- keys ------------------------------------------------------------------------------------
    def request_identity(self, spec: PromptSpec) -> dict[str, Any]:
        """Everything of a request but the sample: what two runs must share to share answers."""
        return {"model": self.endpoint.model, "task": spec.task, "inputs": sorted(spec.inputs),
                "instruction": spec.render(1), "labels": list(spec.labels), "system": self.system_prompt,
                "temperature": self.endpoint.temperature, "max_tokens": self.endpoint.max_tokens,
                "extra_body": dict(self.endpoint.extra_body), "samples_per_request": self.samples_per_request}

    def key(self, sample: Sample, spec: PromptSpec, extra_text: str | None = None) -> str:
        """The cache key of ``sample``'s answer under ``spec`` (module docstring)."""
        return cache_key({**self.request_identity(spec), "sample": media_key(sample, spec.inputs, self.media),
                          "extra": extra_text})

    # --- work --------------------------------------------------------------------------------------
    def predict(self, samples: Sequence[Sample], spec: PromptSpec,
                extra_text: Mapping[str, str] | None = None, desc: str | None = None) -> list[Prediction]:
        """One prediction per sample, in order (module docstring). ``extra_text[name]`` is added
        to that sample's item (a preference item's two descriptions)."""
        extra_text = extra_text or {}
        out: dict[int, Prediction] = {}
        todo: list[tuple[int, Sample, str]] = []
        for i, s in enumerate(samples):
            try:
                k = self.key(s, spec, extra_text.get(s.name))
            except MediaError as err:
                out[i] = Prediction(s.name, False, reason=str(err), failure=err.reason)
                continue
            hit = self.cache.get(k)
            if hit is not None:
                out[i] = self._from_record(s.name, hit, spec, cached=True)
            else:
                todo.append((i, s, k))
        with self._usage_lock:
            self.usage.cache_hits += len(samples) - len(todo) - sum(1 for p in out.values() if p.failure)
        size = self.samples_per_request
        batches = [todo[j:j + size] for j in range(0, len(todo), size)]
        label = desc or f"MLLM {spec.task} | {setting_name(spec.inputs)} | {self.endpoint.model}"
        bar = tqdm(total=len(samples), initial=len(samples) - len(todo), desc=label, unit="clip",
                   disable=not self.progress, leave=False)
        lock = threading.Lock()

        def run(batch: list[tuple[int, Sample, str]]) -> None:
            for i, pred in self._ask(batch, spec, extra_text):
                with lock:
                    out[i] = pred
                    bar.update(1)

        try:
            if self.concurrency == 1 or len(batches) <= 1:
                for b in batches:
                    run(b)
            else:
                with ThreadPoolExecutor(self.concurrency, thread_name_prefix="mllm") as pool:
                    for f in [pool.submit(run, b) for b in batches]:
                        f.result()
        finally:
            bar.close()
        preds = [out[i] for i in range(len(samples))]
        with self._usage_lock:
            self.usage.unparsable += sum(1 for p in preds if not p.ok and not p.failure)
            self.usage.failed_samples += sum(1 for p in preds if p.failure)
            self.usage.answered += sum(1 for p in preds if not p.failure and not p.cached)
        return preds

    def _from_record(self, name: str, record: Mapping[str, Any], spec: PromptSpec, cached: bool) -> Prediction:
        item = record.get("item")
        parsed: Parsed = parse_result(spec.task, item if item is not None else "", spec.labels, spec.valence_range)
        if cached:
            with self._usage_lock:
                self.usage.cached_prompt_tokens += float(record.get("prompt_tokens", 0.0))
                self.usage.cached_completion_tokens += float(record.get("completion_tokens", 0.0))
        raw = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False, default=str)
        return Prediction(name, parsed.ok, parsed.value, parsed.reason, raw[:1000], cached)

    def _messages(self, spec: PromptSpec, parts: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "text", "text": spec.render(len(parts))}]
        for p in parts:
            content += p
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        if all(c["type"] == "text" for c in content):       # text-only servers want a string
            messages.append({"role": "user", "content": "\n".join(c["text"] for c in content)})
        else:
            messages.append({"role": "user", "content": content})
        return messages

    def _ask(self, batch: list[tuple[int, Sample, str]], spec: PromptSpec,
             extra_text: Mapping[str, str]) -> list[tuple[int, Prediction]]:
        """Answers for one request's samples: media read, asked, split on a count mismatch."""
        ready: list[tuple[int, Sample, str, list[dict[str, Any]]]] = []
        done: list[tuple[int, Prediction]] = []
        for pos, (i, s, k) in enumerate(batch):
            try:
                parts = sample_parts(s, spec.inputs, self.media, len(ready) + 1, self.context,
                                     extra_text.get(s.name))
            except MediaError as err:
                done.append((i, Prediction(s.name, False, reason=str(err), failure=err.reason)))
                continue
            except Exception as err:  # noqa: BLE001 - one unreadable clip must not stop the others
                done.append((i, Prediction(s.name, False, reason=f"{s.name}: {type(err).__name__}: {err}",
                                           failure="decode_error")))
                continue
            ready.append((i, s, k, parts))
        if ready:
            done += self._request(ready, spec, extra_text)
        return done

    def _request(self, ready: list[tuple[int, Sample, str, list[dict[str, Any]]]], spec: PromptSpec,
                 extra_text: Mapping[str, str]) -> list[tuple[int, Prediction]]:
        if len(ready) > 1:                              # renumber the items of a split request
            ready = [(i, s, k, [{"type": "text", "text": f"name: {n + 1}"}, *parts[1:]])
                     for n, (i, s, k, parts) in enumerate(ready)]
        try:
            answer = self.endpoint.complete(self._messages(spec, [r[3] for r in ready]))
        except EndpointError as err:
            with self._usage_lock:
                self.usage.requests += 1
                self.usage.failed_requests += 1
            log.warning("MLLM request for %s failed: %s", ", ".join(r[1].name for r in ready[:3]), err)
            return [(i, Prediction(s.name, False, reason=str(err), failure=err.kind)) for i, s, _, _ in ready]
        with self._usage_lock:
            self.usage.requests += 1
            self.usage.retries += answer.attempts - 1
            self.usage.prompt_tokens += answer.prompt_tokens
            self.usage.completion_tokens += answer.completion_tokens
        items = answer_items(answer.text, len(ready))
        if items is None and len(ready) > 1:
            half = (len(ready) + 1) // 2
            log.info("MLLM answer held the wrong number of records for %d items; asking in halves", len(ready))
            return self._request(ready[:half], spec, extra_text) + self._request(ready[half:], spec, extra_text)
        if items is None:
            items = [answer.text]
        share = 1.0 / len(ready)
        records = [{"key": k, "sample": s.name, "model": self.endpoint.model, "task": spec.task,
                    "setting": setting_name(spec.inputs), "item": _jsonable(item),
                    "answer": answer.text if len(ready) > 1 else None, "n_items": len(ready),
                    "prompt_tokens": answer.prompt_tokens * share,
                    "completion_tokens": answer.completion_tokens * share,
                    "finish_reason": answer.finish_reason}
                   for (i, s, k, _), item in zip(ready, items)]
        self.cache.put(records)
        return [(i, self._from_record(s.name, rec, spec, cached=False)) for (i, s, _, _), rec in zip(ready, records)]


def _jsonable(value: Any) -> Any:
    """``value`` as JSON keeps it (tuples and sets from Python-literal answers become lists)."""
    return json.loads(json.dumps(value, ensure_ascii=False, default=lambda x: list(x) if isinstance(
        x, (set, frozenset, tuple)) else str(x)))
