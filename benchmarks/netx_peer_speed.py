"""PilotNet-LIF (lava-dl's own netx file): our batched simulator vs lava-dl netx on Lava's CPU simulator (issue 18).

    python benchmarks/netx_peer_speed.py                       # batch 16 (ours), 2 samples in Lava, ≈ 1 min
    python benchmarks/netx_peer_speed.py --lava-samples 1 --no-write

**Network and inputs.** ``$MSAT_SHARED_DATA/netx_peer/pilotnet_lif/network.net`` (input 200×66×3 → 5 conv →
flatten → 4 dense, CUBA-LIF), read by :func:`msat_lava.netx_peer.read_netx`. The batch: the golden
``image.npy`` (the input layer's bias mantissas) followed by ``--batch − 1`` images drawn uniformly from the
golden image's range [1, 76] with seed 0. 24 steps per sample, netx ``reset_interval=17`` (the golden procedure;
resets of every layer fall inside the 24 steps).

**Ours.** :class:`msat_lava.netx_peer.NetxSimulator` runs the whole batch at once on the CPU (torch, the threads
torch picks here), recording the output layer's spikes; per sample = best wall time over ``--rounds`` ÷ batch.

**lava-dl.** ``lava.lib.dl.netx.hdf5.Network(net_config, reset_interval=17)`` with the sample's image as
``in_layer.neuron.bias_mant``, run under ``Loihi2SimCfg(select_tag='fixed_pt')`` (the bit-accurate CPU models),
one network per sample (netx runs one sample at a time). ``RunSteps(1)`` first (compile + worker start +
first step, reported as ``lava_first_step_s``), then ``RunSteps(23)``: per sample = that second call × 24/23.
After the 24 steps the u and v of every layer are read back (``Var.get``) and compared with ours: the JSON
records the number of differing values (the cross-check; it must be 0).

Output: JSON on stdout and in ``--out`` (default ``benchmarks/results/netx_peer_speed.json``): per-sample
times, ``ratio`` = lava-dl per sample ÷ ours per sample (how many times faster ours is), the cross-check
mismatch counts, machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msat_lava  # noqa: E402,F401  (Lava compatibility fixes before lava is imported)
from msat_lava.netx_peer import NetxSimulator, read_netx  # noqa: E402

STEPS = 24
RESET_INTERVAL = 17


def _data_dir() -> Path:
    raw = os.environ.get("MSAT_SHARED_DATA")
    base = Path(raw) if raw else ROOT.parent / "shared" / "data"
    return base / "netx_peer" / "pilotnet_lif"


def _batch(image: np.ndarray, batch: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    extra = rng.integers(int(image.min()), int(image.max()) + 1, size=(batch - 1, *image.shape))
    return np.concatenate([image[None].astype(np.int64), extra.astype(np.int64)])


def run_ours(net, images: np.ndarray, rounds: int) -> tuple[float, object]:
    sim = NetxSimulator(net, reset_interval=RESET_INTERVAL)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        sim.run(images, STEPS)
        best = min(best, time.perf_counter() - t0)
    return best, sim


def run_lava(path: Path, image: np.ndarray) -> dict:
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    t0 = time.perf_counter()
    lnet = netx.hdf5.Network(net_config=str(path), reset_interval=RESET_INTERVAL)
    lnet.in_layer.neuron.bias_mant.init = image.astype(int)
    build = time.perf_counter() - t0
    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    try:
        t0 = time.perf_counter()
        lnet.run(condition=RunSteps(num_steps=1), run_cfg=cfg)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        lnet.run(condition=RunSteps(num_steps=STEPS - 1), run_cfg=cfg)
        rest = time.perf_counter() - t0
        states = [(np.asarray(layer.neuron.u.get()), np.asarray(layer.neuron.v.get())) for layer in lnet.layers]
    finally:
        lnet.stop()
    return {"build_s": build, "first_step_s": first, "steps_2_to_24_s": rest,
            "per_sample_s": rest * STEPS / (STEPS - 1), "states": states}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lava-samples", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "netx_peer_speed.json"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.batch < max(1, args.lava_samples):
        ap.error("--batch must be at least --lava-samples")
    import torch

    data = _data_dir()
    path = data / "network.net"
    if not path.is_file():
        print(f"netx_peer_speed: {path} not found (set MSAT_SHARED_DATA)", file=sys.stderr)
        return 2
    net = read_netx(path)
    images = _batch(np.load(data / "image.npy"), args.batch)
    ours_s, sim = run_ours(net, images, args.rounds)
    ours_per_sample = ours_s / args.batch

    lava_runs, mismatch = [], []
    for i in range(args.lava_samples):
        res = run_lava(path, images[i])
        rec = sim.run(images[i], STEPS, record_layers=range(len(net.layers)), record_state=True)
        diff = 0
        for k, (lu, lv) in enumerate(res.pop("states")):
            diff += int((rec.u[k][0][..., -1] != lu).sum()) + int((rec.v[k][0][..., -1] != lv).sum())
        mismatch.append(diff)
        lava_runs.append(res)
    lava_per_sample = min(r["per_sample_s"] for r in lava_runs)
    result = {
        "benchmark": "netx_peer_speed",
        "network": "lava-dl PilotNet-LIF (netx_peer/pilotnet_lif/network.net)",
        "steps": STEPS, "reset_interval": RESET_INTERVAL,
        "ours": {"batch": args.batch, "rounds": args.rounds, "batch_s": ours_s, "per_sample_s": ours_per_sample,
                 "torch_threads": torch.get_num_threads()},
        "lava_dl": {"samples": args.lava_samples, "per_sample_s": lava_per_sample, "runs": lava_runs,
                    "run_cfg": "Loihi2SimCfg(select_tag='fixed_pt')"},
        "ratio": lava_per_sample / ours_per_sample,
        "cross_check_state_mismatches": mismatch,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if not args.no_write:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, out)
    return 0 if all(m == 0 for m in mismatch) else 1


if __name__ == "__main__":
    sys.exit(main())
