"""Lava process graph vs the batched reference simulator (msat_lava.reference), step for step.

* fixed point: BIT-EXACT — the accumulated readout and every stage's payload (neuron, LIPool, readout) at every
  step of every sample, in every threshold mode, on two small random networks that together contain every layer
  type (tests/_nets.py): ResMix (conv with stride/padding/groups, MaxPool → LIPool, identity / option-A /
  projection shortcuts, global average pool, flatten, hidden dense layer, readout) with spike confidence on an
  inner and on the last ReLU (gate active for the first 6 of 12 steps, so both regimes are covered), and
  PoolMix (average pools incl. one on the input and a padded one, valid / depthwise convs, an overlapping padded
  LIPool) without spike confidence, and again with Γ = 3 and the 'keep_charge' gate on its first and last
  ReLU. Samples carry non-trivial dataset ids, which key the gate.
* float: within 1e-5 (readout and traces).

Each Lava run compiles one network and runs 3 samples × 12 steps (~1–4 s on 2 cores).
"""
from __future__ import annotations

import numpy as np
import pytest

from msat_lava import reference
from msat_lava.lava.build import run_lava
from netx_export import neurons

from _nets import convert, random_inputs

STEPS = 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


IDS = [7, 3, 11]
# every registered neuron model (netx_export.neurons) whose output reaches the readout within STEPS; BSNN-R's
# pipeline (first output after depth·K steps) is covered by tests/test_bsnn_r.py
MODES = tuple(n for n in neurons.names() if n != "bsnn-r")
# network → conversion options: ResMix gates relu index 1 (inside the identity block) and the last relu.
NETS = {
    "resmix-sc": ("resmix", dict(sc=((1, 0.7), (-1, 0.6)), sc_early=6)),
    "poolmix": ("poolmix", dict()),
    # Γ = 3 (several spikes per step, integer division in the rule) and the 'keep_charge' gate variant
    "poolmix-g3-keep": ("poolmix", dict(gamma=3, sc=((0, 0.5), (-1, 0.8)), sc_gate="keep_charge")),
    # half-threshold start v(0) = λ/2 (the "+h" methods), normalized-unit MSAT formula
    "resmix-h": ("resmix", dict(v_init=0.5, msat_units="normalized")),
}


def _setup(net_key: str, mode: str):
    name, opts = NETS[net_key]
    conv = convert(name, mode, **opts)
    x = random_inputs(conv.model.input_shape, len(IDS), seed=99)
    return conv, x, tuple(s.name for s in conv.program.stages)


def _first_difference(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape:
        return f"shapes differ: {a.shape} vs {b.shape}"
    idx = tuple(int(i) for i in np.argwhere(a != b)[0])
    return f"{int((a != b).sum())} entries differ; first at (t, n, ...)={idx}: {a[idx]} vs {b[idx]}"


@pytest.mark.lava
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("net_key", list(NETS))
def test_fixed_lava_bit_exact_with_reference(net_key, mode):
    conv, x, names = _setup(net_key, mode)
    prog = conv.program
    ref = reference.simulate(prog, x, STEPS, precision="fixed", sample_ids=IDS, record=names,
                             record_readout=True, progress=False)
    lav = run_lava(prog, x, STEPS, precision="fixed", sample_ids=IDS, record=names)

    # the run must be non-trivial: every stage carries payload at some step, nothing saturates
    for s in prog.stages:
        assert np.count_nonzero(ref.traces[s.name]) > 0, f"stage {s.name!r} never emits: test would be vacuous"
    assert all(v == 0 for v in ref.saturated.values()), ref.saturated
    if NETS[net_key][1].get("gamma", 1) > 1:  # some step emits several spikes (payload > θ̂ ≤ 2^F)
        assert max(int(ref.traces[s.name].max()) for s in prog.neuron_stages) > 1 << 12
    assert lav.input_clipped == ref.input_clipped == 0

    assert lav.readout.shape == ref.readout.shape == (STEPS, len(IDS), prog.readout.shape[0])
    assert np.array_equal(lav.readout, ref.readout), _first_difference(lav.readout, ref.readout)
    assert np.array_equal(lav.predictions, ref.predictions)
    for name in names:
        a, b = lav.traces[name], ref.traces[name]
        assert a.shape == b.shape == (STEPS, len(IDS)) + prog.stage(name).shape, name
        assert np.issubdtype(a.dtype, np.integer), (name, a.dtype)
        assert np.array_equal(a, b), f"stage {name!r}: " + _first_difference(a, b)
    # the readout trace is the accumulated readout itself
    assert np.array_equal(lav.traces[prog.readout.name].reshape(lav.readout.shape), lav.readout)


@pytest.mark.lava
@pytest.mark.parametrize("net_key, mode", [("resmix-sc", "msat"), ("poolmix", "dtt"), ("resmix-h", "msat"),
                                           ("resmix-sc", "dtif-r"), ("poolmix-g3-keep", "dtif-r")])
def test_float_lava_matches_reference(net_key, mode):
    conv, x, names = _setup(net_key, mode)
    prog = conv.program
    ref = reference.simulate(prog, x, STEPS, precision="float", sample_ids=IDS, record=names,
                             record_readout=True, progress=False)
    lav = run_lava(prog, x, STEPS, precision="float", sample_ids=IDS, record=names)
    for s in prog.stages:
        assert np.count_nonzero(ref.traces[s.name]) > 0, s.name
    np.testing.assert_allclose(lav.readout, ref.readout, rtol=0, atol=1e-5)
    assert np.array_equal(lav.predictions, ref.predictions)
    for name in names:
        assert lav.traces[name].shape == ref.traces[name].shape, name
        np.testing.assert_allclose(lav.traces[name], ref.traces[name], rtol=0, atol=1e-5, err_msg=name)


@pytest.mark.lava
def test_float_lava_matches_reference_on_quantized_synapses():
    """The float-qw diagnostic program (quantized input, weights, biases) runs the same in Lava and the reference."""
    from msat_lava.program import from_converted

    conv, x, names = _setup("poolmix", "msat")
    prog = from_converted(conv.net, float_weights="quantized")
    ref = reference.simulate(prog, x, STEPS, precision="float", sample_ids=IDS, record_readout=True,
                             progress=False)
    lav = run_lava(prog, x, STEPS, precision="float", sample_ids=IDS)
    exact = reference.simulate(conv.program, x, STEPS, precision="float", sample_ids=IDS, record_readout=True,
                               progress=False)
    assert np.abs(exact.readout - ref.readout).max() > 1e-3  # the diagnostic program is a different network
    np.testing.assert_allclose(lav.readout, ref.readout, rtol=0, atol=1e-5)


@pytest.mark.lava
def test_lava_rejects_unknown_stage_and_wrong_shape():
    conv, x, _ = _setup("poolmix", "const")
    with pytest.raises(ValueError, match="unknown stage"):
        run_lava(conv.program, x, 2, record=("relu", "no_such_stage"))
    with pytest.raises(ValueError, match="input shape"):
        run_lava(conv.program, x[:, :1], 2)
    with pytest.raises(ValueError, match="input shape"):
        run_lava(conv.program, x.reshape(len(x), -1), 2)
    with pytest.raises(ValueError, match="precision"):
        run_lava(conv.program, x, 2, precision="double")
    with pytest.raises(ValueError, match="sample_ids"):
        run_lava(conv.program, x, 2, sample_ids=[7])
