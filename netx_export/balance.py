"""Channel balancing: channel-wise λ (ALGORITHMS §1.5) carried by one λ per spiking layer.

The neuron model and file format have one threshold scale λ^l per spiking layer (DESIGN §4). Channel-wise
normalization is still possible where a layer's channels can be rescaled without changing what the ANN
computes. For a ``relu`` node r

* whose input is a conv/linear P that feeds nothing but r, and
* whose every consumer path reaches only conv/linear nodes through ops that commute with a positive scale per
  channel (maxpool, avgpool, subsample, flatten): no ``add``, no ``chanpad``, not the graph output,

scaling output channel c of P (its weight row and bias) by s_c > 0 scales channel c of r by s_c
(ReLU(s·z) = s·ReLU(z)), and dividing the weights that read channel c in every consumer by s_c restores the
ANN's function exactly (up to float64 rounding). With

    s_c = max_k λ_c' / λ_c   (λ_c = the channel's calibration maximum or percentile; s_c = 1 for dead channels)

every channel of r reaches the same calibration value, so one λ per layer serves each channel as well as its
own λ would: low-activation channels are no longer coded with a fraction of the rate resolution.

In ResNets the block-internal ReLUs (conv1 → ReLU → conv2) qualify; ReLUs that feed a residual ``add`` do not
(their channels are tied to the other branch) and keep the layer-wise λ. :func:`balanceable` lists the nodes
that qualify; :func:`balance_channels` is a pure ``Graph`` → ``Graph`` function.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from netx_export import ir
from netx_export.errors import GraphError

__all__ = ["balanceable", "balance_channels", "calibrate_balanced", "channel_scales"]

_PASS = ("maxpool", "avgpool", "subsample", "flatten")


def _consumer_leaves(graph: ir.Graph, name: str) -> list[tuple[str, tuple[str, ...]]] | None:
    """[(conv/linear node, pass-through path)] reached from ``name``; None when a path hits anything else."""
    out_name = graph.output.name
    leaves: list[tuple[str, tuple[str, ...]]] = []
    stack: list[tuple[str, tuple[str, ...]]] = [(name, ())]
    while stack:
        cur, path = stack.pop()
        if cur == out_name:
            return None
        consumers = graph.consumers(cur)
        if not consumers:
            return None
        for node in consumers:
            if node.kind in ("conv", "linear"):
                leaves.append((node.name, path))
            elif node.kind in _PASS:
                stack.append((node.name, path + (node.name,)))
            else:
                return None
    return leaves


def _why_not(graph: ir.Graph, name: str) -> str | None:
    """None when relu ``name`` can be balanced, else the reason."""
    node = graph[name]
    if node.kind != "relu":
        return f"is a {node.kind} node, not a relu"
    producer = graph[node.inputs[0]]
    if producer.kind not in ("conv", "linear"):
        return f"its input {producer.name!r} is a {producer.kind} node, not a conv/linear"
    if [c.name for c in graph.consumers(producer.name)] != [name]:
        return f"its input {producer.name!r} also feeds other nodes"
    if _consumer_leaves(graph, name) is None:
        return "one of its consumer paths does not end in conv/linear only (add, chanpad or output)"
    return None


def balanceable(graph: ir.Graph) -> list[str]:
    """The relu nodes whose channels :func:`balance_channels` can rescale, in graph order."""
    return [n.name for n in graph if n.kind == "relu" and _why_not(graph, n.name) is None]


def channel_scales(channel_lambdas: np.ndarray) -> np.ndarray:
    """s_c = max_k λ_k / λ_c (float64), 1 where λ_c ≤ 0 or not finite."""
    lam = np.asarray(channel_lambdas, dtype=np.float64).reshape(-1)
    ok = np.isfinite(lam) & (lam > 0)
    if not ok.any():
        return np.ones_like(lam)
    top = lam[ok].max()
    return np.where(ok, top / np.where(ok, lam, 1.0), 1.0)


def _scale_rows(node: ir.Node, s: np.ndarray) -> ir.Node:
    w = np.asarray(node.weight, dtype=np.float64)
    w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
    bias = None if node.bias is None else np.asarray(node.bias, dtype=np.float64) * s
    return replace(node, weight=w, bias=bias)


def _divide_inputs(node: ir.Node, s_in: np.ndarray) -> ir.Node:
    """Divide the weights that read input channel/feature k of ``node`` by s_in[k]."""
    w = np.asarray(node.weight, dtype=np.float64)
    if node.kind == "linear":
        return replace(node, weight=w / s_in.reshape(1, -1))
    cout, cin_g = w.shape[:2]
    groups = node.groups
    per_out = cout // groups
    idx = (np.arange(cout) // per_out)[:, None] * cin_g + np.arange(cin_g)[None, :]
    return replace(node, weight=w / s_in[idx][:, :, None, None])


def balance_channels(graph: ir.Graph, channel_lambdas: Mapping[str, np.ndarray]) -> tuple[ir.Graph, dict]:
    """Rescale the channels of each relu in ``channel_lambdas`` (name → per-channel λ, length C) so that they all
    reach max_c λ_c; returns the new graph and {relu name: scales s (float64, length C)}.

    Raises GraphError naming the node when a relu cannot be balanced (see :func:`balanceable`) or its λ array
    does not have one entry per channel.
    """
    nodes = {n.name: n for n in graph}
    scales: dict[str, np.ndarray] = {}
    for name, lam in channel_lambdas.items():
        if name not in graph:
            raise GraphError("no such node", node=name)
        reason = _why_not(graph, name)
        if reason:
            raise GraphError(f"cannot balance channels: {reason}", node=name)
        shape = graph.shape(name)
        lam = np.asarray(lam, dtype=np.float64).reshape(-1)
        if lam.shape != (shape[0],):
            raise GraphError(f"{lam.size} channel λ for {shape[0]} channels", node=name, field="lam")
        s = channel_scales(lam)
        scales[name] = s
        producer = graph[name].inputs[0]
        nodes[producer] = _scale_rows(nodes[producer], s)
        for leaf, path in _consumer_leaves(graph, name):  # type: ignore[union-attr]
            flat = next((p for p in path if graph[p].kind == "flatten"), None)
            s_in = s
            if flat is not None:  # C-order flatten of (C, H, W): channel c owns features c·H·W … (c+1)·H·W − 1
                s_in = np.repeat(s, int(np.prod(graph.shape(graph[flat].inputs[0])[1:])))
            nodes[leaf] = _divide_inputs(nodes[leaf], s_in)
    return graph.replace(tuple(nodes[n.name] for n in graph)), scales


def calibrate_balanced(graph: ir.Graph, data: Any, *, method: str = "max", percentile: float = 99.99,
                       nonzero_only: bool = False, progress: bool = False) -> tuple[ir.Graph, dict, Any]:
    """Channel-wise λ where the graph allows it: per-channel calibration of ``graph``, balancing of every
    :func:`balanceable` relu, then the layer-wise calibration (same rule) of the balanced graph.

    Returns (balanced graph, {relu: scales}, :class:`~netx_export.calibrate.Calibration` of the balanced graph).
    ``data`` is read twice, so it must be re-iterable (array, tensor, DataLoader, list); a one-shot iterator
    raises CalibrationError.
    """
    from netx_export.calibrate import calibrate
    from netx_export.errors import CalibrationError

    if iter(data) is data:
        raise CalibrationError("channel-wise calibration reads the data twice: pass an array, tensor, DataLoader "
                               "or list, not a one-shot iterator")
    rule = dict(method=method, percentile=percentile, nonzero_only=nonzero_only, progress=progress)
    per_channel = calibrate(graph, data, channelwise=True, **rule)
    balanced, scales = balance_channels(graph, {n: per_channel.lambdas[n] for n in balanceable(graph)})
    return balanced, scales, calibrate(balanced, data, channelwise=False, **rule)
