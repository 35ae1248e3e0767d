"""netx_export.quantize: hand-computed mantissas/exponents/biases, term expansion, validation, provenance."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netx_export import ir
from netx_export.errors import QuantizationError, UnsupportedOpError
from netx_export.lut import ThresholdLuts, make_luts
from netx_export.neuron import PRESETS, MsatCoefs, NeuronSpec
from netx_export.quantize import (EXPONENT_MAX, FORMAT_VERSION, ConvertedNetwork, QuantizationWarning, Term,
                                  expand_terms, quantize, quantize_weight, state_hash, tool_version)


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------------------
# mantissa / exponent
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("w, mant, e", [
    ([0.5, -0.25, 1.0], [32, -16, 64], -6),      # 1/2^-6 = 64 <= 127 < 128 = 1/2^-7
    ([127.0], [127], 0),
    ([127.5, 1.0], [64, 1], 1),                  # 127.5/2 = 63.75 -> 64; 1/2 = 0.5 -> floor(1.0) = 1
    ([0.3], [77], -8),                           # 0.3*256 = 76.8 -> 77; 0.3*512 = 153.6 > 127
    ([-1.0, 0.0], [-64, 0], -6),
    ([0.0, 0.0], [0, 0], 0),
    ([3.0 / 256], [96], -13),                    # 3/256·2^13 = 96; ·2^14 = 192 > 127
])
def test_mantissa_exponent_known_weights(w, mant, e):
    q, exp, clipped = quantize_weight(np.array(w))
    want = np.floor(np.array(w) / 2.0 ** e + 0.5).astype(np.int8)
    assert exp == e
    assert q.dtype == np.int8
    np.testing.assert_array_equal(q, want)
    assert clipped == 0
    np.testing.assert_array_equal(q, np.array(mant, dtype=np.int8))


def test_mantissa_rounds_half_up_and_never_exceeds_127():
    w = np.array([127 * 2.0 ** -5, 2.5 * 2.0 ** -5, -2.5 * 2.0 ** -5])
    q, e, clipped = quantize_weight(w)
    assert e == -5 and clipped == 0
    np.testing.assert_array_equal(q, [127, 3, -2])  # floor(x + 0.5): half up


def test_exponent_limit_clips_and_counts():
    q, e, clipped = quantize_weight(np.array([2.0 ** 30, 1.0]))
    assert e == EXPONENT_MAX and clipped == 1 and q[0] == 127


# ---------------------------------------------------------------------------------------------------------
# a small MLP computed by hand
# ---------------------------------------------------------------------------------------------------------

def _mlp():
    return ir.Graph((
        ir.Input("x", shape=(2,)),
        ir.Linear("fc1", ("x",), weight=np.array([[0.5, -0.25], [1.0, 0.125], [0.0, 0.75]]),
                  bias=np.array([0.1, -0.2, 0.0])),
        ir.Relu("r1", ("fc1",)),
        ir.Linear("fc2", ("r1",), weight=np.array([[1.0, -2.0, 0.5], [0.25, 0.0, -1.0]]), bias=np.array([0.5, -1.5])),
    ))


def test_mlp_terms_and_biases_by_hand():
    net = quantize(_mlp(), {"r1": 2.0}, input_scale=4.0, method="const")
    assert [t.name for t in net.targets] == ["r1", "fc2"]
    r1, out = net.targets
    # input term: w = W·(λ0/λ1)·2^(F−F_in) = W·(4/2)·2^4 = 32·W; max 32 -> e = -1 (32/2^-2 = 128 > 127)
    (t,) = r1.terms
    assert (t.source, t.path, t.op) == ("x", ("fc1",), "fc1")
    w = np.array([[0.5, -0.25], [1.0, 0.125], [0.0, 0.75]]) * 32
    assert t.exponent == -1  # 32/2^-1 = 64 <= 127; 32/2^-2 = 128 > 127
    np.testing.assert_array_equal(t.mantissa, np.floor(w * 2 + 0.5).astype(np.int8))
    # bias: b/λ·2^12
    np.testing.assert_array_equal(r1.bias, np.floor(np.array([0.1, -0.2, 0.0]) / 2.0 * 4096 + 0.5).astype(np.int32))
    assert r1.bias.dtype == np.int32 and r1.lam == 2.0 and r1.frac_bits == 12
    # readout: λ = 1, F = 12; w = W·(2/1)·2^0; max 4 -> e = -4 (4/2^-5 = 128 > 127)
    (t2,) = out.terms
    assert (t2.source, t2.path, t2.op) == ("r1", ("fc2",), "fc2")
    w2 = np.array([[1.0, -2.0, 0.5], [0.25, 0.0, -1.0]]) * 2.0
    assert t2.exponent == -4
    np.testing.assert_array_equal(t2.mantissa, np.floor(w2 / 2.0 ** -4 + 0.5).astype(np.int8))
    np.testing.assert_array_equal(out.bias, np.array([2048, -6144], dtype=np.int32))
    assert out.lam == 1.0 and out.frac_bits == 12 and out.kind == "readout"
    assert net.input_scale == 4.0 and net.input_frac_bits == 8
    rep = net.report.layer("r1")
    assert rep.terms[0].clipped == 0 and rep.terms[0].rel_rms_error == 0.0  # all exact in 7 bits


def test_input_term_uses_input_frac_bits():
    g = _mlp()
    a = quantize(g, {"r1": 2.0}, input_scale=4.0, method="const", input_frac_bits=8).targets[0].terms[0]
    b = quantize(g, {"r1": 2.0}, input_scale=4.0, method="const", input_frac_bits=6).targets[0].terms[0]
    np.testing.assert_array_equal(a.mantissa, b.mantissa)
    assert a.exponent == b.exponent - 2  # 2^(F − F_in): two more input bits, two fewer target bits per LSB


# ---------------------------------------------------------------------------------------------------------
# bias propagation, residual terms
# ---------------------------------------------------------------------------------------------------------

def test_bias_propagates_through_padded_avgpool():
    # relu r0 -> conv c1 (bias) -> avgpool 3x3 s1 p1 (count_include_pad) -> relu r1: the border sees 4/9, 6/9
    b = np.array([0.9, -0.45])
    g = ir.Graph((
        ir.Input("x", shape=(1, 4, 4)),
        ir.Conv("c0", ("x",), weight=np.ones((1, 1, 1, 1))),
        ir.Relu("r0", ("c0",)),
        ir.Conv("c1", ("r0",), weight=np.full((2, 1, 1, 1), 0.5), bias=b),
        ir.AvgPool("ap", ("c1",), kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
        ir.Relu("r1", ("ap",)),
        ir.Flatten("f", ("r1",)),
        ir.Linear("fc", ("f",), weight=np.ones((1, 32))),
    ))
    net = quantize(g, {"r0": 1.0, "r1": 0.5}, input_scale=1.0, method="const")
    r1 = net.target("r1")
    frac = np.array([[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]) / 9.0
    want = np.floor(b[:, None, None] * frac[None] / 0.5 * 4096 + 0.5).astype(np.int32)
    np.testing.assert_array_equal(r1.bias, want)
    (t,) = r1.terms
    assert (t.source, t.path, t.op) == ("r0", ("c1", "ap"), "c1")
    # w = 0.5·(1/0.5)·2^0·(1/9) = 1/9 -> e = -10 (1/9·1024 = 113.8), mantissa 114
    assert t.exponent == -10
    np.testing.assert_array_equal(t.mantissa, np.full((2, 1, 1, 1), 114, dtype=np.int8))


def test_bias_through_add_subsample_chanpad_and_readout_chain():
    # two biased convs summed (biases add); a flatten readout after avgpool carries the linear bias unchanged
    g = ir.Graph((
        ir.Input("x", shape=(2, 4, 4)),
        ir.Conv("ca", ("x",), weight=np.ones((2, 2, 1, 1)) * 0.1, bias=np.array([0.25, 0.5])),
        ir.Relu("ra", ("ca",)),
        ir.Conv("cb", ("ra",), weight=np.ones((4, 2, 1, 1)) * 0.2, bias=np.array([1.0, 2.0, 3.0, 4.0]),
                stride=(2, 2)),
        ir.Conv("cc", ("ra",), weight=np.ones((4, 2, 1, 1)) * 0.3, bias=np.array([-1.0, 0.0, 1.0, 0.5]),
                stride=(2, 2)),
        ir.Subsample("ss", ("ra",), step=(2, 2)),
        ir.ChanPad("cp", ("ss",), before=1, after=1),
        ir.Add("add", ("cb", "cc", "cp")),
        ir.Relu("rb", ("add",)),
        ir.AvgPool("gap", ("rb",), kernel=(2, 2), stride=(2, 2)),
        ir.Flatten("fl", ("gap",)),
        ir.Linear("fc", ("fl",), weight=np.eye(4), bias=np.array([0.5, 0.0, 0.0, -0.5])),
    ))
    net = quantize(g, {"ra": 2.0, "rb": 4.0}, input_scale=1.0, method="const")
    rb = net.target("rb")
    want = np.floor(np.array([0.0, 2.0, 4.0, 4.5])[:, None, None] * np.ones((1, 2, 2)) / 4.0 * 4096 + 0.5)
    np.testing.assert_array_equal(rb.bias, want.astype(np.int32))
    srcs = [(t.source, t.path, t.op) for t in rb.terms]
    assert srcs == [("ra", ("cb",), "cb"), ("ra", ("cc",), "cc"), ("ra", ("ss", "cp"), None)]
    gain = rb.terms[2]
    assert gain.mantissa.shape == () and gain.mantissa.dtype == np.int8
    # identity gain = λ_ra/λ_rb = 0.5 -> e = -7 (0.5·2^8 = 128 > 127), mantissa 64
    assert gain.exponent == -7 and int(gain.mantissa) == 64
    np.testing.assert_array_equal(net.readout.bias, np.array([2048, 0, 0, -2048], dtype=np.int32))
    (t,) = net.readout.terms
    assert (t.source, t.path, t.op) == ("rb", ("gap", "fl", "fc"), "fc")  # w = I·4/4 -> 1.0 -> e = -6, 64
    assert t.exponent == -6
    np.testing.assert_array_equal(t.mantissa, (np.eye(4) * 64).astype(np.int8))


def _resnet_block_graph(rng):
    """input -> c0 -> r0 -> c1 (s2) -> r1 -> c2 -> add(c2, chanpad(subsample(r0))) -> r2
    -> c3 -> add(c3, r2) -> r3 -> maxpool -> gap -> flatten -> fc   (option-A and identity shortcuts)."""
    return ir.Graph((
        ir.Input("x", shape=(3, 8, 8)),
        ir.Conv("c0", ("x",), weight=rng.normal(size=(4, 3, 3, 3)) * 0.3, bias=rng.normal(size=4) * 0.1,
                padding=(1, 1)),
        ir.Relu("r0", ("c0",)),
        ir.Conv("c1", ("r0",), weight=rng.normal(size=(8, 4, 3, 3)) * 0.3, bias=rng.normal(size=8) * 0.1,
                stride=(2, 2), padding=(1, 1)),
        ir.Relu("r1", ("c1",)),
        ir.Conv("c2", ("r1",), weight=rng.normal(size=(8, 8, 3, 3)) * 0.3, bias=rng.normal(size=8) * 0.1,
                padding=(1, 1)),
        ir.Subsample("ss", ("r0",), step=(2, 2)),
        ir.ChanPad("cp", ("ss",), before=2, after=2),
        ir.Add("a1", ("c2", "cp")),
        ir.Relu("r2", ("a1",)),
        ir.Conv("c3", ("r2",), weight=rng.normal(size=(8, 8, 3, 3)) * 0.3, bias=rng.normal(size=8) * 0.1,
                padding=(1, 1)),
        ir.Add("a2", ("c3", "r2")),
        ir.Relu("r3", ("a2",)),
        ir.MaxPool("mp", ("r3",), kernel=(2, 2), stride=(2, 2)),
        ir.AvgPool("gap", ("mp",), kernel=(2, 2), stride=(2, 2)),
        ir.Flatten("fl", ("gap",)),
        ir.Linear("fc", ("fl",), weight=rng.normal(size=(5, 8)), bias=rng.normal(size=5) * 0.1),
    ))


LAMS = {"r0": 1.5, "r1": 2.5, "r2": 3.0, "r3": 4.0}


def test_residual_terms_identity_and_option_a():
    g = _resnet_block_graph(_rng(3))
    net = quantize(g, LAMS, input_scale=2.0, method="msat", preset="resnet20")
    r2, r3 = net.target("r2"), net.target("r3")
    assert [(t.source, t.path, t.op) for t in r2.terms] == [("r1", ("c2",), "c2"), ("r0", ("ss", "cp"), None)]
    assert [(t.source, t.path, t.op) for t in r3.terms] == [("r2", ("c3",), "c3"), ("r2", (), None)]
    # option A gain λ0/λ2 = 1.5/3 = 0.5 -> 64·2^-7; identity gain λ2/λ3 = 0.75 -> 96·2^-7
    assert (int(r2.terms[1].mantissa), r2.terms[1].exponent) == (64, -7)
    assert (int(r3.terms[1].mantissa), r3.terms[1].exponent) == (96, -7)
    # LIPool output keeps its relu's scale: readout term from mp has λ_src = λ(r3)
    (t,) = net.readout.terms
    assert (t.source, t.path, t.op) == ("mp", ("gap", "fl", "fc"), "fc")
    w = g["fc"].weight * 4.0 / 4.0  # λ(r3)/1 · 1/area(gap)
    assert np.allclose(t.dequantized(), w, rtol=0, atol=2.0 ** t.exponent / 2 + 1e-12)
    assert net.source_scale("mp") == (4.0, 12)


def _apply_term(graph, term, payload):
    """Float meaning of a term on a source payload (no rounding): path ops in order, avgpool as sum-pool,
    weighted op with the dequantized mantissa, gain for op-less paths."""
    x = torch.as_tensor(payload, dtype=torch.float64)[None]
    scale = 1.0
    for name in term.path:
        node = graph[name]
        if node.kind == "conv":
            x = F.conv2d(x, torch.as_tensor(term.dequantized()), stride=node.stride, padding=node.padding,
                         groups=node.groups)
        elif node.kind == "linear":
            x = x @ torch.as_tensor(term.dequantized()).T
        elif node.kind == "avgpool":
            x = F.avg_pool2d(x, node.kernel, node.stride, node.padding) * (node.kernel[0] * node.kernel[1])
        elif node.kind == "flatten":
            x = x.reshape(1, -1)
        elif node.kind == "subsample":
            x = x[:, :, ::node.step[0], ::node.step[1]]
        elif node.kind == "chanpad":
            x = F.pad(x, (0, 0, 0, 0, node.before, node.after))
    if term.op is None:
        scale = float(term.dequantized())
    return (x[0] * scale).numpy()


def test_terms_reconstruct_the_float_expression():
    """Σ terms(payloads) + bias ≈ the float graph's pre-activation, in target LSBs, for random sources."""
    from netx_export.ann import evaluate

    rng = _rng(4)
    g = _resnet_block_graph(rng)
    net = quantize(g, LAMS, input_scale=2.0, method="const")
    x = rng.uniform(-2, 2, size=(1, 3, 8, 8))
    _, values = evaluate(g, x, record=True)
    values = {k: v[0].numpy() for k, v in values.items()}
    for tgt in net.targets:
        root = g[tgt.name].inputs[0] if tgt.kind == "relu" else tgt.name
        want = values[root] / tgt.lam * 2.0 ** tgt.frac_bits
        got = tgt.bias.astype(np.float64)
        for term in tgt.terms:
            lam_s, f_s = net.source_scale(term.source)
            payload = values[term.source] / lam_s * 2.0 ** f_s  # the source's value in its own LSBs
            got = got + _apply_term(g, term, payload)
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < 0.03, (tgt.name, rel)


def test_two_weighted_ops_in_series_rejected_naming_both():
    g = ir.Graph((
        ir.Input("x", shape=(4,)),
        ir.Linear("a", ("x",), weight=np.ones((4, 4))),
        ir.Linear("b", ("a",), weight=np.ones((4, 4))),
        ir.Relu("r", ("b",)),
        ir.Linear("c", ("r",), weight=np.ones((2, 4))),
        ir.Linear("d", ("c",), weight=np.ones((2, 2))),
    ))
    with pytest.raises(UnsupportedOpError) as info:
        quantize(g, {"r": 1.0}, input_scale=1.0, method="const")
    text = str(info.value)
    assert "'a'" in text and "'b'" in text and "'c'" in text and "'d'" in text
    assert len(info.value.nodes) == 2
    with pytest.raises(UnsupportedOpError):
        expand_terms(g, "b")


# ---------------------------------------------------------------------------------------------------------
# methods, neuron options, λ handling
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["const", "dtt", "det", "msat"])
def test_methods_build_specs_and_luts(method):
    net = quantize(_resnet_block_graph(_rng(5)), LAMS, input_scale=2.0, method=method, preset="vgg16",
                   sc_p={"r3": 0.5})
    for name, spec in net.neurons.items():
        assert spec.mode == method and spec.lam == LAMS[name] and spec.frac_bits == 12 and spec.state_bits == 24
        assert spec.sc_p == (0.5 if name == "r3" else None)
        if method == "const":
            assert spec.k_const == 1.0 and spec.coefs is None and net.luts[name] is None
        else:
            assert spec.coefs == PRESETS["vgg16"] and isinstance(net.luts[name], ThresholdLuts)
    assert net.provenance.method == method
    assert net.provenance.hyperparameters["sc_p"] == {"r3": 0.5}


def test_msat_units_pass_through():
    g, kw = _resnet_block_graph(_rng(5)), dict(input_scale=2.0, method="msat", preset="vgg16")
    raw = quantize(g, LAMS, **kw)
    norm = quantize(g, LAMS, msat_units="normalized", **kw)
    assert {s.units for s in raw.neurons.values()} == {"raw"}
    assert raw.provenance.hyperparameters["msat_units"] == "raw"
    assert norm.provenance.hyperparameters["msat_units"] == "normalized"
    for name, spec in norm.neurons.items():
        assert spec.units == "normalized" and spec.lam == LAMS[name]
        assert norm.luts[name] == make_luts(spec) == make_luts(NeuronSpec("msat", 1.0, coefs=PRESETS["vgg16"]))
        assert raw.luts[name] == make_luts(raw.neurons[name])
    # everything but the specs, LUTs and the recorded setting is identical
    assert norm.targets == raw.targets
    assert ConvertedNetwork.from_dict(norm.to_dict()) == norm
    with pytest.raises(QuantizationError) as info:
        quantize(g, LAMS, msat_units="braincog", **kw)
    assert info.value.field == "msat_units"


def test_explicit_coefs_and_bad_settings():
    g, kw = _mlp(), dict(input_scale=1.0)
    coefs = MsatCoefs(alpha=0.1, k_a=1.0, k_i=2.0, C=3.0, tau_mp=0.5, tau_rd=0.25)
    net = quantize(g, {"r1": 1.0}, method="msat", coefs=coefs, **kw)
    assert net.neurons["r1"].coefs == coefs and net.provenance.hyperparameters["preset"] is None
    with pytest.raises(QuantizationError, match="preset"):
        quantize(g, {"r1": 1.0}, method="msat", preset="nope", **kw)
    with pytest.raises(QuantizationError, match="method"):
        quantize(g, {"r1": 1.0}, method="lif", **kw)
    with pytest.raises(QuantizationError) as info:
        quantize(g, {"r1": 1.0}, method="const", sc_p={"zz": 0.5}, **kw)
    assert info.value.layer == "zz"
    with pytest.raises(QuantizationError) as info:
        quantize(g, {"r1": 1.0}, method="const", sc_p={"r1": 1.5}, **kw)
    assert info.value.layer == "r1" and info.value.field == "sc_p"


@pytest.mark.parametrize("lams, field", [({}, "lam"), ({"r1": 0.0}, "lam"), ({"r1": -1.0}, "lam"),
                                         ({"r1": float("nan")}, "lam"), ({"r1": np.ones(3)}, "lam"),
                                         ({"r1": 1.0, "fc2": 1.0}, "lam")])
def test_bad_lambdas_name_the_layer(lams, field):
    with pytest.raises(QuantizationError) as info:
        quantize(_mlp(), lams, input_scale=1.0, method="const")
    assert info.value.field == field and info.value.layer in ("r1", "fc2")


def test_input_scale_required_and_taken_from_mapping():
    with pytest.raises(QuantizationError) as info:
        quantize(_mlp(), {"r1": 1.0}, method="const")
    assert info.value.field == "input_scale"
    net = quantize(_mlp(), {"r1": 1.0, "x": 3.0}, method="const")
    assert net.input_scale == 3.0


def test_calibration_object_is_accepted():
    class Cal:
        lambdas = {"r1": 2.0}
        input_scale = 4.0
        data_hash = "abc123"

    net = quantize(_mlp(), Cal(), method="const", seed=7)
    assert net.input_scale == 4.0 and net.provenance.data_hash == "abc123" and net.provenance.seed == 7


def test_output_must_be_linear_and_maxpool_after_relu():
    g = ir.Graph((ir.Input("x", shape=(2,)), ir.Linear("a", ("x",), weight=np.ones((2, 2))), ir.Relu("r", ("a",))))
    with pytest.raises(QuantizationError, match="output"):
        quantize(g, {"r": 1.0}, input_scale=1.0, method="const")
    g = ir.Graph((ir.Input("x", shape=(1, 4, 4)), ir.MaxPool("m", ("x",)), ir.Flatten("f", ("m",)),
                  ir.Linear("o", ("f",), weight=np.ones((1, 4)))))
    with pytest.raises(QuantizationError) as info:
        quantize(g, {}, input_scale=1.0, method="const")
    assert info.value.layer == "m"


# ---------------------------------------------------------------------------------------------------------
# clipping is counted and warned
# ---------------------------------------------------------------------------------------------------------

def test_clipping_and_saturation_are_counted_and_warned():
    g = ir.Graph((
        ir.Input("x", shape=(2,)),
        ir.Linear("fc1", ("x",), weight=np.array([[2.0 ** 40, 1.0], [1.0, 1.0]]), bias=np.array([1e4, 0.1])),
        ir.Relu("r1", ("fc1",)),
        ir.Linear("fc2", ("r1",), weight=np.ones((1, 2)), bias=np.array([1e9])),
    ))
    with pytest.warns(QuantizationWarning) as record:
        net = quantize(g, {"r1": 1.0}, input_scale=1.0, method="const")
    text = " ".join(str(w.message) for w in record)
    assert "clipped" in text and "int32" in text and "24-bit" in text
    r1 = net.report.layer("r1")
    assert r1.terms[0].clipped == 1 and r1.bias_over_state == 1 and r1.bias_saturated == 0
    assert net.report.layer("fc2").bias_saturated == 1
    assert net.report.total_clipped == 2
    assert net.readout.bias[0] == np.iinfo(np.int32).max
    assert len(net.report.warnings) == 3


def test_no_warning_for_ordinary_networks():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize(_resnet_block_graph(_rng(1)), LAMS, input_scale=2.0, method="msat")


# ---------------------------------------------------------------------------------------------------------
# to_dict / from_dict and validation
# ---------------------------------------------------------------------------------------------------------

def _net(method="msat"):
    return quantize(_resnet_block_graph(_rng(2)), LAMS, input_scale=2.0, method=method, sc_p={"r3": 0.6},
                    model_hash="m" * 64, data_hash="d" * 64, seed=3, hyperparameters={"lambda_method": "max"})


def test_dict_round_trip_is_exact():
    net = _net()
    again = ConvertedNetwork.from_dict(net.to_dict())
    assert again == net
    d1, d2 = net.to_dict(), again.to_dict()
    assert d1["format_version"] == FORMAT_VERSION
    assert d2["targets"][2]["terms"][0]["mantissa"].dtype == np.int8
    assert d2["targets"][0]["bias"].dtype == np.int32
    assert d2["provenance"]["hyperparameters"]["lambda_method"] == "max"


def _mutated(mutate):
    d = _net().to_dict()
    mutate(d)
    return d


@pytest.mark.parametrize("mutate, layer, field", [
    (lambda d: d["targets"][1]["terms"][0].__setitem__("mantissa",
                                                       np.full((8, 4, 3, 3), 200, np.int16)), "r1", "mantissa"),
    (lambda d: d["targets"][1]["terms"][0].__setitem__("exponent", 99), "r1", "exponent"),
    (lambda d: d["targets"][1]["terms"][0].__setitem__("exponent", 1.5), "r1", "exponent"),
    (lambda d: d["targets"][1]["terms"][0].__setitem__("mantissa", np.zeros((8, 4, 3), np.int8)), "r1", "mantissa"),
    (lambda d: d["targets"][0].__setitem__("bias", np.zeros((4, 8, 8), np.int64)), "r0", "bias"),
    (lambda d: d["targets"][0].__setitem__("bias", np.zeros((4, 8), np.int32)), "r0", "bias"),
    (lambda d: d["targets"][2]["terms"][1].__setitem__("source", "r1"), "r2", "source"),
    (lambda d: d["targets"][2]["terms"][1].__setitem__("source", "nowhere"), "r2", "source"),
    (lambda d: d["targets"][2]["terms"][0].__setitem__("op", "r1"), "r2", "op"),
    (lambda d: d["targets"][2]["terms"][1].__setitem__("path", ("cp", "ss")), "r2", "path"),
    (lambda d: d["targets"][2]["terms"].pop(), "r2", "terms"),
    (lambda d: d["targets"][0].__setitem__("lam", -1.0), "r0", "lam"),
    (lambda d: d["targets"][0].__setitem__("lam", 1.25), "r0", "lam"),
    (lambda d: d["targets"][-1].__setitem__("lam", 2.0), "fc", "lam"),
    (lambda d: d["neurons"]["r1"].__setitem__("lam", 0.0), "r1", "neuron.lam"),
    (lambda d: d["neurons"]["r1"].__setitem__("mode", "foo"), "r1", "neuron.mode"),
    (lambda d: d["luts"].__setitem__("r1", None), "r1", "luts"),
    (lambda d: d.__setitem__("input_scale", 0.0), "x", "input_scale"),
    (lambda d: d.__setitem__("format_version", "2.0"), None, "format_version"),
    (lambda d: d["graph"]["nodes"][3].__setitem__("inputs", ("r9",)), "c1", "inputs"),
    (lambda d: d["targets"].reverse(), None, "targets"),
])
def test_from_dict_rejects_bad_values_naming_layer_and_field(mutate, layer, field):
    with pytest.raises(QuantizationError) as info:
        ConvertedNetwork.from_dict(_mutated(mutate))
    assert info.value.layer == layer
    assert info.value.field is not None and info.value.field.endswith(field), info.value.field


def test_term_validates_itself():
    with pytest.raises(QuantizationError, match="int8"):
        Term(source="a", path=(), op=None, mantissa=np.array(300), exponent=0)
    with pytest.raises(QuantizationError):
        Term(source="a", path=(), op=None, mantissa=np.array(1.5), exponent=0)


# ---------------------------------------------------------------------------------------------------------
# provenance
# ---------------------------------------------------------------------------------------------------------

def test_state_hash_and_provenance():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    h1 = state_hash(model)
    assert h1 == state_hash(model.state_dict()) == state_hash(h1)
    assert len(h1) == 64 and int(h1, 16) >= 0
    with torch.no_grad():
        model[0].weight[0, 0] += 1e-6
    assert state_hash(model) != h1
    arrays = {k: v.numpy() for k, v in model.state_dict().items()}
    assert state_hash(arrays) == state_hash(model)  # numpy and torch hash the same bytes
    net = quantize(_mlp(), {"r1": 1.0}, input_scale=1.0, method="const", model_hash=model, seed=11)
    p = net.provenance
    assert p.model_hash == state_hash(model) and p.seed == 11 and p.format_version == FORMAT_VERSION
    assert p.tool_version == tool_version() and p.tool_version
    assert p.hyperparameters["method"] == "const" and p.hyperparameters["input_frac_bits"] == 8
    assert math.isclose(p.hyperparameters["k_const"], 1.0)


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


@pytest.mark.parametrize("kw,where", [
    (dict(v_init=1.5), "field 'v_init': must be in [0, 1)"),
    (dict(method="msat", sc_p={"_2": 2.0}), "field 'sc_p': must be in (0, 1]"),
    (dict(method="dtif-r", params={"beta": -1}), "field 'params.beta': must be"),
])
def test_converter_errors_name_the_field_once(kw, where):
    """A neuron-parameter error re-raised by the quantizer carries its location once (not "field 'x': field 'x':")."""
    import netx_export as nx

    x = _rng(1).random((8, 4)).astype(np.float32)
    with pytest.raises(QuantizationError) as err:
        nx.convert(_tiny_model(), x, progress=False, **kw)
    msg = str(err.value)
    assert where in msg
    field = where.split("'")[1]
    assert msg.count(f"'{field}'") == 1, msg


def test_sc_p_as_one_number_means_every_layer_and_bad_types_are_named():
    import netx_export as nx

    x = _rng(1).random((8, 4)).astype(np.float32)
    one = nx.convert(_tiny_model(), x, method="msat", sc_p=0.9, progress=False)
    relus = [n for n, s in one.neurons.items()]
    per = nx.convert(_tiny_model(), x, method="msat", sc_p={r: 0.9 for r in relus}, progress=False)
    assert {k: s.sc_p for k, s in one.neurons.items()} == {k: s.sc_p for k, s in per.neurons.items()} == \
        {r: 0.9 for r in relus}
    for bad in ("0.9", [0.9], True):
        with pytest.raises(QuantizationError, match="field 'sc_p': expected a mapping"):
            nx.convert(_tiny_model(), x, method="msat", sc_p=bad, progress=False)
