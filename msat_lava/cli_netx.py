"""Plain lava-dl netx (CUBA) network files on the command line: parses, calls, prints.

``msat-lava info``, ``run`` and ``verify`` read a network file with :func:`msat_lava.netx_peer.read_network_file`,
which decides whether it is an msat-lava network file or a plain netx file (the rule:
:func:`msat_lava.netx_peer.network_file_kind`, docs/FORMAT.md §2.1); a plain netx file lands here:

* ``info NET [--json]``: the layer table (:func:`msat_lava.netx_peer.summary`);
* ``run NET --data BIAS.npy --steps T [--reset-interval I --reset-offset O --record K.. --state --predictions
  OUT.npz]``: :class:`msat_lava.netx_peer.NetxSimulator`, all samples at once;
* ``verify NET --data BIAS.npy [--samples N --steps T --reset-interval I --reset-offset O --report R.json]``:
  lava-dl's ``netx.hdf5.Network`` on Lava's CPU simulator (:mod:`msat_lava.lava.netx_peer_lava`) against
  NetxSimulator, every layer's spikes at every step and the final u and v, exactly
  (:func:`msat_lava.netx_peer.compare_runs`, a :class:`msat_lava.verify.VerifyReport`).

The input of a netx network is the input layer's bias mantissas (13-bit ints), a ``.npy`` of shape (W, H, C) or
(B, W, H, C) in Lava's order. Options of ``run`` / ``verify`` that have no meaning for such a network (data
preprocessing, other backends, accuracy steps, the float comparison, recorded runs) are refused with exit 2 and
one line naming the option; so are the netx-only options on an msat-lava file.

``msat-lava netx-run NET [--bias B]`` is the older spelling: without ``--bias`` it is ``info``, with it ``run``
(``--bias`` for ``--data``, ``--out`` for ``--predictions``), through the same functions.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

__all__ = ["add_netx_run_parser", "add_netx_options", "refuse_netx_only", "info_netx", "run_netx", "verify_netx",
           "load_bias", "MAX_BATCH"]

#: Largest number of samples one bias file may hold.
MAX_BATCH = 4096

#: The run/verify options that only plain netx files take: (dest, option, default).
NETX_ONLY = (("reset_interval", "--reset-interval", None), ("reset_offset", "--reset-offset", 0),
             ("record", "--record", None), ("state", "--state", False))

_INPUT = "its input is the input layer's bias mantissas (--data BIAS.npy), not preprocessed data"
#: The run/verify options that make no sense for a plain netx file: (dest, option, default, why).
_NOT_FOR_NETX = (
    ("split", "--split", None, _INPUT),
    ("input_scale", "--input-scale", None, _INPUT),
    ("norm_mean", "--norm-mean", None, _INPUT),
    ("norm_std", "--norm-std", None, _INPUT),
    ("report_steps", "--report-steps", None, "a netx network has no labels or accuracy to report"),
    ("no_float", "--no-float", False, "a netx network has no float model (verify compares Lava with "
                                      "msat_lava.netx_peer, fixed point only)"),
    ("against", "--against", None, "comparing a recorded run is implemented for msat-lava network files only"),
)


def _not_for_netx(option: str, why: str) -> str:
    return f"{option}: does not apply to a plain netx file (lava-dl CUBA): {why}"


def refuse_netx_only(args: argparse.Namespace) -> None:
    """On an msat-lava network file: BadInput naming the first netx-only option given."""
    from msat_lava.cli_common import BadInput

    for dest, option, default in NETX_ONLY:
        if getattr(args, dest, default) != default:
            raise BadInput(f"{option}: applies to plain netx files only; {args.net!r} is an msat-lava network file")


def _refuse_for_netx(args: argparse.Namespace, extra: Sequence[tuple[str, str, Any, str]] = ()) -> None:
    from msat_lava.cli_common import BadInput

    for dest, option, default, why in tuple(_NOT_FOR_NETX) + tuple(extra):
        if getattr(args, dest, default) != default:
            raise BadInput(_not_for_netx(option, why))


def load_bias(path: str, shape_whc: tuple[int, int, int], option: str = "--data"):
    """A .npy of integer bias mantissas, (W, H, C) or (B, W, H, C); the header is checked before the data is
    read. BadInput names ``option`` and the path."""
    import numpy as np

    from msat_lava.cli_common import BadInput

    if not os.path.isfile(path):
        raise BadInput(f"{option} {path!r}: no such file")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise BadInput(f"{option} {path!r}: not a readable .npy file ({type(exc).__name__}: {exc})") from None
    if not isinstance(arr, np.ndarray):
        raise BadInput(f"{option} {path!r}: expected one .npy array (the input layer's bias mantissas)")
    if tuple(arr.shape) == shape_whc:
        arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != shape_whc or not 1 <= arr.shape[0] <= MAX_BATCH:
        raise BadInput(f"{option} {path!r}: expected shape {shape_whc} or (B, {', '.join(map(str, shape_whc))}) in "
                       f"Lava's (W, H, C) order with B <= {MAX_BATCH}, got {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise BadInput(f"{option} {path!r}: expected integers, got dtype {arr.dtype}")
    return np.array(arr)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------------------
# info
# ----------------------------------------------------------------------------------------------------------
def info_netx(path: str, net, *, as_json: bool) -> int:
    """Print the layer table of a plain netx file (``msat-lava info``)."""
    from msat_lava.cli_common import EXIT_OK
    from msat_lava.cli_convert import format_netx_summary
    from msat_lava.netx_peer import summary

    info = summary(net)
    info["file"] = {"path": str(path), "bytes": os.path.getsize(path)}
    print(json.dumps(info, indent=2) if as_json else format_netx_summary(info))
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------------------
def run_netx(net, *, net_path: str, bias_path: str, bias_option: str, steps: int, samples: int | None = None,
             reset_interval: int | None = None, reset_offset: int = 0, record: Sequence[int] | None = None,
             state: bool = False, out: str | None = None, out_option: str = "--predictions",
             overwrite: bool = False, as_json: bool = False) -> int:
    """Run a plain netx network on the bias file's samples with NetxSimulator; print the spike counts (and
    write the recorded arrays to ``out``: ``spikes_<k>`` bool (B, *Lava shape, T), with ``state`` also
    ``u_<k>``/``v_<k>`` int32, and ``indices``, the samples' positions in the bias file)."""
    import time

    from msat_lava.cli_common import EXIT_OK, BadInput, check_destination
    from msat_lava.data import strided_indices
    from msat_lava.netx_peer import NetxSimulator

    if out:
        check_destination(out, out_option, overwrite=overwrite)
    if state and not out:
        raise BadInput(f"--state: the recorded u and v go to a file; give {out_option} OUT.npz")
    bias = load_bias(bias_path, net.input_shape_lava, bias_option)
    idx = strided_indices(bias.shape[0], samples)
    bias = bias[idx]
    n_proc = len(net.layers)
    rec_layers = sorted(set(record)) if record else [n_proc - 1]
    for k in rec_layers:
        if not 0 <= k < n_proc:
            raise BadInput(f"--record {k}: the network has processes 0..{n_proc - 1}")
    t0 = time.perf_counter()
    try:
        sim = NetxSimulator(net, reset_interval=reset_interval, reset_offset=reset_offset)
        rec = sim.run(bias, steps, record_layers=rec_layers, record_state=state)
    except ValueError as exc:
        raise BadInput(f"{bias_option} {bias_path!r}: {exc}") from None
    wall = time.perf_counter() - t0
    batch = int(bias.shape[0])
    summary: dict[str, Any] = {
        "net": net_path, "file_kind": "netx", "simulator": "msat_lava.netx_peer",
        "layers": [type(layer).__name__ for layer in net.layers], "input_shape_whc": list(net.input_shape_lava),
        "steps": steps, "batch": batch, "indices": idx.tolist(), "reset_interval": reset_interval,
        "reset_offset": reset_offset, "wall_s": wall,
        "spike_counts": {str(k): [int(x) for x in rec.spikes[k].reshape(batch, -1).sum(axis=1)] for k in rec_layers},
    }
    last = n_proc - 1
    if last in rec.spikes:
        summary["output_spikes_per_neuron"] = rec.spikes[last].sum(axis=-1).reshape(batch, -1).tolist()
    if out:
        arrays = {f"spikes_{k}": rec.spikes[k] for k in rec_layers}
        if state:
            arrays.update({f"u_{k}": rec.u[k] for k in rec_layers})
            arrays.update({f"v_{k}": rec.v[k] for k in rec_layers})
        arrays["indices"] = idx
        from msat_lava.cli_run import _atomic_savez

        _atomic_savez(out, overwrite=overwrite, **arrays)
        summary["out"] = out
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        counts = ", ".join(f"process {k}: {v}" for k, v in summary["spike_counts"].items())
        print(f"plain netx file {os.path.basename(net_path)} (lava-dl CUBA), simulated with msat_lava.netx_peer: "
              f"{batch} sample(s) x {steps} steps in {wall:.2f} s; spikes per sample ({counts})"
              + (f"; wrote {out}" if out else ""))
    return EXIT_OK


def run_netx_command(args: argparse.Namespace, net) -> int:
    """``msat-lava run`` on a plain netx file."""
    from msat_lava.cli_common import BadInput

    _refuse_for_netx(args)
    if args.backend not in (None, "ref-fixed"):
        raise BadInput(_not_for_netx(f"--backend {args.backend}", "a netx network runs with msat_lava.netx_peer's "
                                     "fixed-point simulator (ref-fixed); msat-lava verify compares it with Lava"))
    _set_threads(args.threads)
    return run_netx(net, net_path=args.net, bias_path=args.data, bias_option="--data", steps=args.steps,
                    samples=args.samples, reset_interval=args.reset_interval, reset_offset=args.reset_offset,
                    record=args.record, state=args.state, out=args.predictions, out_option="--predictions",
                    overwrite=args.overwrite, as_json=args.json)


# ----------------------------------------------------------------------------------------------------------
# verify
# ----------------------------------------------------------------------------------------------------------
def verify_netx(args: argparse.Namespace, net) -> int:
    """``msat-lava verify`` on a plain netx file: lava-dl netx in Lava vs NetxSimulator (module docstring)."""
    import importlib.util
    import time

    from msat_lava.backends import BackendUnavailable
    from msat_lava.cli_common import EXIT_MISMATCH, EXIT_OK
    from msat_lava.data import strided_indices
    from msat_lava.netx_peer import NetxSimulator, compare_runs

    _refuse_for_netx(args, (("record", "--record", None, "verify compares every layer"),
                            ("state", "--state", False, "verify compares every layer's final u and v")))
    bias = load_bias(args.data, net.input_shape_lava, "--data")
    idx = strided_indices(bias.shape[0], args.samples)
    bias = bias[idx]
    try:  # the input's range and integrality, before Lava is started
        sim = NetxSimulator(net, reset_interval=args.reset_interval, reset_offset=args.reset_offset)
        sim.run(bias, 1)
    except ValueError as exc:
        from msat_lava.cli_common import BadInput

        raise BadInput(f"--data {args.data!r}: {exc}") from None
    if importlib.util.find_spec("lava") is None:
        raise BackendUnavailable("verify of a netx file runs lava-dl in Lava: lava-nc / lava-dl are not installed")
    _set_threads(args.threads)
    n, steps = int(bias.shape[0]), args.steps
    if not (args.json or args.quiet):
        print(f"verifying plain netx file {args.net} (lava-dl CUBA): {n} sample(s) x {steps} steps, lava-dl "
              f"netx.hdf5.Network in Lava (Loihi2SimCfg fixed_pt) vs msat_lava.netx_peer, reset_interval "
              f"{args.reset_interval} offset {args.reset_offset} ...", flush=True)
    from msat_lava.lava.netx_peer_lava import run_netx_lava

    lava = run_netx_lava(net.path, bias, steps, reset_interval=args.reset_interval, reset_offset=args.reset_offset)
    t0 = time.perf_counter()
    ours = sim.run(bias, steps, record_layers=range(len(net.layers)), record_state=True)
    ours_wall = time.perf_counter() - t0
    report = compare_runs(net, lava, ours, sample_ids=idx, lava_wall_s=lava.wall_s, reference_wall_s=ours_wall,
                          reset_interval=args.reset_interval, reset_offset=args.reset_offset)
    from msat_lava.cli_run import _print_verify_report

    _print_verify_report(args, report, [f"mismatches: {report.network['mismatches']} of {report.network['compared']} "
                                        f"values (spikes of {len(net.layers)} layers at every step, final u and v)"])
    if not report.bit_exact:
        from msat_lava.cli_run import _print_mismatch

        _print_mismatch(report)
        return EXIT_MISMATCH
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------------
# netx-run (the older spelling)
# ----------------------------------------------------------------------------------------------------------
def _cmd_netx_run(args: argparse.Namespace) -> int:
    from msat_lava.netx_peer import read_netx

    net = read_netx(args.net)
    if args.bias is None:
        return info_netx(args.net, net, as_json=args.json)
    return run_netx(net, net_path=args.net, bias_path=args.bias, bias_option="--bias", steps=args.steps,
                    reset_interval=args.reset_interval, reset_offset=args.reset_offset, record=args.record,
                    state=args.state, out=args.out, out_option="--out", overwrite=args.overwrite, as_json=args.json)


def add_netx_options(p: argparse.ArgumentParser, *, record: bool) -> None:
    """The netx-only options of ``run`` (``record``: also --record/--state) and ``verify``."""
    from msat_lava.cli_common import positive_int

    p.add_argument("--reset-interval", type=positive_int, default=None, metavar="I",
                   help="plain netx files only: netx reset_interval: process k's u and v are zeroed before step t "
                        "with t mod I == (offset + 1 + k) mod I (default: never)")
    p.add_argument("--reset-offset", type=int, default=0, metavar="O",
                   help="plain netx files only: netx reset_offset (default 0)")
    if record:
        p.add_argument("--record", type=int, nargs="+", metavar="K",
                       help="plain netx files only: processes whose spikes to record (default: the last)")
        p.add_argument("--state", action="store_true",
                       help="plain netx files only: also record u and v (into the output file)")


def add_netx_run_parser(subparsers) -> None:
    from msat_lava.cli_common import add_common_options, steps_arg

    p = subparsers.add_parser(
        "netx-run",
        help="describe or run a plain lava-dl netx (CUBA) network file (= info / run on such a file)",
        description=("Read a netx HDF5 file written by lava-dl's slayer (input, conv, flatten, dense layers with "
                     "CUBA-LIF neurons), validating every field, and describe it (as msat-lava info); with --bias, "
                     "run it in Lava's exact fixed-point semantics (msat_lava.netx_peer), B samples at once (as "
                     "msat-lava run NET --data BIAS.npy). Process 0 is the input layer; flatten layers are not "
                     "processes."),
    )
    p.add_argument("net", metavar="NET", help="netx network file (.net / .h5)")
    p.add_argument("--bias", metavar="FILE.npy",
                   help="the input layer's bias mantissas (13-bit ints), (W, H, C) or (B, W, H, C) in Lava's order")
    p.add_argument("--steps", type=steps_arg, default=16, help="time steps (default 16)")
    add_netx_options(p, record=True)
    p.add_argument("--out", metavar="FILE.npz", help="write the recorded arrays ((B, *Lava shape, T) each)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_common_options(p, quiet="nothing, the description or the one-line run summary is the result")
    p.set_defaults(func=_cmd_netx_run)
