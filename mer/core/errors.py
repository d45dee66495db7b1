"""Errors that come from the user's data, options or files, and the door every entry point shares.

A :class:`UserError` is shown as one or two lines (what, where, what to run) and the process exits
non-zero, with no traceback (``MER_DEBUG=1`` or ``HYDRA_FULL_ERROR=1`` shows it). Raise it, or
``SystemExit(message)``, for anything a user can fix; let programming errors raise as they are.

Every ``python -m ...`` entry point ends with ``run_cli(main)``: it turns the errors a user can fix
(:func:`user_message`) into their line on stderr and exit status 1, and lets every other exception
through with its traceback. Hydra mains are covered too: ``run_cli`` asks Hydra to hand exceptions
over (instead of printing a trimmed traceback itself) and prints them the same way.
"""
from __future__ import annotations

import difflib
import functools
import os
import sys
import traceback
from typing import Any, Callable, TypeVar

from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from mer.core.redact import mask_secrets, masked_output

F = TypeVar("F", bound=Callable[..., Any])

DEBUG_ENV = ("MER_DEBUG", "HYDRA_FULL_ERROR")
"""Either set to 1: every error shows its full traceback."""

_OURS = "MER_CLI_SET_HYDRA_FULL_ERROR"
"""Set beside HYDRA_FULL_ERROR when run_cli set it (child processes inherit both)."""


class UserError(SystemExit):
    """One clear message for a problem the user can fix; ``code`` is the message (exit status 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def debug_requested() -> bool:
    """``MER_DEBUG=1``, or ``HYDRA_FULL_ERROR=1`` set by the user (not by :func:`run_cli`)."""
    if os.environ.get("MER_DEBUG", "") not in ("", "0"):
        return True
    return os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0") and not os.environ.get(_OURS)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _omegaconf_message(err: BaseException) -> str | None:
    """A config error (mistyped or missing key, bad interpolation, wrong type) as ``key: what``."""
    if not isinstance(err, OmegaConfBaseException):
        return None

    key = getattr(err, "full_key", None) or getattr(err, "key", None)
    what = _first_line(getattr(err, "msg", None) or str(err))
    if isinstance(err, MissingMandatoryValue):
        return f"{key}: no value is set (it is ???); add {key}=..." if key else what
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and key:
        parent = getattr(err, "parent_node", None)
        return f"{key}: no such option{_did_you_mean(str(key), parent)}"
    return f"{key}: {what}" if key and str(key) not in what else what


def _did_you_mean(full_key: str, parent: Any) -> str:
    try:
        known = [str(k) for k in parent.keys()] if parent is not None else []
    except Exception:  # noqa: BLE001 - a hint only
        known = []
    leaf = full_key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, known, n=1)
    prefix = full_key.rsplit(".", 1)[0] + "." if "." in full_key else ""
    hint = f"; did you mean {prefix}{close[0]}?" if close else (f"; options: {', '.join(sorted(known))}"
                                                              if known and len(known) <= 20 else "")
    return hint


def _hydra_message(err: BaseException) -> str | None:
    """Hydra's composition errors (``train.lrr=3`` on a key that does not exist, an unknown config
    group option, an override it cannot parse) as one line."""
    try:
        from hydra.errors import HydraException  # deferred: loads hydra only when used
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(err, HydraException):
        return None
    cause = err.__cause__
    text = str(err)
    if cause is not None:
        inner = _omegaconf_message(cause)
        if inner:
            plus = ""
            if text.startswith("Could not override") and "+" in text:
                plus = " (to add a new key, prefix it with +)"
            return inner + plus
    options = getattr(err, "options", None)
    if options:      # MissingConfigException: an unknown config group option (features/text=foo)

        missing = str(getattr(err, "missing_cfg_file", "") or "").rsplit("/", 1)[-1]
        close = difflib.get_close_matches(missing, list(options), n=1) if missing else []
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"{_first_line(text)}; options: {', '.join(options)}{hint}"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    # "In 'config': Could not find 'features/text/foo'" + "Available options in 'features/text': ..."
    keep = [ln for ln in lines if not ln.startswith(("Set the environment", "full_key", "object_type"))]
    return "; ".join(keep[:2]) if keep else None


USER_EXCEPTIONS: tuple[str, ...] = (
    "mer.core.registry.UnknownNameError",
    "submissions.writers.SubmissionError",
)
"""Exception classes (by import path, so this module imports nothing heavy) that always carry a
message for the user."""


def _is_named(err: BaseException, paths: tuple[str, ...]) -> bool:
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(err).__mro__}
    return any(p in names for p in paths)


def user_message(err: BaseException) -> str | None:
    """The line to show for an error the user can fix, or ``None`` for a programming error."""
    if isinstance(err, UserError):
        return err.message
    if isinstance(err, SystemExit):
        return err.code if isinstance(err.code, str) else None
    if _is_named(err, USER_EXCEPTIONS):
        return str(err)
    for convert in (_omegaconf_message, _hydra_message):
        msg = convert(err)
        if msg:
            return msg
    if isinstance(err, FileNotFoundError):
        if err.filename and err.strerror:
            return f"{err.filename}: {err.strerror}"
        return str(err)
    return None


def print_user_error(message: str) -> None:
    text = mask_secrets(str(message).strip())       # a URL's password is never echoed
    sys.stderr.write(("error: " if not text.lower().startswith("error") else "") + text + "\n")
    sys.stderr.flush()


def user_errors(fn: F) -> F:
    """Decorate a Hydra task function: a user error it raises leaves as a :class:`UserError`, which
    Hydra passes through untouched (it reports any other exception with its own lines)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - sorted into user errors and the rest
            msg = user_message(err)
            if msg is None or debug_requested():
                raise
            raise UserError(msg) from err
    return wrapper  # type: ignore[return-value]


def run_cli(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an entry point's ``main``: user errors exit 1 with their line, the rest raise as they are.

    ``main`` returning an int is used as the exit status (argparse mains); a Hydra main's return
    value is ignored (Hydra returns nothing to its caller)."""
    debug = debug_requested()
    ours = not debug and not os.environ.get("HYDRA_FULL_ERROR")
    if ours:
        os.environ["HYDRA_FULL_ERROR"] = "1"      # Hydra re-raises; we print (see the module doc)
        os.environ[_OURS] = "1"

    try:
        with masked_output():                     # no URL's password on the screen, whoever prints it
            result = main(*args, **kwargs)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - sorted into user errors and the rest
        msg = user_message(err)
        if msg is None:
            raise
        if debug:
            if not isinstance(err, SystemExit):
                raise
            traceback.print_exc()
        print_user_error(msg)
        raise SystemExit(1) from None
    finally:
        if ours:
            os.environ.pop("HYDRA_FULL_ERROR", None)
            os.environ.pop(_OURS, None)
    if isinstance(result, int) and not isinstance(result, bool):
        raise SystemExit(result)
    return result
