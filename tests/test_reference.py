"""The batched reference simulator (msat_lava.reference) against independent expectations.

* zero-delay semantics of a 1-hidden-layer network in const mode vs a hand-written numpy simulation and its
  closed form, in float (raw units) and in fixed point (integers rebuilt from the ConvertedNetwork's targets,
  not from msat_lava.program);
* exact charge conservation per neuron at network level (fixed point, const mode), the LIPooling cumulative-max
  identity and the readout accumulation, from the recorded traces;
* ``delay=True`` = zero-delay result shifted by the readout depth;
* batch-size independence and spike-confidence gate keyed by the dataset id only;
* convergence of the float readout / T to the ANN logits with a proven bound;
* input clipping count; errors.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from msat_lava import reference
from msat_lava.dynamics import neuron as dyn
from msat_lava.program import apply_term_np, quantize_input_np
from netx_export import ann

from _nets import convert, random_inputs, stateful_depths

ONE = 1 << 12  # 2^F, θ̂ of a const-mode layer with k = 1


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sim(prog, x, steps, **kw):
    kw.setdefault("progress", False)
    return reference.simulate(prog, x, steps, **kw)


def _round_shift(acc: np.ndarray, e: int) -> np.ndarray:
    """Integer round-half-up shift (DESIGN §4), on int64: (a + 2^(−e−1)) >> −e, or a << e."""
    acc = np.asarray(acc, dtype=np.int64)
    return (acc + (1 << (-e - 1))) >> -e if e < 0 else acc << e


# ------------------------------------------------------------------------------------------------------------
# (a) zero-delay semantics, 1 hidden layer, const mode: hand-written numpy simulation + closed form
# ------------------------------------------------------------------------------------------------------------

def _mlp():
    conv = convert("mlp", "const")
    x = random_inputs(conv.model.input_shape, 5, seed=21)  # fresh samples: some neurons exceed λ, some < 0
    return conv, x


def test_float_const_matches_handwritten_if_and_closed_form():
    conv, x = _mlp()
    steps = 20
    hidden = conv.relus[0]
    lam = conv.lambdas[hidden]
    w1 = conv.model.fc1.weight.detach().double().numpy()
    b1 = conv.model.fc1.bias.detach().double().numpy()
    w2 = conv.model.fc2.weight.detach().double().numpy()
    b2 = conv.model.fc2.bias.detach().double().numpy()

    # hand-written IF with soft reset, graded payload λ, accumulating readout; zero delay: all at step t
    drive = x @ w1.T + b1                      # constant input current (analog image every step)
    v = np.zeros_like(drive)
    out = np.zeros((x.shape[0], w2.shape[0]))
    payloads, readouts, residuals = [], [], []
    for _ in range(steps):
        m = v + drive
        s = (m >= lam).astype(np.float64)
        v = m - s * lam
        payloads.append(s * lam)
        residuals.append(v)
        out = out + payloads[-1] @ w2.T + b2
        readouts.append(out.copy())
    payloads, readouts = np.stack(payloads), np.stack(readouts)

    # closed form of the same thing: N(t) = clip(floor((t+1)·x/λ), 0, t+1) spikes after step t
    t1 = np.arange(1, steps + 1)[:, None, None]
    n_closed = np.clip(np.floor(t1 * drive[None] / lam), 0, t1)
    assert np.array_equal(np.cumsum(payloads, axis=0) / lam, n_closed)
    assert 0 < n_closed[-1].sum() < n_closed[-1].size * steps  # some spike, some don't, some saturate at Γ = 1

    res = _sim(conv.program, x, steps, precision="float", record=(hidden,), record_readout=True,
               membrane_at=(20, 1, 7))
    np.testing.assert_allclose(res.traces[hidden], payloads, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.readout, readouts, rtol=0, atol=1e-9)
    assert np.array_equal(res.predictions, np.argmax(readouts, axis=2))
    assert sorted(res.membrane) == [1, 7, 20]
    for k in (1, 7, 20):  # the residual after step k, in units of λ
        np.testing.assert_allclose(res.membrane[k][hidden], residuals[k - 1] / lam, rtol=0, atol=1e-12)


def test_fixed_const_matches_handwritten_integer_simulation():
    conv, x = _mlp()
    steps = 20
    net, hidden = conv.net, conv.relus[0]
    th, tr = net.target(hidden), net.readout
    assert len(th.terms) == len(tr.terms) == 1
    (term1,), (term2,) = th.terms, tr.terms

    # integer pipeline rebuilt from the stored fixed-point program (not from msat_lava.program)
    q = np.floor(x / net.input_scale * (1 << net.input_frac_bits) + 0.5).astype(np.int64)
    assert np.abs(q).max() < (1 << 15)
    drive = _round_shift(q @ term1.mantissa.astype(np.int64).T, term1.exponent) + th.bias.astype(np.int64)
    m2 = term2.mantissa.astype(np.int64)
    v = np.zeros_like(drive)
    acc = np.zeros((x.shape[0], m2.shape[0]), dtype=np.int64)
    payloads, readouts, residuals = [], [], []
    for _ in range(steps):
        m = v + drive
        s = (m >= ONE).astype(np.int64)
        v = m - s * ONE
        payloads.append(s * ONE)
        residuals.append(v)
        acc = acc + _round_shift(payloads[-1] @ m2.T, term2.exponent) + tr.bias.astype(np.int64)
        readouts.append(acc.copy())
    payloads, readouts = np.stack(payloads), np.stack(readouts)
    t1 = np.arange(1, steps + 1)[:, None, None]
    assert np.array_equal(np.cumsum(payloads, axis=0) // ONE, np.clip((t1 * drive[None]) // ONE, 0, t1))

    res = _sim(conv.program, x, steps, precision="fixed", record=(hidden,), record_readout=True,
               membrane_at=(3, 20))
    assert res.traces[hidden].dtype == np.int64
    assert np.array_equal(res.traces[hidden], payloads)
    for k in (3, 20):  # v̂·2^−F, exact
        assert np.array_equal(res.membrane[k][hidden], residuals[k - 1] / ONE)
    assert residuals[-1].min() < 0 < residuals[-1].max()  # negative drives keep negative residuals
    assert np.array_equal(res.readout, readouts.astype(np.float64))
    assert res.input_clipped == 0


# ------------------------------------------------------------------------------------------------------------
# (b) network-level identities in fixed point: charge conservation, LIPool cumulative max, readout accumulation
# ------------------------------------------------------------------------------------------------------------

def _stage_inputs(prog, stage, traces, p_in):
    """x̂(t) of a neuron/readout stage rebuilt from the RECORDED payloads of its sources: (T, N, *shape)."""
    steps, n = next(iter(traces.values())).shape[:2]
    out = np.zeros((steps, n) + stage.shape, dtype=np.int64)
    for t in range(steps):
        for i in range(n):
            acc = np.array(stage.bias_fixed, dtype=np.float64)
            for term in stage.terms:
                src = p_in[i] if term.source == "input" else traces[term.source][t, i]
                acc = acc + apply_term_np(term, src, True)
            out[t, i] = acc.astype(np.int64)
    return out


@pytest.mark.parametrize("name, opts", [("resmix", dict(sc=((1, 0.7), (-1, 0.6)), sc_early=6)),
                                        ("poolmix", dict())])
def test_fixed_charge_conservation_and_lipool_identity(name, opts):
    conv = convert(name, "const", **opts)
    prog = conv.program
    ids = [7, 3, 11]
    x = random_inputs(conv.model.input_shape, len(ids), seed=99)
    steps = 12
    names = tuple(s.name for s in prog.stages)
    res = _sim(prog, x, steps, precision="fixed", sample_ids=ids, record=names, record_readout=True,
               record_counts=True)
    assert all(v == 0 for v in res.saturated.values())
    p_in, _ = quantize_input_np(x, prog.input_scale, prog.input_frac_bits)
    gated_seen = False
    for s in prog.stages:
        if s.kind == "lipool":
            # Σ_{τ≤t} y = max over the window of Σ_{τ≤t} x (exact, ALGORITHMS §1.9); padding never wins
            src_cum = torch.as_tensor(np.cumsum(res.traces[s.source], axis=0), dtype=torch.float64)
            t_, n_ = src_cum.shape[:2]
            pooled = F.max_pool2d(src_cum.reshape((t_ * n_,) + src_cum.shape[2:]), s.kernel, s.stride, s.padding)
            assert np.array_equal(np.cumsum(res.traces[s.name], axis=0),
                                  pooled.numpy().reshape(res.traces[s.name].shape)), s.name
            continue
        xin = _stage_inputs(prog, s, res.traces, p_in)
        if s.kind == "readout":
            assert np.array_equal(res.readout.reshape((steps, len(ids)) + s.shape), np.cumsum(xin, axis=0))
            continue
        spec = s.spec
        assert spec.mode == "const" and spec.theta_const_fixed == ONE and spec.gamma == 1
        pay = res.traces[s.name]
        assert set(np.unique(pay)) <= {0, ONE}, s.name
        assert np.array_equal(pay.sum(axis=0) // ONE, res.spike_counts[s.name]), s.name
        # neuron state after T steps, from the rule driven by the re-derived inputs
        st = dyn.init_fixed_state((len(ids),) + s.shape, np.zeros(0, dtype=np.int64))
        for t in range(steps):
            st, o = dyn.step_fixed(spec, s.luts, st, xin[t], np.asarray(ids), s.index, prog.seed)
            assert np.array_equal(o.payload, pay[t]), (s.name, t)
        lhs = pay.sum(axis=0) + st.v
        rhs = xin.sum(axis=0)
        if not spec.sc_enabled:
            assert np.array_equal(lhs, rhs), f"charge not conserved in {s.name!r}"
            # and the recorded payloads follow soft-reset IF on the residual implied by conservation
            resid = np.concatenate([np.zeros((1,) + pay.shape[1:], np.int64), np.cumsum(xin - pay, axis=0)[:-1]])
            assert np.array_equal(pay, ONE * (resid + xin >= ONE)), s.name
        else:
            # 'code' gate: the suppressed charge is discarded, a whole number of thresholds per neuron
            lost = rhs - lhs
            assert (lost >= 0).all() and (lost % ONE == 0).all(), s.name
            gated_seen |= bool(lost.any())
    if opts:
        assert gated_seen, "the spike-confidence gate never suppressed a spike: SC part would be vacuous"


# ------------------------------------------------------------------------------------------------------------
# (c) delay=True: the zero-delay readout shifted by the readout depth
# ------------------------------------------------------------------------------------------------------------

def test_stateful_depths_of_test_networks():
    # hand-counted: poolmix relu(1) relu_1(2) maxpool(3) relu_2(4) readout(5);
    # resmix relu, mp, b1 relu, b1 out relu, b2 relu, b2 out relu, b3 relu, b3 out relu, fc1 relu, readout
    for name, want in (("poolmix", 5), ("resmix", 10)):
        conv = convert(name, "const")
        assert stateful_depths(conv.graph)[conv.graph.output.name] == want


@pytest.mark.parametrize("precision", ["fixed", "float"])
def test_delay_is_shift_by_readout_depth(precision):
    conv = convert("poolmix", "msat", sc=((-1, 0.6),))
    x = random_inputs(conv.model.input_shape, 3, seed=5)
    steps = 12
    d = stateful_depths(conv.graph)[conv.graph.output.name]
    assert d == 5
    base = _sim(conv.program, x, steps, precision=precision, record_readout=True, sample_ids=[4, 9, 2])
    late = _sim(conv.program, x, steps, precision=precision, record_readout=True, sample_ids=[4, 9, 2],
                delay=True)
    assert np.array_equal(late.readout[d:], base.readout[:steps - d])
    assert not late.readout[:d].any()
    assert np.array_equal(late.predictions[d:], base.predictions[:steps - d])
    assert not late.predictions[:d].any()
    assert len(np.unique(base.readout[:steps - d])) > 1
    # T ≤ depth: nothing reaches the readout
    short = _sim(conv.program, x, d, precision=precision, record_readout=True, delay=True)
    assert not short.readout.any() and not short.predictions.any()


# ------------------------------------------------------------------------------------------------------------
# (d) batch-size independence; spike confidence keyed by the dataset id only
# ------------------------------------------------------------------------------------------------------------

def _sc_net():
    conv = convert("resmix", "msat", sc=((1, 0.7), (-1, 0.6)), sc_early=6)
    x = random_inputs(conv.model.input_shape, 4, seed=99)
    return conv, x, tuple(s.name for s in conv.program.stages)


def test_fixed_results_do_not_depend_on_batch_size():
    conv, x, names = _sc_net()
    ids = [7, 3, 11, 250]
    runs = [_sim(conv.program, x, 10, precision="fixed", sample_ids=ids, batch_size=b, record=names,
                 record_readout=True, record_counts=True) for b in (64, 3, 1)]
    first = runs[0]
    for r in runs[1:]:
        assert np.array_equal(r.readout, first.readout)
        assert np.array_equal(r.predictions, first.predictions)
        for k in names:
            assert np.array_equal(r.traces[k], first.traces[k]), k
        for k in first.spike_counts:
            assert np.array_equal(r.spike_counts[k], first.spike_counts[k]), k
        assert r.saturated == first.saturated


@pytest.mark.parametrize("precision", ["fixed", "float"])
def test_payload_sums_are_cumulative_trace_sums(precision):
    conv, x, names = _sc_net()
    neurons = [s.name for s in conv.program.neuron_stages]
    r = _sim(conv.program, x, 10, precision=precision, sample_ids=[7, 3, 11, 250], batch_size=3, record=neurons,
             sums_at=(10, 1, 4))
    assert sorted(r.payload_sums) == [1, 4, 10]
    for k, per in r.payload_sums.items():
        assert set(per) == set(neurons)
        for name in neurons:
            expect = r.traces[name][:k].sum(axis=0)
            if precision == "fixed":  # integers: exact
                assert np.array_equal(per[name], expect), (k, name)
            else:
                np.testing.assert_allclose(per[name], expect, rtol=1e-12, atol=1e-12, err_msg=f"{k} {name}")
    assert any(r.payload_sums[10][n].any() for n in neurons)
    with pytest.raises(ValueError, match="sums_at"):
        _sim(conv.program, x, 10, precision=precision, sums_at=(11,))
    with pytest.raises(ValueError, match="membrane_at"):
        _sim(conv.program, x, 10, precision=precision, membrane_at=(0,))


@pytest.mark.parametrize("precision", ["fixed", "float"])
def test_spike_confidence_depends_only_on_sample_id(precision):
    conv, x, names = _sc_net()
    steps = 8
    batch = _sim(conv.program, x[:3], steps, precision=precision, sample_ids=[7, 3, 11], record=names,
                 record_readout=True)
    alone = _sim(conv.program, x[1:2], steps, precision=precision, sample_ids=[3], record=names,
                 record_readout=True)
    for k in names:
        assert np.array_equal(alone.traces[k][:, 0], batch.traces[k][:, 1]), k
    assert np.array_equal(alone.readout[:, 0], batch.readout[:, 1])
    # same image at another batch position with the same id: same result; with another id: a different draw
    moved = _sim(conv.program, x[[0, 1]][::-1], steps, precision=precision, sample_ids=[3, 7], record=names)
    assert all(np.array_equal(moved.traces[k][:, 0], batch.traces[k][:, 1]) for k in names)
    other = _sim(conv.program, x[1:2], steps, precision=precision, sample_ids=[4], record=names)
    gated = [conv.relus[1], conv.relus[-1]]
    assert any(not np.array_equal(other.traces[k][:, 0], batch.traces[k][:, 1]) for k in gated)
    # the layers before the first gated layer never see the id
    for k in names[:names.index(conv.relus[1])]:
        assert np.array_equal(other.traces[k][:, 0], batch.traces[k][:, 1]), k


def test_without_spike_confidence_sample_ids_are_irrelevant():
    conv = convert("resmix", "msat")
    x = random_inputs(conv.model.input_shape, 2, seed=99)
    a = _sim(conv.program, x, 6, sample_ids=[7, 3], record_readout=True)
    b = _sim(conv.program, x, 6, sample_ids=[1000, 5], record_readout=True)
    assert np.array_equal(a.readout, b.readout)


# ------------------------------------------------------------------------------------------------------------
# (e) the float reference at large T approaches the ANN logits
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [32, 256])
def test_float_const_readout_over_T_approaches_ann(steps):
    """1 hidden layer, λ = max ANN activation over the SAME samples, so every input current x ∈ (−∞, λ]:
    for x ≤ 0 the neuron never fires (= ReLU); for 0 < x ≤ λ the residual stays in [0, λ) and the payload sum
    is (t+1)·x − v, so |mean payload − ReLU(x)| < λ/T; through the readout |Out/T − ANN_i| < Σ_j |W2_ij|·λ/T."""
    conv = convert("mlp", "const")
    x = conv.calib
    logits = ann.evaluate(conv.graph, x).numpy()
    res = _sim(conv.program, x, steps, precision="float", record_readout=True)
    lam = conv.lambdas[conv.relus[0]]
    w2 = conv.model.fc2.weight.detach().double().numpy()
    bound = np.abs(w2).sum(axis=1) * lam / steps + 1e-9
    err = np.abs(res.readout[-1] / steps - logits)
    assert (err <= bound).all(), (err.max(), bound)
    if steps == 256:
        assert err.max() < 0.05 * np.abs(logits).max()


# ------------------------------------------------------------------------------------------------------------
# (f) input clipping
# ------------------------------------------------------------------------------------------------------------

def test_input_clip_count_and_clip_semantics():
    conv = convert("mlp", "const")
    prog = conv.program
    lam0 = prog.input_scale
    x = random_inputs(conv.model.input_shape, 4, seed=3)  # |x| ≤ a few λ^0
    x[0, 0], x[1, 2], x[1, 3], x[3, 5] = 200 * lam0, -150 * lam0, 127 * lam0, 128.5 * lam0
    res = _sim(prog, x, 4, precision="fixed", record_readout=True, batch_size=3)
    assert res.input_clipped == 3
    lim = ((1 << (prog.input_frac_bits + 7)) - 1) / (1 << prog.input_frac_bits) * lam0  # largest code
    clamped = np.clip(x, -lim, lim)
    ref = _sim(prog, clamped, 4, precision="fixed", record_readout=True)
    assert ref.input_clipped == 0
    assert np.array_equal(res.readout, ref.readout)
    assert _sim(prog, x, 2, precision="float").input_clipped == 0


# ------------------------------------------------------------------------------------------------------------
# float32 synapses (speed option of the float model)
# ------------------------------------------------------------------------------------------------------------

def test_float32_synapses_round_the_float_model_only():
    conv, x, names = _sc_net()
    ids = [7, 3, 11, 250]
    neurons = [s.name for s in conv.program.neuron_stages]
    kw = dict(sample_ids=ids, record=neurons, record_readout=True)
    f64 = _sim(conv.program, x, 10, precision="float", **kw)
    f32 = _sim(conv.program, x, 10, precision="float", synapse_dtype="float32", **kw)
    # the option acts (float32 rounding shows in the low bits) and costs no more than float32 rounding
    assert not np.array_equal(f32.readout, f64.readout)
    scale = np.abs(f64.readout).max()
    assert np.abs(f32.readout - f64.readout).max() <= 1e-5 * scale
    for k in neurons:
        assert np.abs(f32.traces[k] - f64.traces[k]).max() <= 1e-5 * max(np.abs(f64.traces[k]).max(), 1e-12), k
    assert np.array_equal(f32.predictions, f64.predictions)
    # fixed point stays exact whatever the option says
    a = _sim(conv.program, x, 10, precision="fixed", **kw)
    b = _sim(conv.program, x, 10, precision="fixed", synapse_dtype="float32", **kw)
    assert np.array_equal(a.readout, b.readout)
    for k in neurons:
        assert np.array_equal(a.traces[k], b.traces[k]), k


# ------------------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------------------

def test_errors():
    conv = convert("poolmix", "const")
    prog = conv.program
    x = random_inputs(conv.model.input_shape, 2, seed=1)
    with pytest.raises(ValueError, match="unknown stage"):
        _sim(prog, x, 2, record=("relu", "nope"))
    with pytest.raises(ValueError, match="input shape"):
        _sim(prog, x[:, :1], 2)
    with pytest.raises(ValueError, match="input shape"):
        _sim(prog, x[0], 2)  # missing batch axis
    with pytest.raises(ValueError, match="input shape"):
        _sim(prog, x.reshape(2, -1), 2)
    with pytest.raises(ValueError, match="sample_ids"):
        _sim(prog, x, 2, sample_ids=[1, 2, 3])
    with pytest.raises(ValueError, match="precision"):
        _sim(prog, x, 2, precision="half")
    with pytest.raises(ValueError, match="steps"):
        _sim(prog, x, 0)
    with pytest.raises(ValueError, match="synapse_dtype"):
        _sim(prog, x, 2, precision="float", synapse_dtype="float16")
