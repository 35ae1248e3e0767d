"""Evaluation as a library (msat_lava.evaluate, msat_lava.methods, msat_lava.reports).

* ``import msat_lava as ml; ml.evaluate`` works from a fresh interpreter without importing torch or Lava;
* cross-implementation: :func:`msat_lava.evaluate` on the small network / data of test_eval gives the manifest
  numbers that ``msat-lava eval`` writes for the same inputs — given as paths, and given in memory (a
  ConvertedNetwork, a LoadedData, the calibration images as an array);
* the grammar: ``MethodSpec.parse`` / ``str`` round trip over names covering every core kind and suffix, and the
  accepted set over generated names equals the one an independent model of the grammar (written here from the
  documented rules) accepts;
* :class:`EvalReport` accessors read what the manifest holds; ``save`` writes the files ``eval`` writes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_eval import files  # noqa: F401  (test_eval's module fixture: the same ResMix file and data)
from msat_lava.data import DataError

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6
METHODS = "const,p99.9+h+bs2,msat,msat+sc"
CLI_TAIL = ["--steps", str(STEPS), "--methods", METHODS, "--precision", "both", "--calib-samples", "16",
            "--sc-layers", "all", "--batch-size", "4", "--threads", "1"]
#: run-record fields that are wall times (never compared)
TIMES = ("wall_s", "total_s")


# ---------------------------------------------------------------------------------------------------------
# the package surface
# ---------------------------------------------------------------------------------------------------------
def test_fresh_interpreter_exports_evaluate(tmp_path):
    code = """
import json, sys
import msat_lava as ml
names = {n: getattr(ml, n).__name__ for n in ("evaluate", "EvalConfig", "EvalReport", "MethodSpec")}
heavy = [m for m in ("torch", "lava") if m in sys.modules]
cfg = ml.EvalConfig(steps=8, precision="both")
spec = ml.MethodSpec.parse("Msat-Norm+h+b4+sc")
import msat_lava.evaluate  # binds the submodule to the package attribute: still callable
print(json.dumps({"names": names, "heavy": heavy, "precisions": cfg.precisions, "spec": str(spec),
                  "callable_after_import": callable(ml.evaluate), "all": sorted(ml.__all__)}))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["names"] == {"evaluate": "evaluate", "EvalConfig": "EvalConfig", "EvalReport": "EvalReport",
                            "MethodSpec": "MethodSpec"}
    assert out["heavy"] == []
    assert out["precisions"] == ["fixed", "float"] and out["spec"] == "msat-norm+h+b4+sc"
    assert out["callable_after_import"]
    assert {"evaluate", "EvalConfig", "EvalReport", "MethodSpec"} <= set(out["all"])


# ---------------------------------------------------------------------------------------------------------
# evaluate() = msat-lava eval
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_manifest(files):
    from msat_lava.cli import main

    out = files["root"] / "cli_out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["eval", files["net"], "--data", files["data"], *CLI_TAIL, "--out", str(out), "--json"])
    assert code == 0
    return json.loads(buf.getvalue()), out


@pytest.fixture(scope="module")
def library_report(files):
    import msat_lava as ml

    config = ml.EvalConfig(steps=STEPS, precision="both", calib_samples=16, sc_layers="all", batch_size=4,
                           threads=1)
    return ml.evaluate(files["net"], files["data"], METHODS, config)


def _without_times(obj):
    if isinstance(obj, dict):
        return {k: _without_times(v) for k, v in obj.items() if k not in TIMES}
    if isinstance(obj, list):
        return [_without_times(v) for v in obj]
    return obj


def test_evaluate_paths_equal_the_cli_manifest(cli_manifest, library_report):
    """Every manifest entry but the recorded arguments, the output paths and the wall times is equal."""
    cli, _ = cli_manifest
    lib = json.loads(library_report.to_json())  # the JSON the library would write
    assert list(lib) == [k for k in cli if k != "total_s"]  # the same keys, in the same order
    for key in cli:
        if key in ("arguments", "files", "total_s"):
            continue
        assert _without_times(lib[key]) == _without_times(cli[key]), key
    assert [(r["method"], r["precision"]) for r in lib["runs"]] == [
        (m, p) for m in METHODS.split(",") for p in ("fixed", "float")]
    assert lib["arguments"]["steps"] == STEPS and lib["arguments"]["methods"] == METHODS


def test_evaluate_in_memory_inputs_equal_the_cli_numbers(files, cli_manifest):
    """A ConvertedNetwork, a LoadedData and the calibration images as an array (the subset is drawn from it as
    from the file) give the CLI's networks and runs; only the records of where the inputs came from differ."""
    import msat_lava as ml
    from msat_lava.data import load_npz

    cli, _ = cli_manifest
    net = ml.load(files["net"])
    data = load_npz(files["data"], input_shape=files["shape"])
    report = ml.evaluate(net, data, METHODS.split(","), calibration=files["x_train"], steps=STEPS,
                         precision="both", calib_samples=16, sc_layers="all", batch_size=4, threads=1)
    lib = json.loads(report.to_json())
    for key in ("methods", "runs", "ann", "sc_calibration", "bias_correction", "sin_last_layer", "layers", "traces",
                "config", "report_steps", "seeds"):
        assert _without_times(lib[key]) == _without_times(cli[key]), key
    assert lib["network"]["path"] is None and lib["network"]["model_hash"] == cli["network"]["model_hash"]
    assert lib["data"]["path"] is None and lib["data"]["inputs_sha256"] == cli["data"]["inputs_sha256"]
    cal = lib["calibration"]
    assert cal["source"] == "array" and cal["indices_sha256"] == cli["calibration"]["indices_sha256"]
    assert set(report.networks) == set(METHODS.split(","))


def test_report_accessors_read_the_manifest(library_report):
    rep = library_report
    m = rep.manifest
    assert rep.methods == METHODS.split(",") and rep.precisions == ["fixed", "float"]
    assert rep.steps == STEPS and rep.layers == m["layers"] and rep.report_steps == m["report_steps"]
    assert rep.ann_accuracy == m["ann"]["accuracy"]
    for r in m["runs"]:
        method, precision = r["method"], r["precision"]
        assert rep.run(method, precision) is r
        curve = rep.accuracy(method, precision)
        assert curve.shape == (STEPS,) and list(curve) == r["accuracy_curve"]
        for t in rep.report_steps:
            assert rep.accuracy_at(method, t, precision) == r["accuracy_at"][str(t)]
        for target in ("ann-1%", "ann-0.1%", "ann"):
            assert rep.steps_to(method, target, precision) == r["steps_to"][target]
        assert rep.firing_rates(method, precision) == r["firing_rates"]
        assert rep.energy_ratio(method, precision) == r["energy"]["ratio"]
    # the primary precision is the default; names are normalized like --methods
    assert list(rep.accuracy("MSAT+SC")) == rep.run("msat+sc", "fixed")["accuracy_curve"]
    for method in rep.methods:
        assert rep.lambdas(method) == m["methods"][method]["lambda"]
        assert rep.sc_p(method) == m["methods"][method]["sc_p"]
    assert rep.sc_p("msat+sc") == m["sc_calibration"]["msat+sc"]["p"] and rep.sc_p("msat") == {}
    # +bs2: θ = λ/2 of the plain p99.9 λ set (the same λ rule), Γ = 2
    assert m["methods"]["p99.9+h+bs2"]["gamma"] == 2
    with pytest.raises(KeyError):
        rep.run("dtt")
    with pytest.raises(KeyError):
        rep.steps_to("msat", "ann-5%")
    with pytest.raises(ValueError):
        rep.accuracy_at("msat", STEPS + 1)


def test_report_save_writes_the_cli_files(library_report, cli_manifest, tmp_path):
    import msat_lava as ml
    from msat_lava.reports import FILES

    _, cli_out = cli_manifest
    out = tmp_path / "lib"
    files = library_report.save(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in cli_out.iterdir()) == sorted(
        FILES.values())
    assert {k: p.name for k, p in files.items()} == FILES
    on_disk = json.loads((out / FILES["manifest"]).read_text())
    assert on_disk == json.loads(library_report.to_json())
    loaded = ml.EvalReport.load(out)
    assert loaded.methods == library_report.methods
    assert list(loaded.accuracy("msat")) == list(library_report.accuracy("msat"))
    with pytest.raises(ValueError):
        loaded.save(tmp_path / "again")  # no traces: it cannot be saved again
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="keep.txt"):
        library_report.save(tmp_path / "foreign")
    assert (tmp_path / "foreign" / "keep.txt").read_text() == "mine"


def test_config_checks_and_overrides():
    import msat_lava as ml

    cfg = ml.EvalConfig(steps=4, report_steps=[4, 2, 2], norm_mean=[0.5], sc_layers=["a", "b"])
    assert cfg.report_steps == (2, 4) and cfg.norm_mean == (0.5,) and cfg.sc_layers == ("a", "b")
    assert dataclasses.replace(cfg, precision="float").precisions == ["float"]
    assert cfg.to_dict()["report_steps"] == [2, 4]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 5
    for bad in (dict(steps=0), dict(steps=4, precision="half"), dict(steps=4, calib_seed=-1),
                dict(steps=4, batch_size=0), dict(steps=4, lambda_from="x"), dict(steps=4, report_steps=[0])):
        with pytest.raises(DataError):
            ml.EvalConfig(**bad)
    with pytest.raises(TypeError):
        ml.evaluate("n.net", "d.npz")  # neither config nor steps


# ---------------------------------------------------------------------------------------------------------
# the grammar
# ---------------------------------------------------------------------------------------------------------
#: names covering every core kind and every suffix (each accepted by ``--methods``)
ROUND_TRIP = [
    "const", "p99.9", "p100", "p50", "dtt", "det", "msat", "dtt-norm", "det-norm", "msat-norm",
    "const+cw", "const+h", "const+b2", "const+bs4", "p99.9+h+bs1", "const+wc", "const+wc4", "const+bc",
    "const+bc32", "const+bc3", "msat+p99", "det+p90+cw", "dtt-norm+p99.9+cw+h+b4+wc8+bc16",
    "msat+sc", "msat-norm+p99.9+cw+h+b4+wc+bc+sc", "msat+h+b65536", "p99.99+cw+h+bs8+wc4096+bc4096",
    "dtif-r", "dtif-r:beta=3+b2", "dtif-r:variant=b:g_min=0.5+p99.9+h", "dtif-r+cw+h+b2+wc+bc",
    "bsnn-r", "bsnn-r:k=6", "bsnn-r:k=2+b2", "bsnn-r:k=6+p99.9",
]


def test_method_spec_round_trip():
    from msat_lava import cli_eval
    from msat_lava.methods import MethodSpec, method_settings, parse_methods

    suffix_kinds = set()
    for name in ROUND_TRIP:
        spec = MethodSpec.parse(name)
        assert str(spec) == name and MethodSpec.parse(str(spec)) == spec and hash(MethodSpec.of(name)) == hash(spec)
        assert MethodSpec.parse(f"  {name.upper()} ") == spec
        assert eval(repr(spec), {"MethodSpec": MethodSpec}) == spec
        assert cli_eval.method_settings(name) == method_settings(spec) == spec.settings()
        suffix_kinds.update(re.sub(r"\d.*", "", t) for t in spec.suffixes)
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.core = "const"
    assert suffix_kinds == {"p", "cw", "h", "b", "bs", "wc", "bc", "sc"}  # the list covers every suffix
    assert parse_methods(",".join(ROUND_TRIP + ROUND_TRIP[:3])) == [MethodSpec.parse(n) for n in ROUND_TRIP]
    assert cli_eval.parse_methods(",".join(ROUND_TRIP)) == ROUND_TRIP
    s = MethodSpec.parse("p99.9+h+bs4")
    assert (s.mode, s.percentile, s.v_init, s.gamma(7), s.threshold_divisor, s.without_sc()) == (
        "const", 99.9, 0.5, 4, 4, s)
    assert s.divided_lambdas({"a": 2.0, "x": 8.0}, keep=("x",)) == {"a": 0.5, "x": 8.0}
    assert MethodSpec.parse("msat-norm+b2+sc").without_sc() == MethodSpec.parse("msat-norm+b2")
    assert MethodSpec.parse("dtif-r:beta=3").model_params == {"beta": "3"}
    with pytest.raises(ValueError):
        MethodSpec.of("MSAT")  # of(): an exact name, no normalization


#: an independent model of the documented grammar (methods module docstring), for generated names
_ORDER = ["p", "cw", "h", "b", "wc", "bc", "sc"]


def _model_accepts(name: str) -> bool:
    core, *tokens = name.split("+")
    pct_core = re.fullmatch(r"p(\d+(?:\.\d+)?)", core)
    registry = re.fullmatch(r"(dtif-r|bsnn-r)((?::[a-z_]+=[^:+,]+)*)", core)
    if not (core in ("const", "dtt", "det", "msat", "dtt-norm", "det-norm", "msat-norm") or pct_core or registry):
        return False
    if pct_core and not 0 < float(pct_core.group(1)) <= 100:
        return False
    if registry and registry.group(2):
        known = {"dtif-r": {"beta": lambda v: float(v) == 0 or 1e-3 <= float(v) <= 64,
                            "variant": lambda v: v in ("a", "b", "c")},
                 "bsnn-r": {"k": lambda v: 1 <= int(v) <= 16}}
        keys = []
        for pair in registry.group(2)[1:].split(":"):
            key, value = pair.split("=")
            keys.append(key)
            ok = known[registry.group(1)].get(key)
            if ok is None or not ok(value):
                return False
        if len(set(keys)) != len(keys):
            return False
    const_like = core == "const" or bool(pct_core)
    last = -1
    for tok in tokens:
        m = re.fullmatch(r"(p|cw|h|bs|b|wc|bc|sc)(\d+(?:\.\d+)?)?", tok)
        if m is None:
            return False
        kind, num = m.group(1), m.group(2)
        if kind == "bs":
            kind = "b"
            if not const_like:
                return False
        if _ORDER.index(kind) <= last:
            return False
        last = _ORDER.index(kind)
        if kind in ("cw", "h", "sc") and num is not None:
            return False
        if kind == "p" and (num is None or const_like or not 0 < float(num) <= 100):
            return False
        if kind == "b" and (num is None or "." in num or not 1 <= int(num) <= 65536):
            return False
        if kind in ("wc", "bc") and num is not None and ("." in num or not 1 <= int(num) <= 4096):
            return False
        if kind == "sc" and not core.startswith("msat"):
            return False
    return True


def _generated_names() -> list[str]:
    cores = ["const", "p99.9", "p0", "p101", "p100", "dtt", "det", "msat", "msat-norm", "dtt-norm", "const-norm",
             "lif", "dtif-r", "dtif-r:beta=3", "dtif-r:beta=100", "dtif-r:variant=b", "dtif-r:variant=d",
             "dtif-r:beta=1:beta=2", "dtif-r:nope=1", "bsnn-r:k=6", "bsnn-r:k=99", "h", "cw", "sc"]
    tokens = ["p99", "p0", "p", "cw", "h", "b", "b0", "b2", "bs", "bs0", "bs4", "wc", "wc0", "wc8", "bc", "bc0",
              "bc16", "bc4097", "sc", "x"]
    names = []
    for core in cores:
        for k in range(3):
            for combo in itertools.permutations(tokens, k):
                names.append("+".join((core, *combo)))
    return names


def test_accepted_names_equal_the_documented_grammar():
    from msat_lava import cli_eval
    from msat_lava.methods import MethodSpec

    accepted, refused = set(), set()
    for name in _generated_names():
        try:
            spec = MethodSpec.parse(name)
        except DataError:
            refused.add(name)
            continue
        assert str(spec) == name
        accepted.add(name)
    expected = {n for n in accepted | refused if _model_accepts(n)}
    assert accepted == expected, (sorted(accepted - expected)[:10], sorted(expected - accepted)[:10])
    assert len(accepted) > 300 and len(refused) > len(accepted)  # the generated set exercises both sides
    # cli_eval's names are the same parser
    sample = sorted(accepted)[::7]
    assert cli_eval.parse_methods(",".join(sample)) == sample
    for bad in sorted(refused)[::97]:
        with pytest.raises(DataError):
            cli_eval.parse_methods(bad)
    with pytest.raises(DataError, match="no method given"):
        cli_eval.parse_methods(" , ")
    with pytest.raises(DataError, match="unknown method"):
        MethodSpec.parse("msat+p")  # a bare +p: refused (it used to crash with AttributeError)


@pytest.mark.parametrize("content", [None, b"not a zip archive"], ids=["missing", "not-npz"])
def test_unreadable_calibration_file_is_named(files, tmp_path, content):
    """An explicit calibration file that cannot be read is a DataError naming that file and why (not 'no
    calibration images'), raised by the library itself, before any simulation."""
    import msat_lava as ml

    bad = tmp_path / "calib.npz"
    if content is not None:
        bad.write_bytes(content)
    with pytest.raises(DataError) as err:
        ml.evaluate(files["net"], files["data"], "const", calibration=str(bad), steps=4, batch_size=4, threads=1)
    msg = str(err.value)
    assert str(bad) in msg and "no calibration images" not in msg
