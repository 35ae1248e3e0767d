"""``msat-lava eval`` end to end on a tiny converted network and a tiny .npz: JSON keys, PNG files, exit codes,
methods re-derived from the file's float graph, neuron-trace replay."""
from __future__ import annotations

import json

import numpy as np
import pytest

import _nets
from msat_lava.cli import main
from msat_lava.cli_eval import FILES, method_settings, neuron_traces, parse_methods

STEPS = 12
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """ResMix (msat) file; data with x_train/y_train (40) and x_test/y_test (8, labels = ANN with 2 flipped);
    a second file with x/y only (no training split) and a third without labels."""
    from netx_export import ann

    root = tmp_path_factory.mktemp("eval")
    conv = _nets.convert("resmix", "msat")
    net = conv.net.save(root / "resmix.net")
    shape = conv.program.input_shape
    rng = np.random.default_rng(11)
    x_train = rng.standard_normal((40,) + shape).astype(np.float32)
    x_test = rng.standard_normal((8,) + shape).astype(np.float32)
    y_test = ann.evaluate(conv.graph, x_test).argmax(1).numpy()
    y_test[:2] = (y_test[:2] + 1) % 5
    data = root / "data.npz"
    np.savez(data, x_train=x_train, y_train=np.zeros(40, np.int64), x_test=x_test, y_test=y_test)
    plain = root / "plain.npz"
    np.savez(plain, x=x_test, y=y_test)
    nolabels = root / "nolabels.npz"
    np.savez(nolabels, x=x_test)
    return {"root": root, "net": str(net), "data": str(data), "plain": str(plain), "nolabels": str(nolabels),
            "conv": conv, "x_train": x_train, "x_test": x_test, "y_test": y_test, "shape": shape}


def _png_ok(path) -> None:
    from matplotlib.image import imread

    raw = path.read_bytes()
    assert raw[:8] == PNG_MAGIC, path
    img = imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


@pytest.fixture(scope="module")
def evaluated(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_out")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["eval", files["net"], "--data", files["data"], "--steps", str(STEPS), "--methods",
                     "const,p99.9,msat,msat+sc,const+h", "--precision", "both", "--calib-samples", "32", "--sc-layers", "all",
                     "--batch-size", "5", "--threads", "1", "--out", str(out), "--json"])
    return code, json.loads(buf.getvalue()), out


def test_eval_exit_0_json_and_files(files, evaluated):
    code, info, out = evaluated
    assert code == 0
    for key in ("tool_version", "network", "data", "calibration", "seeds", "config", "ann", "methods", "runs",
                "sin_last_layer", "sc_calibration", "energy_convention", "traces", "files", "layers"):
        assert key in info, key
    assert len(info["network"]["file_sha256"]) == 64 and len(info["data"]["inputs_sha256"]) == 64
    assert info["network"]["model_hash"] == files["conv"].net.provenance.model_hash
    assert info["calibration"]["samples"] == 32 and info["calibration"]["seed"] == 23
    assert [(r["method"], r["precision"]) for r in info["runs"]] == [
        (m, p) for m in ("const", "p99.9", "msat", "msat+sc", "const+h") for p in ("fixed", "float")]
    for r in info["runs"]:
        assert len(r["accuracy_curve"]) == STEPS
        assert set(r["accuracy_at"]) == {"1", "2", "4", "8", "12"}
        assert set(r["steps_to"]) == {"ann-1%", "ann-0.1%", "ann"}
        assert set(r["firing_rates"]) == set(info["layers"]) and set(r["sin"]["layers"]) == set(info["layers"])
        assert r["sin"]["window"] == 12 and r["sin"]["mode"] == "pooled"
        assert set(r["layer_agreement"]) == {"1", "2", "4", "8", "12"}
        for k, rows in r["layer_agreement"].items():
            assert set(rows) == set(info["layers"])
            for row in rows.values():
                assert row["rel_l1"] >= 0 and -1 <= row["corr"] <= 1
        e = r["energy"]
        assert e["estimate"] is True and e["ratio"] > 0 and e["first_layer"].startswith("charged as MAC")
    for m, summary in info["methods"].items():
        assert set(summary["lambda"]) == set(info["layers"]) and summary["exponents"]
    assert info["methods"]["p99.9"]["lambda_method"]["percentile"] == 99.9
    assert info["methods"]["const+h"]["v_init"] == 0.5 and info["methods"]["const"]["v_init"] == 0.0
    # the half-threshold start: const+h's λ equal const's, its rates are closer to the ANN at the last step
    assert info["methods"]["const+h"]["lambda"] == info["methods"]["const"]["lambda"]
    last = {r["method"]: r["layer_agreement"]["12"] for r in info["runs"] if r["precision"] == "float"}
    err = {m: np.mean([row["rel_l1"] for row in last[m].values()]) for m in ("const", "const+h")}
    assert err["const+h"] < err["const"], err
    # spike confidence: measured p stored in the msat+sc network, every layer (--sc-layers all)
    assert set(info["sc_calibration"]) == {"msat+sc"}
    p = info["sc_calibration"]["msat+sc"]["p"]
    assert set(p) == set(info["layers"]) and all(0 < v <= 1 for v in p.values())
    assert info["methods"]["msat+sc"]["sc_p"] == pytest.approx(p)
    assert info["methods"]["msat"]["sc_p"] == {}
    assert set(info["sin_last_layer"]["fixed"]) == {"without_sc (msat)", "with_sc (msat+sc)"}
    on_disk = json.loads((out / FILES["manifest"]).read_text())
    assert on_disk["runs"] == info["runs"]
    for key in ("accuracy", "firing_rate", "sin", "layer_error", "traces"):
        _png_ok(out / FILES[key])
    page = (out / FILES["html"]).read_text()
    assert page.count("data:image/png;base64,") == 5 and "ESTIMATE" in page
    assert not list(out.glob(".*"))  # no temporary files left


def test_eval_methods_rederived_from_float_graph(files, evaluated):
    """The const run equals quantize(graph, λ = max over the seeded calibration subset) run independently; the
    ANN accuracy is the graph's."""
    from netx_export import ann
    from netx_export.calibrate import calibrate
    from netx_export.quantize import quantize

    from msat_lava.program import from_converted
    from msat_lava.reference import simulate

    _, info, _ = evaluated
    conv = files["conv"]
    idx = np.sort(np.random.default_rng(23).choice(40, 32, replace=False))
    cal = calibrate(conv.graph, files["x_train"][idx], method="max", progress=False)
    assert info["methods"]["const"]["lambda"] == pytest.approx(dict(cal.lambdas))
    assert info["methods"]["const"]["input_scale"] == pytest.approx(cal.input_scale)
    net = quantize(conv.graph, cal, method="const", seed=conv.net.provenance.seed)
    run = simulate(from_converted(net), files["x_test"], STEPS, precision="fixed", progress=False)
    const = next(r for r in info["runs"] if r["method"] == "const" and r["precision"] == "fixed")
    assert const["accuracy_curve"] == pytest.approx(list(run.accuracy(files["y_test"])))
    ann_acc = float(np.mean(ann.evaluate(conv.graph, files["x_test"]).argmax(1).numpy() == files["y_test"]))
    assert info["ann"]["accuracy"] == pytest.approx(ann_acc)


def test_eval_bias_corrected_method(files, tmp_path, capsys):
    """const+bc3: biases corrected on the calibration images (training split), reported in the manifest;
    without a training split the method is refused (it must never calibrate on the test set)."""
    out = tmp_path / "o"
    code = main(["eval", files["net"], "--data", files["data"], "--steps", "4", "--methods", "const,const+bc3",
                 "--calib-samples", "16", "--bc-samples", "8", "--out", str(out), "--no-html", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    info = json.loads((out / FILES["manifest"]).read_text())
    bc = info["bias_correction"]["const+bc3"]
    assert bc["steps"] == 3 and bc["samples"] == 8 and set(bc["node"]) == set(info["layers"])
    assert info["methods"]["const+bc3"]["lambda"] == info["methods"]["const"]["lambda"]
    code = main(["eval", files["net"], "--data", files["plain"], "--steps", "4", "--methods", "const+bc3",
                 "--out", str(tmp_path / "p"), "--no-html"])
    assert code == 2 and "const+bc3" in capsys.readouterr().err


def test_eval_channelwise_method(files, tmp_path, capsys):
    """const+cw converts the channel-balanced graph (λ = layer max of the balanced graph on the calibration
    images); its run equals quantize(balance_channels(graph), λ) simulated independently."""
    from netx_export.balance import balanceable, calibrate_balanced
    from netx_export.quantize import quantize

    from msat_lava.program import from_converted
    from msat_lava.reference import simulate

    out = tmp_path / "o"
    code = main(["eval", files["net"], "--data", files["data"], "--steps", "6", "--methods", "const,const+cw",
                 "--calib-samples", "32", "--out", str(out), "--no-html", "--threads", "1", "--precision", "fixed"])
    assert code == 0, capsys.readouterr().err
    info = json.loads((out / FILES["manifest"]).read_text())
    conv = files["conv"]
    idx = np.sort(np.random.default_rng(23).choice(40, 32, replace=False))
    g_b, scales, cal = calibrate_balanced(conv.graph, files["x_train"][idx])
    assert sorted(scales) == sorted(balanceable(conv.graph)) and scales
    assert info["methods"]["const+cw"]["lambda"] == pytest.approx(dict(cal.lambdas))
    net = quantize(g_b, cal, method="const", seed=conv.net.provenance.seed)
    run = simulate(from_converted(net), files["x_test"], 6, precision="fixed", progress=False)
    row = next(r for r in info["runs"] if r["method"] == "const+cw")
    assert row["accuracy_curve"] == pytest.approx(list(run.accuracy(files["y_test"])))
    plain = next(r for r in info["runs"] if r["method"] == "const")
    assert row["firing_rates"] != plain["firing_rates"]  # the balanced layers really fire differently


def test_eval_burst_scaled_method(files, tmp_path, capsys):
    """const+bs4 = burst Γ = 4 with θ = λ/4: its network is quantize(graph, λ/4 (input scale λ^0 unchanged),
    Γ = 4), simulated independently; p99.9+bs1 is exactly p99.9 (÷1, Γ = 1)."""
    from netx_export.calibrate import calibrate
    from netx_export.quantize import quantize

    from msat_lava.program import from_converted
    from msat_lava.reference import simulate

    out = tmp_path / "o"
    code = main(["eval", files["net"], "--data", files["data"], "--steps", "6", "--methods",
                 "const,const+bs4,p99.9,p99.9+bs1", "--calib-samples", "32", "--out", str(out), "--no-html",
                 "--threads", "1", "--precision", "fixed"])
    assert code == 0, capsys.readouterr().err
    info = json.loads((out / FILES["manifest"]).read_text())
    conv = files["conv"]
    idx = np.sort(np.random.default_rng(23).choice(40, 32, replace=False))
    cal = calibrate(conv.graph, files["x_train"][idx], progress=False)
    quarter = {k: v / 4 for k, v in cal.lambdas.items()}
    got = info["methods"]["const+bs4"]
    assert got["lambda"] == pytest.approx(quarter) and got["gamma"] == 4
    assert got["input_scale"] == pytest.approx(cal.input_scale) == info["methods"]["const"]["input_scale"]
    net = quantize(conv.graph, {**quarter, conv.graph.input.name: cal.input_scale}, method="const", gamma=4,
                   seed=conv.net.provenance.seed)
    run = simulate(from_converted(net), files["x_test"], 6, precision="fixed", progress=False)
    row = {r["method"]: r for r in info["runs"]}
    assert row["const+bs4"]["accuracy_curve"] == pytest.approx(list(run.accuracy(files["y_test"])))
    assert row["const+bs4"]["firing_rates"] != row["const"]["firing_rates"]
    assert info["methods"]["p99.9+bs1"]["lambda"] == info["methods"]["p99.9"]["lambda"]
    assert row["p99.9+bs1"]["accuracy_curve"] == row["p99.9"]["accuracy_curve"]
    assert row["p99.9+bs1"]["firing_rates"] == row["p99.9"]["firing_rates"]


def test_eval_percentile_suffix_on_msat(files, tmp_path, capsys):
    """msat+pQ: λ = Q-th percentile over the calibration images, one λ set per Q."""
    from netx_export.calibrate import calibrate

    out = tmp_path / "o"
    code = main(["eval", files["net"], "--data", files["data"], "--steps", "2", "--methods", "msat+p99,msat+p90",
                 "--calib-samples", "32", "--out", str(out), "--no-html", "--threads", "1", "--precision", "fixed"])
    assert code == 0, capsys.readouterr().err
    info = json.loads((out / FILES["manifest"]).read_text())
    idx = np.sort(np.random.default_rng(23).choice(40, 32, replace=False))
    for q in (99, 90):
        cal = calibrate(files["conv"].graph, files["x_train"][idx], method="percentile", percentile=q,
                        progress=False)
        assert info["methods"][f"msat+p{q}"]["lambda"] == pytest.approx(dict(cal.lambdas))
    assert info["methods"]["msat+p99"]["lambda"] != info["methods"]["msat+p90"]["lambda"]


def test_eval_without_training_split_uses_file_lambda(files, tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["eval", files["net"], "--data", files["plain"], "--steps", "4", "--samples", "3",
                 "--methods", "msat,msat-norm", "--out", str(out), "--no-html", "--threads", "1"])
    text = capsys.readouterr().out
    assert code == 0, text
    info = json.loads((out / FILES["manifest"]).read_text())
    assert info["calibration"]["lambda_from"] == "file"
    assert info["methods"]["msat"]["lambda"] == pytest.approx({k: s.lam for k, s in files["conv"].net.neurons.items()})
    assert info["methods"]["msat"]["units"] == ["raw"] and info["methods"]["msat-norm"]["units"] == ["normalized"]
    assert info["methods"]["msat-norm"]["lambda"] == info["methods"]["msat"]["lambda"]
    assert not (out / FILES["html"]).exists() and "html" not in info["files"]
    assert "ANN accuracy" in text


@pytest.mark.parametrize("argv_tail, data_key, message", [
    (["--methods", "p99.9"], "plain", "need calibration images"),     # explicit percentile, no x_train
    (["--methods", "msat+sc"], "plain", "need calibration images"),
    (["--methods", "foo"], "data", "unknown method"),
    ([], "nolabels", "needs labels"),
    (["--sc-layers", "nope"], "data", "--sc-layers"),
    (["--sc-window", "300"], "data", "--sc-window"),
    (["--lambda-from", "data"], "plain", "training split"),
    (["--calib-data", "NOX"], "data", "'x_train' or 'x'"),
])
def test_eval_bad_input_exit_2(files, tmp_path, capsys, argv_tail, data_key, message):
    nox = tmp_path / "nox.npz"
    np.savez(nox, z=np.zeros((4, 3)))
    tail = [str(nox) if a == "NOX" else a for a in argv_tail]
    code = main(["eval", files["net"], "--data", files[data_key], "--steps", "3", "--out", str(tmp_path / "o"),
                 *tail])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and err.startswith("msat-lava eval: error:")
    assert not (tmp_path / "o").exists()


def test_eval_missing_network_exit_2(files, tmp_path, capsys):
    code = main(["eval", str(tmp_path / "missing.net"), "--data", files["data"], "--steps", "3"])
    assert code == 2 and "msat-lava eval: error:" in capsys.readouterr().err


def test_parse_methods():
    assert parse_methods("const, P99.5,msat+sc,const") == ["const", "p99.5", "msat+sc"]
    assert parse_methods("dtt-norm,msat-norm+sc") == ["dtt-norm", "msat-norm+sc"]
    assert parse_methods("const+h,p99.9+h,det-norm+h,msat+h+sc") == ["const+h", "p99.9+h", "det-norm+h", "msat+h+sc"]
    assert parse_methods("const+b2,msat-norm+h+b4+sc") == ["const+b2", "msat-norm+h+b4+sc"]
    s = method_settings("msat-norm+h+b4+sc")
    assert s == {"mode": "msat", "units": "normalized", "v_init": 0.5, "gamma": 4, "percentile": None,
                 "threshold_divisor": 1, "channelwise": False, "bias_correction_steps": None, "weight_calibration_steps": None, "sc": True}
    assert method_settings("p99.9+bc", default_gamma=3) == {
        "mode": "const", "units": "raw", "v_init": 0.0, "gamma": 3, "percentile": 99.9, "threshold_divisor": 1,
        "channelwise": False,
        "bias_correction_steps": 32, "weight_calibration_steps": None, "sc": False}
    assert parse_methods("p99.9+h+wc,p99.9+h+b2+wc8+bc16") == ["p99.9+h+wc", "p99.9+h+b2+wc8+bc16"]
    assert method_settings("p99.9+h+wc")["weight_calibration_steps"] == 16
    assert method_settings("p99.9+h+b2+wc8+bc16")["weight_calibration_steps"] == 8
    assert parse_methods("p99.9+cw+h+bc,msat+cw+sc") == ["p99.9+cw+h+bc", "msat+cw+sc"]
    assert method_settings("p99.9+cw+h")["channelwise"] is True
    assert parse_methods("msat-norm+p99.9+bc,dtt+p99") == ["msat-norm+p99.9+bc", "dtt+p99"]
    s = method_settings("msat-norm+p99.9+cw")
    assert (s["mode"], s["units"], s["percentile"], s["channelwise"]) == ("msat", "normalized", 99.9, True)
    assert method_settings("const+h+b2+bc16")["bias_correction_steps"] == 16
    assert parse_methods("p99.9+h+bs4,const+bs8+bc") == ["p99.9+h+bs4", "const+bs8+bc"]
    s = method_settings("p99.9+h+bs4", default_gamma=3)
    assert (s["gamma"], s["threshold_divisor"], s["v_init"], s["percentile"]) == (4, 4, 0.5, 99.9)
    assert method_settings("p99.9+h+b4")["threshold_divisor"] == 1
    from msat_lava.data import DataError

    for bad in ("msat+bs2", "dtt-norm+bs2", "dtif-r+bs2", "const+bs", "const+bs0", "const+b2+bs2", "const+bs2+b2",
                "const+bs2+h", "p99.9+bs2+bs2"):
        with pytest.raises(DataError):
            parse_methods(bad)
    for bad in ("p0", "p101", "", "lif", "dtt+sc", "const-norm", "msat+sc-norm", "msat+sc+h", "const+h+h",
                "p101+h", "h", "const+b", "const+b0", "msat+b2+h", "msat+sc+b2", "const+x", "dtt+b2+sc", "const+bc0",
                "const+bc+h", "const+bc+b2", "const+h+cw", "const+cw+cw", "cw", "const+p99", "p99+p99",
                "msat+cw+p99", "msat+p0", "msat+p101", "msat+p99+p98", "const+bc+wc", "const+wc0", "const+wc+wc"):
        with pytest.raises(DataError):
            parse_methods(bad)


def test_parse_methods_registry_models():
    """Every registered model with parameters is an eval core (netx_export.neurons), with :key=value parameters
    and the generic suffixes (+pQ, +h, +bN burst); bad parameters are refused at parse time."""
    from msat_lava.cli_eval import _model_params_of
    from msat_lava.data import DataError

    assert parse_methods("dtif-r,dtif-r:beta=3+b2,dtif-r:variant=B:g_min=0.5+p99.9+h") == [
        "dtif-r", "dtif-r:beta=3+b2", "dtif-r:variant=b:g_min=0.5+p99.9+h"]
    s = method_settings("dtif-r:beta=3+b2")
    assert (s["mode"], s["gamma"], s["percentile"]) == ("dtif-r", 2, None)
    assert _model_params_of("dtif-r:beta=3+b2") == {"beta": "3"} and _model_params_of("msat+sc") is None
    assert method_settings("dtif-r+p99.9+h")["percentile"] == 99.9
    for bad in ("dtif-r:beta=x", "dtif-r:beta=100", "dtif-r:nope=1", "dtif-r:beta=1:beta=2", "dtif-r+sc",
                "dtif-r-norm", "dtif-r:variant=d", "dtif-r:"):
        with pytest.raises(DataError):
            parse_methods(bad)


@pytest.mark.parametrize("precision", ["float", "fixed"])
def test_neuron_traces_replay(files, precision):
    conv = files["conv"]
    prog = conv.program
    last = prog.neuron_stages[-1]
    tr = neuron_traces(prog, last.name, files["x_test"][0], 10, precision=precision, sample_id=3)
    assert set(tr) == {"x", "m", "theta", "v", "payload", "spikes"}
    assert tr["m"].shape == (10, int(np.prod(last.shape)))
    lam = last.spec.lam
    np.testing.assert_allclose(tr["theta"][0], lam)                   # θ(0) = λ (MSAT)
    np.testing.assert_allclose(tr["v"], tr["m"] - tr["spikes"] * tr["theta"], atol=1e-9 * lam)  # soft reset
    np.testing.assert_allclose(tr["payload"], tr["spikes"] * tr["theta"])
    np.testing.assert_allclose(tr["m"][1:], tr["v"][:-1] + tr["x"][1:], atol=1e-9 * lam)


def test_eval_json_without_out_writes_nothing(files, tmp_path, capsys, monkeypatch):
    """--json alone prints the manifest and leaves no directory behind (before, ./msat-lava-eval appeared)."""
    monkeypatch.chdir(tmp_path)
    code = main(["eval", files["net"], "--data", files["data"], "--steps", "3", "--methods", "const",
                 "--calib-samples", "8", "--json", "--no-html"])
    assert code == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["files"] == {} and manifest["arguments"]["out"] is None
    assert "runs" in manifest
    assert list(tmp_path.iterdir()) == []


def test_eval_calib_data_takes_x_like_convert(files, tmp_path, capsys):
    """--calib-data accepts the keys convert's --data accepts (x_train, else x); before, a file with x was
    refused by eval and taken by convert."""
    out = tmp_path / "o"
    code = main(["eval", files["net"], "--data", files["data"], "--steps", "3", "--methods", "const",
                 "--calib-data", files["plain"], "--calib-samples", "5", "--out", str(out), "--no-html"])
    assert code == 0, capsys.readouterr().err
    info = json.loads((out / FILES["manifest"]).read_text())
    assert info["calibration"]["source"] == f"{files['plain']}:x" and info["calibration"]["samples"] == 5


def test_eval_registry_models_on_a_residual_network(files, tmp_path):
    """dtif-r and bsnn-r (with synchronous neurons on ResMix's shortcuts) go through eval, with burst (+b2)
    composing with both; every run reports accuracy at every step and its layers (the SNs included)."""
    out = tmp_path / "ev"
    steps = 40
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["eval", files["net"], "--data", files["data"], "--steps", str(steps), "--methods",
                     "dtif-r,dtif-r:beta=3+b2,bsnn-r:k=2,bsnn-r:k=2+b2", "--precision", "fixed", "--out", str(out),
                     "--json", "--no-html", "--calib-samples", "16"])
    assert code == 0
    manifest = json.loads(buf.getvalue())
    runs = {r["method"]: r for r in manifest["runs"]}
    assert set(runs) == {"dtif-r", "dtif-r:beta=3+b2", "bsnn-r:k=2", "bsnn-r:k=2+b2"}
    for r in runs.values():
        assert len(r["accuracy_curve"]) == steps
    assert any(".sn" in layer for layer in runs["bsnn-r:k=2"]["firing_rates"])


def test_eval_weight_calibrated_method(files, tmp_path, capsys):
    """+wcT refits the weights from the SNN's own rates (msat_lava.weight_calibration) before converting; the
    manifest records the per-node errors, which never grow."""
    out = tmp_path / "o"
    code = main(["eval", files["net"], "--data", files["data"], "--steps", "4", "--methods", "p99+h,p99+h+wc4",
                 "--calib-samples", "16", "--bc-samples", "16", "--out", str(out), "--no-html"])
    assert code == 0, capsys.readouterr().err
    info = json.loads((out / FILES["manifest"]).read_text())
    wc = info["bias_correction"]["p99+h+wc4 (weights)"]
    assert wc["steps"] == 4 and wc["samples"] == 16 and wc["rel_rms_error_after"]
    assert all(wc["rel_rms_error_after"][k] <= wc["rel_rms_error_before"][k] for k in wc["rel_rms_error_after"])
    assert {r["method"] for r in info["runs"]} >= {"p99+h", "p99+h+wc4"}
