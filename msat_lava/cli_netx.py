"""``msat-lava netx-run NET``: describe and run a standard lava-dl netx (CUBA) network file with the batched
bit-exact simulator of :mod:`msat_lava.netx_peer`. Parses, calls, prints."""
from __future__ import annotations

import argparse
import json
import os

__all__ = ["add_netx_run_parser"]

#: Largest number of samples one --bias file may hold.
MAX_BATCH = 4096


def _load_bias(path: str, shape_whc: tuple[int, int, int]):
    """A .npy of integer bias mantissas, (W, H, C) or (B, W, H, C); the header is checked before the data is read."""
    import numpy as np

    from msat_lava.cli_common import BadInput

    if not os.path.isfile(path):
        raise BadInput(f"--bias {path!r}: no such file")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise BadInput(f"--bias {path!r}: not a readable .npy file ({type(exc).__name__}: {exc})") from None
    if not isinstance(arr, np.ndarray):
        raise BadInput(f"--bias {path!r}: expected one .npy array")
    if tuple(arr.shape) == shape_whc:
        arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != shape_whc or not 1 <= arr.shape[0] <= MAX_BATCH:
        raise BadInput(f"--bias {path!r}: expected shape {shape_whc} or (B, {', '.join(map(str, shape_whc))}) in "
                       f"Lava's (W, H, C) order with B <= {MAX_BATCH}, got {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise BadInput(f"--bias {path!r}: expected integers, got dtype {arr.dtype}")
    return np.array(arr)


def _cmd_netx_run(args: argparse.Namespace) -> int:
    import numpy as np

    from msat_lava.cli_common import BadInput, check_destination
    from msat_lava.netx_peer import NetxSimulator, read_netx

    net = read_netx(args.net)
    if args.out:
        check_destination(args.out, "--out", overwrite=args.overwrite)
    summary = {"net": args.net, "layers": [type(layer).__name__ for layer in net.layers],
               "input_shape_whc": list(net.input_shape_lava)}
    if args.bias is None:
        if args.json:
            summary["description"] = net.describe()
            print(json.dumps(summary, indent=2))
        else:
            print(net.describe())
        return 0
    bias = _load_bias(args.bias, net.input_shape_lava)
    n_proc = len(net.layers)
    record = sorted(set(args.record)) if args.record else [n_proc - 1]
    for k in record:
        if not 0 <= k < n_proc:
            raise BadInput(f"--record {k}: the network has processes 0..{n_proc - 1}")
    try:
        sim = NetxSimulator(net, reset_interval=args.reset_interval, reset_offset=args.reset_offset)
        rec = sim.run(bias, args.steps, record_layers=record, record_state=args.state)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    summary.update(steps=args.steps, batch=int(bias.shape[0]), reset_interval=args.reset_interval,
                   reset_offset=args.reset_offset,
                   spike_counts={str(k): [int(x) for x in rec.spikes[k].reshape(bias.shape[0], -1).sum(axis=1)]
                                 for k in record})
    last = n_proc - 1
    if last in rec.spikes:
        summary["output_spikes_per_neuron"] = rec.spikes[last].sum(axis=-1).reshape(bias.shape[0], -1).tolist()
    if args.out:
        arrays = {f"spikes_{k}": rec.spikes[k] for k in record}
        if args.state:
            arrays.update({f"u_{k}": rec.u[k] for k in record})
            arrays.update({f"v_{k}": rec.v[k] for k in record})
        tmp = f"{args.out}.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, args.out)
        summary["out"] = args.out
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        counts = ", ".join(f"process {k}: {v}" for k, v in summary["spike_counts"].items())
        print(f"{os.path.basename(args.net)}: {summary['batch']} sample(s) x {args.steps} steps; spikes per sample "
              f"({counts})" + (f"; wrote {args.out}" if args.out else ""))
    return 0


def add_netx_run_parser(subparsers) -> None:
    from msat_lava.cli_common import positive_int, steps_arg

    p = subparsers.add_parser(
        "netx-run",
        help="describe or run a standard lava-dl netx (CUBA) network file bit-exactly",
        description=("Read a netx HDF5 file written by lava-dl's slayer (input, conv, flatten, dense layers with "
                     "CUBA-LIF neurons), validating every field, and describe it; with --bias, run it in Lava's "
                     "exact fixed-point semantics (msat_lava.netx_peer), B samples at once. Process 0 is the input "
                     "layer; flatten layers are not processes."),
    )
    p.add_argument("net", metavar="NET", help="netx network file (.net / .h5)")
    p.add_argument("--bias", metavar="FILE.npy",
                   help="the input layer's bias mantissas (13-bit ints), (W, H, C) or (B, W, H, C) in Lava's order")
    p.add_argument("--steps", type=steps_arg, default=16, help="time steps (default 16)")
    p.add_argument("--reset-interval", type=positive_int, default=None, metavar="I",
                   help="netx reset_interval: process k's u and v are zeroed before step t with t mod I == "
                        "(offset + 1 + k) mod I (default: never)")
    p.add_argument("--reset-offset", type=int, default=0, metavar="O", help="netx reset_offset (default 0)")
    p.add_argument("--record", type=int, nargs="+", metavar="K", help="processes to record (default: the last)")
    p.add_argument("--state", action="store_true", help="also record u and v (with --out)")
    p.add_argument("--out", metavar="FILE.npz", help="write the recorded arrays ((B, *Lava shape, T) each)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=_cmd_netx_run)
