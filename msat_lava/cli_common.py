"""What every ``msat-lava`` subcommand shares: exit codes, the set of errors that mean "bad input", argument
types with bounds, destination checks and the one-line error message.

Exit codes: 0 ok, 1 verification failed (Lava and the reference differ), 2 bad input or unsupported model.
:func:`msat_lava.cli.main` maps any :data:`bad_input_errors` exception escaping a handler to exit code 2 with a
one-line message (:func:`error_line`; the traceback only with ``--debug`` / ``MSAT_LAVA_DEBUG=1``); handlers
may catch them earlier to add context.

Options every subcommand takes (:func:`add_common_options`): ``--quiet`` (no progress bars, no non-essential
stdout; each command's help says what it drops) and ``--debug`` (tracebacks, as ``msat-lava --debug CMD``).
``--config FILE.toml`` (:func:`add_config_option`, applied by :func:`apply_config` before argparse parses the
command line): a TOML table whose keys are the command's long flags without ``--`` (``calib-samples`` or
``calib_samples``), each value checked by the flag's own ``type`` and ``choices``; flags on the command line win.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Sequence

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2
#: ``--seed``: 0 ≤ seed ≤ SEED_MAX (32-bit unsigned, as numpy's and the spike-confidence gate's seeds).
SEED_MAX = (1 << 32) - 1
#: ``--steps`` and the other step counts: 1 ≤ T ≤ MAX_STEPS.
MAX_STEPS = 1 << 16
#: ``--config``: a TOML file larger than this is refused unread.
CONFIG_MAX_BYTES = 1 << 20

__all__ = ["EXIT_OK", "EXIT_MISMATCH", "EXIT_BAD_INPUT", "BadInput", "bad_input_errors", "error_line", "debug_on",
           "seed_arg", "steps_arg", "positive_int", "check_destination", "SEED_MAX", "MAX_STEPS",
           "CONFIG_MAX_BYTES", "add_common_options", "add_config_option", "read_config", "apply_config", "Parser",
           "unrecognized_message"]


class BadInput(Exception):
    """A user-supplied file or argument is unusable (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """The parser of ``msat-lava`` and of every subcommand (``add_subparsers`` makes its subparsers of the same
    class): no prefix matching (``allow_abbrev=False``: ``--calib f.npz`` never means ``--calib-samples``), and a
    bad command line is ONE line on stderr, ``msat-lava CMD: error: argument --steps: ...`` naming the argument,
    exit code 2 (``SystemExit(2)``, as argparse), without the usage block (``msat-lava CMD --help`` prints it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        text = " ".join(str(message).split())
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


def unrecognized_message(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """``unrecognized arguments: ...`` for ``parser``, naming the options an unknown ``--opt`` may have meant
    (options are never abbreviated)."""
    known = sorted(s for s in parser._option_string_actions if s.startswith("--"))
    hints = []
    for word in extras:
        if not word.startswith("--"):
            continue
        name = word.split("=", 1)[0]
        longer = [s for s in known if s.startswith(name)]
        close = longer or difflib.get_close_matches(name, known, n=2)
        if close:
            hints.append(f"{name}: did you mean {' or '.join(close[:3])}?")
    text = f"unrecognized arguments: {' '.join(extras)}"
    if hints:
        text += " (options are not abbreviated; " + "; ".join(hints) + ")"
    return text


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


# ----------------------------------------------------------------------------------------------------------
# options of every subcommand
# ----------------------------------------------------------------------------------------------------------
def add_common_options(p: argparse.ArgumentParser, *, quiet: str) -> None:
    """``--quiet`` and ``--debug`` on subcommand ``p``; ``quiet`` says what --quiet drops for it.

    ``--debug`` has no default (argparse.SUPPRESS) so that it never overwrites ``msat-lava --debug CMD``: read it
    as ``getattr(args, "debug", False)``."""
    p.add_argument("--quiet", action="store_true",
                   help=f"no progress bars and no non-essential output; here: {quiet}")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="print the traceback of an error (same as msat-lava --debug COMMAND or MSAT_LAVA_DEBUG=1)")


def add_config_option(p: argparse.ArgumentParser) -> None:
    """``--config FILE.toml`` on subcommand ``p`` (read by :func:`apply_config`)."""
    p.add_argument("--config", metavar="FILE.toml", default=None,
                   help="TOML file of this command's long flags (key = flag without --, dashes or underscores: "
                        "calib-samples = 64, burst-scaled = true, param = [\"beta=3\"]); values are checked like "
                        "the flag's; flags on the command line override it; unknown keys are refused "
                        f"(at most {CONFIG_MAX_BYTES >> 20} MiB)")


def read_config(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """(table, sha256 hex of the bytes) of a TOML config file: bounded (:data:`CONFIG_MAX_BYTES`), UTF-8, parsed
    by :mod:`tomllib` (data only, nothing executed). BadInput naming the file otherwise."""
    import tomllib

    where = f"--config {str(path)!r}"
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # no FIFO, device or directory
            raise BadInput(f"{where}: not a regular file")
        with open(path, "rb") as f:
            raw = f.read(CONFIG_MAX_BYTES + 1)
    except OSError as exc:
        raise BadInput(f"{where}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > CONFIG_MAX_BYTES:
        raise BadInput(f"{where}: larger than {CONFIG_MAX_BYTES} bytes (1 MiB), refused unread")
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInput(f"{where}: not TOML (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{where}: not TOML ({exc})") from None
    return table, hashlib.sha256(raw).hexdigest()


def _toml_kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), f"a {type(value).__name__}")


def _config_scalar(action: argparse.Action, item: Any, bad) -> Any:
    """One value of ``action`` from a TOML scalar, checked as the flag's text would be."""
    if isinstance(item, bool) or not isinstance(item, (str, int, float)):
        bad(f"expected {'a string' if action.type is None else 'a number or a string'}, got {_toml_kind(item)}")
    if action.type is None:
        if not isinstance(item, str):
            bad(f"expected a string, got {_toml_kind(item)} {item!r}")
        value: Any = item
    else:
        try:
            value = action.type(str(item))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            bad(str(exc) or f"invalid value {item!r}")
        if isinstance(item, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
            bad(f"expected a number, got the string {item!r}")
    if action.choices is not None and value not in action.choices:
        bad(f"{value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def _config_value(action: argparse.Action, value: Any, bad) -> Any:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            bad(f"expected true or false, got {_toml_kind(value)} {value!r}")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if not isinstance(action, (argparse._StoreAction, argparse._AppendAction)):
        bad("cannot be set in a config file")
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    if isinstance(action, argparse._AppendAction) or many:
        if not isinstance(value, list):
            bad(f"expected an array (the flag may be repeated), got {_toml_kind(value)} {value!r}")
        if action.nargs == "+" and not value:
            bad("expected a non-empty array")
        if isinstance(action, argparse._AppendAction) and many:
            bad("cannot be set in a config file")
        return [_config_scalar(action, item, bad) for item in value]
    if isinstance(value, list):
        bad(f"expected one value, got an array {value!r}")
    return _config_scalar(action, value, bad)


def _given_on_command_line(sub: argparse.ArgumentParser, tokens: Sequence[str]) -> dict[str, Any]:
    """dest → value of the options that ``tokens`` gives (defaults and required checks suspended)."""
    saved = [(a, a.default, a.required) for a in sub._actions]
    groups = [(g, g.required) for g in sub._mutually_exclusive_groups]
    defaults, sub._defaults = sub._defaults, {}
    try:
        for a, _, _ in saved:
            a.default, a.required = argparse.SUPPRESS, False
        for g, _ in groups:
            g.required = False
        namespace, _ = sub.parse_known_args(list(tokens))
    finally:
        sub._defaults = defaults
        for a, default, required in saved:
            a.default, a.required = default, required
        for g, required in groups:
            g.required = required
    return vars(namespace)


def apply_config(sub: argparse.ArgumentParser, tokens: Sequence[str]) -> dict[str, str] | None:
    """Apply ``--config FILE.toml`` of the subcommand's ``tokens`` (if any) to parser ``sub``; returns
    ``{"path", "sha256"}`` or None.

    Each key must name a long option of ``sub`` (``calib-samples`` or ``calib_samples``); its value is checked
    by that option's ``type`` and ``choices`` (booleans for on/off flags, arrays for repeatable ones) and becomes
    the option's default, so the command line overrides it (a repeatable flag given there replaces the file's
    list; one member of a mutually exclusive group given there drops the file's). Options made required or
    group-required by the parser are satisfied by the file. BadInput naming the file and the key otherwise."""
    given = _given_on_command_line(sub, tokens)
    path = given.get("config")
    if path is None:
        return None
    table, digest = read_config(path)
    where = f"--config {str(path)!r}"
    by_key: dict[str, argparse.Action] = {}
    positionals = {}
    for a in sub._actions:
        if not a.option_strings:
            positionals[a.dest] = a
            continue
        if a.dest in ("help", "config"):
            continue
        for s in a.option_strings:
            if s.startswith("--"):
                by_key[s[2:]] = a
                by_key[s[2:].replace("-", "_")] = a
    values: dict[str, Any] = {}
    key_of: dict[str, str] = {}
    for key, raw in table.items():
        action = by_key.get(key)
        if action is None:
            if key in positionals:
                raise BadInput(f"{where}: key {key!r}: {positionals[key].metavar or key} is positional, give it on "
                               "the command line")
            close = difflib.get_close_matches(key, sorted(by_key), n=1)
            raise BadInput(f"{where}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        if action.dest in key_of:
            raise BadInput(f"{where}: key {key!r}: the same option as key {key_of[action.dest]!r}")

        def bad(message: str, key: str = key) -> None:
            raise BadInput(f"{where}: key {key!r}: {message}")

        values[action.dest] = _config_value(action, raw, bad)
        key_of[action.dest] = key
    for g in sub._mutually_exclusive_groups:
        members = [a.dest for a in g._group_actions]
        in_file = [d for d in members if d in values]
        if any(d in given for d in members):
            for d in in_file:  # the command line chose this group's member
                del values[d]
        elif len(in_file) > 1:
            raise BadInput(f"{where}: keys {key_of[in_file[0]]!r} and {key_of[in_file[1]]!r} exclude each other")
        elif in_file:
            g.required = False
    for dest in list(values):
        if dest in given:
            del values[dest]  # the command line wins
    for a in sub._actions:
        if a.dest in values:
            a.required = False
    sub.set_defaults(**values)
    return {"path": str(path), "sha256": digest}
