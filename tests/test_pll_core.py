"""Candidate generation (the ARNet/IRNet protocol), learners on real digits, ARNet refinement, CLI."""
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from mer.pll.arnet import (ARNetRefiner, choose_base, detect_noisy, should_start_correction,
                           warmup_epoch)
from mer.pll.candidates import (candidate_stats, candidates_from_votes, candidates_from_words,
                                noisy_candidates, swap_noise, uniform_candidates)
from mer.pll.learners import LEARNERS, build_learner, check_candidates
from tests.conftest import REPO


def test_uniform_candidates_follow_q():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 20000)
    S = uniform_candidates(y, 10, 0.3, rng)
    assert (S[np.arange(len(y)), y] == 1).all()
    assert S.sum(1).mean() == pytest.approx(1 + 9 * 0.3, abs=0.03)


def test_swap_noise_removes_truth_with_rate_eta_and_keeps_size():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 20000)
    S = uniform_candidates(y, 10, 0.1, rng)
    N = swap_noise(y, S, 0.3, rng)
    assert (N.sum(1) == S.sum(1)).all()
    assert 1 - N[np.arange(len(y)), y].mean() == pytest.approx(0.3, abs=0.015)
    changed = np.flatnonzero((N != S).any(1))
    assert (N[changed, y[changed]] == 0).all()


def test_swap_noise_leaves_full_sets_alone_and_seeds_reproduce():
    y = np.array([0, 1])
    full = np.ones((2, 3), np.float32)
    assert (swap_noise(y, full, 1.0, np.random.default_rng(0)) == 1).all()
    a = noisy_candidates(np.arange(50) % 5, 5, 0.3, 0.2, seed=7)
    assert (a == noisy_candidates(np.arange(50) % 5, 5, 0.3, 0.2, seed=7)).all()
    st = candidate_stats(a, np.arange(50) % 5)
    assert 0 < st.contains_truth < 1 and st.avg_size > 1


def test_candidates_from_votes_and_words():
    S = candidates_from_votes([["happy", "sad"], [2]], ["neutral", "happy", "sad"])
    assert S.tolist() == [[0, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="s2.*'bored'"):
        candidates_from_votes([["happy"], ["bored"]], ["happy", "sad"], names=["s1", "s2"])
    W = candidates_from_words([["Joyful", "xyz"], ["xyz"]], {"joyful": "happy"}, ["happy", "sad"])
    assert W.tolist() == [[1, 0], [1, 1]]


def test_check_candidates_refuses_empty_rows():
    with pytest.raises(ValueError, match="empty candidate set.*rows \\[1\\]"):
        check_candidates(np.array([[1, 0], [0, 0]]))


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    return Xtr, Xte, ytr, yte


@pytest.mark.parametrize("name", ["cc", "proden", "pico"])
def test_learners_beat_chance_on_digits_quickly(digits, name):
    Xtr, Xte, ytr, yte = digits
    S = noisy_candidates(ytr, 10, 0.3, 0.1, seed=0)
    est = build_learner(name, epochs=25, seed=0)
    assert clone(est).get_params() == est.get_params()
    est.fit(Xtr, S)
    acc = (est.predict(Xte) == yte).mean()
    assert acc > 0.6, f"{name}: {acc}"
    assert est.predict_proba(Xte).shape == (len(Xte), 10)
    assert set(LEARNERS.names()) == {"cc", "proden", "pico"}


def test_sce_loss_and_unknown_loss(digits):
    Xtr, Xte, ytr, yte = digits
    S = noisy_candidates(ytr, 10, 0.1, 0.2, seed=1)
    est = build_learner("pico", epochs=8, seed=0, loss="sce").fit(Xtr, S)
    assert (est.predict(Xte) == yte).mean() > 0.5
    with pytest.raises(ValueError, match="loss must be"):
        build_learner("pico", epochs=1, loss="mae").fit(Xtr[:50], S[:50])


def test_plateau_rule_and_detection():
    rising = list(np.linspace(0, 1, 30))
    assert not should_start_correction(rising, window=20, slope_epochs=5)
    assert should_start_correction(rising + [1.0] * 30, window=20, slope_epochs=5)
    assert not should_start_correction([0.5] * 10, window=20)
    slow_rise = list(np.linspace(0.3, 0.6, 80))   # still rising, however slowly: never a plateau
    assert not any(should_start_correction(slow_rise[:n], window=40) for n in range(40, 81))
    S = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0]], np.float32)
    v1 = np.array([[0.2, 0.7, 0.1], [0.2, 0.7, 0.1], [0.4, 0.5, 0.1]])
    v2 = np.array([[0.3, 0.6, 0.1], [0.3, 0.1, 0.6], [0.4, 0.5, 0.1]])
    rows, labels, probs = detect_noisy(S, [v1, v2], delta=0.01)
    assert rows.tolist() == [0] and labels.tolist() == [1] and probs.tolist() == [0.7]


def test_start_bounds_and_base_choice(digits):
    assert warmup_epoch(0.5, 100) == 50 and warmup_epoch(30, 100) == 30 and warmup_epoch(0.7, 10) == 7
    with pytest.raises(ValueError, match="warm-up bounds"):
        warmup_epoch(-2, 100)
    Xtr, Xte, ytr, yte = digits
    S = noisy_candidates(ytr, 10, 0.3, 0.3, seed=3)
    # window larger than the run: the plateau rule can never fire, so the deadline starts it
    est = ARNetRefiner(build_learner("cc", seed=0, hidden=32), epochs=10, window=50, min_warmup=0.3,
                       max_warmup=0.6, seed=0).fit(Xtr, S, y_true=ytr)
    assert est.correction_epoch_ == 6 and est.diagnostics_[5].phase == "correct"
    assert est.diagnostics_[4].phase == "warmup"
    assert sorted(est.train_rows_.tolist()) == list(range(len(Xtr)))
    never = ARNetRefiner(build_learner("cc", seed=0, hidden=32), epochs=6, window=50,
                         max_warmup=None, seed=0).fit(Xtr, S)
    assert never.correction_epoch_ is None
    # a flat (already plateaued) curve would fire at once, but not before min_warmup
    flat = ARNetRefiner(build_learner("cc", seed=0, hidden=32), epochs=8, window=2, slope_epochs=1,
                        min_warmup=5, max_warmup=None, seed=0)
    flat.fit(Xtr, S, eval_set=(Xtr[:20], np.ones((20, 10), np.float32)))  # coverage stays 1.0
    assert flat.correction_epoch_ == 5
    # the base choice sees only the candidate matrix: half the classes or fewer -> pico
    assert choose_base(noisy_candidates(ytr, 10, 0.3, 0.3, seed=0)) == "pico"
    assert choose_base(noisy_candidates(ytr, 10, 0.5, 0.3, seed=0)) == "proden"
    assert choose_base(np.eye(4, dtype=np.float32)) == "pico"


def test_arnet_raises_contains_truth_and_records_diagnostics(digits):
    Xtr, Xte, ytr, yte = digits
    S = noisy_candidates(ytr, 10, 0.3, 0.3, seed=3)
    est = ARNetRefiner(build_learner("proden", seed=0), epochs=40, correct_start=15, seed=0)
    est.fit(Xtr, S, y_true=ytr)
    d = est.diagnostics_
    assert len(d) == 40 and d[0].phase == "warmup" and d[-1].phase == "correct"
    assert d[-1].contains_truth > d[0].contains_truth + 0.1
    assert d[-1].avg_size >= d[0].avg_size
    rows = est.train_rows_
    assert sorted(rows.tolist()) == list(range(len(Xtr)))  # validation rows joined at the start
    assert (est.candidates_ >= S[rows]).all()             # correction only adds labels
    assert (est.predict(Xte) == yte).mean() > 0.7
    assert np.isfinite([r.val_score for r in d if r.epoch <= 15]).all()
    assert np.isnan([r.val_score for r in d if r.epoch > 15]).all()
    kept = ARNetRefiner(build_learner("cc", seed=0), epochs=3, correct_start=2, merge_validation=False,
                        seed=0).fit(Xtr, S)
    assert len(kept.train_rows_) == len(Xtr) - round(0.1 * len(Xtr))


def test_mer_pll_is_the_pll_track_of_mer_run_with_its_defaults():
    import yaml

    out = subprocess.run([sys.executable, "-m", "mer.pll", "track.q=0.5", "--cfg", "job"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    track = yaml.safe_load(out.stdout)["track"]
    assert track["name"] == "pll" and track["strategy"] == "partial_label"
    assert track["q"] == 0.5 and track["eta"] == 0.3          # the override, and the track's own default
    bad = subprocess.run([sys.executable, "-m", "mer.pll", "learner=foo"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "learner" in bad.stderr and "Traceback" not in bad.stderr


def test_learner_benchmark_runs_one_setting(tmp_path, capsys):
    from bench.pll import main as bench_pll

    bench_pll(["--datasets", "digits", "--qs", "0.3", "--etas", "0.2", "--seeds", "5", "--epochs", "12",
               "--json", str(tmp_path / "r.json")])
    printed = capsys.readouterr().out
    assert "digits: 1797 samples" in printed and "contains truth" in printed
    import json

    r = json.loads((tmp_path / "r.json").read_text())[0]
    assert r["seed"] == 5 and r["truth_after"] >= r["truth_before"]
    assert set(r["accuracy"]) == {"cc", "proden", "pico", "arnet"}
