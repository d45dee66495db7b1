"""``python -m mer.pll [key=value ...]`` — one noisy partial-label run, printed as a table.

Examples::

    python -m mer.pll                                           # digits, q=0.3, eta=0.2, seed 0
    python -m mer.pll dataset=digits q=0.3 eta=0.2 seed=5 learner=pico refine=arnet
    python -m mer.pll dataset=mer2023 root=../shared/data/mer2023 q=0.1 eta=0.3 seeds=[0,1,2]
    python -m mer.pll learner=proden refine=none epochs=60

Keys: dataset (digits | mer2023), root (mer2023's folder), q, eta, seed or seeds=[..], learner
(cc | proden | pico: the base learner, also the one ARNet wraps; auto: ARNet wraps the one
chosen from the candidate sets, mer.pll.arnet.choose_base), refine (arnet | none),
compare (true: also train the other base learners), epochs, delta, correct_start (auto | epoch),
test_size, json (a file to write the results to).
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict

from mer.setup_env import configure_environment

DEFAULTS = {"dataset": "digits", "root": None, "q": 0.3, "eta": 0.2, "seed": 0, "seeds": None,
            "learner": "auto", "refine": "arnet", "compare": True, "epochs": 100, "delta": 0.01,
            "correct_start": "auto", "test_size": 0.3, "json": None, "cache_dir": None}


def parse_overrides(argv: list[str]) -> dict:
    cfg = dict(DEFAULTS)
    for arg in argv:
        if "=" not in arg:
            raise SystemExit(f"expected key=value, got {arg!r}; keys: {', '.join(DEFAULTS)}")
        key, value = arg.split("=", 1)
        if key not in DEFAULTS:
            raise SystemExit(f"unknown key {key!r}; keys: {', '.join(DEFAULTS)}")
        cfg[key] = _value(value)
    if cfg["learner"] not in ("cc", "proden", "pico", "auto"):
        raise SystemExit(f"learner={cfg['learner']}: choose cc, proden, pico or auto")
    if cfg["refine"] not in ("arnet", "none", None):
        raise SystemExit(f"refine={cfg['refine']}: choose arnet or none")
    for key in ("q", "eta"):
        if not isinstance(cfg[key], (int, float)) or not 0 <= cfg[key] <= 1:
            raise SystemExit(f"{key}={cfg[key]} must be a number in [0, 1]")
    return cfg


def _value(text: str):
    if text.startswith("[") and text.endswith("]"):
        return [_value(t.strip()) for t in text[1:-1].split(",") if t.strip()]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    configure_environment()
    cfg = parse_overrides(sys.argv[1:] if argv is None else argv)
    from mer.pll.datasets import load_feature_set
    from mer.pll.experiment import run_setting

    fs = load_feature_set(cfg["dataset"], cfg["root"], cfg["cache_dir"])
    methods = [] if cfg["learner"] == "auto" else [cfg["learner"]]
    if cfg["compare"]:
        methods = [m for m in ("cc", "proden", "pico") if m != cfg["learner"]] + methods
    if cfg["refine"] == "arnet":
        methods.append("arnet")
    if not methods:
        raise SystemExit("learner=auto chooses the learner ARNet wraps: use it with refine=arnet or compare=true")
    seeds = cfg["seeds"] if cfg["seeds"] is not None else [cfg["seed"]]
    arnet = {"delta": float(cfg["delta"]), "correct_start": cfg["correct_start"]}
    print(f"{cfg['dataset']}: {len(fs.y)} samples, {fs.X.shape[1]} features, {len(fs.classes)} "
          f"classes; q={cfg['q']} eta={cfg['eta']}; ARNet wraps {cfg['learner']}")
    results = []
    for seed in seeds:
        r = run_setting(fs, cfg["dataset"], float(cfg["q"]), float(cfg["eta"]), int(seed), methods,
                        epochs=int(cfg["epochs"]), test_size=float(cfg["test_size"]),
                        arnet_params=arnet, arnet_base=cfg["learner"])
        results.append(r)
        accs = "  ".join(f"{m} {r.accuracy[m]:.4f}" for m in methods)
        line = f"seed {seed}: test accuracy  {accs}"
        if "arnet" in methods:
            start = r.correction_epoch if r.correction_epoch is not None else "never"
            line += (f"\n         candidate sets: contains truth {r.truth_before:.3f} -> "
                     f"{r.truth_after:.3f}, avg size {r.size_before:.2f} -> {r.size_after:.2f}, "
                     f"correction from epoch {start}, {r.n_corrected} corrections, ARNet around {r.arnet_base}")
        print(line, flush=True)
    if cfg["json"]:
        with open(cfg["json"], "w", encoding="utf-8") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    return 0


if __name__ == "__main__":
    from mer.errors import run_cli

    run_cli(main)
