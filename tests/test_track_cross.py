"""MER-Cross (``track=cross``): partner streams built by name, absent partners masked, folds that
keep an exchange whole, and the track end to end on the demo, where a pairs file whose partners
carry the label lifts the paired setting above the unpaired one on the same folds."""
import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO
from mer.core.errors import UserError
from mer.data.bundle import FeatureBundle, ModalityFeatures
from mer.tracks.cross import Pairs, demo_pairs, paired_bundle, read_pairs

COLUMNS = {"name": "name", "partner": "partner", "exchange": "exchange"}


def _bundle():
    names = ["a", "b", "c", "d"]
    text = ModalityFeatures(np.arange(8, dtype=np.float32).reshape(4, 2), np.array([True, True, True, False]))
    lengths = np.array([2, 1, 3, 0])
    seq = np.zeros((4, 3, 1), np.float32)
    for i, n in enumerate(lengths):
        seq[i, :n, 0] = i + 1
    visual = ModalityFeatures(seq, lengths > 0, lengths=lengths)
    return FeatureBundle(names, {"text": text, "visual": visual})


def test_concat_adds_the_partners_streams_by_name_and_masks_a_missing_partner():
    pairs = Pairs({"a": "c", "c": "a", "b": "d", "d": "b"}, {"a": "x", "c": "x", "b": "y", "d": "y"}, "t")
    got = paired_bundle(_bundle(), Pairs({**pairs.partner, "a": "c"}, pairs.exchange, "t"), "concat", None)
    assert sorted(got.modalities) == ["partner_text", "partner_visual", "text", "visual"]
    pt, pv = got.modalities["partner_text"], got.modalities["partner_visual"]
    assert np.array_equal(pt.X[0], [4, 5]) and np.array_equal(pt.X[2], [0, 1])
    assert pt.present.tolist() == [True, False, True, True]          # b's partner d has no text
    assert pv.lengths.tolist() == [3, 0, 2, 1] and pv.X[0, :3, 0].tolist() == [3, 3, 3]
    lonely = paired_bundle(_bundle(), Pairs({"a": "b"}, {"a": "x"}, "t"), "concat", ["text"])
    assert sorted(lonely.modalities) == ["partner_text", "partner_visual", "text"]   # own visual cut
    assert lonely.modalities["partner_text"].present.tolist() == [True, False, False, False]
    assert not lonely.modalities["partner_text"].X[1:].any()


def test_difference_is_own_minus_partner_where_both_are_present():
    pairs = Pairs({"a": "b", "b": "a", "c": "d", "d": "c"}, {}, "t")
    got = paired_bundle(_bundle().select(["text"]), pairs, "difference", None)
    d = got.modalities["diff_text"]
    assert np.array_equal(d.X[0], [-2, -2]) and np.array_equal(d.X[1], [2, 2])
    assert d.present.tolist() == [True, True, False, False]
    with pytest.raises(UserError, match="utterance-level"):
        paired_bundle(_bundle(), pairs, "difference", None)
    with pytest.raises(UserError, match="target_streams"):
        paired_bundle(_bundle(), pairs, "concat", ["audio"])


def test_read_pairs_checks_names_and_gives_each_exchange_one_group(tmp_path):
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"name": ["a", "b", "c"], "partner": ["b", "a", "d"], "exchange": ["", "", "dlg7"]}).to_csv(
        path, index=False)
    pairs = read_pairs(path, COLUMNS, {"a", "b", "c", "d"})
    assert pairs.partner == {"a": "b", "b": "a", "c": "d"}
    assert pairs.group_of("a") == pairs.group_of("b") and pairs.group_of("c") == pairs.group_of("d") == "dlg7"
    assert pairs.group_of("e") == "solo:e"
    with pytest.raises(UserError, match="'d' is not a sample"):
        read_pairs(path, COLUMNS, {"a", "b", "c"})
    pd.DataFrame({"name": ["a", "a"], "partner": ["b", "c"]}).to_csv(path, index=False)
    with pytest.raises(UserError, match="two partners"):
        read_pairs(path, COLUMNS, {"a", "b", "c"})


def test_demo_pairs_are_mutual_within_a_split_and_seeded():
    splits = {"train": [f"t{i}" for i in range(7)], "test": ["x", "y"]}
    one, two = demo_pairs(splits, 0), demo_pairs(splits, 0)
    assert one.partner == two.partner and one.partner != demo_pairs(splits, 1).partner
    assert all(one.partner[one.partner[n]] == n for n in one.partner)
    assert len(one.partner) == 8 and one.partner["x"] == "y"        # one training clip is left alone
    assert all((a[0] == "t") == (b[0] == "t") for a, b in one.partner.items())


def _cfg(tmp, overrides=()):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.runs_dir={tmp / 'runs'}", "track=cross", "progress=false",
                                            "ablate_modalities=false", *overrides])


@pytest.mark.slow
def test_cross_track_keeps_exchanges_whole_and_uses_an_informative_partner(tmp_path):
    from mer.pipeline import run

    base = ["data.demo.n_train=240", "data.demo.n_per_test=6", "train.n_folds=3",
            "features/visual=none", "features/audio=none", "features/text=minilm"]
    first = run(_cfg(tmp_path, base), out_dir=tmp_path / "first")           # the demo's random pairs
    out = first.out_dir
    folds = pd.read_csv(out / "folds.csv")
    assert folds.groupby(["seed", "group"]).fold.nunique().max() == 1       # an exchange sits in one fold
    pairs = pd.read_csv(out / "cross_pairs.csv")
    assert (folds.group.str.startswith("train:")).all() and len(pairs) >= 238
    summary = json.loads((out / "results.json").read_text())
    assert summary["protocol"] == "stratified_group" and summary["cross"]["pairing"] == "concat"
    assert [a["modalities"] for a in summary["ablation"]] == [["text"], ["partner_text", "text"]]
    manifest = pd.read_json(out / "manifest.jsonl", lines=True, dtype=False).iloc[1:]
    assert set(first.submissions) == {"multi", "noise", "semi"}          # validated as they were written
    with sqlite3.connect(tmp_path / "runs" / "mlflow.db") as db:
        keys = {k for (k,) in db.execute("select key from metrics")}
    assert {"cv_wf1", "unimodal_text_cv_wf1", "cross_n_paired_train"} <= keys

    # a pairs file whose training partners share the clip's class: the partner's words are a second
    # view of the label, so the paired setting must beat the unpaired one on the same folds
    train = manifest[manifest.split == "train"]
    rows = []
    for _, grp in train.groupby("discrete"):
        names = grp.name.tolist()
        for i in range(0, len(names) - 1, 2):
            rows += [(names[i], names[i + 1]), (names[i + 1], names[i])]
    informative = tmp_path / "pairs.csv"
    pd.DataFrame(rows, columns=["name", "partner"]).to_csv(informative, index=False)
    res = run(_cfg(tmp_path, [*base, f"track.pairs={informative}"]), out_dir=tmp_path / "second")
    table = json.loads((res.out_dir / "results.json").read_text())["ablation"]
    unpaired, paired = (a["cv"]["cv_wf1"]["mean"] for a in table)
    assert paired > unpaired + 0.04, (paired, unpaired)      # 0.396 vs 0.330 when written

    bad = tmp_path / "bad.csv"
    pd.DataFrame({"name": ["nobody"], "partner": [train.name.iloc[0]]}).to_csv(bad, index=False)
    with pytest.raises(UserError, match="nobody"):
        run(_cfg(tmp_path, [*base, f"track.pairs={bad}"]), out_dir=tmp_path / "third")
