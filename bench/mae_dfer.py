"""The MAE-DFER benchmark under its older name: ``python -m bench.mae_dfer`` is
``python -m bench.maedfer`` (see :mod:`bench.maedfer`)."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.maedfer import main  # noqa: E402

if __name__ == "__main__":
    main()
