"""Counter-based spike-confidence gate (msat_lava.dynamics.prng).

Oracle: SplitMix64 written here with Python integers (mod 2^64), checked against the published SplitMix64
sequence for seed 1234567 (Rosetta Code) and seed 0.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from msat_lava.dynamics import prng

M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15


def _splitmix_stream(seed: int, n: int) -> list[int]:
    out, state = [], seed
    for _ in range(n):
        state = (state + GAMMA) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        out.append(z ^ (z >> 31))
    return out


def _mix(key: int) -> int:
    return _splitmix_stream(key, 1)[0]


def _u24(seed, layer, sample, neuron, t) -> int:
    k_seed = _mix((seed << 32) | layer)
    return _mix(((sample << 40) | (t << 32) | neuron) ^ k_seed) >> 40


def test_oracle_matches_published_splitmix64():
    assert _splitmix_stream(1234567, 5) == [6457827717110365317, 3203168211198807973, 9817491932198370423,
                                            4593380528125082431, 16408922859458223821]
    assert _mix(0) == 0xE220A8397B1DCDAF
    assert prng.splitmix64(0) == 0xE220A8397B1DCDAF
    assert prng.seed_key(23, 12) == _mix((23 << 32) | 12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_uniform24_matches_oracle(backend):
    like = np.zeros(0) if backend == "numpy" else torch.zeros(0)
    rng = np.random.default_rng(1)
    for seed, layer, t in [(0, 0, 0), (23, 12, 15), (2**32 - 1, 2**32 - 1, 255), (977, 3, 7)]:
        ids = rng.integers(0, 2**24, 5)
        ids[0], ids[-1] = 0, 2**24 - 1
        n = 300
        u = prng.uniform24(ids if backend == "numpy" else torch.as_tensor(ids), n, t, layer, seed, like)
        u = np.asarray(u)
        assert u.shape == (5, n) and u.dtype == np.int64
        for b, sid in enumerate(ids):
            for j in (0, 1, 2, 137, n - 1):
                assert u[b, j] == _u24(seed, layer, int(sid), j, t)
    # a neuron index beyond 2^16 exercises the high half of the low word
    u = prng.uniform24(np.array([3]), 70_001, 4, 5, 6, like)
    assert int(np.asarray(u)[0, 70_000]) == _u24(6, 5, 3, 70_000, 4)


def test_numpy_torch_identical_bits():
    ids = np.array([0, 17, 123456, 2**24 - 1, 9])
    for t in (0, 3, 15):
        a = prng.uniform24(ids, 4096, t, 7, 23, np.zeros(0))
        b = prng.uniform24(torch.as_tensor(ids), 4096, t, 7, 23, torch.zeros(0))
        assert np.array_equal(a, b.numpy())


def test_gate_depends_only_on_sample_id():
    shape = (4, 3, 5)
    p = 0.6
    full = prng.keep_mask(np.array([5, 9, 2, 40]), shape, 3, 1, 23, p, np.zeros(0))
    sub = prng.keep_mask(np.array([2, 5]), shape, 3, 1, 23, p, np.zeros(0))
    single = prng.keep_mask(np.array([40]), shape, 3, 1, 23, p, np.zeros(0))
    assert full.shape == (4,) + shape and full.dtype == np.bool_
    assert np.array_equal(sub[0], full[2]) and np.array_equal(sub[1], full[0])
    assert np.array_equal(single[0], full[3])
    # repeated call: identical; other t / layer / seed: different streams
    again = prng.keep_mask(np.array([5, 9, 2, 40]), shape, 3, 1, 23, p, np.zeros(0))
    assert np.array_equal(again, full)
    for args in [(4, 1, 23), (3, 2, 23), (3, 1, 24)]:
        other = prng.keep_mask(np.array([5, 9, 2, 40]), shape, *args, p, np.zeros(0))
        assert not np.array_equal(other, full)


@pytest.mark.parametrize("p", [0.05, 0.392, 0.683, 0.96])
def test_keep_rate_within_3_sigma(p):
    ids = np.arange(100)
    keep = prng.keep_mask(ids, (2000,), 0, 3, 23, p, np.zeros(0))
    n = keep.size
    k = prng.keep_threshold(p)
    p_eff = 1 - k / 2**24
    assert abs(p_eff - p) < 2**-24
    assert abs(keep.mean() - p_eff) < 3 * math.sqrt(p_eff * (1 - p_eff) / n)


def test_keep_threshold_and_validation():
    assert prng.keep_threshold(1.0) == 0
    assert prng.keep_threshold(0.5) == 1 << 23
    assert prng.keep_threshold(0.683) == math.floor(0.317 * 2**24 + 0.5)
    with pytest.raises(ValueError):
        prng.keep_threshold(0.0)
    like = np.zeros(0)
    with pytest.raises(ValueError):
        prng.uniform24(np.array([2**24]), 4, 0, 0, 0, like)
    with pytest.raises(ValueError):
        prng.uniform24(np.array([-1]), 4, 0, 0, 0, like)
    with pytest.raises(ValueError):
        prng.uniform24(np.array([0]), 4, 256, 0, 0, like)
    with pytest.raises(ValueError):
        prng.uniform24(np.array([0]), 4, 0, 0, 2**32, like)
    with pytest.raises(ValueError):
        prng.uniform24(np.array([[0]]), 4, 0, 0, 0, like)
