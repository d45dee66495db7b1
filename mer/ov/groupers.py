"""Synonym groupers for the MER2024 OV metric: who decides that two words mean the same.

Registered by name (``GROUPERS``; ``build_grouper(name, **options)``), and every score names its
grouper, because the MER2024 metric is only defined together with one. Each grouper class also
reads its own options from a ``track=ov`` config (:meth:`BaseGrouper.from_track`), so a new
grouper is one class here and nothing else:

``official_cache``
    The organisers' per-sample LLM groupings (``openset-synonym.zip``, one ``.npy`` string per
    sample), read in place from the zip. Only the samples the zip covers can be scored.
``exact``
    No grouping: two words match only when identical after lower-casing (a lower bound).
``offline``
    Deterministic and offline: normalise, lemmatise (rule-based, :mod:`mer.ov.lexicon`), map to
    the built-in synonym groups, then, when the emotion-wheel assets are given
    (``wheel_dir``), through ``format.csv`` + ``synonym.xlsx`` to a wheel head. Words with the same
    key form one group.
``llm``
    Any OpenAI-compatible chat-completions endpoint (``base_url``, ``model``; the key from the
    environment variable ``api_key_env``), temperature 0, the MER2024 prompt, answers cached per
    sample in a JSONL file keyed by the sample and its word set, so a rerun is offline.
"""
from __future__ import annotations

import io
import json
import os
import re
import threading
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from feature_extractors.mllm.client import ChatEndpoint, EndpointError
from feature_extractors.mllm.parse import strip_answer_prefix
from mer.core.config import option
from mer.core.io import append_json_lines, read_json_lines, with_crc
from mer.core.redact import mask_secrets
from mer.core.registry import Registry
from mer.ov.lexicon import BROAD_FAMILIES, builtin_heads, lemmatize, normalise
from mer.ov.wheel import load_wheel_assets

GROUPERS: Registry[type["BaseGrouper"]] = Registry("OV grouper")


def resolve_path_option(value: Any, default: Path | None) -> Path | None:
    """A path option of the ``track=ov`` config: ``None``/``""``/``"none"``/``False`` -> None;
    ``"auto"`` -> ``default`` where it exists (else None); anything else is the path itself."""
    if value in (None, "", "none", False):
        return None
    if value == "auto":
        return default if default is not None and default.exists() else None
    return Path(str(value)).expanduser()


def parse_groups(text: str) -> list[list[str]]:
    """MER2024 ``listlist_to_list``: ``"[['a', 'b'], ['c']]"`` -> ``[['a', 'b'], ['c']]``.

    Split on brackets, drop pieces that are empty or a bare comma, split each on quotes and drop
    empty/comma pieces; words are kept as written (not stripped)."""
    groups = []
    for piece in re.split(r"[\[\]]", str(text)):
        if piece.strip() in ("", ","):
            continue
        words = [w for w in re.split("['\"]", piece) if w.strip() not in ("", ",")]
        if words:
            groups.append(words)
    return groups


class BaseGrouper:
    name = "base"

    @classmethod
    def from_track(cls, track: Mapping[str, Any], gold_folder: Path | None) -> "BaseGrouper | str":
        """This grouper as a ``track=ov`` config asks for it, or a string saying why it is skipped.

        ``gold_folder`` is the folder of ``track.gold`` (None without one), where release files
        beside the ground truth are looked for. Default: ``track.grouper_options.<name>`` as
        keyword arguments."""
        return cls(**dict((track.get("grouper_options") or {}).get(cls.name) or {}))

    def group(self, sample: str, gt: Sequence[str], pred: Sequence[str]) -> list[list[str]]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


@GROUPERS.register("exact")
class ExactGrouper(BaseGrouper):
    """Every word is its own group."""

    name = "exact"

    def group(self, sample, gt, pred):
        return [[w] for w in dict.fromkeys([*gt, *pred])]


@GROUPERS.register("official_cache")
class OfficialCacheGrouper(BaseGrouper):
    """The official MER2024 groupings, read from ``openset-synonym.zip`` (or its unzipped folder).

    Members are loaded with ``allow_pickle=False`` (each holds one unicode string)."""

    name = "official_cache"

    @classmethod
    def from_track(cls, track, gold_folder):
        """``track.official_groupings`` (``auto``: ``openset-synonym.zip`` beside the gold file);
        skipped when there is none."""
        path = resolve_path_option(option(track, "official_groupings", "track"),
                                   gold_folder / "openset-synonym.zip" if gold_folder else None)
        if path is None or not path.exists():
            return "no official groupings (track.official_groupings)"
        return cls(path=path)

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        self._texts: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._texts is not None:
            return self._texts
        texts: dict[str, str] = {}
        if self.path.is_dir():
            items = [(p.stem, p.read_bytes()) for p in sorted(self.path.glob("*.npy"))]
        elif self.path.is_file():
            try:
                with zipfile.ZipFile(self.path) as z:
                    items = [(Path(m).stem, z.read(m)) for m in z.namelist() if m.endswith(".npy")]
            except zipfile.BadZipFile as err:
                raise ValueError(f"{self.path} is not a zip of .npy groupings: {err}") from None
        else:
            raise FileNotFoundError(f"official groupings {self.path} not found (the MER2024 "
                                    f"openset-synonym.zip, or its unzipped folder)")
        for sample, raw in items:
            try:
                value = np.load(io.BytesIO(raw), allow_pickle=False)
            except ValueError as err:
                raise ValueError(f"{self.path}: grouping of {sample} is not a plain .npy string "
                                 f"({err})") from None
            texts[sample] = str(value.item() if value.shape == () else value.tolist())
        if not texts:
            raise ValueError(f"{self.path} holds no .npy groupings")
        self._texts = texts
        return texts

    def samples(self) -> list[str]:
        return sorted(self._load())

    def group(self, sample, gt, pred):
        texts = self._load()
        if sample not in texts:
            raise KeyError(f"the official groupings ({self.path.name}) have no entry for sample "
                           f"{sample!r}; they cover only the {len(texts)} samples of the released "
                           f"example; use grouper offline or llm for other samples")
        return parse_groups(texts[sample])


@GROUPERS.register("offline")
class OfflineGrouper(BaseGrouper):
    """Deterministic grouping by a per-word key (see the module docstring).

    Args:
        wheel_dir: the emotion-wheel folder (``format.csv``, ``synonym.xlsx``, ``wheel*.xlsx``);
            None: the built-in lexicon only.
        use_builtin: use mer's built-in synonym groups (off: lemma + wheel tables only).
        granularity: ``"broad"`` (default) merges related built-in groups into the families
            of :data:`mer.ov.lexicon.BROAD_FAMILIES`, as the official groupings tend to;
            ``"fine"`` keeps every built-in group apart.
    """

    name = "offline"

    @classmethod
    def from_track(cls, track, gold_folder):
        """``track.wheel_dir`` (``auto``: ``emotion-wheel/`` beside the gold file's folder when
        there; null: the built-in lexicon only)."""
        return cls(wheel_dir=resolve_path_option(option(track, "wheel_dir", "track"),
                                                 gold_folder.parent / "emotion-wheel" if gold_folder else None))

    def __init__(self, wheel_dir: str | os.PathLike | None = None, use_builtin: bool = True,
                 granularity: str = "broad") -> None:
        if granularity not in ("broad", "fine"):
            raise ValueError(f"offline grouper granularity must be 'broad' or 'fine', got {granularity!r}")
        self.wheel_dir = None if wheel_dir is None else str(Path(wheel_dir).expanduser())
        self.use_builtin = use_builtin
        self.granularity = granularity
        self._assets = None
        self._known: frozenset[str] = frozenset()
        if self.wheel_dir is not None:
            self._assets = load_wheel_assets(self.wheel_dir)
            self._known = frozenset(b for bs in self._assets.format_map.values() for b in bs) | \
                frozenset(self._assets.synonym_map)
        self._keys: dict[str, str] = {}

    def describe(self) -> str:
        parts = ["rule lemmas"] + ([f"built-in groups ({self.granularity})"] if self.use_builtin else []) + \
                (["emotion-wheel tables"] if self._assets is not None else [])
        return f"offline ({' + '.join(parts)})"

    _MODIFIERS = re.compile(r"^(slight|slightly|a bit|somewhat|very|feeling|sense of|feel|"
                            r"extremely|highly|deeply|a little)\s+")
    _ALTERNATIVES = re.compile(r"\s*(?:/|\bor\b|\band\b)\s*")

    def key(self, word: str) -> str:
        """The group key of one word (cached)."""
        if word in self._keys:
            return self._keys[word]
        w = normalise(word)
        key = self._key_of(w)
        if key is None:
            stripped = self._MODIFIERS.sub("", w)
            parts = [p for p in self._ALTERNATIVES.split(stripped) if p]
            for candidate in ([stripped] if stripped != w else []) + parts[:1]:
                key = self._key_of(candidate)
                if key is not None:
                    break
        if key is None:
            key = "lemma:" + lemmatize(w, self._known)
        elif self.granularity == "broad":
            key = BROAD_FAMILIES.get(key, key)
        self._keys[word] = key
        return key

    def _key_of(self, w: str) -> str | None:
        heads = builtin_heads() if self.use_builtin else {}
        if w in heads:
            return heads[w]
        lemma = lemmatize(w, self._known)
        if lemma in heads:
            return heads[lemma]
        if self._assets is not None:
            fm = self._assets.format_map
            bases = fm.get(w) or fm.get(lemma) or []
            wheel_heads = sorted({h for b in bases for h in self._assets.synonym_map.get(b, ())})
            for h in wheel_heads:       # a wheel head the built-in groups know joins that group
                if h in heads:
                    return heads[h]
            if wheel_heads:
                return "wheel:" + wheel_heads[0]
        return None

    def group(self, sample, gt, pred):
        groups: dict[str, list[str]] = {}
        for w in dict.fromkeys([*gt, *pred]):
            groups.setdefault(self.key(w), []).append(w)
        return list(groups.values())


def default_wheel_dir(gold_folder: Path | None) -> Path | None:
    """Where ``wheel_dir: auto`` finds the emotion-wheel assets for the wheel metric: beside the
    gold file's folder, else ``$MER_WHEEL_DIR``, else ``shared/data/emotion-wheel`` beside a source
    checkout; None when none is a folder."""
    env = os.environ.get("MER_WHEEL_DIR")
    for candidate in (gold_folder.parent / "emotion-wheel" if gold_folder else None,
                      Path(env).expanduser() if env else None,
                      Path(__file__).resolve().parents[3] / "shared" / "data" / "emotion-wheel"):
        if candidate is not None and candidate.is_dir():
            return candidate
    return None


@GROUPERS.register("wheel")
class WheelGrouper(BaseGrouper):
    """The MER2025/2026 emotion-wheel metric as a scorer (MER-FG): a track that names it
    (``track.grouper: wheel`` or in ``also_score``) is scored with
    :func:`mer.ov.metric.wheel_ov_score` on the official assets. As a grouper (where a predictor
    tunes itself on a grouped score) words sharing their level-1 cluster of the first wheel form a
    group; words the wheel does not know stay alone."""

    name = "wheel"

    @classmethod
    def from_track(cls, track, gold_folder):
        """``track.wheel_dir`` (``auto``: ``emotion-wheel/`` beside the gold file's folder); without
        the assets the wheel metric cannot be computed, and that is said."""
        folder = resolve_path_option(option(track, "wheel_dir", "track"), default_wheel_dir(gold_folder))
        if folder is None or not Path(folder).is_dir():
            return ("the emotion-wheel assets (format.csv, synonym.xlsx, wheel1-5.xlsx; MERTools "
                    "MER2025_Track23/emotion_wheel) were not found: set track.wheel_dir=/path/to/emotion-wheel "
                    "or MER_WHEEL_DIR")
        return cls(folder)

    def __init__(self, wheel_dir: str | os.PathLike) -> None:
        self.wheel_dir = str(Path(wheel_dir).expanduser())
        self.assets = load_wheel_assets(self.wheel_dir)

    def describe(self) -> str:
        return "emotion wheel (MER2025/2026 metric: 5 wheels, level 1 and 2)"

    def group(self, sample, gt, pred):
        groups: dict[str, list[str]] = {}
        for w in dict.fromkeys([*gt, *pred]):
            cluster = self.assets.map_word(w.lower().strip(), 0, "level1")
            groups.setdefault(cluster or f"word:{w}", []).append(w)
        return list(groups.values())


MER2024_PROMPT = (
    "Please assume the role of an expert in the field of emotions. We provide a set of emotions. "
    "Please group the emotions, with each group containing emotions with the same meaning. "
    "Directly output the results. The output format should be a list containing multiple lists. "
    "Input: ['Agree', 'agreement', 'Relaxed', 'acceptance', 'pleasant', 'relaxed', 'Accept', "
    "'positive', 'Happy'] Output: [['Agree', 'agreement', 'Accept', 'acceptance'], "
    "['Relaxed', 'relaxed'],['pleasant', 'positive', 'Happy']] Input: {words} Output:"
)
"""The MER2024 grouping prompt (one-shot, as the organisers' scorer phrases it)."""


class ChatClient:
    """A one-prompt view of :class:`feature_extractors.mllm.client.ChatEndpoint` (the one
    OpenAI-compatible client of mer: key from the environment variable ``api_key_env`` at call
    time, retries with backoff on 429/5xx and unreachable servers, temperature 0)."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 60.0, max_tokens: int = 1000, retries: int = 2) -> None:
        self.endpoint = ChatEndpoint(base_url, model, api_key_env, timeout_s, max_retries=retries,
                                     backoff_s=0.5, max_tokens=max_tokens)
        self.base_url = self.endpoint.base_url
        self.model = model

    def complete(self, prompt: str) -> str:
        try:
            return self.endpoint.complete([{"role": "user", "content": prompt}]).text
        except EndpointError as err:
            raise RuntimeError(str(err)) from None


def clean_llm_answer(text: str) -> str:
    """The grouper's answer as one line: fences and "Output:" stripped as the MLLM parser strips
    them (:func:`feature_extractors.mllm.parse.strip_answer_prefix`), newlines removed."""
    return strip_answer_prefix(text).replace("\n", "").strip()


class JsonlCache:
    """Append-only ``key -> answer`` cache in one JSONL file (the last line for a key wins), with
    the crash safety of the MLLM answer cache (:mod:`feature_extractors.mllm.answers`): each line
    carries a checksum and is appended whole (:func:`mer.core.io.append_json_lines`); a torn or
    damaged line is skipped (asked again), and lines written before checksums existed still read."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._data: dict[str, str] | None = None
        self.damaged = 0

    def _load(self) -> dict[str, str]:
        if self._data is None:
            rows, self.damaged = read_json_lines(self.path)
            self._data = {str(r["key"]): str(r["answer"]) for r in rows if "key" in r and "answer" in r}
        return self._data

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._load().get(key)

    def put(self, key: str, answer: str, **extra) -> None:
        with self._lock:
            self._load()[key] = answer
            append_json_lines(self.path, [with_crc({"key": key, "answer": answer, **extra})])

    def __len__(self) -> int:
        with self._lock:
            return len(self._load())


@GROUPERS.register("llm")
class LLMGrouper(BaseGrouper):
    """MER2024-style grouping by a chat model, cached per sample (see the module docstring).

    The cache key is the sample name plus the sorted word set, so a changed prediction asks
    again, and the model name, so two models never share answers. An answer that does not parse
    as a list of lists falls back to one group per word for that sample (recorded in the cache
    as it was answered, and counted in ``n_unparsed``)."""

    name = "llm"

    def __init__(self, base_url: str, model: str, cache_path: str | os.PathLike,
                 api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0,
                 prompt: str = MER2024_PROMPT) -> None:
        self.client = ChatClient(base_url, model, api_key_env, timeout_s)
        self.cache = JsonlCache(cache_path)
        self.prompt = prompt
        self.n_calls = 0
        self.n_unparsed = 0

    def describe(self) -> str:
        return f"llm ({self.client.model} at {mask_secrets(self.client.base_url)})"

    def group(self, sample, gt, pred):
        words = list(dict.fromkeys([*gt, *pred]))
        key = json.dumps([self.client.model, sample, sorted(words)], ensure_ascii=False)
        answer = self.cache.get(key)
        if answer is None:
            answer = clean_llm_answer(self.client.complete(self.prompt.format(words=words)))
            self.n_calls += 1
            self.cache.put(key, answer, sample=sample, model=self.client.model)
        groups = parse_groups(answer) if answer.startswith("[") else []
        if not groups:
            self.n_unparsed += 1
            return [[w] for w in words]
        return groups


def build_grouper(name: str, **options) -> BaseGrouper:
    """``build_grouper("offline", wheel_dir=...)``; unknown names list the known ones."""
    return GROUPERS.get(name)(**options)
