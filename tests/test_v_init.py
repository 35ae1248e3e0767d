"""Initial membrane residual v(0) = v_init·λ (NeuronSpec.v_init; "+h" methods use 0.5).

Independent expectations: the closed-form spike count of an IF neuron with soft reset under constant input
(floor(T·a + v_init) for 0 ≤ a ≤ 1 in units of λ), exact fixed-point charge conservation including v̂(0),
validation / round trips of the field through dicts and the HDF5 file, and old files without the field.
"""
from __future__ import annotations

import math
import shutil

import h5py
import numpy as np
import pytest

from msat_lava.dynamics.neuron import init_fixed_state, init_float_state, step_fixed, step_float
from netx_export import hdf5
from netx_export.errors import FormatError
from netx_export.lut import make_luts
from netx_export.neuron import PRESETS, NeuronSpec, NeuronSpecError


@pytest.mark.parametrize("v_init", [0.0, 0.5, 0.25])
def test_const_float_counts_are_closed_form(v_init):
    """IF, θ = λ, soft reset, x(t) = a·λ: n(T) = floor(T·a + v_init) exactly (a, v_init dyadic → exact floats)."""
    lam = 2.0
    spec = NeuronSpec("const", lam, v_init=v_init)
    a = np.arange(0, 65) / 64.0  # 0 … 1 in steps of 1/64
    st = init_float_state((1, a.size), None, spec)
    assert np.all(st.v == v_init * lam)
    for t in range(1, 41):
        st, _ = step_float(spec, st, (a * lam)[None])
        expect = np.floor(t * a + v_init)
        assert np.array_equal(st.count[0], expect), t


def test_half_start_rounds_instead_of_flooring():
    """With v_init = 0.5 the rate after T steps is the nearest multiple of 1/T: |n/T − a| ≤ 1/(2T)."""
    spec = NeuronSpec("const", 1.0, v_init=0.5)
    a = np.linspace(0.0, 1.0, 97)
    for T in (4, 8, 16):
        st = init_float_state((1, a.size), None, spec)
        for _ in range(T):
            st, _ = step_float(spec, st, a[None])
        assert np.abs(st.count[0] / T - a).max() <= 0.5 / T + 1e-12
    # without it the error is one-sided and up to 1/T
    st = init_float_state((1, a.size), None, NeuronSpec("const", 1.0))
    for _ in range(8):
        st, _ = step_float(NeuronSpec("const", 1.0), st, a[None])
    assert (st.count[0] / 8 - a).max() <= 0 and (st.count[0] / 8 - a).min() < -0.5 / 8


@pytest.mark.parametrize("mode", ["const", "msat"])
def test_fixed_charge_conservation_with_initial_residual(mode):
    spec = NeuronSpec(mode, 1.0, coefs=PRESETS["resnet20"], v_init=0.5, units="normalized")
    luts = make_luts(spec)
    assert spec.v_init_fixed == 1 << (spec.frac_bits - 1)
    rng = np.random.default_rng(3)
    xs = rng.integers(-1500, 5000, size=(30, 2, 50))
    st = init_fixed_state((2, 50), None, spec)
    v0 = st.v.copy()
    assert np.all(v0 == 2048) and np.all(st.vsum == 0) and np.all(st.count == 0)
    paid = np.zeros((2, 50), dtype=np.int64)
    for x in xs:
        st, out = step_fixed(spec, luts, st, x)
        paid += out.payload
    assert np.array_equal(paid + st.v, v0 + xs.sum(axis=0))


def test_fixed_rounding_of_v_init():
    for v_init, frac, expect in [(0.5, 12, 2048), (0.3, 12, math.floor(0.3 * 4096 + 0.5)), (0.0, 8, 0),
                                 (0.999, 4, 16)]:
        assert NeuronSpec("const", 1.0, v_init=v_init, frac_bits=frac).v_init_fixed == expect


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2, float("nan"), "half"])
def test_v_init_is_validated(bad):
    with pytest.raises(NeuronSpecError) as info:
        NeuronSpec("const", 1.0, v_init=bad)
    assert info.value.field == "v_init"


def test_spec_dict_round_trip_and_old_dicts():
    spec = NeuronSpec("msat", 3.0, coefs=PRESETS["vgg16"], v_init=0.5)
    assert NeuronSpec.from_dict(spec.to_dict()) == spec
    old = spec.to_dict()
    del old["v_init"]
    assert NeuronSpec.from_dict(old).v_init == 0.0


def _net(v_init):
    from test_hdf5 import LAMS, zoo_graph  # noqa: PLC0415  (shared tiny graph)
    from netx_export.quantize import quantize

    return quantize(zoo_graph(), LAMS, input_scale=2.0, method="msat", preset="resnet20", seed=5, v_init=v_init)


def test_hdf5_round_trip_and_file_without_field(tmp_path):
    net = _net(0.5)
    assert {s.v_init for s in net.neurons.values()} == {0.5}
    assert net.provenance.hyperparameters["v_init"] == 0.5
    path = hdf5.write(net, tmp_path / "h.net")
    again = hdf5.read(path)
    assert again == net and {s.v_init for s in again.neurons.values()} == {0.5}

    # a file written before the field existed (format 1.1) has no spec/v_init: it reads as 0
    old = tmp_path / "old.net"
    shutil.copyfile(hdf5.write(_net(0.0), tmp_path / "z.net"), old)
    with h5py.File(old, "r+") as f:
        for i in range(len(net.neurons)):
            del f[f"msat/neurons/{i}/spec/v_init"]
        from test_hdf5 import downgrade

        downgrade(f, "1.1")
    assert {s.v_init for s in hdf5.read(old).neurons.values()} == {0.0}


def test_bad_v_init_in_file_names_the_field(tmp_path):
    path = hdf5.write(_net(0.5), tmp_path / "h.net")
    with h5py.File(path, "r+") as f:
        del f["msat/neurons/1/spec/v_init"]
        f["msat/neurons/1/spec/v_init"] = 1.5
    with pytest.raises(FormatError) as info:
        hdf5.read(path)
    assert info.value.field.endswith("spec/v_init")
