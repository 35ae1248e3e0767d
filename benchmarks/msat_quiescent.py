"""Per-layer quiescent MSAT threshold θ_q/λ of every model (issue 17 §3; ../shared/spec/MSAT_FIDELITY.md).

A raw-unit MSAT neuron at rest (Δ = 0, no input) has θ_q/λ = σ(τ_mp·(k_a·ln 2 − λ) + τ_rd) (the DTT term
contains V_T = −λ); in normalized units λ is replaced by 1. With Γ = 1 a neuron passes at most θ per step, so a
layer with θ_q/λ ≪ 1 needs ≈ λ/θ_q steps to pass a full-scale charge: that is why raw MSAT reads chance level for
tens of steps on networks with λ ≫ 1 (the akamaster ResNets) and not on the MNIST CNN or the paper's VGG16.

    python benchmarks/msat_quiescent.py --out benchmarks/results/msat_quiescent

writes ``<out>.json`` (per model and layer: λ, θ_q/λ raw and normalized, the steps ⌈λ/θ_q⌉ a full-scale
charge needs at rest) and ``<out>.png`` (θ_q/λ per layer, log scale, one line per model). The λ are those of
benchmarks/accuracy.py (max over 512 training images, seed 23); the MSAT coefficients are the `--preset`
(default resnet20, as accuracy.py). Values come from :func:`netx_export.api.quiescent_theta_ratio` on the
converted networks, the function ``convert`` and ``info`` use for their warning.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import models as zoo  # noqa: E402  tests/models.py
from accuracy import MODELS, _prep  # noqa: E402


def layer_table(model_name: str, preset: str, calib: int = 512) -> list[dict]:
    from netx_export.api import quiescent_theta_ratio
    from netx_export.calibrate import calibrate
    from netx_export.quantize import quantize
    from netx_export.trace import trace

    cfg = MODELS[model_name]
    data = np.load(zoo.shared_file(cfg["data"]), allow_pickle=False)
    rng = np.random.default_rng(23)
    idx = np.sort(rng.choice(len(data["x_train"]), calib, replace=False))
    graph = trace(cfg["load"](), cfg["shape"])
    cal = calibrate(graph, _prep(data["x_train"][idx], cfg), method="max", progress=False)
    nets = {u: quantize(graph, cal, method="msat", preset=preset, msat_units=u, seed=23)
            for u in ("raw", "normalized")}
    rows = []
    for name, spec in nets["raw"].neurons.items():
        r_raw = quiescent_theta_ratio(spec)
        r_norm = quiescent_theta_ratio(nets["normalized"].neurons[name])
        rows.append({"layer": name, "lambda": round(float(spec.lam), 4), "theta_q_over_lambda_raw": r_raw,
                     "theta_q_over_lambda_normalized": r_norm,
                     "steps_full_charge_raw": math.ceil(1 / r_raw) if r_raw else None})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mnist,resnet20,resnet32,resnet56")
    ap.add_argument("--preset", default="resnet20")
    ap.add_argument("--out", default="benchmarks/results/msat_quiescent")
    args = ap.parse_args(argv)
    out = {"preset": args.preset, "command": "python benchmarks/msat_quiescent.py " + " ".join(argv or sys.argv[1:]),
           "models": {}}
    for m in args.models.split(","):
        rows = layer_table(m, args.preset)
        raw = [r["theta_q_over_lambda_raw"] for r in rows]
        out["models"][m] = {"layers": rows, "min_raw": min(raw), "median_raw": float(np.median(raw)),
                            "layers_below_0.1_raw": sum(r < 0.1 for r in raw), "n_layers": len(rows)}
        print(f"{m}: {len(rows)} layers, θ_q/λ raw min {min(raw):.2g} median {np.median(raw):.2g}, "
              f"{sum(r < 0.1 for r in raw)} below 0.1; normalized "
              f"{min(r['theta_q_over_lambda_normalized'] for r in rows):.3f}–"
              f"{max(r['theta_q_over_lambda_normalized'] for r in rows):.3f}", flush=True)
    path = Path(args.out)
    from netx_export.fileio import atomic_target

    with atomic_target(path.with_suffix(".json"), make_parents=True) as tmp:
        Path(tmp).write_text(json.dumps(out, indent=1))
    from msat_lava.plots import figure, save

    fig = figure(8, 4)
    ax = fig.add_subplot(1, 1, 1)
    for m, rec in out["models"].items():
        ax.semilogy(range(1, rec["n_layers"] + 1), [r["theta_q_over_lambda_raw"] for r in rec["layers"]],
                    marker="o", ms=3, label=f"{m} (raw units)")
    ax.axhline(0.1, color="grey", ls="--", lw=0.8, label="0.1 (convert's warning)")
    ax.set_xlabel("spiking layer (in order)")
    ax.set_ylabel("quiescent θ/λ")
    ax.set_title(f"MSAT quiescent threshold per layer (preset {args.preset})")
    ax.legend(fontsize=8)
    save(fig, path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
