"""The fast (layer-major, fused) reference engine against the plain step-by-step loop.

Fixed point: every output (predictions, readout, spike counts, saturation counts, traces, payload sums, membrane
snapshots) must be the same integers, on random networks of every stage kind (conv, grouped and depthwise conv,
LIPool, identity / option-A / projection shortcuts, sum-pools on the input and between layers, flatten, linear,
readout), every threshold mode, the spike-confidence gate in both variants, burst, half-threshold start, a
saturating state, more than two synaptic terms into one stage, chunk sizes and thread counts; and for every
registered neuron model outside the MSAT family (DTIF-R's variants and shapes, on its fused fixed kernel and on the
generic path; BSNN-R with its synchronous neurons, phase schedule and gated readout bias), chunk sizes and batch
sizes. Float: the same
values up to float rounding (the fused loop evaluates exp/log1p with the C library, torch with its own vector
code); the fused float neuron equals the numpy implementation of the rule bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _nets import convert, random_inputs
from msat_lava import engine, reference
from msat_lava.dynamics import fused
from msat_lava.dynamics import neuron as dyn
from msat_lava.program import Op, Term
from netx_export.neuron import PRESETS, NeuronSpec

T = 12


def _run(conv, x, precision, eng, chunk=None, threads=1, batch_size=7, steps=T, **kw):
    prog = conv.program
    record = [s.name for s in prog.stages]
    return reference.simulate(prog, x, steps, precision=precision, engine=eng, chunk=chunk, threads=threads,
                              batch_size=batch_size, progress=False, record=record, record_readout=True,
                              record_counts=True, sums_at=[1, 5, steps], membrane_at=[2, steps],
                              sample_ids=np.arange(len(x)) * 3 + 1, **kw)


def _assert_same(a, b, exact=True, rtol=1e-9, atol=1e-9):
    def eq(u, v, what):
        if exact:
            np.testing.assert_array_equal(u, v, err_msg=what)
        else:
            np.testing.assert_allclose(u, v, rtol=rtol, atol=atol, err_msg=what)

    np.testing.assert_array_equal(a.predictions, b.predictions)
    eq(a.readout, b.readout, "readout")
    assert a.spike_counts.keys() == b.spike_counts.keys() and a.spike_counts
    for k in a.spike_counts:
        np.testing.assert_array_equal(a.spike_counts[k], b.spike_counts[k], err_msg=f"counts {k}")
    assert a.traces.keys() == b.traces.keys()
    for k in a.traces:
        eq(a.traces[k], b.traces[k], f"trace {k}")
    assert a.payload_sums.keys() == b.payload_sums.keys()
    for k in a.payload_sums:
        for n in a.payload_sums[k]:
            eq(a.payload_sums[k][n], b.payload_sums[k][n], f"payload sum {k} {n}")
    assert a.membrane.keys() == b.membrane.keys()
    for k in a.membrane:
        for n in a.membrane[k]:
            eq(a.membrane[k][n], b.membrane[k][n], f"membrane {k} {n}")
    assert a.saturated == b.saturated
    assert a.input_clipped == b.input_clipped


CASES = [
    ("resmix", "const", {}),
    ("resmix", "msat", {}),
    ("resmix", "dtt", {}),
    ("resmix", "det", {}),
    ("poolmix", "msat", {}),
    ("poolmix", "const", {"v_init": 0.5}),
    ("resmix", "msat", {"sc": ((0, 0.7), (2, 0.5), (4, 0.8)), "sc_early": 5}),
    ("resmix", "msat", {"sc": ((1, 0.6), (3, 0.9)), "sc_gate": "keep_charge", "sc_early": 7}),
    ("poolmix", "const", {"sc": ((0, 0.6), (1, 0.7)), "sc_early": 4}),
    ("resmix", "msat", {"gamma": 3}),
    ("resmix", "const", {"gamma": 4}),
    ("poolmix", "msat", {"msat_units": "normalized", "v_init": 0.5}),
    ("mlp", "msat", {"state_bits": 14}),       # small state: saturates
    ("resmix", "const", {"gamma": 4096}),      # Γ·2^F ≥ 2^24: float64 payloads
]


@pytest.mark.parametrize("name,method,opts", CASES, ids=[f"{n}-{m}-{'-'.join(o) or 'plain'}" for n, m, o in CASES])
def test_fixed_fast_engine_equals_step_loop(name, method, opts):
    conv = convert(name, method, **opts)
    x = random_inputs(conv.model.input_shape, 9, seed=11) * 1.5
    step = _run(conv, x, "fixed", "step")
    if opts.get("state_bits"):
        assert sum(step.saturated.values()) > 0  # the case under test
    for chunk in (1, 5, 64):
        _assert_same(step, _run(conv, x, "fixed", "fast", chunk=chunk))


#: every registered model without a fused kernel (msat_lava.dynamics.models), with the options it allows:
#: (network, method, conversion options, steps). BSNN-R needs ≥ 2·K·depth steps to reach the readout; its resmix
#: network has synchronous neurons on the residual shortcuts, and BSNN-R refuses v_init.
MODEL_CASES = [
    ("resmix", "dtif-r", {}, T),                                                       # a, hyperbolic
    ("poolmix", "dtif-r", {"params": {"variant": "b", "shape": "exp", "beta": 3.0}}, T),
    ("resmix", "dtif-r", {"params": {"variant": "c"}, "gamma": 2, "v_init": 0.5}, T),
    ("resmix", "dtif-r", {"params": {"variant": "b", "shape": "exp"}, "gamma": 3,
                          "sc": ((0, 0.7), (2, 0.5), (4, 0.8)), "sc_early": 5}, T),
    ("poolmix", "dtif-r", {"params": {"variant": "a", "beta": 2.0}, "gamma": 3, "v_init": 0.5,
                           "sc": ((1, 0.6),), "sc_gate": "keep_charge", "sc_early": 7}, T),
    ("resmix", "dtif-r", {"params": {"variant": "c", "shape": "exp"}, "sc": ((0, 0.6), (3, 0.9)),
                          "sc_gate": "keep_charge", "sc_early": 4}, T),
    ("mlp", "dtif-r", {"params": {"variant": "b"}, "state_bits": 14}, T),            # saturates
    ("resmix", "bsnn-r", {"params": {"k": 2}}, 36),
    ("resmix", "bsnn-r", {"params": {"k": 2}, "gamma": 2, "sc": ((0, 0.7), (5, 0.6)), "sc_early": 9}, 36),
    ("resmix", "bsnn-r", {"params": {"k": 3}, "gamma": 3, "sc": ((1, 0.8),), "sc_gate": "keep_charge",
                          "sc_early": 6}, 40),
    ("poolmix", "bsnn-r", {"params": {"k": 4}, "gamma": 2}, 30),
    ("mlp", "bsnn-r", {"params": {"k": 4}, "state_bits": 14}, 20),                    # saturates
]
_MODEL_IDS = [f"{n}-{m}-{i}" for i, (n, m, _, _) in enumerate(MODEL_CASES)]


def test_model_cases_cover_every_registered_model():
    from msat_lava.dynamics import models

    assert {m for m in models.names() if not models.has_fused(m)} == {m for _, m, _, _ in MODEL_CASES}


@pytest.mark.parametrize("name,method,opts,steps", MODEL_CASES, ids=_MODEL_IDS)
def test_fixed_fast_engine_equals_step_loop_every_model(name, method, opts, steps, monkeypatch):
    """Models outside the MSAT family: the fast engine's batched terms + the models' own step function (and
    DTIF-R's fused fixed kernel, fused.dtif_fixed_chunk, and BSNN-R's, fused.uniform_fixed_chunk) give the step
    engine's integers for any chunk length
    and batch size."""
    conv = convert(name, method, **opts)
    x = random_inputs(conv.model.input_shape, 9, seed=11) * 1.5
    step = _run(conv, x, "fixed", "step", steps=steps)
    assert np.abs(step.readout).max() > 0 and all(c.sum() > 0 for c in step.spike_counts.values())
    if opts.get("state_bits"):
        assert sum(step.saturated.values()) > 0  # the case under test
    for chunk, batch in ((1, 7), (5, 4), (8, 9), (64, 7)):
        _assert_same(step, _run(conv, x, "fixed", "fast", chunk=chunk, batch_size=batch, steps=steps))
    spec = next(st.spec for st in conv.program.neuron_stages)
    assert engine._path(spec, True) == {"dtif-r": "dtif", "bsnn-r": "uniform"}[method]  # a fused kernel ran
    if engine._path(spec, True) != "generic":  # the generic path (the step function) for the same model
        monkeypatch.setattr(engine, "FIXED_KERNELS", set())
        monkeypatch.setattr(engine, "_uniform_model", lambda spec: False)
        assert engine._path(spec, True) == "generic"
        for chunk, batch in ((1, 7), (5, 4)):
            _assert_same(step, _run(conv, x, "fixed", "fast", chunk=chunk, batch_size=batch, steps=steps))


@pytest.mark.parametrize("name,method,opts,steps", MODEL_CASES, ids=_MODEL_IDS)
def test_float_fast_engine_matches_step_loop_every_model(name, method, opts, steps):
    conv = convert(name, method, **opts)
    x = random_inputs(conv.model.input_shape, 8, seed=12)
    step = _run(conv, x, "float", "step", steps=steps)
    for chunk, batch in ((3, 8), (8, 5)):
        fast = _run(conv, x, "float", "fast", chunk=chunk, batch_size=batch, steps=steps)
        _assert_same(step, fast, exact=False, rtol=1e-9, atol=1e-9)


def test_fixed_fast_engine_independent_of_threads_and_batch():
    conv = convert("resmix", "msat", sc=((0, 0.7),), sc_early=6)
    x = random_inputs(conv.model.input_shape, 10, seed=3)
    a = _run(conv, x, "fixed", "fast", threads=1, batch_size=10)
    _assert_same(a, _run(conv, x, "fixed", "fast", threads=2, batch_size=3))


@pytest.mark.parametrize("method,opts", [("dtif-r", {"params": {"variant": "b"}, "sc": ((0, 0.7),), "sc_early": 6}),
                                         ("bsnn-r", {"params": {"k": 2}, "sc": ((0, 0.7),), "sc_early": 6})])
def test_fixed_fast_engine_every_model_independent_of_threads(method, opts):
    conv = convert("resmix", method, **opts)
    x = random_inputs(conv.model.input_shape, 10, seed=3)
    a = _run(conv, x, "fixed", "fast", threads=1, batch_size=10, steps=24)
    _assert_same(a, _run(conv, x, "fixed", "fast", threads=2, batch_size=3, steps=24))


class ThreeWay(nn.Module):
    """A stage fed by three terms (two convs and an identity) and a readout fed by two."""

    input_shape = (2, 6, 6)

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(2, 4, 3, 1, 1)
        self.c1 = nn.Conv2d(4, 4, 3, 1, 1)
        self.c2 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4 * 36, 3)
        self.fc2 = nn.Linear(4 * 36, 3)

    def forward(self, x):
        a = F.relu(self.c0(x))
        b = F.relu(self.c1(a) + self.c2(a) + a)
        return self.fc(torch.flatten(b, 1)) + self.fc2(torch.flatten(a, 1))


def _convert_module(model, method):
    from msat_lava.program import from_converted
    from netx_export import ann
    from netx_export.quantize import quantize
    from netx_export.trace import trace

    graph = trace(model.eval(), model.input_shape)
    calib = random_inputs(model.input_shape, 16, seed=2)
    _, acts = ann.evaluate(graph, calib, record=True)
    lams = {n.name: float(acts[n.name].max()) for n in graph if n.kind == "relu"}
    net = quantize(graph, lams, method=method, preset="resnet20", input_scale=float(np.abs(calib).max()))
    return from_converted(net)


@pytest.mark.parametrize("method", ["const", "msat"])
def test_fast_engine_with_three_terms_into_one_stage(method):
    torch.manual_seed(4)
    prog = _convert_module(ThreeWay(), method)
    assert max(sum(t.source != "input" for t in s.terms) for s in prog.stages) == 3
    x = random_inputs(ThreeWay.input_shape, 6, seed=5)

    class C:
        program = prog

    _assert_same(_run(C, x, "fixed", "step"), _run(C, x, "fixed", "fast", chunk=4))
    _assert_same(_run(C, x, "float", "step"), _run(C, x, "float", "fast", chunk=4), exact=False)


@pytest.mark.parametrize("name,method,opts", [("resmix", "const", {}), ("poolmix", "const", {"gamma": 3}),
                                              ("resmix", "msat", {}), ("poolmix", "dtt", {}),
                                              ("resmix", "msat", {"sc": ((0, 0.7),), "sc_early": 5})])
def test_float_fast_engine_matches_step_loop(name, method, opts):
    conv = convert(name, method, **opts)
    x = random_inputs(conv.model.input_shape, 8, seed=12)
    step = _run(conv, x, "float", "step")
    fast = _run(conv, x, "float", "fast", chunk=5)
    # exp/log1p differ in the last bit between torch and the C library: allow float rounding, same spikes
    _assert_same(step, fast, exact=False, rtol=1e-9, atol=1e-9)


def test_fused_float_neuron_equals_numpy_rule_bit_for_bit():
    """The fused float loop and the numpy step function evaluate the same dynamics.fmath operations: identical bits."""
    rng = np.random.default_rng(0)
    m, tc = 3000, 9
    for spec in (NeuronSpec(mode="msat", lam=3.7, coefs=PRESETS["resnet20"]),
                 NeuronSpec(mode="det", lam=0.4, coefs=PRESETS["vgg16"], gamma=3),
                 NeuronSpec(mode="dtt", lam=2.0, coefs=PRESETS["resnet20"], units="normalized", v_init=0.5)):
        xs = rng.normal(0, 2 * spec.lam, (tc, m))
        st = dyn.init_float_state((m,), np.zeros(1), spec)
        want = []
        for t in range(tc):
            st, o = dyn.step_float(spec, st, xs[t])
            want.append(o.payload)
        v = np.full(m, spec.v_init * spec.lam)
        vs, c = np.zeros(m), np.zeros(m, np.int64)
        got = np.empty((tc, m))
        no_gate = (0, np.zeros(1, np.int64), np.arange(m, dtype=np.int64), np.uint64(0), 0)
        fused.float_chunk(xs, xs, 1, np.zeros(m), v, vs, c, 0, fused.MODE_CODES[spec.mode], spec.lam,
                          spec.k_const * spec.lam, spec.gamma, no_gate, 1, engine._float_params(spec), got)
        np.testing.assert_array_equal(got, np.array(want))
        np.testing.assert_array_equal(v, st.v)
        np.testing.assert_array_equal(c, st.count)
        if spec.gamma == 1:
            v2, vs2, c2 = np.full(m, spec.v_init * spec.lam), np.zeros(m), np.zeros(m, np.int64)
            got2 = np.empty((tc, m))
            fused.float_chunk_plain(xs, xs, 1, np.zeros(m), v2, vs2, c2, 0, fused.MODE_CODES[spec.mode], spec.lam,
                                    spec.k_const * spec.lam, engine._float_params(spec), got2)
            np.testing.assert_array_equal(got2, got)


def test_fused_gate_draw_equals_prng_keep_mask():
    """ε computed in native uint64 inside the fused loop is the bit pattern of prng.keep_mask (16-bit pieces)."""
    import numba

    from msat_lava.dynamics import prng

    @numba.njit
    def draws(ids, n, t, kseed, kthr):
        out = np.empty((ids.size, n), np.int64)
        for b in range(ids.size):
            for j in range(n):
                out[b, j] = fused._keep(ids[b], t, j, kseed, kthr)
        return out

    ids = np.array([0, 1, 7, 123456, (1 << 24) - 1], dtype=np.int64)
    for t, layer, seed, p in ((0, 0, 0, 0.5), (13, 3, 99, 0.9), (255, 17, (1 << 32) - 1, 0.01)):
        want = prng.keep_mask(ids, (37,), t, layer, seed, p, np.zeros(0))
        got = draws(ids, 37, t, np.uint64(prng.seed_key(seed, layer)), prng.keep_threshold(p))
        np.testing.assert_array_equal(got.astype(bool), want)
        assert 0 < want.sum() < want.size


@pytest.mark.parametrize("n_in,top", [(64, 1024), (2048, 4096), (40000, 255)])
def test_term_sums_exact_on_every_float32_plan(n_in, top):
    """One float32 op, b-bit chunks and the float64 fallback all give the exact integer sums."""
    rng = np.random.default_rng(n_in)
    mant = np.where(rng.random((5, n_in)) < 0.5, -127, 127).astype(np.int64)
    mant[0] = 127
    x = rng.integers(0, top + 1, size=(6, n_in)).astype(np.int64)
    x[0] = top
    op = Op(kind="linear", node="fc", in_shape=(n_in,), out_shape=(5,), weight=mant.astype(np.float64), mant=mant)
    term = Term(source="s", ops=(op,), exp=0)
    got = engine._term_fixed(term.ops, torch.as_tensor(x, dtype=torch.float32), top, {})
    want = x @ mant.T
    np.testing.assert_array_equal(got.to(torch.float64).numpy().astype(np.int64), want)
    if n_in == 64:
        assert got.dtype == torch.float32  # ‖w‖₁·max x < 2^24: the single float32 op
    else:
        assert got.dtype == torch.float64 and int(np.abs(want).max()) > 1 << 24


def test_chunk_bounds_and_errors():
    assert engine.chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert engine.chunk_bounds(10, 4, [3, 10, 11]) == [(0, 3), (3, 4), (4, 8), (8, 10)]
    assert engine.chunk_bounds(1, 8) == [(0, 1)]
    with pytest.raises(ValueError, match="chunk"):
        engine.chunk_bounds(5, 0)
    conv = convert("mlp", "const")
    x = random_inputs(conv.model.input_shape, 2, seed=0)
    with pytest.raises(ValueError, match="engine"):
        reference.simulate(conv.program, x, 2, engine="turbo", progress=False)
    with pytest.raises(ValueError, match="chunk"):
        reference.simulate(conv.program, x, 2, chunk=0, progress=False)


def test_floor_div_by_reciprocal_is_exact():
    """fused._floor_div(s, t, 1/t) = s // t (Python's exact floor division) over signs, exact multiples, ±1 around
    them and |s| up to 2^51, t up to 2^21 − 1."""
    import numba

    @numba.njit
    def fd(s, t):
        out = np.empty(s.size, np.int64)
        for i in range(s.size):
            out[i] = fused._floor_div(s[i], t[i], 1.0 / t[i])
        return out

    rng = np.random.default_rng(5)
    t = np.concatenate([rng.integers(1, 1 << 21, 4000), np.array([1, 2, 3, 7, (1 << 21) - 1] * 40)])
    q = rng.integers(-(1 << 30), 1 << 30, t.size)
    s = np.concatenate([q[:2000] * t[:2000] + rng.integers(-1, 2, 2000),            # exact multiples and ±1
                        rng.integers(-(1 << 51) + 1, 1 << 51, t.size - 2000)])      # anywhere in range
    s = np.clip(s, -(1 << 51) + 1, (1 << 51) - 1)
    want = np.array([int(a) // int(b) for a, b in zip(s, t)], dtype=np.int64)
    np.testing.assert_array_equal(fd(s.astype(np.int64), t.astype(np.int64)), want)


def test_trailing_gain_goes_into_the_kernel_multiplier():
    """A shortcut term (structural ops, then a scalar gain) reaches the kernel as the bare payload with the gain
    mantissa in its multiplier: the kernel's round-shift (a·q·g + add) >> shift equals the plain engine's
    round_shift of the term's sum (apply_term_torch), and in float a unit gain is dropped bit for bit."""
    from msat_lava.program import apply_term_torch

    prog = convert("resmix", "msat").program
    terms = [t for s in prog.stages for t in getattr(s, "terms", ()) if t.ops and t.ops[-1].kind == "gain"]
    assert terms and any(int(np.asarray(t.ops[-1].mant)) != 1 for t in terms)
    rng = np.random.default_rng(5)
    for term in terms:
        shape = (3,) + tuple(term.ops[0].in_shape)
        x = torch.as_tensor(rng.integers(0, 4097, size=shape), dtype=torch.float32)
        for q in (1, 37):
            ops, g = engine._trailing_gain(term, True)
            a = engine._term_fixed(ops, x, 4096.0, {}).to(torch.int64)
            mul, add, sh = fused.shift_params(q * g, term.exp)
            want = apply_term_torch(term, x.to(torch.float64) * q, True, {})
            np.testing.assert_array_equal(((a * mul + add) >> sh).numpy(), want.numpy().astype(np.int64))
        ops, g = engine._trailing_gain(term, False)
        assert g == 1 and float(np.asarray(term.ops[-1].weight)) == 1.0  # raw units: the float gain is 1
        xf = x * 0.37
        y = xf
        for op in ops:
            y = engine.apply_op_torch(op, y, False, {})
        assert torch.equal(y, apply_term_torch(term, xf, False, {}))


def test_packed_interpolation_tables_give_the_same_integers():
    """One read of the packed table P = A·2^k + D (engine._pack_interp) interpolates to the very integers of the
    (A, D) pair (fused._interp), for rising, falling and flat tables, every index and remainder, and shifts with a
    guard; a table outside the packed range is refused."""
    import numba

    @numba.njit
    def both(a_tab, d_tab, p_tab, k, shift, extra, xs):
        out = np.empty((2, xs.size), np.int64)
        for j in range(xs.size):
            out[0, j] = fused._interp(a_tab, d_tab, xs[j], shift, extra)
            out[1, j] = fused._pinterp(p_tab, xs[j], shift, extra, k)
        return out

    rng = np.random.default_rng(11)
    for lut, shift, extra in ((np.cumsum(rng.integers(0, 9000, 300)), 11, 8),
                              (-np.cumsum(rng.integers(0, 200, 900)) + 10**6, 3, 0),
                              (rng.integers(-(1 << 20), 1 << 20, 50), 4, 2), (np.zeros(1, np.int64), 0, 0)):
        a_tab, d_tab = dyn._interp_tables(np.asarray(lut, dtype=np.int64), shift, extra)
        p_tab, k = engine._pack_interp(a_tab, d_tab)
        xs = np.arange(((len(lut) - 1) << shift) + 1, dtype=np.int64)
        got = both(a_tab, d_tab, p_tab, k, shift, extra, xs)
        np.testing.assert_array_equal(got[1], got[0])
    with pytest.raises(ValueError, match="packed range"):
        engine._pack_interp(np.array([1 << 50, 0]), np.array([1 << 20, 0]))
