"""BSNN-R's fixed model on the fast engine: its fused kernel (``fused.uniform_fixed_chunk``) against the generic
path (the step function per step), alternating, as a ratio to the ANN's own forward (sim_speed.py's definition).

    python benchmarks/uniform_kernel_ab.py            # ResNet20, 25 test images, T = 64, 1 thread, 2 rounds

Both paths give the same integers (tests/test_engine.py); only the time differs.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import sim_speed  # noqa: E402
from msat_lava import engine, reference  # noqa: E402


def main() -> None:
    module, progs, x = sim_speed.build("resnet20", ["bsnn-r"])
    prog, xs = progs["bsnn-r"], x[:25]
    kw = dict(precision="fixed", progress=False, threads=1, batch_size=25)
    fused_rule = engine._uniform_model
    reference.simulate(prog, xs, 16, **kw)  # warm-up: compiled kernels loaded
    for r in range(2):
        for name, rule in (("generic", lambda spec: False), ("fused", fused_rule)):
            engine._uniform_model = rule
            t = time.perf_counter()
            reference.simulate(prog, xs, 64, **kw)
            el = time.perf_counter() - t
            ann = sim_speed.time_ann(module, torch.as_tensor(xs, dtype=torch.float32), 3)
            print(f"{name} round {r}: {el * 1000 / 64:.1f} ms per step, ANN {ann * 1000:.1f} ms, "
                  f"ratio {el / 64 / ann:.2f}", flush=True)
    engine._uniform_model = fused_rule


if __name__ == "__main__":
    main()
