"""Emotion descriptions and emotion words, both ways: MER-DES scores a free description by the
emotion words it names (MER2025 Track3; the organisers ask Qwen2.5 to list them,
``M25T23/evaluation.py::reason_to_openset_qwen``, then apply the MER-FG wheel metric).

:class:`OfflineWordExtractor` is the deterministic stand-in: a description's words are lower-cased
and tokenised (hyphenated words kept whole, two-word phrases tried before single words), each is
looked up as it is, then through its inflections (the wheel assets' ``format.csv`` when loaded,
mer's dictionary-checked lemmatiser) in the emotion vocabulary (the wheel's synonym table and
wheels when loaded, plus mer's built-in lexicon); a word preceded within two tokens by a
negation (``not``, ``no``, ``never``, ``n't``, ``without``, ``hardly``) is left out. Words are kept
in order of first mention, without repeats. :class:`LLMWordExtractor` asks a chat model with the
organisers' instruction, cached per description. Every score names the extractor used.

:func:`describe_words` goes the other way for predictors that output words: a fixed template
(``"The speaker appears happy and grateful."``), so a word predictor can be submitted to MER-DES
and scored identically through the extractor.
"""
from __future__ import annotations

import re
from typing import Sequence

from feature_extractors.mllm.answers import AnswerCache
from feature_extractors.mllm.client import ChatEndpoint
from feature_extractors.mllm.parse import parse_words
from mer.core.hashing import cache_key
from mer.ov.lexicon import builtin_vocabulary, lemmatize
from mer.ov.wheel import WheelAssets

NEGATIONS = frozenset({"not", "no", "never", "without", "hardly", "nor", "n't", "neither"})
_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*|n't")

EXTRACTION_PROMPT = (
    "Please assume the role of an expert in the field of emotions. We provide a description of a "
    "person's emotional state. Please identify every emotional state the description names or "
    "implies and output them as a Python list of English emotion words, for example "
    "['happy', 'surprised']. Output only the list. Description: {description}")
"""The extraction instruction (the organisers' asks for the emotion labels of a reasoning text as a list)."""


class OfflineWordExtractor:
    """See the module docstring; ``assets`` are the emotion-wheel tables (None: built-in lexicon)."""

    name = "offline"

    def __init__(self, assets: WheelAssets | None = None) -> None:
        self.assets = assets
        vocab = set(builtin_vocabulary())
        if assets is not None:
            vocab |= set(assets.synonym_map) | assets.wheel_vocabulary()
        self.vocabulary = frozenset(vocab)

    def describe(self) -> str:
        return "offline (built-in lexicon" + (" + emotion-wheel assets)" if self.assets is not None else ")")

    def _known(self, word: str) -> str | None:
        if word in self.vocabulary:
            return word
        if self.assets is not None:
            for base in self.assets.format_map.get(word, ()):
                if base in self.vocabulary:
                    return base
        lemma = lemmatize(word, self.vocabulary)
        return lemma if lemma in self.vocabulary else None

    def words(self, description: str) -> list[str]:
        tokens = _TOKEN.findall(str(description).lower().replace("’", "'").replace("n't", " n't"))
        out: list[str] = []
        i = 0
        while i < len(tokens):
            negated = any(t in NEGATIONS for t in tokens[max(0, i - 2):i])
            hit, width = None, 1
            if i + 1 < len(tokens):
                hit = self._known(f"{tokens[i]} {tokens[i + 1]}")
                width = 2 if hit else 1
            if hit is None:
                hit = self._known(tokens[i])
            if hit and not negated and hit not in out:
                out.append(hit)
            i += width
        return out


class LLMWordExtractor:
    """The organisers' way (a chat model lists the description's emotion words), cached per
    (model, description); an answer with no list gives no words and is counted."""

    name = "llm"

    def __init__(self, endpoint: ChatEndpoint, cache_dir: str, prompt: str = EXTRACTION_PROMPT) -> None:
        self.endpoint, self.prompt = endpoint, prompt
        self.cache = AnswerCache(cache_dir)
        self.n_requests = self.n_unparsed = 0

    def describe(self) -> str:
        return f"llm ({self.endpoint.model} at {self.endpoint.shown_url})"

    def words(self, description: str) -> list[str]:
        key = cache_key({"model": self.endpoint.model, "prompt": self.prompt, "description": description,
                         "task": "description_words"})
        hit = self.cache.get(key)
        if hit is None:
            answer = self.endpoint.complete([{"role": "user", "content": self.prompt.format(description=description)}])
            self.n_requests += 1
            hit = {"key": key, "item": answer.text, "prompt_tokens": answer.prompt_tokens,
                   "completion_tokens": answer.completion_tokens}
            self.cache.put([hit])
        parsed = parse_words(hit.get("item") or "")
        if not parsed.ok:
            self.n_unparsed += 1
            return []
        return list(parsed.value)


def describe_words(words: Sequence[str]) -> str:
    """A word list as a one-sentence description (module docstring)."""
    ws = [w for w in dict.fromkeys(str(w).strip() for w in words) if w]
    if not ws:
        return "The speaker shows no clear emotion."
    said = ws[0] if len(ws) == 1 else ", ".join(ws[:-1]) + " and " + ws[-1]
    return f"The speaker appears {said}."
