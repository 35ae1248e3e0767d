"""netx_export.hdf5: exact round trips, a corpus of malformed files, atomic writes."""
from __future__ import annotations

import hashlib
import os
import shutil

import h5py
import numpy as np
import pytest

from netx_export import hdf5, ir
from netx_export.errors import FileExistsRefusedError, FormatError
from netx_export.lut import make_luts
from netx_export.neuron import PRESETS, NeuronSpec
from netx_export.network import ConvertedNetwork, _deep_equal
from netx_export.quantize import quantize

LAMS = {"r0": 1.5, "r1": 2.5, "r2": 3.0, "r3": 4.0}


def zoo_graph(seed: int = 0, maxpool: bool = True) -> ir.Graph:
    """Every ir node kind: conv (with/without bias, groups), relu, subsample, chanpad, add (option-A and
    identity shortcuts), maxpool (LIPool; left out with ``maxpool=False``), avgpool, flatten, linear."""
    rng = np.random.default_rng(seed)
    pool = (ir.MaxPool("mp", ("r3",), kernel=(2, 2), stride=(2, 2)),) if maxpool else ()
    return ir.Graph((
        ir.Input("x", shape=(3, 8, 8)),
        ir.Conv("c0", ("x",), weight=rng.normal(size=(4, 3, 3, 3)) * 0.3, bias=rng.normal(size=4) * 0.1,
                padding=(1, 1)),
        ir.Relu("r0", ("c0",)),
        ir.Conv("c1", ("r0",), weight=rng.normal(size=(8, 2, 3, 3)) * 0.3, bias=None, stride=(2, 2),
                padding=(1, 1), groups=2),
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
        *pool,
        ir.AvgPool("gap", ("mp" if maxpool else "r3",), kernel=(2, 2), stride=(2, 2), padding=(1, 1)),
        ir.Flatten("fl", ("gap",)),
        ir.Linear("fc", ("fl",), weight=rng.normal(size=(5, 32 if maxpool else 72)), bias=rng.normal(size=5) * 0.1),
    ))


def chain_graph(seed: int = 0) -> ir.Graph:
    rng = np.random.default_rng(seed)
    return ir.Graph((
        ir.Input("x", shape=(2, 6, 5)),
        ir.Conv("c0", ("x",), weight=rng.normal(size=(3, 2, 3, 3)) * 0.4, bias=rng.normal(size=3) * 0.1,
                padding=(1, 1)),
        ir.Relu("r0", ("c0",)),
        ir.Flatten("fl", ("r0",)),
        ir.Linear("l1", ("fl",), weight=rng.normal(size=(7, 90)) * 0.2, bias=rng.normal(size=7) * 0.1),
        ir.Relu("r1", ("l1",)),
        ir.Linear("out", ("r1",), weight=rng.normal(size=(4, 7)), bias=rng.normal(size=4) * 0.1),
    ))


def zoo_net(method: str = "msat", sc: bool = True, preset: str = "resnet20", units: str = "raw") -> ConvertedNetwork:
    return quantize(zoo_graph(), LAMS, input_scale=2.0, method=method, preset=preset,
                    sc_p={"r3": 0.6, "r1": 0.9} if sc else None, model_hash="ab" * 32, data_hash="cd" * 32,
                    seed=5, hyperparameters={"lambda_method": "percentile", "percentile": 99.99}, msat_units=units)


def chain_net(method: str = "const") -> ConvertedNetwork:
    return quantize(chain_graph(), {"r0": 1.25, "r1": 0.75}, input_scale=2.0, method=method)


def assert_identical(a: ConvertedNetwork, b: ConvertedNetwork) -> None:
    da, db = a.to_dict(), b.to_dict()
    assert _deep_equal(da, db)
    assert a == b


# ---------------------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, sc", [("const", False), ("const", True), ("dtt", False), ("det", True),
                                        ("msat", False), ("msat", True)])
def test_round_trip_every_node_kind_and_mode(tmp_path, method, sc):
    net = zoo_net(method, sc)
    assert {n.kind for n in net.graph} == set(ir.NODE_TYPES)
    path = hdf5.write(net, tmp_path / "zoo.net")
    again = hdf5.read(path)
    assert_identical(net, again)
    # arrays keep dtype and values bit for bit
    for t1, t2 in zip(net.targets, again.targets):
        assert t2.bias.dtype == np.int32 and np.array_equal(t1.bias, t2.bias)
        for s1, s2 in zip(t1.terms, t2.terms):
            assert s2.mantissa.dtype == np.int8 and np.array_equal(s1.mantissa, s2.mantissa)
    for n1, n2 in zip(net.graph, again.graph):
        if n1.kind in ("conv", "linear"):
            assert n2.weight.dtype == np.float64 and np.array_equal(n1.weight, n2.weight)
    assert dict(again.neurons) == dict(net.neurons)
    for name in net.luts:
        assert (net.luts[name] is None) == (again.luts[name] is None)
        if net.luts[name] is not None:
            assert net.luts[name] == again.luts[name]


@pytest.mark.parametrize("method", ["msat", "const"])
def test_round_trip_normalized_units(tmp_path, method):
    net = zoo_net(method, units="normalized")
    assert {s.units for s in net.neurons.values()} == {"normalized"}
    path = hdf5.write(net, tmp_path / "zoo.net")
    with h5py.File(path, "r") as f:
        assert f["msat/neurons/2/spec/units"][()] == b"normalized"
    again = hdf5.read(path)
    assert_identical(net, again)
    assert {s.units for s in again.neurons.values()} == {"normalized"}
    if method == "msat":
        assert again.luts["r3"] == make_luts(NeuronSpec("msat", 1.0, coefs=PRESETS["resnet20"]))


def test_file_without_units_reads_as_raw(tmp_path, good_files):
    """Files written before NeuronSpec.units existed (format 1.0) have no spec/units (nor spec/v_init): they are
    the raw-unit model with v_init 0. In a file of the version that has the field, a missing one is an error."""
    path = tmp_path / "old.net"
    shutil.copyfile(good_files["zoo"], path)
    with h5py.File(path, "r+") as f:
        for i in range(len(LAMS)):
            del f[f"msat/neurons/{i}/spec/units"]
    with pytest.raises(FormatError) as info:  # still a 1.2 file: units is required
        hdf5.read(path)
    assert info.value.field == "msat/neurons/0/spec/units" and "missing" in str(info.value)
    with h5py.File(path, "r+") as f:
        downgrade(f, "1.1")
    with pytest.raises(FormatError) as info:  # 1.1 added units
        hdf5.read(path)
    assert info.value.field == "msat/neurons/0/spec/units"
    with h5py.File(path, "r+") as f:
        downgrade(f, "1.0")
        for i in range(len(LAMS)):
            del f[f"msat/neurons/{i}/spec/v_init"]
    net = hdf5.read(path)
    assert {s.units for s in net.neurons.values()} == {"raw"}
    assert net == hdf5.read(good_files["zoo"])


def test_v_init_required_from_1_2(tmp_path, good_files):
    path = tmp_path / "v.net"
    shutil.copyfile(good_files["zoo"], path)
    with h5py.File(path, "r+") as f:
        del f["msat/neurons/1/spec/v_init"]
    with pytest.raises(FormatError) as info:
        hdf5.read(path)
    assert info.value.field == "msat/neurons/1/spec/v_init"
    with h5py.File(path, "r+") as f:
        downgrade(f, "1.1")
    assert hdf5.read(path) == hdf5.read(good_files["zoo"])


@pytest.mark.parametrize("mutation", ["seed", "seed-same-value", "digest-missing", "digest-garbage",
                                      "digest-other-file"])
def test_content_digest(tmp_path, good_files, mutation):
    """From format 1.3 msat/digest = sha256 of every other dataset: a changed seed (another valid network, which
    no other check can detect) is refused naming the digest; rewriting the same value is accepted."""
    path = tmp_path / "d.net"
    shutil.copyfile(good_files["zoo"], path)
    with h5py.File(path, "r") as f:
        seed = int(f["msat/provenance/seed"][()])
        stored = f["msat/digest"][()].decode()
    assert stored.startswith("sha256:") and len(stored) == 71
    with h5py.File(path, "r+") as f:
        if mutation == "seed":
            _replace("msat/provenance/seed", np.int64(seed + 1))(f)
        elif mutation == "seed-same-value":
            _replace("msat/provenance/seed", np.int64(seed))(f)
        elif mutation == "digest-missing":
            del f["msat/digest"]
        elif mutation == "digest-garbage":
            _replace("msat/digest", "sha256:" + "0" * 64)(f)
        else:
            with h5py.File(good_files["chain"], "r") as other:
                _replace("msat/digest", other["msat/digest"][()].decode())(f)
    if mutation == "seed-same-value":
        assert hdf5.read(path) == hdf5.read(good_files["zoo"])
        return
    with pytest.raises(FormatError) as info:
        hdf5.read(path)
    assert info.value.field == "msat/digest" and info.value.path == str(path)
    assert ("missing" if mutation == "digest-missing" else "does not match") in str(info.value)


def test_digest_only_from_1_3(tmp_path, good_files):
    """A 1.2 file has no digest (reads); a digest in a 1.2 file is not part of that format (refused)."""
    path = tmp_path / "old.net"
    shutil.copyfile(good_files["zoo"], path)
    with h5py.File(path, "r+") as f:
        downgrade(f, "1.3")
        _replace("msat/format_version", "1.2")(f)
    with pytest.raises(FormatError) as info:
        hdf5.read(path)
    assert info.value.field == "msat/digest" and "unexpected" in str(info.value)
    with h5py.File(path, "r+") as f:
        del f["msat/digest"]
        _replace("msat/provenance/seed", np.int64(12345))(f)  # nothing protects the seed of an old file
    assert hdf5.read(path).provenance.seed == 12345


def test_round_trip_chain_with_netx_view(tmp_path):
    net = chain_net()
    path = hdf5.write(net, tmp_path / "chain.net")
    assert_identical(net, hdf5.read(path))
    with h5py.File(path, "r") as f:
        assert [f["layer"][str(i)]["type"][0] for i in range(5)] == [b"input", b"conv", b"flatten", b"dense",
                                                                     b"dense"]
        assert int(f["msat/netx/loadable"][()]) == 1
        assert "messageBits" not in f["layer/1/neuron"]
        assert f["layer/1/weight"].dtype == np.float32


def test_non_chain_file_has_only_the_input_layer(tmp_path):
    path = hdf5.write(zoo_net(), tmp_path / "zoo.net")
    with h5py.File(path, "r") as f:
        assert list(f["layer"].keys()) == ["0"]
        assert int(f["msat/netx/loadable"][()]) == 0
        assert "maxpool" in f["msat/netx/reason"][()].decode() or "chain" in f["msat/netx/reason"][()].decode()


def test_written_file_is_deterministic(tmp_path):
    net = zoo_net()
    a = hdf5.write(net, tmp_path / "a.net")
    b = hdf5.write(net, tmp_path / "b.net")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def test_content_hash(tmp_path):
    """Same network → same hash, even re-laid out (uncompressed copy); any value, dtype or name → another."""
    a = hdf5.write(zoo_net(), tmp_path / "a.net")
    want = hdf5.content_hash(a)
    assert hdf5.content_hash(hdf5.write(hdf5.read(a), tmp_path / "b.net")) == want
    plain = tmp_path / "plain.net"
    with h5py.File(a, "r") as src, h5py.File(plain, "w") as dst:
        def copy(name, obj):  # no compression, no chunks, other object addresses
            if isinstance(obj, h5py.Dataset):
                dst.create_dataset(name, data=obj[()], dtype=obj.dtype)
            else:
                dst.require_group(name)
        src.visititems(copy)
    assert hdf5.content_hash(plain) == want
    with h5py.File(plain, "r+") as f:
        f["msat/targets/0/bias"][0] += 1
    assert hdf5.content_hash(plain) != want
    with h5py.File(plain, "r+") as f:
        f["msat/targets/0/bias"][0] -= 1
        f.move("msat/report", "msat/report2")
    assert hdf5.content_hash(plain) != want


# ---------------------------------------------------------------------------------------------------------
# malformed files
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    return {"zoo": hdf5.write(zoo_net(), root / "zoo.net"), "chain": hdf5.write(chain_net(), root / "chain.net")}


def _replace(path, data, dtype=None):
    def mutate(f):
        del f[path]
        if isinstance(data, str):
            f.create_dataset(path, data=data, dtype=h5py.string_dtype())
        else:
            f.create_dataset(path, data=data if dtype is None else np.asarray(data, dtype=dtype))
    return mutate


def downgrade(f, version: str) -> None:
    """Make an open file of an MSAT-family network look like one written by format ``version`` (≤ 1.3): no
    spec/params (added in 1.4), no content digest below 1.3 (else recomputed)."""
    _replace("msat/format_version", version)(f)
    for g in f["msat/neurons"].values():
        if "params" in g["spec"]:
            del g["spec/params"]
    if "msat/digest" in f:
        del f["msat/digest"]
    if tuple(int(p) for p in version.split(".")) >= (1, 3):
        items = []
        f.visititems(lambda name, obj: items.append((name, "dataset" if isinstance(obj, h5py.Dataset)
                                                     else "group")))
        f.create_dataset("msat/digest", data=hdf5._digest(f, dict(items)), dtype=h5py.string_dtype())


def _delete(path):
    def mutate(f):
        del f[path]
    return mutate


def _scale(path, factor, dtype=None):
    def mutate(f):
        value = f[path][()]
        del f[path]
        f.create_dataset(path, data=(np.asarray(value) * factor).astype(dtype or np.asarray(value).dtype))
    return mutate


def _reshape(path, shape):
    def mutate(f):
        value = np.asarray(f[path][()])
        del f[path]
        f.create_dataset(path, data=np.resize(value, shape).astype(value.dtype))
    return mutate


def _retype(path, dtype):
    def mutate(f):
        value = np.asarray(f[path][()])
        del f[path]
        f.create_dataset(path, data=value.astype(dtype))
    return mutate


def _move(src, dst):
    def mutate(f):
        f.move(src, dst)
    return mutate


def _put_group(path):
    def mutate(f):
        f.create_group(path)
    return mutate


def _names(path, names):
    def mutate(f):
        del f[path]
        f.create_dataset(path, data=np.array(names, dtype=object), dtype=h5py.string_dtype())
    return mutate


# graph indices: 0 x, 1 c0, 2 r0, 3 c1, 4 r1, 5 c2, 6 ss, 7 cp, 8 a1, 9 r2, 10 c3, 11 a2, 12 r3, 13 mp, 14 gap,
# 15 fl, 16 fc; targets: 0 r0, 1 r1, 2 r2, 3 r3, 4 fc (readout); r2's terms: 0 via c2, 1 via ss/cp
CORPUS = [
    ("no-msat", "zoo", _delete("msat"), "msat"),
    ("msat-not-group", "zoo", _replace("msat", 3), "msat"),
    ("no-version", "zoo", _delete("msat/format_version"), "msat/format_version"),
    ("major-2", "zoo", _replace("msat/format_version", "2.0"), "msat/format_version"),
    ("version-garbage", "zoo", _replace("msat/format_version", "one"), "msat/format_version"),
    ("version-int", "zoo", _replace("msat/format_version", 1), "msat/format_version"),
    ("no-kind", "zoo", _delete("msat/graph/3/kind"), "msat/graph/3/kind"),
    ("unknown-kind", "zoo", _replace("msat/graph/3/kind", "gelu"), "msat/graph/3/kind"),
    ("node-is-dataset", "zoo", _replace("msat/graph/3", 0), "msat/graph/3"),
    ("weight-float32", "zoo", _retype("msat/graph/1/weight", np.float32), "msat/graph/1/weight"),
    ("weight-3d", "zoo", _reshape("msat/graph/1/weight", (4, 3, 9)), "msat/graph/1/weight"),
    ("weight-nan", "zoo", _scale("msat/graph/1/weight", np.nan), "msat/graph/1/weight"),
    ("weight-shape-mismatch", "zoo", _reshape("msat/graph/5/weight", (8, 7, 3, 3)), "msat/graph/5/weight"),
    ("bias-missing", "zoo", _delete("msat/graph/1/bias"), "msat/graph/1/bias"),
    ("stride-zero", "zoo", _replace("msat/graph/1/stride", np.array([0, 1])), "msat/graph/1/stride"),
    ("stride-shape", "zoo", _replace("msat/graph/1/stride", np.array([1, 1, 1])), "msat/graph/1/stride"),
    ("groups-float", "zoo", _replace("msat/graph/3/groups", 2.0), "msat/graph/3/groups"),
    ("input-shape-neg", "zoo", _replace("msat/graph/0/shape", np.array([3, -8, 8])), "msat/graph/0/shape"),
    ("dangling-input", "zoo", _names("msat/graph/2/inputs", ["nowhere"]), "msat/graph/2/inputs"),
    ("cycle", "zoo", _names("msat/graph/1/inputs", ["r0"]), "msat/graph/1/inputs"),
    ("self-loop", "zoo", _names("msat/graph/2/inputs", ["r0"]), "msat/graph/2/inputs"),
    ("inputs-not-strings", "zoo", _replace("msat/graph/2/inputs", np.array([1])), "msat/graph/2/inputs"),
    ("duplicate-name", "zoo", _replace("msat/graph/2/name", "c0"), "msat/graph/2/name"),
    ("graph-gap", "zoo", _move("msat/graph/16", "msat/graph/17"), "msat/graph"),
    ("lam-negative", "zoo", _replace("msat/neurons/0/spec/lam", -1.5), "msat/neurons/0/spec/lam"),
    ("lam-inf", "zoo", _replace("msat/neurons/0/spec/lam", np.inf), "msat/neurons/0/spec/lam"),
    ("mode-unknown", "zoo", _replace("msat/neurons/1/spec/mode", "lif"), "msat/neurons/1/spec/mode"),
    ("sc-p-range", "zoo", _replace("msat/neurons/3/spec/sc_p", 1.5), "msat/neurons/3/spec/sc_p"),
    ("units-unknown", "zoo", _replace("msat/neurons/1/spec/units", "scaled"), "msat/neurons/1/spec/units"),
    ("units-int", "zoo", _replace("msat/neurons/2/spec/units", 1), "msat/neurons/2/spec/units"),
    ("frac-bits-float", "zoo", _replace("msat/neurons/0/spec/frac_bits", 12.0), "msat/neurons/0/spec/frac_bits"),
    ("neuron-not-relu", "zoo", _replace("msat/neurons/0/node", "c0"), "msat/neurons/0/node"),
    ("coefs-missing", "zoo", _delete("msat/neurons/0/spec/coefs/alpha"), "msat/neurons/0/spec/coefs/alpha"),
    ("coefs-null", "zoo", _replace("msat/neurons/0/spec/coefs", h5py.Empty("f8")), "coefs"),
    ("lut-null", "zoo", _replace("msat/neurons/1/lut", h5py.Empty("f8")), "msat/neurons/1/lut"),
    ("lut-int64", "zoo", _retype("msat/neurons/1/lut/sig_lut", np.int64), "msat/neurons/1/lut/sig_lut"),
    ("lut-short", "zoo", _reshape("msat/neurons/1/lut/sig_lut", (10,)), "msat/neurons/1/lut/sig_lut"),
    ("lut-no-member", "zoo", _delete("msat/neurons/1/lut/det_x0"), "msat/neurons/1/lut/det_x0"),
    ("bias-int64", "zoo", _retype("msat/targets/0/bias", np.int64), "msat/targets/0/bias"),
    ("bias-shape", "zoo", _reshape("msat/targets/0/bias", (4, 8, 7)), "msat/targets/0/bias"),
    ("mantissa-int16", "zoo", _retype("msat/targets/1/terms/0/mantissa", np.int16), "terms/0/mantissa"),
    ("mantissa-shape", "zoo", _reshape("msat/targets/1/terms/0/mantissa", (8, 2, 3)), "terms/0/mantissa"),
    ("exponent-range", "zoo", _replace("msat/targets/1/terms/0/exponent", 99), "terms/0/exponent"),
    ("exponent-float", "zoo", _replace("msat/targets/1/terms/0/exponent", -3.0), "terms/0/exponent"),
    ("source-dangling", "zoo", _replace("msat/targets/2/terms/1/source", "zz"), "terms/1/source"),
    ("source-is-conv", "zoo", _replace("msat/targets/2/terms/1/source", "c2"), "terms/1/source"),
    ("source-wrong", "zoo", _replace("msat/targets/2/terms/1/source", "r1"), "source"),
    ("op-is-relu", "zoo", _replace("msat/targets/2/terms/0/op", "r1"), "terms/0/op"),
    ("path-dangling", "zoo", _names("msat/targets/2/terms/1/path", ["ss", "zz"]), "terms/1/path"),
    ("path-reordered", "zoo", _names("msat/targets/2/terms/1/path", ["cp", "ss"]), "path"),
    ("term-missing", "zoo", _delete("msat/targets/2/terms/1"), "terms"),
    ("target-missing", "zoo", _delete("msat/targets/4"), "targets"),
    ("target-kind", "zoo", _replace("msat/targets/4/kind", "relu"), "targets"),
    ("target-lam-zero", "zoo", _replace("msat/targets/0/lam", 0.0), "msat/targets/0/lam"),
    ("input-scale-zero", "zoo", _replace("msat/input/scale", 0.0), "msat/input/scale"),
    ("input-scale-missing", "zoo", _delete("msat/input/scale"), "msat/input/scale"),
    ("hp-json", "zoo", _replace("msat/provenance/hyperparameters", "{not json"), "msat/provenance/hyperparameters"),
    ("hp-list", "zoo", _replace("msat/provenance/hyperparameters", "[1, 2]"), "msat/provenance/hyperparameters"),
    ("method-unknown", "zoo", _replace("msat/provenance/method", "lif"), "msat/provenance/method"),
    ("seed-string", "zoo", _replace("msat/provenance/seed", "7"), "msat/provenance/seed"),
    ("report-missing", "zoo", _delete("msat/report/layers/2"), "report"),
    ("report-negative", "zoo", _replace("msat/report/layers/0/bias_saturated", -1), "bias_saturated"),
    ("netx-flag", "zoo", _replace("msat/netx/loadable", 1), "msat/netx/loadable"),
    ("netx-extra-layer", "zoo", _put_group("layer/1"), "layer"),
    ("netx-no-layer", "chain", _delete("layer"), "layer"),
    ("netx-weight", "chain", _scale("layer/1/weight", 2.0), "layer/1/weight"),
    ("netx-vth", "chain", _replace("layer/3/neuron/vThMant", 7), "layer/3/neuron/vThMant"),
    ("netx-type", "chain", _replace("layer/2/type", np.array([b"dense"], dtype="S10")), "layer/2/type"),
    ("netx-graded-dtype", "chain", _replace("layer/3/neuron/gradedSpike", np.int64(1)), "gradedSpike"),
    ("netx-message-bits", "chain", lambda f: f.create_dataset("layer/3/neuron/messageBits", data=8), "messageBits"),
    ("chain-mantissa", "chain", _scale("msat/targets/1/terms/0/mantissa", 0), "msat/targets/1/terms/0/mantissa"),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case, base, mutate, field", CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_file_is_rejected_naming_the_field(tmp_path, good_files, case, base, mutate, field):
    path = tmp_path / f"{case}.net"
    shutil.copyfile(good_files[base], path)
    with h5py.File(path, "r+") as f:
        mutate(f)
    with pytest.raises(FormatError) as info:
        hdf5.read(path)
    err = info.value
    assert err.path == str(path)
    assert err.field is not None and field in err.field, (err.field, str(err))
    assert field.split("/")[-1] in str(err)


def test_corpus_errors_name_the_layer(tmp_path, good_files):
    path = tmp_path / "m.net"
    shutil.copyfile(good_files["zoo"], path)
    with h5py.File(path, "r+") as f:
        _retype("msat/targets/1/terms/0/mantissa", np.int16)(f)
    with pytest.raises(FormatError) as info:
        hdf5.read(path)
    assert info.value.layer == "r1"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", ["text", "truncated", "truncated-tail", "empty", "missing", "directory",
                                  "garbage-header"])
def test_not_a_network_file(tmp_path, good_files, kind):
    path = tmp_path / "bad.net"
    data = good_files["zoo"].read_bytes()
    if kind == "text":
        path.write_text("this is not HDF5\n" * 100)
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated-tail":
        path.write_bytes(data[:-64])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind == "garbage-header":
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(FormatError) as info:
        hdf5.read(path)
    assert info.value.path == str(path)


def test_plain_hdf5_without_our_groups(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(3))
    with pytest.raises(FormatError) as info:
        hdf5.read(path)
    assert info.value.field == "msat"


def test_newer_minor_version_is_refused(tmp_path, good_files):
    """A newer minor version may add fields that change the dynamics (1.2 added spec/v_init); a reader that
    would ignore them must refuse the file rather than simulate a different network."""
    path = tmp_path / "minor.net"
    shutil.copyfile(good_files["zoo"], path)
    with h5py.File(path, "r+") as f:
        _replace("msat/format_version", "1.7")(f)
        f.create_dataset("msat/some_future_field", data=1)
    with pytest.raises(FormatError) as info:
        hdf5.read(path)
    assert info.value.field == "msat/format_version" and "1.7" in str(info.value)


def test_older_minor_version_is_read(tmp_path, good_files):
    path = tmp_path / "older.net"
    shutil.copyfile(good_files["zoo"], path)
    with h5py.File(path, "r+") as f:
        downgrade(f, "1.0")
    assert hdf5.read(path) == hdf5.read(good_files["zoo"])


# ---------------------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------------------

def test_refuses_to_overwrite(tmp_path):
    path = hdf5.write(zoo_net(), tmp_path / "n.net")
    before = path.read_bytes()
    with pytest.raises(FileExistsRefusedError):
        hdf5.write(chain_net(), path)
    with pytest.raises(FileExistsRefusedError):
        chain_net().save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["n.net"]


def test_overwrite_replaces(tmp_path):
    path = hdf5.write(zoo_net(), tmp_path / "n.net")
    chain = chain_net()
    chain.save(path, overwrite=True)
    assert_identical(hdf5.read(path), chain)
    assert sorted(os.listdir(tmp_path)) == ["n.net"]


def test_refuses_a_directory(tmp_path):
    (tmp_path / "d.net").mkdir()
    with pytest.raises(FileExistsRefusedError):
        hdf5.write(chain_net(), tmp_path / "d.net", overwrite=True)


@pytest.mark.parametrize("existing", [False, True])
def test_error_while_writing_leaves_nothing(tmp_path, monkeypatch, existing):
    path = tmp_path / "n.net"
    if existing:
        hdf5.write(chain_net(), path)
    before = path.read_bytes() if existing else None
    real = hdf5._write_file

    def broken(f, net):
        real(f, net)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(hdf5, "_write_file", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        hdf5.write(zoo_net(), path, overwrite=True)
    if existing:
        assert path.read_bytes() == before
    else:
        assert not path.exists()
    assert sorted(os.listdir(tmp_path)) == (["n.net"] if existing else [])


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(OSError):
        hdf5.write(chain_net(), tmp_path / "no" / "such" / "n.net")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------
# msat-lava convert / info (msat_lava.cli_convert)
# ---------------------------------------------------------------------------------------------------------

MODEL_SOURCE = '''
import torch.nn as nn

def make():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5))

def bad():
    return nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2), nn.Sigmoid(), nn.Linear(2, 2))
'''


@pytest.fixture()
def cli_files(tmp_path):
    import torch

    (tmp_path / "tiny_model.py").write_text(MODEL_SOURCE)
    torch.manual_seed(0)
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_model_ref", tmp_path / "tiny_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.make()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 2.0)
    state = {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "best_prec1": 1.0}
    torch.save(state, tmp_path / "w.th")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x_train=rng.integers(0, 256, size=(40, 6, 6, 3), dtype=np.uint8),
             y_train=rng.integers(0, 5, size=40), x_test=rng.integers(0, 256, size=(8, 6, 6, 3), dtype=np.uint8))
    return tmp_path, model


def _convert_args(root, out, *extra):
    return ["convert", "--model", f"{root}/tiny_model.py:make", "--weights", str(root / "w.th"),
            "--data", str(root / "data.npz"), "--norm-mean", "0.5,0.5,0.5", "--norm-std", "0.25,0.25,0.25",
            "--calib-samples", "32", "--method", "const", "--out", str(out), *extra]


def test_cli_convert_and_info(cli_files, capsys):
    import json

    from msat_lava import cli_convert
    from netx_export.quantize import state_hash

    root, model = cli_files
    out = root / "tiny.net"
    assert cli_convert.main(_convert_args(root, out, "--json")) == 0
    info = json.loads(capsys.readouterr().out)
    assert [row["kind"] for row in info["layers"]] == ["relu", "readout"]
    assert list(info["timings"]) == ["load_model", "load_data", "trace", "calibrate", "quantize", "write", "summary"]
    assert all(v >= 0 for v in info["timings"].values())
    assert info["file"]["bytes"] == out.stat().st_size
    net = hdf5.read(out)
    assert net.provenance.model_hash == state_hash(model)  # the weights (module. prefix stripped) were used
    assert net.provenance.hyperparameters["calibration_samples"] == 32
    assert net.graph.input.shape == (3, 6, 6)  # NHWC data transposed to NCHW
    assert net.readout.name and net.neurons[info["layers"][0]["name"]].mode == "const"
    assert hdf5.netx_view(net).loadable

    assert cli_convert.main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "readout" in text and "netx view: loadable" in text
    assert cli_convert.main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "const"

    assert cli_convert.main(_convert_args(root, out, "--quiet")) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert cli_convert.main(_convert_args(root, out, "--quiet", "--overwrite")) == 0
    assert {s.units for s in hdf5.read(out).neurons.values()} == {"raw"}
    args = _convert_args(root, out, "--quiet", "--overwrite", "--msat-units", "normalized")
    args[args.index("const")] = "msat"
    assert cli_convert.main(args) == 0
    net = hdf5.read(out)
    assert {(s.mode, s.units) for s in net.neurons.values()} == {("msat", "normalized")}
    assert net.provenance.hyperparameters["msat_units"] == "normalized"
    # half-threshold start from the command line, shown by info; out of range is exit 2 without a file
    assert cli_convert.main(_convert_args(root, out, "--quiet", "--overwrite", "--v-init", "0.5")) == 0
    assert {s.v_init for s in hdf5.read(out).neurons.values()} == {0.5}
    capsys.readouterr()
    assert cli_convert.main(["info", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["layers"]
    assert rows[0]["v_init"] == 0.5 and rows[0]["gamma"] == 1 and rows[-1]["v_init"] is None
    bad = root / "bad.net"
    assert cli_convert.main(_convert_args(root, bad, "--quiet", "--v-init", "1.5")) == 2
    assert "v_init" in capsys.readouterr().err and not bad.exists()


def test_cli_convert_bad_inputs_exit_2(cli_files, capsys):
    from msat_lava import cli_convert

    root, _ = cli_files
    out = root / "x.net"
    bad_model = ["convert", "--model", f"{root}/tiny_model.py:bad", "--data", str(root / "data.npz"),
                 "--out", str(out), "--quiet"]
    np.savez(root / "vec.npz", x=np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32))
    bad_model[bad_model.index(str(root / "data.npz"))] = str(root / "vec.npz")
    assert cli_convert.main(bad_model) == 2
    err = capsys.readouterr().err
    assert "2 unsupported node(s)" in err and "GELU" in err and "Sigmoid" in err  # every node, one message
    cases = [
        _convert_args(root, out)[:5] + ["--data", str(root / "missing.npz"), "--out", str(out)],
        ["convert", "--model", "no_such_module_xyz:make", "--data", str(root / "data.npz"), "--out", str(out)],
        ["convert", "--model", f"{root}/tiny_model.py:nothing", "--data", str(root / "data.npz"), "--out", str(out)],
        _convert_args(root, out, "--sc-p", "nonsense"),
        _convert_args(root, out, "--norm-std", "1,2"),
    ]
    for args in cases:
        assert cli_convert.main(args + ["--quiet"]) == 2, args
        assert capsys.readouterr().err.startswith("msat-lava convert: error:")
    assert not out.exists()
    (root / "garbage.net").write_bytes(b"nope")
    assert cli_convert.main(["info", str(root / "garbage.net")]) == 2
    assert "not a readable HDF5 file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# the reader trusts nothing (issue 13, class 2): links, virtual/external storage, derived tables, sizes
# ---------------------------------------------------------------------------------------------------------

def _external_link(path):
    def mutate(f):
        other = os.path.join(os.path.dirname(f.filename), "other.h5")
        with h5py.File(other, "w") as g:
            g.create_dataset("v", data=f[path][()])
        del f[path]
        f[path] = h5py.ExternalLink(other, "/v")
    return mutate


def _soft_link(path):
    def mutate(f):
        f.move(path, path + "_real")
        f[path] = h5py.SoftLink("/" + path + "_real")
    return mutate


def _virtual(path, missing=True):
    def mutate(f):
        value = f[path][()]
        other = os.path.join(os.path.dirname(f.filename), "src.h5")
        if not missing:
            with h5py.File(other, "w") as g:
                g.create_dataset("v", data=value)
        del f[path]
        layout = h5py.VirtualLayout(shape=value.shape, dtype=value.dtype)
        layout[...] = h5py.VirtualSource(other, "v", shape=value.shape)
        f.create_virtual_dataset(path, layout, fillvalue=0)
    return mutate


def _external_storage(path):
    def mutate(f):
        value = np.asarray(f[path][()])
        raw = os.path.join(os.path.dirname(f.filename), "raw.bin")
        with open(raw, "wb") as fh:
            fh.write(value.tobytes())
        del f[path]
        f.create_dataset(path, shape=value.shape, dtype=value.dtype, external=[(raw, 0, value.nbytes)])
    return mutate


def _lzf(path):
    def mutate(f):
        value = np.asarray(f[path][()])
        del f[path]
        f.create_dataset(path, data=value, compression="lzf")
    return mutate


def _huge(path, n=1 << 28):
    def mutate(f):
        dtype = f[path].dtype
        del f[path]
        f.create_dataset(path, shape=(n,), dtype=dtype, chunks=(1 << 16,), compression="gzip")
    return mutate


def _negate(path):
    def mutate(f):
        value = np.asarray(f[path][()])
        f[path][...] = -value
    return mutate


def _bump(path, index=0, delta=1):
    def mutate(f):
        value = np.array(f[path][()])
        value.reshape(-1)[index] += delta
        f[path][...] = value
    return mutate


def _hard_alias(path, to):
    def mutate(f):
        f[path] = f[to]
    return mutate


def _hp(key, value):
    def mutate(f):
        hp = json.loads(f["msat/provenance/hyperparameters"][()])
        hp[key] = value
        _replace("msat/provenance/hyperparameters", json.dumps(hp, sort_keys=True))(f)
    return mutate


import json  # noqa: E402

HOSTILE = [
    ("external-link", "zoo", _external_link("msat/input/scale"), "msat/input/scale", "external link"),
    ("soft-link", "zoo", _soft_link("msat/targets/0/bias"), "msat/targets/0/bias", "soft link"),
    ("virtual-missing", "zoo", _virtual("msat/targets/0/bias"), "msat/targets/0/bias", "virtual"),
    ("virtual-present", "zoo", _virtual("msat/targets/0/bias", missing=False), "msat/targets/0/bias", "virtual"),
    ("external-storage", "zoo", _external_storage("msat/graph/1/weight"), "msat/graph/1/weight", "external"),
    ("lzf-filter", "zoo", _lzf("msat/graph/5/weight"), "msat/graph/5/weight", "filter"),
    ("huge-lut", "zoo", _huge("msat/neurons/1/lut/sig_lut"), "msat/neurons/1/lut/sig_lut", "declares"),
    ("huge-weight", "zoo", _huge("msat/graph/1/weight"), "msat/graph/1/weight", "declares"),
    ("lut-negated", "zoo", _negate("msat/neurons/1/lut/sig_lut"), "msat/neurons/1/lut/sig_lut", "derived"),
    ("lut-one-entry", "zoo", _bump("msat/neurons/2/lut/det_lut", 7), "msat/neurons/2/lut/det_lut", "derived"),
    ("lut-scalar", "zoo", _replace("msat/neurons/0/lut/dtt_offset", np.int64(-5)), "lut/dtt_offset", "derived"),
    ("bias-plus-one", "zoo", _bump("msat/targets/2/bias", 5), "msat/targets/2/bias", "derived"),
    ("mantissa-plus-one", "zoo", _bump("msat/targets/1/terms/0/mantissa", 3), "terms/0/mantissa", "differ"),
    ("exponent-shift", "zoo", _replace("msat/targets/3/terms/0/exponent", np.int64(-6)), "terms/0/exponent",
     "derived"),
    ("float-weight-scaled", "zoo", _scale("msat/graph/10/weight", 2.0), "msat/targets/3/terms/0/exponent",
     "derived"),
    ("float-weight-negated", "zoo", _scale("msat/graph/10/weight", -1.0), "msat/targets/3/terms/0/mantissa",
     "differ"),
    ("float-bias-scaled", "zoo", _scale("msat/graph/1/bias", 3.0), "msat/targets/0/bias", "derived"),
    ("input-scale-doubled", "zoo", _scale("msat/input/scale", 2.0), "msat/targets/0/terms/0/exponent", "derived"),
    ("avgpool-kernel", "chain", _replace("msat/graph/1/padding", np.array([0, 0])), "msat", ""),
    ("report-error", "zoo", _scale("msat/report/layers/1/terms/0/rel_rms_error", 2.0), "rel_rms_error", "derived"),
    ("report-count", "zoo", _replace("msat/report/layers/1/terms/0/clipped", np.int64(3)), "clipped", "derived"),
    ("warnings-added", "zoo", _names("msat/report/warnings", ["all is well"]), "msat/report/warnings", "derived"),
    ("spec-gamma", "zoo", _replace("msat/neurons/2/spec/gamma", np.int64(3)), "msat/neurons/2/spec/gamma",
     "recorded"),
    ("spec-sc-p", "zoo", _replace("msat/neurons/3/spec/sc_p", 0.7), "msat/neurons/3/spec/sc_p", "recorded"),
    ("spec-v-init", "zoo", _replace("msat/neurons/0/spec/v_init", 0.5), "msat/neurons/0/spec/v_init", "recorded"),
    ("hp-gamma", "zoo", _hp("gamma", 2), "spec/gamma", "recorded"),
    ("spec-mode", "zoo", _replace("msat/neurons/1/spec/mode", "dtt"), "msat/neurons/1", ""),
    ("seed-negative", "zoo", _replace("msat/provenance/seed", np.int64(-1)), "msat/provenance/seed", "must be"),
    ("seed-huge", "zoo", _replace("msat/provenance/seed", np.int64(1 << 40)), "msat/provenance/seed", "must be"),
    ("unexpected-dataset", "zoo", lambda f: f.create_dataset("msat/extra", data=1), "msat/extra", "unexpected"),
    ("unexpected-root", "chain", lambda f: f.create_group("other"), "other", "unexpected"),
    ("hard-alias", "zoo", _hard_alias("msat/targets/0/bias_copy", "msat/targets/0/bias"), "bias_copy",
     "unexpected"),
    ("group-cycle", "zoo", _hard_alias("msat/graph/0/loop", "msat/graph"), "msat/graph/0/loop", "unexpected"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case, base, mutate, field, words", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_file_is_refused(tmp_path, good_files, case, base, mutate, field, words):
    import resource

    path = tmp_path / f"{case}.net"
    shutil.copyfile(good_files[base], path)
    with h5py.File(path, "r+") as f:
        mutate(f)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FormatError) as info:
        hdf5.read(path)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    err = info.value
    assert err.path == str(path)
    assert err.field is not None and field in err.field, (err.field, str(err))
    assert words in str(err), str(err)
    assert grown_kib < 200 * 1024, f"reading grew the peak memory by {grown_kib} KiB"


def test_every_link_kind_in_the_layer_part_too(tmp_path, good_files):
    path = tmp_path / "c.net"
    shutil.copyfile(good_files["chain"], path)
    with h5py.File(path, "r+") as f:
        _external_link("layer/1/weight")(f)
    with pytest.raises(FormatError) as info:
        hdf5.read(path)
    assert info.value.field == "layer/1/weight"
