"""The Lava speed work of issue 12: compiled terms, stage grouping, and the netx CUBA network of the benchmark.

* :class:`msat_lava.lava.kernels.TermKernel` returns exactly what :func:`msat_lava.program.apply_term_np` returns
  for every term of the test networks (fixed point: the same integers, through both the float32 and the float64
  path; float: within rounding).
* :func:`msat_lava.lava.build.partition` cuts the program into consecutive groups of the asked size, and a Lava
  run is bit-exact with the reference whatever the grouping (one process per stage, two stages per process, the
  whole network in one).
* ``benchmarks/lava_speed.py`` writes a netx CUBA-LIF chain that lava-dl's ``netx.hdf5.Network`` loads and runs;
  its first layer's spikes follow the netx integer semantics (LAVA_NOTES §2.4, §2.6) of the file's own weights.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import _nets
from msat_lava import reference
from msat_lava.lava import kernels
from msat_lava.lava.build import partition, run_lava
from msat_lava.program import apply_op_np, apply_term_np, input_payload_np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import lava_speed  # noqa: E402  benchmarks/lava_speed.py

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IDS = [7, 3, 11]
STEPS = 8


def _payloads(shape, rng, hi: int, signed: bool = False) -> np.ndarray:
    """Spike-like integer payloads: ~40 % nonzero, values in [1, hi] (or ±hi)."""
    vals = rng.integers(1, hi + 1, size=shape)
    if signed:
        vals = vals * rng.choice([-1, 1], size=shape)
    return np.where(rng.random(shape) < 0.4, vals, 0).astype(np.int64)


@pytest.mark.parametrize("name, mode", [("resmix", "msat"), ("poolmix", "const")])
def test_term_kernels_equal_apply_term_np(name, mode):
    prog = _nets.convert(name, mode).program
    rng = np.random.default_rng(3)
    f32_used = f64_used = 0
    for s in prog.stages:
        for t in s.terms:
            shape = prog.source_shape(t.source)
            for fixed in (True, False):
                kern = kernels.TermKernel(t, fixed)
                # 2^12 payloads take the exact float32 path for these small layers; 2^22 forces float64
                for hi in (1 << 12, 1 << 22):
                    p = _payloads(shape, rng, hi, signed=t.source == "input")
                    want = apply_term_np(t, p, fixed)
                    got = kern(p)
                    assert got.dtype == np.float64 and got.shape == want.shape
                    if fixed:
                        assert np.array_equal(got, want), (s.name, t.source, hi)
                    else:
                        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9 * max(1.0, np.abs(want).max()))
                    if fixed and any(o.kind == "conv" for o in t.ops):  # which GEMM path did the conv take?
                        j = next(i for i, o in enumerate(t.ops) if o.kind == "conv")
                        xin = np.asarray(p, dtype=np.float64)
                        for o in t.ops[:j]:
                            xin = apply_op_np(o, xin, True)
                        if kern._ops[j]._exact_in_f32(xin):
                            f32_used += 1
                        else:
                            f64_used += 1
    assert f32_used > 0 and f64_used > 0  # both GEMM paths were compared


def test_conv_kernel_float32_bound_is_checked():
    prog = _nets.convert("resmix", "msat").program
    op = next(o for s in prog.stages for t in s.terms for o in t.ops if o.kind == "conv")
    k = kernels.ConvKernel(op, fixed=True)
    small = np.zeros(op.in_shape, dtype=np.int64)
    small.flat[0] = int(kernels.F32_EXACT // (k.l1 + 1))
    big = small.copy()
    big.flat[0] = int(kernels.F32_EXACT // k.l1) + 1
    assert k._exact_in_f32(small) and not k._exact_in_f32(big)
    assert not kernels.ConvKernel(op, fixed=False)._exact_in_f32(small)  # the float model stays float64


def test_partition_sizes_and_order():
    prog = _nets.convert("resmix", "msat").program
    names = [s.name for s in prog.stages]
    for spp in (1, 2, 3, None, 0):
        groups = partition(prog, spp)
        assert [s.name for g in groups for s in g] == names
        if spp:
            assert all(len(g) == spp for g in groups[:-1]) and 1 <= len(groups[-1]) <= spp
    assert len(partition(prog, 1)) == len(names)
    assert len(partition(prog, None)) == 1
    with pytest.raises(ValueError):
        partition(prog, -1)


@pytest.mark.lava
@pytest.mark.parametrize("spp", [1, 2])
def test_lava_bit_exact_for_any_grouping(spp):
    """run_lava's default (whole network in one process) is covered by tests/test_lava_bitexact.py."""
    conv = _nets.convert("resmix", "msat", sc=((1, 0.7), (-1, 0.6)), sc_early=6)
    prog = conv.program
    x = _nets.random_inputs(conv.model.input_shape, len(IDS), seed=99)
    names = tuple(s.name for s in prog.stages)
    ref = reference.simulate(prog, x, STEPS, precision="fixed", sample_ids=IDS, record=names,
                             record_readout=True, progress=False)
    lav = run_lava(prog, x, STEPS, precision="fixed", sample_ids=IDS, record=names, stages_per_process=spp)
    assert lav.num_processes == 1 + len(partition(prog, spp))
    assert np.array_equal(lav.readout, ref.readout)
    for name in names:
        assert np.count_nonzero(ref.traces[name]) > 0, name
        assert np.array_equal(lav.traces[name], ref.traces[name]), name
    assert lav.per_step_s > 0 and lav.compile_s > 0 and lav.build_s >= 0


# ---------------------------------------------------------------------------------------------------------
# the benchmark's netx CUBA network
# ---------------------------------------------------------------------------------------------------------
class MiniRes(nn.Module):
    """akamaster-style: conv-BN-ReLU stem, an identity block, an option-A block, global average pool, fc."""

    input_shape = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.b1 = _nets._Block(4, 4, 1, "id")
        self.b2 = _nets._Block(4, 8, 2, "A")
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.b2(self.b1(F.relu(self.bn(self.stem(x)))))
        x = F.avg_pool2d(x, x.size()[3])
        return self.fc(x.view(x.size(0), -1))


@pytest.fixture(scope="module")
def mini_program():
    from msat_lava.program import from_converted
    from netx_export.api import convert

    with torch.random.fork_rng():
        torch.manual_seed(4)
        model = MiniRes()
    _nets.randomize_bn(model, torch.Generator().manual_seed(5))
    model.eval()
    calib = _nets.random_inputs(MiniRes.input_shape, 16, seed=6).astype(np.float32)
    return from_converted(convert(model, calib, method="msat", preset="resnet20", progress=False))


def test_cuba_netx_file_has_our_layers_and_neurons(mini_program, tmp_path):
    import h5py

    prog = mini_program
    info = lava_speed.write_cuba_netx(prog, tmp_path / "cuba.net")
    neuron_stages = [s for s in prog.stages if s.kind == "neuron"]
    assert info["spiking_layers"] == len(neuron_stages) == 5
    assert info["neurons"] == sum(int(np.prod(s.shape)) for s in prog.stages)
    with h5py.File(tmp_path / "cuba.net", "r") as f:
        layer = f["layer"]
        types = [layer[str(i)]["type"][0].decode() for i in range(len(layer))]
        assert types == ["input"] + ["conv"] * 5 + ["flatten", "dense"]
        for i, s in enumerate(neuron_stages, start=1):
            g = layer[str(i)]
            assert tuple(g["shape"][()]) == tuple(s.shape)
            _, op = lava_speed._main_conv(s)
            assert g["weight"].shape == np.asarray(op.mant).shape
            assert tuple(g["stride"][()]) == tuple(op.params["stride"])
            assert "messageBits" not in g["neuron"]  # netx 0.6 cannot read it (LAVA_NOTES §2.1)
        assert layer[str(len(layer) - 1)]["weight"].shape == (3, 8 * 4 * 4)


@pytest.mark.lava
@pytest.mark.timeout(60)
def test_cuba_netx_network_loads_and_runs_in_lava_dl(mini_program, tmp_path):
    import h5py

    prog = mini_program
    path = tmp_path / "cuba.net"
    info = lava_speed.write_cuba_netx(prog, path)
    x = _nets.random_inputs(prog.input_shape, 1, seed=8)
    p_in, _ = input_payload_np(prog, x, True)
    steps = 3
    out = lava_speed.run_netx(path, p_in, steps, info["input_message_bits"], probe_layer=0)
    assert out["layers"] == 6 and out["per_step_s"] > 0
    got = out["probe_spikes"].transpose(2, 1, 0, 3)  # (C, H, W, T)

    # layer 1 by the netx integer rules: Conv delivers the previous step's sum, v += a + b, spike v > vth,
    # v = 0; LIFReset zeroes u, v of block 0 at steps with t % T == reset_offset + 1 = 2
    with h5py.File(path, "r") as f:
        g = f["layer/1"]
        w = g["weight"][()].astype(np.int64)
        b = g["bias"][()].astype(np.int64)
        vth = int(g["neuron/vThMant"][()])
        pad = tuple(int(v) for v in g["padding"][()])
        stride = tuple(int(v) for v in g["stride"][()])
    a = F.conv2d(torch.as_tensor(p_in[0], dtype=torch.float64)[None], torch.as_tensor(w, dtype=torch.float64),
                 stride=stride, padding=pad)[0].numpy().astype(np.int64)
    v = np.zeros_like(a)
    want = []
    for t in range(1, steps + 1):
        if t % steps == 2:
            v[...] = 0
        v = v + (a if t > 1 else 0) + b[:, None, None]
        fired = v > vth
        v[fired] = 0
        want.append(fired.astype(np.int64))
    want = np.stack(want, axis=-1)
    assert want.sum() > 0  # the layer really spikes
    np.testing.assert_array_equal(got, want)
