"""Credentials out of what mer prints and logs: ``postgresql://user:secret@host/db`` is shown as
``postgresql://user:***@host/db``.

Every line mer prints, logs or records (messages, MLflow params and tags, ``study.json``) that may
hold a URL goes through :func:`mask_secrets`: a password in a URL's user part and the values of
query parameters that carry secrets (``password``, ``token``, ``api_key``...) are replaced by
``***``. The URL itself still reaches the library that connects with it. The command-line entry
points run under :func:`masked_output`, so what libraries print (Hydra echoes a failed job's
overrides) is masked too.
"""
from __future__ import annotations

import contextlib
import re
import sys
import traceback
from typing import Any, Iterator

MASK = "***"

# scheme://, then the rest of the token up to its last "@": a password may hold raw "/" or "@"
_AUTHORITY = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<authority>[^\s'\"`<>]*@)")
_SECRET_QUERY = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd|pass|secret|token|access_token|auth_token|"
                           r"api_key|apikey|key|sig|signature|client_secret)=)(?P<secret>[^&#\s;'\"`<>)\]}]+)",
                           re.IGNORECASE)


def mask_secrets(text: Any) -> Any:
    """``text`` with the credentials of every URL in it masked; anything not a string is returned
    as it is (so it can be applied to any logged value)."""
    if not isinstance(text, str) or ("://" not in text and "=" not in text):
        return text
    text = _AUTHORITY.sub(_mask_authority, text)
    return _SECRET_QUERY.sub(lambda m: m["head"] + MASK, text)


def _mask_authority(match: re.Match) -> str:
    userinfo = match["authority"][:-1]             # up to the last "@" of the token
    if ":" not in userinfo:
        return match[0]                            # a user name alone is no secret
    user = userinfo.split(":", 1)[0]
    return f"{match['scheme']}{user}:{MASK}@"


class _MaskingStream:
    """A text stream that masks secrets in what is written to it (``sys.stdout``/``sys.stderr``
    under :func:`masked_output`); everything else is the wrapped stream's."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(mask_secrets(text))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def masked_output() -> Iterator[None]:
    """Mask secrets in everything this process prints or logs to stdout/stderr meanwhile (what
    libraries echo too, e.g. Hydra's "Error executing job with overrides: [...]"). Loggers made
    inside the block write through it; child processes write to the file descriptors unmasked."""
    if sys.excepthook is sys.__excepthook__:         # the traceback of an error that ends the process
        sys.excepthook = _masking_excepthook
    if isinstance(sys.stdout, _MaskingStream) or isinstance(sys.stderr, _MaskingStream):
        yield
        return
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _MaskingStream(out), _MaskingStream(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


def _masking_excepthook(exc_type, exc, tb) -> None:
    sys.stderr.write(mask_secrets("".join(traceback.format_exception(exc_type, exc, tb))))
