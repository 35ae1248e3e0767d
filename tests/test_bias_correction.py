"""Bias correction from the SNN's own rates (msat_lava.bias_correction, the "+bc" methods).

Independent expectations: the shift placed on the first layer equals the per-channel mean of (ANN activation −
SNN rate) computed here from a plain reference run's traces; only biases change; the placement rule (conv /
linear feeding the ReLU, first weighted input of a residual add) and its typed refusal; and the correction
lowers every corrected layer's mean |a − r| on the calibration images on a residual network.
"""
from __future__ import annotations

import numpy as np
import pytest

from msat_lava import reference
from msat_lava.bias_correction import bias_node, correct_biases
from msat_lava.program import from_converted
from netx_export import ann, ir
from netx_export.errors import CalibrationError
from netx_export.quantize import quantize

from _nets import convert, random_inputs

STEPS = 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def resmix():
    conv = convert("resmix", "const")
    x = random_inputs(conv.model.input_shape, 12, seed=4)

    def to_net(g):
        return quantize(g, conv.lambdas, method="const", input_scale=conv.net.input_scale, seed=5)

    return conv, x, to_net


def test_bias_node_placement(resmix):
    conv, _, _ = resmix
    g = conv.graph
    for relu in conv.relus:
        name = bias_node(g, relu)
        node, pre = g[name], g[g[relu].inputs[0]]
        assert isinstance(node, (ir.Conv, ir.Linear))
        # directly the pre-activation, or the first weighted input of the residual addition
        assert name == pre.name or (isinstance(pre, ir.Add) and name == next(
            i for i in pre.inputs if isinstance(g[i], (ir.Conv, ir.Linear))))
    assert any(isinstance(g[g[r].inputs[0]], ir.Add) for r in conv.relus), "test net must contain a residual ReLU"


def test_bias_node_refuses_a_relu_without_weighted_input():
    g = ir.Graph((ir.Input("x", (), shape=(2, 4, 4)), ir.AvgPool("p", ("x",), kernel=(2, 2), stride=(2, 2)),
                  ir.Relu("r", ("p",)), ir.Flatten("f", ("r",)),
                  ir.Linear("out", ("f",), weight=np.ones((3, 8)))))
    with pytest.raises(CalibrationError, match="'r'"):
        bias_node(g, "r")


def test_first_shift_is_channel_mean_error_and_only_biases_change(resmix):
    conv, x, to_net = resmix
    g = conv.graph
    first = conv.relus[0]
    res = correct_biases(g, x, steps=STEPS, convert=to_net)
    # independent: ANN activation minus the plain run's rate of the first layer, averaged per channel
    run = reference.simulate(from_converted(to_net(g)), x, STEPS, precision="float", record=[first], progress=False)
    rate = run.traces[first].sum(axis=0) / STEPS
    _, acts = ann.evaluate(g, x, record=[first])
    expect = (acts[first].numpy() - rate).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(res.shift[first], expect, rtol=1e-9, atol=1e-12)
    assert np.abs(expect).max() > 0

    changed = {res.node[r] for r in conv.relus}
    for old, new in zip(g.nodes, res.graph.nodes):
        if old.name in changed:
            b_old = np.zeros(np.asarray(old.weight).shape[0]) if old.bias is None else old.bias
            relu = next(r for r in conv.relus if res.node[r] == old.name)
            np.testing.assert_allclose(new.bias, b_old + res.shift[relu], rtol=0, atol=1e-12)
            np.testing.assert_array_equal(new.weight, old.weight)
        else:
            assert new == old, old.name


@pytest.mark.parametrize("precision", ["float", "fixed"])
def test_correction_reduces_each_layers_error(resmix, precision):
    conv, x, to_net = resmix
    seen = []
    res = correct_biases(conv.graph, x, steps=STEPS, convert=to_net, precision=precision,
                         on_layer=lambda name, b, a: seen.append(name))
    assert seen == conv.relus
    for relu in conv.relus:
        assert res.error_after[relu] < res.error_before[relu], (relu, res.error_before, res.error_after)
    d = res.to_dict()
    assert set(d["mean_abs_error_before"]) == set(conv.relus) and d["steps"] == STEPS and d["samples"] == len(x)


def test_bad_settings(resmix):
    conv, x, to_net = resmix
    with pytest.raises(CalibrationError):
        correct_biases(conv.graph, x, steps=0, convert=to_net)
    with pytest.raises(CalibrationError):
        correct_biases(conv.graph, x[:0], steps=3, convert=to_net)
