"""Media that link out of the dataset root are not followed: the sample fails as ``external_link``
(its name and the link's target in the message), the rest of the dataset goes on, and
``data.options.allow_external_links=true`` follows them."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mer.core.failures import MediaError
from feature_extractors.audio.io import media_path
from mer.core.failures import ExtractionFailure
from feature_extractors.base import build_extractor
from mer.data.recipe_io import external_target, refuse_external_links
from mer.data.recipes import prepare
from mer.core.samples import Sample

SR = 16000


def tone(path: Path, hz: float = 220.0) -> Path:
    t = np.arange(SR) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), SR)
    return path


@pytest.fixture()
def dataset(tmp_path) -> tuple[Path, Path]:
    """A generic dataset whose clip b is a symlink to a file outside its root."""
    root = tmp_path / "release"
    (root / "audio").mkdir(parents=True)
    outside = tone(tmp_path / "elsewhere.wav", 330.0)
    tone(root / "audio" / "a.wav")
    os.symlink(outside, root / "audio" / "b.wav")
    (root / "manifest.csv").write_text("name,split,discrete,audio\n"
                                       "a,train,happy,audio/a.wav\n"
                                       "b,train,sad,audio/b.wav\n")
    return root, outside


def test_link_out_of_the_root_fails_that_sample_only(dataset):
    root, outside = dataset
    manifest = prepare("generic", root, manifest="manifest.csv")
    a, b = manifest["a"], manifest["b"]
    assert a.audio_path == str(root / "audio" / "a.wav")
    assert b.audio_path is None
    with pytest.raises(MediaError) as err:
        media_path(b)
    assert err.value.reason == "external_link"
    message = err.value.message
    assert "sample b" in message and str(outside) in message and "allow_external_links=true" in message

    results = build_extractor("librosa_prosody").extract_batch([a, b])
    assert isinstance(results[0], np.ndarray) and np.isfinite(results[0]).all()
    assert isinstance(results[1], ExtractionFailure)
    assert (results[1].name, results[1].reason) == ("b", "external_link")
    assert str(outside) in results[1].message


def test_option_follows_links(dataset):
    root, outside = dataset
    manifest = prepare("generic", root, manifest="manifest.csv", allow_external_links=True)
    assert manifest["b"].audio_path == str(root / "audio" / "b.wav")
    results = build_extractor("librosa_prosody").extract_batch(list(manifest.samples))
    assert all(isinstance(r, np.ndarray) for r in results)


def test_linked_folder_and_inside_links(tmp_path):
    root = tmp_path / "release"
    (root / "video").mkdir(parents=True)
    (tmp_path / "disk2").mkdir()
    (tmp_path / "disk2" / "x.mp4").write_bytes(b"")
    os.symlink(tmp_path / "disk2", root / "train")                # a whole split folder elsewhere
    (root / "video" / "y.mp4").write_bytes(b"")
    os.symlink(root / "video" / "y.mp4", root / "video" / "z.mp4")   # a link that stays inside
    assert external_target(root / "train" / "x.mp4", root) == tmp_path / "disk2" / "x.mp4"
    assert external_target(root / "video" / "z.mp4", root) is None
    assert external_target(tmp_path / "disk2" / "x.mp4", root) is None   # named outside on purpose
    # a root given through a link of its own is not an escape
    os.symlink(root, tmp_path / "alias")
    assert external_target(tmp_path / "alias" / "video" / "z.mp4", tmp_path / "alias") is None

    samples = [Sample("x", "train", video_path=str(root / "train" / "x.mp4")),
               Sample("z", "train", video_path=str(root / "video" / "z.mp4"))]
    kept = refuse_external_links(samples, root)
    assert kept[0].video_path is None and "disk2" in kept[0].meta["refused_media"]["video_path"]
    assert kept[1] is samples[1]
    assert refuse_external_links(samples, root, allow=True) == samples


@pytest.mark.parametrize("allow", [False, True])
def test_run_config_sets_the_option_for_any_layout(dataset, tmp_path, allow):
    from hydra import compose, initialize_config_dir

    from mer.config_check import check_config
    from mer.datasets import load_manifest

    root, _ = dataset
    repo = Path(__file__).resolve().parents[1]
    with initialize_config_dir(str(repo / "mer" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["data=generic", f"data.root={root}", "tracking=none",
                                           f"paths.cache_dir={tmp_path / 'cache'}",
                                           f"data.options.allow_external_links={str(allow).lower()}"])
    check_config(cfg)
    manifest = load_manifest(cfg)
    assert (manifest["b"].audio_path is not None) is allow
    assert manifest["a"].audio_path is not None
