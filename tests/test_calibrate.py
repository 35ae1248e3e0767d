"""Calibration (netx_export.calibrate): λ per spiking layer against hand-computed values, exactness of the
streaming percentile, determinism, progress output and errors."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from netx_export import ann, calibrate as calibrate_mod, ir
from netx_export.calibrate import Calibration, calibrate, percentile_index
from netx_export.errors import CalibrationError
from netx_export.trace import trace

try:  # tests/ is on sys.path (pytest's default import mode) ...
    from models import cifar10_test, load_resnet
except ImportError:  # ... or tests/ is a package
    from tests.models import cifar10_test, load_resnet


def _tiny(bias: float = 0.0) -> ir.Graph:
    """input (2, 1, 2) -> 1x1 identity conv -> relu 'r' -> flatten -> linear 'out'.

    The relu output equals max(x, 0) channel by channel (plus ``bias``)."""
    eye = np.eye(2).reshape(2, 2, 1, 1)
    return ir.Graph((
        ir.Input("x", shape=(2, 1, 2)),
        ir.Conv("c", ("x",), weight=eye, bias=np.full(2, bias)),
        ir.Relu("r", ("c",)),
        ir.Flatten("f", ("r",)),
        ir.Linear("out", ("f",), weight=np.ones((1, 4))),
    ))


# 5 samples x 2 channels x 2 positions. After the ReLU:
#   channel 0: 1 0 | 2 0 | 0 0 | 3 4 | 0 0.5   -> sorted 0 0 0 0 0 0.5 1 2 3 4
#   channel 1: 0 0 | 0 10 | 0 0 | 0 0 | 0 0    -> nine 0, one 10
#   all 20 values: fourteen 0, then 0.5 1 2 3 4 10
DATA = np.array([
    [[[1, -1]], [[0, 0]]],
    [[[2, 0]], [[0, 10]]],
    [[[0, 0]], [[0, 0]]],
    [[[3, 4]], [[0, -7]]],
    [[[-2, 0.5]], [[0, 0]]],
], dtype=np.float32)


def test_percentile_index_rule():
    # ALGORITHMS §1.5 a: index floor(N p) - 1 of the ascending sort, at least 0
    assert percentile_index(20, 100) == 19
    assert percentile_index(20, 90) == 17
    assert percentile_index(6, 50) == 2
    assert percentile_index(1, 99.99) == 0
    assert percentile_index(10000, 99.99) == 9998  # exact decimal arithmetic: floor(9999.0) - 1
    assert percentile_index(3, 10) == 0


def test_max_and_input_scale():
    cal = calibrate(_tiny(), DATA, progress=False)
    assert cal.lambdas == {"r": 10.0}
    assert cal.input_scale == 10.0  # max |x|
    assert cal.method == "max" and cal.percentile == 100.0 and cal.n_samples == 5
    assert cal.data_hash == hashlib.sha256(DATA.tobytes()).hexdigest()


@pytest.mark.parametrize("percentile, nonzero_only, expected", [
    (90, False, 3.0),     # index 17 of 20
    (100, False, 10.0),
    (95, False, 4.0),     # index 18
    (50, True, 2.0),      # non-zero: 0.5 1 2 3 4 10, index 2
    (90, True, 4.0),      # index floor(5.4) - 1 = 4
    (99.99, True, 4.0),   # floor(5.9994) - 1 = 4
])
def test_percentile_layerwise(percentile, nonzero_only, expected):
    cal = calibrate(_tiny(), DATA, method="percentile", percentile=percentile, nonzero_only=nonzero_only,
                    progress=False)
    assert cal.lambdas["r"] == expected
    assert cal.percentile == float(percentile) and cal.nonzero_only is nonzero_only


def test_channelwise():
    cal = calibrate(_tiny(), DATA, channelwise=True, progress=False)
    assert np.array_equal(cal.lambdas["r"], [4.0, 10.0]) and cal.dead_channels == {}
    cal = calibrate(_tiny(), DATA, method="percentile", percentile=90, nonzero_only=True, channelwise=True,
                    progress=False)
    assert np.array_equal(cal.lambdas["r"], [3.0, 10.0])  # ch0 non-zero 0.5 1 2 3 4 -> index 3; ch1 [10]
    # all elements: channel 1's 90th percentile is 0 -> it takes the layer's largest channel λ and is listed
    cal = calibrate(_tiny(), DATA, method="percentile", percentile=90, channelwise=True, progress=False)
    assert np.array_equal(cal.lambdas["r"], [3.0, 3.0]) and cal.dead_channels == {"r": (1,)}
    assert cal.channelwise


def test_vector_layers_are_channelwise_per_feature():
    graph = ir.Graph((ir.Input("x", shape=(3,)), ir.Linear("l", ("x",), weight=np.eye(3)), ir.Relu("r", ("l",)),
                      ir.Linear("o", ("r",), weight=np.ones((1, 3)))))
    x = np.array([[1, 2, 3], [4, -5, 0.5]], dtype=np.float32)
    cal = calibrate(graph, x, channelwise=True, progress=False)
    assert np.array_equal(cal.lambdas["r"], [4.0, 2.0, 3.0])


def test_data_forms_give_identical_results():
    x = torch.from_numpy(DATA)
    y = torch.arange(5)
    kw = dict(method="percentile", percentile=90, progress=False)
    ref = calibrate(_tiny(), DATA, **kw)
    assert calibrate(_tiny(), x, **kw) == ref
    assert calibrate(_tiny(), x, batch_size=2, **kw) == ref
    assert calibrate(_tiny(), DataLoader(TensorDataset(x, y), batch_size=3), **kw) == ref
    assert calibrate(_tiny(), [(x[:1], y[:1]), (x[1:], y[1:])], **kw) == ref
    assert calibrate(_tiny(), iter([x[:4], x[4:].numpy()]), **kw) == ref  # unsized stream
    assert calibrate(_tiny(), x.double(), **kw) == ref  # float32 first: same hash, same λ
    # max_samples takes the first samples only
    cal = calibrate(_tiny(), DataLoader(TensorDataset(x, y), batch_size=3), max_samples=2, progress=False)
    assert cal.n_samples == 2 and cal.lambdas["r"] == 10.0
    assert cal.data_hash == hashlib.sha256(DATA[:2].tobytes()).hexdigest()


def test_resnet_lambdas_do_not_depend_on_batch_size_or_threads():
    """The float64 ANN of a traced ResNet20 gives bit-identical λ (max and percentile) whatever the batch size
    and whether the batches run on worker threads (AnnRunner.map) or one after the other."""
    graph = trace(load_resnet(20), (3, 32, 32))
    x, _ = cifar10_test(24, stride=97)
    threads = torch.get_num_threads()
    for kw in (dict(), dict(method="percentile", percentile=99.9)):
        ref = calibrate(graph, x, batch_size=24, progress=False, **kw)
        assert calibrate(graph, x, progress=False, **kw) == ref  # DEFAULT_BATCH, in parallel
        assert calibrate(graph, x, batch_size=5, progress=False, **kw) == ref
        torch.set_num_threads(1)
        try:
            assert calibrate(graph, x, batch_size=8, progress=False, **kw) == ref  # no worker threads
        finally:
            torch.set_num_threads(threads)
    assert calibrate_mod.DEFAULT_BATCH == 4


def test_relu_after_linear_does_not_depend_on_batch_size():
    """A relu after a linear layer: BLAS computes a short trailing block of rows (2 or 3 here) with other
    kernels, so the last batch takes the remainder (_spans): the values, evaluated the way calibrate does it
    (AnnRunner.map, single-threaded workers), are those of one call on all samples, bit for bit."""
    rng = np.random.default_rng(0)
    graph = ir.Graph((ir.Input("x", shape=(800,)), ir.Linear("l", ("x",), weight=rng.normal(size=(500, 800)),
                                                              bias=rng.normal(size=500)),
                      ir.Relu("r", ("l",)), ir.Linear("o", ("r",), weight=np.ones((1, 500)))))
    x = torch.from_numpy(rng.normal(size=(27, 800)).astype(np.float32))  # 27 = 3·8 + 3
    runner = ann.AnnRunner(graph)
    whole = runner(x, record=["r"])[1]["r"]
    for bs in (4, 8):
        parts = runner.map(calibrate_mod._batches(x, (800,), bs, None), record=["r"], workers=2)
        assert torch.equal(torch.cat([acts["r"] for _, acts in parts]), whole)
    ref = calibrate(graph, x, batch_size=256, method="percentile", percentile=90, progress=False)
    for bs in (4, 8, 12):
        assert calibrate(graph, x, batch_size=bs, method="percentile", percentile=90, progress=False) == ref
    assert [hi - lo for lo, hi in calibrate_mod._spans(27, 8)] == [8, 8, 11]
    assert list(calibrate_mod._spans(5, 8)) == [(0, 5)] and list(calibrate_mod._spans(16, 8)) == [(0, 8), (8, 16)]


def test_progress_bar(capsys):
    calibrate(_tiny(), DATA, progress=True)
    err = capsys.readouterr().err
    assert "calibrate" in err and "5/5" in err
    calibrate(_tiny(), DATA, progress=False)
    assert capsys.readouterr().err == ""


def test_roundtrip_to_dict():
    for kw in (dict(), dict(channelwise=True, method="percentile", percentile=90)):
        cal = calibrate(_tiny(), DATA, progress=False, **kw)
        again = Calibration.from_dict(cal.to_dict())
        assert again == cal and again.to_dict().keys() == cal.to_dict().keys()
    d = cal.to_dict()
    d["lambdas"] = {"r": [3.0, 3.0]}  # lists (JSON) are accepted
    assert Calibration.from_dict(d) == cal
    with pytest.raises(TypeError):
        cal.lambdas["r"] = 1.0  # read-only
    assert not cal.lambdas["r"].flags.writeable


def test_errors():
    g = _tiny()
    with pytest.raises(CalibrationError, match="empty"):
        calibrate(g, DATA[:0], progress=False)
    with pytest.raises(CalibrationError, match="empty"):
        calibrate(g, [], progress=False)
    with pytest.raises(CalibrationError, match=r"expected shape \(N, 2, 1, 2\)"):
        calibrate(g, np.zeros((3, 2, 2, 1), np.float32), progress=False)
    with pytest.raises(CalibrationError, match="batch 1"):
        calibrate(g, [DATA[:2], DATA[0]], progress=False)  # a single unbatched sample
    for p in (0, -1, 100.5, float("nan"), True, "99"):
        with pytest.raises(CalibrationError, match="percentile"):
            calibrate(g, DATA, method="percentile", percentile=p, progress=False)
    with pytest.raises(CalibrationError, match="method"):
        calibrate(g, DATA, method="mean", progress=False)
    with pytest.raises(CalibrationError, match="batch_size"):
        calibrate(g, DATA, batch_size=0, progress=False)
    with pytest.raises(CalibrationError, match="max_samples"):
        calibrate(g, DATA, max_samples=0, progress=False)
    with pytest.raises(CalibrationError, match="all 5 calibration inputs are zero"):
        calibrate(g, np.zeros_like(DATA), progress=False)
    with pytest.raises(CalibrationError, match="NaN"):
        calibrate(g, np.full_like(DATA, np.nan), progress=False)


def test_dead_layer_named():
    with pytest.raises(CalibrationError, match=r"layer 'r' is dead: its ReLU output is 0 for all 5"):
        calibrate(_tiny(bias=-100.0), DATA, progress=False)
    with pytest.raises(CalibrationError, match=r"layer 'r' is dead: the 50.0th percentile .* nonzero_only"):
        calibrate(_tiny(), DATA, method="percentile", percentile=50, progress=False)


def test_unsized_stream_exactness_check(monkeypatch):
    """With the small always-kept budget removed, a one-pass stream whose early values crowd the buffer
    cannot prove the percentile exact and says so (a sized source of the same data is fine)."""
    monkeypatch.setattr(calibrate_mod, "UNSIZED_KEPT", 0)
    graph = ir.Graph((ir.Input("x", shape=(100,)), ir.Relu("r", ("x",)),
                      ir.Linear("o", ("r",), weight=np.ones((1, 100)))))
    first = np.full((1, 100), 5.0, np.float32)
    rest = np.ones((2000, 100), np.float32)
    with pytest.raises(CalibrationError, match="max_samples"):
        calibrate(graph, iter([first, rest]), method="percentile", percentile=99, progress=False)
    cal = calibrate(graph, np.concatenate([first, rest]), method="percentile", percentile=99, progress=False)
    assert cal.lambdas["r"] == 1.0


def test_buffer_limit(monkeypatch):
    monkeypatch.setattr(calibrate_mod, "MAX_KEPT", 10)
    with pytest.raises(CalibrationError, match="limit 10"):
        calibrate(_tiny(), DATA, method="percentile", percentile=50, nonzero_only=True, progress=False)
    calibrate(_tiny(), DATA, progress=False)  # the max needs no buffer


def test_calibration_validation():
    with pytest.raises(CalibrationError):
        Calibration(lambdas={"r": 0.0}, input_scale=1.0)
    with pytest.raises(CalibrationError):
        Calibration(lambdas={"r": 1.0}, input_scale=0.0)
    with pytest.raises(CalibrationError):
        Calibration(lambdas={"r": [1.0, -1.0]}, input_scale=1.0, channelwise=True)
    with pytest.raises(CalibrationError):
        Calibration.from_dict({"lambdas": {}, "input_scale": 1.0, "bogus": 1})


def test_resnet20_percentiles_match_brute_force():
    """On real activations: the streamed top-r percentile equals a full sort, for several settings."""
    graph = trace(load_resnet(20), (3, 32, 32))
    x, _ = cifar10_test(8, stride=1250)
    relus = [n.name for n in graph.nodes if n.kind == "relu"]
    _, acts = ann.evaluate(graph, x, record=relus)
    settings = [dict(method="max"), dict(method="percentile", percentile=99.9),
                dict(method="percentile", percentile=99.0, nonzero_only=True, channelwise=True)]
    for kw in settings:
        cal = calibrate(graph, x, batch_size=3, progress=False, **kw)
        if kw.get("percentile") == 99.9:
            assert cal == calibrate(graph, x, batch_size=8, progress=False, **kw)  # batching-independent
        p = kw.get("percentile", 100.0)
        for name in relus:
            a = acts[name].numpy()
            rows = a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1) if kw.get("channelwise") else a.reshape(1, -1)
            want = []
            for row in rows:
                v = np.sort(row[row > 0] if kw.get("nonzero_only") else row)
                want.append(v[percentile_index(len(v), p)] if len(v) else 0.0)
            got = np.atleast_1d(cal.lambdas[name])
            live = np.asarray(want) > 0
            assert np.array_equal(got[live], np.asarray(want)[live]), (kw, name)
    assert cal.input_scale == float(x.abs().max())
