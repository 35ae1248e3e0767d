"""What a Loihi 2 NeuroCore model of an MSAT layer has to compute: the integer program of the fixed-point
model (msat_lava.dynamics.neuron.step_fixed / fixed_msat_theta, netx_export.lut, docs/FIXED_POINT.md), and
the per-layer numbers of one network (state widths, LUT sizes, shifts). docs/LOIHI2.md §5 is the same program
in prose; :data:`MSAT_ON_HARDWARE` is what ``msat-lava deploy --run`` says when asked to run MSAT on Loihi 2.
"""
from __future__ import annotations

import math
from typing import Any

__all__ = ["MSAT_ON_HARDWARE", "NO_LAVA_LOIHI", "msat_layers", "layer_requirements", "format_requirements",
           "PROGRAM"]

#: The refusal, word for word (docs/LOIHI2.md §5 quotes it; tests check it). {layers}: the MSAT layer names.
MSAT_ON_HARDWARE = (
    "MSAT/LIPool layers ({layers}) need a microcoded Loihi 2 NeuroCore model (LUT-driven adaptive threshold, "
    "soft reset, graded payload; LIPool window accumulators; likewise every non-const neuron model) that only lava-loihi can provide and msat-lava does not ship: the integer program "
    "to implement is docs/LOIHI2.md §5 (msat-lava deploy NET --check --json lists each layer's widths and LUT "
    "sizes). Nothing was run. Use --sim for the CPU fixed-point simulation, or convert with --method const to "
    "run Lava's own Dense/Conv/LIF on the chip.")

#: Without lava-loihi: how to get access (docs/LOIHI2.md §6).
NO_LAVA_LOIHI = (
    "Loihi 2 is not available here: lava-loihi (Intel's proprietary Lava extension) is not installed. Access is "
    "through the Intel Neuromorphic Research Community (INRC; membership is requested from Intel Labs, whose "
    "neuromorphic computing pages describe how), which provides lava-loihi and Loihi 2 systems; docs/LOIHI2.md "
    "§6 lists what to copy to an INRC system and the commands to run there. Nothing was run. Add --sim to run "
    "the CPU fixed-point simulation instead.")

#: One step of an MSAT neuron, t = layer-local step (0-based), for every neuron; all integers (module docs).
PROGRAM = """\
inputs : acc_k, the raw dendritic sum Σ m·p of term k (k = 1..K, one accumulator per term: each has its own e_k)
state  : v̂ (state_bits, saturating), Ŝ (state_bits + ceil(log2 T) bits), t (per layer)
1  x̂  = Σ_k rs(acc_k, e_k) + b̂          rs(a, e) = (a + 2^(−e−1)) >> −e  (e < 0, arithmetic shift), a << e (e ≥ 0)
2  θ̂  = Θc                               mode const
   θ̂  = 2^F                              t = 0
   else V̄ = ⌊Ŝ / t⌋                      floor division by the step count
        Δ̂ = clip(v̂ − V̄, ±2^31)
        z  = dtt_offset + ((Δ̂·(Δ̂ < 0 ? slope_neg : slope_pos) + 2^(P−1)) >> P)
             + I(sp_lut, min(|Δ̂|, (n_sp − 1)·2^sp_shift), sp_shift, 0)                 [dtt, msat]
        z += I(det_lut, clip(x̂ − det_x0, 0, (n_det − 1)·2^det_shift), det_shift, 0)    [det, msat]
        θ̂  = clip(I(sig_lut, clip(z, ±z_max) + z_max, sig_shift, G), 1, 2^F)
        I(L, a, s, g) = (L[i]·2^s + (L[min(i+1, n−1)] − L[i])·r + 2^(s+g−1)) >> (s + g), i = a >> s, r = a mod 2^s
3  m̂  = v̂ + x̂
4  s  = [m̂ ≥ θ̂] (Γ = 1);  s = clip(⌊m̂ / θ̂⌋, 0, Γ) (Γ > 1)
5  s_g = keep(sample, t, neuron) ? s : 0  while sc_p is set and t < E (SplitMix64 gate, FIXED_POINT §5); else s
6  v̂ = clip(m̂ − s_eff·θ̂, ±(2^(state_bits−1) − 1))   s_eff = s ('code') or s_g ('keep_charge')
7  send payload s_g·θ̂ when s_g > 0 (graded, unsigned, ≤ Γ·2^F)
8  Ŝ += v̂;  t += 1;  at a sample boundary: v̂ = v̂(0), Ŝ = 0, t = 0
"""


def msat_layers(program: Any) -> list[str]:
    """Names of the stages that need microcode: neuron stages whose mode is not 'const' (MSAT and every other
    registry model) and LIPool stages (stateful max-pooling has no Lava hardware model either)."""
    return [s.name for s in program.stages
            if (s.kind == "neuron" and s.spec.mode != "const") or s.kind == "lipool"]


def layer_requirements(program: Any, steps: int = 256) -> list[dict[str, Any]]:
    """Per neuron / LIPool stage: what its NeuroCore program needs for runs of ``steps`` steps.

    Widths: v̂ = state_bits; Ŝ = state_bits + ceil(log2 steps) (|Ŝ| ≤ steps·2^(state_bits−1)); the slope product
    |Δ̂|·slope < 2^31·2^31 needs 64-bit multiply (|Δ̂| ≤ 2^(state_bits) in practice: ≤ 2^55);
    LUT entries are int32 (sig_lut + sp_lut + det_lut)."""
    out = []
    for s in program.stages:
        if s.kind == "lipool":
            kh, kw = s.kernel
            out.append({"layer": s.name, "kind": "lipool", "neurons": int(math.prod(s.shape)),
                        "accumulators_per_neuron": int(kh * kw), "accumulator_bits": 64,
                        "program": "A += x (per window element); y = max over non-padding elements; A −= y"})
            continue
        if s.kind != "neuron":
            continue
        spec, luts = s.spec, s.luts
        row: dict[str, Any] = {
            "layer": s.name, "kind": "neuron", "mode": spec.mode, "neurons": int(math.prod(s.shape)),
            "frac_bits": int(spec.frac_bits), "state_bits": int(spec.state_bits),
            "sum_bits": (int(spec.state_bits) + max(1, math.ceil(math.log2(max(2, steps)))))
            if spec.mode in ("dtt", "det", "msat") else None,
            "gamma": int(spec.gamma), "payload_max": int(spec.gamma) << int(spec.frac_bits),
            "terms": [{"source": t.source, "shift": int(t.exp)} for t in s.terms],
            "bias_max": int(abs(s.bias_fixed).max()) if s.bias_fixed is not None and s.bias_fixed.size else 0,
            "sc_gate": spec.sc_gate if spec.sc_enabled else None,
            "sc_early": int(spec.sc_early) if spec.sc_enabled else 0,
        }
        if spec.mode == "const":
            row["theta"] = int(spec.theta_const_fixed)
        elif luts is None or not hasattr(luts, "sig_lut"):   # a registry model (its own tables, or none)
            from msat_lava.loihi2.topology import table_entries

            row["tables"] = type(luts).__name__ if luts is not None else "none"
            row["lut_total"] = table_entries(luts)
            row["program"] = f"the {spec.mode} rule (docs/DESIGN.md §8), not §5's MSAT program"
        elif luts is not None:
            row["lut_entries"] = {"sig": int(luts.sig_lut.size), "sp": int(luts.sp_lut.size),
                                  "det": int(luts.det_lut.size)}
            row["lut_total"] = int(luts.sig_lut.size + luts.sp_lut.size + luts.det_lut.size)
            row["constants"] = {k: int(getattr(luts, k)) for k in (
                "z_frac_bits", "z_max", "sig_shift", "sig_guard", "dtt_offset", "dtt_slope_neg", "dtt_slope_pos",
                "dtt_slope_shift", "sp_shift", "det_x0", "det_shift")}
            row["ops_per_step"] = _ops(spec.mode)
        out.append(row)
    return out


def _ops(mode: str) -> dict[str, int]:
    """Operation count of one step for t ≥ 1 (step 2 of :data:`PROGRAM`, without the K term shifts and the gate):
    divisions, multiplies, table reads, and add/sub/compare/shift/clip."""
    div, mul, reads, alu = 1, 1, 2, 12          # V̄, sigmoid interpolation (2 entries), clips, m̂, s, v̂, Ŝ
    if mode in ("dtt", "msat"):
        mul, reads, alu = mul + 2, reads + 2, alu + 9
    if mode in ("det", "msat"):
        mul, reads, alu = mul + 1, reads + 2, alu + 5
    return {"divide": div, "multiply": mul, "table_reads": reads, "alu": alu}


def format_requirements(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        if r["kind"] == "lipool":
            lines.append(f"  {r['layer']}: LIPool, {r['neurons']} outputs × {r['accumulators_per_neuron']} "
                         "accumulators")
            continue
        if "lut_entries" in r:
            extra = (f"LUTs {r['lut_total']} int32 (sig {r['lut_entries']['sig']}, sp {r['lut_entries']['sp']}, "
                     f"det {r['lut_entries']['det']})")
        elif "lut_total" in r:
            extra = f"tables {r['lut_total']} entries ({r['tables']})"
        else:
            extra = f"θ̂ = {r.get('theta')}"
        shifts = sorted({t["shift"] for t in r["terms"]})
        sums = f"Ŝ {r['sum_bits']} bits, " if r["sum_bits"] else ""
        lines.append(f"  {r['layer']}: mode {r['mode']}, {r['neurons']} neurons, v̂ {r['state_bits']} bits, "
                     f"{sums}{len(r['terms'])} term(s) shifts {shifts}, {extra}")
    return "\n".join(lines)
