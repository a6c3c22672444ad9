"""User-facing errors: one clear line that says what to do, never a traceback wall."""

from __future__ import annotations

import sys
from typing import NoReturn


class OodbenchError(RuntimeError):
    """An error caused by the user's input or environment (missing data, wrong checkpoint, bad option).

    The CLI prints ``str(err)`` as a single line and exits non-zero; the message must say what to do.
    """


class DataNotAvailable(OodbenchError):
    """A data set or archive is not present where oodbench looks for it."""


class CheckpointError(OodbenchError):
    """A checkpoint is missing, corrupt, or does not fit the requested architecture."""


def fail(message: str) -> NoReturn:
    """The one error format of every command: ``oodbench: error: <message>`` on stderr, exit status 2."""
    print(f"oodbench: error: {message}", file=sys.stderr)
    raise SystemExit(2)
