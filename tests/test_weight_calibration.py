"""msat_lava.weight_calibration (the "+wc" methods): the ridge refit's closed-form properties, and on a small
network a real reduction of each refitted node's error against the ANN, with the graph's structure, λ and
bit-exactness untouched."""
from __future__ import annotations

import numpy as np
import pytest

from msat_lava.weight_calibration import _fit, calibrate_weights
from netx_export import ann, ir
from netx_export.errors import CalibrationError
from netx_export.quantize import quantize


def _graph(seed: int = 0) -> ir.Graph:
    rng = np.random.default_rng(seed)
    return ir.Graph((
        ir.Input("x", shape=(2, 6, 6)),
        ir.Conv("c0", ("x",), weight=rng.normal(size=(4, 2, 3, 3)) * 0.5, bias=rng.normal(size=4) * 0.1,
                padding=(1, 1)),
        ir.Relu("r0", ("c0",)),
        ir.Conv("c1", ("r0",), weight=rng.normal(size=(6, 2, 3, 3)) * 0.4, bias=rng.normal(size=6) * 0.1,
                padding=(1, 1), stride=(2, 2), groups=2),
        ir.Relu("r1", ("c1",)),
        ir.AvgPool("gap", ("r1",), kernel=(3, 3), stride=(3, 3)),
        ir.Flatten("fl", ("gap",)),
        ir.Linear("fc", ("fl",), weight=rng.normal(size=(3, 6)), bias=rng.normal(size=3) * 0.1),
    ))


def test_fit_returns_the_weights_when_the_rates_are_exact():
    """Fed the ANN's own inputs, the data term and the ridge term are both minimal at (W, b): the refit is the
    identity (grouped conv, strides, padding and a linear layer alike)."""
    g = _graph()
    x = np.random.default_rng(1).normal(size=(16, 2, 6, 6))
    _, acts = ann.evaluate(g, x, record=["r0", "c1", "fl", "fc"])
    for node, inp, out in ((g["c1"], acts["r0"], acts["c1"]), (g["fc"], acts["fl"], acts["fc"])):
        w, b = _fit(node, inp.numpy(), out.numpy(), ridge=1e-3)
        np.testing.assert_allclose(w, node.weight, atol=1e-8)
        np.testing.assert_allclose(b, node.bias, atol=1e-8)


def test_fit_undoes_a_known_input_attenuation():
    """Rates that are the ANN activations × 0.5 per channel: the least-squares refit doubles the columns."""
    g = _graph()
    x = np.random.default_rng(2).normal(size=(32, 2, 6, 6))
    _, acts = ann.evaluate(g, x, record=["fl", "fc"])
    w, b = _fit(g["fc"], 0.5 * acts["fl"].numpy(), acts["fc"].numpy(), ridge=1e-9)
    np.testing.assert_allclose(w, 2 * g["fc"].weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, g["fc"].bias, atol=1e-5)


def test_calibration_lowers_each_refitted_nodes_error_and_keeps_structure():
    g = _graph()
    rng = np.random.default_rng(3)
    x_cal = rng.normal(size=(48, 2, 6, 6))
    lams = {"r0": 2.0, "r1": 1.5}

    def convert(graph):
        return quantize(graph, lams, input_scale=3.0, method="const", v_init=0.5)

    seen = []
    res = calibrate_weights(g, x_cal, steps=4, convert=convert, precision="float", ridge=1e-3,
                            on_layer=lambda n, b, a: seen.append((n, b, a)))
    assert res.skipped == {"c0": "fed by the input (exact)"}
    assert [n for n, _, _ in seen] == ["c1", "fc"]
    assert all(a <= b for _, b, a in seen) and any(a < 0.9 * b for _, b, a in seen)
    assert [n.kind for n in res.graph] == [n.kind for n in g]
    assert np.array_equal(res.graph["c0"].weight, g["c0"].weight)
    net = convert(res.graph)
    assert {k: s.lam for k, s in net.neurons.items()} == lams
    assert res.to_dict()["rel_rms_error_after"]["fc"] == pytest.approx(seen[-1][2])
    with pytest.raises(CalibrationError):
        calibrate_weights(g, x_cal, steps=0, convert=convert)
