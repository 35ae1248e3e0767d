"""Bad input gets exit code 2 and one line naming the file/field/argument (issue 13, classes 3-6).

* class 3: NaN / inf / range of the normalized input (``--input-scale``, ``--norm-std``, huge data values,
  clipping reported), bounded ``.npz`` reads (zip bombs, lying headers);
* class 4: exit codes (labels, ``--seed``, ``--steps``, output destinations checked before working);
* class 5: interrupted writes (stale temps cleaned, ``eval --out`` appears whole, overwrites refused);
* class 6: one-line errors (traceback only with ``--debug``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from msat_lava import cli

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def net_file(tmp_path_factory):
    """A 1x6x6 conv + linear network (const), its data file with labels, and the directory."""
    from netx_export import hdf5, ir
    from netx_export.quantize import quantize

    root = tmp_path_factory.mktemp("hard")
    rng = np.random.default_rng(3)
    graph = ir.Graph((
        ir.Input("x", shape=(1, 6, 6)),
        ir.Conv("c0", ("x",), weight=rng.normal(size=(3, 1, 3, 3)) * 0.5, bias=rng.normal(size=3) * 0.1,
                padding=(1, 1)),
        ir.Relu("r0", ("c0",)),
        ir.Flatten("fl", ("r0",)),
        ir.Linear("out", ("fl",), weight=rng.normal(size=(4, 108)) * 0.3, bias=rng.normal(size=4) * 0.1),
    ))
    net = quantize(graph, {"r0": 1.5}, input_scale=1.0, method="const")
    path = hdf5.write(net, root / "tiny.net")
    x = rng.integers(0, 256, size=(10, 6, 6), dtype=np.uint8)
    np.savez(root / "data.npz", x=x, y=rng.integers(0, 4, size=10))
    return root, path


def _run(net: Path, data: Path, *extra: str) -> list[str]:
    return ["run", str(net), "--data", str(data), "--steps", "3", "--json", *extra]


def _one_line_error(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------------------------------------
# class 3: NaN / inf / range
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (("--input-scale", "1e-300"), ("input scale",)),
    (("--input-scale", "inf"), ("input scale",)),
    (("--input-scale", "nan"), ("input scale",)),
    (("--norm-std", "1e-40"), ("std",)),
    (("--norm-std", "0"), ("std",)),
    (("--norm-mean", "inf"), ("--norm-mean",)),
])
def test_run_refuses_options_that_make_inputs_non_finite(net_file, capsys, args, words):
    root, net = net_file
    code = cli.main(_run(net, root / "data.npz", *args))
    _one_line_error(capsys, code, *words)


def test_run_refuses_values_beyond_float32(net_file, capsys):
    root, net = net_file
    np.savez(root / "huge.npz", x=np.full((3, 1, 6, 6), 1e300))
    code = cli.main(_run(net, root / "huge.npz"))
    _one_line_error(capsys, code, "huge.npz", "float32")


def test_run_reports_clipping(net_file, capsys):
    root, net = net_file
    x = np.zeros((2, 1, 6, 6), np.float32)
    x[0, 0, 0, :3] = 1e30
    np.savez(root / "big.npz", x=x)
    assert cli.main(_run(net, root / "big.npz")) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["input_clipped"] == 3
    assert "3 of 72 input value(s)" in captured.err and "clipped" in captured.err


def test_convert_refuses_non_finite_calibration(tmp_path, capsys):
    (tmp_path / "m.py").write_text("import torch.nn as nn\n\ndef make():\n    return nn.Sequential(nn.Linear(4, 3), "
                                   "nn.ReLU(), nn.Linear(3, 2))\n")
    np.savez(tmp_path / "d.npz", x=np.ones((8, 4), np.float32))
    base = ["convert", "--model", f"{tmp_path}/m.py:make", "--data", str(tmp_path / "d.npz"), "--out",
            str(tmp_path / "o.net"), "--quiet"]
    _one_line_error(capsys, cli.main(base + ["--input-scale", "1e-300"]), "--input-scale")
    np.savez(tmp_path / "d.npz", x=np.full((8, 4), 1e300))
    _one_line_error(capsys, cli.main(base), "d.npz")
    assert not (tmp_path / "o.net").exists()


def test_convert_burst_scaled(tmp_path, capsys):
    """--burst N --burst-scaled writes the const network with every λ divided by N and Γ = N (the input scale
    not divided); with a non-const method it is refused by name before any work."""
    from netx_export.api import load

    (tmp_path / "m.py").write_text("import torch, torch.nn as nn\n\ndef make():\n    torch.manual_seed(0)\n"
                                   "    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))\n")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).uniform(-1, 1, (16, 4)).astype(np.float32))
    base = ["convert", "--model", f"{tmp_path}/m.py:make", "--data", str(tmp_path / "d.npz"), "--quiet",
            "--method", "const", "--v-init", "0.5", "--out"]
    assert cli.main(base + [str(tmp_path / "plain.net")]) == 0
    assert cli.main(base + [str(tmp_path / "bs.net"), "--burst", "4", "--burst-scaled"]) == 0
    assert cli.main(base + [str(tmp_path / "b.net"), "--burst", "4"]) == 0
    plain, bs, b = (load(tmp_path / f"{n}.net") for n in ("plain", "bs", "b"))
    assert bs.input_scale == plain.input_scale == b.input_scale
    for name, spec in bs.neurons.items():
        assert spec.lam == pytest.approx(plain.neurons[name].lam / 4, rel=1e-12)
        assert b.neurons[name].lam == plain.neurons[name].lam
        assert (spec.gamma, b.neurons[name].gamma, plain.neurons[name].gamma) == (4, 4, 1)
    assert bs.provenance.hyperparameters["threshold_divisor"] == 4
    assert "threshold_divisor" not in plain.provenance.hyperparameters
    line = _one_line_error(capsys, cli.main(["convert", "--model", f"{tmp_path}/m.py:make", "--data",
                                             str(tmp_path / "d.npz"), "--quiet", "--method", "msat", "--burst", "2",
                                             "--burst-scaled", "--out", str(tmp_path / "m.net")]),
                           "--burst-scaled", "msat")
    assert not (tmp_path / "m.net").exists(), line


def _lying_npz(path: Path, shape: tuple, payload: bytes = b"\0" * 64, dtype: str = "<f4") -> None:
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", buf.getvalue() + payload)


def _zeros_bomb(path: Path, rows: int) -> None:
    """A member of rows x 1 x 6 x 6 float32 zeros, deflated (≈1000x smaller), written in chunks."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (rows, 1, 6, 6)})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z, z.open("x.npy", "w", force_zip64=True) as fh:
        fh.write(buf.getvalue())
        chunk = bytes(144 * 4096)
        for _ in range(rows // 4096):
            fh.write(chunk)


def test_npz_header_lying_about_its_size_is_refused(net_file, capsys):
    root, net = net_file
    _lying_npz(root / "lie.npz", (1 << 40, 1, 6, 6))
    _one_line_error(capsys, cli.main(_run(net, root / "lie.npz")), "lie.npz", "declares")
    _lying_npz(root / "obj.npz", (2,), dtype="|O")
    _one_line_error(capsys, cli.main(_run(net, root / "obj.npz")), "obj.npz")


def _peak_rss_kib(args: list[str]) -> tuple[int, int, str]:
    code = ("import resource, sys\nfrom msat_lava import cli\nrc = cli.main(sys.argv[1:])\n"
            "hwm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
            "print('RSS', hwm[0], file=sys.stderr)\nsys.exit(rc)\n")  # VmHWM: ru_maxrss survives exec
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=110)
    rss = int(proc.stderr.rsplit("RSS", 1)[1].split()[0])
    return proc.returncode, rss, proc.stderr


def test_a_compressed_npz_is_read_row_by_row(net_file):
    """A 1.4 MB file holding 600 MB of zeros: --samples 4 reads 4 rows, not the member."""
    root, net = net_file
    _zeros_bomb(root / "bomb.npz", 4096 * 256)
    assert (root / "bomb.npz").stat().st_size < 3 << 20
    np.savez(root / "small.npz", x=np.zeros((4, 1, 6, 6), np.float32))
    rc0, base, err0 = _peak_rss_kib(_run(net, root / "small.npz", "--samples", "4"))
    rc1, bomb, err1 = _peak_rss_kib(_run(net, root / "bomb.npz", "--samples", "4"))
    assert rc0 == 0 and rc1 == 0, (err0, err1)
    assert bomb < 1.2 * base + 20 * 1024, (base, bomb)


# ---------------------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels, words", [
    (np.full(10, 99), ("label(s)", ">= 4")),
    (np.full(10, 1 << 63, dtype=np.uint64), ("wrap",)),
    (np.full(10, -1), (">= 0",)),
    (np.full(10, 1.5), ("integers",)),
    (np.full(10, True), ("integers",)),
])
def test_bad_labels_are_refused(net_file, capsys, labels, words):
    root, net = net_file
    np.savez(root / "lab.npz", x=np.zeros((10, 1, 6, 6), np.float32), y=labels)
    _one_line_error(capsys, cli.main(_run(net, root / "lab.npz")), "lab.npz", "'y'", *words)


# ---------------------------------------------------------------------------------------------------------
# class 4: exit codes, arguments, destinations checked before working
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["convert", "--model", "m:make", "--data", "d.npz", "--out", "o.net", "--seed", "-1"], "--seed"),
    (["convert", "--model", "m:make", "--data", "d.npz", "--out", "o.net", "--seed", str(1 << 32)], "--seed"),
    (["run", "n.net", "--data", "d.npz", "--steps", "0"], "--steps"),
    (["run", "n.net", "--data", "d.npz", "--steps", str(10 ** 9)], "--steps"),
    (["run", "n.net", "--data", "d.npz", "--steps", "4", "--report-steps", "1,99999999"], "--report-steps"),
    (["verify", "n.net", "--data", "d.npz", "--steps", "-3"], "--steps"),
    (["eval", "n.net", "--data", "d.npz", "--steps", "4", "--seed", "-5"], "--seed"),
    (["eval", "n.net", "--data", "d.npz", "--steps", "4", "--calib-seed", "99999999999"], "--calib-seed"),
    (["demo", "--seed", "-1"], "--seed"),
    (["convert", "--model", "m:make", "--data", "d.npz", "--out", "o.net", "--burst", "0"], "--burst"),
    (["convert", "--model", "m:make", "--data", "d.npz", "--out", "o.net", "--burst", "two"], "--burst"),
])
def test_bad_arguments_exit_2(capsys, argv, words):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_convert_destination_checked_before_working(tmp_path, capsys):
    model = tmp_path / "m.py"
    model.write_text("raise SystemExit('the model must not even be imported')\n")
    base = ["convert", "--model", f"{model}:make", "--data", str(tmp_path / "d.npz"), "--quiet", "--out"]
    line = _one_line_error(capsys, cli.main(base + [str(tmp_path / "no" / "such" / "o.net")]), "--out", "no/such")
    assert ".tmp" not in line
    (tmp_path / "adir").mkdir()
    _one_line_error(capsys, cli.main(base + [str(tmp_path / "adir")]), "--out", "is a directory")
    (tmp_path / "exists.net").write_bytes(b"old")
    _one_line_error(capsys, cli.main(base + [str(tmp_path / "exists.net")]), "--overwrite")
    assert (tmp_path / "exists.net").read_bytes() == b"old"
    (tmp_path / "afile").write_text("x")
    _one_line_error(capsys, cli.main(base + [str(tmp_path / "afile" / "o.net")]), "--out", "does not exist")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_destination(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        base = ["convert", "--model", "x:y", "--data", "d.npz", "--quiet", "--out", str(ro / "o.net")]
        _one_line_error(capsys, cli.main(base), "--out", "cannot write")
    finally:
        ro.chmod(0o755)


def test_predictions_and_report_destinations(net_file, tmp_path, capsys):
    root, net = net_file
    pred = tmp_path / "p.npz"
    assert cli.main(_run(net, root / "data.npz", "--predictions", str(pred))) == 0
    first = pred.read_bytes()
    capsys.readouterr()
    _one_line_error(capsys, cli.main(_run(net, root / "data.npz", "--predictions", str(pred))), "--predictions",
                    "--overwrite")
    assert pred.read_bytes() == first
    assert cli.main(_run(net, root / "data.npz", "--predictions", str(pred), "--overwrite")) == 0
    capsys.readouterr()
    _one_line_error(capsys, cli.main(_run(net, root / "data.npz", "--predictions", str(tmp_path / "x" / "p.npz"))),
                    "--predictions", "does not exist")
    (tmp_path / "r.json").write_text("{}")
    code = cli.main(["verify", str(net), "--data", str(root / "data.npz"), "--report", str(tmp_path / "r.json")])
    _one_line_error(capsys, code, "--report", "--overwrite")


def test_eval_out_with_foreign_files_is_refused(net_file, tmp_path, capsys):
    root, net = net_file
    (tmp_path / "keep.txt").write_text("mine")
    code = cli.main(["eval", str(net), "--data", str(root / "data.npz"), "--steps", "2", "--out", str(tmp_path)])
    _one_line_error(capsys, code, "--out", "keep.txt")
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "missing.net")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    old = os.environ.pop("MSAT_LAVA_DEBUG", None)
    try:
        assert cli.main(["--debug", "info", str(tmp_path / "missing.net")]) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "missing.net" in err
    finally:
        os.environ.pop("MSAT_LAVA_DEBUG", None)
        if old is not None:
            os.environ["MSAT_LAVA_DEBUG"] = old


# ---------------------------------------------------------------------------------------------------------
# class 5: interrupted writes
# ---------------------------------------------------------------------------------------------------------

KILL_SCRIPT = """
import os, signal, sys
from netx_export.fileio import atomic_target, atomic_directory
dest, kind = sys.argv[1], sys.argv[2]
if kind == "file":
    with atomic_target(dest) as tmp:
        open(tmp, "wb").write(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)
else:
    with atomic_directory(dest) as tmp:
        open(os.path.join(tmp, "eval.json"), "w").write("{")
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_killed_writer_leaves_no_partial_destination_and_its_temp_is_cleaned(tmp_path, kind):
    from netx_export.fileio import atomic_directory, atomic_target

    dest = tmp_path / ("out.net" if kind == "file" else "results")
    if kind == "dir":
        dest.mkdir()
        (dest / "eval.json").write_text('{"old": 1}')
    for _ in range(3):  # three killed runs
        proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(dest), kind], cwd=REPO, timeout=60)
        assert proc.returncode == -9
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{dest.name}.")]
    assert len(leftovers) == 1  # each run removed the previous run's leftover: they never pile up
    if kind == "file":
        assert not dest.exists()
        with atomic_target(dest) as tmp:
            Path(tmp).write_bytes(b"whole")
        assert dest.read_bytes() == b"whole"
    else:
        assert json.loads((dest / "eval.json").read_text()) == {"old": 1}  # never a mix
        with atomic_directory(dest) as tmp:
            (tmp / "eval.json").write_text('{"new": 1}')
        assert json.loads((dest / "eval.json").read_text()) == {"new": 1}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{dest.name}.")] == []


def test_temp_of_a_live_writer_is_kept(tmp_path):
    from netx_export import fileio

    dest = tmp_path / "a.net"
    live = tmp_path / f".a.net.{fileio._host()}.{os.getpid()}-zzzz.tmp"
    foreign = tmp_path / ".a.net.otherhost.1-zzzz.tmp"
    unrelated = tmp_path / ".b.net.x.1-zz.tmp"
    for p in (live, foreign, unrelated):
        p.write_text("x")
    fileio.clean_stale(dest)
    assert live.exists() and foreign.exists() and unrelated.exists()
    os.utime(foreign, (0, 0))  # older than a day: removed whatever its host
    fileio.clean_stale(dest)
    assert not foreign.exists() and live.exists() and unrelated.exists()


def test_failed_directory_write_leaves_the_old_results(tmp_path):
    from netx_export.fileio import atomic_directory

    dest = tmp_path / "res"
    dest.mkdir()
    (dest / "eval.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(dest) as tmp:
            (tmp / "accuracy_vs_T.png").write_bytes(b"new plot")
            raise RuntimeError("plotting failed")
    assert sorted(p.name for p in dest.iterdir()) == ["eval.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


# ---------------------------------------------------------------------------------------------------------
# class 6: every unsupported node listed; one-line messages
# ---------------------------------------------------------------------------------------------------------

def test_unsupported_error_lists_a_batchnorm_after_a_flatten_of_a_bad_chain(tmp_path, capsys):
    (tmp_path / "bad7.py").write_text(
        "import torch.nn as nn\n\ndef make():\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU(), nn.Conv2d(4, 4, 3), nn.Sigmoid(), nn.Flatten(),\n"
        "                         nn.BatchNorm1d(16), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 8), nn.ELU(),\n"
        "                         nn.Linear(8, 8), nn.Hardswish(), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 3))\n")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 6, 6), np.float32))
    code = cli.main(["convert", "--model", f"{tmp_path}/bad7.py:make", "--data", str(tmp_path / "d.npz"), "--out",
                     str(tmp_path / "o.net"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "7 unsupported node(s)" in err, err
    for word in ("GELU", "Sigmoid", "BatchNorm1d", "Tanh", "ELU", "Hardswish", "SiLU"):
        assert word in err, word
    assert "Traceback" not in err
