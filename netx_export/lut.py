"""Offline (float64) lookup tables for the fixed-point MSAT threshold (ALGORITHMS §9.1, §9.3–9.5).

The fixed-point model works per layer in the normalized domain (real = integer · λ · 2^−F, F = ``frac_bits``).
Folding λ into the constants (§9.3), the raw-unit threshold of §2.2 becomes, with Δ̂ = v̂ − ⌊S/t⌋ and x̂ the
integer input (both F fractional bits, real Δ = Δ̂·λ·2^−F, real x = x̂·λ·2^−F):

    g(Δ) = τ_mp·( α·Δ − λ + k_a·softplus(Δ/k_i) )          (DTT term, modes 'dtt' and 'msat')
    h(x) = τ_rd·exp(−x/C)                                   (DET term, modes 'det' and 'msat')
    z    = g + h ;   θ̂ = σ(z)·2^F ∈ [1, 2^F]

Integer evaluation (all int64, z in Q.FZ with FZ = ``z_frac_bits`` = 16 fractional bits):

* DTT — exact piecewise-linear part plus one correction table, using
  softplus(y) = max(y, 0) + ln(1 + e^−|y|):

      lin  = (Δ̂ · slope + 2^(P−1)) >> P,   slope = dtt_slope_neg if Δ̂ < 0 else dtt_slope_pos,
             P = dtt_slope_shift (16, lowered only when λ is so large that a slope would not fit int32)
             dtt_slope_neg = rnd(τ_mp·α·λ · 2^(FZ−F+P)),  dtt_slope_pos = rnd(τ_mp·(α + k_a/k_i)·λ · 2^(FZ−F+P))
      corr = interp(sp_lut, sp_shift, min(|Δ̂|, (len−1)·2^sp_shift)),
             sp_lut[k] = rnd(τ_mp·k_a·ln(1 + exp(−λ·k·2^sp_shift / (k_i·2^F))) · 2^FZ)
      g    = dtt_offset + lin + corr,      dtt_offset = rnd(−τ_mp·λ · 2^FZ)

* DET — one table over x̂, clamped at both ends:

      h = interp(det_lut, det_shift, clip(x̂ − det_x0, 0, (len−1)·2^det_shift)),
      det_lut[k] = rnd(τ_rd·exp(−λ·(det_x0 + k·2^det_shift) / (C·2^F)) · 2^FZ)

* sigmoid — one table over z ∈ [−Z, Z] (z_max = Z·2^FZ), kept with ``sig_guard`` extra fractional bits:

      zc = clip(g + h, −z_max, z_max) + z_max
      θ̂  = clip( (sig_lut[i]·2^s + (sig_lut[i+1] − sig_lut[i])·r + 2^(s+G−1)) >> (s+G), 1, 2^F ),
      i = zc >> s, r = zc & (2^s − 1), s = sig_shift, G = sig_guard,
      sig_lut[k] = rnd(σ(−Z + k·2^(s−FZ)) · 2^(F+G))

  where ``interp(L, s, a) = (L[i]·2^s + (L[min(i+1, len−1)] − L[i])·r + ⌊2^s/2⌋) >> s`` with i = a >> s,
  r = a & (2^s − 1) (linear interpolation, round half up), and rnd(f) = floor(f + 0.5) in float64.

Domains and resolution (chosen here, stored in the table so the runtime never recomputes them):

* Z = ceil((F+1)·ln 2 + 0.5) (10 for F = 12): outside [−Z, Z] σ·2^F already rounds to 0 (→ θ̂ = 1) or 2^F;
  sigmoid step 2^−5 (641 entries for F = 12), interpolation error < 0.05 LSB.
* softplus correction: |y| = λ|Δ|/k_i up to ln(τ_mp·k_a·2^(FZ+1)) (beyond, it rounds to 0); index step
  2^sp_shift chosen so that the y step is ≤ 2^−6 (≤ ~1.6 k entries).
* DET: w = λ·x/C ∈ [ln(τ_rd/H), ln(τ_rd·2^(FZ+1))], where H = min(Z + 1 + max(0, −g(−64·λ)), 16384) caps h:
  if h > H then z ≥ +Z (saturated) for every Δ ≥ −64·λ, so the cap is exact there. Only when both Δ < −64·λ
  (raw) and h > H (x < −C·ln(H/τ_rd), raw) is z underestimated (θ̂ too low); such a neuron receives a strongly
  negative input while its residual is far below its running mean, and in practice does not fire. Index step
  with w step ≤ 2^−8 (≤ ~7.5 k entries; the power-of-two step lands in (2^−9, 2^−8]).

The tables depend on λ (raw-unit MSAT, §9.3), so each layer has its own. Every λ above is the formula's λ_f =
``spec.formula_lam``: λ for ``units`` = 'raw'; 1 for 'normalized' (the BrainCog port, ALGORITHMS §2.2 note), which
is exactly the raw tables of λ = 1 — the same for every layer — applied to the same integers Δ̂, x̂.
Total size ≤ ~9 k int32 entries (≈ 6 k for λ ∈ [1, 10]). Measured max |θ̂/2^F − θ_float/λ| ≈ 0.81 LSB
(docs/FIXED_POINT.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from netx_export.neuron import NeuronSpec, NeuronSpecError, _check_keys, _integer, _text

__all__ = [
    "ThresholdLuts",
    "make_luts",
    "Z_FRAC_BITS",
    "SLOPE_SHIFT",
    "SIG_STEP_BITS",
    "SIG_GUARD_BITS",
    "SP_STEP_BITS",
    "DET_STEP_BITS",
    "DELTA_REF",
    "H_CAP_MAX",
    "sigmoid_range",
]

Z_FRAC_BITS = 16   # FZ: fractional bits of z, g, h
SLOPE_SHIFT = 16   # P: extra fractional bits of the DTT slopes
SIG_STEP_BITS = 5  # sigmoid table step 2^-5 in z
SIG_GUARD_BITS = 8  # G: sigmoid entries carry F + G fractional bits
SP_STEP_BITS = 6   # softplus-correction table: y step <= 2^-6
DET_STEP_BITS = 8  # DET table: w = λx/C step <= 2^-8
DELTA_REF = 64.0   # the DET cap is exact for Δ >= -DELTA_REF·λ (real units)
H_CAP_MAX = 16384.0  # upper bound of the DET cap H (keeps det_lut entries < 2^30)
_INT32_MAX = (1 << 31) - 1
_MAX_SHIFT = 48
#: Largest table a spec may ask for (the domains above give ≤ ~7.5 k entries; only a λ or coefficient far out of
#: range, e.g. λ = 1e-20 from a hostile file, asks for more — refused before anything is allocated).
MAX_TABLE_ENTRIES = 1 << 16

_ARRAYS = ("sig_lut", "sp_lut", "det_lut")
_SCALARS = ("frac_bits", "z_frac_bits", "z_max", "sig_shift", "sig_guard", "dtt_offset", "dtt_slope_neg",
            "dtt_slope_pos", "dtt_slope_shift", "sp_shift", "det_x0", "det_shift")
_FIELDS = ("mode",) + _SCALARS + _ARRAYS


def sigmoid_range(frac_bits: int) -> int:
    """Z = ceil((F+1)·ln 2 + 0.5): beyond ±Z, σ·2^F rounds to 2^F (above) or below 1 LSB (below)."""
    return int(math.ceil((frac_bits + 1) * math.log(2.0) + 0.5))


def _rnd(values: np.ndarray, scale_bits: int, field: str) -> np.ndarray:
    """floor(f·2^bits + 0.5) as int32, range-checked."""
    out = np.floor(np.asarray(values, dtype=np.float64) * float(2 ** scale_bits) + 0.5)
    if out.size and (not np.all(np.isfinite(out)) or np.abs(out).max() > _INT32_MAX):
        raise NeuronSpecError("LUT entries do not fit int32 (λ or coefficients too large)", field=field)
    return out.astype(np.int32)


def _rnd_scalar(value: float, field: str, limit: int = _INT32_MAX) -> int:
    out = math.floor(value + 0.5)
    if not math.isfinite(value) or abs(out) > limit:
        raise NeuronSpecError(f"constant {value!r} does not fit the fixed-point format", field=field)
    return int(out)


def _index_shift(scale: float, step_bits: int) -> int:
    """Largest s >= 0 with 2^s·scale <= 2^-step_bits (scale = real units per integer step), capped."""
    if scale * 2.0 ** (-step_bits) <= 0.0:
        return 0
    s = max(0, int(math.floor(-step_bits - math.log2(scale))))
    while s > 0 and (2.0 ** s) * scale > 2.0 ** (-step_bits):
        s -= 1
    while (2.0 ** (s + 1)) * scale <= 2.0 ** (-step_bits):
        s += 1
    return min(s, _MAX_SHIFT)


def _table_size(n: float, field: str) -> int:
    """A table length, refused (before allocation) beyond :data:`MAX_TABLE_ENTRIES`."""
    if not math.isfinite(n) or not 1 <= n <= MAX_TABLE_ENTRIES:
        raise NeuronSpecError(f"the table would have {n:.4g} entries (at most {MAX_TABLE_ENTRIES}): λ or the "
                              "coefficients are out of range", field=field)
    return int(n)


def _softplus(y):
    y = np.asarray(y, dtype=np.float64)
    return np.maximum(y, 0.0) + np.log1p(np.exp(-np.abs(y)))


@dataclass(frozen=True, eq=False)
class ThresholdLuts:
    """Integer tables and constants of one layer's fixed-point MSAT threshold (see the module docstring).

    Arrays are 1-D, read-only ``np.int32``; scalars are Python ints. Parts a mode does not use hold a single
    zero entry (``sp_lut``/``det_lut``) and zero constants.
    """

    mode: str
    frac_bits: int
    z_frac_bits: int
    z_max: int
    sig_shift: int
    sig_guard: int
    sig_lut: np.ndarray
    dtt_offset: int
    dtt_slope_neg: int
    dtt_slope_pos: int
    dtt_slope_shift: int
    sp_shift: int
    sp_lut: np.ndarray
    det_x0: int
    det_shift: int
    det_lut: np.ndarray

    def __post_init__(self):
        mode = _text(self.mode, "luts.mode")
        if mode not in ("dtt", "det", "msat"):
            raise NeuronSpecError(f"must be 'dtt', 'det' or 'msat', got {mode!r}", field="luts.mode")
        object.__setattr__(self, "mode", mode)
        for name in _SCALARS:
            object.__setattr__(self, name, _integer(getattr(self, name), f"luts.{name}"))
        for name in ("sig_shift", "sig_guard", "dtt_slope_shift", "sp_shift", "det_shift"):
            if not 0 <= getattr(self, name) <= _MAX_SHIFT:
                raise NeuronSpecError(f"shift must be in [0, {_MAX_SHIFT}]", field=f"luts.{name}")
        if not 4 <= self.frac_bits <= 16:
            raise NeuronSpecError("must be in [4, 16]", field="luts.frac_bits")
        if not 1 <= self.z_frac_bits <= 24:
            raise NeuronSpecError("must be in [1, 24]", field="luts.z_frac_bits")
        for name in ("dtt_slope_neg", "dtt_slope_pos"):
            if not 0 <= getattr(self, name) <= _INT32_MAX:
                raise NeuronSpecError("slope must be in [0, 2^31)", field=f"luts.{name}")
        for name in _ARRAYS:
            raw = np.asarray(getattr(self, name))
            if raw.ndim != 1 or raw.size == 0:
                raise NeuronSpecError("must be a non-empty 1-D array", field=f"luts.{name}")
            if raw.dtype.kind not in "iu":
                if raw.dtype.kind != "f" or not np.all(np.isfinite(raw)) or not np.all(raw == np.floor(raw)):
                    raise NeuronSpecError(f"must hold integers, got dtype {raw.dtype}", field=f"luts.{name}")
            wide = raw.astype(np.int64)
            if np.abs(wide).max() > _INT32_MAX:
                raise NeuronSpecError("entries must fit int32", field=f"luts.{name}")
            arr = wide.astype(np.int32)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        step = 1 << self.sig_shift
        if self.z_max <= 0 or (2 * self.z_max) % step != 0 or self.sig_lut.size != 2 * self.z_max // step + 1:
            raise NeuronSpecError("sigmoid table length must be 2·z_max/2^sig_shift + 1", field="luts.sig_lut")

    @property
    def one(self) -> int:
        """ONE = 2^F."""
        return 1 << self.frac_bits

    @property
    def n_entries(self) -> int:
        """Total number of table entries (int32)."""
        return int(self.sig_lut.size + self.sp_lut.size + self.det_lut.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ThresholdLuts):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in ("mode",) + _SCALARS) and all(
            np.array_equal(getattr(self, n), getattr(other, n)) for n in _ARRAYS)

    __hash__ = None  # mutable-looking payload (arrays); not hashable

    def to_dict(self) -> dict[str, Any]:
        """Scalars as Python ints/str, tables as (copies of) ``np.int32`` arrays."""
        out: dict[str, Any] = {"mode": self.mode}
        out.update({n: getattr(self, n) for n in _SCALARS})
        out.update({n: np.array(getattr(self, n), dtype=np.int32) for n in _ARRAYS})
        return out

    @classmethod
    def field_kinds(cls) -> dict[str, str]:
        """Storage kind of every field (:data:`netx_export.neurons.TABLE_KINDS`), in dataclass order."""
        from dataclasses import fields

        return {f.name: "str" if f.name == "mode" else ("i32_1d" if f.name in _ARRAYS else "int")
                for f in fields(cls)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ThresholdLuts":
        _check_keys(data, _FIELDS, _FIELDS, "luts")
        return cls(**{n: data[n] for n in _FIELDS})


def make_luts(spec: NeuronSpec) -> ThresholdLuts | None:
    """Generate the threshold tables of one layer in float64 (None for mode 'const')."""
    if not isinstance(spec, NeuronSpec):
        raise NeuronSpecError(f"expected NeuronSpec, got {type(spec).__name__}", field="spec")
    if spec.mode == "const":
        return None
    F, FZ, P = spec.frac_bits, Z_FRAC_BITS, SLOPE_SHIFT
    # λ as it appears in the formula (units 'raw': λ; 'normalized': 1). The normalized-domain integers are the
    # same in both; one LSB is worth λ_f·2^−F in the formula's units, so every constant below uses λ_f only.
    lam, c = spec.formula_lam, spec.coefs
    unit = lam / float(1 << F)  # value of one integer LSB in the formula's units

    # sigmoid over [-Z, Z], step 2^-SIG_STEP_BITS
    Z = sigmoid_range(F)
    sig_shift = FZ - SIG_STEP_BITS
    n_sig = 2 * Z * (1 << SIG_STEP_BITS) + 1
    zs = -Z + np.arange(n_sig, dtype=np.float64) * 2.0 ** (-SIG_STEP_BITS)
    sig = np.where(zs >= 0, 1.0 / (1.0 + np.exp(-np.abs(zs))), np.exp(-np.abs(zs)) / (1.0 + np.exp(-np.abs(zs))))
    sig_lut = _rnd(sig, F + SIG_GUARD_BITS, "luts.sig_lut")

    zero = np.zeros(1, dtype=np.int32)
    use_dtt = spec.mode in ("dtt", "msat")
    use_det = spec.mode in ("det", "msat")

    dtt_offset = slope_neg = slope_pos = sp_shift = 0
    sp_lut = zero
    if use_dtt:
        tau = c.tau_mp
        dtt_offset = _rnd_scalar(-tau * lam * 2.0 ** FZ, "luts.dtt_offset", limit=1 << 52)
        a_pos = tau * (c.alpha + c.k_a / c.k_i) * lam
        while P > 0 and a_pos * 2.0 ** (FZ - F + P) >= 2.0 ** 31 - 1:
            P -= 1  # very large λ: fewer slope fraction bits so the slopes stay int32
        slope_neg = _rnd_scalar(tau * c.alpha * lam * 2.0 ** (FZ - F + P), "luts.dtt_slope_neg")
        slope_pos = _rnd_scalar(a_pos * 2.0 ** (FZ - F + P), "luts.dtt_slope_pos")
        amp = tau * c.k_a
        if amp * math.log(2.0) * 2.0 ** FZ >= 0.5:
            y_per_lsb = unit / c.k_i
            sp_shift = _index_shift(y_per_lsb, SP_STEP_BITS)
            y_max = math.log(amp * 2.0 ** (FZ + 1))
            y_step = y_per_lsb * 2.0 ** sp_shift
            n_sp = _table_size(math.floor(y_max / y_step) + 2, "luts.sp_lut")
            ys = np.arange(n_sp, dtype=np.float64) * y_step
            sp_lut = _rnd(amp * np.log1p(np.exp(-ys)), FZ, "luts.sp_lut")

    det_x0 = det_shift = 0
    det_lut = zero
    if use_det and c.tau_rd * 2.0 ** (FZ + 1) > 1e-300:
        amp = c.tau_rd
        g_ref = 0.0
        if use_dtt:
            d_ref = -DELTA_REF * lam
            g_ref = c.tau_mp * (c.alpha * d_ref - lam + c.k_a * float(_softplus(d_ref / c.k_i)))
        h_cap = min(Z + 1.0 + max(0.0, -g_ref), H_CAP_MAX)
        w_per_lsb = unit / c.C
        det_shift = _index_shift(w_per_lsb, DET_STEP_BITS)
        w_lo = math.log(amp / h_cap)
        w_hi = math.log(amp * 2.0 ** (FZ + 1))
        det_x0 = int(math.floor(w_lo / w_per_lsb))
        step = float(1 << det_shift)
        n_det = _table_size(math.ceil((w_hi / w_per_lsb - det_x0) / step) + 1, "luts.det_lut")
        xs = (det_x0 + np.arange(n_det, dtype=np.float64) * step) * w_per_lsb
        det_lut = _rnd(amp * np.exp(-xs), FZ, "luts.det_lut")
        if abs(det_x0) > 1 << 52:
            raise NeuronSpecError("DET domain start does not fit the integer range", field="luts.det_x0")

    return ThresholdLuts(
        mode=spec.mode, frac_bits=F, z_frac_bits=FZ, z_max=Z << FZ, sig_shift=sig_shift,
        sig_guard=SIG_GUARD_BITS, sig_lut=sig_lut, dtt_offset=dtt_offset, dtt_slope_neg=slope_neg,
        dtt_slope_pos=slope_pos, dtt_slope_shift=P, sp_shift=sp_shift, sp_lut=sp_lut, det_x0=det_x0,
        det_shift=det_shift, det_lut=det_lut)
