"""Speed of the reference simulator relative to the ANN's own forward pass (issue 12 targets), as JSON.

    python benchmarks/sim_speed.py --out benchmarks/results/sim_speed            # every ratio, ≈ 15 min
    python benchmarks/sim_speed.py --models resnet20 --batches 25 --threads 1 --steps 16 --rounds 2   # quick look

Ratio = reference time for T steps ÷ (T × the ANN's forward time on the same batch, same threads): the ANN is the
model as PyTorch builds it (float32, eval, no_grad, default NCHW layout); its channels-last time is reported
beside it (``ann_cl_ms``), since the simulator runs its convolutions channels-last. The two are measured side by
side: every round times the ANN and then each simulator configuration, and each figure is the best over the
rounds. A warm-up run per configuration (not timed) loads the compiled neuron kernels.

Methods: const (max-norm IF), msat (the paper's raw-unit MSAT), msat+sc (MSAT with the spike-confidence gate at
p = 0.9 on every layer for the first 16 steps; only its cost matters here, not the accuracy of that p); any other
registered neuron model by name with its default parameters (``--methods dtif-r,bsnn-r``; BSNN-R with its
synchronous neurons).
Precisions: fixed (always exact) and float (float32 synaptic sums, float64 neuron state: ``--synapse-dtype``).
``--memory`` additionally runs ResNet20, batch 256, T = 256 (fixed msat) in a child process and reports its peak
resident memory. Models and data come from ../shared/data (MSAT_SHARED_DATA overrides).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import msat_lava  # noqa: E402,F401
import models as zoo  # noqa: E402
from accuracy import MODELS, _prep, write_json  # noqa: E402

METHODS = ("const", "msat", "msat+sc")
TARGET = {"float": 1.3, "fixed": 2.0}


def build(model: str, methods, calib: int = 256):
    """(nn.Module, {method: Program}, test images (float64, normalized))."""
    from msat_lava.program import from_converted
    from netx_export import neurons
    from netx_export.calibrate import calibrate
    from netx_export.quantize import quantize
    from netx_export.trace import trace

    cfg = MODELS[model]
    module = cfg["load"]().eval()
    data = np.load(zoo.shared_file(cfg["data"]), allow_pickle=False)
    rng = np.random.default_rng(23)
    idx = np.sort(rng.choice(len(data["x_train"]), calib, replace=False))
    graph = trace(module, cfg["shape"])
    cal = calibrate(graph, _prep(data["x_train"][idx], cfg), method="max", progress=False)
    programs = {}
    for m in methods:
        mode = m.split("+")[0]
        sc = {s: 0.9 for s in cal.lambdas} if m.endswith("+sc") else None
        g, aliases = neurons.get(mode).prepare_graph(graph)  # BSNN-R: synchronous neurons (their source's λ)
        cal_m = cal
        if aliases:
            lams = dict(cal.lambdas)
            cal_m = {**lams, **{sn: lams[src] for sn, src in aliases.items()}, g.input.name: cal.input_scale}
        net = quantize(g, cal_m, method=mode, preset=None if mode == "const" else "resnet20", sc_p=sc, seed=23)
        programs[m] = from_converted(net)
    return module, programs, _prep(data["x_test"][:512], cfg)


def time_ann(module, x, repeat: int, channels_last: bool = False) -> float:
    """Best-of-3 seconds of one forward pass of ``x`` (float32, no_grad)."""
    import torch

    xt = torch.as_tensor(x, dtype=torch.float32)
    mod = module
    if channels_last:
        import copy

        mod = copy.deepcopy(module).to(memory_format=torch.channels_last)
        xt = xt.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        mod(xt)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(repeat):
                mod(xt)
            best = min(best, (time.perf_counter() - t) / repeat)
    return best


def time_snn(program, x, steps: int, precision: str, threads: int, engine: str, chunk) -> float:
    from msat_lava import reference

    t = time.perf_counter()
    reference.simulate(program, x, steps, precision=precision, batch_size=len(x), threads=threads, progress=False,
                       synapse_dtype="float32", engine=engine, chunk=chunk)
    return time.perf_counter() - t


def peak_memory(steps: int = 256, batch: int = 256) -> dict:
    """Peak RSS of a child process running ResNet20 fixed msat at the given batch and T."""
    code = f"""
import resource, sys, time
sys.path.insert(0, {str(ROOT / 'benchmarks')!r})
from sim_speed import build
from msat_lava import reference
_, progs, x = build("resnet20", ["msat"])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
reference.simulate(progs["msat"], x[:{batch}], {steps}, precision="fixed", batch_size={batch}, progress=False)
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    before, peak, wall = int(out[0]), int(out[1]), float(out[2])
    return {"model": "resnet20", "method": "msat", "precision": "fixed", "batch": batch, "steps": steps,
            "peak_rss_gib": round(peak / 2**20, 3), "rss_before_run_gib": round(before / 2**20, 3),
            "wall_s": round(wall, 1), "target_gib": 4.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,mnist")
    ap.add_argument("--batches", default="25,100")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--precisions", default="float,fixed")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engine", default="fast", choices=("fast", "step"))
    ap.add_argument("--chunk", type=int, default=None, help="time steps per chunk of the fast engine")
    ap.add_argument("--memory", action="store_true", help="also measure peak memory (ResNet20, B=256, T=256)")
    ap.add_argument("--out", default=None, help="write <out>.json")
    args = ap.parse_args(argv)
    import numba
    import torch

    methods = args.methods.split(",")
    precisions = args.precisions.split(",")
    rows = []
    for model in args.models.split(","):
        module, programs, x_all = build(model, methods)
        for threads in (int(v) for v in args.threads.split(",")):
            torch.set_num_threads(threads)
            for batch in (int(v) for v in args.batches.split(",")):
                x = x_all[:batch]
                configs = [(m, p) for m in methods for p in precisions if not (m.endswith("+sc") and p == "float")]
                for m, p in configs:  # warm-up: compile / load kernels, allocate
                    time_snn(programs[m], x, 2, p, threads, args.engine, args.chunk)
                reps = max(1, 200 // batch)
                ann = ann_cl = float("inf")
                best = {c: float("inf") for c in configs}
                for _ in range(args.rounds):
                    ann = min(ann, time_ann(module, x, reps))
                    try:  # a model that .view()s its activations cannot run channels-last
                        ann_cl = min(ann_cl, time_ann(module, x, reps, channels_last=True))
                    except RuntimeError:
                        ann_cl = float("nan")
                    for c in configs:
                        best[c] = min(best[c], time_snn(programs[c[0]], x, args.steps, c[1], threads, args.engine,
                                                        args.chunk))
                for (m, p), snn in best.items():
                    ratio = snn / (args.steps * ann)
                    row = {"model": model, "batch": batch, "threads": threads, "steps": args.steps, "method": m,
                           "precision": p, "ann_ms": round(1e3 * ann, 3), "ann_cl_ms": None if ann_cl != ann_cl else round(1e3 * ann_cl, 3),
                           "snn_ms_per_step": round(1e3 * snn / args.steps, 3),
                           "ms_per_sample_step": round(1e3 * snn / (args.steps * batch), 4),
                           "ratio": round(ratio, 3), "ratio_vs_ann_channels_last": None if ann_cl != ann_cl else round(snn / (args.steps * ann_cl), 3),
                           "target": TARGET[p], "meets_target": bool(ratio <= TARGET[p])}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "numba": numba.__version__, "python": platform.python_version()},
        "engine": args.engine, "chunk": args.chunk, "synapse_dtype_float": "float32", "rounds": args.rounds,
        "command": "python benchmarks/sim_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rows": rows,
    }
    if args.memory:
        result["memory"] = peak_memory()
        print(json.dumps(result["memory"]), flush=True)
    if args.out:
        write_json(result, Path(args.out).with_suffix(".json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
