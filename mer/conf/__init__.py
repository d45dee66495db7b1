"""mer's Hydra configs (YAML only). A package so that Hydra finds them as ``pkg://mer/conf`` when an
entry point is called by import (the ``mer`` console script) rather than as ``python -m``."""
