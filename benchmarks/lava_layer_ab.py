"""Lava CPU run time per sample, this checkout's Lava layer against an earlier commit's (issue 15, acceptance 3).

    git worktree add /tmp/lava_old 9ca225f          # the layer before issue 15's reshape
    python benchmarks/lava_layer_ab.py --baseline /tmp/lava_old --rounds 3

Cases (``--cases``), each the run that ``msat-lava verify`` / ``run`` makes:

* ``mnist``: the MNIST CNN of ``benchmarks/verify.sh`` (msat, preset resnet20), 50 test images × 64 steps,
  every stage recorded (what ``verify`` records);
* ``resnet20``: the CIFAR-10 ResNet20 of ``verify.sh``, 4 test images × 32 steps, every stage recorded;
* ``resnet20-readout``: the same network, 4 × 32, only the readout recorded (what ``run`` and ``eval`` need).

Each side converts its own network once with its own ``msat-lava convert`` (verify.sh's arguments) and then, in a fresh child process per measurement, calls its own
:func:`msat_lava.lava.build.run_lava` (one compiled run, fixed point, the default layout). Reported per run:
``wall_s`` (build, compile, run, collect) and ``run_s`` (every step after the first), per sample. The two sides
alternate within each round, the order flipping every round; the summary takes each side's best and median
over the rounds. Both sides' Lava outputs are compared (readout and traces bit-equal), so the timing is of the
same computation. Writes ``--out`` (JSON); needs ../shared/data (or ``MSAT_SHARED_DATA``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "mnist": dict(model="mnist", samples=50, steps=64, record="all"),
    "resnet20": dict(model="resnet20", samples=4, steps=32, record="all"),
    "resnet20-readout": dict(model="resnet20", samples=4, steps=32, record="readout"),
}

#: child script: run one case with one side's code (PYTHONPATH = that tree) and print one JSON line
CHILD = r"""
import json, sys, time
import numpy as np
import torch
torch.set_num_threads(1)
model, path, data, samples, steps, record = sys.argv[1:7]
from netx_export.api import load
from msat_lava.data import load_npz
from msat_lava.program import from_converted
from msat_lava.lava.build import run_lava
program = from_converted(load(path))
mean, std = ((0.1307,), (0.3081,)) if model == "mnist" else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
d = load_npz(data, split="test", samples=int(samples), mean=mean, std=std, input_shape=program.input_shape)
names = tuple(s.name for s in program.stages) if record == "all" else ()
t0 = time.perf_counter()
res = run_lava(program, d.x, int(steps), precision="fixed", sample_ids=d.indices, record=names)
wall = time.perf_counter() - t0
import hashlib
h = hashlib.sha256()
for arr in (res.readout, *[res.traces[n] for n in names]):
    h.update(np.ascontiguousarray(arr).tobytes())
print(json.dumps({"wall_s": wall, "run_s": res.run_s, "compile_s": res.compile_s, "collect_s": res.collect_s,
                  "per_step_s": res.per_step_s, "digest": h.hexdigest()}))
"""

#: ``msat-lava convert`` arguments of benchmarks/verify.sh, per model
CONVERT = {
    "mnist": ["--model", "tests/models.py:MnistNet", "--weights", "{data}/models/shrinkbench_mnistnet.pt",
              "--data", "{data}/mnist.npz", "--norm-mean", "0.1307", "--norm-std", "0.3081"],
    "resnet20": ["--model", "tests/models.py:resnet20", "--weights", "{data}/models/akamaster_resnet20-12fca82f.th",
                 "--data", "{data}/cifar10.npz", "--norm-mean", "0.485,0.456,0.406",
                 "--norm-std", "0.229,0.224,0.225"],
}
DATA_FILE = {"mnist": "mnist.npz", "resnet20": "cifar10.npz"}


def _call(tree: Path, argv: list[str], timeout: float = 1800) -> str:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, *argv], env=env, cwd=str(tree), capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"{argv[:3]} in {tree} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout


def _child(tree: Path, args: list[str]) -> dict:
    return json.loads(_call(tree, ["-c", CHILD, *args]).strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--baseline", required=True, type=Path, help="a worktree of the earlier commit")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default="mnist,resnet20,resnet20-readout")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("MSAT_SHARED_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lava_layer_ab.json")
    a = ap.parse_args(argv)
    cases = [c for c in a.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"--cases: unknown {unknown} (known: {', '.join(CASES)})")
    sides = {"baseline": a.baseline.resolve(), "new": ROOT}
    rev = {k: subprocess.run(["git", "-C", str(v), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip() for k, v in sides.items()}
    tmp = Path(tempfile.mkdtemp(prefix="lava_ab_"))
    nets = {}
    for side, tree in sides.items():
        for model in sorted({CASES[c]["model"] for c in cases}):
            path = tmp / f"{side}_{model}.net"
            conv = [x.format(data=a.data) for x in CONVERT[model]]
            _call(tree, ["-m", "msat_lava.cli", "convert", *conv, "--method", "msat", "--preset", "resnet20",
                         "--out", str(path), "--quiet"])
            nets[side, model] = path
    rows: dict[str, dict[str, list[dict]]] = {c: {s: [] for s in sides} for c in cases}
    for r in range(a.rounds):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for c in cases:
            cfg = CASES[c]
            for side in order:
                res = _child(sides[side], [cfg["model"], str(nets[side, cfg["model"]]),
                                           str(a.data / DATA_FILE[cfg["model"]]), str(cfg["samples"]),
                                           str(cfg["steps"]), cfg["record"]])
                rows[c][side].append(res)
                print(f"round {r + 1} {c:17s} {side:8s} {res['wall_s'] / cfg['samples']:.3f} s/sample "
                      f"(run {res['run_s'] / cfg['samples']:.3f})", flush=True)
    summary = {}
    for c in cases:
        n = CASES[c]["samples"]
        digests = {res["digest"] for s in sides for res in rows[c][s]}
        summary[c] = {"outputs_equal": len(digests) == 1, **CASES[c]}
        for s in sides:
            w = [res["wall_s"] / n for res in rows[c][s]]
            rr = [res["run_s"] / n for res in rows[c][s]]
            summary[c][s] = {"wall_per_sample_s": {"best": min(w), "median": statistics.median(w), "all": w},
                             "run_per_sample_s": {"best": min(rr), "median": statistics.median(rr), "all": rr}}
        b, nw = summary[c]["baseline"], summary[c]["new"]
        summary[c]["new_over_baseline_wall"] = {k: nw["wall_per_sample_s"][k] / b["wall_per_sample_s"][k]
                                                for k in ("best", "median")}
    doc = {"command": "python benchmarks/lava_layer_ab.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "revisions": rev, "rounds": a.rounds, "loadavg_end": os.getloadavg(), "cases": summary}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmpf = a.out.with_suffix(".tmp")
    tmpf.write_text(json.dumps(doc, indent=1))
    os.replace(tmpf, a.out)
    for c in cases:
        s = summary[c]
        print(f"{c:17s} wall/sample best {s['baseline']['wall_per_sample_s']['best']:.3f} -> "
              f"{s['new']['wall_per_sample_s']['best']:.3f} s, median "
              f"{s['baseline']['wall_per_sample_s']['median']:.3f} -> {s['new']['wall_per_sample_s']['median']:.3f}"
              f" (x{s['new_over_baseline_wall']['median']:.3f}); outputs equal: {s['outputs_equal']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
