"""Datasets as researchers bring them: sentiment (valence-only) data and its metrics, group-aware
folds, MERBench's eight processed label files, and run folders named by the dataset."""
import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from sklearn.metrics import accuracy_score, f1_score

from conftest import REPO
from mer.data.prepare_merbench import DATASET_KINDS, IEMOCAP4_CLASSES, IEMOCAP6_CLASSES, iemocap_session
from mer.data.recipes import prepare
from mer.core.errors import UserError
from mer.evaluation.metrics import (binary_sentiment, mae, multiclass_sentiment_accuracy, pearson,
                                    sentiment_metrics)
from mer.evaluation.scoring import score_for_selection
from mer.runs import default_out_dir
from mer.pipeline import run
from mer.training.folds import check_protocol, make_folds, valence_strata

POS, NEG = "great wonderful loved it", "terrible awful hated it"
CLASS_WORDS = ["so happy and joyful", "very sad and lonely", "calm plain and neutral", "angry and furious",
               "excited thrilled wow", "frustrated annoyed ugh", "disgusted gross yuck"]


def write_label_npz(path: Path, corpora: dict) -> Path:
    """A MERBench label npz as released: each corpus a 0-d object array wrapping a dict."""
    np.savez_compressed(path, **{key: np.array(corpus, dtype=object) for key, corpus in corpora.items()})
    return path


def write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def cfg_for(tmp_path, *overrides):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.cache_dir={tmp_path / 'cache'}",
                                            f"paths.runs_dir={tmp_path / 'runs'}", "progress=false",
                                            "tracking=none", "features/text=tfidf", "features/audio=none",
                                            "features/visual=none", "train.epochs=3", "train.n_folds=2",
                                            *overrides])


def no_cache_entry(tmp_path) -> bool:
    features = tmp_path / "cache" / "features"
    return not features.exists() or not any(p.is_file() for p in features.rglob("*"))


# --- sentiment metrics ----------------------------------------------------------------------------
def test_sentiment_metrics_follow_the_mosi_definitions():
    t = np.array([-2.6, -0.4, 0.0, 0.0, 1.2, 2.8, 3.0, -1.5])
    p = np.array([-3.4, 0.3, 0.2, -0.1, 0.9, 1.6, 2.4, -1.4])
    m = sentiment_metrics(t, p)
    nz = t != 0
    assert m["non0_acc2"] == pytest.approx(accuracy_score(t[nz] > 0, p[nz] > 0))
    assert m["non0_f1"] == pytest.approx(f1_score(t[nz] > 0, p[nz] > 0, average="weighted"))
    assert m["has0_acc2"] == pytest.approx(accuracy_score(t >= 0, p >= 0))
    assert m["has0_f1"] == pytest.approx(f1_score(t >= 0, p >= 0, average="weighted"))
    # Acc7: round(clip(v, -3, 3)); Acc5: round(clip(v, -2, 2)), for both series
    acc7 = np.mean(np.round(np.clip(t, -3, 3)) == np.round(np.clip(p, -3, 3)))
    acc5 = np.mean(np.round(np.clip(t, -2, 2)) == np.round(np.clip(p, -2, 2)))
    assert (m["acc7"], m["acc5"]) == (pytest.approx(acc7), pytest.approx(acc5))
    assert m["mae"] == pytest.approx(np.mean(np.abs(t - p)))
    assert m["corr"] == pytest.approx(np.corrcoef(t, p)[0, 1])
    assert m["non0_acc2"] != m["has0_acc2"]         # the two conventions differ on these rows


def test_sentiment_bins_scale_with_the_range_and_edge_cases():
    t, p = np.array([-1.0, -0.2, 0.1, 0.5, 0.9]), np.array([-0.9, 0.2, 0.1, 0.2, 1.0])
    # [-1, 1] scaled by 3: the SIMS valences as MOSI-scale classes
    assert multiclass_sentiment_accuracy(t, p, 7, (-1, 1)) == pytest.approx(
        np.mean(np.round(np.clip(3 * t, -3, 3)) == np.round(np.clip(3 * p, -3, 3))))
    with pytest.raises(ValueError, match="symmetric"):
        multiclass_sentiment_accuracy(t, p, 7, (0, 5))
    assert np.isnan(binary_sentiment([0.0, 0.0], [1.0, -1.0], exclude_zero=True)[0])
    assert pearson([1.0, 2.0, 3.0], [0.5, 0.5, 0.5]) == 0.0       # constant prediction: no correlation
    assert mae([1.0, -1.0], [0.0, 0.0]) == 1.0
    # selection: higher is better, so mae is negated
    out = {"probs": np.zeros((2, 1)), "valence": np.array([0.0, 0.0])}
    assert score_for_selection("mae", np.array([-1, -1]), None, np.array([1.0, -1.0]), outputs=out,
                               valence_range=(-3, 3)) == -1.0


# --- folds ----------------------------------------------------------------------------------------
def test_group_folds_keep_groups_whole_and_logo_is_one_fold_per_group():
    y = np.array([0, 1] * 30)
    groups = np.array([f"spk{i // 6}" for i in range(60)], dtype=object)      # 10 speakers
    folds = make_folds(y, groups, "stratified_group", 5, seed=3)
    assert len(folds) == 5
    for tr, va in folds:
        assert not set(groups[tr]) & set(groups[va])
    assert sorted(np.concatenate([va for _, va in folds]).tolist()) == list(range(60))
    again = make_folds(y, groups, "stratified_group", 5, seed=3)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))            # seeded
    logo = make_folds(y, groups, "logo", 5, seed=0)
    assert len(logo) == 10 and [set(groups[va]) for _, va in logo] == [{f"spk{i}"} for i in range(10)]
    mixed = make_folds(y, None, "stratified", 5, seed=3)
    assert any(set(groups[tr]) & set(groups[va]) for tr, va in mixed)


def test_protocol_problems_are_one_line_each():
    with pytest.raises(ValueError, match="needs a group"):
        check_protocol("logo", None, 5)
    with pytest.raises(ValueError, match="at least 2 groups"):
        check_protocol("logo", ["a", "a"], 5)
    with pytest.raises(ValueError, match="2 samples of .* have no group"):
        check_protocol("stratified_group", ["a", None, "b", ""], 2)
    with pytest.raises(ValueError, match=r"train.n_folds=3 or train.protocol=logo"):
        check_protocol("stratified_group", ["a", "b", "c"], 5)
    with pytest.raises(ValueError, match="not one of"):
        check_protocol("kfold", None, 5)


def test_valence_strata_is_the_sign_with_small_classes_merged():
    v = np.array([-1.0, -2.0, 0.0, 1.0, 2.0, np.nan, 0.5, -0.5])
    assert valence_strata(v, 2).tolist() == [0, 0, 2, 2, 2, -1, 2, 0]        # one zero: joins positive
    assert valence_strata(np.array([0.0, 0.0, 1.0, -1.0, 2.0, -2.0]), 2).tolist() == [1, 1, 2, 0, 2, 0]


# --- the eight MERBench formats -------------------------------------------------------------------
def iemocap_names(n_per_session: int = 4) -> list[str]:
    return [f"Ses0{s}{'FM'[i % 2]}_impro0{i}_{'FM'[i % 2]}00{i}" for s in range(1, 6) for i in range(n_per_session)]


def merbench_folder(tmp_path: Path, kind: str, n: int = 16) -> Path:
    """A folder with ``kind``'s label file in MERBench's exact format and its transcript CSV."""
    root = tmp_path / f"{kind}-process"
    root.mkdir()
    spec = DATASET_KINDS[kind]
    rng = np.random.default_rng(1)
    rows = []
    if kind.startswith("iemocap"):
        classes = spec.classes
        corpus = {}
        for i, name in enumerate(iemocap_names()):
            k = i % len(classes)
            corpus[name] = {"emo": k, "val": -10}
            rows.append((name, "中文", CLASS_WORDS[k]))
        write_label_npz(root / spec.label_file, {"whole_corpus": corpus})
    elif kind == "mer2023":
        corpora = {"train_corpus": {}, "test1_corpus": {}, "test2_corpus": {}, "test3_corpus": {}}
        for i in range(n):
            c = ("happy", "sad")[i % 2]
            corpora["train_corpus"][f"sample_{i:08d}"] = {"emo": c, "val": 2.0 if c == "happy" else -2.0}
            rows.append((f"sample_{i:08d}", "中文", CLASS_WORDS[i % 2]))
        for sp in ("test1", "test2", "test3"):
            for i in range(3):
                corpora[f"{sp}_corpus"][f"{sp}_{i}"] = {"emo": "neutral", "val": -10}
                rows.append((f"{sp}_{i}", "中文", CLASS_WORDS[i % 2]))
        write_label_npz(root / spec.label_file, corpora)
    else:
        corpora = {}
        for sp, count in (("train", n), ("val", 4), ("test", 4)):
            corpora[f"{sp}_corpus"] = {}
            for i in range(count):
                name = f"{sp}_dia{i}_utt0"
                if kind == "meld":
                    k = i % 2
                    corpora[f"{sp}_corpus"][name] = {"emo": k, "val": -10}
                    rows.append((name, "中文", CLASS_WORDS[k]))
                else:
                    high = spec.valence_range[1]
                    v = float(np.round(rng.uniform(0.2, high), 2)) * (1 if i % 2 else -1)
                    corpora[f"{sp}_corpus"][name] = {"emo": 0, "val": v}
                    rows.append((name, "中文", POS if v > 0 else NEG))
        write_label_npz(root / spec.label_file, corpora)
    write_csv(root / "transcription-engchi-polish.csv", ["name", "chinese", "english"], rows)
    return root


def test_iemocap_session_from_the_name():
    assert iemocap_session("Ses01F_impro01_F000") == "Ses01"
    assert iemocap_session("Ses05M_script03_2_M041") == "Ses05"
    assert iemocap_session("sample_00000001") is None


@pytest.mark.parametrize("kind", sorted(DATASET_KINDS))
def test_every_merbench_kind_reads_as_released(tmp_path, kind):
    root = merbench_folder(tmp_path, kind)
    m = prepare("merbench", root, dataset_kind=kind)
    spec, kinds = m.label_spec, DATASET_KINDS[kind]
    assert spec.classes == kinds.classes
    if kind in ("mosi", "mosei", "sims", "simsv2"):
        assert spec.valence_only and spec.valence_range == kinds.valence_range
        assert m.splits == ["train", "val", "test"]
        assert all(s.discrete is None and s.valence is not None for s in m.samples)
    elif kind.startswith("iemocap"):
        assert m.splits == ["train"] and m.protocol == "logo" and not spec.has_valence
        assert sorted({s.group for s in m.samples}) == ["Ses01", "Ses02", "Ses03", "Ses04", "Ses05"]
        assert m["Ses01F_impro00_F000"].discrete == kinds.classes[0]
    elif kind == "meld":
        assert not spec.has_valence and m["train_dia1_utt0"].discrete == "joy"
    else:
        assert spec.has_valence and m.test_splits == ["test1", "test2", "test3"]
    assert all(s.text("english") for s in m.samples)


def test_iemocap_class_orders():
    assert IEMOCAP4_CLASSES == ("happy", "sad", "neutral", "anger")
    assert IEMOCAP6_CLASSES[:4] == IEMOCAP4_CLASSES and IEMOCAP6_CLASSES[4:] == ("excited", "frustrated")


DATA_CONFIG = {"mer2023": "merbench", "iemocap4": "iemocap", "iemocap6": "iemocap6", "meld": "merbench",
               "mosi": "mosi", "mosei": "mosei", "sims": "sims", "simsv2": "simsv2"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(DATASET_KINDS))
def test_every_merbench_kind_runs_end_to_end(tmp_path, kind):
    root = merbench_folder(tmp_path, kind)
    overrides = [f"data={DATA_CONFIG[kind]}", f"data.root={root}", "data.language=english",
                 f"data.options.dataset_kind={kind}"]
    res = run(cfg_for(tmp_path, *overrides), out_dir=tmp_path / "out")
    summary = json.loads((res.out_dir / "results.json").read_text())
    folds = pd.read_csv(res.out_dir / "folds.csv")
    if DATASET_KINDS[kind].valence_range and not DATASET_KINDS[kind].classes:
        assert summary["targets"] == ["valence"] and summary["metric"] == "non0_f1"
        assert {"cv_non0_acc2", "cv_has0_acc2", "cv_acc7", "cv_mae", "cv_corr", "test_test_non0_f1"} <= set(res.metrics)
        assert "cv_wf1" not in res.metrics
        pred = pd.read_csv(res.out_dir / "predictions" / "test.csv")
        assert list(pred.columns) == ["name", "valence"] and pred["valence"].notna().all()
    elif kind.startswith("iemocap"):
        assert summary["protocol"] == "logo" and summary["folds"]["n_folds"] == 5
        assert summary["folds"]["held_out_groups"] == [[f"Ses0{i}"] for i in range(1, 6)]
        assert (folds.groupby("group")["fold"].nunique() == 1).all()
        assert "cv_wf1" in res.metrics
    else:
        assert "cv_wf1" in res.metrics and summary["protocol"] == "stratified"
    # real releases default to three seeds: every training row held out once per seed
    assert sorted(folds["seed"].unique()) == [0, 1, 2] and summary["seeds"] == [0, 1, 2]
    assert (folds["fold"] >= 0).all() and not folds.duplicated(["name", "seed"]).any()
    assert (folds.groupby("seed")["name"].nunique() == folds["name"].nunique()).all()


# --- valence-only and groups through the generic manifest ------------------------------------------
@pytest.mark.slow
def test_generic_valence_only_learns_the_sentiment(tmp_path):
    root = tmp_path / "my-sentiment"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(48):
        v = float(np.round(rng.uniform(0.3, 3.0), 1)) * (1 if i % 2 else -1)
        rows.append((f"u{i:03d}", "train" if i < 40 else "test", POS if v > 0 else NEG, v))
    write_csv(root / "manifest.csv", ["name", "split", "text", "valence"], rows)
    res = run(cfg_for(tmp_path, "data=generic", f"data.root={root}", "data.options.valence_range=[-3,3]",
                      "train.epochs=40", "train.lr=0.01", "train.batch_size=8"), out_dir=tmp_path / "out")
    assert res.metrics["cv_non0_acc2"] == 1.0 and res.metrics["cv_corr"] > 0.5     # the words give the sign away
    assert res.submissions == {}                                                    # no discrete: predictions only
    pred = pd.read_csv(res.out_dir / "predictions" / "test.csv")
    assert ((pred["valence"] > 0) == [r[3] > 0 for r in rows[40:]]).all()
    oof = pd.read_csv(res.out_dir / "predictions" / "train-oof.csv")
    assert list(oof.columns) == ["name", "true_valence", "valence"]


@pytest.mark.slow
def test_generic_group_column_and_stratified_group_protocol(tmp_path):
    root = tmp_path / "speakers"
    root.mkdir()
    rows = [(f"u{i:03d}", "train", CLASS_WORDS[i % 2], ("calm", "gloomy")[i % 2], f"spk{i // 4}") for i in range(32)]
    write_csv(root / "manifest.csv", ["name", "split", "text", "discrete", "group"], rows)
    res = run(cfg_for(tmp_path, "data=generic", f"data.root={root}", "train.protocol=stratified_group",
                      "train.n_folds=4"), out_dir=tmp_path / "out")
    summary = json.loads((res.out_dir / "results.json").read_text())
    assert summary["protocol"] == "stratified_group" and summary["folds"]["n_groups"] == 8
    folds = pd.read_csv(res.out_dir / "folds.csv")
    assert (folds.groupby("group")["fold"].nunique() == 1).all() and folds["fold"].nunique() == 4
    assert sum(len(g) for g in summary["folds"]["held_out_groups"]) == 8


# --- bad inputs: one line each, before any extraction -------------------------------------------
def _mosi_root(tmp_path, bad_valence=None):
    root = merbench_folder(tmp_path, "mosi")
    if bad_valence is not None:
        write_label_npz(root / "label.npz", {"train_corpus": {"train_dia0_utt0": {"emo": 0, "val": 1.0},
                                                              "train_dia1_utt0": {"emo": 0, "val": bad_valence}}})
    return root


@pytest.mark.parametrize("case,overrides,message", [
    ("no_target", ["data.targets=discrete"], r"data.targets asks for discrete, which .* has no labels of"),
    ("outside_range", [], r"sample train_dia1_utt0 \(train\) has valence 4.5, outside the declared range \[-3, 3\]"),
    ("logo_without_groups", ["train.protocol=logo"], r"train.protocol=logo needs a group"),
])
def test_bad_inputs_fail_in_one_line_before_extraction(tmp_path, case, overrides, message):
    root = _mosi_root(tmp_path, bad_valence=4.5 if case == "outside_range" else None)
    with pytest.raises(UserError, match=message) as err:
        run(cfg_for(tmp_path, "data=mosi", f"data.root={root}", "data.language=english", *overrides),
            out_dir=tmp_path / "out")
    assert "\n" not in str(err.value)
    assert no_cache_entry(tmp_path)


def test_no_labelled_training_sample_fails_before_extraction(tmp_path):
    root = tmp_path / "unlabelled"
    root.mkdir()
    write_csv(root / "manifest.csv", ["name", "split", "text", "discrete"],
              [("a", "train", "hello there", ""), ("b", "train", "hi", ""), ("c", "test", "x", "")])
    with pytest.raises(UserError, match=r"no sample of split 'train' has a discrete label"):
        run(cfg_for(tmp_path, "data=generic", f"data.root={root}"), out_dir=tmp_path / "out")
    assert no_cache_entry(tmp_path)


def test_a_group_protocol_with_one_group_fails_before_extraction(tmp_path):
    root = tmp_path / "one-speaker"
    root.mkdir()
    write_csv(root / "manifest.csv", ["name", "text", "discrete", "group"],
              [(f"u{i}", CLASS_WORDS[i % 2], ("a", "b")[i % 2], "spk0") for i in range(8)])
    with pytest.raises(UserError, match=r"needs at least 2 groups; .* has 1"):
        run(cfg_for(tmp_path, "data=generic", f"data.root={root}", "train.protocol=stratified_group"),
            out_dir=tmp_path / "out")
    assert no_cache_entry(tmp_path)


# --- run folders ----------------------------------------------------------------------------------
def test_run_folders_are_named_by_the_dataset(tmp_path):
    root = tmp_path / "cmumosi-process"
    root.mkdir()
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        for overrides, name in ((["data=generic", f"data.root={root}"], "cmumosi-process"),
                                (["data=merbench", f"data.root={root}", "data.dataset=mosi-v2"], "mosi-v2"),
                                (["data=mosi", f"data.root={root}"], "mosi"),
                                (["data=mer2023"], "mer2023")):
            cfg = compose("config", overrides=[f"paths.runs_dir={tmp_path / 'runs'}", *overrides],
                          return_hydra_config=True)
            hydra_dir = Path(cfg.hydra.run.dir)
            assert hydra_dir.parent.parent == tmp_path / "runs" / name
            del cfg.hydra
            assert default_out_dir(cfg).parent.parent == tmp_path / "runs" / name


def test_generic_manifest_groups_from_the_column_or_iemocap_names(tmp_path):
    write_csv(tmp_path / "manifest.csv", ["name", "text", "discrete"],
              [(n, "hi", "a") for n in iemocap_names(2)])
    m = prepare("generic", tmp_path, manifest="manifest.csv")
    assert [s.group for s in m.samples][:3] == ["Ses01", "Ses01", "Ses02"]
    write_csv(tmp_path / "with_group.csv", ["name", "text", "discrete", "group"],
              [("Ses01F_impro00_F000", "hi", "a", "spkA"), ("x", "hi", "a", "")])
    m = prepare("generic", tmp_path, manifest="with_group.csv")
    assert [s.group for s in m.samples] == ["spkA", None]       # the column wins; empty = none
    assert "group" not in m["x"].meta


@pytest.mark.parametrize("kind,folder", [("meld", "meld"), ("mer2023", "mer2023")])
def test_real_merbench_files_read_with_their_kind(kind, folder):
    from conftest import shared_data

    root = shared_data(folder)
    m = prepare("merbench", root, dataset_kind=kind)
    assert m.label_spec.classes == DATASET_KINDS[kind].classes and m.label_spec.has_discrete
    assert m.label_spec.has_valence == (kind == "mer2023")
    assert all(s.discrete is None for sp in m.test_splits if sp != "val" for s in m.split(sp))  # placeholders
    if kind == "meld":
        layout = prepare("meld", root)
        assert [(s.name, s.discrete) for s in m.samples] == [(s.name, s.discrete) for s in layout.samples]
