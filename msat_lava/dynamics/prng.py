"""Counter-based Bernoulli gate for spike confidence (ALGORITHMS §3.4, §9.6; DESIGN §5).

The draw for one neuron at one step is a pure function of its coordinates, so it does not depend on batch
composition, evaluation order, backend (numpy / torch) or precision (float / fixed):

    mix(z)   = SplitMix64 output function on a 64-bit state z (all arithmetic mod 2^64):
               z += 0x9E3779B97F4A7C15
               z  = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
               z  = (z ^ (z >> 27)) * 0x94D049BB133111EB
               z  =  z ^ (z >> 31)
    K_seed   = mix( seed << 32 | layer_id )                       seed, layer_id ∈ [0, 2^32)
    key      = sample_id << 40 | t << 32 | neuron_index             sample_id ∈ [0, 2^24), t ∈ [0, 256),
                                                                    neuron_index ∈ [0, 2^32)
    U        = mix(key XOR K_seed) >> 40                           24-bit unsigned
    keep     = U >= K,   K = floor((1 − p)·2^24 + 0.5)             P(keep) = 1 − K/2^24 ≈ p

``neuron_index`` is the flat C-order index of the neuron within one sample (layer shape without batch axis),
``sample_id`` the dataset index of the sample, ``t`` the layer-local step (0-based). mix() is a bijection of
2^64, so for a fixed (seed, layer) distinct (sample, t, neuron) keys never collide.

Implementation: torch has no uint64, so both backends use the same code on int64 arrays holding the two 32-bit
halves (hi, lo) of every 64-bit word; products are formed from 16-bit pieces, so no intermediate exceeds 2^49.
Bits are therefore identical in numpy and torch by construction.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from msat_lava.dynamics import xp

__all__ = [
    "GATE_BITS", "SPLITMIX_GAMMA", "keep_threshold", "splitmix64", "seed_key", "uniform24", "keep_mask",
    "MAX_SAMPLE_ID", "MAX_T",
]

GATE_BITS = 24
SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1
_M32 = 0xFFFFFFFF
_M16 = 0xFFFF
MAX_SAMPLE_ID = (1 << 24) - 1
MAX_T = 255


def keep_threshold(p: float) -> int:
    """K = floor((1 − p)·2^24 + 0.5) for keep probability p ∈ (0, 1]; keep iff U ≥ K."""
    p = float(p)
    if not (0.0 < p <= 1.0):
        raise ValueError(f"spike confidence p must be in (0, 1], got {p!r}")
    return int(math.floor((1.0 - p) * float(1 << GATE_BITS) + 0.5))


def splitmix64(z: int) -> int:
    """Scalar mix() on a Python int in [0, 2^64) (used for the per-(seed, layer) key)."""
    z = (int(z) + SPLITMIX_GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def seed_key(seed: int, layer_id: int) -> int:
    """K_seed = mix(seed << 32 | layer_id), both in [0, 2^32)."""
    seed, layer_id = int(seed), int(layer_id)
    if not 0 <= seed <= _M32:
        raise ValueError(f"seed must be in [0, 2^32), got {seed}")
    if not 0 <= layer_id <= _M32:
        raise ValueError(f"layer_id must be in [0, 2^32), got {layer_id}")
    return splitmix64((seed << 32) | layer_id)


# ---- 64-bit arithmetic on (hi, lo) pairs of int64 arrays, each half in [0, 2^32) ----

def _xor_shr(hi, lo, k: int):
    """z ^ (z >> k) for 0 < k < 32."""
    lo_s = (lo >> k) | ((hi << (32 - k)) & _M32)
    return hi ^ (hi >> k), lo ^ lo_s


def _mul32lo(a, b: int):
    """(a · b) mod 2^32 for a in [0, 2^32) (array) and constant b in [0, 2^32)."""
    a0 = a & _M16
    a1 = a >> 16
    return (a0 * b + (((a1 * b) & _M16) << 16)) & _M32


def _mul64(hi, lo, c: int):
    """(hi·2^32 + lo) · c mod 2^64 for a 64-bit constant c."""
    ch, cl = c >> 32, c & _M32
    c0, c1 = cl & _M16, cl >> 16
    l0 = lo & _M16
    l1 = lo >> 16
    mid = l0 * c1 + l1 * c0                      # < 2^33
    low = l0 * c0 + ((mid & _M16) << 16)         # < 2^33
    new_lo = low & _M32
    new_hi = (l1 * c1 + (mid >> 16) + (low >> 32) + _mul32lo(hi, cl) + _mul32lo(lo, ch)) & _M32
    return new_hi, new_lo


def _add64(hi, lo, c: int):
    low = lo + (c & _M32)
    return (hi + (c >> 32) + (low >> 32)) & _M32, low & _M32


def _mix_pairs(hi, lo):
    hi, lo = _add64(hi, lo, SPLITMIX_GAMMA)
    hi, lo = _xor_shr(hi, lo, 30)
    hi, lo = _mul64(hi, lo, _M1)
    hi, lo = _xor_shr(hi, lo, 27)
    hi, lo = _mul64(hi, lo, _M2)
    return _xor_shr(hi, lo, 31)


def uniform24(sample_ids: Any, n_neurons: int, t: int, layer_id: int, seed: int, like: Any) -> Any:
    """U for every (sample, neuron): int64 array (B, n_neurons) in [0, 2^24), backend/device of ``like``."""
    t = int(t)
    if not 0 <= t <= MAX_T:
        raise ValueError(f"gate step t must be in [0, {MAX_T}], got {t}")
    n_neurons = int(n_neurons)
    if not 0 <= n_neurons <= 1 << 32:
        raise ValueError(f"neuron count must be <= 2^32, got {n_neurons}")
    ids = xp.asarray(sample_ids, like, "int")
    if ids.ndim != 1:
        raise ValueError(f"sample_ids must be 1-D (B,), got shape {tuple(ids.shape)}")
    if ids.shape[0] and (int(ids.min()) < 0 or int(ids.max()) > MAX_SAMPLE_ID):
        raise ValueError(f"sample_ids must be in [0, 2^24), got range [{int(ids.min())}, {int(ids.max())}]")
    key = seed_key(seed, layer_id)
    hi = xp.reshape((ids << 8) | t, (ids.shape[0], 1)) ^ (key >> 32)
    lo = xp.reshape(xp.arange(n_neurons, like), (1, n_neurons)) ^ (key & _M32)
    hi, lo = _mix_pairs(hi, lo)  # both (B, n): every step mixes the halves
    return hi >> 8


def keep_mask(sample_ids: Any, sample_shape: Sequence[int], t: int, layer_id: int, seed: int, p: float,
              like: Any) -> Any:
    """Gate ε for a batch: bool array (B, *sample_shape), True = spike kept (U ≥ K(p))."""
    sample_shape = tuple(int(s) for s in sample_shape)
    n = 1
    for s in sample_shape:
        n *= s
    u = uniform24(sample_ids, n, t, layer_id, seed, like)
    keep = u >= keep_threshold(p)
    return xp.reshape(keep, (u.shape[0],) + sample_shape)
