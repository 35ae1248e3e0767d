"""netx_export.network: the network type's one schema, shared by the dict form and the file (issue 16).

* The two forms accept exactly the same format versions and refuse the same, with the same message
  (:func:`netx_export.network.check_format_version` is the one rule): every readable version, one too old, newer
  ones, malformed and non-string versions.
* The same "added in" rule for neuron fields (units 1.1, v_init 1.2, params 1.4), the same model ``since`` and
  the same seed range in both forms.
* Round trips: dict → network → dict and file → network → file, and the two forms of one network agree.
* The modules are layered without an import cycle (network ← quantize ← hdf5), each importable alone.
* The names moved out of ``netx_export.quantize`` are still importable from it (the same objects).
"""
from __future__ import annotations

import ast
import contextlib
import copy
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from netx_export import hdf5, network
from netx_export.errors import FormatError, QuantizationError, located
from netx_export.network import (FORMAT_VERSION, SPEC_FIELDS_SINCE, ConvertedNetwork, _deep_equal,
                                 check_format_version, readable_format_versions)
from netx_export.quantize import quantize

REPO = Path(__file__).resolve().parents[1]

SUPPORTED = ["1.0", "1.1", "1.2", "1.3", "1.4"]
TOO_OLD = ["0.9", "0.0"]
TOO_NEW = ["1.5", "2.0"]
MALFORMED = ["one", "1", "1.x", "1.4.0", "1.04", " 1.4", "1.4 ", "v1.4", "-1.4", "", "１.４"]
NOT_A_STRING = [1.4, 1, None]


def _graph():
    from test_hdf5 import chain_graph

    return chain_graph()


@pytest.fixture(scope="module")
def net() -> ConvertedNetwork:
    return quantize(_graph(), {"r0": 1.25, "r1": 0.75}, input_scale=2.0, method="msat", sc_p={"r1": 0.8}, seed=9,
                    model_hash="ab" * 32, data_hash="cd" * 32, hyperparameters={"lambda_method": "max"})


@pytest.fixture(scope="module")
def dtif_net() -> ConvertedNetwork:
    return quantize(_graph(), {"r0": 1.25, "r1": 0.75}, input_scale=2.0, method="dtif-r", params={"beta": 2.0})


@pytest.fixture(scope="module")
def net_file(net, tmp_path_factory):
    return hdf5.write(net, tmp_path_factory.mktemp("schema") / "net.net")


# ---------------------------------------------------------------------------------------------------------
# helpers: one network in both forms, set to a version / with fields left out
# ---------------------------------------------------------------------------------------------------------

def _dict_of(net: ConvertedNetwork, version, drop: tuple[str, ...] = ()) -> dict:
    d = copy.deepcopy(net.to_dict())
    d["format_version"] = version
    for spec in d["neurons"].values():
        for key in drop:
            spec.pop(key, None)
    return d


def _rewrite(f, version, drop: tuple[str, ...] = ()) -> None:
    """Make an open file look as written by ``version``: its version string (any value, any HDF5 type), the
    spec fields in ``drop`` deleted, and the digest as that version has it (absent before 1.3, recomputed from)."""
    del f["msat/format_version"]
    if isinstance(version, str):
        f.create_dataset("msat/format_version", data=version, dtype=h5py.string_dtype())
    elif version is None:
        f.create_dataset("msat/format_version", data=h5py.Empty("f8"))
    else:
        f.create_dataset("msat/format_version", data=version)
    for g in f["msat/neurons"].values():
        for key in drop:
            if key in g["spec"]:
                del g[f"spec/{key}"]
    if "msat/digest" in f:
        del f["msat/digest"]
    try:
        digest = check_format_version(version) >= network.DIGEST_SINCE
    except QuantizationError:
        digest = True  # refused before the digest is looked at; keep the file otherwise complete
    if digest:
        items: list[tuple[str, str]] = []
        f.visititems(lambda name, obj: items.append((name, "dataset" if isinstance(obj, h5py.Dataset) else "group")))
        f.create_dataset("msat/digest", data=hdf5._digest(f, dict(items)), dtype=h5py.string_dtype())


def _file_of(net: ConvertedNetwork, path: Path, version, drop: tuple[str, ...] = ()) -> Path:
    hdf5.write(net, path, overwrite=True)
    with h5py.File(path, "r+") as f:
        _rewrite(f, version, drop)
    return path


def _message(exc: Exception) -> str:
    """The message of a QuantizationError / FormatError without its 'file ..., layer ..., field ...: ' prefix."""
    prefix = located("", file=getattr(exc, "path", None), layer=exc.layer, field=exc.field)
    text = str(exc)
    return text[len(prefix):] if text.startswith(prefix) else text


def _outcome_dict(d: dict):
    try:
        return ConvertedNetwork.from_dict(d), None
    except QuantizationError as exc:
        return None, exc


def _outcome_file(path: Path):
    try:
        return hdf5.read(path), None
    except FormatError as exc:
        return None, exc


# ---------------------------------------------------------------------------------------------------------
# the format version: one rule
# ---------------------------------------------------------------------------------------------------------

def test_the_rule_lists_what_it_reads_and_writes():
    assert readable_format_versions() == tuple(SUPPORTED)
    assert FORMAT_VERSION == SUPPORTED[-1] and network.OLDEST_FORMAT_VERSION == SUPPORTED[0]
    assert hdf5.FORMAT_VERSION is FORMAT_VERSION
    for v in SUPPORTED:
        assert check_format_version(v) == tuple(int(p) for p in v.split("."))
    doc = check_format_version.__doc__
    for words in ("Written", "Read", "Older minors", "Refused", "1.0", "1.4"):
        assert words in doc


@pytest.mark.parametrize("version", SUPPORTED + TOO_OLD + TOO_NEW + MALFORMED + NOT_A_STRING,
                         ids=lambda v: repr(v))
def test_dict_and_file_accept_and_refuse_the_same_versions(net, tmp_path, version):
    got_dict, dict_err = _outcome_dict(_dict_of(net, version))
    got_file, file_err = _outcome_file(_file_of(net, tmp_path / "v.net", version))
    accepted = version in SUPPORTED
    assert (dict_err is None) is accepted, dict_err
    assert (file_err is None) is accepted, file_err
    if accepted:
        assert got_dict == net and got_file == net
        assert got_dict.to_dict()["format_version"] == got_file.to_dict()["format_version"] == FORMAT_VERSION
        return
    assert dict_err.field == "format_version"
    assert file_err.field == "msat/format_version" and file_err.path == str(tmp_path / "v.net")
    if isinstance(version, str):  # the same rule, the same words
        assert _message(dict_err) == _message(file_err)
        assert repr(version) in _message(dict_err)
        if version in TOO_OLD + TOO_NEW:
            assert "unsupported format version" in _message(dict_err) and FORMAT_VERSION in _message(dict_err)
        else:
            assert "major.minor" in _message(dict_err)
    if version in TOO_NEW[:1]:
        assert "newer minor" in _message(dict_err)


@pytest.mark.parametrize("version", SUPPORTED)
def test_written_version_is_always_the_current_one(net, tmp_path, version):
    """An older network, once read, is the current schema: to_dict and write give FORMAT_VERSION."""
    old = hdf5.read(_file_of(net, tmp_path / "old.net", version))
    assert old.to_dict()["format_version"] == FORMAT_VERSION
    again = hdf5.write(old, tmp_path / "again.net")
    with h5py.File(again, "r") as f:
        assert f["msat/format_version"][()].decode() == FORMAT_VERSION
    assert ConvertedNetwork.from_dict(_dict_of(old, version)) == old == net


# ---------------------------------------------------------------------------------------------------------
# the same schema behind the version: fields added per minor, models' since, the seed
# ---------------------------------------------------------------------------------------------------------

def _cases():
    for key, (major, minor) in SPEC_FIELDS_SINCE.items():
        yield key, f"{major}.{minor - 1}", True       # absent before the version that added it: the default
        yield key, f"{major}.{minor}", False          # absent in a version that has it: refused
        yield key, FORMAT_VERSION, False


@pytest.mark.parametrize("key, version, accepted", list(_cases()),
                         ids=[f"{k}-{v}" for k, v, _ in _cases()])
def test_added_fields_follow_one_rule_in_both_forms(net, tmp_path, key, version, accepted):
    got_dict, dict_err = _outcome_dict(_dict_of(net, version, drop=(key,)))
    got_file, file_err = _outcome_file(_file_of(net, tmp_path / "f.net", version, drop=(key,)))
    assert (dict_err is None) is accepted, dict_err
    assert (file_err is None) is accepted, file_err
    if accepted:
        assert got_dict == got_file == net  # the defaults are the values written (raw, 0, None)
        return
    assert dict_err.layer == file_err.layer == "r0"
    assert dict_err.field == f"neuron.{key}" and file_err.field == f"msat/neurons/0/spec/{key}"
    assert "missing" in _message(dict_err) and _message(dict_err) == _message(file_err)


@pytest.mark.parametrize("version, accepted", [("1.3", False), ("1.4", True)])
def test_a_model_needs_its_since_in_both_forms(dtif_net, tmp_path, version, accepted):
    got_dict, dict_err = _outcome_dict(_dict_of(dtif_net, version))
    got_file, file_err = _outcome_file(_file_of(dtif_net, tmp_path / "d.net", version))
    assert (dict_err is None) is accepted and (file_err is None) is accepted, (dict_err, file_err)
    if accepted:
        assert got_dict == got_file == dtif_net
        return
    assert dict_err.field == "neuron.mode" and file_err.field == "msat/neurons/0/spec/mode"
    assert "needs format >= 1.4" in _message(dict_err) and "needs format >= 1.4" in _message(file_err)


def test_model_parameters_are_never_defaulted_in_either_form(dtif_net, tmp_path):
    d = _dict_of(dtif_net, FORMAT_VERSION)
    d["neurons"]["r0"]["params"] = None
    _, dict_err = _outcome_dict(d)
    path = hdf5.write(dtif_net, tmp_path / "p.net")
    with h5py.File(path, "r+") as f:
        del f["msat/neurons/0/spec/params"]
        f.create_dataset("msat/neurons/0/spec/params", data=h5py.Empty("f8"))
    _, file_err = _outcome_file(path)
    assert dict_err.field == "neuron.params" and file_err.field == "msat/neurons/0/spec/params"
    assert "needs its model parameters" in _message(dict_err) and "needs its model parameters" in _message(file_err)


@pytest.mark.parametrize("seed, accepted", [(0, True), (network.SEED_MAX, True), (-1, False),
                                            (network.SEED_MAX + 1, False)])
def test_the_seed_range_is_one_rule(net, tmp_path, seed, accepted):
    d = _dict_of(net, FORMAT_VERSION)
    d["provenance"]["seed"] = seed
    got_dict, dict_err = _outcome_dict(d)
    path = hdf5.write(net, tmp_path / "s.net")
    with h5py.File(path, "r+") as f:
        del f["msat/provenance/seed"]
        f.create_dataset("msat/provenance/seed", data=np.int64(seed))
        _rewrite(f, FORMAT_VERSION)
    got_file, file_err = _outcome_file(path)
    assert (dict_err is None) is accepted and (file_err is None) is accepted, (dict_err, file_err)
    if accepted:
        assert got_dict.provenance.seed == got_file.provenance.seed == seed
    else:
        assert dict_err.field == "provenance.seed" and file_err.field == "msat/provenance/seed"
        assert _message(dict_err) == _message(file_err)
    with pytest.raises(QuantizationError) if not accepted else contextlib.nullcontext():
        quantize(_graph(), {"r0": 1.25, "r1": 0.75}, input_scale=2.0, method="const", seed=seed)


# ---------------------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["msat", "dtif-r"])
def test_dict_round_trip(net, dtif_net, which):
    n = net if which == "msat" else dtif_net
    d = n.to_dict()
    again = ConvertedNetwork.from_dict(d)
    assert again == n
    assert _deep_equal(again.to_dict(), d)
    assert ConvertedNetwork.from_dict(again.to_dict()) == n


@pytest.mark.parametrize("which", ["msat", "dtif-r"])
def test_file_round_trip(net, dtif_net, tmp_path, which):
    n = net if which == "msat" else dtif_net
    first = hdf5.write(n, tmp_path / "a.net")
    back = hdf5.read(first)
    assert back == n
    second = hdf5.write(back, tmp_path / "b.net")
    assert first.read_bytes() == second.read_bytes()  # file → network → file is the same file
    assert hdf5.content_hash(first) == hdf5.content_hash(second)
    # the two forms of one network agree: the file's network has the dict form of the original
    assert _deep_equal(back.to_dict(), n.to_dict())
    assert ConvertedNetwork.from_dict(back.to_dict()) == hdf5.read(second)


# ---------------------------------------------------------------------------------------------------------
# layering: no import cycle, each module alone; the old import paths
# ---------------------------------------------------------------------------------------------------------

def _netx_imports(path: Path, *, module_level_only: bool) -> set[str]:
    """netx_export modules imported by ``path`` (``from netx_export import x`` counts as netx_export.x)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("netx_export."))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "netx_export":
                out.update(f"netx_export.{a.name}" for a in node.names)
            elif node.module.startswith("netx_export."):
                out.add(node.module)
    return out


def _package_modules() -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / "netx_export").rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def test_no_import_cycle_between_the_file_the_quantizer_and_the_network():
    mods = _package_modules()
    anywhere = {m: _netx_imports(p, module_level_only=False) for m, p in mods.items()}
    top = {m: _netx_imports(p, module_level_only=True) for m, p in mods.items()}
    # one way: network ← quantize ← hdf5
    assert "netx_export.hdf5" not in anywhere["netx_export.quantize"]
    assert not {"netx_export.quantize", "netx_export.hdf5"} & top["netx_export.network"]
    assert "netx_export.quantize" not in anywhere["netx_export.network"]
    assert {"netx_export.network", "netx_export.quantize"} <= top["netx_export.hdf5"]
    assert "netx_export.network" in top["netx_export.quantize"]

    # no cycle at import time in the whole package (module-level imports)
    state: dict[str, int] = {}

    def visit(m: str, trail: tuple[str, ...]) -> None:
        if state.get(m) == 2:
            return
        assert state.get(m) != 1, f"import cycle: {' -> '.join(trail + (m,))}"
        state[m] = 1
        for dep in sorted(top.get(m, ())):
            if dep in mods and dep != m:
                visit(dep, trail + (m,))
        state[m] = 2

    for m in mods:
        visit(m, ())


@pytest.mark.parametrize("module, absent", [
    ("netx_export.network", ("netx_export.quantize", "netx_export.hdf5", "torch", "lava")),
    ("netx_export.quantize", ("netx_export.hdf5", "torch", "lava")),
    ("netx_export.hdf5", ("torch", "lava")),
])
def test_each_module_imports_alone_in_a_fresh_interpreter(module, absent):
    code = (f"import sys, {module}\n"
            f"bad = [m for m in {list(absent)!r} if m in sys.modules]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_moved_names_are_still_importable_from_quantize():
    from netx_export import quantize as q

    moved = ["FORMAT_VERSION", "METHODS", "methods", "INPUT_FRAC_BITS", "READOUT_FRAC_BITS", "EXPONENT_MIN",
             "EXPONENT_MAX", "MANTISSA_MIN", "MANTISSA_MAX", "SOURCE_KINDS", "Term", "Target", "TermReport",
             "LayerReport", "QuantReport", "Provenance", "ConvertedNetwork", "expand_terms", "target_root",
             "term_scale", "_deep_equal"]
    for name in moved:
        assert getattr(q, name) is getattr(network, name), name
    for name in ("quantize", "quantize_weight", "zero_source_values", "apply_linear", "bias_gain", "input_gain",
                 "state_hash", "tool_version", "QuantizationWarning"):
        assert callable(getattr(q, name)) and name in q.__all__
    import netx_export

    assert netx_export.ConvertedNetwork is network.ConvertedNetwork
    assert hdf5.SEED_MAX == network.SEED_MAX and hdf5.DIGEST_SINCE == network.DIGEST_SINCE
