"""lava-dl interop: a constant-threshold export loads in lava-dl's own ``netx.hdf5.Network``, runs under
``Loihi2SimCfg(select_tag='fixed_pt')`` and matches an independent numpy model of netx's semantics
(LAVA_NOTES §2.4: v += W s(t−1) + b with one step of delay per synapse, spike on v > vThMant, reset to 0).

The numpy model reads the ``/layer`` datasets with plain h5py; it shares no code with netx_export or Lava.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netx_export import hdf5, ir
from netx_export.calibrate import calibrate
from netx_export.quantize import quantize

T = 24
V_MAX = (1 << 23) - 1


def _dense_graph(rng):
    return ir.Graph((
        ir.Input("x", shape=(12,)),
        ir.Linear("l1", ("x",), weight=rng.normal(size=(10, 12)) * 0.5, bias=rng.normal(size=10) * 0.1),
        ir.Relu("r1", ("l1",)),
        ir.Linear("l2", ("r1",), weight=rng.normal(size=(8, 10)) * 0.5, bias=rng.normal(size=8) * 0.1),
        ir.Relu("r2", ("l2",)),
        ir.Linear("out", ("r2",), weight=rng.normal(size=(3, 8)), bias=rng.normal(size=3) * 0.1),
    ))


def _conv_graph(rng):
    return ir.Graph((
        ir.Input("x", shape=(2, 8, 6)),
        ir.Conv("c1", ("x",), weight=rng.normal(size=(4, 2, 3, 3)) * 0.4, bias=rng.normal(size=4) * 0.1,
                padding=(1, 1)),
        ir.Relu("r1", ("c1",)),
        ir.Flatten("fl", ("r1",)),
        ir.Linear("l2", ("fl",), weight=rng.normal(size=(10, 192)) * 0.15, bias=rng.normal(size=10) * 0.1),
        ir.Relu("r2", ("l2",)),
        ir.Linear("out", ("r2",), weight=rng.normal(size=(3, 10)), bias=rng.normal(size=3) * 0.1),
    ))


def _export(graph, tmp_path, rng, name):
    data = rng.uniform(-1.5, 1.5, size=(64, *graph.input.shape))
    cal = calibrate(graph, data, progress=False)
    net = quantize(graph, cal, method="const")  # max-norm IF
    path = hdf5.write(net, tmp_path / f"{name}.net")
    return net, path, data[0]


def _read_layers(path):
    """The /layer list as plain dicts (h5py only)."""
    out = []
    with h5py.File(path, "r") as f:
        for i in range(len(f["layer"])):
            g = f["layer"][str(i)]
            layer = {"type": g["type"][0].decode()}
            for key in g:
                if key == "neuron":
                    layer["neuron"] = {k: g["neuron"][k][()] for k in g["neuron"]}
                elif key != "type":
                    layer[key] = g[key][()]
            out.append(layer)
        bits = int(f["msat/netx/input_message_bits"][()])
    return out, bits


def _numpy_netx(layers, p_in, steps):
    """Independent integer model of a netx CUBA chain in Lava's x64 fixed-point units (LAVA_NOTES §2.4, §3.6).

    Returns per weighted layer the spikes (*out_shape, T) in (C, H, W) order and the final v (x64 units)."""
    x = [np.asarray(p_in, dtype=np.int64)] * steps  # RingBuffer: the same graded input every step
    results = []
    flatten = False
    for layer in layers[1:]:
        if layer["type"] == "flatten":
            flatten = True
            continue
        w = layer["weight"].astype(np.int64)
        bias = layer.get("bias", np.zeros(w.shape[0])).astype(np.int64)
        vth = int(layer["neuron"]["vThMant"])
        out_shape = tuple(int(s) for s in layer["shape"]) if layer["type"] == "conv" else (w.shape[0],)
        v = np.zeros(out_shape, dtype=np.int64)
        b = bias.reshape(-1, 1, 1) if layer["type"] == "conv" and bias.ndim == 1 else bias
        spikes = []
        for t in range(steps):
            if t == 0:
                a = np.zeros(out_shape, dtype=np.int64)  # the synapse sends last step's sum first
            else:
                s = x[t - 1]
                if layer["type"] == "conv":
                    a = F.conv2d(torch.as_tensor(s, dtype=torch.float64)[None],
                                 torch.as_tensor(w, dtype=torch.float64), stride=tuple(layer["stride"]),
                                 padding=tuple(layer["padding"]), groups=int(layer["groups"]))[0]
                    a = np.rint(a.numpy()).astype(np.int64)
                else:
                    a = w @ (s.reshape(-1) if flatten else s)
            v = np.clip(v + (a << 6) + (b << 6), -V_MAX, V_MAX)
            fired = v > (vth << 6)
            v[fired] = 0
            spikes.append(fired.astype(np.int64))
        flatten = False
        x = spikes
        results.append((np.stack(spikes, axis=-1), v))
    return results


def _run_lava(path, p_in_lava, bits, steps):
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    net = netx.hdf5.Network(net_config=str(path), input_message_bits=bits)
    source = Source(data=np.repeat(p_in_lava[..., None], steps, axis=-1))
    source.s_out.connect(net.inp)
    sinks = []
    for layer in net.layers:
        sink = Sink(shape=layer.out.shape, buffer=steps)
        layer.out.connect(sink.a_in)
        sinks.append(sink)
    try:
        net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        spikes = [np.rint(s.data.get()).astype(np.int64) for s in sinks]
        v_out = np.rint(net.layers[-1].neuron.v.get()).astype(np.int64)
    finally:
        net.stop()
    return spikes, v_out


def _p_in(net, x):
    return np.clip(np.floor(x / net.input_scale * 2 ** net.input_frac_bits + 0.5),
                   -2 ** net.input_frac_bits, 2 ** net.input_frac_bits).astype(np.int64)


def _check_view_derivation(net, layers):
    """The documented netx view: weight = term mantissa, vThMant = 2^−u, u = e − F_t (input) or e (spikes);
    when 2^−u > 2^16 the mantissas are shifted right by d = −u − 16 (round half up) and u = −16."""
    weighted = [layer for layer in layers[1:] if layer["type"] != "flatten"]
    shifted = 0
    for layer, tgt in zip(weighted, net.targets):
        (term,) = tgt.terms
        u = term.exponent - tgt.frac_bits if term.source == net.graph.input.name else term.exponent
        mant = term.mantissa.astype(np.int64)
        if tgt.kind == "relu" and -u > 16:
            d = -u - 16
            mant = (mant + (1 << (d - 1))) >> d
            u, shifted = -16, shifted + 1
        np.testing.assert_array_equal(layer["weight"], mant.astype(np.float32))
        if tgt.kind == "relu":
            assert layer["neuron"]["vThMant"] == 2 ** (-u)
        else:
            assert layer["neuron"]["vThMant"] == 2 ** 17 - 1
        assert layer["neuron"]["iDecay"] == 4096 and layer["neuron"]["vDecay"] == 0
        assert "messageBits" not in layer["neuron"]
        op = net.graph[term.op]
        np.testing.assert_array_equal(layer["bias"], np.floor(op.bias / tgt.lam * 2.0 ** (-u) + 0.5))
    return shifted


@pytest.mark.lava
@pytest.mark.timeout(120)
def test_dense_chain_runs_in_lava_netx_and_matches_numpy(tmp_path):
    rng = np.random.default_rng(7)
    net, path, x = _export(_dense_graph(rng), tmp_path, rng, "dense")
    layers, bits = _read_layers(path)
    assert [l["type"] for l in layers] == ["input", "dense", "dense", "dense"]
    assert _check_view_derivation(net, layers) == 0
    p_in = _p_in(net, x)
    want = _numpy_netx(layers, p_in, T)
    got, v_out = _run_lava(path, p_in, bits, T)
    for k, ((spikes, _), lava) in enumerate(zip(want, got)):
        np.testing.assert_array_equal(lava, spikes, err_msg=f"layer {k}")
    assert want[0][0].sum() > 0 and want[1][0].sum() > 0  # the hidden layers really spike
    assert want[2][0].sum() == 0  # the readout integrates
    np.testing.assert_array_equal(v_out, want[-1][1])


@pytest.mark.lava
@pytest.mark.timeout(120)
def test_conv_flatten_dense_runs_in_lava_netx_and_matches_numpy(tmp_path):
    rng = np.random.default_rng(11)
    net, path, x = _export(_conv_graph(rng), tmp_path, rng, "conv")
    layers, bits = _read_layers(path)
    assert [l["type"] for l in layers] == ["input", "conv", "flatten", "dense", "dense"]
    assert _check_view_derivation(net, layers) == 1  # the input layer's 2^−u exceeds 17 bits here
    p_in = _p_in(net, x)
    want = _numpy_netx(layers, p_in, T)
    got, v_out = _run_lava(path, p_in.transpose(2, 1, 0), bits, T)  # netx wants (W, H, C)
    np.testing.assert_array_equal(got[0].transpose(2, 1, 0, 3), want[0][0], err_msg="conv layer")
    np.testing.assert_array_equal(got[1], want[1][0], err_msg="dense layer")
    np.testing.assert_array_equal(got[2], want[2][0], err_msg="readout")
    assert want[0][0].sum() > 0 and want[1][0].sum() > 0
    np.testing.assert_array_equal(v_out, want[-1][1])


@pytest.mark.lava
@pytest.mark.timeout(60)
def test_non_chain_export_is_refused_by_netx(tmp_path):
    """A graph netx cannot express keeps only the input layer in /layer: netx builds nothing and fails
    loudly at construction (never a silently wrong chain)."""
    from lava.lib.dl import netx

    g = ir.Graph((
        ir.Input("x", shape=(4,)),
        ir.Linear("a", ("x",), weight=np.eye(4)),
        ir.Relu("r", ("a",)),
        ir.Linear("b", ("r",), weight=np.eye(4)),
        ir.Add("s", ("b", "r")),
        ir.Relu("r2", ("s",)),
        ir.Linear("o", ("r2",), weight=np.ones((2, 4))),
    ))
    net = quantize(g, {"r": 1.0, "r2": 2.0}, input_scale=1.0, method="const")
    path = hdf5.write(net, tmp_path / "res.net")
    view = hdf5.netx_view(net)
    assert not view.loadable and "chain" in view.reason
    with pytest.raises(IndexError):
        netx.hdf5.Network(net_config=str(path))
