"""``--config FILE.toml`` (convert, eval), ``--quiet`` / ``--debug`` after every subcommand (issue 16).

* a config file gives the same network file, byte for byte, as the same flags (convert is deterministic);
  required flags (``--data``, ``--out``, the ``--model`` group) may come from it; flags on the command line win
  (a repeatable flag given there replaces the file's list, one member of an exclusive group drops the file's);
* unknown key / wrong type / bad choice / oversized / not TOML: exit 2, one line naming the file (and the key);
* ``--quiet`` and ``--debug`` parse after every subcommand; ``--debug`` there shows the traceback as
  ``msat-lava --debug CMD`` does, and ``--quiet`` drops the progress lines of ``run`` but not its result.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from msat_lava import cli
from msat_lava.cli_common import CONFIG_MAX_BYTES, apply_config

pytestmark = pytest.mark.timeout(300)

COMMANDS = ["doctor", "convert", "info", "run", "verify", "demo", "eval", "deploy", "export-nir", "netx-run"]


@pytest.fixture
def no_debug_env():
    """main() sets MSAT_LAVA_DEBUG for --debug; each test starts and ends without it."""
    old = os.environ.pop("MSAT_LAVA_DEBUG", None)
    yield
    os.environ.pop("MSAT_LAVA_DEBUG", None)
    if old is not None:
        os.environ["MSAT_LAVA_DEBUG"] = old


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg")
    (root / "m.py").write_text("import torch, torch.nn as nn\n\ndef make():\n    torch.manual_seed(0)\n"
                               "    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))\n")
    rng = np.random.default_rng(0)
    np.savez(root / "d.npz", x=rng.uniform(-1, 1, (16, 4)).astype(np.float32))
    np.savez(root / "e.npz", x_train=rng.uniform(-1, 1, (16, 4)).astype(np.float32), y_train=rng.integers(0, 2, 16),
             x_test=rng.uniform(-1, 1, (6, 4)).astype(np.float32), y_test=rng.integers(0, 2, 6))
    return root


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def _parse(argv: list[str]):
    """The namespace main() would hand to the handler (config applied), without running it."""
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices[argv[0]]
    config = apply_config(sub, argv[1:])
    args = parser.parse_args(argv)
    return args, config


# ---------------------------------------------------------------------------------------------------------
# config = flags; flags override; required flags from the file
# ---------------------------------------------------------------------------------------------------------
def test_convert_config_equals_flags(model_dir, tmp_path, no_debug_env):
    d = model_dir
    flags = ["--model", f"{d}/m.py:make", "--data", str(d / "d.npz"), "--calib-samples", "8", "--method", "msat",
             "--preset", "vgg16", "--v-init", "0.25", "--percentile", "99.5", "--lambda", "percentile",
             "--sc-p", "_1=0.3", "--seed", "7", "--nonzero-only"]
    code, _, err = _main(["convert", *flags, "--out", str(tmp_path / "flags.net"), "--quiet"])
    assert code == 0, err
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'model = "{d}/m.py:make"\ndata = "{d / "d.npz"}"\ncalib_samples = 8\nmethod = "msat"\n'
                   'preset = "vgg16"\nv-init = 0.25\npercentile = 99.5\nlambda = "percentile"\n'
                   f'sc-p = ["_1=0.3"]\nseed = 7\nnonzero_only = true\nout = "{tmp_path / "cfg.net"}"\n'
                   'quiet = true\njson = true\n')
    code, out, err = _main(["convert", "--config", str(cfg)])  # --data, --out and the --model group: the file's
    assert code == 0, err
    assert (tmp_path / "cfg.net").read_bytes() == (tmp_path / "flags.net").read_bytes()
    summary = json.loads(out)  # json = true came from the file; the config is recorded in the summary
    assert summary["config"] == {"path": str(cfg), "sha256": hashlib.sha256(cfg.read_bytes()).hexdigest()}
    # a different value does change the file (the comparison above can fail)
    code, _, err = _main(["convert", "--config", str(cfg), "--seed", "8", "--out", str(tmp_path / "s8.net")])
    assert code == 0, err
    assert (tmp_path / "s8.net").read_bytes() != (tmp_path / "flags.net").read_bytes()


def test_flags_override_config(model_dir, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'model = "{model_dir}/m.py:make"\ndata = "d.npz"\nout = "o.net"\ncalib-samples = 8\n'
                   'method = "msat"\nsc-p = ["_1=0.3", "_3=0.1"]\nburst-scaled = true\n')
    args, config = _parse(["convert", "--config", str(cfg)])
    assert (args.calib_samples, args.method, args.sc_p, args.burst_scaled) == (8, "msat", ["_1=0.3", "_3=0.1"], True)
    assert args.model == f"{model_dir}/m.py:make" and args.exported is None and config["path"] == str(cfg)
    args, _ = _parse(["convert", "--config", str(cfg), "--calib-samples", "16", "--method", "const",
                      "--sc-p", "_1=0.5", "--out", "x.net", "--exported", "e.pt2"])
    assert (args.calib_samples, args.method, args.out) == (16, "const", "x.net")
    assert args.sc_p == ["_1=0.5"]  # the command line's list replaces the file's, is not appended to it
    assert args.exported == "e.pt2" and args.model is None  # the exclusive group's member from the command line
    args, _ = _parse(["convert", "--config", str(cfg), "--calib-samples=32"])
    assert args.calib_samples == 32
    # without --config nothing changes: required flags stay required
    with pytest.raises(SystemExit):
        _parse(["convert", "--model", "m.py:make", "--out", "o.net"])


def test_eval_config(model_dir, tmp_path, no_debug_env):
    d = model_dir
    code, _, err = _main(["convert", "--model", f"{d}/m.py:make", "--data", str(d / "d.npz"), "--method", "const",
                          "--calib-samples", "8", "--out", str(tmp_path / "n.net"), "--quiet"])
    assert code == 0, err
    flags = ["--data", str(d / "e.npz"), "--steps", "4", "--methods", "const,p99.9", "--calib-samples", "8",
             "--precision", "both", "--no-html", "--batch-size", "3"]
    code, out, err = _main(["eval", str(tmp_path / "n.net"), *flags, "--out", str(tmp_path / "e1"), "--quiet"])
    assert code == 0, err
    assert out.strip() and "wrote" not in out, out  # --quiet: the summary only
    cfg = tmp_path / "e.toml"
    cfg.write_text(f'data = "{d / "e.npz"}"\nsteps = 4\nmethods = "const,p99.9"\ncalib_samples = 8\n'
                   f'precision = "both"\nno-html = true\nbatch-size = 3\nout = "{tmp_path / "e2"}"\n')
    code, out2, err = _main(["eval", str(tmp_path / "n.net"), "--config", str(cfg), "--quiet"])  # --steps: file's
    assert code == 0, err
    assert out2 == out.replace(str(tmp_path / "e1"), str(tmp_path / "e2"))  # the same summary table
    m1, m2 = (json.loads((tmp_path / e / "eval.json").read_text()) for e in ("e1", "e2"))
    assert m1["config"]["precisions"] == ["fixed", "float"] and m1["config"]["steps"] == 4
    for key in ("config", "methods", "ann", "report_steps", "layers"):
        assert m1[key] == m2[key], key
    no_wall = [[{k: v for k, v in r.items() if k != "wall_s"} for r in m["runs"]] for m in (m1, m2)]
    assert len(no_wall[0]) == 4 and no_wall[0] == no_wall[1]  # 2 methods x 2 precisions, the same curves
    assert m2["arguments"]["config"] == {"path": str(cfg), "sha256": hashlib.sha256(cfg.read_bytes()).hexdigest()}
    assert m1["arguments"]["config"] is None
    args, _ = _parse(["eval", "n.net", "--config", str(cfg), "--steps", "2", "--precision", "fixed"])
    assert (args.steps, args.precision, args.batch_size) == (2, "fixed", 3)


# ---------------------------------------------------------------------------------------------------------
# refusals: exit 2, one line naming the file and the key
# ---------------------------------------------------------------------------------------------------------
BASE = 'model = "m.py:make"\ndata = "d.npz"\nout = "o.net"\n'


@pytest.mark.parametrize("text, words", [
    (BASE + "calib_samplez = 8\n", ["unknown key 'calib_samplez'", "calib_samples"]),
    (BASE + "net = 'x'\n", ["unknown key 'net'"]),
    (BASE + 'calib-samples = "8"\n', ["'calib-samples'", "number", "string"]),
    (BASE + "calib-samples = 8.5\n", ["'calib-samples'", "8.5"]),
    (BASE + "calib-samples = true\n", ["'calib-samples'", "boolean"]),
    (BASE + "burst-scaled = 1\n", ["'burst-scaled'", "true or false"]),
    (BASE + "seed = -1\n", ["'seed'", "seed must be in"]),
    (BASE + 'method = "nope"\n', ["'method'", "'nope'", "msat"]),
    (BASE + 'lambda = "median"\n', ["'lambda'", "'median'", "percentile"]),
    (BASE + 'sc-p = "_1=0.3"\n', ["'sc-p'", "array"]),
    (BASE + "sc-p = [1]\n", ["'sc-p'", "string"]),
    (BASE + "percentile = [99]\n", ["'percentile'", "array"]),
    (BASE + "[table]\nx = 1\n", ["unknown key 'table'"]),
    (BASE + "calib-samples = 8\ncalib_samples = 9\n", ["'calib_samples'", "'calib-samples'"]),
    (BASE + 'exported = "e.pt2"\n', ["'model'", "'exported'", "exclude"]),
    (BASE + "help = true\n", ["unknown key 'help'"]),
    (BASE + "config = 'other.toml'\n", ["unknown key 'config'"]),
    ("model = \n", ["not TOML"]),
    ("[[[", ["not TOML"]),
])
def test_bad_config_exit_2_one_line(tmp_path, text, words, no_debug_env):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    code, out, err = _main(["convert", "--config", str(cfg)])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err and "usage" not in err, err
    assert lines[0].startswith(f"msat-lava convert: error: --config '{cfg}'"), err
    for w in words:
        assert w in lines[0], (w, err)
    assert out == ""


def test_oversized_not_utf8_and_missing_config(tmp_path, no_debug_env):
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * CONFIG_MAX_BYTES + "\n")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"model = '\xff\xfe'\n")
    for path, word in ((big, "1 MiB"), (binary, "UTF-8"), (tmp_path / "missing.toml", "cannot read"),
                       (tmp_path, "not a regular file")):
        code, _, err = _main(["eval", "n.net", "--config", str(path)])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and f"--config '{path}'" in lines[0] and word in lines[0], err
    code, _, err = _main(["eval", "n.net", "--config", str(big), "--debug"])
    assert code == 2 and "Traceback" in err and "1 MiB" in err


def test_just_under_the_limit_is_read(tmp_path):
    ok = tmp_path / "ok.toml"
    ok.write_text("steps = 3\n" + "#" * (CONFIG_MAX_BYTES - 11) + "\n")
    assert ok.stat().st_size == CONFIG_MAX_BYTES
    args, config = _parse(["eval", "n.net", "--data", "d.npz", "--config", str(ok)])
    assert args.steps == 3 and config["sha256"] == hashlib.sha256(ok.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# --quiet and --debug after every subcommand
# ---------------------------------------------------------------------------------------------------------
def test_every_subcommand_is_listed():
    parser = cli.build_parser()
    assert sorted(parser._subparsers._group_actions[0].choices) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_quiet_and_debug_parse_after_every_subcommand(command):
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    quiet = sub._option_string_actions["--quiet"]
    assert cli.QUIET_FALLBACK not in quiet.help  # its add_*_parser says what --quiet drops
    need = {"doctor": [], "demo": [], "convert": ["--model", "m:f", "--data", "d", "--out", "o"],
            "run": ["n", "--data", "d", "--steps", "2"], "verify": ["n", "--data", "d"],
            "eval": ["n", "--data", "d", "--steps", "2"], "export-nir": ["n", "--out", "o"]}.get(command, ["n"])
    args = parser.parse_args([command, *need, "--quiet", "--debug"])
    assert args.quiet is True and args.debug is True
    args = parser.parse_args([command, *need])
    assert args.quiet is False and args.debug is False  # the top-level default, not overwritten by the command's
    args = parser.parse_args(["--debug", command, *need])
    assert args.debug is True


def _failing_argv(command: str, tmp: Path) -> list[str]:
    """argv that reaches the handler and fails on bad input (a missing file), exit 2."""
    missing = str(tmp / "missing.net")
    data = str(tmp / "missing.npz")
    (tmp / "afile").write_text("x")
    return {"convert": ["convert", "--model", f"{tmp}/missing.py:make", "--data", data, "--out", str(tmp / "o.net")],
            "info": ["info", missing], "run": ["run", missing, "--data", data, "--steps", "2"],
            "verify": ["verify", missing, "--data", data], "demo": ["demo", "--out", str(tmp / "afile")],
            "eval": ["eval", missing, "--data", data, "--steps", "2", "--out", str(tmp / "e")],
            "deploy": ["deploy", missing], "export-nir": ["export-nir", missing, "--out", str(tmp / "x.nir")],
            "netx-run": ["netx-run", missing]}[command]


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "doctor"])
def test_debug_after_a_subcommand_shows_the_traceback(command, tmp_path, no_debug_env):
    argv = _failing_argv(command, tmp_path)
    code, _, err = _main([*argv, "--quiet"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"msat-lava {command}: error:"), err
    code, _, err_sub = _main([*argv, "--quiet", "--debug"])
    assert code == 2 and "Traceback" in err_sub, err_sub
    os.environ.pop("MSAT_LAVA_DEBUG", None)
    code, _, err_top = _main(["--debug", *argv])
    assert code == 2 and "Traceback" in err_top, err_top
    assert err_sub.strip().splitlines()[-1] == err_top.strip().splitlines()[-1] == err.strip()


def test_quiet_drops_progress_not_results(tmp_path, no_debug_env):
    from netx_export import hdf5, ir
    from netx_export.quantize import quantize

    rng = np.random.default_rng(3)
    graph = ir.Graph((ir.Input("x", shape=(6,)), ir.Linear("l0", ("x",), weight=rng.normal(size=(5, 6)),
                                                           bias=rng.normal(size=5) * 0.1),
                      ir.Relu("r0", ("l0",)), ir.Linear("out", ("r0",), weight=rng.normal(size=(3, 5)),
                                                         bias=np.zeros(3))))
    net = hdf5.write(quantize(graph, {"r0": 1.5}, input_scale=1.0, method="const"), tmp_path / "t.net")
    np.savez(tmp_path / "d.npz", x=rng.uniform(-1, 1, (6, 6)).astype(np.float32), y=rng.integers(0, 3, 6))
    argv = ["run", str(net), "--data", str(tmp_path / "d.npz"), "--steps", "4"]
    code, loud, err = _main(argv)
    assert code == 0 and "running ref-fixed" in loud and "accuracy: T=" in loud, err
    code, quiet, err = _main([*argv, "--quiet"])
    assert code == 0, err
    assert "running" not in quiet and "network" not in quiet
    assert [x for x in quiet.splitlines() if x.startswith("accuracy")] == \
        [x for x in loud.splitlines() if x.startswith("accuracy")]
    code, out, err = _main(["info", str(net), "--quiet"])  # the table is info's result
    assert code == 0 and "spiking layers" in out, err


def test_readme_config_example_is_a_valid_convert_config(tmp_path):
    """The README's TOML block parses as a convert config and means the flags it replaces."""
    import re

    blocks = re.findall(r"```toml\n(.*?)```", (Path(__file__).resolve().parents[1] / "README.md").read_text(), re.S)
    assert len(blocks) == 1
    cfg = tmp_path / "readme.toml"
    cfg.write_text(blocks[0])
    args, _ = _parse(["convert", "--config", str(cfg)])
    assert (args.method, args.lambda_method, args.percentile, args.v_init, args.burst, args.burst_scaled) == \
        ("const", "percentile", 99.9, 0.5, 4, True)
    assert args.model == "tests/models.py:resnet20" and args.out == "resnet20.net"


def test_seed_only_where_the_readme_says():
    """--seed: convert, eval, demo (README: run/verify execute NET's own gate seed, the others draw nothing)."""
    parser = cli.build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert sorted(c for c, sub in choices.items() if "--seed" in sub._option_string_actions) == \
        ["convert", "demo", "eval"]
