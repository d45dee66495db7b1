"""``clip_zeroshot``: tiny random-init CLIP and SigLIP models (both towers, a WordLevel tokenizer built
offline, an image processor config) saved with ``save_pretrained``, run on real mp4 clips of the
astronaut photo. What is checked: the prompt ensemble and the scores equal a hand computation with
the model's own ``get_text_features`` / ``get_image_features``, SigLIP scores are sigmoids, labels
keep their order, pools and levels agree, the cache key follows the prompts, a corrupt video is a
per-sample failure, ``bind_classes`` binds the dataset's classes, and ``mer.run`` runs it end to end.
"""
from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import REPO
from test_image_encoders import write_video  # one video writer for the image-encoder tests
from feature_extractors.base import EXTRACTORS
from feature_extractors.visual.clip_zeroshot import DEFAULT_TEMPLATES, ClipZeroShot, zero_shot_predict
from mer.core.failures import ExtractionFailure
from mer.core.samples import MER_CLASSES, LabelSpec, Sample
from mer.data.manifest import Manifest
from mer.features import plan_streams

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
av = pytest.importorskip("av")
skdata = pytest.importorskip("skimage.data")

torch.set_num_threads(1)
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
warnings.filterwarnings("ignore", message=".*torchvision.*")

WORDS = ("a photo of face showing looking close - up person feeling that looks with expression the "
         "neutral angry happy sad worried surprised disgusted fearful joyful anxious .").split()
TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3)
VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
              patch_size=8)
SIX = list(MER_CLASSES)                     # neutral, angry, happy, sad, worried, surprise




def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors  # deferred: after importorskip
    from transformers import PreTrainedTokenizerFast  # deferred: after importorskip

    vocab = {"[PAD]": 0, "[UNK]": 1, "<bos>": 2, "<eos>": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                       special_tokens=[("<bos>", 2), ("<eos>", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="<bos>",
                                   eos_token="<eos>", model_max_length=16)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    # deferred: transformers is imported only after the importorskip above
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig, CLIPVisionModel,
                              SiglipConfig, SiglipImageProcessor, SiglipModel)

    root = tmp_path_factory.mktemp("clip-zs")
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    out = {}

    def save(name, model, processor, with_tokenizer=True):
        folder = root / name
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        if with_tokenizer:
            tokenizer.save_pretrained(folder)
        out[name] = str(folder)

    # logit_scale exp(4.6) ~ 100, CLIP's trained value: the classes' scores differ visibly.
    clip_proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    save("clip", CLIPModel(CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16,
                                      logit_scale_init_value=4.6)), clip_proc)
    siglip = SiglipModel(SiglipConfig(text_config=TEXT, vision_config=VISION))
    with torch.no_grad():
        siglip.logit_scale.fill_(math.log(10.0))
        siglip.logit_bias.fill_(-2.0)
    save("siglip", siglip, SiglipImageProcessor(size={"height": 32, "width": 32}))
    save("vision_only", CLIPVisionModel(CLIPVisionConfig(**VISION)), clip_proc, with_tokenizer=False)
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip-zs-media")
    photo = skdata.astronaut()
    frames = [photo[10:250, 60 + 6 * t:380 + 6 * t] for t in range(12)]        # 320x240, the face moves
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)  # an mp4 header, then junk
    return {"astro": Sample("astro", "train", video_path=str(write_video(root / "astro.mp4", frames))),
            "short": Sample("short", "train", video_path=str(write_video(root / "short.mp4", frames[:3]))),
            "corrupt": Sample("corrupt_0007", "train", video_path=str(corrupt))}


def manual_pixels(ext, images: np.ndarray) -> torch.Tensor:
    pre = ext.preprocess()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() * pre.rescale_factor
    return (x - torch.tensor(pre.mean).view(3, 1, 1)) / torch.tensor(pre.std).view(3, 1, 1)


def features(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def hand_class_embeddings(model, tokenizer, words: dict[str, list[str]], templates, siglip=False) -> torch.Tensor:
    """CLIP's prompt ensembling by hand: normalise each prompt's embedding, mean per class, normalise."""
    rows = []
    for label, ws in words.items():
        texts = [t.format(w) for w in ws for t in templates]
        if siglip:
            tok = tokenizer(texts, padding="max_length", max_length=16, return_tensors="pt")
            emb = features(model.get_text_features(input_ids=tok["input_ids"]))
        else:
            tok = tokenizer(texts, padding=True, return_tensors="pt")
            emb = features(model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]))
        emb = emb / emb.norm(dim=-1, keepdim=True)
        mean = emb.mean(0)
        rows.append(mean / mean.norm())
    return torch.stack(rows)


# --- identity and options -------------------------------------------------------------------------
def test_registered_cheap_and_the_key_follows_the_prompts(folders):
    ext = EXTRACTORS.get("clip_zeroshot")(model_path=folders["clip"], labels=SIX)
    assert (ext.modality, ext.level, ext._model, ext.labels) == ("visual", "utterance", None, tuple(SIX))
    key = ext.identity()
    assert "model_path" not in key["config"] and "images_per_forward" not in key["config"]
    # The built-in words are in the key: surprise is prompted as "surprised".
    assert key["config"]["label_words"]["surprise"] == ["surprised"]
    assert ext.prompts()["surprise"][0] == "a photo of a face showing surprised."
    assert len(ext.prompts()["happy"]) == len(DEFAULT_TEMPLATES)
    same = ClipZeroShot(model_path=folders["clip"], labels=SIX, images_per_forward=3)
    assert same.identity() == key
    variants = [ClipZeroShot(model_path=folders["clip"], labels=SIX, templates=["a photo of a {} face."]),
                ClipZeroShot(model_path=folders["clip"], labels=SIX[:5]),
                ClipZeroShot(model_path=folders["clip"], labels=SIX[1:] + SIX[:1]),
                ClipZeroShot(model_path=folders["clip"], labels=SIX, label_words={"worried": "anxious"}),
                ClipZeroShot(model_path=folders["clip"], labels=SIX, append_embedding=True),
                ClipZeroShot(model_path=folders["clip"], labels=SIX, pool="max")]
    keys = [v.identity() for v in variants]
    assert all(k != key for k in keys) and len({str(k) for k in keys}) == len(keys)
    assert "face" not in ClipZeroShot(model_path=folders["clip"], labels=SIX, input="frame").identity()["config"]
    assert ext.weights_digest() != ClipZeroShot(model_path=folders["siglip"], labels=SIX).weights_digest()


def test_options_fail_early_with_what_to_set(folders, tmp_path):
    with pytest.raises(ValueError, match="model_path"):
        ClipZeroShot(labels=SIX)
    with pytest.raises(FileNotFoundError, match="config.json"):
        ClipZeroShot(model_path=str(tmp_path))
    with pytest.raises(ValueError, match="exactly one"):
        ClipZeroShot(model_path=folders["clip"], templates=["a photo of a face."])
    with pytest.raises(ValueError, match="pool"):
        ClipZeroShot(model_path=folders["clip"], pool="median")
    with pytest.raises(ValueError, match="repeat"):
        ClipZeroShot(model_path=folders["clip"], labels=["sad", "sad"])
    with pytest.raises(ValueError, match="label_words"):
        ClipZeroShot(model_path=folders["clip"], labels=["sad"], label_words={"sad": []})
    with pytest.raises(ValueError, match="no labels"):
        ClipZeroShot(model_path=folders["clip"]).setup("cpu")
    with pytest.raises(ValueError, match="hf_image"):
        ClipZeroShot(model_path=folders["vision_only"], labels=SIX).setup("cpu")


# --- scores ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_six(folders):
    ext = ClipZeroShot(model_path=folders["clip"], labels=SIX, num_frames=4)
    ext.setup("cpu")
    return ext


def test_mean_prob_is_a_distribution_over_the_classes(clip_six, clips):
    (astro,) = clip_six.extract_batch([clips["astro"]])
    assert astro.shape == (6,) and astro.dtype == np.float32
    assert astro.sum() == pytest.approx(1.0, abs=1e-5) and (astro > 0).all()
    assert astro.max() - astro.min() > 1e-3                      # the classes are told apart
    assert clip_six.columns() == SIX


def test_prompt_ensemble_equals_a_hand_computation_on_one_frame(folders, clips):
    from transformers import AutoTokenizer, CLIPModel  # deferred: after importorskip

    words = {"happy": ["joyful", "happy"], "sad": ["sad"], "worried": ["worried"]}
    ext = ClipZeroShot(model_path=folders["clip"], labels=list(words), num_frames=1,
                       label_words={"happy": ["joyful", "happy"]})
    ext.setup("cpu")
    images = ext.load(clips["astro"])
    assert images.shape == (1, 32, 32, 3)
    (probs,) = ext.forward([clips["astro"]], [images])

    model = CLIPModel.from_pretrained(folders["clip"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(folders["clip"])
    with torch.inference_mode():
        classes = hand_class_embeddings(model, tokenizer, words, DEFAULT_TEMPLATES)
        image = features(model.get_image_features(pixel_values=manual_pixels(ext, images)))
        image = image / image.norm(dim=-1, keepdim=True)
        ref = torch.softmax(model.logit_scale.exp() * image @ classes.T, dim=-1)[0].numpy()
        single = hand_class_embeddings(model, tokenizer, words, DEFAULT_TEMPLATES[:1])
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    np.testing.assert_allclose(ext._class_embeds.numpy(), classes.numpy(), atol=1e-6)
    assert not np.allclose(classes.numpy(), single.numpy(), atol=1e-3)   # the ensemble is not one template


def test_labels_keep_their_order(folders, clip_six, clips):
    order = [3, 0, 5, 1, 4, 2]
    shuffled = ClipZeroShot(model_path=folders["clip"], labels=[SIX[i] for i in order], num_frames=4)
    a, b = clip_six.extract_batch([clips["astro"]])[0], shuffled.extract_batch([clips["astro"]])[0]
    np.testing.assert_allclose(b, a[order], atol=1e-5)
    assert not np.allclose(a, a[order])
    assert zero_shot_predict(a, SIX) == zero_shot_predict(b, shuffled.labels) == [SIX[int(a.argmax())]]


def test_siglip_scores_are_sigmoids_with_the_bias(folders, clips):
    from transformers import AutoTokenizer, SiglipModel  # deferred: after importorskip

    ext = ClipZeroShot(model_path=folders["siglip"], labels=SIX, num_frames=1)
    ext.setup("cpu")
    assert ext.uses_sigmoid
    images = ext.load(clips["astro"])
    (probs,) = ext.forward([clips["astro"]], [images])
    model = SiglipModel.from_pretrained(folders["siglip"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(folders["siglip"])
    words = {c: [w] for c, w in zip(SIX, ["neutral", "angry", "happy", "sad", "worried", "surprised"])}
    with torch.inference_mode():
        classes = hand_class_embeddings(model, tokenizer, words, DEFAULT_TEMPLATES, siglip=True)
        image = features(model.get_image_features(pixel_values=manual_pixels(ext, images)))
        image = image / image.norm(dim=-1, keepdim=True)
        logits = 10.0 * image @ classes.T - 2.0
    np.testing.assert_allclose(probs, torch.sigmoid(logits)[0].numpy(), atol=1e-5)
    assert abs(probs.sum() - 1.0) > 0.05                         # not a softmax


def test_pools_levels_and_the_appended_embedding(folders, clip_six, clips):
    kw = dict(model_path=folders["clip"], labels=SIX, num_frames=4)
    frames = ClipZeroShot(**kw, level="frame").extract_batch([clips["astro"]])[0]
    assert frames.shape == (4, 6)
    np.testing.assert_allclose(frames.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(frames[0], frames[-1])                  # the frames differ
    np.testing.assert_allclose(clip_six.extract_batch([clips["astro"]])[0], frames.mean(0), atol=1e-5)
    np.testing.assert_allclose(ClipZeroShot(**kw, pool="max").extract_batch([clips["astro"]])[0],
                               frames.max(0), atol=1e-5)
    # softmax of the mean logits = softmax of the mean log-probabilities (per-frame shifts cancel)
    mean_log = np.log(frames).mean(0)
    ref = np.exp(mean_log - mean_log.max()) / np.exp(mean_log - mean_log.max()).sum()
    np.testing.assert_allclose(ClipZeroShot(**kw, pool="mean_logit").extract_batch([clips["astro"]])[0],
                               ref, atol=1e-5)

    with_emb = ClipZeroShot(**kw, append_embedding=True, level="frame")
    rows = with_emb.extract_batch([clips["astro"]])[0]
    assert rows.shape == (4, 6 + 16) and len(with_emb.columns()) == 22
    np.testing.assert_allclose(rows[:, :6], frames, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rows[:, 6:], axis=1), 1.0, atol=1e-5)
    utt = ClipZeroShot(**kw, append_embedding=True).extract_batch([clips["astro"]])[0]
    np.testing.assert_allclose(utt, rows.mean(0), atol=1e-5)
    assert zero_shot_predict(utt, SIX) == [SIX[int(frames.mean(0).argmax())]]


def test_batches_do_not_mix_samples_and_a_corrupt_video_is_a_failure(clip_six, clips):
    astro, corrupt, short = clip_six.extract_batch([clips["astro"], clips["corrupt"], clips["short"]])
    assert isinstance(corrupt, ExtractionFailure) and corrupt.name == "corrupt_0007"
    assert corrupt.reason == "decode_error" and "corrupt.mp4" in corrupt.message   # which file, and why
    np.testing.assert_allclose(clip_six.extract_batch([clips["astro"]])[0], astro, atol=1e-5)
    np.testing.assert_allclose(clip_six.extract_batch([clips["short"]])[0], short, atol=1e-5)
    assert not np.allclose(astro, short)


def test_zero_shot_predict_reads_the_class_columns():
    p = np.array([[0.1, 0.7, 0.2, 9.0, 9.0], [0.5, 0.2, 0.3, -1.0, 0.0]])    # + 2 embedding columns
    assert zero_shot_predict(p, ["a", "b", "c"]) == ["b", "a"]
    with pytest.raises(ValueError, match="class columns"):
        zero_shot_predict(p[:, :2], ["a", "b", "c"])
    with pytest.raises(ValueError, match="non-finite"):
        zero_shot_predict(np.array([[0.2, np.nan, 0.1]]), ["a", "b", "c"])


# --- binding the dataset's classes ----------------------------------------------------------------
def test_bind_classes_fills_empty_labels_from_the_manifest(folders, clips, tmp_path):
    manifest = Manifest("toy", LabelSpec(("calm", "excited", "surprise")),
                        [Sample("astro", "train", discrete="calm", video_path=clips["astro"].video_path)])
    cfg = OmegaConf.create({"paths": {"cache_dir": str(tmp_path)}, "features": {
        "visual": {"name": "clip_zeroshot", "options": {"model_path": folders["clip"]}},
        "visual_given": {"name": "clip_zeroshot", "options": {"model_path": folders["clip"], "labels": ["sad"]}}}})
    bound, given = plan_streams(cfg, manifest, "toy")
    assert bound.extractor.labels == ("calm", "excited", "surprise")
    assert bound.extractor.identity()["config"]["label_words"] == {"calm": ["calm"], "excited": ["excited"],
                                                                   "surprise": ["surprised"]}
    assert given.extractor.labels == ("sad",)
    assert bound.entry.path != given.entry.path
    assert bound.extractor.extract_batch([clips["astro"]])[0].shape == (3,)

    unbound = ClipZeroShot(model_path=folders["clip"])
    unbound.device = "cpu:test"
    copy = unbound.bind_classes(SIX)
    assert copy is not unbound and copy.labels == tuple(SIX) and copy.device == "cpu:test"
    assert unbound.labels == ()                                  # the original is untouched
    assert copy.bind_classes(["other"]) is copy                  # given labels stay
    assert unbound.bind_classes(()) is unbound                   # a valence-only dataset: nothing to bind


# --- end to end -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_mer_run_on_the_demo_corpus(folders, tmp_path):
    cmd = [sys.executable, "-m", "mer.run", "features/visual=clip_zeroshot",
           f"features.visual.options.model_path={folders['clip']}", "features.visual.options.num_frames=4",
           "features.visual.options.face.max_frames=4", "features/audio=none", "features/text=tfidf",
           f"paths.cache_dir={tmp_path / 'cache'}", f"paths.runs_dir={tmp_path / 'runs'}", "tracking=none",
           "ablate_modalities=false", "data.demo.n_train=24", "data.demo.n_per_test=4", "train.epochs=3",
           "train.n_folds=2", "progress=false"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "clip_zeroshot, dim 6, 36/36 samples" in proc.stdout + proc.stderr     # six classes, no face lost
    entries = list((tmp_path / "cache" / "features").glob("*/clean/clip_zeroshot-*/meta.json"))
    assert len(entries) == 1
    meta = entries[0].read_text()
    assert '"surprise"' in meta and '"surprised"' in meta       # the demo's classes were bound into the key


@pytest.mark.slow
def test_clip_as_a_zero_shot_predictor_scored_and_submitted(folders, tmp_path):
    """track=zeroshot reads the cached class scores (in the stream's own label order) as predictions."""
    import pandas as pd
    from hydra import compose, initialize_config_dir

    from mer.pipeline import run
    from submissions.validate import validate_submission

    shuffled = list(reversed(MER_CLASSES))
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "track=zeroshot", "features/visual=clip_zeroshot", f"features.visual.options.model_path={folders['clip']}",
            f"features.visual.options.labels=[{','.join(shuffled)}]", "features.visual.options.num_frames=2",
            "features.visual.options.face.max_frames=2", "features/text=tfidf", f"paths.runs_dir={tmp_path / 'runs'}",
            "progress=false", "data.demo.n_train=24", "data.demo.n_per_test=4", "train.n_folds=2"])
    res = run(cfg, out_dir=tmp_path / "out")
    assert 0 <= res.metrics["mllm_stream_visual_wf1"] <= 1 and res.metrics["mllm_stream_visual_usable"] == 1.0
    assert "baseline_wf1" in res.metrics and res.metrics["mllm_requests"] == 0
    pred = pd.read_csv(res.out_dir / "predictions" / "stream_visual" / "train.csv")
    assert set(pred.discrete) <= set(MER_CLASSES) and (pred.filter(like="rank_").max(axis=1) == 6).all()
    manifest = pd.read_json(res.out_dir / "manifest.jsonl", lines=True, dtype=False).iloc[1:]
    names = manifest[manifest.split == "test1"].name.tolist()
    assert validate_submission(res.submissions["multi"], "mer2023_multi", names=names) == []
    assert "clip_zeroshot zero-shot" in (res.out_dir / "results.md").read_text()
