"""MER2024 OV metric (golden numbers on the released example), its edge cases, the wheel variant."""
import pytest

from mer.ov.groupers import ExactGrouper, OfficialCacheGrouper, parse_groups
from mer.ov.io import read_openset_csv, parse_openset_wheel
from mer.ov.metric import mer2024_ov_score, sample_overlap, wheel_ov_score
from tests.conftest import shared_data


def test_golden_mer2024_example_reproduces_official_numbers():
    root = shared_data("mer2024-ov")
    gold = read_openset_csv(root / "check-openset.csv")
    pred = read_openset_csv(root / "predict-openset.csv")
    s = mer2024_ov_score(gold, pred, OfficialCacheGrouper(root / "openset-synonym.zip"))
    assert s.n_samples == 332 and s.grouper == "official_cache"
    assert s.accuracy == pytest.approx(0.581777108433735, abs=1e-12)
    assert s.recall == pytest.approx(0.4977911646586345, abs=1e-12)
    assert s.score == pytest.approx(0.5397841365461847, abs=1e-12)


def test_groups_map_to_their_first_word_and_later_groups_win():
    groups = parse_groups("[['joyful', 'happy'], ['sad'], ['happy', 'glad']]")
    assert groups == [["joyful", "happy"], ["sad"], ["happy", "glad"]]
    r = sample_overlap(["joyful", "sad"], ["glad"], groups)
    # happy -> 'happy' (last group); joyful -> 'joyful': no match between joyful and glad
    assert (r.accuracy, r.recall) == (0.0, 0.0)
    r = sample_overlap(["happy", "sad"], ["glad", "angry"], groups)
    assert (r.accuracy, r.recall) == (0.5, 0.5)


def test_empty_prediction_scores_zero_and_case_is_ignored():
    gold = {"a": ["Happy"], "b": ["sad", "tired"]}
    pred = {"a": [], "b": ["SAD"]}
    s = mer2024_ov_score(gold, pred, ExactGrouper())
    assert s.accuracy == pytest.approx((0 + 1) / 2)
    assert s.recall == pytest.approx((0 + 0.5) / 2)
    assert s.score == pytest.approx((0.5 + 0.25) / 2)


def test_empty_ground_truth_is_skipped_or_refused():
    gold = {"a": [], "b": ["sad"]}
    pred = {"a": ["happy"], "b": ["sad"]}
    s = mer2024_ov_score(gold, pred, ExactGrouper())
    assert (s.n_samples, s.n_skipped, s.score) == (1, 1, 1.0)
    with pytest.raises(ValueError, match="empty ground truth.*'a'"):
        mer2024_ov_score(gold, pred, ExactGrouper(), empty_gt="error")


def test_missing_prediction_names_the_sample():
    with pytest.raises(ValueError, match="sample_x"):
        mer2024_ov_score({"sample_x": ["sad"]}, {}, ExactGrouper())


def test_official_cache_refuses_samples_it_does_not_cover():
    root = shared_data("mer2024-ov")
    with pytest.raises(KeyError, match="not_a_sample"):
        OfficialCacheGrouper(root / "openset-synonym.zip").group("not_a_sample", ["sad"], [])


def test_wheel_metric_levels_and_dropping():
    from mer.ov.wheel import load_wheel_assets

    assets = load_wheel_assets(shared_data("emotion-wheel"))
    assert assets.missing_synonym_bases() == []
    assert len(assets.wheels) == 5 and len(assets.wheel_vocabulary()) > 200
    gold = {"a": ["happy", "angry"], "b": ["xyzzy"], "c": ["sad"]}
    same = wheel_ov_score(gold, gold, assets)
    assert same.score == pytest.approx(1.0)
    assert all(n == 2 for n in same.n_samples["level1"][:2])     # 'b' maps to nothing: skipped
    none = wheel_ov_score(gold, {"a": [], "b": [], "c": ["qwerty"]}, assets)
    assert none.score == 0.0
    # 'joyful' and 'happy' share a level-1 cluster on every wheel, not always a level-2 one
    j = wheel_ov_score({"a": ["happy"]}, {"a": ["joyful"]}, assets)
    assert j.level_scores["level1"] == pytest.approx(1.0)
    assert j.level_scores["level2"] < 1.0


def test_wheel_parser_splits_commas_and_strips():
    assert parse_openset_wheel("['happy', ' sad ,tired']") == ["happy", "sad", "tired"]
