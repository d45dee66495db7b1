"""``python -m mer.pll [key=value ...]`` — the partial-label track: exactly
``python -m mer.run track=pll [key=value ...]`` (same config, defaults, folds, outputs and MLflow
run; see ``mer/conf/track/pll.yaml``), e.g.::

    python -m mer.pll track.learner=pico track.refine=arnet track.q=0.3 track.eta=0.3
    python -m mer.pll data=mer2023 data.root=../shared/data/mer2023 features/audio=none features/visual=none

The learners' benchmark on scikit-learn's digits and MER2023 text features (a stratified 70/30
split per setting) is ``python -m bench.pll``.
"""
from __future__ import annotations

import sys


def main() -> None:
    """``mer.run``'s Hydra main with ``track=pll`` put first (a later ``track=...`` still wins)."""
    from mer import run  # deferred: loads hydra only when used

    sys.argv = [run.__file__, "track=pll", *sys.argv[1:]]
    run.main()


if __name__ == "__main__":
    from mer.core.errors import run_cli

    run_cli(main)
