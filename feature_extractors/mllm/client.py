"""An OpenAI-compatible chat-completions endpoint: hosted APIs and local vLLM, llama.cpp or Ollama
servers (all serve ``POST <base_url>/chat/completions``).

:class:`ChatEndpoint` sends one request and returns a :class:`ChatAnswer` (the text, the tokens
the server counted, how many attempts it took). What it does for the caller:

* **keys only from the environment**: the variable named by ``api_key_env`` is read at call time
  and sent as ``Authorization: Bearer``; the key is never stored on the object, printed, logged or
  put in a cache key (messages name the variable, never its value). No variable set: no header
  (local servers need none).
* **rate limit**: ``requests_per_minute`` spaces request *starts* evenly over all threads of the
  process (0: no limit);
* **retries with backoff**: HTTP 408/409/429/500/502/503/504, timeouts and refused connections
  are retried up to ``max_retries`` times, waiting ``backoff_s * 2**attempt`` (capped by
  ``max_backoff_s``, with up to 25 % jitter), or what the server's ``Retry-After`` header says.
  Any other HTTP status (400 bad request, 401/403 key, 404 model) fails at once: waiting cannot
  mend it. The error says the status and the first 300 characters of the server's message;
* ``temperature`` 0 by default (the GPT-4V-emotion protocol); ``extra_body`` passes server
  options through (``{"top_p": 1}``, vLLM's ``{"seed": 0}``...).
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from mer.core.redact import mask_secrets

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class EndpointError(RuntimeError):
    """A request that did not give an answer; ``kind`` is ``http_<status>``, ``unreachable``,
    ``timeout`` or ``bad_response``; ``retryable`` whether waiting could have helped."""

    def __init__(self, kind: str, message: str, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class ChatAnswer:
    """One completion: its text, the server's token counts (0 when it reports none), the number
    of attempts (1 = no retry) and the seconds from the first attempt to the answer."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 1
    seconds: float = 0.0
    finish_reason: str = ""


class RateLimiter:
    """Spaces calls ``60 / requests_per_minute`` seconds apart across threads (0: no limit)."""

    def __init__(self, requests_per_minute: float = 0.0) -> None:
        self.interval = 60.0 / requests_per_minute if requests_per_minute > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


@dataclass
class ChatEndpoint:
    """``ChatEndpoint("http://127.0.0.1:8000/v1", "qwen2.5-vl-7b")`` (module docstring)."""

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    requests_per_minute: float = 0.0
    temperature: float = 0.0
    max_tokens: int = 512
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ValueError("an MLLM endpoint needs base_url, e.g. http://127.0.0.1:8000/v1 "
                             "(`python -m mer.mllm serve-demo` starts a local one for the demo corpus)")
        if not self.model:
            raise ValueError("an MLLM endpoint needs a model name (mllm.model=...)")
        self.base_url = self.base_url.rstrip("/")
        self._limiter = RateLimiter(self.requests_per_minute)

    @property
    def shown_url(self) -> str:
        """The URL as messages show it (credentials masked)."""
        return mask_secrets(self.base_url)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def complete(self, messages: Sequence[Mapping[str, Any]], max_tokens: int | None = None) -> ChatAnswer:
        """One chat completion for ``messages`` (OpenAI message dicts), retried as the module
        docstring says; raises :class:`EndpointError` when no answer came."""
        body = json.dumps({"model": self.model, "temperature": self.temperature,
                           "max_tokens": int(max_tokens or self.max_tokens), "messages": list(messages),
                           **dict(self.extra_body)}).encode("utf-8")
        t0 = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            self._limiter.wait()
            try:
                payload = self._post(body)
                return _answer(payload, attempt, time.monotonic() - t0, self.shown_url)
            except EndpointError as err:
                if not err.retryable or attempt > self.max_retries:
                    if attempt > 1:
                        raise EndpointError(err.kind, f"{err} (after {attempt} attempts)", err.retryable) from None
                    raise
                time.sleep(self._delay(attempt, err.retry_after_s))

    def _delay(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_backoff_s)
        base = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
        return base * (1.0 + 0.25 * random.random())

    def _post(self, body: bytes) -> Mapping[str, Any]:
        url = f"{self.base_url}/chat/completions"
        request = urllib.request.Request(url, data=body, headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:300]
            retry_after = _retry_after(err.headers.get("Retry-After") if err.headers else None)
            raise EndpointError(f"http_{err.code}", f"{self.shown_url} answered HTTP {err.code}: {detail}",
                                err.code in RETRY_STATUS, retry_after) from None
        except TimeoutError:
            raise EndpointError("timeout", f"{self.shown_url} did not answer within {self.timeout_s:g} s",
                                True) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            kind = "timeout" if isinstance(reason, TimeoutError) else "unreachable"
            raise EndpointError(kind, f"cannot reach {self.shown_url}: {mask_secrets(str(reason))}",
                                True) from None
        try:
            return json.loads(raw.decode("utf-8"))
        except ValueError:
            raise EndpointError("bad_response", f"{self.shown_url} answered something that is not JSON: "
                                f"{raw[:120]!r}", False) from None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _answer(payload: Mapping[str, Any], attempts: int, seconds: float, shown: str) -> ChatAnswer:
    try:
        choice = payload["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError("bad_response", f"{shown} did not answer in the chat-completions format "
                            f"(no choices[0].message.content): {str(payload)[:200]}", False) from None
    if isinstance(content, list):          # some servers answer with content parts
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    usage = payload.get("usage") or {}
    return ChatAnswer(text=str(content or ""), prompt_tokens=int(usage.get("prompt_tokens") or 0),
                      completion_tokens=int(usage.get("completion_tokens") or 0), attempts=attempts,
                      seconds=round(seconds, 3), finish_reason=str(choice.get("finish_reason") or ""))
