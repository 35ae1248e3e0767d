"""The fixed reference's float32 fast path for conv/linear (msat_lava.program) is exact: chunked float32 results
equal integer arithmetic (int64, numpy) on adversarial weights and payloads, including power-of-two payloads
whose low chunks are zero and all-zero inputs, for float64 payloads (split as integers) and float32 payloads (the
engine's buffers; split in float32)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from msat_lava.program import Op, _exact_f32_chunks, apply_op_torch


def _conv_op(mant: np.ndarray, groups: int = 1) -> Op:
    c_out, c_in_g, k, _ = mant.shape
    c_in = c_in_g * groups
    return Op(kind="conv", node="c", in_shape=(c_in, 6, 6), out_shape=(c_out, 6, 6),
              params={"stride": (1, 1), "padding": (1, 1), "groups": groups},
              weight=mant.astype(np.float64), mant=mant)


def _conv_int64(x: np.ndarray, mant: np.ndarray, groups: int) -> np.ndarray:
    """Direct 3×3 / stride 1 / pad 1 grouped convolution in numpy int64 (no floats anywhere)."""
    b, c_in, h, w = x.shape
    c_out = mant.shape[0]
    per_in, per_out = c_in // groups, c_out // groups
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((b, c_out, h, w), dtype=np.int64)
    for o in range(c_out):
        g = o // per_out
        for ci in range(per_in):
            for dy in range(3):
                for dx in range(3):
                    out[:, o] += mant[o, ci, dy, dx] * xp[:, g * per_in + ci, dy:dy + h, dx:dx + w]
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # float32: split in float32, no int64 copies
@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("payload", ["graded", "power_of_two", "zero"])
def test_chunked_f32_conv_is_exact(groups, payload, dtype):
    rng = np.random.default_rng(5)
    c_in, c_out = 8, 8
    mant = rng.choice(np.array([-127, -126, 125, 127]), size=(c_out, c_in // groups, 3, 3)).astype(np.int64)
    if payload == "graded":
        x = rng.integers(0, 1 << 13, size=(3, c_in, 6, 6))
    elif payload == "power_of_two":
        x = (rng.random((3, c_in, 6, 6)) < 0.4) * (1 << 13)
    else:
        x = np.zeros((3, c_in, 6, 6), dtype=np.int64)
    x = x.astype(np.int64)
    x[0, 0, 0, 0] = 0 if payload == "zero" else x.max()  # keep the maximum present for a deterministic split
    op = _conv_op(mant, groups)
    xt = torch.as_tensor(x, dtype=dtype)
    chunks, bits = _exact_f32_chunks(op, xt)
    if payload != "zero":
        assert chunks >= 2 and bits >= 1  # the chunked path is the one under test
    got = apply_op_torch(op, xt, fixed=True, cache={})
    assert got.dtype == torch.float64
    np.testing.assert_array_equal(got.numpy().astype(np.int64), _conv_int64(x, mant, groups))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunked_f32_linear_is_exact_at_the_float32_limit(dtype):
    """A row whose ‖w‖₁ is large (127 · 1024) forces 1-bit chunks; sums reach ~2^29, beyond float32's 2^24."""
    rng = np.random.default_rng(6)
    mant = np.where(rng.random((5, 1024)) < 0.5, -127, 127).astype(np.int64)
    mant[0] = 127  # one all-positive row: its sum is the full bound
    x = rng.integers(0, 1 << 8, size=(4, 1024)).astype(np.int64)
    x[0] = (1 << 8) - 1
    op = Op(kind="linear", node="fc", in_shape=(1024,), out_shape=(5,), weight=mant.astype(np.float64),
            mant=mant)
    xt = torch.as_tensor(x, dtype=dtype)
    chunks, bits = _exact_f32_chunks(op, xt)
    assert chunks >= 2
    got = apply_op_torch(op, xt, fixed=True, cache={}).numpy().astype(np.int64)
    want = x @ mant.T
    assert int(want.max()) > 1 << 24
    np.testing.assert_array_equal(got, want)
