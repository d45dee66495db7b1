"""The README's "Extending mer" examples, run as they stand: a track, a feature extractor, a fusion
model and a dataset layout, each registered by its own block, then one run that uses all four."""
import csv
import re

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import REPO

PLUGINS = {"strategy": "focal", "extractor": "punctuation", "fusion": "mean", "recipe": "csv_transcripts"}


def _blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Extending mer", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture
def plugins():
    """Exec the four blocks (they register into the real registries); forget them afterwards."""
    from feature_extractors.base import EXTRACTORS
    from fusion.base import FUSION
    from mer.data.recipes import RECIPES
    from mer.tracks.base import STRATEGIES

    blocks = _blocks()
    assert len(blocks) == 4
    spaces = []
    for i, code in enumerate(blocks):
        ns = {"__name__": f"readme_example_{i}"}
        exec(compile(code, f"README.md:example{i}", "exec"), ns)
        spaces.append(ns)
    yield spaces
    for reg, name in ((STRATEGIES, "focal"), (EXTRACTORS, "punctuation"), (FUSION, "mean"),
                      (RECIPES, "csv_transcripts")):
        reg.unregister(name)


CUES = {"neutral": "it was fine", "angry": "STOP THAT NOW!", "happy": "what a lovely day!",
        "sad": "i miss them...", "worried": "will it be ok?", "surprise": "WHAT? REALLY?!"}


def _corpus(root):
    classes = list(CUES)
    with open(root / "labels.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "split", "text", "label"])
        for i in range(60):
            c = classes[i % 6]
            w.writerow([f"tr{i:03d}", "train", f"{CUES[c]} {'and so on ' * (i % 3)}", c])
        for i in range(12):
            w.writerow([f"te{i:03d}", "test", CUES[classes[i % 6]], ""])


def test_each_example_does_its_job(plugins, tmp_path):
    from feature_extractors.base import build_extractor
    from fusion.base import build_fusion
    from mer.data.recipes import prepare
    from mer.tracks.base import build_strategy

    _corpus(tmp_path)
    manifest = prepare("csv_transcripts", tmp_path)
    assert sorted(manifest.splits) == ["test", "train"] and len(manifest.split("train")) == 60
    assert manifest["te000"].discrete is None and manifest["tr001"].discrete == "angry"

    ext = build_extractor("punctuation")
    rows = ext.extract_batch([manifest["tr001"], manifest["tr000"]])
    assert rows[0].shape == (5,) and rows[0][1] > 0 and rows[1][1] == 0     # "!" share: angry vs neutral
    assert ext.identity()["extractor"] == "punctuation"

    model = build_fusion("mean", {"text": 5, "audio": 3}, 6, False, hidden_dim=8)
    x = {"text": torch.randn(4, 5), "audio": torch.randn(4, 3)}
    present = {"text": torch.ones(4, dtype=torch.bool), "audio": torch.tensor([True, False, True, False])}
    out = model(x, present)
    assert out["logits"].shape == (4, 6)
    x2 = {**x, "audio": torch.randn(4, 3) * 100}                   # absent rows ignore their audio
    assert torch.allclose(model(x2, present)["logits"][1], out["logits"][1])

    focal, plain = build_strategy("focal", gamma=2.0), build_strategy("supervised")
    logits = torch.tensor([[4.0, 0, 0, 0, 0, 0], [0, 0.5, 0, 0, 0, 0]])
    batch = {"y": torch.tensor([0, 1]), "v": torch.full((2,), float("nan"))}
    lf, lp = float(focal.loss({"logits": logits}, batch)), float(plain.loss({"logits": logits}, batch))
    assert 0 < lf < lp                                               # the easy row weighs less


@pytest.mark.slow
def test_a_run_with_all_four(plugins, tmp_path):
    from mer.pipeline import run

    _corpus(tmp_path)
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={tmp_path / 'cache'}", "tracking=none",
            "progress=false", "data.name=csv_example", "data.layout=csv_transcripts", f"data.root={tmp_path}",
            "data.submissions=null", "features/audio=none", "features/visual=none",
            "features.text.name=punctuation", "~features.text.options", "+features.text.options.language=english",
            "fusion.name=mean", "~fusion.params", "+fusion.params.hidden_dim=16", "track.strategy=focal",
            "+track.strategy_options.gamma=2.0", "train.n_folds=3", "train.epochs=30", "train.seeds=[0]",
            "ablate_modalities=false"])
    result = run(cfg, out_dir=tmp_path / "out")
    assert result.metrics["cv_wf1"] > 0.5          # the cues separate the six classes
    predicted = (result.out_dir / "predictions" / "test.csv").read_text().splitlines()
    assert len(predicted) == 13 and predicted[0].startswith("name,discrete")
    assert np.isfinite(result.metrics["cv_acc"])
