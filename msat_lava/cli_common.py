"""What every ``msat-lava`` subcommand shares: exit codes, the set of errors that mean "bad input", argument
types with bounds, destination checks and the one-line error message.

Exit codes: 0 ok, 1 verification failed (Lava and the reference differ), 2 bad input or unsupported model.
:func:`msat_lava.cli.main` maps any :data:`bad_input_errors` exception escaping a handler to exit code 2 with a
one-line message (:func:`error_line`; the traceback only with ``--debug`` / ``MSAT_LAVA_DEBUG=1``); handlers
may catch them earlier to add context.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2
#: ``--seed``: 0 ≤ seed ≤ SEED_MAX (32-bit unsigned, as numpy's and the spike-confidence gate's seeds).
SEED_MAX = (1 << 32) - 1
#: ``--steps`` and the other step counts: 1 ≤ T ≤ MAX_STEPS.
MAX_STEPS = 1 << 16

__all__ = ["EXIT_OK", "EXIT_MISMATCH", "EXIT_BAD_INPUT", "BadInput", "bad_input_errors", "error_line", "debug_on",
           "seed_arg", "steps_arg", "positive_int", "check_destination", "SEED_MAX", "MAX_STEPS"]


class BadInput(Exception):
    """A user-supplied file or argument is unusable (exit code 2)."""


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """Typed errors that mean the user's input (model, file, data, option) is unusable."""
    from netx_export.errors import NetxExportError

    from msat_lava.data import DataError

    return (BadInput, DataError, NetxExportError)


def debug_on() -> bool:
    """Tracebacks wanted (``msat-lava --debug`` sets ``MSAT_LAVA_DEBUG=1``)."""
    return bool(os.environ.get("MSAT_LAVA_DEBUG"))


def error_line(command: str, exc: BaseException) -> str:
    """``msat-lava COMMAND: error: <message>`` on one line. The unsupported-op error keeps its list of nodes
    (one per line) after its headline; any other message is collapsed onto one line."""
    from netx_export.errors import UnsupportedOpError

    text = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, UnsupportedOpError):
        text = " ".join(text.split())
        if len(text) > 2000:
            text = text[:1997] + "..."
    return f"msat-lava {command}: error: {text}"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def seed_arg(text: str) -> int:
    """argparse type of ``--seed``: an integer in [0, 2^32)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"seed must be in [0, 2^32 - 1], got {text!r}")
    return value


def steps_arg(text: str) -> int:
    """argparse type of ``--steps``: an integer in [1, MAX_STEPS]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of time steps, got {text!r}") from None
    if not 1 <= value <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f"time steps must be in [1, {MAX_STEPS}], got {text!r}")
    return value


def check_destination(path: str | os.PathLike, option: str, *, overwrite: bool = True,
                      directory: bool = False, hint: str = "--overwrite") -> Path:
    """Check an output destination before any work (BadInput naming ``option`` and the path): its directory
    must exist and accept a new file, the path must not be a directory (or, with ``directory``, a file), and an
    existing file is refused unless ``overwrite``."""
    out = Path(path)
    if directory:
        if out.exists() and not out.is_dir():
            raise BadInput(f"{option} {str(out)!r} exists and is not a directory")
    else:
        if out.is_dir():
            raise BadInput(f"{option} {str(out)!r} is a directory")
        if out.exists() and not overwrite:
            raise BadInput(f"{option} {str(out)!r} exists; pass {hint} to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise BadInput(f"{option} {str(out)!r}: directory {str(parent)!r} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BadInput(f"{option} {str(out)!r}: cannot write in {str(parent)!r} ({exc.strerror or exc})") from None
    return out
