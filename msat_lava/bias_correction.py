"""Bias correction of a converted network from its own spiking rates (a calibration method, the "+bc" methods).

The converted SNN's time-averaged output of spiking layer l after T steps, r^l = Σ_{t<T} o^l(t) / T, differs
from the ANN activation a^l = ReLU(z^l) of the same image by a systematic part (rate quantization, residual charge
left in the membrane, errors inherited from earlier layers) that is largely the same for every image. Following
the bias-calibration idea of Li et al. 2021 ("A free lunch from ANN: towards efficient, accurate spiking neural
networks calibration", ICML), layer by layer in topological order:

    e^l_c = mean over calibration images and positions of (a^l − r^l) in channel c    (raw units)
    b^l_c ← b^l_c + η · e^l_c

where b^l is the bias of the weighted op (conv / linear) that feeds layer l's pre-activation directly (for a
ReLU after a residual addition: the first conv / linear input of the addition). Layer l is corrected with the
layers before it already corrected, so each layer only removes its own error. a^l always comes from the
ORIGINAL graph; λ^l stays the original calibration, so the thresholds and the fixed-point scales do not move.
The corrected graph is converted as usual (the file holds the corrected biases; nothing else changes).

Calibration images must not be the test set. Cost: one reference run of N images × T steps per spiking layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from netx_export import ir
from netx_export.errors import CalibrationError

__all__ = ["BiasCorrection", "correct_biases", "bias_node"]


@dataclass
class BiasCorrection:
    """Result of :func:`correct_biases`: the corrected ``graph``; per spiking layer the ``node`` whose bias was
    changed, the per-channel ``shift`` added (raw units) and the mean |a − r| before / after its correction."""

    graph: ir.Graph
    steps: int
    samples: int
    node: dict[str, str] = field(default_factory=dict)
    shift: dict[str, np.ndarray] = field(default_factory=dict)
    error_before: dict[str, float] = field(default_factory=dict)
    error_after: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "samples": self.samples, "node": dict(self.node),
                "shift_mean_abs": {k: float(np.abs(v).mean()) for k, v in self.shift.items()},
                "mean_abs_error_before": dict(self.error_before), "mean_abs_error_after": dict(self.error_after)}


def bias_node(graph: ir.Graph, relu: str) -> str:
    """Name of the conv / linear node whose bias feeds ``relu``'s pre-activation directly (see module doc)."""
    src = graph[graph[relu].inputs[0]]
    if isinstance(src, (ir.Conv, ir.Linear)):
        return src.name
    if isinstance(src, ir.Add):
        for name in src.inputs:
            if isinstance(graph[name], (ir.Conv, ir.Linear)):
                return name
    raise CalibrationError(f"spiking layer {relu!r}: no conv/linear feeds its pre-activation directly (it comes "
                           f"from {src.kind} node {src.name!r}); bias correction cannot place a shift there")


def _with_bias_shift(graph: ir.Graph, name: str, shift: np.ndarray) -> ir.Graph:
    node = graph[name]
    bias = np.zeros(np.asarray(node.weight).shape[0]) if node.bias is None else np.asarray(node.bias, np.float64)
    new = replace(node, bias=bias + shift)
    return graph.replace(tuple(new if n.name == name else n for n in graph.nodes))


def _channel_mean(v: np.ndarray) -> np.ndarray:
    return v.mean(axis=(0,) + tuple(range(2, v.ndim)))


def correct_biases(graph: ir.Graph, x: np.ndarray, *, steps: int,
                   convert: Callable[[ir.Graph], Any], precision: str = "float", eta: float = 1.0,
                   batch_size: int = 64, on_layer: Callable[[str, float, float], None] | None = None,
                   threads: int | None = None) -> BiasCorrection:
    """Correct the biases of ``graph`` layer by layer (module docstring).

    ``convert(graph)`` → ConvertedNetwork with the caller's settings (method, λ of the ORIGINAL calibration,
    units, v_init, Γ...); ``x`` (N, *input_shape) calibration images (not the test set); ``steps``
    T of the correction runs; ``precision`` of the reference runs; ``eta`` step size; ``on_layer(name, before,
    after)`` reports progress (mean |a − r| of the layer before / after its correction); ``threads``: torch
    intra-op threads of the runs.
    """
    from netx_export.ann import evaluate

    from msat_lava.program import from_converted
    from msat_lava.reference import simulate

    if steps < 1:
        raise CalibrationError(f"bias correction needs steps >= 1, got {steps}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] < 1:
        raise CalibrationError(f"bias correction needs a batch of calibration images, got shape {x.shape}")
    import torch

    with torch.no_grad():
        relus = [n.name for n in graph if isinstance(n, ir.Relu)]
        _, acts = evaluate(graph, x, record=relus)
    targets = {k: acts[k].cpu().numpy() for k in relus}
    nodes = {k: bias_node(graph, k) for k in relus}
    result = BiasCorrection(graph=graph, steps=int(steps), samples=int(x.shape[0]), node=nodes)

    def rates(g: ir.Graph) -> dict[str, np.ndarray]:
        program = from_converted(convert(g))
        run = simulate(program, x, steps, precision=precision, batch_size=batch_size, progress=False,
                       sums_at=(steps,), threads=threads)
        return run.mean_rates(program, steps)

    g = graph
    current = rates(g)
    for k in relus:
        err = targets[k] - current[k]
        before = float(np.abs(err).mean())
        shift = eta * _channel_mean(err)
        g = _with_bias_shift(g, nodes[k], shift)
        current = rates(g)
        after = float(np.abs(targets[k] - current[k]).mean())
        result.shift[k] = shift
        result.error_before[k] = before
        result.error_after[k] = after
        if on_layer is not None:
            on_layer(k, before, after)
    result.graph = g
    return result
