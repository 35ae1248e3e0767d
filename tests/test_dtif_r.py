"""DTIF-R (ALGORITHMS §5.3, our reconstruction of DTIF): the spec's traces (§5.4), closed forms, charge
conservation, float vs fixed, the file format (params and tables validated, re-derived, hostile mutations) and
the registry round trip over every registered model."""
from __future__ import annotations

import math
import shutil

import h5py
import numpy as np
import pytest

from msat_lava import reference
from msat_lava.dynamics import neuron as dyn
from msat_lava.program import from_converted
from netx_export import hdf5, neurons
from netx_export.errors import FormatError
from netx_export.neuron import NeuronSpec, NeuronSpecError
from netx_export.neurons.dtif_r import DtifParams, DtifTables, g_float64, u_max
from netx_export.quantize import quantize

from test_hdf5 import LAMS, _replace, zoo_graph


def _spec(**params) -> NeuronSpec:
    gamma = params.pop("gamma", 1)
    return NeuronSpec(mode="dtif-r", lam=params.pop("lam", 1.0), gamma=gamma, params=DtifParams(**params))


def _float_run(spec, xs, v0=0.0):
    st = dyn.init_float_state((1, 1), np.zeros(0), spec)
    out = []
    for x in xs:
        st, o = dyn.step_float(spec, st, np.array([[x]], dtype=np.float64))
        out.append((float(o.theta[0, 0]), int(o.spikes[0, 0]), float(st.v[0, 0]), float(o.payload[0, 0])))
    return out


# ---------------------------------------------------------------------------------------------------------
# the spec's reference traces (§5.4) and closed forms
# ---------------------------------------------------------------------------------------------------------

def test_trace_variant_a_constant_input():
    rows = _float_run(_spec(), [0.3] * 8)
    np.testing.assert_allclose([r[0] for r in rows], 1 / 1.3, rtol=0, atol=1e-12)
    assert [r[1] for r in rows] == [0, 0, 1, 0, 0, 1, 0, 0]
    np.testing.assert_allclose([r[2] for r in rows], [0.3, 0.6, -0.1, 0.2, 0.5, -0.2, 0.1, 0.4], atol=1e-12)
    assert [r[3] for r in rows] == [0, 0, 1.0, 0, 0, 1.0, 0, 0]  # binary spikes of value λ
    # plain IF (β = 0 ≡ θ = λ) fires at t = 3 and 6 instead: same count over 8 steps
    assert [r[1] for r in _float_run(_spec(beta=0.0), [0.3] * 8)] == [0, 0, 0, 1, 0, 0, 1, 0]


def test_trace_variant_a_strong_input():
    rows = _float_run(_spec(), [0.8] * 6)
    np.testing.assert_allclose(rows[0][0], 1 / 1.8, atol=1e-12)  # θ = 0.55556
    assert [r[1] for r in rows] == [1, 1, 0, 1, 1, 1]
    np.testing.assert_allclose([r[2] for r in rows], [-0.2, -0.4, 0.4, 0.2, 0.0, -0.2], atol=1e-12)


def test_trace_variants_b_and_c():
    b = _float_run(_spec(variant="b"), [0.3] * 8)
    assert [t for t, r in enumerate(b) if r[1]] == [2, 5, 7]
    np.testing.assert_allclose(sum(r[3] for r in b), 3 / 1.3, atol=1e-12)      # 2.30769
    np.testing.assert_allclose(b[-1][2], 2.4 - 3 / 1.3, atol=1e-12)            # v(7) = 0.09231
    c = _float_run(_spec(variant="c"), [0.3] * 8)
    assert [t for t, r in enumerate(c) if r[1]] == [2, 5, 7]
    assert sum(r[3] for r in c) == 3.0  # 25 % more than the input 2.4: not charge-conserving


@pytest.mark.parametrize("shape", ["hyperbolic", "exp"])
@pytest.mark.parametrize("beta, g_min", [(1.0, 0.25), (3.0, 0.25), (0.5, 0.1), (64.0, 0.5)])
def test_threshold_closed_form(shape, beta, g_min):
    """θ = λ·g(x/λ): 1 for x ≤ 0, max(g_min, 1/(1+βu)) / max(g_min, e^(−βu)) for u > 0; λ = 2.5."""
    lam = 2.5
    spec = _spec(lam=lam, beta=beta, g_min=g_min, shape=shape)
    x = np.linspace(-3, 12, 301).reshape(1, -1)
    theta = dyn.float_threshold(spec, dyn.init_float_state(x.shape, x, spec), x)
    u = x / lam
    core = 1 / (1 + beta * np.maximum(u, 0)) if shape == "hyperbolic" else np.exp(-beta * np.maximum(u, 0))
    want = lam * np.where(u > 0, np.maximum(g_min, core), 1.0)
    np.testing.assert_allclose(theta, want, rtol=1e-15, atol=0)
    assert theta.min() >= lam * g_min and theta.max() <= lam


@pytest.mark.parametrize("params", [dict(), dict(beta=3.0), dict(beta=0.5, g_min=0.1), dict(shape="exp", beta=2.0),
                                    dict(beta=0.0), dict(beta=1e-3, g_min=1 / 64),
                                    dict(shape="exp", beta=1e-3, g_min=2 ** -10)])
def test_fixed_threshold_within_one_lsb(params):
    """θ̂ (table + interpolation) vs the float θ/λ·2^F over the whole input range: |error| ≤ 1 LSB, clamps exact."""
    spec = _spec(**params)
    tab = neurons.get("dtif-r").make_tables(spec)
    F = spec.frac_bits
    hi = int(min(u_max(spec.params) * 1.2 * (1 << F) + 64, 1 << 22))
    xi = np.unique(np.concatenate([np.arange(-64, 4096), np.linspace(0, hi, 20001).astype(np.int64)]))[None]
    th = dyn.fixed_threshold(spec, tab, dyn.init_fixed_state(xi.shape, xi, spec), xi)
    want = g_float64(spec.params, xi / float(1 << F)) * (1 << F)
    assert np.abs(th - want).max() <= 1.0
    assert (th[xi <= 0] == 1 << F).all() and th.min() >= tab.theta_min and th.max() <= 1 << F


@pytest.mark.parametrize("gamma", [2, 5])
def test_burst_closed_form(gamma):
    """Γ > 1 with reset λ: s = min(Γ, ⌊(m − θ)/λ⌋ + 1) for m ≥ θ (spike k fires while m − (k−1)λ ≥ θ)."""
    spec = _spec(gamma=gamma, beta=2.0)
    rng = np.random.default_rng(1)
    st = dyn.init_float_state((1, 200), np.zeros(0), spec)
    for _ in range(6):
        x = rng.uniform(-1, 4, size=(1, 200))
        theta = dyn.float_threshold(spec, st, x)
        m = st.v + x
        want = np.where(m >= theta, np.minimum(gamma, np.floor((m - theta) / 1.0) + 1), 0)
        st, o = dyn.step_float(spec, st, x)
        assert np.array_equal(o.spikes, want.astype(np.int64))
        np.testing.assert_allclose(st.v, m - want, atol=1e-12)
    assert o.spikes.max() >= 2


@pytest.mark.parametrize("variant", ["a", "b"])
def test_charge_conservation_fixed_exact(variant):
    """Σ payload + Σ suppressed + v̂(T−1) = v̂(0) + Σ x̂ exactly (variants a, b; with Γ = 3 and the SC gate)."""
    spec = NeuronSpec(mode="dtif-r", lam=1.5, gamma=3, sc_p=0.6, sc_early=5, v_init=0.5,
                      params=DtifParams(beta=2.0, variant=variant))
    tab = neurons.get("dtif-r").make_tables(spec)
    rng = np.random.default_rng(3)
    st = dyn.init_fixed_state((4, 50), np.zeros(0, dtype=np.int64), spec)
    v0 = st.v.copy()
    total_x = np.zeros_like(v0)
    total_out = np.zeros_like(v0)
    for t in range(20):
        x = rng.integers(-3000, 9000, size=(4, 50))
        st, o = dyn.step_fixed(spec, tab, st, x, sample_ids=np.arange(4), layer_id=2, seed=9)
        total_x += x
        total_out += o.payload + o.suppressed
    assert np.abs(st.v).max() < spec.v_max
    assert np.array_equal(total_out + st.v, v0 + total_x)


def test_variant_c_is_not_charge_conserving():
    spec = _spec(variant="c")
    rows = _float_run(spec, [0.3] * 8)
    assert sum(r[3] for r in rows) + rows[-1][2] > 2.4 + 0.5


def test_params_validation():
    with pytest.raises(NeuronSpecError) as info:  # the table would be too large
        NeuronSpec(mode="dtif-r", lam=1.0, params=DtifParams(g_min=1 / 512))
    assert info.value.field == "params/g_min"
    for kw, field in ((dict(beta=-1.0), "beta"), (dict(beta=100.0), "beta"), (dict(beta=1e-5), "beta"),
                      (dict(g_min=0.0), "g_min"), (dict(g_min=1.5), "g_min"), (dict(shape="tanh"), "shape"),
                      (dict(variant="d"), "variant"), (dict(beta=float("nan")), "beta")):
        with pytest.raises(NeuronSpecError) as info:
            DtifParams(**kw)
        assert info.value.field == field
    with pytest.raises(NeuronSpecError) as info:  # g_min·2^F rounds to 0
        NeuronSpec(mode="dtif-r", lam=1.0, frac_bits=4, params=DtifParams(g_min=0.01))
    assert info.value.field == "params/g_min"
    with pytest.raises(NeuronSpecError) as info:  # MSAT-family fields keep their defaults
        NeuronSpec(mode="dtif-r", lam=1.0, k_const=0.5)
    assert info.value.field == "k_const"
    with pytest.raises(NeuronSpecError):
        NeuronSpec(mode="msat", lam=1.0, coefs={"alpha": 0.3, "k_a": 1, "k_i": 1, "C": 5, "tau_mp": .5, "tau_rd": .5},
                   params=DtifParams())


# ---------------------------------------------------------------------------------------------------------
# the registry: every registered model round-trips (dict and file)
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", neurons.names())
def test_every_registered_model_round_trips(tmp_path, mode):
    model = neurons.get(mode)
    net = quantize(zoo_graph(), LAMS, input_scale=2.0, method=mode, preset="resnet20", seed=3)
    spec = next(iter(net.neurons.values()))
    assert NeuronSpec.from_dict(spec.to_dict()) == spec
    if model.params_type is not None:
        assert model.params_type.from_dict(spec.params.to_dict()) == spec.params
    tables = net.luts[next(iter(net.neurons))]
    assert (tables is None) == (model.tables_type is None)
    if tables is not None:
        assert model.tables_from_dict(tables.to_dict()) == tables == model.make_tables(spec)
    back = hdf5.read(hdf5.write(net, tmp_path / f"{mode}.net"))
    assert back == net
    from netx_export.network import ConvertedNetwork

    assert ConvertedNetwork.from_dict(net.to_dict()) == net
    assert {"name": mode} .items() <= next(r for r in neurons.describe() if r["name"] == mode).items()


# ---------------------------------------------------------------------------------------------------------
# simulation: the step engine, float vs fixed
# ---------------------------------------------------------------------------------------------------------

def _dtif_net(**params):
    return quantize(zoo_graph(), LAMS, input_scale=2.0, method="dtif-r", params=params or None, seed=3)


def test_reference_engines_agree():
    """auto (the fast engine on CPU), fast and step give the same integers (tests/test_engine.py in depth)."""
    prog = from_converted(_dtif_net(beta=3.0))
    x = np.random.default_rng(0).normal(size=(3, 3, 8, 8)) * 0.7
    b = reference.simulate(prog, x, 10, precision="fixed", progress=False, record_readout=True, engine="step")
    assert np.abs(b.readout).max() > 0
    for engine in ("auto", "fast"):
        a = reference.simulate(prog, x, 10, precision="fixed", progress=False, record_readout=True, engine=engine)
        assert np.array_equal(a.readout, b.readout)


def test_float_and_fixed_agree_on_rates():
    """The fixed model tracks the float one: mean readout over 64 steps within a few % of its range."""
    prog = from_converted(_dtif_net())
    x = np.random.default_rng(1).normal(size=(4, 3, 8, 8)) * 0.7
    fx = reference.simulate(prog, x, 64, precision="fixed", progress=False, record_readout=True)
    fl = reference.simulate(prog, x, 64, precision="float", progress=False, record_readout=True)
    a, b = fx.readout[-1] / 4096.0, fl.readout[-1]
    assert np.abs(a - b).max() <= 0.05 * np.abs(b).max()


# ---------------------------------------------------------------------------------------------------------
# the file: params and tables are validated and re-derived (hostile mutations)
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dtif_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("dtif")
    return hdf5.write(_dtif_net(beta=2.0, g_min=0.3), root / "dtif.net")


def _mutants():
    yield "params-beta-range", _replace("msat/neurons/1/spec/params/beta", 100.0), "spec/params/beta"
    yield "params-beta-int", _replace("msat/neurons/1/spec/params/beta", np.int64(2)), "spec/params/beta"
    yield "params-beta-other", _replace("msat/neurons/1/spec/params/beta", 2.5), "msat/neurons/1/"
    yield "params-gmin-zero", _replace("msat/neurons/0/spec/params/g_min", 0.0), "spec/params/g_min"
    yield "params-shape", _replace("msat/neurons/0/spec/params/shape", "tanh"), "spec/params/shape"
    yield "params-variant", _replace("msat/neurons/2/spec/params/variant", "b"), "spec/params"

    def delete(path):
        def mutate(f):
            del f[path]
        return mutate

    yield "params-missing", delete("msat/neurons/0/spec/params"), "spec/params"
    yield "params-key-missing", delete("msat/neurons/0/spec/params/g_min"), "spec/params/g_min"
    yield "params-null", None, "spec/params"

    def lut_entry(f):
        ds = f["msat/neurons/3/lut/g_lut"]
        v = ds[()]
        v[5] -= 1
        _replace("msat/neurons/3/lut/g_lut", v.astype(np.int32))(f)

    yield "lut-entry", lut_entry, "lut/g_lut"
    yield "lut-shift", _replace("msat/neurons/0/lut/shift", np.int64(3)), "lut/"
    yield "lut-theta-min", _replace("msat/neurons/0/lut/theta_min", np.int64(1)), "lut/theta_min"

    def lut_short(f):
        _replace("msat/neurons/0/lut/g_lut", f["msat/neurons/0/lut/g_lut"][:-1])(f)

    yield "lut-shape", lut_short, "lut/g_lut"
    yield "lut-null", None, "lut"
    yield "mode-msat", _replace("msat/neurons/0/spec/mode", "msat"), "spec"
    yield "version-1.3", _replace("msat/format_version", "1.3"), "spec/mode"


@pytest.mark.parametrize("label, mutate, field", list(_mutants()), ids=[m[0] for m in _mutants()])
def test_hostile_dtif_fields_refused(tmp_path, dtif_file, label, mutate, field):
    path = tmp_path / f"{label}.net"
    shutil.copyfile(dtif_file, path)
    with h5py.File(path, "r+") as f:
        if mutate is None:  # a null dataset in place of a group
            where = {"params-null": "msat/neurons/0/spec/params", "lut-null": "msat/neurons/0/lut"}[label]
            del f[where]
            f.create_dataset(where, data=h5py.Empty("f8"))
        else:
            mutate(f)
    with pytest.raises(FormatError) as info:
        hdf5.read(path)
    err = info.value
    assert err.path == str(path) and err.field is not None
    assert field in err.field, (err.field, str(err))
    assert "\n" not in str(err)


def test_digest_covers_dtif_params(tmp_path, dtif_file):
    """A change that validates (another valid β everywhere consistently is impossible with one mutation; here the
    recorded hyperparameters are rewritten too) is still caught by the content digest."""
    import json

    path = tmp_path / "d.net"
    shutil.copyfile(dtif_file, path)
    with h5py.File(path, "r+") as f:
        hp = json.loads(f["msat/provenance/hyperparameters"][()])
        hp["params"]["beta"] = 2.5
        _replace("msat/provenance/hyperparameters", json.dumps(hp, sort_keys=True))(f)
        for i in range(len(LAMS)):
            _replace(f"msat/neurons/{i}/spec/params/beta", 2.5)(f)
        net = _dtif_net(beta=2.5, g_min=0.3)
        for i, name in enumerate(net.luts):
            for key, value in net.luts[name].to_dict().items():
                if isinstance(value, np.ndarray):
                    _replace(f"msat/neurons/{i}/lut/{key}", value.astype(np.int32))(f)
    with pytest.raises(FormatError) as info:
        hdf5.read(path)
    assert info.value.field in ("msat/digest", "msat/provenance/hyperparameters") or "digest" in str(info.value)
