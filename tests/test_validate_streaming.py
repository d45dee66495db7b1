"""The validator reads a submission as a stream with a budget set by the expected size, so a wrong
file of tens of MB (a feature dump, a concatenation of runs) is refused at once in bounded memory."""
from __future__ import annotations

import os
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from submissions.validate import main, read_limits, validate_submission
from submissions.schema import get_schema

NAMES = [f"sample_{i:08d}" for i in range(411)]
ROW = "sample_00000001,happy,0.5\n"


def names_file(tmp_path: Path) -> Path:
    path = tmp_path / "names.csv"
    path.write_text("name\n" + "".join(f"{n}\n" for n in NAMES))
    return path


def big_file(path: Path, mb: int) -> Path:
    chunk = ROW * (1 << 15)                          # ~0.85 MB of plausible rows
    with path.open("w") as handle:
        handle.write("name,discrete,valence\n")
        for _ in range(int(mb * 1e6 / len(chunk)) + 1):
            handle.write(chunk)
    return path


def peak_while(fn):
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak, time.perf_counter() - start


def test_oversized_file_is_refused_fast_in_bounded_memory(tmp_path, capsys):
    path = big_file(tmp_path / "sub.csv", mb=40)
    size = path.stat().st_size
    status, peak, seconds = peak_while(
        lambda: main([str(path), "--track", "mer2023_multi", "--names", str(names_file(tmp_path))]))
    out = capsys.readouterr().out
    assert status == 1
    assert "too_large" in out and "411 names are expected" in out and "right file" in out
    assert peak < size / 20, (peak, size)
    assert seconds < 5


def test_too_many_rows_within_the_byte_budget_stop_reading(tmp_path):
    # short rows: under the byte budget, over the row budget -> the stream stops at the budget
    limits = read_limits(NAMES, get_schema("mer2023_multi"))
    peaks = []
    for times in (2, 60):
        path = tmp_path / f"sub{times}.csv"
        path.write_text("name,discrete,valence\n" + "a,sad,0\n" * (times * limits.max_rows))
        assert path.stat().st_size < limits.max_bytes
        problems, peak, _ = peak_while(lambda: validate_submission(path, "mer2023_multi", NAMES))
        assert [p.kind for p in problems] == ["too_large"]
        assert f"more than {limits.max_rows} data rows" in problems[0].message
        peaks.append(peak)
    assert peaks[1] < 1.5 * peaks[0], peaks          # 30 times the rows, the same memory


def test_near_miss_is_still_read_whole(tmp_path):
    # a few rows too many is an ordinary mistake: every problem in it is listed, not too_large
    path = tmp_path / "sub.csv"
    path.write_text("name,discrete,valence\n" + "".join(f"{n},sad,0\n" for n in NAMES)
                    + "".join(f"extra_{i},sad,0\n" for i in range(50)))
    kinds = {p.kind for p in validate_submission(path, "mer2023_multi", NAMES)}
    assert kinds == {"unknown_names", "row_count"}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")
def test_endless_stream_is_cut_at_the_byte_budget(tmp_path):
    # a pipe has no size to check up front; one endless line must not be read whole either
    fifo = tmp_path / "sub.csv"
    os.mkfifo(fifo)

    def feed() -> None:
        try:
            with fifo.open("w") as handle:
                handle.write("name,discrete,valence\n")
                for _ in range(400):
                    handle.write("x" * 100_000)          # 40 MB, no newline
        except (BrokenPipeError, OSError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    problems, peak, _ = peak_while(lambda: validate_submission(fifo, "mer2023_multi", NAMES))
    writer.join(timeout=10)
    assert [p.kind for p in problems] == ["too_large"]
    assert peak < 10e6
