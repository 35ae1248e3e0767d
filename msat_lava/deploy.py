"""``msat-lava deploy``: the Loihi 2 pre-flight report and the hardware run (docs/LOIHI2.md).

:func:`preflight` = the partition plan (:func:`msat_lava.loihi2.partition.plan_network` on
:func:`msat_lava.loihi2.topology.from_program`), the fixed-point width checks
(:func:`msat_lava.loihi2.widths.check_widths`, with a short reference run when inputs are given) and what the
MSAT layers need from a NeuroCore model (:func:`msat_lava.loihi2.microcode.layer_requirements`), gathered in
a :class:`DeployReport` whose ``violations`` lists every broken limit at once (``ok`` ⇔ none).

:func:`run_on_hardware` runs the network on Loihi 2 through :class:`msat_lava.backends.Loihi2Backend` after
its ``check``; with ``sim=True`` a program the hardware cannot run here goes to the CPU fixed-point reference
instead, and the result says so (``backend`` = 'reference', ``hardware_refusal`` = the reason). Nothing
falls back without ``sim``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from msat_lava.loihi2.constraints import Loihi2Constraints
from msat_lava.loihi2.partition import Plan, Violation, plan_network
from msat_lava.loihi2.widths import WidthReport, check_widths

__all__ = ["DeployReport", "preflight", "format_report", "HardwareRun", "run_on_hardware"]


@dataclass
class DeployReport:
    network: str
    plan: Plan
    widths: WidthReport
    requirements: list[dict[str, Any]]
    msat_layers: list[str]

    @property
    def violations(self) -> list[Violation]:
        return list(self.plan.violations) + list(self.widths.violations)

    @property
    def warnings(self) -> list[str]:
        return list(self.widths.warnings)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network, "ok": self.ok, "cores": self.plan.cores,
                "chips_needed": self.plan.chips_needed, "plan": self.plan.to_dict(),
                "widths": self.widths.to_dict(), "violations": [v.to_dict() for v in self.violations],
                "warnings": self.warnings, "microcode_layers": self.msat_layers,
                "microcode_requirements": self.requirements}


def preflight(net: Any, program: Any, constraints: Loihi2Constraints | None = None, *, name: str = "network",
              x: Any = None, sample_ids: Sequence[int] | None = None, steps: int = 16) -> DeployReport:
    """Plan + widths + microcode requirements of a converted network (module docstring)."""
    from netx_export.hdf5 import netx_view

    from msat_lava.loihi2.microcode import layer_requirements, msat_layers
    from msat_lava.loihi2.topology import from_program

    c = constraints or Loihi2Constraints()
    plan = plan_network(from_program(program, name), c)
    widths = check_widths(program, c, netx_view=netx_view(net), x=x, sample_ids=sample_ids, steps=steps)
    return DeployReport(name, plan, widths, layer_requirements(program, max(steps, 256)), msat_layers(program))


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def format_report(report: DeployReport) -> str:
    """The readable per-layer plan, totals, widths, violations and warnings."""
    p, c = report.plan, report.plan.constraints
    head = (f"{'layer':<16}{'model':<8}{'shape':<12}{'neurons':>9}  {'tile':<12}{'cores':>6}{'slots/core':>11}"
            f"{'synmem/core':>12}{'axons in':>10}{'axons out':>10}{'LUT':>7}")
    lines = [f"Loihi 2 plan for {report.network}", head, "-" * len(head)]
    for lp in p.layers:
        flag = "  !" if lp.violations else ""
        lines.append(f"{lp.name[:15]:<16}{lp.model:<8}{_fmt_shape(lp.shape):<12}{lp.neurons:>9}  "
                     f"{_fmt_shape(lp.tile):<12}{lp.cores:>6}{lp.neuron_slots:>11}{lp.synmem_words:>12}"
                     f"{lp.axons_in:>10}{lp.axons_out:>10}{lp.lut_entries:>7}{flag}")
    lines.append("-" * len(head))
    lines.append(f"total: {p.cores} cores, {p.chips_needed} chip(s) needed ({c.cores_per_chip} cores per chip, "
                 f"{c.chips} available); partitioning converged after {p.iterations} iteration(s)")
    lines.append(f"per-core limits: {c.neuron_slots_per_core} neuron slots, {c.synmem_words_per_core} synaptic "
                 f"memory words of {c.synmem_word_bits} bits, {c.axons_in_per_core} axons in, "
                 f"{c.axons_out_per_core} axons out, {c.lut_entries_per_core} LUT entries; one neuron group per core "
                 f"(of {c.neuron_groups_per_core})")
    w = report.widths
    pay = max((r.payload_bits for r in w.rows), default=0)
    acc = max((r.accum_worst_bits for r in w.rows), default=0)
    seen = [r.accum_seen_bits for r in w.rows if r.accum_seen_bits is not None]
    lines.append(f"fixed point: payloads ≤ {pay} bits (hardware {c.payload_bits}), weights "
                 f"{min((r.weight_min for r in w.rows), default=0)}..{max((r.weight_max for r in w.rows), default=0)}"
                 f" ({c.weight_bits}-bit), dendritic sums worst case {acc} bits"
                 + (f", seen {max(seen)} bits in {w.run['samples']} sample(s) × {w.run['steps']} steps"
                    if seen and w.run else "") + f" (accumulator {c.accum_bits})")
    if report.msat_layers:
        lines.append(f"microcode needed (MSAT/LIPool): {len(report.msat_layers)} layer(s); the integer program is "
                     "docs/LOIHI2.md §5 (--json: per-layer widths and LUT sizes)")
    if report.violations:
        lines.append(f"VIOLATIONS ({len(report.violations)}):")
        lines += [f"  {v.message}" for v in report.violations]
    else:
        lines.append("no violations")
    if report.warnings:
        lines.append(f"warnings ({len(report.warnings)}):")
        lines += [f"  {m}" for m in report.warnings]
    return "\n".join(lines)


@dataclass
class HardwareRun:
    """What ``deploy --run`` ran: ``backend`` 'loihi2' or 'reference' (only with ``sim``), the result
    (predictions (T, N), readout (T, N, K)), and ``hardware_refusal``: why Loihi 2 did not run it."""

    backend: str
    result: Any
    run_config: str | None = None
    hardware_refusal: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def recordable_readout(self) -> Any:
        """The readout to record for ``verify --against``: the reference's integers, or None for a netx run
        (its readout is the netx layer's v in netx units, not comparable)."""
        same = getattr(self.result, "readout_units", "reference") == "reference"
        return self.result.readout if same else None


def run_on_hardware(net: Any, program: Any, path: Any, x: Any, steps: int, *, sample_ids: Any = None,
                    sim: bool = False) -> HardwareRun:
    """Run on Loihi 2 (``Loihi2Backend``); a :class:`msat_lava.backends.BackendError` propagates unless
    ``sim``, which runs the CPU fixed-point reference instead and records the refusal."""
    from msat_lava.backends import BackendError, Loihi2Backend, ReferenceBackend

    hw = Loihi2Backend()
    try:
        hw.check(program, net=net)
    except BackendError as exc:
        if not sim:
            raise
        ref = ReferenceBackend()
        ref.check(program, precision="fixed")
        result = ref.run(program, x, steps, precision="fixed", sample_ids=sample_ids)
        return HardwareRun("reference", result, None, str(exc))
    result = hw.run(program, x, steps, net=net, path=path, sample_ids=sample_ids)
    return HardwareRun("loihi2", result, getattr(result, "run_config", None))
