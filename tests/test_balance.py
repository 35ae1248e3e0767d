"""Channel balancing (netx_export.balance): channel-wise λ carried by one λ per layer.

Independent expectations: the balanced graph computes the same ANN function (every output, and every
non-balanced relu, unchanged); a balanced relu's channel c is exactly s_c times the original channel; with
s from the per-channel maxima every live channel then reaches the layer maximum; ineligible relus (feeding a
residual add, or whose producer is not a conv/linear) are refused with the node named."""
from __future__ import annotations

import numpy as np
import pytest

from _nets import build, random_inputs
from netx_export import ann
from netx_export.balance import balance_channels, balanceable, channel_scales
from netx_export.calibrate import calibrate
from netx_export.errors import GraphError
from netx_export.trace import trace


def _graph(name: str):
    model = build(name, seed=0)
    return trace(model, tuple(model.input_shape)), random_inputs(model.input_shape, 24, seed=1)


def _channel_max(act: np.ndarray) -> np.ndarray:
    a = np.asarray(act)
    return a.reshape(a.shape[0], a.shape[1], -1).max(axis=(0, 2)) if a.ndim > 2 else a.max(axis=0)


def test_channel_scales():
    np.testing.assert_allclose(channel_scales([2.0, 0.5, 0.0, 4.0]), [2.0, 8.0, 1.0, 1.0])
    np.testing.assert_array_equal(channel_scales([0.0, 0.0]), [1.0, 1.0])


@pytest.mark.parametrize("name", ["resmix", "poolmix", "mlp"])
def test_balanced_graph_computes_the_same_and_equalizes_channels(name):
    graph, x = _graph(name)
    names = balanceable(graph)
    assert names, "the test network must have a balanceable relu"
    cal = calibrate(graph, x, channelwise=True, progress=False)
    out0, acts0 = ann.evaluate(graph, x, record=True)
    balanced, scales = balance_channels(graph, {n: cal.lambdas[n] for n in names})
    out1, acts1 = ann.evaluate(balanced, x, record=True)
    np.testing.assert_allclose(out1.numpy(), out0.numpy(), rtol=1e-6, atol=1e-6)
    changed = 0
    for node in graph:
        if node.kind != "relu":
            continue
        a0, a1 = np.asarray(acts0[node.name]), np.asarray(acts1[node.name])
        if node.name in names:
            s = scales[node.name].reshape((1, -1) + (1,) * (a0.ndim - 2))
            np.testing.assert_allclose(a1, a0 * s, rtol=1e-6, atol=1e-9)
            m = _channel_max(a1)
            live = _channel_max(a0) > 0
            np.testing.assert_allclose(m[live], m[live].max(), rtol=1e-6)
            changed += int(np.count_nonzero(np.abs(scales[node.name] - 1) > 1e-6))
        else:
            np.testing.assert_allclose(a1, a0, rtol=1e-6, atol=1e-9)
    assert changed > 0


def test_which_relus_qualify_in_a_residual_network():
    """ResMix: the stem relu feeds a maxpool whose output feeds the identity shortcut (add) → no; a block's
    internal relu (conv1 → relu → conv2) → yes; block outputs (relu of an add) → no; the hidden dense relu → yes."""
    graph, _ = _graph("resmix")
    names = set(balanceable(graph))
    for node in graph:
        if node.kind != "relu":
            continue
        src = graph[node.inputs[0]]
        feeds_add = any(c.kind == "add" for c in graph.consumers(node.name)) or any(
            c.kind == "add" for p in graph.consumers(node.name) if p.kind in ("maxpool",)
            for c in graph.consumers(p.name))
        expected = src.kind in ("conv", "linear") and not feeds_add
        assert (node.name in names) == expected, node.name


def test_refusals_name_the_node():
    graph, _ = _graph("resmix")
    bad = next(n.name for n in graph if n.kind == "relu" and graph[n.inputs[0]].kind == "add")
    with pytest.raises(GraphError, match="cannot balance") as exc:
        balance_channels(graph, {bad: np.ones(graph.shape(bad)[0])})
    assert bad in str(exc.value)
    good = balanceable(graph)[0]
    with pytest.raises(GraphError, match="channel λ") as exc:
        balance_channels(graph, {good: np.ones(graph.shape(good)[0] + 1)})
    assert good in str(exc.value)
    with pytest.raises(GraphError, match="no such node"):
        balance_channels(graph, {"nope": np.ones(3)})


def test_convert_channelwise_stores_the_balanced_equivalent_graph():
    import torch

    from netx_export.api import convert
    from netx_export.errors import CalibrationError

    model = build("resmix", seed=0)
    x = random_inputs(model.input_shape, 24, seed=1)
    plain = convert(model, x, method="const", progress=False)
    net = convert(model, x, method="const", channelwise=True, progress=False)
    graph = trace(model, tuple(model.input_shape))
    hp = net.provenance.hyperparameters
    assert hp["channelwise"] is True and hp["balanced_layers"] == balanceable(graph)
    assert plain.provenance.hyperparameters["balanced_layers"] == []
    with torch.no_grad():
        want = model(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(ann.evaluate(net.graph, x).numpy(), want, rtol=1e-4, atol=1e-5)
    # balanced layers: λ = the largest channel maximum, i.e. the plain layer-wise max; others unchanged
    cal = calibrate(graph, x, channelwise=True, progress=False)
    for name, spec in net.neurons.items():
        assert spec.lam == pytest.approx(float(np.max(cal.lambdas[name])), rel=1e-6)
        assert spec.lam == pytest.approx(plain.neurons[name].lam, rel=1e-6)
    changed = [n for n in hp["balanced_layers"]
               if not np.allclose(net.graph[net.graph[n].inputs[0]].weight, graph[graph[n].inputs[0]].weight)]
    assert changed
    with pytest.raises(CalibrationError, match="one-shot"):
        convert(model, iter([x[:12], x[12:]]), method="const", channelwise=True, progress=False)
