"""``msat-lava deploy``: the pre-flight report on real converted files (widths broken on purpose, every
violation listed), exit codes and one-line errors, and the hardware branch with lava-loihi's presence faked:
Loihi2HwCfg is chosen for a constant-threshold netx export, MSAT is refused with the documented message, and
without lava-loihi --run says how to get access and runs the CPU simulation only with --sim."""
from __future__ import annotations

import json

import numpy as np
import pytest

import _nets
from msat_lava import cli
from msat_lava.backends import BackendUnavailable, Loihi2Backend, UnsupportedProgram
from msat_lava.deploy import preflight
from msat_lava.loihi2.constraints import Loihi2Constraints
from msat_lava.loihi2.microcode import MSAT_ON_HARDWARE, NO_LAVA_LOIHI, msat_layers
from msat_lava.loihi2.widths import check_widths, signed_bits
from netx_export import hdf5, ir
from netx_export.calibrate import calibrate
from netx_export.quantize import quantize


@pytest.fixture(scope="module")
def msat_net():
    return _nets.convert("resmix", "msat")


@pytest.fixture(scope="module")
def files(tmp_path_factory, msat_net):
    """An MSAT ResMix file, a constant-threshold dense chain (netx-loadable) and inputs for both."""
    d = tmp_path_factory.mktemp("deploy")
    hdf5.write(msat_net.net, d / "resmix.net")
    np.savez(d / "resmix.npz", x=_nets.random_inputs((3, 12, 12), 6, 3).astype(np.float32))
    rng = np.random.default_rng(7)
    g = ir.Graph((
        ir.Input("x", shape=(12,)),
        ir.Linear("l1", ("x",), weight=rng.normal(size=(10, 12)) * 0.5, bias=rng.normal(size=10) * 0.1),
        ir.Relu("r1", ("l1",)),
        ir.Linear("out", ("r1",), weight=rng.normal(size=(3, 10)), bias=rng.normal(size=3) * 0.1),
    ))
    data = rng.uniform(-1.5, 1.5, size=(64, 12))
    const = quantize(g, calibrate(g, data, progress=False), method="const")
    hdf5.write(const, d / "dense.net")
    np.savez(d / "dense.npz", x=data[:4].astype(np.float32), y=np.array([0, 1, 2, 0]))
    return d


def _cli(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------- widths
def test_width_violations_are_all_listed(msat_net):
    """payload 8 bits, weights 6 bits, state 16 bits: every neuron layer breaks payload and state, the input
    payload (|p_in| ≤ 2^15 − 1: 16 bits) breaks, and exactly the layers with a mantissa outside [−32, 31]
    break the weight width."""
    p = msat_net.program
    c = Loihi2Constraints(payload_bits=8, weight_bits=6, state_bits=16)
    rep = check_widths(p, c)
    got = {(v.layer, v.resource) for v in rep.violations}
    for s in p.neuron_stages:
        assert (s.name, "payload_bits") in got and (s.name, "state_bits") in got
    for s in p.stages:
        if s.kind == "lipool":
            assert (s.name, "payload_bits") in got
    assert ("input", "payload_bits") in got
    wide = {s.name for s in p.stages if s.kind != "lipool" and any(
        np.any((np.asarray(o.mant) < -32) | (np.asarray(o.mant) > 31))
        for t in s.terms for o in t.ops if o.mant is not None)}
    assert wide and {l for l, r in got if r == "weight_bits"} == wide
    assert all(v.layer in v.message for v in rep.violations)
    # the defaults fit: θ̂ ≤ 2^12 is 14 bits, p_in 16 bits, v̂ 24 bits
    ok = check_widths(p, Loihi2Constraints())
    assert not ok.violations
    assert max(r.payload_bits for r in ok.rows) == signed_bits(1 << 12) == 14


def test_measured_sums_and_saturation(msat_net):
    """A short reference run fills in the measured dendritic sums and the readout; a 12-bit accumulator is
    broken by the measured sums (a violation), while the worst case alone only warns."""
    x = _nets.random_inputs((3, 12, 12), 3, 9)
    c = Loihi2Constraints(accum_bits=12)
    rep = check_widths(msat_net.program, c, x=x, steps=8)
    assert rep.run == {"samples": 3, "steps": 8, "saturated": rep.run["saturated"], "input_clipped": 0}
    seen = {r.layer: r.accum_seen_bits for r in rep.rows if r.kind != "lipool"}
    assert all(b is not None and b >= 1 for b in seen.values())
    assert {v.layer for v in rep.violations if v.resource == "accum_bits"} == {
        k for k, b in seen.items() if b > 12}
    assert any(b > 12 for b in seen.values())
    readout = [r for r in rep.rows if r.kind == "readout"][0]
    assert readout.readout_seen_bits is not None


def test_preflight_report_lists_plan_and_width_violations_together(msat_net):
    c = Loihi2Constraints(payload_bits=8, neuron_slots_per_core=64, chips=1, cores_per_chip=4)
    rep = preflight(msat_net.net, msat_net.program, c, name="resmix")
    kinds = {v.resource for v in rep.violations}
    assert {"payload_bits", "chips"} <= kinds
    assert not rep.ok and rep.to_dict()["cores"] == rep.plan.cores
    assert rep.msat_layers == msat_layers(msat_net.program)


# ------------------------------------------------------------------------------------------- CLI
def test_deploy_check_text_and_json(files, capsys):
    code, out, err = _cli(capsys, "deploy", str(files / "resmix.net"))
    assert code == 0, err
    assert "Loihi 2 plan for" in out and "no violations" in out and "chip(s) needed" in out
    code, out, _ = _cli(capsys, "deploy", str(files / "resmix.net"), "--check", "--json")
    data = json.loads(out)
    assert code == 0 and data["check"]["ok"] and data["check"]["cores"] == sum(
        l["cores"] for l in data["check"]["plan"]["layers"])


def test_deploy_exit_1_lists_every_violation(files, capsys):
    code, out, err = _cli(capsys, "deploy", str(files / "resmix.net"), "--set", "payload_bits=8",
                          "--set", "state_bits=16", "--json")
    data = json.loads(out)
    assert code == 1
    n = len(data["check"]["violations"])
    assert n >= 2 * 5  # payload and state for each of the spiking layers
    code, out, _ = _cli(capsys, "deploy", str(files / "resmix.net"), "--set", "payload_bits=8",
                        "--set", "state_bits=16")
    assert code == 1 and f"VIOLATIONS ({n}):" in out


@pytest.mark.parametrize("extra, needle", [
    (("--set", "nope=1"), "unknown constraint 'nope'"),
    (("--constraints", "/nonexistent.json"), "constraints file '/nonexistent.json'"),
    (("--run",), "--run needs --data"),
])
def test_deploy_bad_input_exit_2_one_line(files, capsys, extra, needle):
    code, out, err = _cli(capsys, "deploy", str(files / "resmix.net"), *extra)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_deploy_unreadable_network_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.net"
    bad.write_bytes(b"not hdf5")
    code, out, err = _cli(capsys, "deploy", str(bad))
    assert code == 2 and str(bad) in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------- hardware branch
def test_without_lava_loihi_run_points_to_inrc_and_sim_is_explicit(files, capsys, tmp_path):
    from msat_lava.lava import loihi2 as hw

    assert hw.is_installed() is False  # this machine: no lava-loihi
    args = ("deploy", str(files / "dense.net"), "--run", "--data", str(files / "dense.npz"), "--steps", "8")
    code, out, err = _cli(capsys, *args)
    assert code == 2 and "INRC" in err and "--sim" in err and "Nothing was run" in err
    rec = tmp_path / "rec.npz"
    code, out, err = _cli(capsys, *args, "--sim", "--predictions", str(rec))
    assert code == 0
    assert "running the CPU fixed-point simulation" in err and "ran on reference" in out
    assert rec.exists()


def test_fake_lava_loihi_refuses_msat_with_the_documented_message(files, msat_net, monkeypatch, capsys):
    from msat_lava.lava import loihi2 as hw

    monkeypatch.setattr(hw, "is_installed", lambda: True)
    monkeypatch.setattr(hw, "run_netx", lambda *a, **k: pytest.fail("nothing may run"))
    layers = msat_layers(msat_net.program)
    with pytest.raises(UnsupportedProgram) as err:
        Loihi2Backend().check(msat_net.program, net=msat_net.net)
    assert str(err.value) == "backend loihi2: " + MSAT_ON_HARDWARE.format(
        layers=", ".join(layers[:6]) + (f", … {len(layers)} in all" if len(layers) > 6 else ""))
    code, out, err = _cli(capsys, "deploy", str(files / "resmix.net"), "--run", "--data", str(files / "resmix.npz"))
    assert code == 2
    assert "need a microcoded Loihi 2 NeuroCore model" in err and "docs/LOIHI2.md §5" in err
    assert NO_LAVA_LOIHI not in err


def test_no_lava_loihi_is_a_typed_error():
    prog = _nets.convert("mlp", "const").program
    with pytest.raises(BackendUnavailable) as err:
        Loihi2Backend().check(prog)
    assert NO_LAVA_LOIHI in str(err.value)


@pytest.mark.lava
@pytest.mark.timeout(120)
def test_fake_lava_loihi_builds_netx_with_loihi2hwcfg(files, monkeypatch, capsys, tmp_path):
    """A constant-threshold netx chain goes to Lava's own processes under Loihi2HwCfg (the run itself is
    faked: no chip here); the recorded predictions are the argmax of the readout the run returned."""
    from lava.magma.core.run_configs import Loihi2HwCfg

    from msat_lava.lava import loihi2 as hw

    seen = []

    def fake_execute(net, source, steps, run_cfg):
        seen.append((type(net).__name__, len(net.layers), run_cfg, steps))
        k = int(np.prod(net.layers[-1].neuron.v.shape))
        out = np.zeros((steps, k))
        out[:, len(seen) % k] = 1.0          # sample i predicts class (i+1) mod k
        return out

    monkeypatch.setattr(hw, "is_installed", lambda: True)
    monkeypatch.setattr(hw, "_execute", fake_execute)
    rec = tmp_path / "hw.npz"
    code, out, err = _cli(capsys, "deploy", str(files / "dense.net"), "--run", "--data", str(files / "dense.npz"),
                          "--steps", "5", "--predictions", str(rec), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["run"]["backend"] == "loihi2" and data["run"]["run_config"] == "Loihi2HwCfg"
    assert len(seen) == 4 and all(isinstance(cfg, Loihi2HwCfg) and name == "Network" and n == 2 and st == 5
                                  for name, n, cfg, st in seen)
    z = np.load(rec)
    np.testing.assert_array_equal(z["predictions"], np.tile(np.array([1, 2, 0, 1]), (5, 1)))
    assert "readout" not in z.files  # netx units are not the reference's readout


@pytest.mark.lava
@pytest.mark.timeout(180)
def test_run_netx_plumbing_on_the_cpu_simulator(files):
    """The code the hardware branch runs, under Loihi2SimCfg here: per-sample netx network, graded input,
    readout v read after every step; the last step's v equals the independent numpy model of the netx view
    (tests/test_netx_interop.py), and predictions are its argmax."""
    from test_netx_interop import _numpy_netx, _p_in, _read_layers

    from msat_lava.lava import loihi2 as hw

    net = hdf5.read(files / "dense.net")
    x = np.load(files / "dense.npz")["x"][:2].astype(np.float64)
    layers, bits = _read_layers(files / "dense.net")
    from msat_lava.program import quantize_input_np

    p_in, _ = quantize_input_np(x, net.input_scale, net.input_frac_bits)
    res = hw.run_netx(str(files / "dense.net"), p_in, 6, input_message_bits=bits, run_cfg=hw.sim_run_config(),
                      frac_bits=net.input_frac_bits)
    assert res.readout.shape == (6, 2, 3) and res.run_config == "Loihi2SimCfg"
    for i in range(2):
        want = _numpy_netx(layers, _p_in(net, x[i]), 6)
        np.testing.assert_array_equal(res.readout[-1, i], want[-1][1])
    np.testing.assert_array_equal(res.predictions, np.argmax(res.readout, axis=2))


@pytest.mark.parametrize("model", ["dtif-r", "bsnn-r"])
def test_registry_models_are_planned_and_refused_on_hardware(model, monkeypatch):
    """Neuron models other than MSAT are planned like any microcoded layer (their tables counted) and the
    Loihi 2 backend refuses them as it refuses MSAT."""
    from msat_lava.lava import loihi2 as hw
    from msat_lava.loihi2.microcode import format_requirements
    from msat_lava.loihi2.topology import from_program

    conv = _nets.convert("resmix", model)
    rep = preflight(conv.net, conv.program, name=model)
    assert rep.ok and rep.plan.cores >= len(conv.program.stages)
    desc = from_program(conv.program)
    assert {l.model for l in desc.layers if l.name in {s.name for s in conv.program.neuron_stages}} == {"msat"}
    assert set(rep.msat_layers) >= {s.name for s in conv.program.neuron_stages}
    text = format_requirements(rep.requirements)
    assert f"mode {model}" in text and "Ŝ" not in text
    monkeypatch.setattr(hw, "is_installed", lambda: True)
    with pytest.raises(UnsupportedProgram, match="non-const neuron model"):
        Loihi2Backend().check(conv.program, net=conv.net)
