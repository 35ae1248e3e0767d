"""Old vs new reference engine on the same machine, alternating (the comparison RESULTS §5 quotes).

    git worktree add /tmp/oldwt a080920
    python benchmarks/engine_ab.py --baseline /tmp/oldwt [--steps 32] [--rounds 2] [--methods msat,msat+sc,const]

Each round runs, in a fresh interpreter per checkout (baseline, then this one), ResNet20 on 25 CIFAR-10 test images
for T steps with 1 thread through ``benchmarks/sim_speed.py``'s ``build``/``time_snn`` of that checkout: msat
fixed, msat+sc fixed, msat float, const fixed, const float (best of 2 per process, after a warm-up). Prints one
JSON line per process and the best per configuration.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = r'''
import sys, json
root, steps, methods = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
sys.path[:0] = [root, root + "/benchmarks", root + "/tests"]
import torch; torch.set_num_threads(1)
from sim_speed import build, time_snn
_, progs, x = build("resnet20", methods, calib=64)
x = x[:25]
out = {}
for m in methods:
    for p in ("fixed", "float"):
        if m.endswith("+sc") and p == "float":
            continue
        time_snn(progs[m], x, 2, p, 1, "fast", None)
        out[f"{m}/{p}"] = min(time_snn(progs[m], x, steps, p, 1, "fast", None) for _ in range(2))
print(json.dumps(out))
'''


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="another checkout (git worktree) to compare with")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--methods", default="msat,msat+sc,const")
    args = ap.parse_args(argv)
    best: dict[str, dict[str, float]] = {"baseline": {}, "this": {}}
    for _ in range(args.rounds):
        for name, root in (("baseline", args.baseline), ("this", str(ROOT))):
            env = dict(os.environ, PYTHONPATH=root)
            proc = subprocess.run([sys.executable, "-c", CODE, root, str(args.steps), args.methods], cwd=root,
                                  env=env, capture_output=True, text=True)
            if proc.returncode:
                print(proc.stderr[-2000:], file=sys.stderr)
                return 1
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            print(json.dumps({"checkout": name, **row}), flush=True)
            for k, v in row.items():
                best[name][k] = min(best[name].get(k, float("inf")), v)
    print(json.dumps({"best_seconds": best, "steps": args.steps, "batch": 25, "threads": 1}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
