"""``from_converted(net, float_weights='quantized')``: the float model on the fixed model's synapses.

Independent expectation: a term's fixed-point integer is round_half_up(P(p̂)·2^e) and the float term on the
dequantized weights, expressed in the target's integer units (·2^F/λ_tgt), is P(p̂)·2^e exactly (up to float64
rounding) when the float payload is p̂·λ_src·2^−F_src. So every stage's input differs from the fixed one by at
most 0.5 per term, while the exact-weight program differs by the weight quantization error (more)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _nets import convert
from msat_lava.program import from_converted
from msat_lava.reference import constant_input, input_tensor, stage_input


@pytest.mark.parametrize("name", ["resmix", "poolmix"])
def test_dequantized_terms_match_fixed_terms_to_rounding(name):
    c = convert(name, "const")
    net = c.net
    programs = {"quantized": from_converted(net, float_weights="quantized"), "exact": c.program}
    rng = np.random.default_rng(3)
    # inputs on the input grid, so the fixed model's input quantization is exact
    p_in = rng.integers(-300, 300, size=(4,) + tuple(c.program.input_shape))
    x = p_in * (net.input_scale / 2.0 ** net.input_frac_bits)
    inp_fixed, clipped = input_tensor(c.program, x, fixed=True)
    assert clipped == 0 and np.array_equal(inp_fixed.numpy(), p_in)
    payload_fixed, payload_float = {}, {}
    for s in c.program.stages:
        if s.kind in ("neuron", "lipool"):
            p = rng.integers(0, 3 * 2 ** c.program.frac_bits, size=(4,) + tuple(s.shape))
            lam_s, f_s = net.source_scale(s.name)
            payload_fixed[s.name] = torch.as_tensor(p)
            payload_float[s.name] = torch.as_tensor(p * (lam_s / 2.0 ** f_s))
    worst = {}
    for kind, prog in programs.items():
        inp_float, _ = input_tensor(prog, x, fixed=False)
        worst[kind] = 0.0
        for s_fix, s_flt in zip(c.program.stages, prog.stages):
            if s_fix.kind == "lipool":
                continue
            fixed_in = stage_input(s_fix, constant_input(s_fix, inp_fixed, True, {}), payload_fixed, True, {})
            float_in = stage_input(s_flt, constant_input(s_flt, inp_float, False, {}), payload_float, False, {})
            tgt = next(t for t in net.targets if t.name == s_fix.name)
            in_units = float_in.numpy() * (2.0 ** tgt.frac_bits / tgt.lam)
            err = float(np.abs(in_units - fixed_in.numpy()).max())
            if kind == "quantized":
                assert err <= 0.5 * len(s_fix.terms) + 1e-6, (s_fix.name, err)
            worst[kind] = max(worst[kind], err)
    assert worst["exact"] > 10 * worst["quantized"]  # the exact weights are really different


def test_quantized_weights_are_within_half_a_mantissa_step():
    c = convert("resmix", "const")
    prog = from_converted(c.net, float_weights="quantized")
    changed = 0
    for s_q, s_e in zip(prog.stages, c.program.stages):
        for t_q, t_e in zip(s_q.terms, s_e.terms):
            for o_q, o_e in zip(t_q.ops, t_e.ops):
                assert np.array_equal(np.asarray(o_q.mant), np.asarray(o_e.mant))
                if o_q.kind not in ("conv", "linear"):
                    continue
                wq, we = np.asarray(o_q.weight), np.asarray(o_e.weight)
                step = np.abs(wq[wq != 0] / np.asarray(o_q.mant)[wq != 0]).max()  # 2^e / g
                assert np.abs(wq - we).max() <= 0.5 * step * (1 + 1e-12)
                changed += int(np.count_nonzero(wq != we))
    assert changed > 0


def test_unknown_float_weights_is_refused():
    c = convert("mlp", "const")
    with pytest.raises(ValueError, match="float_weights"):
        from_converted(c.net, float_weights="rounded")


def test_float_input_is_the_dequantized_fixed_input():
    c = convert("poolmix", "const")
    prog = from_converted(c.net, float_weights="quantized")
    x = np.random.default_rng(4).standard_normal((3,) + tuple(prog.input_shape)) * 2.0
    fixed, clipped_fixed = input_tensor(prog, x, fixed=True)
    flt, clipped_float = input_tensor(prog, x, fixed=False)
    step = c.net.input_scale / 2.0 ** c.net.input_frac_bits
    assert clipped_fixed == clipped_float
    np.testing.assert_array_equal(flt.numpy(), fixed.numpy() * step)
    assert np.abs(flt.numpy() - x).max() <= 0.5 * step * (1 + 1e-9)  # nothing clipped at this scale
    exact, _ = input_tensor(c.program, x, fixed=False)
    np.testing.assert_array_equal(exact.numpy(), x)
