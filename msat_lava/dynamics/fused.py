"""The neuron rules of :mod:`msat_lava.dynamics.neuron`, compiled (numba) and fused over a chunk of time steps.

This module is the fast form of the step functions :func:`~msat_lava.dynamics.neuron.step_fixed` and
:func:`~msat_lava.dynamics.neuron.step_float`, used by the layer-major reference engine
(:mod:`msat_lava.engine`). It implements the very same equations (see that module's docstring, repeated in short
below); ``tests/test_engine.py`` demands the same bits (fixed point) and the same values up to the last float
rounding of a transcendental function (float) as the step functions on random networks of every stage kind.

One call advances M neurons (a flat, batch-major array in any memory layout shared by all its arguments) by Tc
consecutive layer-local steps t0 … t0+Tc−1. Each neuron's state stays in registers for the whole chunk, so a
step costs one read of its synaptic sums and one write of its payload, instead of ≈ 30 array passes. Neurons are
independent, so the parallel loop over them gives the same bits for any thread count and any batch split.

Per neuron j and step t (x from up to two synaptic sums a_k, each a float holding an exact integer (fixed) or a
float sum (float), and the time-constant part ``base`` = bias + input-fed terms):

fixed (int64; ``rs(a, e)`` = ⌊(a + 2^(−e−1)) / 2^−e⌋ for e < 0, a·2^e otherwise — the term's round-shift):
    x̂ = base + rs(a₀, e₀) [+ rs(a₁, e₁)];  m̂ = v̂ + x̂
    θ̂ = θ̂_const | ONE at t = 0 | LUT(Δ̂ = v̂ − ⌊Ŝ/t⌋, x̂)           (netx_export.lut; int64 throughout)
    s = [m̂ ≥ θ̂] (Γ = 1) or clip(⌊m̂/θ̂⌋, 0, Γ);  s_g = ε·s while the gate acts
    v̂ = sat(m̂ − s_eff·θ̂);  payload = s_g·θ̂;  Ŝ += v̂;  n += s_g;  sat += [|v̂| ≥ v_max]
float (float64 state, raw units):
    x = base + a₀ [+ a₁];  m = v + x
    θ = k·λ | λ at t = 0 | max(λ·σ(z), λ·2^−F),  z from Δ = v − S/t and x (neuron.float_msat_theta)
    s, s_g, v, payload, S, n as above (no saturation).

DTIF-R's fixed model has its own kernel (:func:`dtif_fixed_chunk`: θ̂ from the layer's table at this step's x̂,
reset/payload by variant). A model whose fixed threshold is one integer per step for the whole layer, with the
default quanta (θ̂, θ̂) and a per-step integrate/fire schedule (BSNN-R; ``DynamicsModel.fixed_uniform_step``),
runs in :func:`uniform_fixed_chunk`. Every other registered model runs in the engine through its step function.

Mode codes: 0 const, 1 dtt, 2 det, 3 msat. The gate ε is the counter-based draw of :mod:`msat_lava.dynamics.prng`
computed in place (:func:`_keep`, native uint64 arithmetic, the same bits); ``gate_code`` 1 = 'code' (reset with
the ungated s, suppressed charge dropped), 0 = 'keep_charge'.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload, register_jitable

from msat_lava.dynamics import fmath, prng

__all__ = ["fixed_chunk", "float_chunk", "dtif_fixed_chunk", "uniform_fixed_chunk", "set_threads", "MODE_CODES",
           "DTIF_VARIANTS"]

MODE_CODES = {"const": 0, "dtt": 1, "det": 2, "msat": 3}

_CACHE = True  # compiled code is cached next to this file (__pycache__), so later processes load it
# Every kernel is compiled with error_model="numpy": a float division by zero gives IEEE inf/nan as numpy does,
# instead of a Python ZeroDivisionError check, whose branch keeps the loops from vectorizing (no divisor here
# can be zero: t ≥ 1, u, k_i, C, 1 + e > 0, θ̂ ≥ 1).


def _drop_stale_cache() -> None:
    """numba keys its cache on this file alone; the kernels also compile code and constants of fmath.py and
    prng.py, so the cached kernels are removed when either changed (best effort: a read-only install keeps its
    cache, which was built from the files beside it)."""
    here = Path(__file__).resolve().parent
    try:
        key = hashlib.sha256(b"".join((here / f).read_bytes() for f in ("fmath.py", "prng.py"))).hexdigest()
        cache = here / "__pycache__"
        stamp = cache / "fused.deps"
        if stamp.is_file() and stamp.read_text() == key:
            return
        for f in cache.glob("fused.*.nb[ic]"):
            f.unlink()
        cache.mkdir(exist_ok=True)
        tmp = cache / f"fused.deps.{os.getpid()}"
        tmp.write_text(key)
        os.replace(tmp, stamp)
    except OSError:
        pass


_drop_stale_cache()


def _noalias_option() -> bool:
    """Expose numba's (unmapped) ``noalias`` compiler flag as a jit option: array arguments then carry LLVM's
    ``noalias``, which lets loops with table lookups vectorize. numba is pinned (constraints.txt); without the
    flag the functions compile all the same, only slower."""
    try:
        from numba.core import cpu, options

        if not hasattr(cpu.CPUTargetOptions, "noalias"):
            cpu.CPUTargetOptions.noalias = options._mapping("noalias")
        return True
    except (ImportError, AttributeError):  # pragma: no cover - another numba
        return False


def _njit_noalias(fn):
    """njit for functions whose array arguments never share memory (callers guarantee it)."""
    kw = {"noalias": True} if _noalias_option() else {}
    return numba.njit(cache=_CACHE, error_model="numpy", **kw)(fn)


# --- fmath's primitives for scalars: fmath.exp/softplus/sigmoid then compile from their one source
@intrinsic
def _bits_to_f64(typingctx, bits):
    """The float64 whose IEEE bits are the int64 ``bits`` (an LLVM bitcast)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@overload(fmath._floor)
def _floor_ov(x):
    return lambda x: np.floor(x)


@intrinsic
def _select_f64(typingctx, cond, a, b):
    """An LLVM ``select``: no branch, so loops around it vectorize (a Python conditional compiles to one)."""
    def codegen(context, builder, signature, args):
        return builder.select(args[0], args[1], args[2])
    return types.float64(types.boolean, types.float64, types.float64), codegen


@intrinsic
def _select_i64(typingctx, cond, a, b):
    """:func:`_select_f64` for int64."""
    def codegen(context, builder, signature, args):
        return builder.select(args[0], args[1], args[2])
    return types.int64(types.boolean, types.int64, types.int64), codegen


@numba.njit(inline="always", cache=_CACHE, error_model="numpy")
def _imin(a, b):
    return _select_i64(a < b, np.int64(a), np.int64(b))


@numba.njit(inline="always", cache=_CACHE, error_model="numpy")
def _imax(a, b):
    return _select_i64(a > b, np.int64(a), np.int64(b))


@overload(fmath._select)
def _select_ov(cond, a, b):
    return lambda cond, a, b: _select_f64(cond, np.float64(a), np.float64(b))


@overload(fmath._minimum)
def _minimum_ov(a, b):
    return lambda a, b: _select_f64(a < b, np.float64(a), np.float64(b))


@overload(fmath._maximum)
def _maximum_ov(a, b):
    return lambda a, b: _select_f64(a > b, np.float64(a), np.float64(b))


@overload(fmath._abs)
def _abs_ov(a):
    return lambda a: abs(a)


@overload(fmath._pow2)
def _pow2_ov(k):
    return lambda k: _bits_to_f64((np.int64(k) + np.int64(1023)) << np.int64(52))


for _f in (fmath.exp, fmath.log1p01, fmath.softplus, fmath.sigmoid):
    register_jitable(inline="always")(_f)


def set_threads(n: int | None) -> int:
    """Use ``n`` threads for the parallel neuron loop (clamped to numba's pool); returns the previous count."""
    previous = numba.get_num_threads()
    if n is not None:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    return previous


#: neurons per block of the parallel loop: the block's state stays in L1 while the time loop runs over it, and the
#: inner loop over the block's neurons is unit-stride and branch-free (vectorizable).
BLOCK = 512


def _to_int(a):  # pragma: no cover - replaced by the overload below inside compiled code
    return np.int64(a)


@overload(_to_int)
def _to_int_impl(a):
    """An exact integer held in a float → int64; float32 (|a| < 2^24) goes through int32, which vectorizes."""
    if isinstance(a, types.Float) and a.bitwidth == 32:
        return lambda a: np.int64(np.int32(a))
    return lambda a: np.int64(a)


def shift_params(q: int, e: int) -> tuple[int, int, int]:
    """(mul, add, shift) with rs(a·q, e) = (a·mul + add) >> shift: the term's round-shift ⌊(a·q + 2^(−e−1)) / 2^−e⌋
    for e < 0, a·q·2^e for e ≥ 0, as one branch-free integer expression."""
    if e >= 0:
        return int(q) << int(e), 0, 0
    return int(q), 1 << (-int(e) - 1), -int(e)


@numba.njit(inline="always", cache=_CACHE, error_model="numpy")
def _input_fixed(b, a0, a1, mul0, add0, sh0, mul1, add1, sh1, two):
    """x̂ = b̂ + round-shift(a0) + [two terms] round-shift(a1): a neuron's integer input of one step from its constant
    part and its (at most two) synaptic terms (``shift_params`` gives each term's mul/add/shift)."""
    return b + ((_to_int(a0) * mul0 + add0) >> sh0) + two * ((_to_int(a1) * mul1 + add1) >> sh1)


@numba.njit(inline="always", cache=_CACHE, error_model="numpy")
def _interp(base, diff, a, shift, extra):
    i = a >> shift
    r = a & ((np.int64(1) << shift) - 1)
    return (base[i] + diff[i] * r) >> (shift + extra)


@numba.njit(inline="always", cache=_CACHE, error_model="numpy")
def _pinterp(tab, a, shift, extra, k):
    """:func:`_interp` on a packed table (engine._pack_interp: P = A·2^k + D, one read): D = P's low k bits as a
    signed number, A = (P − D) >> k, then (A + D·r) >> (shift + extra) — the same integer."""
    i = a >> shift
    r = a & ((np.int64(1) << shift) - 1)
    p = tab[i]
    d = (p << (64 - k)) >> (64 - k)
    return (((p - d) >> k) + d * r) >> (shift + extra)


@numba.njit(inline="always", cache=_CACHE, error_model="numpy")
def _fixed_theta(fdtt, fdet, delta, x, ip, sig, sp, det):
    """θ̂ for t ≥ 1 (neuron.fixed_msat_theta). fdtt, fdet: 1 where the mode has the DTT / DET part, else 0 (the
    unused part is evaluated on its one-entry zero table at index 0, and multiplied by 0: no branch).
    ip: the 17 int64 parameters of engine._lut_tables; sig, sp, det: its packed tables (:func:`_pinterp`)."""
    dclip = ip[0]
    d = _imin(_imax(delta, -dclip), dclip)
    neg = d < 0
    slope = _select_i64(neg, ip[1], ip[2])
    p = ip[3]
    lin = (d * slope + ((np.int64(1) << p) >> 1)) >> p
    a = _imin(_select_i64(neg, -d, d), ip[5])
    z = fdtt * (ip[4] + lin + _pinterp(sp, a, ip[6], 0, ip[15]))
    xi = _imin(_imax(x - ip[7], 0), ip[8])
    z = z + fdet * _pinterp(det, xi, ip[9], 0, ip[16])
    zmax = ip[10]
    zc = _imin(_imax(z, -zmax), zmax) + zmax
    theta = _pinterp(sig, zc, ip[11], ip[12], ip[14])
    return _imin(_imax(theta, 1), ip[13])


@_njit_noalias
def _fixed_prep(n, vb, sb, bb, x0, x1, xb, db, mul0, add0, sh0, mul1, add1, sh1, two, t, inv_t):
    """xb[i] = x̂ (:func:`_input_fixed`) and db[i] = Δ̂ = v̂ − ⌊Ŝ/t⌋ for a block's n neurons: one loop over
    non-aliasing arrays, which vectorizes (with the list's running store index in the same loop it does not)."""
    for i in range(n):
        xb[i] = _input_fixed(bb[i], x0[i], x1[i], mul0, add0, sh0, mul1, add1, sh1, two)
        db[i] = vb[i] - _floor_div(sb[i], t, inv_t)


@numba.njit(inline="always", cache=_CACHE, error_model="numpy")
def _list_above(n, vb, xb, db, dc, xc, ic, lo, fill):
    """The dense list of a block's neurons with m = vb[i] + xb[i] ≥ lo: their Δ (db[i]), x and index go to
    dc, xc, ic[0 … cnt−1]; db[i] becomes ``fill`` for every neuron (the threshold of those left out). A scalar
    loop (its store index is a running count); returns cnt."""
    cnt = 0
    for i in range(n):
        x = xb[i]
        dc[cnt] = db[i]
        xc[cnt] = x
        ic[cnt] = i
        cnt += np.int64(vb[i] + x >= lo)
        db[i] = fill
    return cnt


@numba.njit(cache=_CACHE, error_model="numpy")
def _fixed_thetas(n, vb, sb, bb, x0, x1, xb, thb, dc, xc, ic, thc, mul0, add0, sh0, mul1, add1, sh1, two, t, inv_t,
                  one, fdtt, fdet, ip, sig, sp, det):
    """xb[i] = x̂ and thb[i] = θ̂ of step t ≥ 1 for a block's n neurons, θ̂ = one where m̂ = v̂ + x̂ ≤ 0 (θ̂ ∈ [1, 2^F]
    cannot change that outcome: no spike, v̂ = m̂), so the LUTs are read only for the neurons with m̂ > 0: x̂ and
    Δ̂ of the block in one vectorized loop (thb holds Δ̂ until the list is made), the list of those neurons in a
    short scalar loop (its store index is a running count), their θ̂ in one vectorized loop (:func:`_theta_list`),
    scattered back. dc, xc, ic, thc: scratch of n entries."""
    _fixed_prep(n, vb, sb, bb, x0, x1, xb, thb, mul0, add0, sh0, mul1, add1, sh1, two, t, inv_t)
    cnt = _list_above(n, vb, xb, thb, dc, xc, ic, np.int64(1), one)  # m̂ ≥ 1: m̂ > 0
    _theta_list(cnt, dc, xc, thc, fdtt, fdet, ip, sig, sp, det)
    for c in range(cnt):
        thb[ic[c]] = thc[c]


@_njit_noalias
def _float_prep(n, vb, sb, bb, x0, x1, xb, db, two, inv_t, inv_u):
    """:func:`_fixed_prep` of the float model: xb[i] = x = b + a₀ [+ a₁], db[i] = Δ/u = (v − S/t)/u."""
    for i in range(n):
        xb[i] = bb[i] + np.float64(x0[i]) + two * np.float64(x1[i])
        db[i] = (vb[i] - sb[i] * inv_t) * inv_u


@_njit_noalias
def _theta_list(cnt, dc, xc, thc, fdtt, fdet, ip, sig, sp, det):
    """thc[c] = θ̂(Δ̂ = dc[c], x̂ = xc[c]) for c < cnt: a loop over dense arrays whose arguments do not alias, so
    the compiler vectorizes it (table reads become gathers)."""
    for c in range(cnt):
        thc[c] = _fixed_theta(fdtt, fdet, dc[c], xc[c], ip, sig, sp, det)


@numba.njit(inline="always", cache=_CACHE, error_model="numpy")
def _floor_div(s, t, inv_t):
    """⌊s / t⌋ for int64 |s| < 2^51 and 1 ≤ t < 2^21, inv_t = 1.0/t (float64), without a division: q = ⌊s·inv_t⌋
    is within one of the true quotient (relative error of s·inv_t < 2^−51, so the absolute error is < 1), and
    one integer correction each way makes it exact: q −= [q·t > s]; q += [(q + 1)·t ≤ s]. (A float division
    and math.floor here cost ~10 ns a neuron.)"""
    q = np.int64(np.floor(np.float64(s) * inv_t))
    q = q - np.int64(q * t > s)
    return q + np.int64((q + 1) * t <= s)


_GAMMA = np.uint64(prng.SPLITMIX_GAMMA)
_MIX1 = np.uint64(prng._M1)
_MIX2 = np.uint64(prng._M2)


@numba.njit(inline="always", cache=_CACHE, error_model="numpy")
def _keep(sample_id, t, n, kseed, kthr):
    """ε (1 kept, 0 suppressed) of :mod:`msat_lava.dynamics.prng` in native uint64 arithmetic:
    U = mix((sample_id << 40 | t << 32 | n) XOR K_seed) >> 40, keep iff U ≥ K."""
    z = (np.uint64(sample_id) << np.uint64(40)) | (np.uint64(t) << np.uint64(32)) | np.uint64(n)
    z = (z ^ kseed) + _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return np.int64(np.int64(z >> np.uint64(40)) >= kthr)


@numba.njit(inline="always", cache=_CACHE, error_model="numpy")
def _block_ids(sids, nidx, j0, n, need):
    """(sample id, logical neuron index) of the block's n neurons from physical index j0 on (sids[j // N],
    nidx[j % N], N = nidx.size), walked once per chunk instead of two integer divisions per neuron and step;
    empty when ``need`` is false (no step of the chunk is gated)."""
    m = n if need else 0
    bs = np.empty(m, np.int64)
    bn = np.empty(m, np.int64)
    n_per = nidx.shape[0]
    b = j0 // n_per
    p = j0 - b * n_per
    for i in range(m):
        bs[i] = sids[b]
        bn[i] = nidx[p]
        p += 1
        if p == n_per:
            p = 0
            b += 1
    return bs, bn


@numba.njit(inline="always", cache=_CACHE, error_model="numpy")
def _fire_fixed(vj, x, theta, gamma, kv, gc, vmax):
    """(v̂ after the step, s_g) for m̂ = v̂ + x̂ against θ̂; kv = ε (0/1), gc = 1 for the 'code' gate."""
    m = vj + x
    if gamma == 1:
        s = np.int64(m >= theta)
    else:
        s = min(max(m // theta, 0), gamma)
    sg = s * kv
    s_eff = sg + gc * (s - sg)
    return min(max(m - s_eff * theta, -vmax), vmax), sg


@numba.njit(parallel=True, cache=_CACHE, error_model="numpy")
def fixed_chunk(a0, sp0, a1, sp1, nterms, base, v, vsum, count, sat, t0, mode, theta_const, one, vmax, gamma,
                gate, gate_code, spikes_only, ip, sig, sp, det, payload, pmax):
    """Advance the fixed model by Tc = payload.shape[0] steps (module docstring); state arrays are updated in
    place. Term k's round-shifted sum is (a_k·mul + add) >> shift with sp_k = (mul, add, shift)
    (:func:`shift_params`). ``gate`` = (E, sample ids (B,), neuron index (N,), K_seed, K) (:class:`Gate`): ε is
    drawn for the layer-local steps t < E (E = 0: no gate). ``payload`` (Tc, M) receives s_g·θ̂, or s_g alone when ``spikes_only`` (a const layer, whose payload is then
    s_g times θ̂_const), as exact floats (float32 or float64); ``pmax`` (number of blocks,) each block's largest
    value written. The loop over a block's neurons has one form for a constant θ̂ and one for the LUT threshold,
    each free of data-independent branches."""
    tc = payload.shape[0]
    m_n = payload.shape[1]
    g_end, sids, nidx, kseed, kthr = gate
    mul0, add0, sh0 = sp0[0], sp0[1], sp0[2]
    mul1, add1, sh1 = sp1[0], sp1[1], sp1[2]
    two = np.int64(1) if nterms > 1 else np.int64(0)
    fdtt = np.int64(1) if mode == 1 or mode == 3 else np.int64(0)
    fdet = np.int64(1) if mode == 2 or mode == 3 else np.int64(0)
    gc = np.int64(gate_code)
    nblocks = (m_n + BLOCK - 1) // BLOCK
    for blk in numba.prange(nblocks):
        j0 = blk * BLOCK
        j1 = min(m_n, j0 + BLOCK)
        n = j1 - j0
        bs, bn = _block_ids(sids, nidx, j0, n, t0 < g_end)  # ε's sample id and neuron index per neuron
        vb = v[j0:j1]
        sb = vsum[j0:j1]
        cb = count[j0:j1]
        tb = sat[j0:j1]
        bb = base[j0:j1]
        nb = n if mode != 0 else 0  # scratch of the LUT path (_fixed_thetas); a const layer allocates nothing
        xb, thb, dc = np.empty(nb, np.int64), np.empty(nb, np.int64), np.empty(nb, np.int64)
        xc, ic, thc = np.empty(nb, np.int64), np.empty(nb, np.int64), np.empty(nb, np.int64)
        top = np.int64(0)
        for k in range(tc):
            t = t0 + k
            inv_t = 1.0 / max(t, 1)
            x0 = a0[k, j0:j1]
            x1 = a1[k, j0:j1]
            pk = payload[k, j0:j1]
            gated = t < g_end
            if mode != 0 and t > 0:
                _fixed_thetas(n, vb, sb, bb, x0, x1, xb, thb, dc, xc, ic, thc, mul0, add0, sh0, mul1, add1, sh1,
                              two, t, inv_t, one, fdtt, fdet, ip, sig, sp, det)
                for i in range(n):
                    vj = vb[i]
                    kv = _keep(bs[i], t, bn[i], kseed, kthr) if gated else 1
                    x = xb[i]
                    theta = thb[i]
                    vj, sg = _fire_fixed(vj, x, theta, gamma, kv, gc, vmax)
                    out = sg * theta
                    pk[i] = out
                    top = max(top, out)
                    vb[i] = vj
                    sb[i] += vj
                    cb[i] += sg
                    tb[i] += np.int64(abs(vj) >= vmax)
            else:
                theta = theta_const if mode == 0 else one
                outmul = np.int64(1) if spikes_only else theta
                for i in range(n):
                    vj = vb[i]
                    kv = _keep(bs[i], t, bn[i], kseed, kthr) if gated else 1
                    x = _input_fixed(bb[i], x0[i], x1[i], mul0, add0, sh0, mul1, add1, sh1, two)
                    vj, sg = _fire_fixed(vj, x, theta, gamma, kv, gc, vmax)
                    out = sg * outmul
                    pk[i] = out
                    top = max(top, out)
                    vb[i] = vj
                    sb[i] += vj
                    cb[i] += sg
                    tb[i] += np.int64(abs(vj) >= vmax)
        pmax[blk] = top


@numba.njit(parallel=True, cache=_CACHE, error_model="numpy")
def fixed_chunk_plain(a0, sp0, a1, sp1, nterms, base, v, vsum, count, sat, t0, mode, theta_const, one, vmax,
                      spikes_only, ip, sig, sp, det, payload, pmax):
    """:func:`fixed_chunk` for Γ = 1 with no gate in the chunk (the common case), with the branches that these fix
    taken out of the neuron loop, which the compiler can then vectorize: same arguments less Γ and the gate."""
    tc = payload.shape[0]
    m_n = payload.shape[1]
    mul0, add0, sh0 = sp0[0], sp0[1], sp0[2]
    mul1, add1, sh1 = sp1[0], sp1[1], sp1[2]
    two = np.int64(1) if nterms > 1 else np.int64(0)
    fdtt = np.int64(1) if mode == 1 or mode == 3 else np.int64(0)
    fdet = np.int64(1) if mode == 2 or mode == 3 else np.int64(0)
    nblocks = (m_n + BLOCK - 1) // BLOCK
    for blk in numba.prange(nblocks):
        j0 = blk * BLOCK
        j1 = min(m_n, j0 + BLOCK)
        n = j1 - j0
        vb = v[j0:j1]
        sb = vsum[j0:j1]
        cb = count[j0:j1]
        tb = sat[j0:j1]
        bb = base[j0:j1]
        nb = n if mode != 0 else 0   # scratch for the LUT path only (a const layer allocates nothing)
        xb = np.empty(nb, np.int64)   # x̂ of the block's neurons
        thb = np.empty(nb, np.int64)  # θ̂ of the block's neurons
        dc = np.empty(nb, np.int64)   # Δ̂, x̂, index and θ̂ of the neurons with m̂ > 0
        xc = np.empty(nb, np.int64)
        ic = np.empty(nb, np.int64)
        thc = np.empty(nb, np.int64)
        top = np.int64(0)
        for k in range(tc):
            t = t0 + k
            inv_t = 1.0 / max(t, 1)
            x0 = a0[k, j0:j1]
            x1 = a1[k, j0:j1]
            pk = payload[k, j0:j1]
            if mode != 0 and t > 0:
                _fixed_thetas(n, vb, sb, bb, x0, x1, xb, thb, dc, xc, ic, thc, mul0, add0, sh0, mul1, add1, sh1,
                              two, t, inv_t, one, fdtt, fdet, ip, sig, sp, det)
                for i in range(n):
                    vj = vb[i]
                    m = vj + xb[i]
                    theta = thb[i]
                    s = np.int64(m >= theta)
                    vj = min(max(m - s * theta, -vmax), vmax)
                    out = s * theta
                    pk[i] = out
                    top = max(top, out)
                    vb[i] = vj
                    sb[i] += vj
                    cb[i] += s
                    tb[i] += np.int64(abs(vj) >= vmax)
            else:
                theta = theta_const if mode == 0 else one
                outmul = np.int64(1) if spikes_only else theta
                for i in range(n):
                    vj = vb[i]
                    x = _input_fixed(bb[i], x0[i], x1[i], mul0, add0, sh0, mul1, add1, sh1, two)
                    m = vj + x
                    s = np.int64(m >= theta)
                    vj = min(max(m - s * theta, -vmax), vmax)
                    out = s * outmul
                    pk[i] = out
                    top = max(top, out)
                    vb[i] = vj
                    sb[i] += vj
                    cb[i] += s
                    tb[i] += np.int64(abs(vj) >= vmax)
        pmax[blk] = top


@numba.njit(parallel=True, cache=_CACHE, error_model="numpy")
def float_chunk(a0, a1, nterms, base, v, vsum, count, t0, mode, lam, k_lam, gamma, gate, gate_code, fp,
                payload):
    """Advance the float model by Tc = payload.shape[0] steps (module docstring); ``gate`` as in
    :func:`fixed_chunk`. ``fp`` float64 parameters: 1/u (u = λ/λ_f), λ_f, 1/k_i, τ_mp, α, k_a, τ_rd, −1/(u·C),
    EXP_ARG_MAX, lsb (neuron.float_theta_constants, neuron.float_msat_theta)."""
    tc = payload.shape[0]
    m_n = payload.shape[1]
    g_end, sids, nidx, kseed, kthr = gate
    inv_u, lsb = fp[0], fp[9]
    dtt = 1.0 if mode == 1 or mode == 3 else 0.0
    det = 1.0 if mode == 2 or mode == 3 else 0.0
    nblocks = (m_n + BLOCK - 1) // BLOCK
    for blk in numba.prange(nblocks):
        j0 = blk * BLOCK
        j1 = min(m_n, j0 + BLOCK)
        n = j1 - j0
        bs, bn = _block_ids(sids, nidx, j0, n, t0 < g_end)  # ε's sample id and neuron index per neuron
        vb = v[j0:j1]
        sb = vsum[j0:j1]
        cb = count[j0:j1]
        bb = base[j0:j1]
        for k in range(tc):
            t = t0 + k
            x0 = a0[k, j0:j1]
            x1 = a1[k, j0:j1]
            pk = payload[k, j0:j1]
            gated = t < g_end
            lut = mode != 0 and t > 0
            inv_t = 1.0 / max(t, 1)
            th0 = k_lam if mode == 0 else lam
            for i in range(n):
                vj = vb[i]
                kv = _keep(bs[i], t, bn[i], kseed, kthr) if gated else 1
                x = bb[i] + np.float64(x0[i])
                if nterms > 1:
                    x = x + np.float64(x1[i])
                theta = th0
                if lut and vj + x >= lsb:  # below λ·2^−F ≤ θ, m neither fires nor resets, whatever θ is
                    theta = _float_theta(dtt, det, (vj - sb[i] * inv_t) * inv_u, x, fp[1], fp[2], fp[3], fp[4],
                                         fp[5], fp[6], fp[7], fp[8], fp[9], lam)
                m = vj + x
                if gamma == 1:
                    s = np.int64(m >= theta)
                else:
                    s = np.int64(min(max(math.floor(m / theta), 0.0), float(gamma)))
                sg = s * kv
                s_eff = s if gate_code == 1 else sg
                vj = m - np.float64(s_eff) * theta
                pk[i] = np.float64(sg) * theta
                vb[i] = vj
                sb[i] = sb[i] + vj
                cb[i] += sg


@numba.njit(inline="always", cache=_CACHE, error_model="numpy")
def _float_theta(dtt, det, d, x, lam_f, inv_ki, tau_mp, alpha, k_a, tau_rd, kx, x_max, lsb, lam):
    """θ for t ≥ 1 from d = Δ/u and x (neuron.float_msat_theta, the same operations; dtt, det 1.0 or 0.0 by mode:
    the unused part is multiplied by 0, no branch). The parameters are scalars, read from ``fp`` before the
    loops: with the array read inside, the loop over the list compiled unvectorized whenever the kernel was
    compiled afresh rather than loaded from numba's cache (measured: ResNet20 msat float 4.1 vs 1.3 s, T = 16)."""
    z = dtt * (tau_mp * (alpha * d - lam_f + k_a * fmath.softplus(d * inv_ki)))
    z = z + det * (tau_rd * fmath.exp(fmath._minimum(x * kx, x_max)))
    return fmath._maximum(lam * fmath.sigmoid(z), lsb)


@_njit_noalias
def _float_theta_list(cnt, dc, xc, thc, dtt, det, fp, lam):
    """thc[c] = θ(d = Δ/u = dc[c], x = xc[c]) for c < cnt (:func:`_float_theta`): a loop over dense arrays that
    do not alias, which the compiler vectorizes."""
    lam_f, inv_ki, tau_mp, alpha, k_a = fp[1], fp[2], fp[3], fp[4], fp[5]
    tau_rd, kx, x_max, lsb = fp[6], fp[7], fp[8], fp[9]
    for c in range(cnt):
        thc[c] = _float_theta(dtt, det, dc[c], xc[c], lam_f, inv_ki, tau_mp, alpha, k_a, tau_rd, kx, x_max, lsb, lam)


@numba.njit(parallel=True, cache=_CACHE, error_model="numpy")
def float_chunk_plain(a0, a1, nterms, base, v, vsum, count, t0, mode, lam, k_lam, fp, payload):
    """:func:`float_chunk` for Γ = 1 with no gate in the chunk, with those branches out of the neuron loop."""
    tc = payload.shape[0]
    m_n = payload.shape[1]
    inv_u, lsb = fp[0], fp[9]
    dtt = 1.0 if mode == 1 or mode == 3 else 0.0
    det = 1.0 if mode == 2 or mode == 3 else 0.0
    two = 1.0 if nterms > 1 else 0.0
    nblocks = (m_n + BLOCK - 1) // BLOCK
    for blk in numba.prange(nblocks):
        j0 = blk * BLOCK
        j1 = min(m_n, j0 + BLOCK)
        n = j1 - j0
        vb = v[j0:j1]
        sb = vsum[j0:j1]
        cb = count[j0:j1]
        bb = base[j0:j1]
        nb = n if mode != 0 else 0  # scratch for the threshold path only
        xb = np.empty(nb)   # x of the block's neurons
        thb = np.empty(nb)  # θ of the block's neurons
        dc = np.empty(nb)   # Δ/u, x, index and θ of the neurons with m ≥ λ·2^−F
        xc = np.empty(nb)
        ic = np.empty(nb, np.int64)
        thc = np.empty(nb)
        for k in range(tc):
            t = t0 + k
            x0 = a0[k, j0:j1]
            x1 = a1[k, j0:j1]
            pk = payload[k, j0:j1]
            if mode != 0 and t > 0:
                # θ ≥ λ·2^−F: below that m neither fires nor resets, whatever θ is; θ is evaluated only for the
                # neurons with m ≥ λ·2^−F, gathered branch-free into a dense list (one vectorized loop)
                inv_t = 1.0 / t
                _float_prep(n, vb, sb, bb, x0, x1, xb, thb, two, inv_t, inv_u)  # as in fixed_chunk_plain
                cnt = _list_above(n, vb, xb, thb, dc, xc, ic, lsb, lsb)
                _float_theta_list(cnt, dc, xc, thc, dtt, det, fp, lam)
                for c in range(cnt):
                    thb[ic[c]] = thc[c]
                for i in range(n):
                    vj = vb[i]
                    m = vj + xb[i]
                    theta = thb[i]
                    s = np.float64(m >= theta)
                    vj = m - s * theta
                    pk[i] = s * theta
                    vb[i] = vj
                    sb[i] = sb[i] + vj
                    cb[i] += np.int64(s)
            else:
                theta = k_lam if mode == 0 else lam
                for i in range(n):
                    vj = vb[i]
                    x = bb[i] + np.float64(x0[i]) + two * np.float64(x1[i])
                    m = vj + x
                    s = np.float64(m >= theta)
                    vj = m - s * theta
                    pk[i] = s * theta
                    vb[i] = vj
                    sb[i] = sb[i] + vj
                    cb[i] += np.int64(s)


# --- LIPooling (msat_lava.dynamics.lipool) --------------------------------------------------------------------
@numba.njit(parallel=True, cache=_CACHE, error_model="numpy")
def lipool_chunk(x, index, valid, acc, y):
    """Advance LIPooling (:func:`msat_lava.dynamics.lipool.step_lipool`, the same operations in the same order)
    over Tc = x.shape[0] steps: for each of the P = B·C planes, window w and element j with valid[w, j],
    A[p, w, j] += x[t, p, index[w, j]], then y[t, p, w] = max_j A[p, w, j] and A[p, w, j] −= y[t, p, w] (padding
    elements stay 0 and never win). x (Tc, P, H·W): the source payloads (exact integers in a float for the fixed
    model); acc (P, Ho·Wo, K): int64 (fixed; x is converted exactly) or float64, updated in place; y (Tc, P, Ho·Wo)
    float64. Planes are independent, so any thread count gives the same bits."""
    tc = x.shape[0]
    n_p = x.shape[1]
    n_w = index.shape[0]
    n_k = index.shape[1]
    for p in numba.prange(n_p):
        a = acc[p]
        for t in range(tc):
            xt = x[t, p]
            yt = y[t, p]
            for w in range(n_w):
                best = a[w, 0]  # replaced by the first valid element (every window has one)
                first = True
                for j in range(n_k):
                    if valid[w, j]:
                        v = a[w, j] + _lip_in(xt[index[w, j]], a[w, j])
                        a[w, j] = v
                        if first or v > best:
                            best = v
                            first = False
                for j in range(n_k):
                    if valid[w, j]:
                        a[w, j] = a[w, j] - best
                yt[w] = best


def _lip_in(x, like):  # pragma: no cover - replaced by the overload below inside compiled code
    return x


@overload(_lip_in)
def _lip_in_impl(x, like):
    """A source payload in the accumulator's type: int64 (exact: the fixed model's payloads are integers)."""
    if isinstance(like, types.Integer):
        return lambda x, like: np.int64(x)
    return lambda x, like: np.float64(x)


# --- DTIF-R (msat_lava.dynamics.models.dtif_r), fixed point ------------------------------------------------------
#: reset/payload variants of DTIF-R: a (2^F, 2^F), b (θ̂, θ̂), c (θ̂, 2^F)
DTIF_VARIANTS = {"a": 0, "b": 1, "c": 2}


@numba.njit(inline="always", cache=_CACHE, error_model="numpy")
def _dtif_theta(x, g_a, g_d, x_max, off, shift, guard, th_min, one):
    """DTIF-R's θ̂ of one neuron-step: the layer's table at clip(x̂, 0, x_max) + offset, clipped to [θ̂_min, 2^F];
    2^F where x̂ ≤ 0 (:meth:`msat_lava.dynamics.models.dtif_r.DtifR.fixed_threshold`)."""
    th = _interp(g_a, g_d, _imin(_imax(x, 0), x_max) + off, shift, guard)
    return _select_i64(x > 0, _imin(_imax(th, th_min), one), one)


@_njit_noalias
def _dtif_plain_block(n, vb, sb, cb, tb, bb, x0, x1, pk, mul0, add0, sh0, mul1, add1, sh1, two, one, vmax, r_theta,
                      q_out, x_max, off, shift, guard, th_min, g_a, g_d):
    """One step of :func:`dtif_fixed_chunk` for a block of n neurons with Γ = 1 and no gate: branch-free over
    non-aliasing arrays, so it vectorizes (table reads as gathers); returns the block's largest payload."""
    top = np.int64(0)
    for i in range(n):
        vj = vb[i]
        x = _input_fixed(bb[i], x0[i], x1[i], mul0, add0, sh0, mul1, add1, sh1, two)
        theta = _dtif_theta(x, g_a, g_d, x_max, off, shift, guard, th_min, one)
        r = _select_i64(r_theta == 1, theta, one)
        m = vj + x
        s = np.int64(m >= theta)
        vj = _imin(_imax(m - s * r, -vmax), vmax)
        out = s * _select_i64(q_out == 1, theta, _select_i64(q_out == 0, one, np.int64(1)))
        pk[i] = out
        top = _imax(top, out)
        vb[i] = vj
        sb[i] += vj
        cb[i] += s
        tb[i] += np.int64(_select_i64(vj < 0, -vj, vj) >= vmax)
    return top


@numba.njit(parallel=True, cache=_CACHE, error_model="numpy")
def dtif_fixed_chunk(a0, sp0, a1, sp1, nterms, base, v, vsum, count, sat, t0, one, vmax, gamma, gate, gate_code,
                     spikes_only, variant, dp, g_a, g_d, payload, pmax):
    """Advance DTIF-R's fixed model by Tc = payload.shape[0] steps, as ``step_fixed`` with the model's
    ``fixed_threshold`` / ``fixed_quanta`` (models/dtif_r.py) does: θ̂ = 2^F for x̂ ≤ 0, else
    clip(interp(min(x̂, x̂_max) + o), θ̂_min, 2^F) on the layer's table, read as (A, D) = neuron._interp_tables
    (the very integers of neuron._interp); reset r̂ and payload q̂ per ``variant`` (DTIF_VARIANTS); s = [m̂ ≥ θ̂]
    (Γ = 1), else clip(⌊m̂/θ̂⌋, 0, Γ) when r̂ = θ̂ (b, c) and clip(⌊(m̂ − θ̂)/r̂⌋ + 1, 0, Γ) when r̂ = 2^F (a)
    (neuron._fire); gate, saturation, Ŝ, n, payload and pmax as :func:`fixed_chunk`; ``spikes_only`` (variants
    a, c, whose payload per spike is 2^F): the payload written is s_g, the caller multiplies by 2^F.
    dp = (x̂_max, o, s, G, θ̂_min) int64."""
    tc = payload.shape[0]
    m_n = payload.shape[1]
    g_end, sids, nidx, kseed, kthr = gate
    mul0, add0, sh0 = sp0[0], sp0[1], sp0[2]
    mul1, add1, sh1 = sp1[0], sp1[1], sp1[2]
    two = np.int64(1) if nterms > 1 else np.int64(0)
    x_max, off, shift, guard, th_min = dp[0], dp[1], dp[2], dp[3], dp[4]
    gc = np.int64(gate_code)
    r_theta = np.int64(1) if variant != 0 else np.int64(0)  # reset θ̂ (b, c) or 2^F (a)
    q_theta = np.int64(1) if variant == 1 else np.int64(0)  # payload θ̂ (b) or 2^F (a, c)
    q_out = q_theta if not spikes_only else np.int64(2)      # 2: the payload written is s_g (× 2^F by the caller)
    nblocks = (m_n + BLOCK - 1) // BLOCK
    for blk in numba.prange(nblocks):
        j0 = blk * BLOCK
        j1 = min(m_n, j0 + BLOCK)
        n = j1 - j0
        bs, bn = _block_ids(sids, nidx, j0, n, t0 < g_end)  # ε's sample id and neuron index per neuron
        vb = v[j0:j1]
        sb = vsum[j0:j1]
        cb = count[j0:j1]
        tb = sat[j0:j1]
        bb = base[j0:j1]
        top = np.int64(0)
        for k in range(tc):
            t = t0 + k
            x0 = a0[k, j0:j1]
            x1 = a1[k, j0:j1]
            pk = payload[k, j0:j1]
            gated = t < g_end
            if gamma == 1 and not gated:
                top = max(top, _dtif_plain_block(n, vb, sb, cb, tb, bb, x0, x1, pk, mul0, add0, sh0, mul1, add1,
                                                 sh1, two, one, vmax, r_theta, q_out, x_max, off, shift, guard,
                                                 th_min, g_a, g_d))
                continue
            for i in range(n):
                vj = vb[i]
                x = _input_fixed(bb[i], x0[i], x1[i], mul0, add0, sh0, mul1, add1, sh1, two)
                theta = _dtif_theta(x, g_a, g_d, x_max, off, shift, guard, th_min, one)
                r = _select_i64(r_theta == 1, theta, one)
                q = _select_i64(q_theta == 1, theta, one)
                m = vj + x
                if gamma == 1:
                    s = np.int64(m >= theta)
                elif r_theta == 1:
                    s = min(max(m // theta, 0), gamma)
                else:
                    s = min(max((m - theta) // r + 1, 0), gamma)
                if gated:
                    sg = s * _keep(bs[i], t, bn[i], kseed, kthr)
                else:
                    sg = s
                s_eff = sg + gc * (s - sg)
                vj = min(max(m - s_eff * r, -vmax), vmax)
                out = sg * q if not spikes_only else sg
                pk[i] = out
                top = max(top, out)
                vb[i] = vj
                sb[i] += vj
                cb[i] += sg
                tb[i] += np.int64(abs(vj) >= vmax)
        pmax[blk] = top


# --- models with one θ̂ per step for the whole layer (DynamicsModel.fixed_uniform_step: BSNN-R), fixed point -------

@_njit_noalias
def _uniform_plain_block(n, vb, sb, cb, tb, bb, x0, x1, pk, mul0, add0, sh0, mul1, add1, sh1, two, vmax, integ,
                         theta):
    """One firing step of :func:`uniform_fixed_chunk` for a block of n neurons with Γ = 1 and no gate (branch-free
    over non-aliasing arrays); returns the block's largest payload."""
    top = np.int64(0)
    for i in range(n):
        x = integ * _input_fixed(bb[i], x0[i], x1[i], mul0, add0, sh0, mul1, add1, sh1, two)
        m = vb[i] + x
        s = np.int64(m >= theta)
        vj = _imin(_imax(m - s * theta, -vmax), vmax)
        out = s * theta
        pk[i] = out
        top = _imax(top, out)
        vb[i] = vj
        sb[i] += vj
        cb[i] += s
        tb[i] += np.int64(_select_i64(vj < 0, -vj, vj) >= vmax)
    return top


@_njit_noalias
def _uniform_silent_block(n, vb, sb, tb, bb, x0, x1, pk, mul0, add0, sh0, mul1, add1, sh1, two, vmax, integ):
    """One step without firing (s = 0): v̂ = sat(v̂ + [integrate]·x̂), payload 0."""
    for i in range(n):
        x = integ * _input_fixed(bb[i], x0[i], x1[i], mul0, add0, sh0, mul1, add1, sh1, two)
        vj = _imin(_imax(vb[i] + x, -vmax), vmax)
        pk[i] = 0
        vb[i] = vj
        sb[i] += vj
        tb[i] += np.int64(_select_i64(vj < 0, -vj, vj) >= vmax)


@numba.njit(parallel=True, cache=_CACHE, error_model="numpy")
def uniform_fixed_chunk(a0, sp0, a1, sp1, nterms, base, v, vsum, count, sat, t0, vmax, gamma, gate, gate_code,
                        integ, fire, theta, payload, pmax):
    """Advance by Tc = payload.shape[0] steps a fixed model whose step k of the chunk has one schedule and one
    threshold for the whole layer: ``integ[k]``, ``fire[k]`` ∈ {0, 1} and θ̂ = ``theta[k]`` (int64, from
    ``DynamicsModel.fixed_uniform_step``), reset and payload θ̂ — as ``step_fixed`` does with that model:
    m̂ = v̂ + [integ]·x̂; s = 0 unless fire, else [m̂ ≥ θ̂] (Γ = 1) or clip(⌊m̂/θ̂⌋, 0, Γ); s_g = ε·s while the gate
    acts; v̂ = sat(m̂ − s_eff·θ̂); payload = s_g·θ̂; Ŝ += v̂; n += s_g; sat += [|v̂| ≥ v_max] (:func:`fixed_chunk`)."""
    tc = payload.shape[0]
    m_n = payload.shape[1]
    g_end, sids, nidx, kseed, kthr = gate
    mul0, add0, sh0 = sp0[0], sp0[1], sp0[2]
    mul1, add1, sh1 = sp1[0], sp1[1], sp1[2]
    two = np.int64(1) if nterms > 1 else np.int64(0)
    gc = np.int64(gate_code)
    nblocks = (m_n + BLOCK - 1) // BLOCK
    for blk in numba.prange(nblocks):
        j0 = blk * BLOCK
        j1 = min(m_n, j0 + BLOCK)
        n = j1 - j0
        bs, bn = _block_ids(sids, nidx, j0, n, t0 < g_end)  # ε's sample id and neuron index per neuron
        vb = v[j0:j1]
        sb = vsum[j0:j1]
        cb = count[j0:j1]
        tb = sat[j0:j1]
        bb = base[j0:j1]
        top = np.int64(0)
        for k in range(tc):
            t = t0 + k
            x0 = a0[k, j0:j1]
            x1 = a1[k, j0:j1]
            pk = payload[k, j0:j1]
            ik = np.int64(integ[k])
            th = theta[k]
            if fire[k] == 0:
                _uniform_silent_block(n, vb, sb, tb, bb, x0, x1, pk, mul0, add0, sh0, mul1, add1, sh1, two, vmax, ik)
                continue
            gated = t < g_end
            if gamma == 1 and not gated:
                top = max(top, _uniform_plain_block(n, vb, sb, cb, tb, bb, x0, x1, pk, mul0, add0, sh0, mul1, add1,
                                                    sh1, two, vmax, ik, th))
                continue
            for i in range(n):
                x = ik * _input_fixed(bb[i], x0[i], x1[i], mul0, add0, sh0, mul1, add1, sh1, two)
                kv = np.int64(1)
                if gated:
                    kv = _keep(bs[i], t, bn[i], kseed, kthr)
                vj, sg = _fire_fixed(vb[i], x, th, gamma, kv, gc, vmax)
                out = sg * th
                pk[i] = out
                top = max(top, out)
                vb[i] = vj
                sb[i] += vj
                cb[i] += sg
                tb[i] += np.int64(abs(vj) >= vmax)
        pmax[blk] = top
