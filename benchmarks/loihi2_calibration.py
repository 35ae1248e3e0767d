"""Loihi 2 estimator calibration and deploy plans (issue 15; docs/LOIHI2.md §4, RESULTS §7).

1. The calibration topologies (msat_lava.loihi2.calibration: MNIST 784-128-64-10 CUBA, PilotNet LIF, PilotNet
   SDNN) planned with the default constraints, next to the public core counts of LOIHI2_FACTS.md §2.2, plus a
   sensitivity sweep of the non-public parameters that were calibrated (axons per core, SDN neuron slots,
   synaptic memory word width).
2. With ``--nets A.net B.net ...``: the ``deploy --check`` plan of each network file (cores, chips,
   violations, per-layer tiles).

Writes benchmarks/results/loihi2_calibration.json (and loihi2_plans.json with --nets). No timing: the numbers
are deterministic functions of shapes and constraints.

    .venv/bin/python benchmarks/loihi2_calibration.py [--nets mnist.net resnet20.net resnet56.net]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from msat_lava.loihi2.calibration import PUBLIC_CORES, TOPOLOGIES  # noqa: E402
from msat_lava.loihi2.constraints import Loihi2Constraints  # noqa: E402
from msat_lava.loihi2.partition import plan_network  # noqa: E402
from msat_lava.verify import atomic_write_json  # noqa: E402

SWEEPS = {"axons_in_per_core": (2048, 4096, 8192), "slots.sdn": (3, 4, 5, 6), "synmem_word_bits": (32, 64, 128)}


def calibration() -> dict:
    base = Loihi2Constraints()
    rows = []
    for name, make in TOPOLOGIES.items():
        plan = plan_network(make(), base)
        rows.append({"network": name, "public_cores": PUBLIC_CORES[name], "estimated_cores": plan.cores,
                     "error": (plan.cores - PUBLIC_CORES[name]) / PUBLIC_CORES[name],
                     "layers": [{"name": p.name, "shape": list(p.shape), "tile": list(p.tile), "cores": p.cores}
                                for p in plan.layers]})
    sweeps = {}
    for key, values in SWEEPS.items():
        sweeps[key] = {str(v): {n: plan_network(f(), base.with_overrides({key: v})).cores
                                for n, f in TOPOLOGIES.items()} for v in values}
    return {"constraints": base.to_dict(), "rows": rows, "sensitivity": sweeps}


def plans(paths: list[str]) -> dict:
    from netx_export.api import load

    from msat_lava.deploy import preflight
    from msat_lava.program import from_converted

    out = {}
    for path in paths:
        net = load(path)
        rep = preflight(net, from_converted(net), name=Path(path).name)
        out[Path(path).name] = {"cores": rep.plan.cores, "chips_needed": rep.plan.chips_needed,
                                "violations": [v.message for v in rep.violations],
                                "warnings": len(rep.warnings),
                                "layers": [{"name": p.name, "model": p.model, "shape": list(p.shape),
                                            "tile": list(p.tile), "cores": p.cores, "neuron_slots": p.neuron_slots,
                                            "synmem_words": p.synmem_words, "axons_in": p.axons_in,
                                            "axons_out": p.axons_out, "lut_entries": p.lut_entries}
                                           for p in rep.plan.layers]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="*", default=[], help="network files to plan")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output directory")
    args = ap.parse_args(argv)
    out = Path(args.out)
    cal = calibration()
    atomic_write_json(cal, out / "loihi2_calibration.json")
    print(f"{'network':<16}{'public':>8}{'ours':>6}{'error':>8}")
    for r in cal["rows"]:
        print(f"{r['network']:<16}{r['public_cores']:>8}{r['estimated_cores']:>6}{100 * r['error']:>7.1f}%")
    if args.nets:
        pl = plans(args.nets)
        atomic_write_json(pl, out / "loihi2_plans.json")
        for name, p in pl.items():
            print(f"{name}: {p['cores']} cores, {p['chips_needed']} chip(s), {len(p['violations'])} violation(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
