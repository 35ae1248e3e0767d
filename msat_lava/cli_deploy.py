"""``msat-lava deploy NET [--check] [--run [--sim]]``: Loihi 2 pre-flight check and hardware run.

Parses, calls :mod:`msat_lava.deploy`, prints. Exit codes: 0 the plan fits (and the run finished), 1 the plan
breaks at least one limit (every violation is printed, with the layer and the number), 2 bad input: an
unreadable network / data / constraints file, a bad ``--set``, or a backend that cannot run the network
(no lava-loihi without ``--sim``; MSAT layers on Loihi 2) — one line naming what, no traceback unless
``msat-lava --debug``.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from msat_lava.cli_common import (EXIT_BAD_INPUT, EXIT_MISMATCH, EXIT_OK, BadInput, add_common_options,
                                  check_destination, debug_on, error_line, positive_int, steps_arg)

__all__ = ["add_deploy_parser"]


def _override(text: str):
    from msat_lava.loihi2.constraints import parse_override

    try:
        return parse_override(text)
    except BadInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_deploy(args: argparse.Namespace) -> int:
    try:
        return _deploy(args)
    except Exception as exc:
        from msat_lava.cli_common import bad_input_errors

        if not isinstance(exc, bad_input_errors()):
            raise
        if debug_on():
            import traceback

            traceback.print_exc()
        print(error_line("deploy", exc), file=sys.stderr)
        return EXIT_BAD_INPUT


def _deploy(args: argparse.Namespace) -> int:
    from netx_export.api import load

    from msat_lava.data import load_npz, parse_floats
    from msat_lava.deploy import format_report, preflight, run_on_hardware
    from msat_lava.loihi2.constraints import load_constraints
    from msat_lava.program import from_converted

    if args.run and args.data is None:
        raise BadInput("--run needs --data D.npz (the inputs to run)")
    if args.predictions:
        if not args.run:
            raise BadInput("--predictions is written by --run")
        check_destination(args.predictions, "--predictions", overwrite=args.overwrite)
    constraints = load_constraints(args.constraints, dict(args.set or ()))
    net = load(args.net)
    program = from_converted(net)
    data = None
    if args.data is not None:
        data = load_npz(args.data, split=args.split, samples=args.samples, input_scale=args.input_scale,
                        mean=parse_floats(args.norm_mean, "--norm-mean"), std=parse_floats(args.norm_std, "--norm-std"),
                        input_shape=program.input_shape, num_classes=int(program.readout.shape[0]))
    report = preflight(net, program, constraints, name=str(args.net), x=None if data is None else data.x,
                       sample_ids=None if data is None else data.indices, steps=args.check_steps)
    out: dict[str, Any] = {"check": report.to_dict()}
    if not args.json:
        print(format_report(report))
    if not report.ok:  # exit 1: one line on stderr, the first violation (every one is in the report)
        first = " ".join(report.violations[0].message.split())
        print(f"msat-lava deploy: {'not run: ' if args.run else ''}{len(report.violations)} violation(s) of the "
              f"Loihi 2 limits; first: {first}", file=sys.stderr)
        if args.json:
            print(json.dumps(out, indent=2))
        return EXIT_MISMATCH
    if args.run:
        run = run_on_hardware(net, program, args.net, data.x, args.steps, sample_ids=data.indices, sim=args.sim)
        res = run.result
        if run.hardware_refusal:
            print(f"msat-lava deploy: {run.hardware_refusal}", file=sys.stderr)
            print("msat-lava deploy: --sim: running the CPU fixed-point simulation (reference) instead of Loihi 2",
                  file=sys.stderr)
        import numpy as np

        preds = np.asarray(res.predictions, dtype=np.int64)
        acc = None
        if data.y is not None:
            acc = float((preds[-1] == data.y).mean())
        out["run"] = {"backend": run.backend, "run_config": run.run_config, "steps": args.steps,
                      "samples": int(len(data.indices)), "accuracy_at_T": acc,
                      "hardware_refusal": run.hardware_refusal, "predictions_file": args.predictions}
        if args.predictions:
            from msat_lava.verify import save_recorded

            save_recorded(args.predictions, predictions=preds, readout=run.recordable_readout, indices=data.indices,
                          steps=args.steps, backend=run.backend, overwrite=args.overwrite)
        if not args.json:
            print(f"ran on {run.backend}{' (' + run.run_config + ')' if run.run_config else ''}: "
                  f"{len(data.indices)} sample(s) x {args.steps} steps"
                  + (f", accuracy at T={args.steps}: {acc:.4f}" if acc is not None else "")
                  + (f"; outputs written to {args.predictions}" if args.predictions else ""))
    if args.json:
        print(json.dumps(out, indent=2))
    return EXIT_OK


def add_deploy_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "deploy",
        help="Loihi 2 pre-flight check (per-layer core plan, every violation) and hardware run",
        description=("Plan the network onto Loihi 2 cores (tiles, cores, neurons, synaptic memory, axons per "
                     "layer; chips needed), check the fixed-point file against the hardware widths and list "
                     "EVERY violation with its layer and number (docs/LOIHI2.md). --run then runs it on Loihi 2 "
                     "(needs lava-loihi, INRC) or, with --sim, the CPU fixed-point simulation. "
                     "Exit 0 fits, 1 violations, 2 bad input or a backend that cannot run it."))
    p.add_argument("net", metavar="NET", help="network file written by msat-lava convert (.net)")
    p.add_argument("--check", action="store_true", help="print the plan and the violations (the default)")
    p.add_argument("--run", action="store_true", help="after a clean check, run on Loihi 2 (lava-loihi)")
    p.add_argument("--sim", action="store_true",
                   help="with --run: if Loihi 2 cannot run the network here, run the CPU fixed-point reference "
                        "simulation instead (said on stderr); never without this flag")
    p.add_argument("--constraints", metavar="FILE.json",
                   help="JSON object of constraint → value overriding the defaults (docs/LOIHI2.md §1)")
    p.add_argument("--set", action="append", type=_override, metavar="KEY=VALUE",
                   help="override one constraint, e.g. --set chips=8 --set axons_in_per_core=8192 "
                        "--set slots.msat=3 (repeatable; after --constraints)")
    p.add_argument("--data", metavar="D.npz", help="inputs: for --run, and for a short reference run that "
                   "measures dendritic sums, the readout and saturation during --check")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--samples", type=positive_int, default=4, metavar="N", help="strided subset (default 4)")
    p.add_argument("--input-scale", type=float, default=None)
    p.add_argument("--norm-mean", metavar="M1,M2,..")
    p.add_argument("--norm-std", metavar="S1,S2,..")
    p.add_argument("--check-steps", type=steps_arg, default=16, metavar="T",
                   help="steps of the measuring reference run (default 16)")
    p.add_argument("--steps", type=steps_arg, default=32, metavar="T", help="steps of --run (default 32)")
    p.add_argument("--predictions", metavar="OUT.npz",
                   help="with --run: write predictions/readout/indices (the RECORDED_OUTPUT of "
                        "msat-lava verify --against)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --predictions file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_common_options(p, quiet="nothing, the plan and the run line are the result (there is no progress output)")
    p.set_defaults(func=_cmd_deploy)
