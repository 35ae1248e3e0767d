"""Nothing the tool reads may unpickle (issue 13, class 1): marker-file tests.

Every hostile file here carries a pickle payload that would create a marker file if it were ever unpickled
(``__reduce__`` → ``exec``). Each test runs the command in process (``msat_lava.cli.main``) and asserts: exit
code 2, a one-line message naming the file, and no marker file.
"""
from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from msat_lava import cli
from msat_lava.cli_common import BadInput
from msat_lava.safe_load import check_pt2_archive, load_exported, load_weights, no_unpickling

pytestmark = pytest.mark.timeout(120)

MODEL_SOURCE = '''
import sys
import torch.nn as nn

def make():
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))

def exits():
    raise SystemExit(0)

def exits_1():
    sys.exit(1)
'''


class Payload:
    """Unpickling this runs ``open(marker, 'w')``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def _torch_payload(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": Payload(marker)}, buf)
    return buf.getvalue()


def _pickle_payload(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker), protocol=2)


@pytest.fixture()
def env(tmp_path):
    (tmp_path / "tiny_model.py").write_text(MODEL_SOURCE)
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    ep = torch.export.export(model, (torch.randn(2, 4),))
    torch.export.save(ep, tmp_path / "good.pt2")
    torch.save(model.state_dict(), tmp_path / "good.pt")
    return tmp_path


def _rewrite_zip(src: Path, dst: Path, edit) -> None:
    """Copy the zip ``src`` to ``dst``; ``edit(name, data)`` returns new bytes, or None to drop the entry; it
    is called once more with name None to return extra (name, data) entries."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            data = edit(info.filename.split("/", 1)[1], zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)
        for name, data in edit(None, None) or []:
            zout.writestr(f"{root}/{name}", data)


def _weights_marked_pickle(marker):
    def edit(name, data):
        if name is None:
            return []
        if name == "data/weights/model_weights_config.json":
            config = json.loads(data)
            first = next(iter(config["config"]))
            config["config"][first]["use_pickle"] = True
            return json.dumps(config).encode()
        if name == "data/weights/weight_0":
            return _torch_payload(marker)
        return data
    return edit


def _sample_inputs_payload(marker):
    def edit(name, data):
        if name is None:
            return []
        return _torch_payload(marker) if name == "data/sample_inputs/model.pt" else data
    return edit


def _opaque_constant(marker):
    def edit(name, data):
        if name is None:
            return [("data/constants/opaque_obj_0", _pickle_payload(marker))]
        if name == "data/constants/model_constants_config.json":
            return json.dumps({"config": {"c": {"path_name": "opaque_obj_0", "is_param": False,
                                                "use_pickle": False, "tensor_meta": None}}}).encode()
        return data
    return edit


def _aoti_library(marker):
    def edit(name, data):
        if name is None:
            return [("data/aotinductor/model/model.so", b"\x7fELF" + b"\0" * 60)]
        return data
    return edit


def _legacy_weights(marker):
    def edit(name, data):
        if name is None:
            return [("data/weights/model.pt", _torch_payload(marker))]
        return data
    return edit


def _legacy_format(path: Path, marker: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("version", "8.0")
        z.writestr("serialized_exported_program.json", "{}")
        z.writestr("serialized_state_dict.pt", _torch_payload(marker))
        z.writestr("serialized_constants.pt", _torch_payload(marker))
        z.writestr("serialized_example_inputs.pt", _torch_payload(marker))


PT2_CASES = {
    "weights-use-pickle": _weights_marked_pickle,
    "sample-inputs-pickle": _sample_inputs_payload,
    "opaque-constant": _opaque_constant,
    "aoti-library": _aoti_library,
    "legacy-weights-file": _legacy_weights,
}


def _convert(env: Path, *args: str) -> list[str]:
    return ["convert", *args, "--data", str(env / "data.npz"), "--out", str(env / "out.net"), "--quiet",
            "--calib-samples", "8", "--method", "const"]


def _assert_refused(capsys, code: int, path: Path, marker: Path, env: Path) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(path) in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not marker.exists(), "the payload ran"
    assert not (env / "out.net").exists()
    return err


def test_the_valid_archive_and_weights_convert(env, capsys):
    assert cli.main(_convert(env, "--exported", str(env / "good.pt2"))) == 0
    (env / "out.net").unlink()
    assert cli.main(_convert(env, "--model", f"{env}/tiny_model.py:make", "--weights", str(env / "good.pt"))) == 0


@pytest.mark.parametrize("case", sorted(PT2_CASES))
def test_pt2_payload_never_runs(env, capsys, case):
    marker = env / "MARKER"
    bad = env / f"{case}.pt2"
    _rewrite_zip(env / "good.pt2", bad, PT2_CASES[case](marker))
    code = cli.main(_convert(env, "--exported", str(bad)))
    _assert_refused(capsys, code, bad, marker, env)


def test_pt2_unpickled_by_torch_itself_is_refused_at_load(env):
    """Past the archive check (the sample inputs pass as a plain .pt entry), torch's own fallback to
    weights_only=False is refused inside no_unpickling."""
    marker = env / "MARKER"
    bad = env / "si.pt2"
    _rewrite_zip(env / "good.pt2", bad, _sample_inputs_payload(marker))
    check_pt2_archive(bad)
    with pytest.raises(BadInput, match=r"weights_only=False\) refused"):
        load_exported(bad)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["legacy-zip", "plain-pickle", "torch-save", "empty", "text"])
def test_pt2_that_is_not_an_archive(env, capsys, kind):
    marker = env / "MARKER"
    bad = env / f"{kind}.pt2"
    if kind == "legacy-zip":
        _legacy_format(bad, marker)
    elif kind == "plain-pickle":
        bad.write_bytes(_pickle_payload(marker))
    elif kind == "torch-save":
        bad.write_bytes(_torch_payload(marker))  # a zip, but not an exported program
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        bad.write_text("not an archive\n")
    code = cli.main(_convert(env, "--exported", str(bad)))
    _assert_refused(capsys, code, bad, marker, env)


@pytest.mark.parametrize("kind", ["torch-save", "plain-pickle", "legacy-tar-like"])
def test_weights_payload_never_runs(env, capsys, kind):
    marker = env / "MARKER"
    bad = env / f"{kind}.pt"
    if kind == "torch-save":
        bad.write_bytes(_torch_payload(marker))
    elif kind == "plain-pickle":
        bad.write_bytes(_pickle_payload(marker))
    else:
        bad.write_bytes(b"\x80\x02" + _pickle_payload(marker)[2:])
    code = cli.main(_convert(env, "--model", f"{env}/tiny_model.py:make", "--weights", str(bad)))
    _assert_refused(capsys, code, bad, marker, env)
    with pytest.raises(BadInput):
        load_weights(bad)
    assert not marker.exists()


def test_weights_of_the_wrong_shape_exit_2(env, capsys):
    state = {k: torch.zeros(tuple(s + 1 for s in v.shape)) for k, v in torch.load(env / "good.pt").items()}
    torch.save(state, env / "wrong.pt")
    code = cli.main(_convert(env, "--model", f"{env}/tiny_model.py:make", "--weights", str(env / "wrong.pt")))
    err = capsys.readouterr().err
    assert code == 2 and "wrong.pt" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _object_npz(path: Path, marker: Path, key: str = "x") -> None:
    """An .npz whose member is an object array: loading it would unpickle the payload."""
    buf = io.BytesIO()
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = Payload(marker), 1
    np.save(buf, arr, allow_pickle=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{key}.npy", buf.getvalue())


@pytest.mark.parametrize("command", ["convert", "run", "info-data"])
def test_npz_payload_never_runs(env, capsys, command):
    marker = env / "MARKER"
    bad = env / "obj.npz"
    _object_npz(bad, marker)
    if command == "convert":
        code = cli.main(["convert", "--model", f"{env}/tiny_model.py:make", "--data", str(bad), "--out",
                         str(env / "out.net"), "--quiet"])
    else:
        assert cli.main(_convert(env, "--model", f"{env}/tiny_model.py:make")) == 0
        capsys.readouterr()
        net = env / "out.net"
        code = cli.main(["run", str(net), "--data", str(bad), "--steps", "2", "--json"])
        net.unlink()
    _assert_refused(capsys, code, bad, marker, env)


def test_npy_with_pickle_is_refused(env, capsys):
    marker = env / "MARKER"
    bad = env / "obj.npy"
    arr = np.empty(1, dtype=object)
    arr[0] = Payload(marker)
    np.save(bad, arr, allow_pickle=True)
    code = cli.main(["convert", "--model", f"{env}/tiny_model.py:make", "--data", str(bad), "--out",
                     str(env / "out.net"), "--quiet"])
    _assert_refused(capsys, code, bad, marker, env)


@pytest.mark.parametrize("factory", ["exits", "exits_1"])
def test_model_factory_exiting_is_exit_2(env, capsys, factory):
    code = cli.main(_convert(env, "--model", f"{env}/tiny_model.py:{factory}"))
    err = capsys.readouterr().err
    assert code == 2 and "SystemExit" in err and not (env / "out.net").exists()


def test_no_unpickling_restores_everything():
    before = (torch.load, pickle.loads, pickle.load, pickle.Unpickler)
    with no_unpickling():
        with pytest.raises(Exception):
            pickle.loads(pickle.dumps(1))
    assert (torch.load, pickle.loads, pickle.load, pickle.Unpickler) == before
    assert pickle.loads(pickle.dumps([1])) == [1]
