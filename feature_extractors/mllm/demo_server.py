"""A local OpenAI-format chat server that answers from the request's content, for the demo corpus
and the tests: ``python -m mer.mllm serve-demo --port 8000``, then
``python -m mer.run track=mllm mllm.endpoint=http://127.0.0.1:8000/v1 mllm.model=demo``.

It is not a model: it reads the instruction (task, candidate labels, number of items) and each
item's subtitle, finds English emotion cue words (:data:`CUES`; the last one named wins, as a
sentence that turns to its own emotion ends with it), and answers in the asked format
``{'name': k, 'result': ...}``: the cue's class first and the others in the given order
(discrete), a valence for the class, the cue words (ov), a one-sentence description, or the
description naming the cue (preference). Items with no cue (video only, neutral talk) rank the
neutral class first. Token usage is counted as a real server would report it (about 4 characters
per text token, 85 tokens per image).

Faults, to exercise a client (all off by default): ``fail_first`` requests answer HTTP 429 with
``Retry-After: 0``; every ``error_every``-th request answers HTTP 500; an item whose subtitle's
hash is divisible by ``garble_every`` gets an answer with no label in it; every
``drop_every``-th request of several items leaves out one record; ``require_key`` answers 401
without that bearer key. ``GET /stats`` returns the counters as JSON.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping

CUES: Mapping[str, tuple[str, ...]] = {
    "happy": ("happy", "glad", "delighted", "thrilled", "pleased", "wonderful", "love it", "excited", "proud",
              "laugh", "fun", "lovely", "great"),
    "angry": ("angry", "furious", "annoyed", "mad", "irritated", "fed up", "unacceptable", "how dare", "rude",
              "stop lying", "get out", "never listen", "who do you think"),
    "sad": ("sad", "heartbroken", "miserable", "lonely", "alone", "down", "miss her", "cried", "lost everything",
            "nobody cares", "never coming back", "nothing matters", "sorry it ended"),
    "worried": ("worried", "nervous", "anxious", "scared", "uneasy", "afraid", "what if", "don't know what to do",
                "will it be all right", "is it safe", "hope she's okay", "can't stop thinking", "safe?"),
    "surprise": ("surprised", "shocked", "amazed", "stunned", "astonished", "unbelievable", "no idea", "no way",
                 "didn't expect", "can't believe", "since when", "surprising", "you're here"),
}
_LABEL_FORMS = {"happy": ("happy", "happiness", "joy"), "angry": ("angry", "anger"), "sad": ("sad", "sadness"),
                "worried": ("worried", "worry", "fear", "fearful"), "surprise": ("surprise", "surprised"),
                "neutral": ("neutral",)}
_VALENCE = {"happy": 3.0, "surprise": 1.0, "neutral": 0.0, "worried": -2.0, "sad": -3.0, "angry": -3.5}


@dataclass
class DemoSettings:
    fail_first: int = 0
    error_every: int = 0
    garble_every: int = 0
    drop_every: int = 0
    require_key: str | None = None
    stats: dict[str, int] = field(default_factory=lambda: {"requests": 0, "answered": 0, "errors": 0,
                                                           "items": 0, "images": 0, "audio": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)


def cue_class(text: str) -> str | None:
    """The class of the last cue named in ``text`` (None: no cue)."""
    low = text.lower()
    best, where = None, -1
    for cls, words in CUES.items():
        for w in words:
            for m in re.finditer(rf"(?<![a-z]){re.escape(w)}(?![a-z])", low):
                if m.start() > where:
                    best, where = cls, m.start()
    return best


def _task(instruction: str) -> str:
    low = instruction.lower()
    if "a or b" in low:
        return "preference"
    if "valence" in low:
        return "valence"
    if "describe in" in low:
        return "description"
    if "emotion words" in low:
        return "ov"
    return "discrete"


def _labels(instruction: str) -> list[str]:
    m = re.search(r"optional categories: (\[.*?\])", instruction)
    if not m:
        return []
    return re.findall(r"'([^']*)'", m.group(1))


def _split_items(content: Any) -> tuple[str, list[dict[str, Any]]]:
    """The instruction and the items (each: its texts, images, audio) of a user message."""
    if isinstance(content, str):
        lines = content.split("\n")
        parts = [{"type": "text", "text": ln} for ln in lines]
    else:
        parts = list(content)
    instruction = parts[0].get("text", "") if parts else ""
    items: list[dict[str, Any]] = []
    for p in parts[1:]:
        if p.get("type") == "text" and re.fullmatch(r"name: \d+", p.get("text", "")):
            items.append({"texts": [], "images": 0, "audio": 0})
        elif items:
            if p.get("type") == "text":
                items[-1]["texts"].append(p.get("text", ""))
            elif p.get("type") == "image_url":
                items[-1]["images"] += 1
            elif p.get("type") == "input_audio":
                items[-1]["audio"] += 1
    return instruction, items


def _match(cls: str | None, labels: list[str]) -> str | None:
    if cls is None:
        return None
    for lab in labels:
        if lab.lower() in _LABEL_FORMS.get(cls, (cls,)):
            return lab
    return None


def _answer_item(task: str, labels: list[str], item: Mapping[str, Any], settings: DemoSettings) -> Any:
    text = " ".join(t for t in item["texts"] if t.startswith("Subtitle:"))
    cls = cue_class(text)
    if settings.garble_every and text and int(hashlib.sha256(text.encode()).hexdigest(), 16) % settings.garble_every == 0:
        return "I am not able to tell that from what I was given."
    if task == "discrete":
        top = _match(cls, labels) or _match("neutral", labels) or (labels[0] if labels else None)
        return [top, *[lab for lab in labels if lab != top]][:5]
    if task == "valence":
        return _VALENCE.get(cls or "neutral", 0.0)
    if task == "ov":
        return [cls] if cls else ["calm"]
    if task == "description":
        return (f"The speaker seems {cls or 'calm'}; the subtitle and the face point that way."
                if item["images"] else f"The speaker seems {cls or 'calm'}, judging by the words.")
    if task == "preference":
        extra = " ".join(item["texts"])
        a = re.search(r"A: (.*?)(?: B: |$)", extra)
        b = re.search(r"B: (.*)$", extra)
        if cls and b and cls in b.group(1).lower() and not (a and cls in a.group(1).lower()):
            return "B"
        return "A"
    return ""


def answer(body: Mapping[str, Any], settings: DemoSettings) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``(status, payload, headers)`` for one chat-completions request body."""
    with settings.lock:
        settings.stats["requests"] += 1
        n = settings.stats["requests"]
    if n <= settings.fail_first:
        return 429, {"error": {"message": "rate limit (demo)", "type": "rate_limit"}}, {"Retry-After": "0"}
    if settings.error_every and n % settings.error_every == 0:
        with settings.lock:
            settings.stats["errors"] += 1
        return 500, {"error": {"message": "internal error (demo)"}}, {}
    messages = body.get("messages") or []
    user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    if user is None:
        return 400, {"error": {"message": "no user message"}}, {}
    instruction, items = _split_items(user.get("content"))
    task, labels = _task(instruction), _labels(instruction)
    records = [{"name": k + 1, "result": _answer_item(task, labels, it, settings)} for k, it in enumerate(items)]
    if settings.drop_every and len(records) > 1 and n % settings.drop_every == 0:
        records = records[:-1]
    text = "\n".join(repr(r) for r in records) if records else "I see no item."
    n_images = sum(it["images"] for it in items)
    prompt_chars = len(instruction) + sum(len(" ".join(it["texts"])) for it in items)
    usage = {"prompt_tokens": prompt_chars // 4 + 85 * n_images, "completion_tokens": max(1, len(text) // 4)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    with settings.lock:
        settings.stats["answered"] += 1
        settings.stats["items"] += len(items)
        settings.stats["images"] += n_images
        settings.stats["audio"] += sum(it["audio"] for it in items)
    return 200, {"id": f"demo-{n}", "object": "chat.completion", "model": body.get("model", "demo"),
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": text}}], "usage": usage}, {}


def make_server(host: str = "127.0.0.1", port: int = 0, settings: DemoSettings | None = None) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (0: a free port; read ``server.server_address``), not yet
    serving: call ``serve_forever()`` (in a thread for tests). ``server.settings`` holds the faults
    and the counters."""
    settings = settings or DemoSettings()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:       # quiet: the tests and the demo print enough
            return

        def _send(self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str] = {}) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/stats"):
                with settings.lock:
                    self._send(200, dict(settings.stats))
            elif self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": "demo", "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            if settings.require_key and self.headers.get("Authorization") != f"Bearer {settings.require_key}":
                self._send(401, {"error": {"message": "invalid api key"}})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            except ValueError:
                self._send(400, {"error": {"message": "body is not JSON"}})
                return
            status, payload, headers = answer(body, settings)
            self._send(status, payload, headers)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.settings = settings  # type: ignore[attr-defined]
    return server


def start_in_thread(settings: DemoSettings | None = None) -> tuple[ThreadingHTTPServer, str]:
    """A demo server serving on a free local port in a daemon thread, and its ``/v1`` base URL."""
    server = make_server(settings=settings)
    threading.Thread(target=server.serve_forever, daemon=True, name="mllm-demo-server").start()
    host, port = str(server.server_address[0]), int(server.server_address[1])
    return server, f"http://{host}:{port}/v1"
