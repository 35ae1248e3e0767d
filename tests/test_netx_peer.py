"""lava-dl's own netx networks (issue 18): msat_lava.netx_peer's reader and batched simulator against the golden
files of ``$MSAT_SHARED_DATA/netx_peer`` (procedures from its README.md), against closed forms of Lava's CUBA step,
and against Lava's own CPU run of tinynet.

Golden comparisons skip (with the reason) when the shared data is absent; the closed-form and reader tests
always run.
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from msat_lava import netx_peer as nxp
from msat_lava.netx_peer import CubaNeuron, NetxSimulator, cuba_step, lava_dense_weights, read_netx, trunc_decay
from netx_export.errors import FormatError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
_SHARED = Path(os.environ.get("MSAT_SHARED_DATA") or REPO.parent / "shared" / "data")
PEER = _SHARED / "netx_peer"
TINY = PEER / "tinynet"
PILOT = PEER / "pilotnet_lif"
needs_peer = pytest.mark.skipif(not (TINY / "tiny.net").is_file() or not (PILOT / "network.net").is_file(),
                                reason=f"lava-dl's netx peer data not found under {PEER} (set MSAT_SHARED_DATA)")
PILOT_NAMES = ["input"] + [f"conv-{i}" for i in range(5)] + [f"fc-{i}" for i in range(4)]  # process k -> name
VTH = nxp.VTH_MAX
GOLDEN_SPIKING_V = 128  # what the PilotNet golden v holds at a neuron-step that spiked (Lava's v is 0 there)


# =========================================================================================================
# closed forms of one CUBA step
# =========================================================================================================

def test_decay_rounds_toward_zero():
    # (x * (4096 - d)) >> 12 on |x|, sign restored: -5 * 2048 / 4096 = -2.5 -> -2 (a floor would give -3)
    assert trunc_decay(-5, 2048) == -2
    assert trunc_decay(5, 2048) == 2
    assert trunc_decay(-1, 1) == 0           # -4095/4096 -> 0
    assert trunc_decay(-4096, 1) == -4095
    assert trunc_decay(-7, 0) == -7 and trunc_decay(7, 4096) == 0
    x = np.array([-5, -3, -1, 0, 1, 3, 5, -(1 << 23) + 1], np.int64)
    want = np.array([int(np.trunc(v * 3072 / 4096)) for v in x])
    assert np.array_equal(trunc_decay(x, 1024), want)
    assert torch.equal(trunc_decay(torch.as_tensor(x), 1024), torch.as_tensor(want))


def test_threshold_is_strict_and_reset_is_to_zero():
    n = CubaNeuron(i_decay=4096, v_decay=4096 - 1, vth_mant=25)  # u = a << 6; v nearly forgets
    assert n.vth == 1600 and n.du == 4095 and n.dv == 4095
    zero = np.zeros(3, np.int64)
    # bias 25 -> v = 25 << 6 = 1600 = vth: no spike; 26 -> 1664 > 1600: spike, v reset to 0
    u, v, s = cuba_step(zero, zero, np.zeros(3, np.int64), np.array([24, 25, 26]), n)
    assert s.tolist() == [False, False, True]
    assert v.tolist() == [1536, 1600, 0]
    # the same through synaptic input: a = 25 -> u = 1600, v = 1600: no spike
    u, v, s = cuba_step(zero, zero, np.array([25, 26, -30]), np.zeros(3, np.int64), n)
    assert u.tolist() == [1600, 1664, -1920] and s.tolist() == [False, True, False] and v.tolist() == [1600, 0, -1920]


def test_integrator_spike_times_closed_form():
    # iDecay 4096 (u = a << 6 each step), vDecay 0 (no leak): v(t) = t (a + b) 64 until it exceeds vth << 6;
    # first spike at t* = floor(vth / (a + b)) + 1, then v restarts from 0: period t*.
    n = CubaNeuron(i_decay=4096, v_decay=0, vth_mant=100)
    for a, b in ((7, 0), (3, 4), (10, 0), (1, 0), (0, 101)):
        u = v = np.zeros(1, np.int64)
        times = []
        for t in range(1, 400):
            u, v, s = cuba_step(u, v, np.array([a]), np.array([b]), n)
            if s[0]:
                times.append(t)
        period = 100 // (a + b) + 1
        assert times[:3] == [period, 2 * period, 3 * period], (a, b, times[:3])


def test_current_decay_closed_form_and_u_wrap():
    # iDecay 2048 halves u toward zero: a single input a0 at step 1 gives u(t) = trunc(a0 * 64 / 2^(t-1))
    n = CubaNeuron(i_decay=2048, v_decay=4095, vth_mant=VTH)
    u = v = np.zeros(1, np.int64)
    seen = []
    for t in range(1, 9):
        u, v, s = cuba_step(u, v, np.array([-77 if t == 1 else 0]), np.zeros(1, np.int64), n)
        seen.append(int(u[0]))
    assert seen == [int(np.trunc(-77 * 64 / 2 ** k)) for k in range(8)]
    # 24-bit wrap of u, applied once: (2^17 + 1) << 6 = 2^23 + 64 > 2^23 -> 2^23 + 64 - 2^24; and downwards
    n0 = CubaNeuron(i_decay=4096, v_decay=0, vth_mant=VTH)
    zero = np.zeros(2, np.int64)
    u1, _, _ = cuba_step(zero, zero, np.array([(1 << 17) + 1, -(1 << 17)]), zero, n0)
    # (-2^17) << 6 = -2^23 <= -2^23 -> +2^23: Lava's single wrap, kept as is
    assert u1.tolist() == [(1 << 23) + 64 - (1 << 24), -(1 << 23) + (1 << 24)]
    # with a decay: du = 0 (iDecay 1) keeps 4095/4096 of u = 2^23 - 64, plus 2 << 6: not above 2^23, no wrap
    n1 = CubaNeuron(i_decay=1, v_decay=0, vth_mant=VTH)
    u2, _, _ = cuba_step(np.array([(1 << 23) - 64]), np.zeros(1, np.int64), np.array([2]), np.zeros(1, np.int64), n1)
    # 8388544 * 4095 / 4096 = 8386496.02 -> 8386496 = 8388544 - 2048
    assert int(u2[0]) == trunc_decay((1 << 23) - 64, 1) + 128 == (1 << 23) - 64 - 2048 + 128
    # v saturates at +-(2^23 - 1)
    # (upwards the clip cannot be seen: 2^23 - 1 exceeds the largest threshold 131071 << 6, so v spikes to 0)
    _, v2, s2 = cuba_step(np.zeros(1, np.int64), np.array([(1 << 23) - 10]), np.array([1000]), np.zeros(1, np.int64),
                          CubaNeuron(i_decay=4096, v_decay=0, vth_mant=VTH))
    assert int(v2[0]) == 0 and s2[0]
    _, v3, _ = cuba_step(np.zeros(1, np.int64), np.array([-(1 << 23) + 10]), np.array([-1000]),
                         np.zeros(1, np.int64), CubaNeuron(i_decay=4096, v_decay=0, vth_mant=VTH))
    assert int(v3[0]) == -(1 << 23) + 1


def test_reset_steps():
    assert nxp.reset_steps(40, 0, 17) == [1, 18, 35]
    assert nxp.reset_steps(40, 2, 17) == [3, 20, 37]
    assert nxp.reset_steps(40, 2, 16, offset=1) == [4, 20, 36]
    assert nxp.reset_steps(40, 2, None) == []


@pytest.mark.parametrize("weights, want, wexp, bits", [
    ([[3, -1]], [[192, -64]], -6, 3),          # mixed: sb = floor(log2 42.3) + 1 = 6, odd weights: n = -1
    ([[1, 2]], [[64, 128]], -6, 2),            # excitatory: sb = floor(log2 127.5) = 6, n = 0
    ([[100, -1]], [[200, -2]], -1, 8),         # mixed: sb = 0 + 1
    ([[300, -1]], [[254, -1]], 0, 9),          # netx clips to [-256, 254] first; sb = -1 + 1 = 0
    # inhibitory: scale = 256/8 -> sb = 5, n = 2, 1 weight bit; w' = [-128, -256]; Lava clips |w'| to 255 and
    # truncates to 1 bit (t = 7): -256 becomes -128, so a weight of -8 acts as -4 in Lava
    ([[-4, -8]], [[-128, -128]], -5, 1),
])
def test_lava_dense_weights_closed_forms(weights, want, wexp, bits):
    w, e, b = lava_dense_weights(np.array(weights))
    assert w.tolist() == want and e == wexp and b == bits


def test_lava_dense_weights_refusals():
    with pytest.raises(ValueError, match="all weights are zero"):
        lava_dense_weights(np.zeros((2, 3), np.int64))


# =========================================================================================================
# the reader: a small netx file written here, and hostile variants
# =========================================================================================================

def _neuron(g, i_decay=4096, v_decay=1024, vth=25, **extra):
    n = g.create_group("neuron")
    n.create_dataset("type", data="LOIHI", dtype=h5py.string_dtype())
    for key, value in dict(iDecay=i_decay, vDecay=v_decay, vThMant=vth, refDelay=1, wgtExp=0, theta=vth << 6,
                           **extra).items():
        n.create_dataset(key, data=np.int64(value))
    n.create_dataset("tauRho", data=np.float64(0.5))
    n.create_dataset("scaleRho", data=np.float64(1.0))


def write_small_net(path, rng, *, i_decay=(4096, 3000, 1, 2048), v_decay=(1024, 0, 4095, 100), vth=(25, 40, 60, 30),
                    mutate=None):
    """input (2, 9, 8) -> conv 3x3 s(2,1) p(1,0) -> conv 2x2 groups 2 -> flatten -> dense 24 -> dense 5, CUBA."""
    with h5py.File(path, "w") as f:
        lay = f.create_group("layer")
        g = lay.create_group("0")
        g.create_dataset("type", (1,), "S10", [b"input"])
        g.create_dataset("shape", data=np.array([2, 9, 8]))
        g.create_dataset("weight", data=np.float32(40))
        g.create_dataset("bias", data=np.float32(36))
        _neuron(g, i_decay[0], v_decay[0], vth[0])
        g = lay.create_group("1")
        g.create_dataset("type", (1,), "S10", [b"conv"])
        g.create_dataset("shape", data=np.array([4, 5, 6]))
        g.create_dataset("weight", data=(rng.integers(-9, 10, size=(4, 2, 3, 3, 1)) * 2).astype(np.float32))
        g.create_dataset("bias", data=rng.integers(-10, 20, size=4).astype(np.float32))
        for key, value in dict(stride=[2, 1], padding=[1, 0], dilation=[1, 1], kernelSize=[3, 3]).items():
            g.create_dataset(key, data=np.array(value))
        for key, value in dict(groups=1, inChannels=2, outChannels=4).items():
            g.create_dataset(key, data=np.int64(value))
        _neuron(g, i_decay[1], v_decay[1], vth[1])
        g = lay.create_group("2")
        g.create_dataset("type", (1,), "S10", [b"conv"])
        g.create_dataset("shape", data=np.array([4, 4, 5]))
        g.create_dataset("weight", data=(rng.integers(-12, 13, size=(4, 2, 2, 2))).astype(np.float32))
        g.create_dataset("bias", data=rng.integers(-5, 30, size=4).astype(np.float32))
        for key, value in dict(stride=[1, 1], padding=[0, 0], dilation=[1, 1]).items():
            g.create_dataset(key, data=np.array(value))
        g.create_dataset("groups", data=np.int64(2))
        _neuron(g, i_decay[2], v_decay[2], vth[2])
        g = lay.create_group("3")
        g.create_dataset("type", (1,), "S10", [b"flatten"])
        g.create_dataset("shape", data=np.array([1, 1, 80]))
        g = lay.create_group("4")
        g.create_dataset("type", (1,), "S10", [b"dense"])
        g.create_dataset("shape", data=np.array([24, 1, 1]))
        g.create_dataset("weight", data=rng.integers(-6, 7, size=(24, 80)).astype(np.float32))
        g.create_dataset("bias", data=rng.integers(-4, 16, size=24).astype(np.float32))
        g.create_dataset("inFeatures", data=np.int64(80))
        g.create_dataset("outFeatures", data=np.int64(24))
        _neuron(g, i_decay[3], v_decay[3], vth[3])
        g = lay.create_group("5")
        g.create_dataset("type", (1,), "S10", [b"dense"])
        g.create_dataset("shape", data=np.array([5, 1, 1]))
        g.create_dataset("weight", data=rng.integers(-24, 43, size=(5 * 24,)).astype(np.float32))
        g.create_dataset("bias", data=np.zeros(1))
        _neuron(g, 4096, 0, nxp.VTH_MAX)
        sim = f.create_group("simulation")
        sim.create_dataset("Ts", data=np.int64(1))
        sim.create_dataset("tSample", data=np.int64(16))
        if mutate is not None:
            mutate(f)
    return path


def _naive_run(net, bias_whc, steps, interval=None, offset=0):
    """The module docstring's equations with numpy, one sample, via cuba_step (independent of the fast path)."""
    import torch.nn.functional as F

    layers = net.layers
    u = [np.zeros(layer.shape, np.int64) for layer in layers]
    v = [x.copy() for x in u]
    s = [np.zeros(layer.shape, bool) for layer in layers]
    out = []
    for t in range(1, steps + 1):
        new = []
        for k, layer in enumerate(layers):
            if interval and t % interval == (offset + 1 + k) % interval:
                u[k], v[k] = u[k] * 0, v[k] * 0
            if k == 0:
                a, b = np.zeros(layer.shape, np.int64), bias_whc.transpose(2, 1, 0).astype(np.int64)
            elif isinstance(layer, nxp.ConvLayer):
                x = torch.as_tensor(s[k - 1][None].astype(np.float64))
                a = F.conv2d(x, torch.as_tensor(layer.weight, dtype=torch.float64), stride=layer.stride,
                             padding=layer.padding, dilation=layer.dilation, groups=layer.groups)[0].numpy()
                a, b = a.astype(np.int64), layer.bias[:, None, None]
            else:
                acc = layer.lava_weight[:, s[k - 1].reshape(-1)].sum(axis=1)
                a, b = acc >> -layer.weight_exp, layer.bias
            u[k], v[k], sk = cuba_step(u[k], v[k], a, b, layer.neuron)
            new.append(sk)
        s = new
        out.append([x.copy() for x in s])
    return out


def test_reader_small_net(tmp_path):
    net = read_netx(write_small_net(tmp_path / "small.net", np.random.default_rng(1)))
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["InputLayer", "ConvLayer", "ConvLayer", "DenseLayer", "DenseLayer"]
    assert net.input_shape == (2, 9, 8) and net.input_shape_lava == (8, 9, 2)
    c1 = net.layers[1]
    assert c1.shape == (4, 5, 6) and c1.stride == (2, 1) and c1.padding == (1, 0) and c1.weight.shape == (4, 2, 3, 3)
    assert net.layers[2].groups == 2 and net.layers[3].flatten_before and not net.layers[4].flatten_before
    assert net.layers[4].bias.tolist() == [0] * 5 and net.layers[0].transform_weight == 40
    assert net.ts == 1 and net.t_sample == 16 and "dense 80->24 (flatten)" in net.describe()


@pytest.mark.parametrize("interval, offset", [(None, 0), (7, 0), (5, 2)])
def test_simulator_equals_naive_equations(tmp_path, interval, offset):
    """Fast batched path (in-place, skipped decays/wraps) == the docstring equations via cuba_step, with decays
    of every kind (4096, 3000, 1, 2048; 1024, 0, 4095, 100), resets, groups, padding, stride, flatten."""
    rng = np.random.default_rng(2)
    net = read_netx(write_small_net(tmp_path / "small.net", rng))
    bias = rng.integers(-20, 60, size=(3, 8, 9, 2))
    sim = NetxSimulator(net, reset_interval=interval, reset_offset=offset)
    rec = sim.run(bias, 30, record_layers=range(5), record_state=True)
    total = 0
    for i in range(3):
        ref = _naive_run(net, bias[i], 30, interval, offset)
        for k in range(5):
            got = rec.spikes[k][i]
            want = np.stack([ref[t][k] for t in range(30)], axis=-1)
            want = want.transpose(2, 1, 0, 3) if want.ndim == 4 else want
            assert np.array_equal(got, want), (i, k)
            total += int(want.sum())
    assert total > 100  # the network is active: the comparison is not between two silent runs


def test_simulator_batch_is_independent(tmp_path):
    rng = np.random.default_rng(3)
    net = read_netx(write_small_net(tmp_path / "small.net", rng))
    bias = rng.integers(0, 60, size=(2, 8, 9, 2))
    sim = NetxSimulator(net, reset_interval=9)
    both = sim.run(bias, 20, record_layers=[3, 4], record_state=True)
    one = sim.run(bias[1], 20, record_layers=[3, 4], record_state=True)
    assert np.array_equal(both.spikes[3][1], one.spikes[3][0]) and np.array_equal(both.u[4][1], one.u[4][0])
    assert not np.array_equal(both.spikes[3][0], both.spikes[3][1])


def test_simulator_input_validation(tmp_path):
    net = read_netx(write_small_net(tmp_path / "small.net", np.random.default_rng(4)))
    sim = NetxSimulator(net)
    with pytest.raises(ValueError, match=r"shape \(B, 8, 9, 2\)"):
        sim.run(np.zeros((2, 9, 8)), 3)
    with pytest.raises(ValueError, match="13-bit"):
        sim.run(np.full((8, 9, 2), 5000), 3)
    with pytest.raises(ValueError, match="integers"):
        sim.run(np.full((8, 9, 2), 0.5), 3)
    with pytest.raises(ValueError, match="no process 7"):
        sim.run(np.zeros((8, 9, 2), int), 3, record_layers=[7])


def _set(path, value, dtype=None):
    def mutate(f):
        parent, _, key = path.rpartition("/")
        del f[parent][key]
        f[parent].create_dataset(key, data=value, dtype=dtype)
    return mutate


def _add(path, value):
    def mutate(f):
        parent, _, key = path.rpartition("/")
        f[parent].create_dataset(key, data=value)
    return mutate


def _delete(path):
    def mutate(f):
        parent, _, key = path.rpartition("/")
        del f[parent][key]
    return mutate


def _soft_link(f):
    f["layer/4"]["alias"] = h5py.SoftLink("/layer/4/weight")


def _huge_declared(f):
    del f["layer/4/weight"]
    f["layer/4"].create_dataset("weight", shape=(1 << 14, 1 << 14), dtype=np.float32, chunks=(64, 64))


def _external_link(f):
    f["layer/1"]["ext"] = h5py.ExternalLink("other.h5", "/x")


@pytest.mark.parametrize("mutate, match", [
    (_soft_link, "soft link refused"),
    (_external_link, "external link refused"),
    (_huge_declared, "refused before reading"),
    (_add("layer/4/delay", np.ones(24)), "synaptic delays are not supported"),
    (_add("layer/1/extra", np.ones(2)), "unsupported member 'extra'"),
    (_add("layer/2/neuron/messageBits", np.int64(3)), "graded spikes"),
    (_set("layer/1/neuron/iDecay", np.int64(0)), r"layer 1.*iDecay.*\[1, 4096\]"),
    (_set("layer/1/neuron/vDecay", np.int64(4096)), r"vDecay.*\[0, 4095\]"),
    (_set("layer/2/neuron/vThMant", np.int64(1 << 17)), r"vThMant.*\[0, 131071\]"),
    (_set("layer/2/neuron/refDelay", np.int64(2)), "refractory delay 2 refused"),
    (_set("layer/2/neuron/wgtExp", np.int64(1)), "weight exponent 1 refused"),
    (_set("layer/1/neuron/type", "SDNN", h5py.string_dtype()), "neuron type 'SDNN' is not supported"),
    (_delete("layer/4/neuron"), "layer 4.*neuron.*missing"),
    (_set("layer/1/weight", np.full((4, 2, 3, 3), 0.5, np.float32)), "must hold integers"),
    (_set("layer/1/weight", np.full((4, 2, 3, 3), 300, np.float32)), r"weight.*\[-256, 255\]"),
    (_set("layer/1/weight", np.ones((4, 3, 3, 3), np.float32)), r"layer/1/weight.*expected shape \(4, 2"),
    (_set("layer/1/bias", np.full(4, 5000, np.float32)), r"bias.*\[-4096, 4095\]"),
    (_set("layer/1/bias", np.full(4, np.nan, np.float32)), "NaN"),
    (_set("layer/1/shape", np.array([4, 5, 7])), "does not match the convolution"),
    (_set("layer/1/groups", np.int64(3)), "groups 3 must divide"),
    (_set("layer/4/inFeatures", np.int64(81)), "inFeatures.*80"),
    (_set("layer/4/weight", np.zeros((24, 80), np.float32)), "all weights are zero"),
    (_delete("layer/3"), "members must be named"),
    (_set("layer/3/type", np.array([b"pool"], "S10")), "layer type 'pool' is not supported"),
    (_set("layer/0/type", np.array([b"dense"], "S10")), "the first layer must be 'input'"),
    (lambda f: f.create_dataset("other", data=np.ones(3)), "unsupported top-level member 'other'"),
])
def test_reader_refuses(tmp_path, mutate, match):
    path = write_small_net(tmp_path / "bad.net", np.random.default_rng(5), mutate=mutate)
    with pytest.raises(FormatError, match=match) as info:
        read_netx(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text


def test_reader_refuses_dense_after_conv_without_flatten(tmp_path):
    def mutate(f):
        del f["layer/3"]
        f["layer"].move("4", "3")
        f["layer"].move("5", "4")
    path = write_small_net(tmp_path / "bad.net", np.random.default_rng(6), mutate=mutate)
    with pytest.raises(FormatError, match="needs a flatten layer"):
        read_netx(path)


def test_reader_refuses_overflow_risk(tmp_path):
    # 80 inputs x weight 254 (mixed sign): worst-case sum fine; a 4096-wide fan-in of 255s is not
    def mutate(f):
        del f["layer/4/weight"]
        f["layer/4"].create_dataset("weight", data=np.full((24, 80), 250, np.float32))
    net = read_netx(write_small_net(tmp_path / "ok.net", np.random.default_rng(7), mutate=mutate))
    assert net.layers[3].a_bound == 80 * 250
    old = nxp.A_MAX
    try:
        nxp.A_MAX = 80 * 250 - 1
        with pytest.raises(FormatError, match="32-bit arithmetic"):
            read_netx(tmp_path / "ok.net")
    finally:
        nxp.A_MAX = old


def test_reader_refuses_garbage_and_missing(tmp_path):
    bad = tmp_path / "garbage.net"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(FormatError, match="garbage.net"):
        read_netx(bad)
    with pytest.raises(FormatError, match="no such file"):
        read_netx(tmp_path / "absent.net")
    with pytest.raises(FormatError, match="not a regular file"):
        read_netx(tmp_path)


# =========================================================================================================
# the golden files lava-dl ships
# =========================================================================================================

@needs_peer
def test_tinynet_golden_output():
    """lava-dl test_hdf5.py::test_tinynet: 17 + 3 steps, u/v of layer i reset every 17 steps with offset i - 1
    (io.reset.Reset: zeroed after step t with (t - 1) mod 17 == i - 1, i.e. before step t with
    t mod 17 == i + 1: netx reset_interval=17, reset_offset=0); output[..., 2:17] == output.npy[0]
    transposed to (W, H, C, T) without its first step."""
    net = read_netx(TINY / "tiny.net")
    assert [type(x).__name__ for x in net.layers] == ["InputLayer", "ConvLayer", "ConvLayer"]
    steps = 17 + len(net.layers)
    rec = NetxSimulator(net, reset_interval=17).run(np.load(TINY / "input_bias.npy").astype(int), steps)
    out = rec.spikes[2][0]                                      # (W, H, C, T) = (1, 1, 36, 20)
    gt = np.load(TINY / "output.npy")[0].transpose(2, 1, 0, 3)[..., 1:]
    assert out.shape == (1, 1, 36, 20) and gt.shape == (1, 1, 36, 15)
    mismatches = int(np.abs(out[..., 2:17].astype(int) - gt.astype(int)).sum())
    assert mismatches == 0
    assert int(gt.sum()) > 50  # the golden output is not silent


@pytest.fixture(scope="module")
def pilot_run():
    if not (PILOT / "network.net").is_file():
        pytest.skip(f"lava-dl's netx peer data not found under {PEER} (set MSAT_SHARED_DATA)")
    net = read_netx(PILOT / "network.net")
    rec = NetxSimulator(net, reset_interval=17).run(np.load(PILOT / "image.npy"), 24,
                                                    record_layers=range(len(net.layers)), record_state=True)
    return net, rec


def _golden(name):
    path = PILOT / f"{name}.npy"
    return np.load(path) if path.is_file() else None


@needs_peer
def test_pilotnet_lif_golden_spikes(pilot_run):
    """Every layer's spikes over the 24 recorded steps (netx reset_interval=17, reset_offset=0: layer k's
    states are zeroed before step t with t mod 17 == k + 1); golden index j = Lava step j + 1."""
    net, rec = pilot_run
    assert len(net.layers) == 10
    counts = {}
    for k, name in enumerate(PILOT_NAMES[:-1]):  # fc-3's spikes: see test_pilotnet_lif_fc3
        gold = _golden(name)
        assert gold.shape[-1] == 24 and rec.spikes[k][0].shape == gold.shape
        counts[name] = int((rec.spikes[k][0] != gold).sum())
        assert gold.sum() > 0
    assert counts == {name: 0 for name in PILOT_NAMES[:-1]}


@needs_peer
def test_pilotnet_lif_golden_u(pilot_run):
    net, rec = pilot_run
    counts = {}
    for k, name in enumerate(PILOT_NAMES[:-1]):
        gold = _golden(f"{name}-u")
        if gold is None:  # input-u / conv-0-u are not in the data (README)
            continue
        counts[name] = int((rec.u[k][0] != gold).sum())
        assert np.abs(gold).max() > 0
    assert sorted(counts) == PILOT_NAMES[2:-1] and counts == {name: 0 for name in counts}


@needs_peer
def test_pilotnet_lif_golden_v(pilot_run):
    """v equals the golden at every neuron-step that did not spike; at every neuron-step that spiked, Lava's v
    is 0 (reset to zero; the benchmark's Lava cross-check confirms it) while the golden file holds the constant
    128 there: a recording convention of the golden run, not dynamics (carrying 128 into the next step breaks
    the spike equality above)."""
    net, rec = pilot_run
    nonspiking, spiking = {}, {}
    for k, name in enumerate(PILOT_NAMES[:-1]):
        gold = _golden(f"{name}-v")
        if gold is None:
            continue
        ours, s = rec.v[k][0], rec.spikes[k][0]
        nonspiking[name] = int((ours != gold)[~s].sum())
        spiking[name] = int((gold[s] != GOLDEN_SPIKING_V).sum()) + int((ours[s] != 0).sum())
        assert s.sum() > 0
    assert nonspiking == {n: 0 for n in nonspiking} and spiking == {n: 0 for n in spiking}


@needs_peer
def test_pilotnet_lif_fc3(pilot_run):
    """fc-3 (an integrator, vThMant 131071) was recorded differently (25 float64 steps): its golden u agrees with
    ours up to step 8, but from there it is inconsistent with fc-2's own golden spikes under any synapse delay:
    golden fc-3-u[11] = -5376 = -84 << 6, and W . s_fc2(j) >> 2 takes no value -84 for any recorded step j."""
    net, rec = pilot_run
    gu, gv, gs = _golden("fc-3-u"), _golden("fc-3-v"), _golden("fc-3-s")
    assert gu.shape == (1, 25)
    assert np.array_equal(rec.u[9][0][..., :8], gu[..., :8].astype(np.int64))
    assert np.array_equal(rec.v[9][0][..., :8], gv[..., :8].astype(np.int64))
    assert not rec.spikes[9].any() and not gs.any()
    fc3 = net.layers[9]
    s2 = _golden("fc-2")
    reachable = {int((fc3.lava_weight[:, s2[:, j]].sum(axis=1) >> -fc3.weight_exp)[0]) << 6 for j in range(24)}
    assert int(gu[0, 11]) == -5376 and -5376 not in reachable


@needs_peer
def test_pilotnet_lif_loihi_procedure():
    """lava-dl test_hdf5_nx.py::test_pilotnet_lif (Loihi 2): reset_interval=16, 15 steps; layer k's u after step
    15 == the golden u at index 14 (conv-(k-1)-u for k < 6, fc-(k-6)-u after; k=9 is fc-3)."""
    net = read_netx(PILOT / "network.net")
    rec = NetxSimulator(net, reset_interval=16).run(np.load(PILOT / "image.npy"), 15,
                                                    record_layers=range(2, 10), record_state=True)
    mismatches = {}
    for k in range(2, 10):
        gold = _golden(f"{PILOT_NAMES[k]}-u")
        mismatches[PILOT_NAMES[k]] = int((rec.u[k][0][..., 14] != gold[..., 14]).sum())
    assert mismatches == {PILOT_NAMES[k]: 0 for k in range(2, 10)}


# =========================================================================================================
# Lava's own CPU run
# =========================================================================================================

@needs_peer
@pytest.mark.lava
@pytest.mark.timeout(300)
def test_tinynet_equals_lava_cpu():
    """lava-dl netx.hdf5.Network(tiny.net) under Loihi2SimCfg(fixed_pt), with lava-dl's io.reset.Reset procedure,
    all 20 output steps == ours (not only the 15 the golden file covers)."""
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io

    bias = np.load(TINY / "input_bias.npy").astype(int)
    lnet = netx.hdf5.Network(net_config=str(TINY / "tiny.net"))
    steps = 17 + len(lnet)
    sink = io.sink.RingBuffer(shape=lnet.out_layer.out.shape, buffer=steps)
    lnet.out_layer.out.connect(sink.a_in)
    for i, layer in enumerate(lnet.layers):
        for var in (layer.neuron.u, layer.neuron.v):
            io.reset.Reset(interval=17, offset=i - 1).connect_var(var)
    lnet.in_layer.neuron.bias_mant.init = bias
    try:
        lnet.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        lava_out = sink.data.get()
        lava_u = [np.asarray(layer.neuron.u.get()) for layer in lnet.layers]
    finally:
        lnet.stop()
    rec = NetxSimulator(read_netx(TINY / "tiny.net"), reset_interval=17).run(bias, steps, record_layers=[0, 1, 2],
                                                                             record_state=True)
    assert lava_out.shape == rec.spikes[2][0].shape
    assert int((lava_out != rec.spikes[2][0]).sum()) == 0 and lava_out.sum() > 50
    assert all(np.array_equal(lava_u[k], rec.u[k][0][..., -1]) for k in range(3))


# =========================================================================================================
# msat-lava netx-run
# =========================================================================================================

def test_cli_netx_run(tmp_path, capsys):
    import json

    from msat_lava.cli import main

    rng = np.random.default_rng(8)
    path = write_small_net(tmp_path / "small.net", rng)
    assert main(["netx-run", str(path)]) == 0
    assert "dense 80->24 (flatten)" in capsys.readouterr().out
    bias = rng.integers(0, 60, size=(2, 8, 9, 2))
    np.save(tmp_path / "bias.npy", bias)
    out = tmp_path / "rec.npz"
    argv = ["netx-run", str(path), "--bias", str(tmp_path / "bias.npy"), "--steps", "12", "--reset-interval", "5",
            "--record", "1", "4", "--state", "--out", str(out), "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    rec = NetxSimulator(read_netx(path), reset_interval=5).run(bias, 12, record_layers=[1, 4], record_state=True)
    assert summary["spike_counts"]["1"] == [int(x) for x in rec.spikes[1].reshape(2, -1).sum(axis=1)]
    with np.load(out) as z:
        assert np.array_equal(z["spikes_1"], rec.spikes[1]) and np.array_equal(z["v_4"], rec.v[4])
    assert main(argv) == 2  # --out exists
    assert "exists" in capsys.readouterr().err
    np.save(tmp_path / "wrong.npy", np.zeros((9, 8, 2), np.int64))
    assert main(["netx-run", str(path), "--bias", str(tmp_path / "wrong.npy")]) == 2
    assert "expected shape (8, 9, 2)" in capsys.readouterr().err
    np.save(tmp_path / "big.npy", np.full((8, 9, 2), 9000, np.int64))
    assert main(["netx-run", str(path), "--bias", str(tmp_path / "big.npy")]) == 2
    assert "13-bit" in capsys.readouterr().err
    assert main(["netx-run", str(path), "--bias", str(tmp_path / "bias.npy"), "--record", "9"]) == 2
    assert "--record 9" in capsys.readouterr().err
    bad = write_small_net(tmp_path / "bad.net", rng, mutate=_set("layer/2/neuron/refDelay", np.int64(3)))
    assert main(["netx-run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refractory delay 3" in err and "layer 2" in err
