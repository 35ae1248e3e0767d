"""The library surface (``import netx_export as nx``, ``import msat_lava as ml``), from a fresh interpreter:
the README's Python API works as written, importing the packages pulls in neither torch nor Lava, and the
CLI takes no abbreviated options."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _fresh(code: str, tmp_path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_imports_are_cheap_and_names_resolve(tmp_path):
    out = _fresh("""
import json, sys
import netx_export as nx, msat_lava as ml
heavy = [m for m in ("torch", "lava") if m in sys.modules]
names = {n: callable(getattr(nx, n)) for n in ("convert", "load", "summary", "write_nir", "read_nir")}
names.update({"ml." + n: callable(getattr(ml, n)) for n in ("load", "to_program", "simulate", "verify", "run_lava",
                                                             "preflight", "evaluate", "Loihi2Constraints")})
import msat_lava.verify  # binds the submodule to the attribute: still callable
names["ml.verify after submodule import"] = callable(ml.verify)
try:
    nx.no_such_name
    missing = False
except AttributeError:
    missing = True
print(json.dumps({"heavy": heavy, "names": names, "missing_raises": missing}))
""", tmp_path)
    assert out["heavy"] == []
    assert all(out["names"].values()), out["names"]
    assert out["missing_raises"]


def test_readme_python_api_end_to_end(tmp_path):
    """convert → save → load → simulate (fixed) → verify in Lava: bit-exact; the same predictions as the
    explicit module path (netx_export.api / msat_lava.reference)."""
    pytest.importorskip("lava")
    out = _fresh("""
import json
import numpy as np, torch, torch.nn as nn
import netx_export as nx, msat_lava as ml
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5)).eval()
x = np.random.default_rng(0).uniform(0, 1, (16, 1, 4, 4)).astype(np.float32)
net = nx.convert(model, x, method="msat", progress=False)
net.save("m.net")
net2 = nx.load("m.net")
res = ml.simulate(net2, x[:4], 12, precision="fixed", progress=False)
from msat_lava.program import from_converted
from msat_lava.reference import simulate
want = simulate(from_converted(net), x[:4], 12, precision="fixed", progress=False)
rep = ml.verify(net2, x[:3], 8)
print(json.dumps({"same": bool(np.array_equal(res.predictions, want.predictions)),
                  "bit_exact": bool(rep.bit_exact), "layers": len(nx.summary(net2)["layers"])}))
""", tmp_path)
    assert out["same"] and out["bit_exact"]
    assert out["layers"] >= 2


def _readme_python_block() -> str:
    import re

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "the README has one Python API block"
    return blocks[0]


def test_readme_python_block_runs_as_written(tmp_path):
    """The README's Python block itself (not a copy), after a prelude that defines ``model``, ``x_calib``, ``x``,
    ``y``: every line runs; the names it binds hold what the comments say."""
    pytest.importorskip("lava")
    prelude = """
import numpy as np, torch, torch.nn as nn
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5)).eval()
rng = np.random.default_rng(0)
x_calib = rng.uniform(0, 1, (24, 1, 4, 4)).astype(np.float32)
x = rng.uniform(0, 1, (20, 1, 4, 4)).astype(np.float32)
y = rng.integers(0, 5, 20)
"""
    epilogue = """
import json, os
print(json.dumps({"bit_exact": bool(rep.bit_exact), "pred_shape": list(res.predictions.shape),
                  "curve": len(ev.accuracy("p99.9+h+bs4", "fixed")), "eval_json": os.path.exists("eval_out/eval.json"),
                  "nir_nodes": len(list(graph)), "runs": sorted(r["method"] for r in ev.manifest["runs"]),
                  "pre_ok": pre.ok, "pre_layers": len(pre.plan.layers), "pre_cores": pre.plan.cores,
                  "pre_json": sorted(pre.to_dict())[:3]}))
"""
    out = _fresh(prelude + _readme_python_block() + epilogue, tmp_path)
    assert out["bit_exact"] and out["pred_shape"] == [64, 20]
    assert out["curve"] == 32 and out["eval_json"] and out["nir_nodes"] >= 3
    assert out["runs"] == ["const", "p99.9+h+bs4"]
    assert out["pre_ok"] and out["pre_layers"] >= 3 and out["pre_cores"] >= 2


def test_preflight_equals_deploy_check_and_takes_overrides():
    """ml.preflight(net) is the report `deploy --check` builds (same plan, widths and violations); a mapping of
    overrides is the --set form; anything else is refused by type."""
    import _nets
    import msat_lava as ml
    from msat_lava.deploy import preflight
    from msat_lava.loihi2.constraints import Loihi2Constraints

    net = _nets.convert("mlp", "msat").net
    default = ml.preflight(net)
    assert default.to_dict() == preflight(net, ml.to_program(net)).to_dict()
    tight = ml.preflight(net, {"neuron_slots_per_core": 8, "chips": 1, "cores_per_chip": 2})
    assert tight.to_dict() == preflight(net, ml.to_program(net), Loihi2Constraints(
        neuron_slots_per_core=8, chips=1, cores_per_chip=2)).to_dict()
    assert tight.plan.cores > default.plan.cores and not tight.ok
    assert any(v.resource == "chips" for v in tight.violations)
    with pytest.raises(TypeError, match="constraints"):
        ml.preflight(net, "chips=8")


def test_cli_refuses_abbreviated_options(capsys):
    from msat_lava import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["eval", "x.net", "--data", "d.npz", "--steps", "4", "--calib", "f.npz"])
    assert info.value.code == 2
    assert "unrecognized arguments: --calib" in capsys.readouterr().err


def test_convert_warns_when_raw_msat_thresholds_are_tiny():
    """The README's ResNet20 example reads 10 % at T = 64 with raw-unit MSAT; the summary says why, from the
    closed form θ_q/λ = σ(τ_mp(k_a ln 2 − λ) + τ_rd) — large λ warns, λ ≈ 1 and normalized units do not."""
    import math

    import numpy as np

    from netx_export import api, ir
    from netx_export.quantize import quantize

    rng = np.random.default_rng(0)
    g = ir.Graph((ir.Input("x", shape=(4,)), ir.Linear("l0", ("x",), weight=rng.normal(size=(3, 4)), bias=None),
                  ir.Relu("r0", ("l0",)), ir.Linear("out", ("r0",), weight=rng.normal(size=(2, 3)), bias=None)))
    big = quantize(g, {"r0": 20.0}, input_scale=1.0, method="msat", preset="resnet20")
    want = 1 / (1 + math.exp(-(0.5 * (math.log(2) - 20.0) + 0.5)))
    assert abs(api.quiescent_theta_ratio(big.neurons["r0"]) - want) < 1e-15
    warned = [w for w in api.summary(big)["warnings"] if "quiescent MSAT threshold" in w]
    assert len(warned) == 1 and "r0" in warned[0] and "--msat-units normalized" in warned[0]
    row = next(r for r in api.summary(big)["layers"] if r["name"] == "r0")
    assert row["theta_q_over_lambda"] == api.quiescent_theta_ratio(big.neurons["r0"])
    from msat_lava.cli_convert import format_summary

    table = format_summary(api.summary(big)).splitlines()
    assert "θq/λ" in table[1] and f"{want:.2g}" in next(line for line in table if line.startswith("r0 "))
    const = api.summary(quantize(g, {"r0": 20.0}, input_scale=1.0, method="const"))
    assert const["layers"][0]["theta_q_over_lambda"] is None and "θq/λ" not in format_summary(const)
    for net in (quantize(g, {"r0": 1.0}, input_scale=1.0, method="msat", preset="resnet20"),
                quantize(g, {"r0": 20.0}, input_scale=1.0, method="msat", preset="resnet20", msat_units="normalized"),
                quantize(g, {"r0": 20.0}, input_scale=1.0, method="const")):
        assert not [w for w in api.summary(net)["warnings"] if "quiescent" in w]
