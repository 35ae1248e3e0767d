"""Which cells of issue 17's full-test-set table exist, and what the missing ones would cost.

    python benchmarks/table_coverage.py [--steps 64] [--out benchmarks/results/table_coverage.json] [RESULT.json ...]

Reads the accuracy manifests written by ``benchmarks/accuracy.py`` (default: every ``benchmarks/results/*.json``
that is one; shard files and other reports are skipped) and, for each model × method × precision of the table
(``METHODS``, fixed and float), reports the full-test-set row with the most steps, or, when there is none, the
best subset row and what the full set would cost at ``--steps`` T on this kind of machine:

    cost = N_test · T · c,   c = core-milliseconds per sample-step (a row's ms per sample-step × its
                              processes × its threads per process), taken from, in this order: the same
                              method and precision on the model's reference network (ResNet20 for ResNet32 /
                              56, scaled by the neuron count: × 31/19, × 55/19), the same method in the other
                              precision, then the median of the model's rows

``--measure`` prices every missing cell instead from a timing of this checkout's engine on this machine: each
model's const and msat networks, fixed and float, 25 test images × ``--measure-steps`` (default 64) steps, 1 thread (``FAMILY`` maps a method
to the one it costs like). Full-set rows come first as a basis (they ran on today's engine); old subset rows ran on slower engines and
overstate the cost. Prints a markdown table and writes the same as JSON (``--out``). Nothing here simulates.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

MODELS = {"mnist": 10000, "resnet20": 10000, "resnet32": 10000, "resnet56": 10000}
#: (reference model, neuron-count scale) for pricing: ResNet-(6k+2) has 6k + 1 neuron layers of the same widths
REFERENCE = {"mnist": ("mnist", 1.0), "resnet20": ("resnet20", 1.0), "resnet32": ("resnet20", 31 / 19),
             "resnet56": ("resnet20", 55 / 19)}
#: issue 17 §1's methods, then the best named additions (RESULTS §3.7)
METHODS = ("const", "p99.9", "dtt", "det", "msat", "msat+sc", "msat-norm", "msat-norm+sc", "dtif-r", "bsnn-r",
           "p99.9+h+bs4", "p99.9+h+bs8")
PRECISIONS = ("fixed", "float")
#: the measured network a method's cost is read from under --measure: threshold LUT every step (MSAT family) or a
#: constant / per-layer threshold (max-norm family, burst, DTIF-R's table, BSNN-R's schedule)
FAMILY = {"const": "const", "p99.9": "const", "dtt": "msat", "det": "msat", "msat": "msat", "msat+sc": "msat",
          "msat-norm": "msat", "msat-norm+sc": "msat", "dtif-r": "const", "bsnn-r": "const",
          "p99.9+h+bs4": "const", "p99.9+h+bs8": "const"}


def measure(models=tuple(MODELS), images: int = 25, steps: int = 64) -> dict:
    """{(model, family, precision): core-ms per sample-step} of this checkout's engine (1 thread)."""
    import torch
    from tqdm.auto import tqdm

    from sim_speed import build, time_snn

    torch.set_num_threads(1)
    out = {}
    for model in tqdm(models, desc="timing", unit="model", file=sys.stderr):
        _, progs, x = build(model, ["const", "msat"], calib=64)
        x = x[:images]
        for fam, prog in progs.items():
            for prec in PRECISIONS:
                time_snn(prog, x, 2, prec, 1, "fast", None)  # warm-up: loads the compiled kernels
                wall = min(time_snn(prog, x, steps, prec, 1, "fast", None) for _ in range(2))
                out[(model, fam, prec)] = round(1000 * wall / (images * steps), 3)
    return out


def _manifests(paths):
    for p in paths:
        try:
            m = json.loads(Path(p).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(m, dict) or "results" not in m or "model" not in m or m.get("shard"):
            continue
        if not isinstance(m["results"], list) or not all(isinstance(r, dict) and "curve" in r for r in m["results"]):
            continue
        yield Path(p), m


def collect(paths) -> dict:
    """{(model, method, precision): [row summaries]} over the given result files."""
    cells: dict = {}
    for path, m in _manifests(paths):
        for r in m["results"]:
            if r["precision"] not in PRECISIONS:
                continue
            curve = r["curve"]
            cells.setdefault((m["model"], r["method"], r["precision"]), []).append({
                "file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
                "samples": int(m["samples"]), "full": m.get("subset") == "full", "steps": len(curve),
                "accuracy": {str(k): round(100 * curve[k - 1], 2) for k in (16, 32, 64) if len(curve) >= k},
                "ms_per_sample_step": r.get("ms_per_sample_step"),
                "core_ms_per_sample_step": None if not r.get("ms_per_sample_step") else round(
                    r["ms_per_sample_step"] * int((m.get("distributed") or {}).get("world_size", 1))
                    * int(m.get("torch_threads") or 1), 3),
                "synapse_dtype": r.get("synapse_dtype")})
    return cells


def _basis(rs: list[dict]) -> dict | None:
    """The row to price from: a full-set row first (today's engine), then the largest subset."""
    rs = [r for r in rs if r["core_ms_per_sample_step"]]
    return max(rs, key=lambda r: (r["full"], r["samples"], r["steps"])) if rs else None


def coverage(cells: dict, steps: int, measured: dict | None = None) -> list[dict]:
    rows = []
    med: dict = {}
    for (model, _, prec), rs in cells.items():
        med.setdefault(model, []).extend(r["core_ms_per_sample_step"] for r in rs if r["core_ms_per_sample_step"])
    for model, n_test in MODELS.items():
        ref, scale = REFERENCE[model]
        for method in METHODS:
            for prec in PRECISIONS:
                rs = cells.get((model, method, prec), [])
                full = [r for r in rs if r["full"]]
                if full:
                    best = max(full, key=lambda r: r["steps"])
                    rows.append({"model": model, "method": method, "precision": prec, "status": "full set",
                                 **best})
                    continue
                sub = max(rs, key=lambda r: (r["samples"], r["steps"])) if rs else None
                other = "float" if prec == "fixed" else "fixed"
                c = basis = None
                if measured:
                    c = measured[(model, FAMILY[method], prec)]
                    basis = f"measured now: {model} {FAMILY[method]} {prec}"
                for key, how in (((ref, method, prec), f"{ref} {method} {prec}"),
                                 ((ref, method, other), f"{ref} {method} {other}")):
                    b = None if c is not None else _basis(cells.get(key, []))
                    if b is not None:
                        c = b["core_ms_per_sample_step"] * scale
                        basis = how + ("" if scale == 1.0 else f" × {scale:.2f}") + \
                            ("" if b["full"] else f" ({b['samples']}-image run)")
                        break
                if c is None and med.get(model):
                    c, basis = statistics.median(med[model]), f"median of the {model} rows"
                cost_h = None if c is None else round(n_test * steps * c / 1000 / 3600, 2)
                rows.append({"model": model, "method": method, "precision": prec, "status": "missing",
                             "best_subset": sub, "cost_core_hours": cost_h, "cost_steps": steps,
                             "core_ms_per_sample_step": None if c is None else round(c, 3), "cost_basis": basis})
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| model | method | precision | full set | T=16 / 32 / 64 | result file, or cost of the full set |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "full set":
            acc = " / ".join(r["accuracy"].get(k, "–") if isinstance(r["accuracy"].get(k), str)
                             else f"{r['accuracy'][k]:.2f}" if k in r["accuracy"] else "–" for k in ("16", "32", "64"))
            out.append(f"| {r['model']} | {r['method']} | {r['precision']} | yes (T = {r['steps']}) | {acc} | "
                       f"`{r['file']}` |")
        else:
            sub = r["best_subset"]
            acc = "–" if sub is None else " / ".join(f"{sub['accuracy'][k]:.2f}" if k in sub["accuracy"] else "–"
                                                     for k in ("16", "32", "64")) + f" ({sub['samples']} images)"
            cost = "no measurement to price it" if r["cost_core_hours"] is None else \
                f"≈ {r['cost_core_hours']} core-hours at T = {r['cost_steps']} " \
                f"({r['core_ms_per_sample_step']} core-ms per sample-step: {r['cost_basis']})"
            out.append(f"| {r['model']} | {r['method']} | {r['precision']} | no | {acc} | {cost} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="result manifests (default: benchmarks/results/*.json)")
    ap.add_argument("--steps", type=int, default=64, help="T at which a missing cell is priced")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    ap.add_argument("--measure", action="store_true", help="price the missing cells from a timing made now")
    ap.add_argument("--measure-steps", type=int, default=64,
                    help="T of that timing (short runs read low: early steps are sparse and silent chunks are skipped)")
    args = ap.parse_args(argv)
    paths = args.files or sorted(RESULTS.glob("*.json"))
    measured = measure(steps=args.measure_steps) if args.measure else None
    rows = coverage(collect(paths), args.steps, measured)
    print(markdown(rows))
    done = sum(r["status"] == "full set" for r in rows)
    missing = [r for r in rows if r["status"] == "missing"]
    total = sum(r["cost_core_hours"] or 0.0 for r in missing)
    print(f"\n{done} of {len(rows)} cells have a full-set row; the {len(missing)} missing would cost ≈ "
          f"{total:.1f} core-hours at T = {args.steps}.")
    if args.out:
        from accuracy import write_json  # benchmarks/accuracy.py: atomic
        write_json({"steps": args.steps, "measure_steps": args.measure_steps if measured else None, "rows": rows, "measured_core_ms_per_sample_step": None if measured is None
                    else {"/".join(k): v for k, v in measured.items()}, "full_cells": done, "missing_cells": len(missing),
                    "missing_core_hours": round(total, 1)}, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
