"""Foundation: Python 3.11 Lava fix, a bit-exact Lava network, netx loading, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import conftest
from _lava_helpers import if_chain_reference, if_layer_reference, run_fixed_pt, write_netx_dense

import msat_lava
from msat_lava import cli

MSAT_LAVA_BIN = Path(sys.executable).with_name("msat-lava")


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=conftest.REPO_ROOT, **kwargs)


# --- Python 3.11 compatibility -------------------------------------------------------------


@pytest.mark.lava
def test_import_msat_lava_fixes_var_model_in_fresh_interpreter():
    code = textwrap.dedent(
        """
        import multiprocessing, sys
        import msat_lava
        from msat_lava.lava import compat
        # Only the torchvision placeholder may be registered (a bare module, not an import).
        stub_name = "lava.lib.dl.slayer.object_detection"
        assert getattr(sys.modules.get(stub_name), "__spec__", None) is None
        loaded = [m for m in sys.modules if m != stub_name and (m.split(".")[0] in ("lava", "torch"))]
        assert not loaded, f"import msat_lava imported {sorted(loaded)}"
        assert multiprocessing.get_start_method(allow_none=True) is None, "start method was set"
        import lava.magma.compiler.var_model as vm
        assert compat.var_model_fix_active(), "var_model fix not active"
        a, b = vm.CoreEncoder(), vm.CoreEncoder()
        assert a.x is not b.x, "ByteEncoder default is shared between instances"
        print("ok", msat_lava.__version__)
        """
    )
    proc = _run([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", msat_lava.__version__]


@pytest.mark.lava
def test_var_model_fails_without_the_fix():
    """Control for the test above: the unpatched lava-nc 0.10.0 module really is broken on 3.11."""
    proc = _run([sys.executable, "-c", "import lava.magma.compiler.var_model"])
    assert proc.returncode != 0
    assert "mutable default" in proc.stderr and "use default_factory" in proc.stderr


# --- a tiny Lava network against an integer reference ----------------------------------------


@pytest.mark.lava
def test_dense_lif_fixed_pt_matches_integer_reference():
    rng = np.random.default_rng(11)
    n_in, n_out, steps, vth = 8, 6, 25, 9
    spikes = (rng.random((n_in, steps)) < 0.4).astype(np.int64)
    weights = rng.integers(-9, 10, size=(n_out, n_in))
    weights[0, :2] = [7, -5]  # odd weights for sure
    bias = rng.integers(-1, 3, size=n_out)
    expected = if_layer_reference(spikes, weights, bias, vth)
    assert 0 < expected.sum() < expected.size
    # The comparison is sensitive to the details that matter: strict '>' and odd weights.
    assert not np.array_equal(expected, if_layer_reference(spikes, weights, bias, vth - 1))
    assert not np.array_equal(expected, if_layer_reference(spikes, weights & ~1, bias, vth))

    # msat_lava.lava.tiny (the doctor's network): 8-bit mixed-sign Dense drops the weight LSB, so it feeds
    # 2*W with weight_exp=-1, which is exact (LAVA_NOTES §3.7).
    from msat_lava.lava.tiny import run_dense_lif

    got = run_dense_lif(spikes, weights, bias, vth)
    np.testing.assert_array_equal(got, expected)


# --- lava-dl netx -----------------------------------------------------------------------------


@pytest.mark.lava
def test_netx_imports():
    import lava.lib.dl.netx as netx

    assert hasattr(netx, "hdf5") and hasattr(netx.hdf5, "Network")


@pytest.mark.lava
def test_hand_written_netx_file_matches_integer_reference(tmp_path):
    from lava.lib.dl import netx
    from lava.proc.io.sink import RingBuffer as SinkBuffer
    from lava.proc.io.source import RingBuffer as SourceBuffer

    rng = np.random.default_rng(2024)
    n_in, n_hidden, n_out, steps = 16, 12, 5, 30
    w1 = rng.integers(-20, 22, size=(n_hidden, n_in))
    w2 = rng.integers(-20, 22, size=(n_out, n_hidden))
    for w in (w1, w2):
        assert (w % 2 == 1).any() and (w % 2 == 0).any()
    b1 = rng.integers(-2, 4, size=n_hidden)
    layers = [(w1, b1, 30), (w2, None, 25)]
    spikes = (rng.random((n_in, steps)) < 0.3).astype(np.int64)

    expected = if_chain_reference(spikes, layers)
    hidden = if_layer_reference(spikes, w1, b1, 30)
    assert 0 < hidden.sum() < hidden.size and 0 < expected.sum() < expected.size
    even_only = [(w & ~1, b, vth) for w, b, vth in layers]
    assert not np.array_equal(expected, if_chain_reference(spikes, even_only))

    path = write_netx_dense(tmp_path / "dense.net", n_in, layers)
    net = netx.hdf5.Network(net_config=str(path))
    assert len(net.layers) == 2 and net.inp.shape == (n_in,) and net.out.shape == (n_out,)
    source = SourceBuffer(data=spikes)
    sink = SinkBuffer(shape=net.out.shape, buffer=steps)
    source.s_out.connect(net.inp)
    net.out.connect(sink.a_in)

    got = run_fixed_pt(net, sink, steps)
    np.testing.assert_array_equal(got, expected)


# --- CLI --------------------------------------------------------------------------------------


def test_cli_version():
    assert MSAT_LAVA_BIN.exists(), f"{MSAT_LAVA_BIN} missing: install the project (make venv)"
    proc = _run([str(MSAT_LAVA_BIN), "--version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"msat-lava {msat_lava.__version__}"


@pytest.mark.lava
def test_cli_doctor_json():
    proc = _run([str(MSAT_LAVA_BIN), "doctor", "--json"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["reason"] == ""
    assert report["var_model_fix_active"] is True
    assert report["network"]["ok"] is True and report["network"]["spikes_got"] > 0
    assert report["packages"]["lava-nc"] == "0.10.0" and report["packages"]["lava-dl"] == "0.6.0"
    assert report["loihi2_available"] in (True, False)


def test_cli_doctor_reports_failure_with_exit_1(monkeypatch, capsys):
    from msat_lava import doctor

    def broken():
        return doctor.NetworkCheck(False, 12, 11, None, 0.0, "Lava run failed (RuntimeError: boom)")

    monkeypatch.setattr(doctor, "run_tiny_network", broken)
    assert cli.main(["doctor"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "FAILED: Lava run failed (RuntimeError: boom)"
    assert err.strip() == "msat-lava doctor: FAILED: Lava run failed (RuntimeError: boom)"


def test_cli_turns_exceptions_into_exit_code(monkeypatch, capsys):
    def add_boom_parser(subparsers):
        def boom(args):
            raise ValueError("bad input\nsecond line")

        subparsers.add_parser("boom").set_defaults(func=boom)

    monkeypatch.setattr(cli, "SUBCOMMANDS", [*cli.SUBCOMMANDS, add_boom_parser])
    assert cli.main(["boom"]) == 1
    assert capsys.readouterr().err.strip() == "msat-lava boom: error: ValueError: bad input"
    assert cli.main([]) == 2


# --- shared data helper -----------------------------------------------------------------------


def test_shared_data_dir_fails_when_missing(monkeypatch, tmp_path):
    monkeypatch.setenv(conftest.SHARED_DATA_ENV, str(tmp_path / "nope"))
    with pytest.raises(pytest.fail.Exception, match=conftest.SHARED_DATA_ENV):
        conftest.shared_data_dir()


def test_shared_data_dir_fixture(shared_data_dir):
    assert shared_data_dir.is_dir()
