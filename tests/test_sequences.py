"""Frame-level features: padding and masks, alignment known answers, windowing, bundles, CCC."""
import numpy as np
import pytest
import torch

from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.data.frames import align_lengths, masked_mean, pad_sequences, resample
from mer.data.sequences import cut_span, merge_windows, split_windows, window_spans, window_starts
from mer.evaluation.metrics import abaw_expr_score, abaw_va_score, ccc, ccc_per_sequence
from mer.training.losses import ccc_loss, ccc_torch


def test_pad_sequences_lengths_mask_and_absent_rows():
    a, b = np.arange(6, dtype=np.float32).reshape(3, 2), np.ones((1, 2), np.float32)
    X, lengths = pad_sequences([a, None, b])
    assert X.shape == (3, 3, 2) and lengths.tolist() == [3, 0, 1]
    np.testing.assert_array_equal(X[0], a)
    assert not X[1].any() and not X[2, 1:].any()
    np.testing.assert_allclose(masked_mean(X, lengths), [[2, 3], [0, 0], [1, 1]])


def test_pad_sequences_caps_long_sequences_by_nearest_frames():
    X, lengths = pad_sequences([np.arange(10, dtype=np.float32)[:, None]], max_steps=4)
    assert lengths.tolist() == [4]
    assert X[0, :, 0].tolist() == [0, 3, 6, 9]       # rint(linspace(0, 9, 4)) = 0, 3, 6, 9


def test_linear_interpolation_known_answer():
    seq = np.array([[0.0], [10.0], [20.0]], np.float32)
    out = resample(seq, 5, "linear")                  # positions 0, .5, 1, 1.5, 2
    np.testing.assert_allclose(out[:, 0], [0, 5, 10, 15, 20])
    assert resample(seq, 5, "auto")[1, 0] == 5.0      # stretching -> linear


def test_nearest_decimation_known_answer():
    seq = np.arange(7, dtype=np.float32)[:, None]
    out = resample(seq, 3, "auto")                    # shrinking -> nearest: rint(0, 3, 6)
    assert out[:, 0].tolist() == [0, 3, 6]
    assert resample(seq, 4, "nearest")[:, 0].tolist() == [0, 2, 4, 6]


def test_align_lengths_follows_reference_and_falls_back():
    lengths = {"audio": np.array([50, 40, 0]), "visual": np.array([10, 0, 7])}
    assert align_lengths(lengths, "visual").tolist() == [10, 40, 7]
    assert align_lengths(lengths, 16).tolist() == [16, 16, 16]


def test_bundle_alignment_puts_modalities_on_one_time_base_and_keeps_absent_absent():
    a, la = pad_sequences([np.random.rand(50, 3), np.random.rand(40, 3), None])
    v, lv = pad_sequences([np.random.rand(10, 2), None, np.random.rand(7, 2)])
    bundle = FeatureBundle(["x", "y", "z"], {"audio": ModalityFeatures(a, la > 0, "", la),
                                            "visual": ModalityFeatures(v, lv > 0, "", lv)})
    out = bundle.aligned("visual")
    assert out.modalities["audio"].lengths.tolist() == [10, 40, 0]
    assert out.modalities["visual"].lengths.tolist() == [10, 0, 7]
    assert out.modalities["audio"].present.tolist() == [True, True, False]
    np.testing.assert_allclose(out.modalities["audio"].X[0, 0], a[0, 0])      # first frame kept


@pytest.mark.parametrize("length,size,hop", [(10, 4, 2), (1000, 300, 100), (7, 10, 5), (11, 4, 4)])
def test_windows_cover_and_merge_reconstructs(length, size, hop):
    seq = np.random.default_rng(0).normal(size=(length, 3)).astype(np.float32)
    windows, starts = split_windows(seq, size, hop)
    assert starts[0] == 0 and starts[-1] + len(windows[-1]) == length
    assert all(len(w) == min(size, length) for w in windows)
    np.testing.assert_allclose(merge_windows(windows, starts, length), seq, rtol=1e-6)


def test_window_starts_abaw_setting():
    starts = window_starts(2500, 1000, 200)           # 1000-frame windows, 800 overlap
    assert starts.tolist() == [0, 200, 400, 600, 800, 1000, 1200, 1400, 1500]
    with pytest.raises(ValueError):
        window_starts(10, 4, 5)


def test_spans_cut_unaligned_modalities_at_the_same_moments():
    spans = window_spans(10, 5, 5)
    assert spans == [(0.0, 0.5), (0.5, 1.0)]
    audio = np.arange(40)[:, None]
    assert cut_span(audio, *spans[1])[:, 0].tolist() == list(range(20, 40))


def test_rows_trim_and_pooling_and_concatenate():
    X, lengths = pad_sequences([np.ones((5, 2)), np.full((2, 2), 3.0)])
    f = ModalityFeatures(X, lengths > 0, "s", lengths)
    sub = f.rows(np.array([1]))
    assert sub.X.shape == (1, 2, 2)                   # the all-padding tail is dropped
    np.testing.assert_allclose(f.pooled().X, [[1, 1], [3, 3]])
    u = ModalityFeatures(np.zeros((1, 2), np.float32), np.array([False]))
    both = ModalityFeatures.concatenate([f, u])
    assert both.X.shape == (3, 5, 2) and both.lengths.tolist() == [5, 2, 0]
    with pytest.raises(ValueError):
        ModalityFeatures(X, np.array([True, False]), "", lengths)    # present must be lengths > 0


def test_ccc_known_answers():
    assert ccc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)     # cov 2/3, vars 2/3, shift 1
    assert ccc([1, 2, 3], [2, 2, 2]) == pytest.approx(0.0)
    assert ccc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert ccc([1, np.nan, 3], [1, 9, 3]) == pytest.approx(1.0)   # unknown targets left out
    assert ccc_per_sequence([[1, 2, 3], [1, 2, 3]], [[1, 2, 3], [3, 2, 1]]) == pytest.approx(0.0)
    assert abaw_va_score(0.5, 0.3) == pytest.approx(0.4)
    # macro over all 8 ABAW classes: classes never seen count 0
    assert abaw_expr_score([0, 1, -1], [0, 1, 5]) == pytest.approx(2 / 8)


def test_ccc_loss_matches_numpy_and_its_gradient_points_the_right_way():
    rng = np.random.default_rng(0)
    t = rng.normal(size=32)
    p = torch.tensor(0.3 * t + rng.normal(scale=0.5, size=32), requires_grad=True)
    target = torch.tensor(t)
    assert float(ccc_torch(p.detach(), target)) == pytest.approx(ccc(t, p.detach().numpy()), abs=1e-6)
    loss = ccc_loss(p, target)
    loss.backward()
    stepped = p.detach() - 0.5 * p.grad
    assert float(ccc_loss(stepped, target)) < float(loss.detach())
    # numerical gradient check on one coordinate
    eps = 1e-4
    q = p.detach().clone()
    q[3] += eps
    numeric = (float(ccc_loss(q, target)) - float(ccc_loss(p.detach(), target))) / eps
    assert numeric == pytest.approx(float(p.grad[3]), rel=1e-2, abs=1e-5)
    assert float(ccc_loss(torch.tensor([1.0, 2.0]), torch.tensor([np.nan, 1.0]))) == 0.0
