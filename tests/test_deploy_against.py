"""``verify --against RECORDED_OUTPUT``: a recorded run compared with the fixed-point reference; injected
differences are found and the FIRST one in causal order (step, then stage order, then sample, then neuron)
is reported; malformed recordings are refused naming the key."""
from __future__ import annotations

import numpy as np
import pytest

import _nets
from msat_lava import cli
from msat_lava.reference import simulate
from msat_lava.verify import TRACE_PREFIX, load_recorded, save_recorded, verify_against
from netx_export import hdf5

T = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    conv = _nets.convert("resmix", "msat")
    d = tmp_path_factory.mktemp("against")
    x = _nets.random_inputs((3, 12, 12), 6, 4).astype(np.float32)
    np.savez(d / "d.npz", x=x)
    path = hdf5.write(conv.net, d / "n.net")
    ids = np.array([1, 3, 4])
    names = tuple(s.name for s in conv.program.stages if s.kind != "readout")
    ref = simulate(conv.program, x[ids].astype(np.float64), T, precision="fixed", sample_ids=ids, record=names,
                   record_readout=True, progress=False)
    return conv.program, x, ids, ref, path, d


def _save(path, ref, ids, traces=None, readout=True, predictions=None):
    save_recorded(path, predictions=ref.predictions if predictions is None else predictions, indices=ids,
                  readout=ref.readout if readout else None, traces=traces, steps=T, overwrite=True)


def test_identical_recording_is_bit_exact(setup, tmp_path):
    program, x, ids, ref, _, _ = setup
    _save(tmp_path / "r.npz", ref, ids, traces=ref.traces)
    rec = load_recorded(tmp_path / "r.npz", program)
    rep = verify_against(program, x[ids], rec)
    assert rep.bit_exact and rep.divergence is None
    assert rep.compared == [s.name for s in program.stages if s.kind != "readout"] + ["readout", "predictions"]


def test_first_injected_divergence_is_reported(setup, tmp_path):
    """Three injected changes: (t=5, first stage), (t=3, third stage), (t=3, last spiking stage); the first in
    causal order is t=3 in the third stage, at the sample and neuron where it was injected."""
    program, x, ids, ref, _, _ = setup
    names = [s.name for s in program.stages if s.kind != "readout"]
    traces = {k: np.array(v, copy=True) for k, v in ref.traces.items()}
    first, third, last = names[0], names[2], names[-1]
    traces[first].reshape(T, len(ids), -1)[5, 0, 7] += 1
    flat = traces[third].reshape(T, len(ids), -1)
    flat[3, 2, 11] += 4096
    traces[last].reshape(T, len(ids), -1)[3, 0, 0] += 1
    _save(tmp_path / "r.npz", ref, ids, traces=traces)
    rep = verify_against(program, x[ids], load_recorded(tmp_path / "r.npz", program))
    d = rep.divergence
    assert not rep.bit_exact
    assert (d.stage, d.step, d.sample, d.sample_id, d.flat_index) == (third, 3, 2, int(ids[2]), 11)
    assert d.lava == d.reference + 4096
    assert {s.name: s.mismatches for s in rep.stages if s.mismatches} == {first: 1, third: 1, last: 1}


def test_predictions_only_recording(setup, tmp_path):
    program, x, ids, ref, _, _ = setup
    preds = np.array(ref.predictions, copy=True)
    preds[2, 1] = (preds[2, 1] + 1) % int(program.readout.shape[0])
    preds[6, 0] = (preds[6, 0] + 1) % int(program.readout.shape[0])
    _save(tmp_path / "p.npz", ref, ids, readout=False, predictions=preds)
    rep = verify_against(program, x[ids], load_recorded(tmp_path / "p.npz", program))
    assert rep.compared == ["predictions"] and rep.readout_equal is None
    assert (rep.divergence.stage, rep.divergence.step, rep.divergence.sample) == ("predictions", 2, 1)


def test_cli_against_exit_codes(setup, tmp_path, capsys):
    program, x, ids, ref, path, d = setup
    readout = np.array(ref.readout, copy=True)
    readout[4, 1, 2] += 1
    save_recorded(tmp_path / "r.npz", predictions=ref.predictions, indices=ids, readout=readout, steps=T)
    code = cli.main(["verify", str(path), "--data", str(d / "d.npz"), "--against", str(tmp_path / "r.npz")])
    out = capsys.readouterr().out
    assert code == 1 and "MISMATCH" in out and "step 4" in out and "recorded" in out
    save_recorded(tmp_path / "ok.npz", predictions=ref.predictions, indices=ids, readout=ref.readout, steps=T)
    code = cli.main(["verify", str(path), "--data", str(d / "d.npz"), "--against", str(tmp_path / "ok.npz")])
    assert code == 0 and "BIT-EXACT" in capsys.readouterr().out


@pytest.mark.parametrize("arrays, needle", [
    ({"predictions": np.zeros((4, 3), np.int64), "indices": np.arange(3), "extra": np.zeros(2)}, "extra"),
    ({"predictions": np.zeros((4, 3), np.int64)}, "indices"),
    ({"predictions": np.zeros((4, 3), np.float64), "indices": np.arange(3)}, "predictions"),
    ({"predictions": np.zeros((4, 3), np.int64), "indices": np.arange(3), "readout": np.zeros((4, 3, 2))},
     "readout"),
    ({"predictions": np.full((4, 3), 99, np.int64), "indices": np.arange(3)}, "class indices"),
    ({"predictions": np.zeros((4, 3), np.int64), "indices": np.array([0, 1, 99])}, "beyond"),
    ({"predictions": np.zeros((4, 3), np.int64), "indices": np.arange(3), TRACE_PREFIX + "nope": np.zeros(1)},
     "no stage 'nope'"),
])
def test_bad_recordings_are_refused(setup, tmp_path, capsys, arrays, needle):
    _, _, _, _, path, d = setup
    np.savez(tmp_path / "bad.npz", **arrays)
    code = cli.main(["verify", str(path), "--data", str(d / "d.npz"), "--against", str(tmp_path / "bad.npz")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
