"""Per-class tables, confusion matrices, the results table and the confusion-matrix PNG."""
from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import precision_recall_fscore_support

from mer.core.samples import MER_CLASSES
from mer.evaluation.metrics import weighted_f1
from mer.evaluation.reports import (
    WEIGHTED_AVG_ROW, confusion_matrix, per_class_table, plot_confusion_matrix, results_table,
)

CLASSES = ["neutral", "angry", "happy"]
Y_TRUE = ["neutral", "neutral", "neutral", "angry", "angry", "happy"]
Y_PRED = ["neutral", "neutral", "angry", "angry", "happy", "happy"]


def test_per_class_table_numbers():
    # Same case as the hand-worked metric test: per class (precision, recall, f1, support):
    #   neutral (1, 2/3, 4/5, 3), angry (1/2, 1/2, 1/2, 2), happy (1/2, 1, 2/3, 1)
    table = per_class_table(Y_TRUE, Y_PRED, CLASSES)
    assert list(table.index) == CLASSES + [WEIGHTED_AVG_ROW]
    assert list(table.columns) == ["precision", "recall", "f1", "support"]
    np.testing.assert_allclose(table.loc["neutral", ["precision", "recall", "f1"]], [1, 2 / 3, 4 / 5])
    np.testing.assert_allclose(table.loc["happy", ["precision", "recall", "f1"]], [1 / 2, 1, 2 / 3])
    assert table["support"].tolist() == [3, 2, 1, 6]
    # weighted precision = (3*1 + 2*1/2 + 1*1/2) / 6 = 4.5/6
    assert table.loc[WEIGHTED_AVG_ROW, "precision"] == pytest.approx(0.75)
    assert table.loc[WEIGHTED_AVG_ROW, "f1"] == pytest.approx(61 / 90)


def test_per_class_table_matches_sklearn_and_official_score():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 200)  # classes 5 ('surprise') never true
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 6, 200))
    table = per_class_table(y_true, y_pred, MER_CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=range(6), zero_division=0)
    np.testing.assert_allclose(table["precision"].iloc[:6], precision)
    np.testing.assert_allclose(table["recall"].iloc[:6], recall)
    np.testing.assert_allclose(table["f1"].iloc[:6], f1)
    assert table["support"].iloc[:6].tolist() == support.tolist()
    assert table.loc[WEIGHTED_AVG_ROW, "f1"] == pytest.approx(weighted_f1(y_true, y_pred))


def test_per_class_table_accepts_indices_like_strings():
    index = {c: i for i, c in enumerate(CLASSES)}
    by_index = per_class_table([index[y] for y in Y_TRUE], [index[y] for y in Y_PRED], CLASSES)
    assert by_index.equals(per_class_table(Y_TRUE, Y_PRED, CLASSES))


def test_per_class_table_rejects_unknown_labels():
    with pytest.raises(ValueError, match="joy"):
        per_class_table(["joy"], ["happy"], CLASSES)
    with pytest.raises(ValueError, match="outside"):
        per_class_table([0, 7], [0, 1], CLASSES)


def test_confusion_matrix_rows_are_true_classes():
    counts = confusion_matrix([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], 4)
    expected = np.array([[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(counts, expected)
    rng = np.random.default_rng(1)
    t, p = rng.integers(0, 6, 300), rng.integers(0, 6, 300)
    np.testing.assert_array_equal(confusion_matrix(t, p, 6), sk_confusion_matrix(t, p, labels=range(6)))
    with pytest.raises(ValueError, match="0..2"):
        confusion_matrix([0, 3], [0, 1], 3)


def _png_size(data: bytes) -> tuple[int, int]:
    # PNG: 8-byte signature, then the IHDR chunk whose data starts with width, height (big-endian).
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("normalize", [True, False])
def test_plot_confusion_matrix_writes_a_png(tmp_path, normalize):
    rng = np.random.default_rng(2)
    y_true = rng.choice(MER_CLASSES, 120)
    y_pred = np.where(rng.random(120) < 0.5, y_true, rng.choice(MER_CLASSES, 120))
    path = plot_confusion_matrix(y_true, y_pred, MER_CLASSES, tmp_path / "plots" / "cm.png",
                                 title="test1", normalize=normalize)
    assert path == tmp_path / "plots" / "cm.png"
    data = path.read_bytes()
    width, height = _png_size(data)
    assert 400 <= width <= 3000 and 400 <= height <= 3000
    assert 10_000 < len(data) < 2_000_000  # text and colours, not a blank canvas


def test_results_table_is_markdown_with_aligned_numbers():
    rows = [
        {"run": "audio", "wf1": 0.712345, "mse": 1.5, "epochs": 30},
        {"run": "audio+text", "wf1": 0.8, "epochs": 12, "note": "a|b"},
    ]
    text = results_table(rows, ["run", "wf1", "mse", "epochs", "note"])
    lines = text.splitlines()
    assert len(lines) == 4
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["run", "wf1", "mse", "epochs",
                                                                  "note"]
    assert lines[1].startswith("| ---")
    assert "0.7123" in lines[2] and "0.8000" in lines[3] and "1.5000" in lines[2]
    assert lines[2].split("|")[4].strip() == "30"  # ints stay ints
    assert lines[3].split("|")[3].strip() == ""  # missing mse is blank
    assert "a\\|b" in lines[3]                     # a pipe in a cell cannot break the table
    # number columns align right, the rule marks them with ':'
    assert lines[1].split("|")[2].strip().endswith(":")
    assert not lines[1].split("|")[1].strip().endswith(":")
    assert len({len(line) for line in lines}) == 1  # padded: every line equally long


def test_results_table_default_columns_in_first_seen_order():
    text = results_table([{"b": 1, "a": 2.0}, {"c": "x"}])
    assert [c.strip() for c in text.splitlines()[0].strip("|").split("|")] == ["b", "a", "c"]
