"""``mer COMMAND [ARGS ...]`` — the console script: one door to every ``python -m`` entry point.

``mer run track=noise`` is ``python -m mer.run track=noise``, ``mer validate FILE --track ...`` is
``python -m submissions.validate FILE --track ...``: the remaining arguments go to the command's
own ``main`` unchanged, so its ``--help`` and its errors are the same either way. ``mer --help``
lists the commands.
"""
from __future__ import annotations

import difflib
import importlib
import sys
from typing import NamedTuple, Sequence

from mer import __version__
from mer.core.errors import print_user_error, run_cli


class Command(NamedTuple):
    module: str
    hydra: bool        # reads its overrides from sys.argv (a Hydra main, or one handing over to one); else argv
    summary: str


COMMANDS: dict[str, Command] = {
    "run": Command("mer.run", True, "one track on one dataset, end to end (key=value overrides, -m sweeps)"),
    "extract": Command("mer.extract", True, "fill the feature caches of a dataset, nothing else"),
    "tune": Command("mer.tune", True, "an Optuna study over the CV protocol of mer run"),
    "report": Command("mer.report", False, "one ablation table (CSV + Markdown) and its plots from many runs"),
    "ui": Command("mer.ui", False, "the MLflow UI over mer's runs store, bound to 127.0.0.1"),
    "cache": Command("mer.cache.__main__", False, "list, verify, repair and garbage-collect the cache (features, face crops, transcripts, corrupted copies)"),
    "validate": Command("submissions.validate", False, "check a submission file against its track's schema"),
    "doctor": Command("mer.doctor", False, "is this machine ready for mer? one table: check, state, what to run"),
    "corrupt": Command("mer.corrupt", True, "a MER-NOISE-style noisy copy of a whole dataset"),
    "pretrain": Command("mer.pretrain", True, "MAE-DFER pretraining on a dataset's own clips"),
    "pll": Command("mer.pll.__main__", True, "the partial-label track: mer run track=pll (key=value overrides)"),
    "ov": Command("mer.ov.__main__", False, "score, validate and compare open-vocabulary (MER-OV) files"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: mer COMMAND [ARGS ...]   (mer {__version__}; `mer COMMAND --help` for a command's own options)",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += ["", "Each is also `python -m <module>`: mer run track=noise == python -m mer.run track=noise."]
    return "\n".join(lines)


def unknown_command(name: str) -> str:
    close = difflib.get_close_matches(name, list(COMMANDS), n=1)
    hint = f"did you mean `mer {close[0]}`? " if close else ""
    return f"unknown command {name!r}; {hint}`mer --help` lists them: {', '.join(COMMANDS)}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        print(f"mer {__version__}")
        return 0
    name, rest = args[0], args[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        print_user_error(unknown_command(name))
        return 2

    module = importlib.import_module(cmd.module)
    if cmd.hydra:
        # Hydra parses sys.argv itself; argv[0] as `python -m` sets it (the module's file).
        sys.argv = [str(module.__file__), *rest]
        run_cli(module.main)
        return 0
    result = run_cli(module.main, rest)
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
