"""What every ``msat-lava`` subcommand shares: exit codes and the set of errors that mean "bad input".

Exit codes: 0 ok, 1 verification failed (Lava and the reference differ), 2 bad input or unsupported model.
:func:`msat_lava.cli.main` maps any :data:`bad_input_errors` exception escaping a handler to exit code 2 with a
one-line message; handlers may catch them earlier to add context.
"""
from __future__ import annotations

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2

__all__ = ["EXIT_OK", "EXIT_MISMATCH", "EXIT_BAD_INPUT", "BadInput", "bad_input_errors"]


class BadInput(Exception):
    """A user-supplied file or argument is unusable (exit code 2)."""


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """Typed errors that mean the user's input (model, file, data, option) is unusable."""
    from netx_export.errors import NetxExportError

    from msat_lava.data import DataError

    return (BadInput, DataError, NetxExportError)
