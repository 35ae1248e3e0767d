"""The fixed-point file against the hardware widths of :class:`~msat_lava.loihi2.constraints.Loihi2Constraints`
(docs/LOIHI2.md §3).

Rule: a **violation** is a place where the hardware would compute something other than the reference (a value
that does not fit its register); a **warning** is a worst-case bound that real inputs may never reach, or a
loss the reference models identically (v̂ saturation). Widths are signed unless said otherwise:
bits(v) = bit_length(|v|) + 1.

Static checks, per layer:

* payload of every source (what travels between cores): input p_in ∈ ±(2^(F_in+7) − 1); a spiking layer
  s·θ̂ ≤ Γ·2^F; a LIPool output y ∈ [0, P_source] (after each step every window's accumulators are ≤ 0 and the
  previous winner is 0, so the next maximum lies in [0, P]); bits ≤ ``payload_bits``;
* weight mantissas in [−2^(weight_bits−1), 2^(weight_bits−1) − 1];
* neuron state: the layer's ``state_bits`` (v̂) ≤ hardware ``state_bits``;
* bias: MSAT and readout layers add b̂ from a state word: bits(max|b̂|) ≤ ``state_bits``; constant-threshold
  layers run as Lava LIF through the netx view, whose bias is ``bias_mant`` with netx's fixed ``bias_exp`` 6:
  |bias| ≤ 2^(bias_mant_bits−1) − 1;
* dendritic accumulator, worst case: each term's raw sum Σ m·p before the term's shift is bounded by
  max_row Σ|m| · P_source: a warning when bits > ``accum_bits``.

With inputs (a short reference run, :func:`msat_lava.reference.simulate`, fixed point): the largest raw term
sum seen (bits > ``accum_bits`` is a violation), the readout accumulator's largest |value| (bits >
``state_bits`` is a violation: the reference's readout is int64), and the reference's saturation counts
(v̂ reached ±(2^(state_bits−1) − 1); a warning).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from msat_lava.loihi2.constraints import Loihi2Constraints
from msat_lava.loihi2.partition import Violation

__all__ = ["WidthRow", "WidthReport", "check_widths", "signed_bits", "NETX_BIAS_EXP"]

#: netx's CUBA layers load ``bias`` as ``bias_mant`` with ``bias_exp`` 6 (LAVA_NOTES §2.4).
NETX_BIAS_EXP = 6


def signed_bits(v: int) -> int:
    """Width of a signed register holding ±v: bit_length(|v|) + 1."""
    return int(abs(int(v))).bit_length() + 1


@dataclass
class WidthRow:
    layer: str
    kind: str
    payload_max: int               # largest |payload| this layer sends (static bound)
    payload_bits: int
    state_bits: int | None         # the layer's v̂ width (neuron layers)
    bias_max: int
    bias_bits: int
    weight_min: int
    weight_max: int
    accum_worst_bits: int          # worst-case raw term sum into this layer
    accum_seen_bits: int | None = None
    readout_seen_bits: int | None = None
    saturated: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WidthReport:
    rows: list[WidthRow]
    violations: list[Violation]
    warnings: list[str]
    run: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [r.to_dict() for r in self.rows], "violations": [v.to_dict() for v in self.violations],
                "warnings": list(self.warnings), "run": self.run}


def _payload_max(program: Any) -> dict[str, int]:
    out = {"input": (1 << (program.input_frac_bits + 7)) - 1}
    for s in program.stages:
        if s.kind == "neuron":
            out[s.name] = int(s.spec.gamma) << int(s.spec.frac_bits)
        elif s.kind == "lipool":
            out[s.name] = out[s.source]
    return out


def _l1_max(mant: Any) -> int:
    m = np.abs(np.asarray(mant, dtype=np.int64))
    if m.ndim == 0:
        return int(m)
    return int(m.reshape(m.shape[0], -1).sum(axis=1).max()) if m.size else 0


def _weighted(term: Any):
    for op in term.ops:
        if op.kind in ("conv", "linear", "gain"):
            return op
    return None


def check_widths(program: Any, c: Loihi2Constraints, *, netx_view: Any = None, x: Any = None,
                 sample_ids: Sequence[int] | None = None, steps: int = 16) -> WidthReport:
    """Static width checks of ``program`` (module docstring); with inputs ``x`` also a ``steps``-step
    fixed-point reference run. ``netx_view``: the file's :class:`netx_export.hdf5.NetxView` (its biases are
    what a constant-threshold network loads on hardware)."""
    pmax = _payload_max(program)
    rows: list[WidthRow] = []
    violations: list[Violation] = []
    warnings: list[str] = []
    wlo, whi = -(1 << (c.weight_bits - 1)), (1 << (c.weight_bits - 1)) - 1
    view_bias: dict[int, int] = {}
    if netx_view is not None and netx_view.loadable:
        k = 0
        for layer in netx_view.layers[1:]:
            if layer.get("type") in ("conv", "dense"):
                b = layer.get("bias")
                view_bias[k] = int(np.max(np.abs(b))) if b is not None and np.size(b) else 0
                k += 1
    weighted_index = 0
    if pmax["input"] and signed_bits(pmax["input"]) > c.payload_bits:
        violations.append(Violation("input", "payload_bits", signed_bits(pmax["input"]), c.payload_bits,
                                    f"layer 'input': input payload needs {signed_bits(pmax['input'])} bits "
                                    f"(|p_in| ≤ {pmax['input']}) > payload_bits {c.payload_bits}"))
    for s in program.stages:
        if s.kind == "lipool":
            p = pmax[s.name]
            rows.append(WidthRow(s.name, "lipool", p, signed_bits(p), None, 0, 0, 0, 0, 0))
            if signed_bits(p) > c.payload_bits:
                violations.append(Violation(s.name, "payload_bits", signed_bits(p), c.payload_bits,
                                            f"layer {s.name!r}: LIPool payload needs {signed_bits(p)} bits > "
                                            f"payload_bits {c.payload_bits}"))
            continue
        wmin = wmax = 0
        worst = 0
        for t in s.terms:
            op = _weighted(t)
            m = np.asarray(op.mant, dtype=np.int64)
            if m.size:
                wmin, wmax = min(wmin, int(m.min())), max(wmax, int(m.max()))
            worst = max(worst, _l1_max(m) * pmax[t.source])
        bias_max = int(np.max(np.abs(s.bias_fixed))) if s.bias_fixed is not None and np.size(s.bias_fixed) else 0
        is_const = s.kind == "neuron" and s.spec.mode == "const"
        p = pmax.get(s.name, 0)
        row = WidthRow(s.name, s.kind if s.kind == "readout" else s.spec.mode, p, signed_bits(p) if p else 0,
                       int(s.spec.state_bits) if s.kind == "neuron" else None, bias_max, signed_bits(bias_max),
                       wmin, wmax, signed_bits(worst))
        rows.append(row)
        if wmin < wlo or wmax > whi:
            bad = sum(int(np.count_nonzero((np.asarray(_weighted(t).mant) < wlo) | (np.asarray(_weighted(t).mant) > whi)))
                      for t in s.terms)
            violations.append(Violation(s.name, "weight_bits", max(signed_bits(wmin), signed_bits(wmax)),
                                        c.weight_bits,
                                        f"layer {s.name!r}: {bad} weight mantissa(s) outside [{wlo}, {whi}] "
                                        f"(range {wmin}..{wmax}) for weight_bits {c.weight_bits}"))
        if s.kind == "neuron" and p and signed_bits(p) > c.payload_bits:
            violations.append(Violation(s.name, "payload_bits", signed_bits(p), c.payload_bits,
                                        f"layer {s.name!r}: payload Γ·2^F = {p} needs {signed_bits(p)} bits > "
                                        f"payload_bits {c.payload_bits}"))
        if s.kind == "neuron" and s.spec.state_bits > c.state_bits:
            violations.append(Violation(s.name, "state_bits", int(s.spec.state_bits), c.state_bits,
                                        f"layer {s.name!r}: v̂ is {s.spec.state_bits}-bit > hardware state_bits "
                                        f"{c.state_bits}"))
        if is_const and view_bias:
            vb = view_bias.get(weighted_index, 0)
            lim = (1 << (c.bias_mant_bits - 1)) - 1
            if vb > lim:
                violations.append(Violation(s.name, "bias_mant_bits", signed_bits(vb), c.bias_mant_bits,
                                            f"layer {s.name!r}: netx bias {vb} > {lim} (bias_mant_bits "
                                            f"{c.bias_mant_bits}, bias_exp {NETX_BIAS_EXP})"))
        elif not is_const and signed_bits(bias_max) > c.state_bits:
            violations.append(Violation(s.name, "state_bits", signed_bits(bias_max), c.state_bits,
                                        f"layer {s.name!r}: bias {bias_max} needs {signed_bits(bias_max)} bits > "
                                        f"state_bits {c.state_bits}"))
        if signed_bits(worst) > c.accum_bits:
            warnings.append(f"layer {s.name!r}: worst-case raw term sum {worst} needs {signed_bits(worst)} bits > "
                            f"accum_bits {c.accum_bits} (max row Σ|m| × largest source payload; see the "
                            "measured value with --data)")
        weighted_index += 1
    run = None
    if x is not None:
        run = _measure(program, c, rows, violations, warnings, x, sample_ids, steps)
    return WidthReport(rows, violations, warnings, run)


def _measure(program, c, rows, violations, warnings, x, sample_ids, steps) -> dict[str, Any]:
    import torch

    from msat_lava.program import apply_op_torch, input_payload_np
    from msat_lava.reference import simulate

    names = tuple(s.name for s in program.stages if s.kind != "readout")
    ref = simulate(program, x, steps, precision="fixed", sample_ids=sample_ids, record=names,
                   record_readout=True, progress=False)
    by_name = {r.layer: r for r in rows}
    n = int(np.asarray(x).shape[0])
    p_in, _ = input_payload_np(program, np.asarray(x, dtype=np.float64), True)
    cache: dict = {}
    for s in program.stages:
        row = by_name[s.name]
        if s.kind == "lipool":
            continue
        seen = 0
        for t in s.terms:
            if t.source == "input":
                src = torch.as_tensor(p_in, dtype=torch.float64)   # constant every step
            else:
                tr = np.asarray(ref.traces[t.source], dtype=np.float64)
                src = torch.as_tensor(tr.reshape((-1,) + tr.shape[2:]))
            acc = src
            for op in t.ops:
                acc = apply_op_torch(op, acc, True, cache)
            if acc.numel():
                seen = max(seen, int(acc.abs().max().item()))
        row.accum_seen_bits = signed_bits(seen)
        if row.accum_seen_bits > c.accum_bits:
            violations.append(Violation(s.name, "accum_bits", row.accum_seen_bits, c.accum_bits,
                                        f"layer {s.name!r}: raw term sum {seen} seen in the reference run needs "
                                        f"{row.accum_seen_bits} bits > accum_bits {c.accum_bits}"))
        if s.kind == "neuron":
            row.saturated = int(ref.saturated.get(s.name, 0))
            if row.saturated:
                warnings.append(f"layer {s.name!r}: v̂ saturated {row.saturated} time(s) in the reference run "
                                f"({n} sample(s) × {steps} steps; the hardware saturates identically)")
        if s.kind == "readout" and ref.readout is not None and ref.readout.size:
            top = int(np.max(np.abs(ref.readout)))
            row.readout_seen_bits = signed_bits(top)
            if row.readout_seen_bits > c.state_bits:
                violations.append(Violation(s.name, "state_bits", row.readout_seen_bits, c.state_bits,
                                            f"layer {s.name!r}: readout accumulator reached {top} "
                                            f"({row.readout_seen_bits} bits) > state_bits {c.state_bits} within "
                                            f"{steps} steps"))
    return {"samples": n, "steps": int(steps), "saturated": {k: int(v) for k, v in ref.saturated.items()},
            "input_clipped": int(ref.input_clipped)}
