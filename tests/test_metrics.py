"""msat_lava.metrics and msat_lava.sc_calibration against hand-computed values (ALGORITHMS §3.2, §4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import _nets
from msat_lava import metrics as M
from msat_lava.sc_calibration import (P_MIN, calibrate_spike_confidence, gated_layers, preactivation_fn,
                                      run_with_statistics)

# Two samples, five neurons (hand-checked below).
#   sample 0: z = [-1, 0, 2, -3, 1],       n = [2, 1, 0, 0, 3]
#     z ≤ 0: {0, 1, 3} → inactive 3;  SIN = {0, 1} (2, spikes 2 + 1 = 3);  POS (z ≥ 0, n > 0) = {1, 4} → 2;
#     silent (z ≥ 0, n = 0) = {2} → 1
#   sample 1: z = [-0.5, -0.5, -2, 3, -1], n = [0, 4, 0, 1, 0]
#     inactive {0, 1, 2, 4} → 4;  SIN = {1} (1, spikes 4);  POS = {3} → 1;  silent = {} → 0
Z = np.array([[-1, 0, 2, -3, 1], [-0.5, -0.5, -2, 3, -1]], dtype=np.float64)
N = np.array([[2, 1, 0, 0, 3], [0, 4, 0, 1, 0]], dtype=np.int64)


def test_sin_counts_per_sample_by_hand():
    c = M.sin_counts(Z, N)
    assert c.neurons.tolist() == [5, 5]
    assert c.inactive.tolist() == [3, 4]
    assert c.sin.tolist() == [2, 1]
    assert c.pos.tolist() == [2, 1]
    assert c.silent.tolist() == [1, 0]
    assert c.sin_spikes.tolist() == [3, 4]
    assert c.totals() == {"neurons": 10, "inactive": 7, "sin": 3, "pos": 3, "silent": 1, "sin_spikes": 7}


def test_sin_stats_pooled_by_hand():
    s = M.sin_statistics(Z, N)
    assert (s.n_sin, s.n_pos, s.n_inactive, s.n_silent, s.n_neurons, s.sin_spikes) == (3, 3, 7, 1, 10, 7)
    assert s.mode == "pooled" and s.batches == 1 and s.samples == 2
    assert s.sin_ratio == pytest.approx(3 / 7)
    assert s.sin_share == pytest.approx(3 / 10)
    assert s.pos_share == pytest.approx(3 / 10)
    assert s.silent_share == pytest.approx(1 / 10)
    assert s.c == pytest.approx(3 / 6)
    assert s.p == pytest.approx(1 - 3 / 6)
    assert s.ans == pytest.approx(7 / 3)


def test_sin_stats_per_batch_mean_by_hand():
    s = M.sin_stats(M.sin_counts(Z, N), batch_size=1)
    # batch 0: SIN ratio 2/3, c 2/4, ANS 3/2, SIN share 2/5, POS share 2/5, silent 1/5
    # batch 1: SIN ratio 1/4, c 1/2, ANS 4,   SIN share 1/5, POS share 1/5, silent 0
    assert s.mode == "per-batch" and s.batches == 2
    assert s.sin_ratio == pytest.approx((2 / 3 + 1 / 4) / 2)
    assert s.c == pytest.approx(0.5) and s.p == pytest.approx(0.5)
    assert s.ans == pytest.approx((1.5 + 4) / 2)
    assert s.sin_share == pytest.approx(0.3) and s.pos_share == pytest.approx(0.3)
    assert s.silent_share == pytest.approx(0.1)
    assert s.n_sin == 3  # counts stay totals
    per = M.sin_stats_per_batch(M.sin_counts(Z, N), 1)
    assert [p.ans for p in per] == pytest.approx([1.5, 4.0])
    # a batch as large as the data is the pooled result
    assert M.sin_stats(M.sin_counts(Z, N), batch_size=8).ans == pytest.approx(7 / 3)


def test_sin_counts_maps_tensors_and_zero_denominators():
    z = torch.tensor(np.arange(24, dtype=np.float64).reshape(2, 3, 2, 2) + 1)  # all active
    n = torch.zeros((2, 3, 2, 2), dtype=torch.int64)                            # nothing fires
    s = M.sin_statistics(z, n)
    assert (s.n_neurons, s.n_inactive, s.n_sin, s.n_pos, s.n_silent) == (24, 0, 0, 0, 24)
    assert (s.sin_ratio, s.c, s.p, s.ans, s.silent_share) == (0.0, 0.0, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        M.sin_counts(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError):
        M.sin_stats(M.sin_counts(Z, N), batch_size=0)


def test_firing_rate_by_hand():
    n = np.array([[[1, 0]], [[3, 2]]])  # 2 samples x (1, 2) neurons, 6 spikes
    assert M.firing_rate(n, 4) == pytest.approx(6 / (2 * 2 * 4))
    assert M.firing_rate_from_total(6, 2, 2, 4) == pytest.approx(0.375)
    with pytest.raises(ValueError):
        M.firing_rate_from_total(1, 0, 2, 4)


@pytest.mark.parametrize("in_shape, w_shape, stride, padding, groups, expected", [
    ((3, 32, 32), (64, 3, 3, 3), 1, 1, 1, 32 * 32 * 3 * 3 * 3 * 64),          # VGG16 layer 1: 1,769,472
    ((64, 32, 32), (64, 64, 3, 3), 1, 1, 1, 37_748_736),                      # VGG16 layer 2 (ALGORITHMS §4.3)
    ((16, 32, 32), (32, 16, 3, 3), 2, 1, 1, 16 * 16 * 9 * 16 * 32),           # stride 2: out (32+2−3)//2+1 = 16
    ((8, 10, 10), (8, 2, 3, 3), 1, 0, 4, 8 * 8 * 9 * 2 * 8),                  # groups 4, valid: out 8x8
    ((6, 3, 3), (6, 1, 3, 3), 1, 1, 6, 3 * 3 * 9 * 1 * 6),                    # depthwise
    ((2, 9, 7), (4, 2, 3, 1), (2, 1), (1, 0), 1, 5 * 7 * 3 * 1 * 2 * 4),      # out ((9+2−3)//2+1, 7) = (5, 7)
    ((16, 32, 32), (32, 16, 1, 1), 2, 0, 1, 16 * 16 * 16 * 32),               # 1x1 projection, stride 2
])
def test_conv_macs_by_hand(in_shape, w_shape, stride, padding, groups, expected):
    assert M.conv_macs(in_shape, w_shape, stride, padding, groups) == expected


def test_linear_macs_and_shape_errors():
    assert M.linear_macs(512, 10) == 5120      # VGG16 CIFAR-10 classifier (ALGORITHMS §4.3)
    assert M.conv_output_hw((32, 32), 3, 2, 1) == (16, 16)
    with pytest.raises(ValueError):
        M.conv_macs((3, 8, 8), (4, 2, 3, 3))   # weight does not fit 3 input channels
    with pytest.raises(ValueError):
        M.conv_output_hw((2, 2), 3)


def test_graph_and_program_macs_agree():
    conv = _nets.convert("poolmix", "msat")
    macs = M.graph_macs(conv.graph)
    convs = [n for n in conv.graph if n.kind == "conv"]
    # PoolMix: c1 valid 3x3 on 2x9x9 → 6x7x7; c2 depthwise on 6x3x3 (pad 1); c3 on 6x2x2 (pad 1) → 8x2x2; fc 32→4
    assert [macs[n.name] for n in convs] == [7 * 7 * 9 * 2 * 6, 3 * 3 * 9 * 1 * 6, 2 * 2 * 9 * 6 * 8]
    fc = [n for n in conv.graph if n.kind == "linear"][0]
    assert macs[fc.name] == 32 * 4
    e = M.energy_estimate(conv.program, {s.name: 0.0 for s in conv.program.neuron_stages}, 1)
    assert e["ann"]["macs_per_op"] == macs
    assert e["ann"]["macs"] == sum(macs.values())


def test_energy_formula_by_hand():
    conv = _nets.convert("mlp", "msat")   # 6 → linear(5) → relu → linear(3)
    relu = conv.relus[0]
    e = M.energy_estimate(conv.program, {relu: 0.2}, 10)
    # ANN: 6·5 + 5·3 = 45 MACs → 4.6·45 = 207 pJ
    assert e["ann"]["macs"] == 45 and e["ann"]["energy_pj"] == pytest.approx(207.0)
    # SNN: first layer (input-fed) 30 MACs every step: 4.6·30·10 = 1380; readout 0.9·10·15·0.2 = 27
    assert e["snn"]["input_macs_per_step"] == 30
    assert e["snn"]["synaptic_ops"] == pytest.approx(15 * 0.2 * 10)
    assert e["snn"]["energy_pj"] == pytest.approx(1407.0)
    assert e["ratio"] == pytest.approx(1407 / 207)
    assert e["snn"]["energy_first_layer_once_pj"] == pytest.approx(4.6 * 30 + 27)
    assert e["ratio_first_layer_once"] == pytest.approx(165 / 207)
    assert e["estimate"] is True and "EVERY step" in e["convention"]
    with pytest.raises(KeyError):
        M.energy_estimate(conv.program, {}, 10)


def test_energy_lipool_rate_fallback_and_measured():
    conv = _nets.convert("poolmix", "msat")
    prog = conv.program
    lip = [s for s in prog.stages if s.kind == "lipool"][0]
    rates = {s.name: 0.1 * (i + 1) for i, s in enumerate(prog.neuron_stages)}
    e = M.energy_estimate(prog, rates, 8)
    rows = [r for r in e["terms"] if r["source"] == lip.name]
    assert rows and all(r["rate_estimated"] and r["source_rate"] == rates[lip.source] for r in rows)
    e2 = M.energy_estimate(prog, {**rates, lip.name: 0.05}, 8)
    rows2 = [r for r in e2["terms"] if r["source"] == lip.name]
    assert all(not r["rate_estimated"] and r["ops"] == pytest.approx(r["macs"] * 0.05 * 8) for r in rows2)
    # total = input terms as MAC every step + Σ 0.9·MAC·rate·T over the others
    want = sum(4.6 * r["macs"] * 8 if r["input_fed"] else 0.9 * r["macs"] * r["source_rate"] * 8 for r in e2["terms"])
    assert e2["snn"]["energy_pj"] == pytest.approx(want)


def test_steps_to_reach_by_hand():
    curve = [0.1, 0.5, 0.89, 0.895, 0.9, 0.88, 0.91]
    assert M.latency_targets(curve, 0.9) == {"ann-1%": 3, "ann-0.1%": 5, "ann": 5}
    assert M.steps_to_reach(curve, 0.95) is None
    assert M.steps_to_reach([0.3 + 0.6], 0.9) == 1   # float rounding tolerated


# ----------------------------------------------------------------------------------------------------------
# spike-confidence calibration and the chunked runner
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resmix():
    conv = _nets.convert("resmix", "msat")
    x = _nets.random_inputs(conv.program.input_shape, 12, seed=7)
    return conv, x


def test_sc_calibration_equals_hand_formula(resmix):
    from msat_lava.reference import simulate
    from netx_export import ann

    conv, x = resmix
    ids = np.arange(100, 112)
    cal = calibrate_spike_confidence(conv.net, x, sample_ids=ids, layers="all", precision="fixed", chunk=5)
    # independent: one 16-step run, counts, ANN pre-activations, the §3.2 formula by hand
    run = simulate(conv.program, x, 16, precision="fixed", sample_ids=ids, record_counts=True, progress=False)
    _, rec = ann.evaluate(conv.graph, x, record=True)
    some_below_one = False
    for relu in conv.relus:
        z = rec[conv.graph[relu].inputs[0]].numpy()
        n = run.spike_counts[relu]
        n_sin = int(np.sum((z <= 0) & (n > 0)))
        n_pos = int(np.sum((z >= 0) & (n > 0)))
        p = 1 - (n_sin / (n_sin + n_pos) if n_sin + n_pos else 0.0)
        assert cal.stats[relu].n_sin == n_sin and cal.stats[relu].n_pos == n_pos
        assert cal.p[relu] == pytest.approx(p, abs=0, rel=1e-15)
        assert 0 < cal.p[relu] <= 1
        some_below_one |= cal.p[relu] < 1
    assert some_below_one, "the test network should have SIN somewhere"
    assert cal.window == 16 and cal.samples == 12 and cal.mode == "pooled"


def test_sc_calibration_last_layer_default_and_quantize(resmix):
    from netx_export.quantize import quantize

    conv, x = resmix
    cal = calibrate_spike_confidence(conv.net, x, precision="float", batch_size=4)
    assert list(cal.p) == [conv.relus[-1]] and cal.mode == "per-batch"
    assert set(cal.stats) == set(conv.relus)
    net = quantize(conv.graph, conv.lambdas, method="msat", sc_p=cal.p, input_scale=conv.net.input_scale)
    assert net.neurons[conv.relus[-1]].sc_p == pytest.approx(cal.p[conv.relus[-1]])
    with pytest.raises(ValueError, match="without SC"):
        calibrate_spike_confidence(net, x)


def test_sc_p_floor_and_layer_selection(resmix):
    conv, _ = resmix
    assert gated_layers(conv.program, "last") == [conv.relus[-1]]
    assert gated_layers(conv.program, "all") == conv.relus
    assert gated_layers(conv.program, f"{conv.relus[0]},{conv.relus[2]}") == [conv.relus[0], conv.relus[2]]
    with pytest.raises(ValueError):
        gated_layers(conv.program, "nope")
    assert P_MIN == 2.0 ** -24


def test_run_with_statistics_matches_single_runs(resmix):
    from msat_lava.reference import simulate

    conv, x = resmix
    prog = conv.program
    ids = np.arange(12) * 3
    st = run_with_statistics(prog, x, 20, precision="fixed", sample_ids=ids, window=6,
                             preactivations=preactivation_fn(conv.graph), chunk=5, record_lipool=True,
                             agreement_at=(5, 20))
    full = simulate(prog, x, 20, precision="fixed", sample_ids=ids, record_counts=True, progress=False,
                    record=[s.name for s in prog.stages if s.kind != "readout"])
    early = simulate(prog, x, 6, precision="fixed", sample_ids=ids, record_counts=True, progress=False)
    np.testing.assert_array_equal(st.predictions, full.predictions)
    for s in prog.neuron_stages:
        assert st.spikes[s.name] == int(full.spike_counts[s.name].sum())
        np.testing.assert_array_equal(st.sin[s.name].sin_spikes,
                                      M.sin_counts(preactivation_fn(conv.graph)(x)[s.name],
                                                   early.spike_counts[s.name]).sin_spikes)
        assert st.firing_rates()[s.name] == pytest.approx(M.firing_rate(full.spike_counts[s.name], 20))
    # layer agreement pooled over chunks of 5 = numpy on the full traces (rates in raw units: λ·2^−F per LSB)
    z = preactivation_fn(conv.graph)(x)
    for k in (5, 20):
        for s in prog.neuron_stages:
            r = full.traces[s.name][:k].sum(axis=0) * (s.spec.lam / 2 ** s.spec.frac_bits) / k
            a = np.maximum(z[s.name], 0)
            got = st.agreement[k][s.name]
            assert got.n == r.size
            assert got.rel_l1 == pytest.approx(np.abs(r - a).sum() / np.abs(a).sum(), rel=1e-9)
            assert got.corr == pytest.approx(np.corrcoef(r.ravel(), a.ravel())[0, 1], rel=1e-6)
    for name, tr in full.traces.items():
        if prog.stage(name).kind != "lipool":
            continue
        assert st.lipool_events[name] == int(np.count_nonzero(tr))
        assert st.source_rates()[name] == pytest.approx(np.count_nonzero(tr) / tr.size)
    assert st.window == 6 and st.samples == 12


def test_agreement_moments_hand_values():
    r, a = np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 2.0])
    m = M.AgreementMoments.of(r, a)
    # Σ|r − a| = 1, Σ|a| = 4; cov = Σ(r − 1)(a − 4/3) = 2, Σ(r − 1)² = 2, Σ(a − 4/3)² = 24/9 → ρ = 2/√(48/9)
    assert m.rel_l1 == pytest.approx(0.25)
    assert m.corr == pytest.approx(2 / np.sqrt(48 / 9))
    assert m.to_dict()["mean_rate"] == pytest.approx(1.0) and m.to_dict()["mean_ann"] == pytest.approx(4 / 3)
    # pooling two halves = one pass over everything
    both = M.AgreementMoments.of(r[:1], a[:1]) + M.AgreementMoments.of(r[1:], a[1:])
    assert both == m
    # perfect agreement, silent layers, and a layer where only the SNN fires
    assert M.AgreementMoments.of(a, a).rel_l1 == 0 and M.AgreementMoments.of(a, a).corr == pytest.approx(1.0)
    assert M.AgreementMoments.of(np.zeros(3), np.zeros(3)).rel_l1 == 0
    assert M.AgreementMoments.of(np.ones(3), np.zeros(3)).rel_l1 == float("inf")
    assert M.AgreementMoments.of(np.ones(3), a).corr == 0.0
    with pytest.raises(ValueError):
        M.AgreementMoments.of(np.ones(3), np.ones(4))
