"""Command line entry point: ``msat-lava [--version] COMMAND ...``.

Adding a subcommand: write ``add_<name>_parser(subparsers)`` that creates the parser
with ``subparsers.add_parser(...)`` and sets ``func=<handler>`` via ``set_defaults``,
then list it in :data:`SUBCOMMANDS`. A handler takes the parsed ``argparse.Namespace``
and returns an exit code (``None`` means 0). Handlers import their heavy modules
(torch, lava) lazily so that ``--help`` and ``--version`` stay fast.

Every parser is a :class:`msat_lava.cli_common.Parser`: no option abbreviations (``allow_abbrev=False``), and a
bad command line (unknown option, bad value, missing argument) is one line naming the argument, exit code 2.
Handlers and library code raise exceptions instead of printing and exiting;
:func:`main` turns a bad-input error (:func:`msat_lava.cli_common.bad_input_errors`, or an ``OSError`` about a
file) into a one-line message and exit code 2, and any other exception into a one-line message on stderr and exit
code 1. ``msat-lava --debug COMMAND``, ``msat-lava COMMAND --debug`` (or ``MSAT_LAVA_DEBUG=1``) also prints the
traceback; warnings are shown as one line each, without torch's tracebacks.

Every subcommand takes ``--quiet`` and ``--debug`` (:func:`msat_lava.cli_common.add_common_options`, called by each add_*_parser
with what its --quiet drops; :func:`build_parser` adds them to a subcommand that did not); ``convert`` and ``eval`` take ``--config FILE.toml``
(:func:`msat_lava.cli_common.apply_config`, applied here before the command line is parsed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from msat_lava import __version__
from msat_lava.cli_common import (EXIT_BAD_INPUT, BadInput, Parser, add_common_options, apply_config,
                                  bad_input_errors, debug_on, error_line, unrecognized_message)
from msat_lava.cli_convert import add_convert_parser, add_info_parser
from msat_lava.cli_deploy import add_deploy_parser
from msat_lava.cli_eval import add_eval_parser
from msat_lava.cli_nir import add_export_nir_parser
from msat_lava.cli_run import add_demo_parser, add_run_parser, add_verify_parser

__all__ = ["SUBCOMMANDS", "add_doctor_parser", "build_parser", "main"]


def _cmd_doctor(args: argparse.Namespace) -> int:
    from msat_lava import doctor

    report = doctor.run_doctor()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(doctor.format_report(report))
    if not report.ok:
        print(f"msat-lava doctor: FAILED: {report.reason}", file=sys.stderr)
        return 1
    return 0


def add_doctor_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="check the environment and run a tiny Lava network",
        description=(
            "Print Python/torch/numpy/lava-nc/lava-dl versions, whether the Python 3.11 Lava fix is "
            "active and whether Loihi 2 (lava-loihi) is available, then run a tiny Dense+LIF network "
            "in Lava's CPU simulator (fixed_pt) against an integer reference. Exit 0 if it matches, 1 otherwise."
        ),
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_common_options(p, quiet="nothing, the report is the result (there is no progress output)")
    p.set_defaults(func=_cmd_doctor)


#: ``--quiet`` help of a subcommand whose add_*_parser did not call add_common_options (it says what it drops).
QUIET_FALLBACK = "nothing specific to this command"

#: Parser builders, in the order their subcommands appear in ``--help``.
SUBCOMMANDS = [
    add_doctor_parser,
    add_convert_parser,
    add_info_parser,
    add_run_parser,
    add_verify_parser,
    add_demo_parser,
    add_eval_parser,
    add_deploy_parser,
    add_export_nir_parser,
    __import__("msat_lava.cli_netx", fromlist=["add_netx_run_parser"]).add_netx_run_parser,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``msat-lava`` parser: a :class:`msat_lava.cli_common.Parser` (no abbreviations, one-line errors), and
    so is every subcommand's (argparse gives subparsers their parent's class)."""
    parser = Parser(
        prog="msat-lava",
        description="Convert PyTorch ANNs to MSAT spiking networks and run them in Intel Lava.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error (same as MSAT_LAVA_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    for sub in subparsers.choices.values():  # no prefix matching: `--calib f.npz` must not mean --calib-samples
        sub.allow_abbrev = False
        if not {"--quiet", "--debug"} <= set(sub._option_string_actions):  # every subcommand takes them
            add_common_options(sub, quiet=QUIET_FALLBACK)
    return parser


def _subcommand(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[str, argparse.ArgumentParser, int] | None:
    """(name, parser, index in argv) of the subcommand: the first word that names one (the top-level options
    take no value)."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for i, word in enumerate(argv):
        if word == "--":
            return None
        if word in subparsers.choices:
            return word, subparsers.choices[word], i
        if not word.startswith("-"):
            return None
    return None


def _apply_config(parser: argparse.ArgumentParser, argv: list[str]) -> dict | None:
    found = _subcommand(parser, argv)
    if found is None or "--config" not in found[1]._option_string_actions:
        return None
    _, sub, i = found
    return apply_config(sub, argv[i + 1:])


#: exit code when stdout's reader closed the pipe (128 + SIGPIPE, what a shell reports for a tool killed by it)
EXIT_BROKEN_PIPE = 141


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so that the interpreter's final flush of stdout does not fail a second time."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # --config FILE.toml: its values become the subcommand's defaults, before the command line is parsed
        config = _apply_config(parser, argv)
    except BadInput as exc:
        if debug_on() or "--debug" in argv:
            traceback.print_exc()
        print(error_line(_subcommand(parser, argv)[0], exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    args, extras = parser.parse_known_args(argv)
    found = _subcommand(parser, argv)
    if extras:  # named by the subcommand, with the options an abbreviation may have meant
        where = found[1] if found is not None else parser
        where.error(unrecognized_message(where, extras))
    handler = getattr(args, "func", None)
    if handler is None:
        names = ", ".join(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)
        print(f"msat-lava: error: no command given (one of: {names}; see msat-lava --help)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if config is not None:
        args.config = config  # {"path", "sha256"}: recorded by eval's manifest (arguments) and convert's summary
    if getattr(args, "debug", False):
        os.environ["MSAT_LAVA_DEBUG"] = "1"
    import warnings

    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())[:500]
        print(f"msat-lava {args.command}: warning: {text}", file=sys.stderr)

    previous = warnings.showwarning
    if not debug_on():
        warnings.showwarning = one_line_warning
    try:
        code = handler(args)
    except KeyboardInterrupt:
        print(f"msat-lava {args.command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # a handler must return its code; a stray exit(0) is no success
        if debug_on():
            traceback.print_exc()
        code = exc.code if isinstance(exc.code, int) else 1
        if code == 0:
            print(f"msat-lava {args.command}: error: exited early without finishing (SystemExit(0))",
                  file=sys.stderr)
            return 1
        return code
    except BrokenPipeError:  # the reader of stdout went away (`msat-lava ... --json | head`): stop quietly
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except bad_input_errors() + (OSError,) as exc:
        if debug_on():
            traceback.print_exc()
        print(error_line(args.command, exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        if debug_on():
            traceback.print_exc()
        detail = str(exc).strip().splitlines()
        message = f"{type(exc).__name__}: {detail[0][:500]}" if detail else type(exc).__name__
        print(f"msat-lava {args.command}: error: {message}", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = previous
    return 0 if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
