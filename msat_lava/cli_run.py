"""``msat-lava run``, ``msat-lava verify`` and ``msat-lava demo``.

``add_run_parser`` / ``add_verify_parser`` / ``add_demo_parser`` register the subcommands (see
:mod:`msat_lava.cli`). Exit codes: **0** ok, **1** verification failed (``verify``, ``demo``), **2** bad input
(:class:`msat_lava.data.DataError`, any :class:`netx_export.errors.NetxExportError`: unreadable or malformed
network file, unsupported model...); the message goes to stderr. Anything else propagates
(:func:`msat_lava.cli.main` turns it into exit code 1).

* ``run NET --data D.npz [--samples N] --steps T --backend lava-fixed|lava-float|ref-fixed|ref-float``: accuracy
  at the reported T's (labels permitting) and, with ``--predictions out.npz``, the predictions after every step.
* ``verify NET --data D.npz --samples N --steps T [--report out.json]``: Lava fixed point vs the reference,
  bit for bit (:func:`msat_lava.verify.verify`), plus the fixed↔float report.
* ``demo [--out DIR] [--seconds S]``: needs no external data: trains a small CNN on scikit-learn's bundled
  8×8 digits, converts it (MSAT and the const/max-norm baseline), writes the network files, verifies the Lava
  run bit for bit on a few test samples and reports ANN vs SNN accuracy over T (text, PNG plot, JSON).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from msat_lava.cli_common import (EXIT_BAD_INPUT, EXIT_MISMATCH, EXIT_OK, MAX_STEPS, add_common_options,
                                  check_destination, debug_on, error_line, positive_int, seed_arg, steps_arg)
from msat_lava.cli_common import bad_input_errors as _bad_input_errors
from netx_export.fileio import atomic_target

__all__ = ["add_run_parser", "add_verify_parser", "add_demo_parser", "run_demo", "BACKENDS", "EXIT_OK",
           "EXIT_MISMATCH", "EXIT_BAD_INPUT"]

#: backend name → (simulator, precision)
BACKENDS = {"lava-fixed": ("lava", "fixed"), "lava-float": ("lava", "float"),
            "ref-fixed": ("ref", "fixed"), "ref-float": ("ref", "float"), "loihi2": ("loihi2", "fixed")}
#: simulator → :mod:`msat_lava.backends` name (each backend's ``check`` runs before anything is built)
BACKEND_OF = {"lava": "lava-cpu", "ref": "reference", "loihi2": "loihi2"}


# ----------------------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------------------
def _exit_codes(command: str) -> Callable:
    """Decorator: typed bad-input errors → message on stderr and exit code 2 (and one harmless torch notice
    about read-only arrays silenced)."""
    def wrap(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(func)
        def handler(args: argparse.Namespace) -> int:
            try:
                with warnings.catch_warnings():
                    # torch's one-time notice when read-only LUT arrays become tensors: harmless, never written
                    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                    return func(args)
            except _bad_input_errors() as exc:
                if debug_on():
                    import traceback

                    traceback.print_exc()
                print(error_line(command, exc), file=sys.stderr)
                return EXIT_BAD_INPUT
        return handler
    return wrap


_positive_int = positive_int


def _steps_list(text: str) -> list[int]:
    try:
        out = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated step counts, got {text!r}") from None
    if not out or out[0] < 1 or out[-1] > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"step counts must be in [1, {MAX_STEPS}], got {text!r}")
    return out


def _report_steps(requested: Sequence[int] | None, steps: int) -> list[int]:
    from msat_lava.data import DataError
    from msat_lava.verify import default_report_steps

    if requested is None:
        return default_report_steps(steps)
    bad = [t for t in requested if t > steps]
    if bad:
        raise DataError(f"--report-steps {bad} exceed --steps {steps}")
    return list(requested)


def _add_data_args(p: argparse.ArgumentParser, samples_default: int | None) -> None:
    p.add_argument("net", metavar="NET", help="network file written by msat-lava convert (.net)")
    p.add_argument("--data", required=True, metavar="D.npz",
                   help="inputs: keys x [y], or x_train/y_train/x_test/y_test (the --split is used); "
                        "(N,H,W), (N,H,W,C) uint8 or (N,C,H,W)/(N,F)")
    p.add_argument("--split", choices=("test", "train"), default="test",
                   help="split of an x_train/x_test file (default test)")
    p.add_argument("--samples", type=_positive_int, default=samples_default, metavar="N",
                   help="deterministic strided subset of N samples, spread over the whole split "
                        f"(default {'all' if samples_default is None else samples_default})")
    p.add_argument("--input-scale", type=float, default=None,
                   help="divide raw inputs by this first (default 255 for uint8 data, else 1)")
    p.add_argument("--norm-mean", metavar="M1,M2,..", help="per-channel mean subtracted after --input-scale")
    p.add_argument("--norm-std", metavar="S1,S2,..", help="per-channel std divided after the mean")
    p.add_argument("--report-steps", type=_steps_list, default=None, metavar="T1,T2,..",
                   help="time steps at which to report accuracy (default 1,2,4,..,--steps)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads of the reference simulator (default: torch's; 1 is often faster for small "
                        "networks or on a busy machine)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (no progress output)")


def _load_inputs(args: argparse.Namespace, net=None):
    """(net, program, LoadedData) for the NET / --data options (``net``: NET already read)."""
    from netx_export.api import load

    from msat_lava.data import load_npz, parse_floats
    from msat_lava.program import from_converted

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if net is None:
        net = load(args.net)
    program = from_converted(net)
    data = load_npz(args.data, split=args.split, samples=args.samples, input_scale=args.input_scale,
                    mean=parse_floats(args.norm_mean, "--norm-mean"), std=parse_floats(args.norm_std, "--norm-std"),
                    input_shape=program.input_shape, num_classes=int(np.prod(program.readout.shape)))
    return net, program, data


def _warn_clipped(command: str, clipped: int, total: int, program) -> None:
    """Clipping by the fixed-point input quantizer is never silent: one warning line on stderr."""
    if clipped:
        limit = 128 * float(program.input_scale)
        print(f"msat-lava {command}: warning: {clipped} of {total} input value(s) ({100 * clipped / max(total, 1):.3g} %) "
              f"exceed the input quantizer's range ±{limit:.6g} (128·λ^0) and were clipped; check --input-scale / "
              "--norm-mean / --norm-std", file=sys.stderr)


def _atomic_savez(path: str | os.PathLike, *, overwrite: bool = True, **arrays: Any) -> Path:
    path = Path(path)
    with atomic_target(path, make_parents=True, suffix=".npz", overwrite=overwrite) as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def _fmt_acc(acc: dict[int, float]) -> str:
    return "  ".join(f"T={t}: {a:.4f}" for t, a in acc.items())


# ----------------------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------------------
def _read_network(args: argparse.Namespace):
    """(kind, network) of NET: an msat-lava network file or a plain netx file (msat_lava.netx_peer's rule,
    docs/FORMAT.md §2.1; a damaged msat-lava file is refused, never read as netx). On an msat-lava file the
    netx-only options are refused."""
    from msat_lava.cli_netx import refuse_netx_only
    from msat_lava.netx_peer import MSAT_FILE, read_network_file

    kind, net = read_network_file(args.net)
    if kind == MSAT_FILE:
        refuse_netx_only(args)
        if args.split is None:
            args.split = "test"
    return kind, net


@_exit_codes("run")
def _cmd_run(args: argparse.Namespace) -> int:
    from msat_lava.netx_peer import NETX_FILE

    if args.predictions:  # before any work: a bad destination is refused at once
        check_destination(args.predictions, "--predictions", overwrite=args.overwrite)
    kind, net = _read_network(args)
    if kind == NETX_FILE:
        from msat_lava.cli_netx import run_netx_command

        return run_netx_command(args, net)
    args.backend = args.backend or "ref-fixed"
    net, program, data = _load_inputs(args, net)
    rsteps = _report_steps(args.report_steps, args.steps)
    sim, precision = BACKENDS[args.backend]
    from msat_lava.backends import get_backend

    get_backend(BACKEND_OF[sim]).check(program, precision=precision, net=net)  # typed refusal, nothing built
    n = len(data.indices)
    if not (args.json or args.quiet):
        print(f"network {args.net} (method {net.method}, input {tuple(program.input_shape)}, "
              f"{len(program.stages)} stages); data {args.data}: {n} sample(s)"
              f"{'' if args.samples is None else ' (strided subset)'}, labels {'yes' if data.y is not None else 'no'}")
        print(f"running {args.backend}: {n} sample(s) x {args.steps} steps ...", flush=True)
    t0 = time.perf_counter()
    if sim == "lava":
        from msat_lava.lava.build import run_lava

        result = run_lava(program, data.x, args.steps, precision=precision, sample_ids=data.indices)
    elif sim == "loihi2":
        result = get_backend("loihi2").run(program, data.x, args.steps, net=net, path=args.net,
                                           sample_ids=data.indices)
    else:
        from msat_lava.reference import simulate

        result = simulate(program, data.x, args.steps, precision=precision, sample_ids=data.indices,
                          progress=not (args.json or args.quiet))
    wall = time.perf_counter() - t0
    _warn_clipped("run", int(getattr(result, "input_clipped", 0)), data.x.size, program)
    preds = np.asarray(result.predictions, dtype=np.int64)
    accuracy = None
    acc_at = None
    if data.y is not None:
        accuracy = (preds == data.y.reshape(1, -1)).mean(axis=1)
        acc_at = {t: float(accuracy[t - 1]) for t in rsteps}
    if args.predictions:
        arrays: dict[str, Any] = {"predictions": preds, "indices": data.indices, "steps": np.int64(args.steps),
                                  "backend": np.array(args.backend), "report_steps": np.asarray(rsteps, np.int64)}
        if data.y is not None:
            arrays["labels"] = data.y
            arrays["accuracy"] = accuracy
        _atomic_savez(args.predictions, overwrite=args.overwrite, **arrays)
    out = {"net": str(args.net), "data": str(args.data), "backend": args.backend, "steps": args.steps,
           "samples": n, "wall_s": wall, "wall_per_sample_s": wall / n, "accuracy": acc_at,
           "input_clipped": int(getattr(result, "input_clipped", 0)),
           "predictions_file": args.predictions}
    if args.json:
        print(json.dumps(out, indent=2))
        return EXIT_OK
    print(f"done in {wall:.2f} s ({wall / n:.4f} s/sample); input values clipped: {out['input_clipped']}")
    if acc_at is not None:
        print(f"accuracy: {_fmt_acc(acc_at)}")
    else:
        final = np.bincount(preds[-1], minlength=int(np.prod(program.readout.shape)))
        print(f"no labels in {args.data}; predicted class counts at T={args.steps}: {final.tolist()}")
    if args.predictions:
        print(f"predictions written to {args.predictions}")
    return EXIT_OK


def add_run_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="run a network file on .npz data (Lava or reference, fixed or float)",
        description=("Run NET on the inputs of --data for --steps time steps in one backend and print the accuracy "
                     "after the reported numbers of steps. NET may also be a plain lava-dl netx (CUBA) file: then "
                     "--data is the input layer's bias mantissas (.npy, (W, H, C) or (B, W, H, C)), it runs with "
                     "msat_lava.netx_peer (all samples at once), prints the spike counts, and --predictions writes "
                     "the recorded spikes (options without meaning there are refused). Exit 0 ok, 2 bad input."),
    )
    _add_data_args(p, samples_default=None)
    p.set_defaults(split=None)  # None = test (and, on a netx file, "not given")
    p.add_argument("--steps", type=steps_arg, required=True, metavar="T",
                   help=f"time steps per sample (1..{MAX_STEPS})")
    p.add_argument("--backend", choices=tuple(BACKENDS), default=None,
                   help="lava-fixed / lava-float (Lava CPU simulator), ref-fixed / ref-float (batched torch "
                        "reference) or loihi2 (Loihi 2 via lava-loihi: constant-threshold netx exports; "
                        "msat-lava deploy checks first); default ref-fixed")
    p.add_argument("--predictions", metavar="OUT.npz",
                   help="write predictions (T, N), dataset indices, labels and accuracy (T,) to OUT.npz (an existing "
                        "file is refused unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --predictions file")
    from msat_lava.cli_netx import add_netx_options

    add_netx_options(p, record=True)
    add_common_options(p, quiet="the network/data and 'running' lines and the progress bar (the timing, accuracy "
                                "and predictions lines still print)")
    p.set_defaults(func=_cmd_run)


# ----------------------------------------------------------------------------------------------------------
# verify
# ----------------------------------------------------------------------------------------------------------
@_exit_codes("verify")
def _cmd_verify(args: argparse.Namespace) -> int:
    from msat_lava.backends import LavaCpuBackend, ReferenceBackend
    from msat_lava.netx_peer import NETX_FILE
    from msat_lava.verify import verify

    if args.report:  # before any work
        check_destination(args.report, "--report", overwrite=args.overwrite)
    kind, net = _read_network(args)
    if kind == NETX_FILE:
        from msat_lava.cli_netx import verify_netx

        return verify_netx(args, net)
    if args.against:
        return _verify_against(args, net)
    _, program, data = _load_inputs(args, net)
    for backend in (LavaCpuBackend(), ReferenceBackend()):  # typed refusal before anything is built
        backend.check(program, precision="fixed")
    rsteps = _report_steps(args.report_steps, args.steps)
    n = len(data.indices)
    if not (args.json or args.quiet):
        print(f"verifying {args.net}: {n} sample(s) x {args.steps} steps, Lava fixed point vs reference ...",
              flush=True)
    report = verify(program, data.x, args.steps, data.indices, labels=data.y, report_steps=rsteps,
                    compare_float=not args.no_float, progress=False)
    _print_verify_report(args, report)
    if not report.bit_exact:
        _print_mismatch(report)
        return EXIT_MISMATCH
    return EXIT_OK


def _print_mismatch(report, *, recorded: bool = False) -> None:
    """Exit 1 of ``verify``: one line on stderr naming the first divergence (stage, step, sample), text or JSON."""
    if report.divergence is None:
        what = "the recorded run and the reference differ" if recorded else "Lava and the reference differ"
    else:
        what = report.divergence.describe()
        if recorded:
            what = what.replace(": lava ", ": recorded ")
    print(f"msat-lava verify: MISMATCH: {' '.join(what.split())}", file=sys.stderr)


def _print_verify_report(args: argparse.Namespace, report, extra: Sequence[str] = ()) -> None:
    """Write ``--report`` (atomic) and print the report: JSON with ``--json``, else its text, the ``extra`` lines
    and where the report went (``verify`` of msat-lava and of plain netx files)."""
    if args.report:
        report.to_json(args.report, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format())
        for line in extra:
            print(line)
        if args.report:
            print(f"report written to {args.report}")


def _verify_against(args: argparse.Namespace, net=None) -> int:
    """``verify NET --data D.npz --against RECORDED.npz``: the recorded run vs the fixed-point reference on the
    recorded dataset indices (:func:`msat_lava.verify.verify_against`)."""
    from netx_export.api import load

    from msat_lava.data import DataError, load_npz, parse_floats
    from msat_lava.program import from_converted
    from msat_lava.verify import atomic_write_json, load_recorded, verify_against

    program = from_converted(load(args.net) if net is None else net)
    recorded = load_recorded(args.against, program)
    data = load_npz(args.data, split=args.split, samples=None, input_scale=args.input_scale,
                    mean=parse_floats(args.norm_mean, "--norm-mean"), std=parse_floats(args.norm_std, "--norm-std"),
                    input_shape=program.input_shape, num_classes=int(np.prod(program.readout.shape)))
    total = int(data.x.shape[0])
    bad = recorded.indices[recorded.indices >= total]
    if bad.size:
        raise DataError(f"recorded dataset index {int(bad[0])} is beyond the {total} samples of --data "
                        f"({args.split} split)", path=args.against, key="indices")
    if not (args.json or args.quiet):
        print(f"verifying {args.against} against the reference: {len(recorded.indices)} sample(s) x "
              f"{recorded.steps} steps ...", flush=True)
    report = verify_against(program, data.x[recorded.indices], recorded)
    if args.report:
        atomic_write_json(report.to_dict(), args.report, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format())
    if not report.bit_exact:
        _print_mismatch(report, recorded=True)
        return EXIT_MISMATCH
    return EXIT_OK


def add_verify_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="check that Lava (fixed point) matches the reference bit for bit",
        description=("Run the same inputs through Lava (fixed point) and the reference simulator, compare every "
                     "layer's output at every step bit for bit and report the first divergence; also compare "
                     "fixed vs float in the reference. NET may also be a plain lava-dl netx (CUBA) file: then "
                     "--data is the input layer's bias mantissas (.npy) and lava-dl's netx.hdf5.Network in Lava is "
                     "compared with msat_lava.netx_peer (every layer's spikes at every step, final u and v). "
                     "Exit 0 bit-exact, 1 mismatch, 2 bad input."),
    )
    _add_data_args(p, samples_default=8)
    p.set_defaults(split=None)  # None = test (and, on a netx file, "not given")
    p.add_argument("--steps", type=steps_arg, default=32, metavar="T", help="time steps per sample "
                   "(default 32)")
    p.add_argument("--report", metavar="OUT.json", help="write the full report as JSON (an existing file is refused "
                   "unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --report file")
    p.add_argument("--no-float", action="store_true", help="skip the fixed vs float comparison")
    p.add_argument("--against", metavar="RECORDED_OUTPUT.npz",
                   help="compare a recorded run (e.g. Loihi 2 on INRC, written by deploy --run --predictions or "
                        "run --predictions: predictions, indices [, readout, trace_<stage>]) with the fixed-point "
                        "reference on the recorded dataset indices and report the first divergence "
                        "(--samples/--steps are taken from the recording)")
    from msat_lava.cli_netx import add_netx_options

    add_netx_options(p, record=False)
    add_common_options(p, quiet="the 'verifying ...' line (the report still prints)")
    p.set_defaults(func=_cmd_verify)


# ----------------------------------------------------------------------------------------------------------
# demo
# ----------------------------------------------------------------------------------------------------------
DEMO_TRAIN = 1297          # of the 1797 digits; the other 500 are the test split
DEMO_MEAN, DEMO_STD = 0.5, 0.5  # x/16 (0..1) → (x − 0.5)/0.5 (−1..1)


def _demo_model():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class DigitsCNN(nn.Module):
        """1×8×8 → conv3×3(16)-ReLU-maxpool2 → conv3×3(32)-ReLU → flatten → linear(64)-ReLU → linear(10)."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.fc1 = nn.Linear(32 * 4 * 4, 64)
            self.fc2 = nn.Linear(64, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.relu(self.conv2(x))
            x = F.relu(self.fc1(torch.flatten(x, 1)))
            return self.fc2(x)

    return DigitsCNN()


def _demo_data() -> dict[str, np.ndarray]:
    """sklearn's bundled digits, split deterministically into 1297 train / 500 test (permutation seed 0)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    raw = np.asarray(digits.images, dtype=np.uint8)          # (1797, 8, 8), values 0..16
    labels = np.asarray(digits.target, dtype=np.int64)
    perm = np.random.default_rng(0).permutation(len(raw))
    tr, te = perm[:DEMO_TRAIN], perm[DEMO_TRAIN:]

    def prep(a: np.ndarray) -> np.ndarray:
        return ((a.astype(np.float32) / 16.0 - DEMO_MEAN) / DEMO_STD)[:, None]

    return {"x_train": prep(raw[tr]), "y_train": labels[tr], "x_test": prep(raw[te]), "y_test": labels[te],
            "raw_test": raw[te]}


def _train(model, x: np.ndarray, y: np.ndarray, *, epochs: int, seconds: float, seed: int,
           log: Callable[[str], None]) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    t0 = time.perf_counter()
    done, capped, loss_value = 0, False, float("nan")
    for epoch in range(epochs):
        if done and time.perf_counter() - t0 >= seconds:
            capped = True
            break
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for start in range(0, len(xt), 32):
            idx = perm[start:start + 32]
            opt.zero_grad()
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        done += 1
        loss_value = total / len(xt)
        log(f"      epoch {done}/{epochs}: loss {loss_value:.4f} ({time.perf_counter() - t0:.1f} s)")
    model.eval()
    return {"epochs": done, "epochs_requested": epochs, "time_capped": capped, "final_loss": loss_value,
            "seconds": time.perf_counter() - t0}


def _plot(path: Path, steps: list[int], curves: dict[str, list[float]], ann: float, title: str) -> Path:
    from msat_lava.plots import accuracy_plot

    series = [dict(label=label, steps=steps, accuracy=acc, marker=marker)
              for (label, acc), marker in zip(curves.items(), ("o", "s", "^", "v"))]
    return accuracy_plot(path, series, ann=ann, title=title, ticks=steps, size=(6.4, 4.2))


def run_demo(out: str | os.PathLike = "msat-lava-demo", *, seconds: float = 20.0, epochs: int = 8,
             steps: int = 64, test_samples: int | None = None, verify_samples: int = 8, verify_steps: int = 32,
             seed: int = 0, threads: int | None = 1, progress: bool = True,
             log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """The demo pipeline (module docstring); returns the JSON report (also written to ``out/demo_report.json``).

    Training runs ``epochs`` epochs (deterministic for a given ``seed``) but stops early, after a whole epoch,
    once ``seconds`` have passed (then the result depends on machine speed; the report says so).
    ``test_samples``: strided subset of the 500 test images for the accuracy curves (None: all);
    ``verify_samples`` × ``verify_steps``: the Lava vs reference bit-exactness check. ``threads``: torch threads
    for training and the reference (default 1: the tensors are tiny, and on a busy machine extra torch threads
    spin and cost several times their work; restored afterwards; None keeps torch's setting). ``log`` receives
    the progress messages.
    """
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        with warnings.catch_warnings():
            # torch's one-time notice about read-only LUT arrays handed to torch.as_tensor (harmless: never written)
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return _run_demo(out, seconds=seconds, epochs=epochs, steps=steps, test_samples=test_samples,
                             verify_samples=verify_samples, verify_steps=verify_steps, seed=seed,
                             progress=progress, log=log)
    finally:
        torch.set_num_threads(previous)


def _run_demo(out: str | os.PathLike, *, seconds: float, epochs: int, steps: int, test_samples: int | None,
              verify_samples: int, verify_steps: int, seed: int, progress: bool,
              log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from netx_export.api import convert, load
    from netx_export.quantize import QuantizationWarning

    from msat_lava.data import strided_indices
    from msat_lava.program import from_converted
    from msat_lava.reference import simulate
    from msat_lava.verify import atomic_write_json, default_report_steps, verify

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    def phase(name: str, t0: float) -> None:
        timings[name] = time.perf_counter() - t0

    # 1. data
    t0 = time.perf_counter()
    log("[1/7] loading scikit-learn's bundled digits (8x8 grayscale, 1797 images) ...")
    data = _demo_data()
    phase("data", t0)
    log(f"      {len(data['y_train'])} train / {len(data['y_test'])} test images, input 1x8x8")

    # 2. train
    t0 = time.perf_counter()
    log(f"[2/7] training a small CNN (conv-relu-maxpool-conv-relu-linear-relu-linear), seed {seed}, "
        f"{epochs} epochs, at most ~{seconds:g} s ...")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = _demo_model()
        train_info = _train(model, data["x_train"], data["y_train"], epochs=epochs, seconds=seconds, seed=seed,
                            log=log)
    with torch.no_grad():
        ann_pred = model(torch.from_numpy(data["x_test"])).argmax(1).numpy()
    ann_all = float(np.mean(ann_pred == data["y_test"]))
    phase("train", t0)
    if train_info["time_capped"]:
        log(f"      time budget reached after {train_info['epochs']} epoch(s): the result depends on machine speed")
    log(f"      ANN test accuracy {100 * ann_all:.2f} % ({train_info['seconds']:.1f} s)")

    # 3. convert
    t0 = time.perf_counter()
    log("[3/7] converting with MSAT and with the const (max-norm) baseline, calibrating on the train split ...")
    nets = {}
    quant_warnings: list[str] = []
    for method in ("msat", "const"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            nets[method] = convert(model, data["x_train"], method=method, seed=seed, progress=False)
        quant_warnings += [f"{method}: {w.message}" for w in caught if issubclass(w.category, QuantizationWarning)]
    phase("convert", t0)
    for w in quant_warnings:
        log(f"      warning: {w}")

    # 4. write + read back
    t0 = time.perf_counter()
    files = {m: out_dir / f"digits_cnn_{m}.net" for m in nets}
    for m, net in nets.items():
        net.save(files[m], overwrite=True)
    test_npz = out_dir / "digits_test.npz"
    _atomic_savez(test_npz, x_test=data["raw_test"], y_test=data["y_test"])
    loaded = {m: load(p) for m, p in files.items()}   # run what was written: the file round trip is exercised
    programs = {m: from_converted(net) for m, net in loaded.items()}
    phase("write", t0)
    log(f"[4/7] wrote {files['msat']} and {files['const']} (HDF5, netx layout + /msat), and {test_npz}")

    # 5. Lava vs reference, bit for bit
    t0 = time.perf_counter()
    n_test = len(data["y_test"])
    vidx = strided_indices(n_test, verify_samples)
    log(f"[5/7] running {len(vidx)} test images x {verify_steps} steps in Lava (CPU simulator, fixed point) and "
        "checking bit-exactness against the reference ...")
    report = verify(programs["msat"], data["x_test"][vidx], verify_steps, vidx, labels=data["y_test"][vidx],
                    compare_float=False)
    phase("verify", t0)
    log(f"      {'BIT-EXACT' if report.bit_exact else 'MISMATCH'}: "
        f"{sum(s.compared for s in report.stages)} values compared over {len(report.stages)} stages; Lava "
        f"{report.lava_wall_s:.1f} s ({report.lava_wall_per_sample_s:.2f} s/sample)")
    if report.divergence is not None:
        log(f"      first divergence: {report.divergence.describe()}")

    # 6. accuracy vs T (reference, fixed point)
    t0 = time.perf_counter()
    tidx = strided_indices(n_test, test_samples)
    xs, ys = data["x_test"][tidx], data["y_test"][tidx]
    ann_acc = float(np.mean(ann_pred[tidx] == ys))
    rsteps = default_report_steps(steps)
    log(f"[6/7] accuracy vs T on {len(tidx)} test images, T up to {steps} (reference simulator, fixed point) ...")
    curves: dict[str, list[float]] = {}
    sim_wall: dict[str, float] = {}
    for m in ("msat", "const"):
        t1 = time.perf_counter()
        res = simulate(programs[m], xs, steps, precision="fixed", sample_ids=tidx, batch_size=min(len(tidx), 512),
                       progress=progress)
        sim_wall[m] = time.perf_counter() - t1
        acc = res.accuracy(ys)
        curves[m] = [float(acc[t - 1]) for t in rsteps]
        log(f"      {m:<5}: {sim_wall[m]:.1f} s")
    phase("accuracy", t0)

    # 7. report
    t0 = time.perf_counter()
    plot = _plot(out_dir / "accuracy_vs_T.png", rsteps,
                 {"MSAT (fixed point)": curves["msat"], "const / max-norm (fixed point)": curves["const"]},
                 ann_acc, f"digits CNN: ANN vs SNN ({len(tidx)} test images)")
    phase("report", t0)
    total = time.perf_counter() - t_start
    result: dict[str, Any] = {
        "dataset": {"name": "sklearn digits", "train": int(len(data["y_train"])), "test": int(n_test),
                    "evaluated": int(len(tidx)), "input_shape": [1, 8, 8],
                    "preprocessing": f"x/16, (x - {DEMO_MEAN})/{DEMO_STD}"},
        "training": train_info,
        "ann_accuracy": ann_acc,
        "report_steps": rsteps,
        "snn_accuracy": {m: dict(zip(rsteps, c)) for m, c in curves.items()},
        "verify": report.to_dict(),
        "bit_exact": report.bit_exact,
        "first_divergence": None if report.divergence is None else report.divergence.describe(),
        "files": {"msat_net": str(files["msat"]), "const_net": str(files["const"]), "test_data": str(test_npz),
                  "plot": str(plot), "report": str(out_dir / "demo_report.json")},
        "quantization_warnings": quant_warnings,
        "reference_wall_s": sim_wall,
        "timings_s": timings,
        "total_s": total,
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
    }
    atomic_write_json(result, out_dir / "demo_report.json")
    log(f"[7/7] wrote {plot} and {out_dir / 'demo_report.json'}")
    return result


def _format_demo(result: dict[str, Any]) -> str:
    rsteps = result["report_steps"]
    width = max(6, max(len(str(t)) for t in rsteps) + 1)
    head = f"{'T':<22}" + "".join(f"{t:>{width}}" for t in rsteps)
    lines = ["", f"test accuracy (%) on {result['dataset']['evaluated']} images, reference simulator, fixed point:",
             head, "-" * len(head)]
    names = {"msat": "SNN MSAT", "const": "SNN const (max-norm)"}
    for m, acc in result["snn_accuracy"].items():
        lines.append(f"{names.get(m, m):<22}" + "".join(f"{100 * acc[t]:>{width}.1f}" for t in rsteps))
    lines.append(f"{'ANN':<22}" + f"{100 * result['ann_accuracy']:>{width}.1f}" + "  (every T)")
    v = result["verify"]
    lines.append("")
    lines.append(f"Lava vs reference (fixed point, {v['n_samples']} images x {v['steps']} steps): "
                 f"{'BIT-EXACT' if v['bit_exact'] else 'MISMATCH'}")
    files = result["files"]
    lines.append(f"network files: {files['msat_net']}, {files['const_net']}")
    lines.append(f"plot: {files['plot']}")
    lines.append(f"report: {files['report']}")
    lines.append(f"try: msat-lava run {files['msat_net']} --data {files['test_data']} --input-scale 16 "
                 f"--norm-mean {DEMO_MEAN} --norm-std {DEMO_STD} --steps 32 --samples 50 --backend lava-fixed")
    lines.append(f"total time {result['total_s']:.1f} s")
    return "\n".join(lines)


@_exit_codes("demo")
def _cmd_demo(args: argparse.Namespace) -> int:
    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr if args.json else sys.stdout, flush=True)

    from msat_lava.data import DataError

    if args.verify_steps > args.steps:
        raise DataError(f"--verify-steps {args.verify_steps} exceeds --steps {args.steps}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise DataError(f"--out {args.out!r} exists and is not a directory")
    result = run_demo(args.out, seconds=args.seconds, epochs=args.epochs, steps=args.steps,
                      test_samples=args.test_samples, verify_samples=args.verify_samples,
                      verify_steps=args.verify_steps, seed=args.seed, threads=args.threads,
                      progress=not (args.json or args.quiet),
                      log=log)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_format_demo(result))
    if not result["bit_exact"]:
        first = result.get("first_divergence")
        print("msat-lava demo: FAILED: Lava and the reference differ"
              + (f"; first divergence: {' '.join(str(first).split())}" if first else ""), file=sys.stderr)
        return EXIT_MISMATCH
    return EXIT_OK


def add_demo_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="end-to-end demo on scikit-learn's digits (no external data)",
        description=("Train a small CNN on scikit-learn's bundled 8x8 digits (1297 train / 500 test, fixed seed), "
                     "convert it with MSAT and with the const/max-norm baseline, write the network files, run it "
                     "in Lava (fixed point) and check bit-exactness against the reference on a few test images, "
                     "then print ANN vs SNN accuracy over T and save a plot and a JSON report. "
                     "Exit 0 ok, 1 if Lava and the reference differ."),
    )
    p.add_argument("--out", default="msat-lava-demo", metavar="DIR",
                   help="output directory (default ./msat-lava-demo; files in it are replaced)")
    p.add_argument("--seconds", type=float, default=20.0, metavar="S",
                   help="training time budget: stop after the epoch that crosses it (default 20)")
    p.add_argument("--epochs", type=_positive_int, default=8, help="training epochs (default 8)")
    p.add_argument("--steps", type=steps_arg, default=64, metavar="T",
                   help="largest T of the accuracy curves (default 64)")
    p.add_argument("--test-samples", type=_positive_int, default=None, metavar="N",
                   help="strided subset of the 500 test images for the accuracy curves (default all)")
    p.add_argument("--verify-samples", type=_positive_int, default=8, metavar="N",
                   help="test images run in Lava and checked bit for bit (default 8)")
    p.add_argument("--verify-steps", type=steps_arg, default=32, metavar="T",
                   help="time steps of the Lava check (default 32)")
    p.add_argument("--seed", type=seed_arg, default=0, help="training seed in [0, 2^32) (default 0)")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="torch threads for training and the reference simulator (default 1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (progress goes to stderr)")
    add_common_options(p, quiet="the [1/7]..[7/7] progress log and the progress bars (the final report still "
                                "prints)")
    p.set_defaults(func=_cmd_demo)
