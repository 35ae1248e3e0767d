"""LIPooling (msat_lava.dynamics.lipool): cumulative output = running max of cumulative inputs (ALGORITHMS §1.9).

Expectations come from explicit window loops written here and from torch's max_pool2d (first step).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from msat_lava.dynamics.lipool import init_lipool_state, lipool_geometry, step_lipool


def _window_max_of_cumsum(cum, k, s, p):
    """max over each (padded) window of the cumulative input, by explicit loops; padding never wins."""
    B, C, H, W = cum.shape
    ho, wo = (H + 2 * p[0] - k[0]) // s[0] + 1, (W + 2 * p[1] - k[1]) // s[1] + 1
    out = np.empty((B, C, ho, wo), dtype=cum.dtype)
    for i in range(ho):
        for j in range(wo):
            vals = [cum[:, :, y, x] for y in range(i * s[0] - p[0], i * s[0] - p[0] + k[0])
                    for x in range(j * s[1] - p[1], j * s[1] - p[1] + k[1]) if 0 <= y < H and 0 <= x < W]
            out[:, :, i, j] = np.max(np.stack(vals), axis=0)
    return out


@pytest.mark.parametrize("hw, kernel, stride, padding", [
    ((6, 6), 2, 2, 0),          # VGG16 pooling
    ((7, 5), 3, 2, 1),          # overlapping windows with padding, odd sizes
    ((4, 4), 4, 4, 0),          # global 4x4 (ResNet20 "MaxPool(4)")
    ((5, 6), (3, 2), (1, 2), (1, 0)),
])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_cumulative_output_is_running_max(hw, kernel, stride, padding, backend):
    geom = lipool_geometry(hw, kernel, stride, padding)
    k, s, p = geom.kernel, geom.stride, geom.padding
    rng = np.random.default_rng(2)
    B, C, T = 2, 3, 25
    xs = rng.integers(0, 4097, size=(T, B, C) + hw) * rng.integers(0, 2, size=(T, B, C) + hw)  # sparse payloads
    like = np.zeros(0, dtype=np.int64) if backend == "numpy" else torch.zeros(0, dtype=torch.int64)
    st = init_lipool_state(geom, B, C, like)
    cum_in = np.zeros((B, C) + hw, dtype=np.int64)
    cum_out = 0
    for t in range(T):
        x = xs[t] if backend == "numpy" else torch.as_tensor(xs[t])
        st, y = step_lipool(geom, st, x)
        y = np.asarray(y)
        assert y.dtype == np.int64 and y.shape == (B, C) + geom.out_hw
        assert np.all(y >= 0)
        cum_in += xs[t]
        cum_out = cum_out + y
        assert np.array_equal(cum_out, _window_max_of_cumsum(cum_in, k, s, p))


def test_first_step_equals_maxpool_and_float_path():
    geom = lipool_geometry((8, 8), 3, 2, 1)
    x = torch.rand(2, 4, 8, 8, dtype=torch.float64)
    st = init_lipool_state(geom, 2, 4, torch.zeros(0, dtype=torch.float64), integer=False)
    st, y = step_lipool(geom, st, x)
    assert y.dtype == torch.float64
    assert torch.equal(y, F.max_pool2d(x, 3, 2, 1))
    # numpy float path agrees with torch float path
    stn = init_lipool_state(geom, 2, 4, np.zeros(0), integer=False)
    stn, yn = step_lipool(geom, stn, x.numpy())
    assert np.array_equal(yn, y.numpy())
    x2 = torch.rand(2, 4, 8, 8, dtype=torch.float64)
    st, y2 = step_lipool(geom, st, x2)
    stn, yn2 = step_lipool(geom, stn, x2.numpy())
    assert np.allclose(yn2, y2.numpy(), rtol=0, atol=1e-15)
    assert torch.allclose(y + y2, F.max_pool2d(x + x2, 3, 2, 1), rtol=0, atol=1e-12)


def test_geometry_shapes_and_errors():
    assert lipool_geometry((32, 32), 2).out_hw == (16, 16)
    assert lipool_geometry((7, 7), 3, 2, 1).out_hw == (4, 4)
    g = lipool_geometry((3, 3), 2, 1, 1)
    assert g.out_hw == (4, 4) and g.valid.sum() == 36  # corners 1 real element, edges 2, inner 4
    assert g.valid[0, 0].sum() == 1 and g.valid[0, 1].sum() == 2 and g.valid[1, 1].sum() == 4
    with pytest.raises(ValueError):
        lipool_geometry((4, 4), 2, 2, 2)  # padding > kernel/2
    with pytest.raises(ValueError):
        lipool_geometry((2, 2), 3, 1, 0)
    geom = lipool_geometry((4, 4), 2)
    with pytest.raises(ValueError):
        step_lipool(geom, init_lipool_state(geom, 1, 1), np.zeros((1, 1, 4, 5), dtype=np.int64))


@pytest.mark.parametrize("integer", [True, False])
@pytest.mark.parametrize("hw,kernel,stride,padding", [((6, 6), 2, 2, 0), ((7, 5), 3, 2, 1), ((5, 5), 3, 1, 1)])
def test_compiled_chunk_equals_the_step_function(integer, hw, kernel, stride, padding):
    """fused.lipool_chunk (the fast engine's) gives step_lipool's outputs and accumulators bit for bit, step after
    step, for overlapping windows and padding, in both precisions (float inputs in float32, as payloads come)."""
    from msat_lava.dynamics import fused

    rng = np.random.default_rng(sum(hw) + kernel + 10 * integer)
    b, c, tc = 2, 3, 5
    geom = lipool_geometry(hw, kernel, stride, padding)
    xs = (rng.integers(0, 9, size=(tc, b, c) + hw) if integer else rng.random((tc, b, c) + hw) * 3).astype(np.float32)
    st = init_lipool_state(geom, b, c, torch.zeros(0, dtype=torch.float64), integer=integer)
    want = []
    for t in range(tc):
        xt = torch.from_numpy(xs[t]).to(torch.int64 if integer else torch.float64)
        st, y = step_lipool(geom, st, xt)
        want.append(y.numpy())
    acc = init_lipool_state(geom, b, c, torch.zeros(0, dtype=torch.float64), integer=integer).acc.numpy()
    acc2 = acc.reshape(b * c, -1, acc.shape[-1])
    got = np.empty((tc, b * c, acc2.shape[1]))
    fused.lipool_chunk(xs.reshape(tc, b * c, -1), geom.index.reshape(acc2.shape[1:]),
                       geom.valid.reshape(acc2.shape[1:]), acc2, got)
    np.testing.assert_array_equal(got.reshape(np.stack(want).shape), np.stack(want))
    np.testing.assert_array_equal(acc, st.acc.numpy())
    assert np.stack(want).max() > 0
