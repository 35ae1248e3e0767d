"""The neuron rules, one definition per precision (ALGORITHMS §1.2, §2.2–2.3, §3.4, §9.4).

Pure step functions over immutable state; arrays are batched (axis 0 = sample, then the layer shape) and may be
numpy arrays or torch tensors (through :mod:`msat_lava.dynamics.xp`). The neuron index used by the spike-
confidence gate is the flat C-order index within one sample; ``sample_ids`` (B,) are dataset indices.

Float model (raw ANN activation units, dtype of the state; float64 by default). Initial state v(0) = v_init·λ
(0 by default; 0.5 = half-threshold start), S = 0, n = 0. Per step t (layer-local, 0-based):

    1. x(t) input;  m = v + x
    2. θ(t) = k·λ                                  mode 'const' (every t)
       θ(0) = λ;  for t ≥ 1 (§2.2):
           V̄ = S·(1/t),  Δ = v − V̄
           z = τ_mp·(α·Δ − λ + k_a·softplus(Δ/k_i))  [dtt, msat]  +  τ_rd·exp(−x/C)  [det, msat]
           (units 'normalized': the same z with λ = 1 on Δ/λ and x/λ, the BrainCog port; θ below keeps λ)
           θ = max(λ·σ(z), λ·2^−F)                 (same 1-LSB floor as the fixed model; exp argument is
                                                    capped at 80 to avoid overflow, σ is then 1;
                                                    exp, softplus, σ from dynamics.fmath: the same float64
                                                    bits on every machine and backend)
    3. s = [m ≥ θ] if Γ = 1, else min(Γ, max(0, ⌊m/θ⌋))
    4. v = m − s·θ                                 (soft reset with the ungated s)
    5. gate (sc_p set and t < E): s_g = ε·s, ε from :mod:`~msat_lava.dynamics.prng`;
       'keep_charge' variant: v = m − s_g·θ instead of step 4
    6. payload o = s_g·θ; suppressed = (s − s_g)·θ for 'code' (charge discarded), 0 for 'keep_charge'
    7. n += s_g;  S += v;  t += 1

Fixed model (normalized domain, real = integer·λ·2^−F, F = frac_bits; §9.4). All arrays int64:

    v̂: residual, saturated to ±(2^(state_bits−1) − 1) (24-bit state by default), v̂(0) = floor(v_init·2^F + 0.5);
    Ŝ: int64 sum of v̂ (0 at t = 0); n: int64 spike counter; t: Python int.
    1. x̂ integer input (incl. bias);  m̂ = v̂ + x̂ (int64, unsaturated)
    2. θ̂ = floor(k·2^F + 0.5) (const);  θ̂(0) = ONE = 2^F;  for t ≥ 1:
           V̄ = ⌊Ŝ / t⌋ (floor division), Δ̂ = clip(v̂ − V̄, ±2^31)
           θ̂ = LUT evaluation of σ(g(Δ̂) + h(x̂))·2^F ∈ [1, 2^F]  (see :mod:`netx_export.lut`)
    3. s = [m̂ ≥ θ̂] if Γ = 1, else min(Γ, max(0, ⌊m̂/θ̂⌋))
    4.–7. as the float model, with v̂ = sat(m̂ − s_eff·θ̂); payload = s_g·θ̂ (unsigned, ≤ Γ·2^F).

Charge conservation holds exactly in the fixed model while nothing saturates:
Σ_t payload + Σ_t suppressed + v̂(T−1) = v̂(0) + Σ_t x̂.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from msat_lava.dynamics import fmath, models, prng, xp
from netx_export.lut import ThresholdLuts
from netx_export.neuron import NeuronSpec

__all__ = [
    "FloatState", "FixedState", "StepOut", "init_float_state", "init_fixed_state", "step_float", "step_fixed",
    "float_threshold", "fixed_threshold", "float_msat_theta", "fixed_msat_theta", "gate_mask",
    "msat_float_threshold", "msat_fixed_threshold", "check_tables",
    "EXP_ARG_MAX", "DELTA_CLIP",
]

EXP_ARG_MAX = 80.0      # float model: exp(−x/C) argument cap (σ(z) = 1 beyond in any float width)
DELTA_CLIP = 1 << 31    # fixed model: |Δ̂| clip before the slope multiply (keeps products < 2^63)


@dataclass(frozen=True, eq=False)
class FloatState:
    """Float neuron state: v (residual, raw units), vsum (S = Σ v), count (int64 spikes), t (layer-local step)."""

    v: Any
    vsum: Any
    count: Any
    t: int = 0


@dataclass(frozen=True, eq=False)
class FixedState:
    """Fixed neuron state (int64 arrays): v̂ (saturating, state_bits wide), vsum (Ŝ), count (n), t."""

    v: Any
    vsum: Any
    count: Any
    t: int = 0


@dataclass(frozen=True, eq=False)
class StepOut:
    """One step's outputs, all shaped like the input.

    payload: graded output o = s_g·θ (float raw units, or int64 normalized for the fixed model);
    spikes: gated spike count s_g (int64); suppressed: charge discarded by the gate (same units as payload;
    zero without gate or with 'keep_charge'); theta: θ(t) used this step (float raw / int64 θ̂).
    """

    payload: Any
    spikes: Any
    suppressed: Any
    theta: Any


def _like(like: Any) -> Any:
    return np.zeros(0) if like is None else like


def init_float_state(shape: Sequence[int], xp_like: Any = None, spec: NeuronSpec | None = None) -> FloatState:
    """Initial state of batched ``shape`` (B, ...) in ``xp_like``'s backend/device and float dtype (an integer or
    absent ``xp_like`` gives float64; None means numpy): v(0) = spec.v_init·λ (0 without ``spec``), S = 0, n = 0."""
    like = _like(xp_like)
    v = xp.zeros(shape, like, "float")
    if spec is not None and spec.v_init:
        v = v + spec.v_init * spec.lam
    return FloatState(v=v, vsum=xp.zeros(shape, like, "float"), count=xp.zeros(shape, like, "int"), t=0)


def init_fixed_state(shape: Sequence[int], xp_like: Any = None, spec: NeuronSpec | None = None) -> FixedState:
    """Initial int64 state of batched ``shape`` (B, ...) in ``xp_like``'s backend/device (None means numpy):
    v̂(0) = spec.v_init_fixed = floor(v_init·2^F + 0.5) (0 without ``spec``), Ŝ = 0, n = 0."""
    like = _like(xp_like)
    v = xp.zeros(shape, like, "int")
    if spec is not None and spec.v_init_fixed:
        v = v + spec.v_init_fixed
    return FixedState(v=v, vsum=xp.zeros(shape, like, "int"), count=xp.zeros(shape, like, "int"), t=0)


# ---------------------------------------------------------------------------------------------- thresholds

def _sigmoid(z):
    return fmath.sigmoid(z)


def float_theta_constants(spec: NeuronSpec) -> tuple[float, float, float]:
    """(1/u, 1/k_i, −1/(u·C)) of :func:`float_msat_theta`, u = λ/λ_f: its divisions by layer constants become
    multiplications (a vectorized division costs ≈ 10× a multiplication); the fused engine uses these very
    floats, so both evaluate the same products."""
    c = spec.coefs
    u = spec.lam / spec.formula_lam
    return 1.0 / u, 1.0 / c.k_i, -1.0 / (u * c.C)


def float_msat_theta(spec: NeuronSpec, delta: Any, x: Any) -> Any:
    """θ = max(λ·σ(z), λ·2^−F) for t ≥ 1 in raw units, from Δ = v − V̄ and the input x (§2.2).

    One formula for both ``spec.units``: λ_f = ``spec.formula_lam`` inside z, on Δ and x divided by u = λ/λ_f
    ('raw': λ_f = λ, u = 1 exactly, so Δ, x are used unchanged; 'normalized': λ_f = 1, u = λ, i.e. Δ/λ, x/λ).
    Divisions by the layer constants u, k_i, C are multiplications by their reciprocals
    (:func:`float_theta_constants`).
    """
    c, lam, lam_f = spec.coefs, spec.lam, spec.formula_lam
    inv_u, inv_ki, kx = float_theta_constants(spec)
    z = 0.0
    if spec.mode in ("dtt", "msat"):
        d = delta * inv_u
        z = c.tau_mp * (c.alpha * d - lam_f + c.k_a * fmath.softplus(d * inv_ki))
    if spec.mode in ("det", "msat"):
        z = z + c.tau_rd * fmath.exp(xp.minimum(x * kx, EXP_ARG_MAX))
    return xp.maximum(lam * _sigmoid(z), spec.lsb)


def _interp_tables(lut: np.ndarray, shift: int, extra: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, D) int64 with A[i] = L[i]·2^s + 2^(s+extra−1) (0 when s+extra = 0), D[i] = L[min(i+1, n−1)] − L[i].

    Derived once per (table, s, extra) and kept while the table lives (:func:`xp.derived`), so that
    :func:`_interp` costs two lookups and three integer passes instead of twelve; the integers are the same.
    """
    def make() -> tuple[np.ndarray, np.ndarray]:
        wide = np.asarray(lut).astype(np.int64)
        d = np.zeros_like(wide)
        d[:-1] = wide[1:] - wide[:-1]
        a = (wide << shift) + ((1 << (shift + extra)) >> 1)
        a.setflags(write=False)
        d.setflags(write=False)
        return a, d

    return xp.derived(lut, ("interp", shift, extra), make)


def _interp(lut: np.ndarray, a: Any, shift: int, extra: int) -> Any:
    """(L[i]·2^s + (L[min(i+1, n−1)] − L[i])·r + 2^(s+extra−1)) >> (s+extra), i = a >> s, r = a mod 2^s.

    ``lut`` is the layer's numpy table, ``a`` an int64 array (numpy or torch) in [0, (n−1)·2^s].
    """
    base, diff = _interp_tables(lut, shift, extra)
    i = a >> shift
    r = a & ((1 << shift) - 1)
    return (xp.lookup(xp.table(base, a), i) + xp.lookup(xp.table(diff, a), i) * r) >> (shift + extra)


def fixed_msat_theta(luts: ThresholdLuts, delta: Any, x: Any) -> Any:
    """θ̂ ∈ [1, 2^F] for t ≥ 1 from integer Δ̂ = v̂ − ⌊Ŝ/t⌋ and x̂ (int64 arrays), per :mod:`netx_export.lut`."""
    z = 0
    if luts.mode in ("dtt", "msat"):
        d = xp.clip(delta, -DELTA_CLIP, DELTA_CLIP)
        slope = xp.where(d < 0, luts.dtt_slope_neg, luts.dtt_slope_pos)
        p = luts.dtt_slope_shift
        lin = (d * slope + ((1 << p) >> 1)) >> p
        n_sp = int(luts.sp_lut.size)
        a = xp.minimum(xp.abs(d), (n_sp - 1) << luts.sp_shift)
        z = luts.dtt_offset + lin + _interp(luts.sp_lut, a, luts.sp_shift, 0)
    if luts.mode in ("det", "msat"):
        n_det = int(luts.det_lut.size)
        xi = xp.clip(x - luts.det_x0, 0, (n_det - 1) << luts.det_shift)
        z = z + _interp(luts.det_lut, xi, luts.det_shift, 0)
    zc = xp.clip(z, -luts.z_max, luts.z_max) + luts.z_max
    theta = _interp(luts.sig_lut, zc, luts.sig_shift, luts.sig_guard)
    return xp.clip(theta, 1, luts.one)


def float_threshold(spec: NeuronSpec, state: FloatState, x: Any) -> Any:
    """θ(t) of the float model for the current state and input (raw units, shaped like x): the registered
    model's rule (:mod:`msat_lava.dynamics.models`)."""
    return models.get(spec.mode).float_threshold(spec, state, x)


def fixed_threshold(spec: NeuronSpec, luts: Any, state: FixedState, x: Any) -> Any:
    """θ̂(t) of the fixed model (int64, shaped like x): the registered model's rule."""
    return models.get(spec.mode).fixed_threshold(spec, luts, state, x)


def msat_float_threshold(spec: NeuronSpec, state: FloatState, x: Any) -> Any:
    """θ(t) of the MSAT family's float model (const: k·λ; dtt/det/msat: λ at t = 0, §2.2 after)."""
    if spec.mode == "const":
        return xp.full(x.shape, spec.k_const * spec.lam, x, "float")
    if state.t == 0:
        return xp.full(x.shape, spec.lam, x, "float")
    delta = state.v - state.vsum * (1.0 / state.t)
    return float_msat_theta(spec, delta, x)


def msat_fixed_threshold(spec: NeuronSpec, luts: ThresholdLuts | None, state: FixedState, x: Any) -> Any:
    """θ̂(t) of the MSAT family's fixed model (int64, shaped like x)."""
    if spec.mode == "const":
        return xp.full(x.shape, spec.theta_const_fixed, x, "int")
    if state.t == 0:
        return xp.full(x.shape, spec.one, x, "int")
    delta = state.v - xp.floor_divide(state.vsum, state.t)
    return fixed_msat_theta(luts, delta, x)


# ---------------------------------------------------------------------------------------------- gate

def gate_mask(spec: NeuronSpec, t: int, shape: Sequence[int], sample_ids: Any, layer_id: int, seed: int,
              like: Any) -> Any | None:
    """ε for step t as a bool array of batched ``shape``, or None when the gate does not act at this step."""
    if not spec.sc_enabled or t >= spec.sc_early:
        return None
    if prng.keep_threshold(spec.sc_p) == 0:
        return None  # p rounds to "keep every spike"
    if sample_ids is None:
        raise ValueError("sample_ids are required while the spike-confidence gate is active")
    keep = prng.keep_mask(sample_ids, tuple(shape)[1:], t, layer_id, seed, spec.sc_p, like)
    if tuple(keep.shape) != tuple(shape):
        raise ValueError(f"sample_ids has {keep.shape[0]} entries, batch has {shape[0]}")
    return keep


# ---------------------------------------------------------------------------------------------- steps

def _check(state, x):
    if tuple(x.shape) != tuple(state.v.shape):
        raise ValueError(f"input shape {tuple(x.shape)} does not match state shape {tuple(state.v.shape)}")
    if xp.is_torch(x) != xp.is_torch(state.v):
        raise TypeError("input and state must use the same array backend")


def _fire(spec: NeuronSpec, m: Any, theta: Any, integer: bool, reset: Any = None) -> Any:
    """s = [m ≥ θ] (Γ = 1); Γ > 1: min(Γ, max(0, ⌊m/θ⌋)) when each spike removes θ (``reset`` None or θ),
    else min(Γ, max(0, ⌊(m − θ)/r⌋ + 1)) for a reset amount r ≠ θ (spike k fires while m − (k−1)·r ≥ θ)."""
    if spec.gamma == 1:
        return xp.as_int64(m >= theta)
    if reset is None or reset is theta:
        if integer:
            return xp.clip(xp.floor_divide(m, theta), 0, spec.gamma)
        return xp.as_int64(xp.clip(xp.floor(m / theta), 0, spec.gamma))
    if integer:
        return xp.clip(xp.floor_divide(m - theta, reset) + 1, 0, spec.gamma)
    return xp.as_int64(xp.clip(xp.floor((m - theta) / reset) + 1, 0, spec.gamma))


def step_float(spec: NeuronSpec, state: FloatState, x: Any, sample_ids: Any = None, layer_id: int = 0,
               seed: int = 0) -> tuple[FloatState, StepOut]:
    """One step of the float model (raw units). See the module docstring for the equations; the threshold, the
    reset/payload quanta and the integrate/fire schedule are the registered model's
    (:mod:`msat_lava.dynamics.models`)."""
    if xp.is_torch(x) != xp.is_torch(state.v):
        raise TypeError("input and state must use the same array backend")
    x = xp.as_float(x, state.v)
    _check(state, x)
    t = state.t
    model = models.get(spec.mode)
    integrate, fire = model.schedule(spec, t)
    theta = model.float_threshold(spec, state, x)
    reset, quantum = model.float_quanta(spec, theta)
    m = state.v + x if integrate else state.v + xp.zeros_like(x)
    s = _fire(spec, m, theta, integer=False, reset=reset) if fire else xp.as_int64(xp.zeros_like(x))
    keep = gate_mask(spec, t, x.shape, sample_ids, layer_id, seed, x) if fire else None
    sf = xp.as_float(s, theta)
    if keep is None:
        sg, sgf = s, sf
        v = m - sf * reset
        suppressed = xp.zeros_like(theta)
    else:
        sg = xp.where(keep, s, 0)
        sgf = xp.as_float(sg, theta)
        if spec.sc_gate == "code":
            v = m - sf * reset
            suppressed = (sf - sgf) * reset
        else:
            v = m - sgf * reset
            suppressed = xp.zeros_like(theta)
    out = StepOut(payload=sgf * quantum, spikes=sg, suppressed=suppressed, theta=theta)
    new = FloatState(v=v, vsum=state.vsum + v, count=state.count + sg, t=t + 1)
    return new, out


def check_tables(spec: NeuronSpec, luts: Any) -> None:
    """``luts`` must be the tables the spec's model needs (ValueError otherwise)."""
    from netx_export import neurons
    from netx_export.neuron import NeuronSpecError

    try:
        neurons.get(spec.mode).check_tables(spec, luts)
    except NeuronSpecError as exc:
        raise ValueError(f"tables do not match the spec (mode {spec.mode!r}, F={spec.frac_bits}): {exc}") from None


def step_fixed(spec: NeuronSpec, luts: Any, state: FixedState, x_int: Any,
               sample_ids: Any = None, layer_id: int = 0, seed: int = 0) -> tuple[FixedState, StepOut]:
    """One step of the fixed model (§9.4; int64 in, int64 out). See the module docstring for the equations; the
    threshold, quanta and schedule are the registered model's."""
    if not xp.is_integer_dtype(x_int):
        raise TypeError("step_fixed needs an integer input array")
    if spec.mode != "const":
        if spec.mode in ("dtt", "det", "msat") and not isinstance(luts, ThresholdLuts):
            raise ValueError(f"mode {spec.mode!r} needs ThresholdLuts (netx_export.lut.make_luts)")
        check_tables(spec, luts)
    x = xp.as_int64(x_int)
    _check(state, x)
    t = state.t
    model = models.get(spec.mode)
    integrate, fire = model.schedule(spec, t)
    theta = model.fixed_threshold(spec, luts, state, x)
    reset, quantum = model.fixed_quanta(spec, theta)
    m = state.v + x if integrate else state.v + xp.zeros_like(x)
    s = _fire(spec, m, theta, integer=True, reset=reset) if fire else xp.zeros_like(x)
    keep = gate_mask(spec, t, x.shape, sample_ids, layer_id, seed, x) if fire else None
    if keep is None:
        sg, s_eff = s, s
        suppressed = xp.zeros_like(theta)
    else:
        sg = xp.where(keep, s, 0)
        if spec.sc_gate == "code":
            s_eff, suppressed = s, (s - sg) * reset
        else:
            s_eff, suppressed = sg, xp.zeros_like(theta)
    v = xp.clip(m - s_eff * reset, -spec.v_max, spec.v_max)
    out = StepOut(payload=sg * quantum, spikes=sg, suppressed=suppressed, theta=theta)
    new = FixedState(v=v, vsum=state.vsum + v, count=state.count + sg, t=t + 1)
    return new, out
