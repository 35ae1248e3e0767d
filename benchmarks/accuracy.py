"""Accuracy vs time steps of converted networks (reference simulator), with the ANN beside them.

Reproduces the accuracy tables of docs/RESULTS.md. Models and data come from ../shared/data (env var
MSAT_SHARED_DATA overrides); the models are rebuilt by tests/models.py from their published descriptions.

    python benchmarks/accuracy.py --model resnet20 --samples 1000 --steps 128 \
        --methods const,msat --precision fixed,float --out benchmarks/results/resnet20_n1000_T128

writes ``<out>.json`` (config, hashes, per-method accuracy after every step, steps to reach ANN−1 %, ANN−0.1 %,
ANN) and ``<out>.png`` (accuracy vs T, ANN line; not for ``--shard`` runs). ``--samples`` takes an evenly
strided subset of the test set (the CIFAR-10 file is class-sorted, so a stride keeps every class); 0 means the full
test set.
Data-parallel: ``torchrun --nproc_per_node=N benchmarks/accuracy.py ...`` (any ``--nnodes``) splits the images
over N processes in blocks of whole ``--batch-size`` batches; rank 0 gathers the predictions and writes the same
file a single process would (wall-time fields aside; msat_lava.distributed, docs/DESIGN.md "Data-parallel
evaluation"). Every rank calibrates and converts itself (deterministic; the networks are compared).
Calibration: λ = max of each ReLU output over ``--calib`` training images drawn with seed 23 (paper-faithful
setting, ALGORITHMS §1.5; the Q-th percentile for pQ methods), input scale λ^0 = max |x| over the same images.
Precisions: ``fixed``, ``float`` and the diagnostic ``float-qw`` (float neurons on the fixed model's dequantized
input, weights and biases, ``from_converted(net, float_weights="quantized")``): float − float-qw is the accuracy
that quantizing those values costs, float-qw − fixed what the fixed-point neuron arithmetic costs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import msat_lava  # noqa: E402,F401  (installs the Lava compatibility hooks)
import models as zoo  # noqa: E402  tests/models.py
from msat_lava.metrics import steps_to_reach  # noqa: E402
from msat_lava.reference import SYNAPSE_DTYPES  # noqa: E402
from netx_export.fileio import atomic_target  # noqa: E402

PRECISIONS = ("fixed", "float", "float-qw")

MODELS = {
    "mnist": dict(load=zoo.load_mnistnet, data="mnist.npz", shape=(1, 28, 28), mean=(0.1307,), std=(0.3081,)),
    "resnet20": dict(load=lambda: zoo.load_resnet(20), data="cifar10.npz", shape=(3, 32, 32),
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    "resnet32": dict(load=lambda: zoo.load_resnet(32), data="cifar10.npz", shape=(3, 32, 32),
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    "resnet56": dict(load=lambda: zoo.load_resnet(56), data="cifar10.npz", shape=(3, 32, 32),
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
}


def _prep(images: np.ndarray, cfg: dict) -> np.ndarray:
    x = images.astype(np.float64) / 255.0
    if x.ndim == 3:
        x = x[:, None]
    else:
        x = x.transpose(0, 3, 1, 2)
    mean = np.asarray(cfg["mean"]).reshape(1, -1, 1, 1)
    std = np.asarray(cfg["std"]).reshape(1, -1, 1, 1)
    return (x - mean) / std


def reach_fields(curve, ann: float) -> dict[str, int | None]:
    """The result row's 1-based steps to reach ANN − 1 %, ANN − 0.1 % and the ANN accuracy (None: not within T)."""
    return {"steps_to_ann_minus_1pct": steps_to_reach(curve, ann - 0.01),
            "steps_to_ann_minus_0.1pct": steps_to_reach(curve, ann - 0.001),
            "steps_to_ann": steps_to_reach(curve, ann)}


def write_json(manifest: dict, path: Path) -> None:
    """Write a result file atomically (parents created)."""
    with atomic_target(path, make_parents=True) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replot", metavar="JSON", help="only redraw the PNG of an existing result file")
    ap.add_argument("--model", choices=sorted(MODELS))
    ap.add_argument("--samples", type=int, default=1000, help="strided test subset size (0 = full test set)")
    ap.add_argument("--shard", default=None, metavar="K/N",
                    help="run only the K-th of N interleaved shards of the selected images (1-based); merge the "
                    "shard files with benchmarks/merge_shards.py. For runs split over processes or machines use "
                    "torchrun instead (module docstring); --shard remains for runs split over sessions")
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--methods", default="const,msat",
                    help="comma list of eval's method names: const, pQ (λ = Q-th percentile), dtt, det, "
                    "msat, -norm after dtt/det/msat, then in this order +pQ (percentile λ for dtt/det/msat), "
                    "+cw (channel-wise λ by channel balancing), "
                    "+h (half-threshold start), +bN (burst, Γ = N) or +bsN (const/pQ: burst Γ = N with θ = λ/N), "
                    "+wc[T] (weight calibration), +bc[T] (bias correction), +sc (spike confidence, calibrated "
                    "as eval does: on the --calib images over the first --sc-window steps of the SC-free network), "
                    "e.g. const+h,p99.9+cw+h,p99.9+h+bs4,msat-norm+b4,msat+sc")
    ap.add_argument("--precision", default="fixed", help="comma list of fixed, float, float-qw")
    ap.add_argument("--preset", default="resnet20")
    ap.add_argument("--input-frac-bits", type=int, default=None, metavar="F_IN",
                    help="fractional bits of the quantized input p_in = round(x/λ0·2^F_in) (default: quantize's, 8)")
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--save-nets", default=None, metavar="DIR",
                    help="also write each method's converted network to DIR/<method>.net (for msat-lava verify)")
    ap.add_argument("--bc-samples", type=int, default=64,
                    help="calibration images used by +bc bias correction (its runs use the first --precision)")
    ap.add_argument("--sc-window", type=int, default=16, metavar="E",
                    help="+sc: steps of the spike-confidence calibration run and the gate's early window (eval's "
                    "default)")
    ap.add_argument("--sc-layers", default="last", help="+sc: gated layers, last | all | comma-separated names")
    ap.add_argument("--batch-size", type=int, default=25,
                    help="images simulated at once (results do not depend on it; 25 keeps a ResNet's tensors in "
                    "cache: ≈ 1.5× faster than 125 on a 2-core CPU)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--synapse-dtype", default="float64", choices=SYNAPSE_DTYPES,
                    help="dtype of the float model's stage-fed synaptic sums (reference.simulate; float32 made "
                    "ResNet20 const 2× and msat 1.2× faster on CPU; fixed point is exact either way)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--report-steps", default="16,32,64,128,256")
    ap.add_argument("--out", help="output path without extension (required unless --replot)")
    args = ap.parse_args(argv)
    if args.replot:
        manifest = json.loads(Path(args.replot).read_text())
        _plot(manifest, Path(args.replot).with_suffix(".png"))
        return 0
    if args.model is None or not args.out:
        ap.error("--model and --out are required")
    from msat_lava.data import DataError
    from msat_lava.methods import parse_methods

    try:
        methods = [str(spec) for spec in parse_methods(args.methods)]  # eval's grammar (msat_lava.methods)
    except DataError as exc:
        ap.error(str(exc))
    shard_kn = None
    if args.shard:
        try:
            shard_kn = tuple(int(v) for v in args.shard.split("/"))
        except ValueError:
            ap.error(f"--shard: expected K/N, got {args.shard!r}")
        if len(shard_kn) != 2 or not 1 <= shard_kn[0] <= shard_kn[1]:
            ap.error(f"--shard: need K/N with 1 <= K <= N, got {args.shard!r}")
    precisions = args.precision.split(",")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        ap.error(f"--precision: unknown {bad}; choose from {', '.join(PRECISIONS)}")
    if not 1 <= args.sc_window <= 256:
        ap.error(f"--sc-window must be in 1..256, got {args.sc_window}")

    from msat_lava import distributed

    with distributed.session(device=args.device) as ctx:
        return _run(args, argv, methods, precisions, shard_kn, ctx)


def _run(args, argv, methods, precisions, shard_kn, ctx) -> int:
    """The run itself; ``ctx``: msat_lava.distributed.Context (one process unless launched by torchrun)."""
    import torch

    from msat_lava import distributed
    from msat_lava.evaluate import NetworkBuilder
    from msat_lava.methods import MethodSpec
    from msat_lava.program import from_converted
    from netx_export import ann
    from netx_export.quantize import state_hash
    from netx_export.trace import trace

    cfg = MODELS[args.model]
    model = cfg["load"]()
    data = np.load(zoo.shared_file(cfg["data"]), allow_pickle=False)
    rng = np.random.default_rng(23)
    calib_idx = np.sort(rng.choice(len(data["x_train"]), args.calib, replace=False))
    x_cal = _prep(data["x_train"][calib_idx], cfg)
    n_test = len(data["x_test"])
    idx = np.arange(n_test) if args.samples in (0, n_test) else \
        np.unique(np.linspace(0, n_test - 1, args.samples).round().astype(int))
    n_selected = len(idx)
    subset = "full" if n_selected == n_test else "strided"
    shard = None
    if shard_kn is not None:
        k, n_sh = shard_kn
        idx = idx[k - 1::n_sh]
        shard = {"k": k, "n": n_sh, "of_samples": int(n_selected), "of_subset": subset}
    x = _prep(data["x_test"][idx], cfg)
    y = data["y_test"][idx]

    t0 = time.perf_counter()
    graph = trace(model, cfg["shape"])
    model_hash = state_hash(model.state_dict())
    input_bits = {} if args.input_frac_bits is None else {"input_frac_bits": args.input_frac_bits}
    # eval's method -> network builder (msat_lava.evaluate): λ per rule on the calibration images (max, pQ, +cw),
    # +wc / +bc on the first --bc-samples of them in the first precision, the method's quantize settings
    builder = NetworkBuilder(graph, x_cal, quantize_options=dict(preset=args.preset, model_hash=model_hash, seed=23,
                                                                 **input_bits),
                             precision=precisions[0].split("-")[0], correction_samples=args.bc_samples,
                             correction_batch_size=args.bc_samples, correction_threads=args.threads,
                             sc_window=args.sc_window, sc_chunk=args.batch_size, calibration_ids=calib_idx,
                             sc_layers=args.sc_layers if args.sc_layers in ("last", "all")
                             else args.sc_layers.split(","))
    _, cal_input_scale, cal_data_hash, _, _ = builder.lambdas_for("const")  # λ = max: the calibration record
    convert_s = time.perf_counter() - t0
    ann_acc = float("nan")
    if ctx.is_main:  # only the aggregates (rank 0) need the ANN
        with torch.no_grad():  # in batches: the whole test set at once holds GBs of float64 activations
            ann_pred = np.concatenate([ann.evaluate(graph, x[i:i + 500]).argmax(1).numpy()
                                       for i in range(0, len(x), 500)])
        ann_acc = float((ann_pred == y).mean())

    report_steps = [int(s) for s in args.report_steps.split(",") if int(s) <= args.steps]
    results = []
    for method in methods:
        spec = MethodSpec.of(method)
        q, cw = spec.percentile, spec.channelwise
        net = builder.network(spec)
        wc, bc = builder.corrections.get(method + " (weights)"), builder.corrections.get(method)
        wc_info = None if wc is None else {**wc[0].to_dict(), "precision": builder.precision,
                                           "wall_s": round(wc[1], 1)}
        bc_info = None if bc is None else {**bc[0].to_dict(), "precision": builder.precision,
                                           "wall_s": round(bc[1], 1)}
        sc = builder.sc_results.get(method)
        sc_info = None if sc is None else {"p": dict(sc.p), "window": sc.window, "precision": sc.precision,
                                           "samples": sc.samples, "mode": sc.mode}
        # every rank converted the network itself: it must be the same before the ranks split the images
        ctx.check_same(net, f"the converted networks of {method}")
        if args.save_nets and ctx.is_main:
            Path(args.save_nets).mkdir(parents=True, exist_ok=True)
            net.save(Path(args.save_nets) / f"{method}.net", overwrite=True)
        program = from_converted(net)
        for precision in precisions:
            t1 = time.perf_counter()
            prog = program if precision != "float-qw" else from_converted(net, float_weights="quantized")
            run = distributed.simulate(ctx, prog, x, args.steps, precision=precision.split("-")[0], sample_ids=idx,
                                       batch_size=args.batch_size, device=ctx.device(args.device),
                                       threads=args.threads, synapse_dtype=args.synapse_dtype)
            wall = time.perf_counter() - t1
            if run is None:  # not rank 0: the predictions went to rank 0
                continue
            curve = run.accuracy(y)
            row = {
                "method": method, "precision": precision,
                "lambda": ("max" if q is None else f"percentile {q}") + (", channel-balanced" if cw else ""),
                "wall_s": round(wall, 1),
                "ms_per_sample_step": round(1000 * wall / (len(y) * args.steps), 3),
                "accuracy": {str(k): round(float(curve[k - 1]), 4) for k in report_steps},
                **reach_fields(curve, ann_acc),
                "curve": [round(float(a), 5) for a in curve],
                "correct": [int(c) for c in (run.predictions == y.reshape(1, -1)).sum(axis=1)],
                "input_clipped": run.input_clipped, "bias_correction": bc_info, "weight_calibration": wc_info,
                "spike_confidence": sc_info,
                "synapse_dtype": args.synapse_dtype if precision != "fixed" else None,
                "saturated": run.saturated,
            }
            results.append(row)
            print(f"{args.model} {method:>6} {precision:>5}: " +
                  " ".join(f"T={k}:{100 * row['accuracy'][str(k)]:.2f}%" for k in report_steps) +
                  f"  (ANN {100 * ann_acc:.2f}%, {row['ms_per_sample_step']} ms/sample-step)", flush=True)

    if not ctx.is_main:  # rank 0 writes the result
        return 0
    out = Path(args.out)
    manifest = {
        "model": args.model, "samples": int(len(y)),
        "subset": subset if shard is None else f"shard {shard['k']}/{shard['n']} of {subset}", "shard": shard,
        "steps": args.steps, "ann_accuracy": ann_acc, "ann_correct": int((ann_pred == y).sum()), "calibration": {
            "images": args.calib, "seed": 23, "lambda": "max", "data_hash": cal_data_hash,
            "input_scale": cal_input_scale},
        "model_hash": model_hash, "preset": args.preset, "input_frac_bits": args.input_frac_bits,
        "convert_s": round(convert_s, 2), "torch_threads": args.threads or torch.get_num_threads(),
        "command": "python benchmarks/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "distributed": ctx.describe(),
        "results": results,
    }
    write_json(manifest, out.with_suffix(".json"))
    if shard is None:  # a shard's curve is one part of a run; merge_shards.py plots the whole
        _plot(manifest, out.with_suffix(".png"))
    return 0


def _plot(manifest: dict, path: Path) -> None:
    from msat_lava.plots import accuracy_plot
    from table import precision_label  # benchmarks/table.py: the same label as the table rows

    series = [dict(label=f"{row['method']}, {precision_label(manifest, row)}",
                   steps=np.arange(1, len(row["curve"]) + 1), accuracy=row["curve"],
                   linestyle="--" if row["precision"] == "float" else "-")
              for row in manifest["results"]]
    ticks = [t for t in (1, 2, 4, 8, 16, 32, 64, 128, 256) if t <= manifest["steps"]]
    accuracy_plot(path, series, ann=manifest["ann_accuracy"], ticks=ticks,
                  title=f"{manifest['model']}: {manifest['samples']} test images ({manifest['subset']})")


if __name__ == "__main__":
    raise SystemExit(main())
