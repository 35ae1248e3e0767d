"""``msat-lava info / run / verify`` on plain lava-dl netx files (issue 18), and the rule that tells them apart
from msat-lava network files (``msat_lava.netx_peer.network_file_kind``, docs/FORMAT.md §2.1).

Expectations come from outside our code: lava-dl's golden recordings of ``$MSAT_SHARED_DATA/netx_peer`` (README
there: procedures and shapes), the files' own HDF5 fields read with h5py, and Lava's own run of lava-dl's netx
(``verify``). Golden tests skip when the shared data is absent, like tests/test_netx_peer.py.
"""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from msat_lava import netx_peer as nxp
from msat_lava.cli import main
from netx_export.errors import FormatError
from test_netx_peer import PILOT, PILOT_NAMES, TINY, needs_peer  # the shared data's paths and skip rule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEADLINE = "plain netx file (lava-dl CUBA), simulated with msat_lava.netx_peer"


def _cli(capsys, argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line and ": warning: " not in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# =========================================================================================================
# the rule
# =========================================================================================================

def test_network_file_kind_rule():
    netx = {"layer": "group", "layer/0": "group", "layer/0/neuron": "group", "layer/0/shape": "dataset"}
    assert nxp.network_file_kind(netx) == nxp.NETX_FILE
    assert nxp.network_file_kind({**netx, "simulation": "group"}) == nxp.NETX_FILE
    # any /msat member makes it ours, whole or not, group or not
    for msat in ({"msat": "group"}, {"msat": "dataset"}, {"msat": "group", "msat/graph": "group"}):
        assert nxp.network_file_kind({**netx, **msat}) == nxp.MSAT_FILE
        assert nxp.network_file_kind(msat) == nxp.MSAT_FILE
    # what msat-lava's writer leaves without /msat: an input layer without neurons (FORMAT.md §3)
    ours_without_msat = {"layer": "group", "layer/0": "group", "layer/0/type": "dataset", "layer/0/shape": "dataset"}
    with pytest.raises(FormatError, match="damaged msat-lava network file") as info:
        nxp.network_file_kind(ours_without_msat, "x.net")
    assert info.value.field == "msat" and info.value.path == "x.net"
    with pytest.raises(FormatError, match="not a network file") as info:
        nxp.network_file_kind({"simulation": "group"}, "y.net")
    assert info.value.field == "layer"


@pytest.fixture(scope="module")
def msat_file(tmp_path_factory):
    from test_hdf5 import chain_net

    from netx_export import hdf5

    root = tmp_path_factory.mktemp("netx_peer_cli")
    path = hdf5.write(chain_net(), root / "chain.net")
    rng = np.random.default_rng(0)
    np.savez(root / "chain_data.npz", x=rng.normal(size=(3, 2, 6, 5)).astype(np.float32))
    # a bias file of the /layer input's shape (C, H, W) = (2, 6, 5): what a netx run of the file would take
    np.save(root / "bias_whc.npy", np.full((5, 6, 2), 30, np.int64))
    return path


def _delete_msat(f):
    del f["msat"]


def _empty_msat(f):
    for key in list(f["msat"].keys()):
        del f["msat"][key]


def _delete_graph(f):
    del f["msat/graph"]


def _rename_msat(f):
    f.move("msat", "msat_old")


def _delete_msat_and_input(f):  # /layer/1.. stays: still ours, refused
    del f["msat"]
    del f["layer/0"]


@pytest.mark.parametrize("damage, field", [(_delete_msat, "msat"), (_empty_msat, "msat"), (_delete_graph, "msat"),
                                           (_rename_msat, "msat"), (_delete_msat_and_input, "layer")])
def test_damaged_msat_file_is_refused_not_run_as_netx(msat_file, tmp_path, capsys, damage, field):
    """The chain file's /layer is a loadable netx view (lava-dl would build it): with its /msat gone or damaged
    it must be refused by every command, naming the file and a field, never simulated as a netx network."""
    with h5py.File(msat_file, "r") as f:
        assert f["msat/netx/loadable"][()] == 1 and "neuron" not in f["layer/0"]
    case = tmp_path / "damaged.net"
    shutil.copyfile(msat_file, case)
    with h5py.File(case, "r+") as f:
        damage(f)
    bias = msat_file.parent / "bias_whc.npy"
    data = msat_file.parent / "chain_data.npz"
    for argv in (["info", case], ["info", case, "--json"], ["run", case, "--data", bias, "--steps", 4],
                 ["run", case, "--data", data, "--steps", 4], ["verify", case, "--data", bias, "--steps", 4],
                 ["netx-run", case, "--bias", bias]):
        code, out, err = _cli(capsys, argv)
        assert code == 2, (argv, out, err)
        line = _one_line(err)
        assert str(case) in line and f"field '{field}" in line, line
        assert HEADLINE not in out and "spikes per sample" not in out
    with pytest.raises(FormatError):
        nxp.read_netx(case)
    # the undamaged file is an msat-lava file for every entry point
    assert nxp.read_network_file(msat_file)[0] == nxp.MSAT_FILE
    with pytest.raises(FormatError, match="an msat-lava network file") as info:
        nxp.read_netx(msat_file)
    assert info.value.field == "msat"
    code, out, _ = _cli(capsys, ["info", msat_file])
    assert code == 0 and "method const" in out and HEADLINE not in out


def test_netx_only_options_refused_on_msat_file(msat_file, capsys):
    data = msat_file.parent / "chain_data.npz"
    for argv, option in ((["run", "--reset-interval", 4], "--reset-interval"),
                         (["run", "--reset-offset", 1], "--reset-offset"),
                         (["run", "--record", 1], "--record"), (["run", "--state"], "--state"),
                         (["verify", "--reset-interval", 4], "--reset-interval")):
        code, _, err = _cli(capsys, [argv[0], msat_file, "--data", data, "--steps", 3, *argv[1:]])
        assert code == 2
        line = _one_line(err)
        assert line.startswith(f"msat-lava {argv[0]}: error: {option}: applies to plain netx files only"), line


# =========================================================================================================
# info
# =========================================================================================================

@needs_peer
@pytest.mark.parametrize("path", [TINY / "tiny.net", PILOT / "network.net"], ids=["tinynet", "pilotnet_lif"])
def test_info_layer_table(path, capsys):
    code, out, err = _cli(capsys, ["info", path])
    assert code == 0, err
    assert out.splitlines()[0].startswith(HEADLINE)
    assert "reset interval: none stored in the file" in out
    code, out, _ = _cli(capsys, ["info", path, "--json"])
    assert code == 0
    info = json.loads(out)
    assert info["file_kind"] == "netx" and info["simulator"] == "msat_lava.netx_peer"
    # every non-flatten layer of the file, with the file's own fields (read here with h5py)
    with h5py.File(path, "r") as f:
        groups = [f[f"layer/{i}"] for i in range(len(f["layer"]))]
        spiking = [(i, g) for i, g in enumerate(groups) if g["type"][0] != b"flatten"]
        assert [row["layer"] for row in info["layers"]] == [i for i, _ in spiking]
        for row, (i, g) in zip(info["layers"], spiking):
            assert row["kind"] == g["type"][0].decode()
            shape = [int(v) for v in g["shape"][()]]
            assert row["shape"] == (shape if row["kind"] != "dense" else [shape[0]])
            assert row["neurons"] == int(np.prod(shape))
            n = g["neuron"]
            assert (row["neuron"]["iDecay"], row["neuron"]["vDecay"], row["neuron"]["vThMant"]) == (
                int(n["iDecay"][()]), int(n["vDecay"][()]), int(n["vThMant"][()]))
            assert row["neuron"]["threshold"] == int(n["vThMant"][()]) << 6
            if "weight" in g and row["kind"] != "input":
                w = g["weight"][()]
                assert int(np.prod(row["weight_shape"])) == w.size and row["weight_min"] == int(w.min())
                assert row["weight_max"] == int(w.max())
                assert -(1 << (row["weight_bits"] - 1)) <= w.min() and w.max() < 1 << (row["weight_bits"] - 1)
                assert not (-(1 << (row["weight_bits"] - 2)) <= w.min() and w.max() < 1 << (row["weight_bits"] - 2))
        assert info["simulation"] == {"Ts": int(f["simulation/Ts"][()]), "tSample": int(f["simulation/tSample"][()])}
    # Lava's neuron order of every spiking layer: the golden recordings' shapes (README table)
    golden = ({0: "input", 1: "layer1", 2: "output"} if path.parent == TINY else dict(enumerate(PILOT_NAMES)))
    for k, row in enumerate(info["layers"]):
        g = np.load(path.parent / f"{golden[k]}.npy", mmap_mode="r") if (path.parent / f"{golden[k]}.npy").is_file() \
            else None
        if g is None:
            continue
        if path.parent == TINY:  # (1, C, H, W, T)
            assert row["shape"] == list(g.shape[1:4]) or row["shape"] == [g.shape[1]], (k, g.shape)
        else:                    # (W, H, C, T) / (N, T)
            assert row["shape_lava"] == list(g.shape[:-1]), (k, g.shape)


# =========================================================================================================
# run
# =========================================================================================================

@needs_peer
def test_run_tinynet_equals_golden_output(tmp_path, capsys):
    """lava-dl's test_tinynet procedure (README): 17 + 3 steps, reset every 17 (netx reset_interval 17, offset 0);
    output steps 2..16 == output.npy[0] in (W, H, C, T) without its first step. netx-run (the alias) writes the
    same arrays."""
    out = tmp_path / "tiny.npz"
    code, stdout, err = _cli(capsys, ["run", TINY / "tiny.net", "--data", TINY / "input_bias.npy", "--steps", 20,
                                      "--reset-interval", 17, "--record", 0, 1, 2, "--predictions", out, "--json"])
    assert code == 0, err
    summary = json.loads(stdout)
    with np.load(out) as z:
        spikes = {k: z[f"spikes_{k}"] for k in range(3)}
        assert z["indices"].tolist() == [0]
    gt = np.load(TINY / "output.npy")[0].transpose(2, 1, 0, 3)[..., 1:]
    assert spikes[2].shape == (1, 1, 1, 36, 20)
    assert int((spikes[2][0][..., 2:17] != gt.astype(bool)).sum()) == 0 and gt.sum() > 50
    assert summary["spike_counts"] == {str(k): [int(spikes[k].sum())] for k in range(3)}
    assert summary["output_spikes_per_neuron"] == [spikes[2][0].sum(axis=-1).reshape(-1).tolist()]
    code, stdout, _ = _cli(capsys, ["run", TINY / "tiny.net", "--data", TINY / "input_bias.npy", "--steps", 20,
                                    "--reset-interval", 17])
    assert code == 0 and stdout.startswith(HEADLINE.replace("netx file", "netx file tiny.net"))
    alias = tmp_path / "alias.npz"
    code, _, err = _cli(capsys, ["netx-run", TINY / "tiny.net", "--bias", TINY / "input_bias.npy", "--steps", 20,
                                 "--reset-interval", 17, "--record", 0, 1, 2, "--out", alias])
    assert code == 0, err
    with np.load(alias) as z:
        assert all(np.array_equal(z[f"spikes_{k}"], spikes[k]) for k in range(3))


@needs_peer
def test_run_pilotnet_lif_equals_golden_recordings(tmp_path, capsys):
    """PilotNet-LIF, 24 steps, netx reset_interval 17 (the golden procedure, see test_netx_peer): the spikes of
    input, conv-0..4, fc-0..2 and the u of conv-1..4, fc-0..2 written by ``run --record --state`` equal lava-dl's
    golden recordings (fc-3 was recorded apart, test_netx_peer.py::test_pilotnet_lif_fc3)."""
    out = tmp_path / "pilot.npz"
    code, _, err = _cli(capsys, ["run", PILOT / "network.net", "--data", PILOT / "image.npy", "--steps", 24,
                                 "--reset-interval", 17, "--record", *range(10), "--state", "--predictions", out])
    assert code == 0, err
    spike_diff, u_diff = {}, {}
    with np.load(out) as z:
        for k, name in enumerate(PILOT_NAMES[:-1]):
            gold = np.load(PILOT / f"{name}.npy")
            assert z[f"spikes_{k}"][0].shape == gold.shape and gold.sum() > 0
            spike_diff[name] = int((z[f"spikes_{k}"][0] != gold).sum())
            if (PILOT / f"{name}-u.npy").is_file():
                u_diff[name] = int((z[f"u_{k}"][0] != np.load(PILOT / f"{name}-u.npy")).sum())
    assert spike_diff == {name: 0 for name in PILOT_NAMES[:-1]}
    assert sorted(u_diff) == PILOT_NAMES[2:-1] and u_diff == {name: 0 for name in u_diff}


@needs_peer
def test_run_batch_and_samples(tmp_path, capsys):
    """A (B, W, H, C) bias file runs at once; --samples takes the strided subset; each sample as if alone."""
    bias = np.load(TINY / "input_bias.npy").astype(np.int64)
    batch = np.stack([bias, bias // 2, np.zeros_like(bias), bias])
    np.save(tmp_path / "batch.npy", batch)
    out = tmp_path / "b.npz"
    code, stdout, err = _cli(capsys, ["run", TINY / "tiny.net", "--data", tmp_path / "batch.npy", "--steps", 20,
                                      "--reset-interval", 17, "--samples", 2, "--record", 0, 2, "--predictions",
                                      out, "--json"])
    assert code == 0, err
    assert json.loads(stdout)["indices"] == [0, 2]
    gt = np.load(TINY / "output.npy")[0].transpose(2, 1, 0, 3)[..., 1:]
    with np.load(out) as z:
        s, s0 = z["spikes_2"], z["spikes_0"]
    assert s.shape[0] == 2 and np.array_equal(s[0][..., 2:17], gt.astype(bool))
    # sample 2 has zero drive: the input layer (no synapse, bias 0) never exceeds its threshold
    assert s0[0].any() and not s0[1].any()


# =========================================================================================================
# refusals
# =========================================================================================================

@needs_peer
@pytest.mark.parametrize("command, extra, option", [
    ("run", ["--input-scale", 2], "--input-scale"), ("run", ["--norm-mean", "0.5"], "--norm-mean"),
    ("run", ["--norm-std", "0.5"], "--norm-std"), ("run", ["--split", "test"], "--split"),
    ("run", ["--report-steps", "1,2"], "--report-steps"), ("run", ["--backend", "lava-fixed"], "--backend lava-fixed"),
    ("run", ["--backend", "ref-float"], "--backend ref-float"),
    ("verify", ["--no-float"], "--no-float"), ("verify", ["--against", "rec.npz"], "--against"),
    ("verify", ["--split", "train"], "--split"), ("verify", ["--input-scale", 3], "--input-scale"),
])
def test_options_without_meaning_are_refused(command, extra, option, capsys):
    code, out, err = _cli(capsys, [command, TINY / "tiny.net", "--data", TINY / "input_bias.npy", "--steps", 3,
                                   *extra])
    assert code == 2
    line = _one_line(err)
    assert line.startswith(f"msat-lava {command}: error: {option}: does not apply to a plain netx file"), line
    assert "spikes per sample" not in out and "BIT-EXACT" not in out


@needs_peer
def test_bad_bias_files_are_refused(tmp_path, capsys):
    np.save(tmp_path / "wrong.npy", np.zeros((3, 16, 16), np.int64))
    np.save(tmp_path / "big.npy", np.full((16, 16, 3), 5000, np.int64))
    np.save(tmp_path / "frac.npy", np.full((16, 16, 3), 0.5))
    for name, message in (("wrong.npy", "expected shape (16, 16, 3)"), ("big.npy", "13-bit"),
                          ("frac.npy", "integers"), ("absent.npy", "no such file")):
        for command in ("run", "verify"):
            code, _, err = _cli(capsys, [command, TINY / "tiny.net", "--data", tmp_path / name, "--steps", 3])
            assert code == 2
            line = _one_line(err)
            assert "--data" in line and str(tmp_path / name) in line and message in line, line


def _vth_too_big(f):
    del f["layer/1/neuron/vThMant"]
    f["layer/1/neuron"].create_dataset("vThMant", data=np.int64(1 << 17))


def _no_weight(f):
    del f["layer/2/weight"]


def _nan_bias(f):
    f["layer/1/bias"][0] = np.nan


@needs_peer
@pytest.mark.parametrize("corrupt, field", [(_vth_too_big, "layer/1/neuron/vThMant"), (_no_weight, "layer/2/weight"),
                                            (_nan_bias, "layer/1/bias"), ("truncate", None)])
def test_corrupted_netx_file_exit_2(tmp_path, capsys, corrupt, field):
    case = tmp_path / "tiny_bad.net"
    if corrupt == "truncate":
        raw = (TINY / "tiny.net").read_bytes()
        case.write_bytes(raw[: len(raw) // 2])
    else:
        shutil.copyfile(TINY / "tiny.net", case)
        case.chmod(0o644)
        with h5py.File(case, "r+") as f:
            corrupt(f)
    for argv in (["info", case], ["run", case, "--data", TINY / "input_bias.npy", "--steps", 3],
                 ["verify", case, "--data", TINY / "input_bias.npy", "--steps", 3]):
        code, out, err = _cli(capsys, argv)
        assert code == 2, (argv, err)
        line = _one_line(err)
        assert str(case) in line, line
        if field is not None:
            assert f"field '{field}'" in line, line


# =========================================================================================================
# verify: Lava's own run of lava-dl's netx against ours
# =========================================================================================================

def _values_compared(path, steps: int, batch: int) -> int:
    """Spikes of every non-flatten layer at every step plus final u and v, from the file's shapes (h5py)."""
    with h5py.File(path, "r") as f:
        neurons = [int(np.prod(f[f"layer/{i}/shape"][()])) for i in range(len(f["layer"]))
                   if f[f"layer/{i}/type"][0] != b"flatten"]
    return sum(neurons) * batch * (steps + 2)


@needs_peer
@pytest.mark.lava
@pytest.mark.timeout(300)
def test_verify_tinynet_bit_exact(tmp_path, capsys):
    """Two samples (the golden input and a weaker drive), each its own Lava run: 0 mismatches."""
    bias = np.load(TINY / "input_bias.npy").astype(np.int64)
    np.save(tmp_path / "two.npy", np.stack([bias, bias // 2]))
    report_path = tmp_path / "verify.json"
    code, out, err = _cli(capsys, ["verify", TINY / "tiny.net", "--data", tmp_path / "two.npy", "--steps", 20,
                                   "--reset-interval", 17, "--report", report_path])
    assert code == 0, out + err
    assert "BIT-EXACT" in out and "mismatches: 0 of" in out
    report = json.loads(report_path.read_text())
    assert report["bit_exact"] and report["divergence"] is None
    assert report["network"]["mismatches"] == 0 and all(s["mismatches"] == 0 for s in report["stages"])
    assert report["network"]["compared"] == _values_compared(TINY / "tiny.net", 20, 2) and report["n_samples"] == 2
    assert [s["kind"] for s in report["stages"][:3]] == ["u (final)", "v (final)", "spikes"]


@needs_peer
@pytest.mark.lava
@pytest.mark.timeout(600)
def test_verify_pilotnet_lif_bit_exact(capsys):
    code, out, err = _cli(capsys, ["verify", PILOT / "network.net", "--data", PILOT / "image.npy", "--steps", 24,
                                   "--reset-interval", 17, "--json"])
    assert code == 0, out[-2000:] + err
    report = json.loads(out)
    assert report["bit_exact"] and report["n_samples"] == 1 and report["steps"] == 24
    assert report["network"]["mismatches"] == 0
    assert report["network"]["compared"] == _values_compared(PILOT / "network.net", 24, 1)
    assert len(report["stages"]) == 3 * 10


@needs_peer
def test_verify_mismatch_exit_1_and_first_divergence(monkeypatch, tmp_path, capsys):
    """A Lava side that differs in one spike of layer 1 at step 6 of sample 1 and in one final v of layer 2: exit
    1, the first divergence (in causal order) is the spike, each difference counted. The Lava run is replaced by
    our own run with those two values changed, so this needs no Lava run (only the module)."""
    pytest.importorskip("lava.lib.dl.netx")
    from msat_lava.lava import netx_peer_lava

    net = nxp.read_netx(TINY / "tiny.net")
    bias = np.load(TINY / "input_bias.npy").astype(np.int64)
    np.save(tmp_path / "two.npy", np.stack([bias, bias]))
    rec = nxp.NetxSimulator(net, reset_interval=17).run(np.stack([bias, bias]), 20, record_layers=range(3),
                                                        record_state=True)
    spikes = {k: rec.spikes[k].astype(np.int64) for k in range(3)}
    u = {k: rec.u[k][..., -1].astype(np.int64) for k in range(3)}
    v = {k: rec.v[k][..., -1].astype(np.int64) for k in range(3)}
    was = int(rec.spikes[1][1, 2, 3, 4, 6])
    spikes[1][1, 2, 3, 4, 6] = 1 - was
    v[2][0, 0, 0, 5] += 64
    fake = type("Run", (), {"spikes": spikes, "u": u, "v": v, "wall_s": 0.0, "run_s": 0.0, "steps": 20})()
    monkeypatch.setattr(netx_peer_lava, "run_netx_lava", lambda *a, **k: fake)
    code, out, err = _cli(capsys, ["verify", TINY / "tiny.net", "--data", tmp_path / "two.npy", "--steps", 20,
                                   "--reset-interval", 17, "--json"])
    assert code == 1
    report = json.loads(out)
    assert not report["bit_exact"] and report["network"]["mismatches"] == 2
    d = report["divergence"]
    assert (d["stage"], d["kind"], d["step"], d["sample"], d["index"], d["lava"], d["reference"], d["mismatches"]) \
        == ("layer 1 spikes", "spikes", 6, 1, [2, 3, 4], 1 - was, was, 1)
    assert {s["name"]: s["mismatches"] for s in report["stages"] if s["mismatches"]} == {
        "layer 1 spikes": 1, "layer 2 v": 1}
    assert _one_line(err).startswith("msat-lava verify: MISMATCH: stage 'layer 1 spikes' (spikes) at step 6")
    # text mode: the same divergence, exit 1
    code, out, _ = _cli(capsys, ["verify", TINY / "tiny.net", "--data", tmp_path / "two.npy", "--steps", 20,
                                 "--reset-interval", 17])
    assert code == 1 and "MISMATCH" in out and "first divergence: stage 'layer 1 spikes'" in out
    assert "mismatches: 2 of" in out
    # only the final v differs: the divergence is there, at the last step
    spikes[1][1, 2, 3, 4, 6] = was
    report = nxp.compare_runs(net, fake, rec, reset_interval=17)
    d = report.divergence
    assert (d.stage, d.kind, d.step, d.sample, d.index, d.lava - d.reference) == ("layer 2 v", "v (final)", 19, 0,
                                                                                   (0, 0, 5), 64)
