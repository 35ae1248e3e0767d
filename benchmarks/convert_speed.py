"""Wall time of ``msat-lava convert`` of the akamaster ResNet56 with 512 calibration images (issue 12: ≤ 30 s on
2 cores).

    python benchmarks/convert_speed.py                 # one run, ≈ 14 s on an idle 2-core machine
    python benchmarks/convert_speed.py --repeat 3      # best of 3
    git worktree add /tmp/before ac6f1af && python benchmarks/convert_speed.py --baseline /tmp/before
                                                       # also time that checkout, alternating; same network?

Runs, as a subprocess of this interpreter (``python -m msat_lava.cli``, the code of this checkout),

    msat-lava convert --model tests/models.py:resnet56 --weights $MSAT_SHARED_DATA/models/akamaster_resnet56-4bfd9763.th
        --data $MSAT_SHARED_DATA/cifar10.npz --norm-mean 0.485,0.456,0.406 --norm-std 0.229,0.224,0.225
        --method msat --preset resnet20 --calib-samples 512 --out <tmp>.net --overwrite --json

and reports, per run: the wall time of the whole process, its CPU time (user + system), the phases the command
times itself (``timings`` of ``convert --json``: load_model, load_data, trace, calibrate, quantize, write,
summary), ``startup`` = wall − their sum (interpreter start and imports), the load average before and after
(other processes on the machine slow a run down) and :func:`netx_export.hdf5.content_hash` of the written file,
which must not change when the converter is made faster. ``--baseline DIR`` runs the same command in another
checkout (e.g. an older commit; its code is imported from DIR) before each run here and reports its runs, its
best wall time, the speed-up and whether both wrote the same network. Output: JSON on stdout and in ``--out``
(default ``benchmarks/results/convert_speed.json``, written atomically); ``best`` is the run with the least
wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netx_export.fileio import atomic_target  # noqa: E402
from netx_export.hdf5 import content_hash  # noqa: E402

GOAL_S = 30.0


def shared_data() -> Path:
    return Path(os.environ.get("MSAT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def command(out: Path, samples: int) -> list[str]:
    data = shared_data()
    return [sys.executable, "-m", "msat_lava.cli", "convert", "--model", "tests/models.py:resnet56",
            "--weights", str(data / "models" / "akamaster_resnet56-4bfd9763.th"), "--data", str(data / "cifar10.npz"),
            "--norm-mean", "0.485,0.456,0.406", "--norm-std", "0.229,0.224,0.225", "--method", "msat",
            "--preset", "resnet20", "--calib-samples", str(samples), "--out", str(out), "--overwrite", "--json"]


def commit(checkout: Path) -> str:
    proc = subprocess.run(["git", "-C", str(checkout), "describe", "--always", "--dirty"], capture_output=True,
                          text=True)
    return proc.stdout.strip() or "unknown"


def run_once(samples: int, checkout: Path = ROOT) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "resnet56.net"
        load_before = os.getloadavg()[0]
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(command(out, samples), cwd=checkout, capture_output=True, text=True)
        wall = time.perf_counter() - start
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"convert failed (exit {proc.returncode}):\n{proc.stderr}")
        info = json.loads(proc.stdout)
        phases = info.get("timings", {})  # an older checkout reports none
        return {
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime, 3),
            "phases_s": {"startup": round(wall - sum(phases.values()), 3), **phases},
            "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "file_bytes": info["file"]["bytes"],
            "content_sha256": content_hash(out),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="number of runs (default 1); best = least wall")
    parser.add_argument("--samples", type=int, default=512, help="calibration images (default 512)")
    parser.add_argument("--baseline", metavar="DIR", help="another checkout to time the same way, alternating")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "convert_speed.json"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    runs, baseline = [], []
    for _ in range(max(1, args.repeat)):
        if args.baseline:
            baseline.append(run_once(args.samples, Path(args.baseline).resolve()))
        runs.append(run_once(args.samples))
    best = min(runs, key=lambda r: r["wall_s"])
    if len({r["content_sha256"] for r in runs}) != 1:
        raise SystemExit("the runs wrote different networks")
    import torch

    result = {
        "benchmark": "msat-lava convert ResNet56 (issue 12: <= 30 s wall on 2 cores)",
        "command": " ".join(["msat-lava"] + command(Path("OUT.net"), args.samples)[3:]),
        "commit": commit(ROOT),
        "goal_s": GOAL_S,
        "best": best,
        "within_goal": best["wall_s"] <= GOAL_S,
        "runs": runs,
        **({"baseline": {
            "checkout": str(Path(args.baseline).resolve()), "commit": commit(Path(args.baseline)),
            "best_wall_s": min(r["wall_s"] for r in baseline),
            "speedup": round(min(r["wall_s"] for r in baseline) / best["wall_s"], 2),
            "same_network": {r["content_sha256"] for r in baseline} == {best["content_sha256"]},
            "runs": baseline}} if baseline else {}),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "platform": platform.platform()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if not args.no_write:
        with atomic_target(args.out, make_parents=True) as tmp:
            Path(tmp).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
