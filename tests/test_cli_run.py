"""``msat-lava run`` / ``verify`` / ``demo``: outputs, files and exit codes (0 ok, 1 mismatch, 2 bad input)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

import _nets
from msat_lava.cli import main

STEPS = 6


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A converted PoolMix network file and an .npz with 12 inputs (x, y)."""
    root = tmp_path_factory.mktemp("cli_run")
    conv = _nets.convert("poolmix", "msat")
    net = conv.net.save(root / "poolmix.net")
    x = _nets.random_inputs(conv.program.input_shape, 12, seed=3).astype(np.float32)
    y = np.arange(12) % 4
    data = root / "data.npz"
    np.savez(data, x=x, y=y)
    return {"root": root, "net": str(net), "data": str(data), "x": x, "y": y, "program": conv.program}


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_run_reference_writes_predictions(files, capsys, tmp_path):
    from msat_lava.data import strided_indices
    from msat_lava.reference import simulate

    out = tmp_path / "pred.npz"
    code = main(["run", files["net"], "--data", files["data"], "--steps", str(STEPS), "--samples", "6",
                 "--backend", "ref-fixed", "--report-steps", "3,6", "--predictions", str(out), "--json"])
    assert code == 0
    info = _json_out(capsys)
    assert info["samples"] == 6 and set(info["accuracy"]) == {"3", "6"}
    idx = strided_indices(12, 6)
    with np.load(out, allow_pickle=False) as p:
        assert p["predictions"].shape == (STEPS, 6)
        np.testing.assert_array_equal(p["indices"], idx)
        np.testing.assert_array_equal(p["labels"], files["y"][idx])
        assert str(p["backend"]) == "ref-fixed" and p["accuracy"].shape == (STEPS,)
        ref = simulate(files["program"], files["x"][idx], STEPS, sample_ids=idx, progress=False)
        np.testing.assert_array_equal(p["predictions"], ref.predictions)
        assert info["accuracy"]["6"] == pytest.approx(float(p["accuracy"][-1]))


def test_run_text_output_float_backend(files, capsys):
    assert main(["run", files["net"], "--data", files["data"], "--steps", "4", "--backend", "ref-float"]) == 0
    out = capsys.readouterr().out
    assert "accuracy: T=1:" in out and "T=4:" in out


@pytest.mark.lava
def test_run_lava_matches_reference(files, capsys, tmp_path):
    outs = {}
    for backend in ("lava-fixed", "ref-fixed"):
        path = tmp_path / f"{backend}.npz"
        assert main(["run", files["net"], "--data", files["data"], "--steps", "4", "--samples", "2",
                     "--backend", backend, "--predictions", str(path), "--json"]) == 0
        with np.load(path) as p:
            outs[backend] = p["predictions"]
    np.testing.assert_array_equal(outs["lava-fixed"], outs["ref-fixed"])


@pytest.mark.lava
def test_verify_exit_0_and_report(files, capsys, tmp_path):
    report = tmp_path / "verify.json"
    code = main(["verify", files["net"], "--data", files["data"], "--samples", "2", "--steps", "4",
                 "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "BIT-EXACT" in out
    data = json.loads(report.read_text())
    assert data["bit_exact"] and data["n_samples"] == 2 and data["sample_ids"] == [0, 6]
    assert data["float_comparison"]["accuracy_delta"] is not None


@pytest.mark.lava
def test_verify_exit_1_on_mismatch(files, capsys, monkeypatch):
    """Corrupt one bias of the program the Lava run gets: verify must fail and name that stage."""
    import msat_lava.lava.build as build

    real = build.run_lava

    def corrupted_run(program, *args, **kwargs):
        stages = list(program.stages)
        k = next(i for i, s in enumerate(stages) if s.name == "relu_2")
        stages[k] = dataclasses.replace(stages[k], bias_fixed=np.asarray(stages[k].bias_fixed) + (1 << 20))
        return real(dataclasses.replace(program, stages=tuple(stages)), *args, **kwargs)

    monkeypatch.setattr(build, "run_lava", corrupted_run)
    code = main(["verify", files["net"], "--data", files["data"], "--samples", "2", "--steps", "4", "--no-float"])
    out = capsys.readouterr().out
    assert code == 1
    assert "MISMATCH" in out and "first divergence: stage 'relu_2'" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "{net}", "--data", "{root}/missing.npz", "--steps", "2"], "no such file"),
    (["run", "{root}/missing.net", "--data", "{data}", "--steps", "2"], "missing.net"),
    (["verify", "{net}", "--data", "{root}/wrongshape.npz", "--steps", "2"], "do not fit the network input"),
    (["run", "{net}", "--data", "{root}/nokey.npz", "--steps", "2"], "key 'x_test'"),
    (["run", "{net}", "--data", "{data}", "--steps", "4", "--report-steps", "8"], "exceed --steps"),
    (["run", "{net}", "--data", "{data}", "--steps", "2", "--norm-mean", "0.1,0.2,0.3"], "3 value"),
    (["run", "{data}", "--data", "{data}", "--steps", "2"], "data.npz"),          # not a network file
])
def test_bad_input_exit_2(files, capsys, argv, message):
    root = files["root"]
    np.savez(root / "wrongshape.npz", x=np.zeros((2, 3, 5, 5), np.float32))
    np.savez(root / "nokey.npz", images=np.zeros((2, 3)))
    argv = [a.format(net=files["net"], data=files["data"], root=root) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"msat-lava {argv[0]}: error:") and message in err


def test_bad_arguments_exit_2(files):
    with pytest.raises(SystemExit) as info:
        main(["run", files["net"], "--data", files["data"], "--steps", "0"])
    assert info.value.code == 2
    proc = subprocess.run([sys.executable, "-m", "msat_lava.cli", "verify", files["net"], "--data",
                           str(files["root"] / "missing.npz")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no such file" in proc.stderr


@pytest.mark.lava
def test_demo_fast_mode(tmp_path, capsys):
    from netx_export.api import load

    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--seconds", "2", "--epochs", "1", "--steps", "8",
                 "--test-samples", "40", "--verify-samples", "2", "--verify-steps", "4"])
    text = capsys.readouterr().out
    assert code == 0, text
    for marker in ("[1/7]", "[7/7]", "SNN MSAT", "SNN const", "ANN", "BIT-EXACT"):
        assert marker in text
    names = {p.name for p in out.iterdir()}
    assert {"digits_cnn_msat.net", "digits_cnn_const.net", "digits_test.npz", "accuracy_vs_T.png",
            "demo_report.json"} <= names
    assert not [n for n in names if n.startswith(".")]                   # no temporary files left
    assert (out / "accuracy_vs_T.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "demo_report.json").read_text())
    assert report["bit_exact"] is True and report["report_steps"] == [1, 2, 4, 8]
    assert set(report["snn_accuracy"]) == {"msat", "const"} and report["dataset"]["evaluated"] == 40
    assert 0.0 <= report["ann_accuracy"] <= 1.0 and report["training"]["epochs"] == 1
    assert load(out / "digits_cnn_msat.net").method == "msat"
    assert load(out / "digits_cnn_const.net").method == "const"
    with np.load(out / "digits_test.npz") as d:
        assert d["x_test"].shape == (500, 8, 8) and d["y_test"].shape == (500,)
    # the demo's data file works with `msat-lava run` as printed
    code = main(["run", str(out / "digits_cnn_msat.net"), "--data", str(out / "digits_test.npz"), "--input-scale",
                 "16", "--norm-mean", "0.5", "--norm-std", "0.5", "--steps", "8", "--samples", "40", "--json"])
    assert code == 0
    run = json.loads(capsys.readouterr().out)
    assert run["accuracy"]["8"] == pytest.approx(report["snn_accuracy"]["msat"]["8"])
