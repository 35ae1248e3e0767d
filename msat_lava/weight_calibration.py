"""Weight calibration of a converted network from its own spiking rates (a calibration method, the "+wc" methods).

At small T the spiking layers' rates r^l are systematically off the ANN activations a^l (late first spikes, rate
quantization, charge left in the membrane), and the error compounds with depth. Following the layer-wise weight
calibration of Li et al. 2021 ("A free lunch from ANN", ICML; their "advanced" pipeline), each conv / linear node
W (in topological order, the earlier ones already calibrated) is refitted so that, fed with the SNN's rates, it
reproduces what the ORIGINAL ANN computes there:

    W', b' = argmin  Σ_{images, positions} ‖ W'·R + b' − Z ‖²  +  ρ·M·‖(W', b') − (W, b)‖²

with R the SNN rates arriving at W (the rates of the spiking layer feeding it, after the linear structural ops in
between: avgpool, flatten, subsample, channel padding; im2col patches for a conv), Z the ANN's output of W on
the same image, M the number of rows. One ridge regression per output channel (closed form, float64 normal
equations; ρ keeps W' near W where the rates carry little information). Nodes fed by the input image (the input
is exact) or through a max pooling are left as they are. λ^l stays the original calibration, so thresholds and
fixed-point scales do not move; the file holds the calibrated weights and nothing else changes, so the fixed-point
and Lava runs are bit-exact as for any network. This is an addition (named ``+wc``), not the paper's method. The
calibrated graph is no longer the original ANN (it is fitted to the SNN's rates, not to exact activations): compare
accuracies and per-layer errors against the original model, not against the calibrated graph evaluated as an ANN.
Calibration images must not be the test set. Cost: one reference run of N images × T steps per weighted node.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from netx_export import ir
from netx_export.errors import CalibrationError

__all__ = ["WeightCalibration", "calibrate_weights"]

_STRUCTURAL = (ir.AvgPool, ir.Flatten, ir.Subsample, ir.ChanPad)


@dataclass
class WeightCalibration:
    """Result of :func:`calibrate_weights`: the calibrated ``graph``; per refitted node the relative RMS error of
    its output against the ANN before / after, and the nodes left unchanged with the reason."""

    graph: ir.Graph
    steps: int
    samples: int
    ridge: float
    error_before: dict[str, float] = field(default_factory=dict)
    error_after: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "samples": self.samples, "ridge": self.ridge,
                "rel_rms_error_before": dict(self.error_before), "rel_rms_error_after": dict(self.error_after),
                "skipped": dict(self.skipped)}


def _feeding_chain(graph: ir.Graph, node: ir.Node) -> tuple[str | None, list[ir.Node], str]:
    """(spiking layer whose rates reach ``node``, structural nodes in between (in order), reason if none)."""
    chain: list[ir.Node] = []
    cur = graph[node.inputs[0]]
    while isinstance(cur, _STRUCTURAL):
        chain.append(cur)
        cur = graph[cur.inputs[0]]
    if isinstance(cur, ir.Relu):
        return cur.name, chain[::-1], ""
    if isinstance(cur, ir.Input):
        return None, [], "fed by the input (exact)"
    return None, [], f"fed through {cur.kind} node {cur.name!r}"


def _apply_chain(x: np.ndarray, chain: list[ir.Node], in_shape: tuple[int, ...]) -> np.ndarray:
    """The structural ``chain`` applied to a batch (as the ANN computes it)."""
    if not chain:
        return x
    from netx_export.ann import evaluate

    nodes: list[ir.Node] = [ir.Input("rates", shape=in_shape)]
    prev = "rates"
    for n in chain:
        nodes.append(replace(n, inputs=(prev,)))
        prev = n.name
    import torch

    with torch.no_grad():
        return evaluate(ir.Graph(tuple(nodes)), x).cpu().numpy()


def _fit(node: ir.Node, r: np.ndarray, z: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge refit of a conv / linear node (module docstring): (weight, bias) of the node's shapes."""
    import torch
    import torch.nn.functional as F

    w0 = np.asarray(node.weight, dtype=np.float64)
    b0 = np.zeros(w0.shape[0]) if node.bias is None else np.asarray(node.bias, dtype=np.float64)
    if isinstance(node, ir.Linear):
        groups, rows = 1, [r.reshape(r.shape[0], -1)]
        targets = [z.reshape(z.shape[0], -1)]
    else:
        groups = int(node.groups)
        kh, kw = w0.shape[2:]
        cols = F.unfold(torch.as_tensor(r), (kh, kw), padding=node.padding, stride=node.stride)  # (N, C·kh·kw, P)
        cols = cols.reshape(r.shape[0], groups, -1, cols.shape[-1])
        rows = [cols[:, g].permute(0, 2, 1).reshape(-1, cols.shape[2]).numpy() for g in range(groups)]
        zz = z.reshape(z.shape[0], z.shape[1], -1)
        per = w0.shape[0] // groups
        targets = [zz[:, g * per:(g + 1) * per].transpose(0, 2, 1).reshape(-1, per) for g in range(groups)]
    w_new = np.empty_like(w0.reshape(w0.shape[0], -1))
    b_new = np.empty_like(b0)
    per = w0.shape[0] // groups
    for g in range(groups):
        a = np.concatenate([rows[g], np.ones((rows[g].shape[0], 1))], axis=1)
        m = a.shape[0]
        reg = ridge * m * max(float(np.mean(a[:, :-1] ** 2)), 1e-12)
        ata = a.T @ a + reg * np.eye(a.shape[1])
        theta0 = np.concatenate([w0.reshape(w0.shape[0], -1)[g * per:(g + 1) * per], b0[g * per:(g + 1) * per, None]],
                                axis=1)
        rhs = a.T @ targets[g] + reg * theta0.T
        sol = np.linalg.solve(ata, rhs).T  # (per, in + 1)
        w_new[g * per:(g + 1) * per] = sol[:, :-1]
        b_new[g * per:(g + 1) * per] = sol[:, -1]
    if not np.all(np.isfinite(w_new)) or not np.all(np.isfinite(b_new)):
        raise CalibrationError(f"weight calibration of {node.name!r} did not give finite weights")
    return w_new.reshape(w0.shape), b_new


def _rel_rms(node: ir.Node, r: np.ndarray, z: np.ndarray, w: np.ndarray, b: np.ndarray) -> float:
    from netx_export.ann import evaluate

    g = ir.Graph((ir.Input("r", shape=tuple(r.shape[1:])), replace(node, inputs=("r",), weight=w, bias=b)))
    import torch

    with torch.no_grad():
        y = evaluate(g, r).cpu().numpy()
    return float(np.sqrt(np.mean((y - z) ** 2)) / max(np.sqrt(np.mean(z ** 2)), 1e-12))


def calibrate_weights(graph: ir.Graph, x: np.ndarray, *, steps: int, convert: Callable[[ir.Graph], Any],
                      precision: str = "float", ridge: float = 1e-3, batch_size: int = 64,
                      on_layer: Callable[[str, float, float], None] | None = None,
                      threads: int | None = None) -> WeightCalibration:
    """Refit the conv / linear nodes of ``graph`` node by node (module docstring).

    ``convert(graph)`` → ConvertedNetwork with the caller's settings (method, λ of the ORIGINAL calibration,
    v_init, Γ …); ``x`` (N, *input_shape) calibration images (not the test set); ``steps`` T of the calibration
    runs; ``precision`` of those reference runs; ``ridge`` ρ; ``on_layer(name, before, after)`` reports the
    node's relative RMS output error against the ANN before / after its refit.
    """
    from netx_export.ann import evaluate

    from msat_lava.program import from_converted
    from msat_lava.reference import simulate

    if steps < 1:
        raise CalibrationError(f"weight calibration needs steps >= 1, got {steps}")
    if not ridge > 0:
        raise CalibrationError(f"weight calibration needs ridge > 0, got {ridge}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] < 1:
        raise CalibrationError(f"weight calibration needs a batch of calibration images, got shape {x.shape}")
    import torch

    weighted = [n for n in graph if isinstance(n, (ir.Conv, ir.Linear))]
    with torch.no_grad():
        _, acts = evaluate(graph, x, record=[n.name for n in weighted])
    targets = {k: v.cpu().numpy() for k, v in acts.items()}
    shapes = graph.shapes()
    result = WeightCalibration(graph=graph, steps=int(steps), samples=int(x.shape[0]), ridge=float(ridge))

    def rates(g: ir.Graph) -> dict[str, np.ndarray]:
        program = from_converted(convert(g))
        run = simulate(program, x, steps, precision=precision, batch_size=batch_size, progress=False,
                       sums_at=(steps,), threads=threads)
        return run.mean_rates(program, steps)

    g = graph
    current = None
    for node in weighted:
        src, chain, why = _feeding_chain(g, g[node.name])
        if src is None:
            result.skipped[node.name] = why
            continue
        if current is None:
            current = rates(g)
        r = _apply_chain(current[src], chain, tuple(shapes[src]))
        z = targets[node.name]
        cur = g[node.name]
        w_old = np.asarray(cur.weight, np.float64)
        b_old = np.zeros(w_old.shape[0]) if cur.bias is None else np.asarray(cur.bias, np.float64)
        before = _rel_rms(cur, r, z, w_old, b_old)
        w, b = _fit(cur, r, z, ridge)
        after = _rel_rms(cur, r, z, w, b)
        if after < before:
            g = g.replace(tuple(replace(n, weight=w, bias=b) if n.name == node.name else n for n in g.nodes))
            current = None  # downstream rates change
        else:
            after = before
        result.error_before[node.name] = before
        result.error_after[node.name] = after
        if on_layer is not None:
            on_layer(node.name, before, after)
    result.graph = g
    return result
