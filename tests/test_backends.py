"""The backend interface: each backend's check() raises a typed bad-input error before anything is built."""
from __future__ import annotations

import numpy as np
import pytest

import _nets
from msat_lava import cli
from msat_lava.backends import (BACKEND_NAMES, BackendError, BackendUnavailable, LavaCpuBackend, Loihi2Backend,
                                ReferenceBackend, UnsupportedProgram, get_backend)
from msat_lava.cli_common import BadInput
from netx_export import hdf5


@pytest.fixture(scope="module")
def nets():
    return {"msat": _nets.convert("mlp", "msat"), "const": _nets.convert("mlp", "const"),
            "const_pool": _nets.convert("poolmix", "const")}


def test_names_and_typed_errors():
    assert BACKEND_NAMES == ("reference", "lava-cpu", "loihi2")
    assert all(get_backend(n).name == n for n in BACKEND_NAMES)
    with pytest.raises(BackendError, match="unknown backend 'tpu'"):
        get_backend("tpu")
    assert issubclass(BackendUnavailable, BadInput) and issubclass(UnsupportedProgram, BadInput)


def test_reference_and_lava_cpu_checks(nets):
    p = nets["msat"].program
    ReferenceBackend().check(p, precision="float")
    LavaCpuBackend().check(p, precision="fixed")
    with pytest.raises(UnsupportedProgram, match="precision 'half'"):
        ReferenceBackend().check(p, precision="half")
    with pytest.raises(BackendError, match="backend loihi2 runs fixed point only"):
        Loihi2Backend().check(nets["const"].program, precision="float", net=nets["const"].net)


def test_loihi2_check_collects_every_problem(nets, monkeypatch):
    from msat_lava.lava import loihi2 as hw

    with pytest.raises(BackendUnavailable) as err:   # no lava-loihi AND msat layers: both said
        Loihi2Backend().check(nets["msat"].program, net=nets["msat"].net)
    assert "INRC" in str(err.value) and "microcoded" in str(err.value)
    monkeypatch.setattr(hw, "is_installed", lambda: True)
    Loihi2Backend().check(nets["const"].program, net=nets["const"].net)     # a netx chain: runnable
    with pytest.raises(UnsupportedProgram, match="needs the converted network"):
        Loihi2Backend().check(nets["const"].program)
    with pytest.raises(UnsupportedProgram, match="LIPool layers"):          # maxpool → LIPool
        Loihi2Backend().check(nets["const_pool"].program, net=nets["const_pool"].net)


def test_run_backend_loihi2_refuses_before_building(nets, tmp_path, monkeypatch, capsys):
    import msat_lava.reference as reference

    monkeypatch.setattr(reference, "simulate", lambda *a, **k: pytest.fail("nothing may be built"))
    path = hdf5.write(nets["const"].net, tmp_path / "mlp.net")
    np.savez(tmp_path / "d.npz", x=_nets.random_inputs((6,), 3, 1).astype(np.float32))
    code = cli.main(["run", str(path), "--data", str(tmp_path / "d.npz"), "--backend", "loihi2", "--steps", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "lava-loihi" in err and len(err.strip().splitlines()) == 1
