"""DTIF-R: our reconstruction of DTIF (Wu et al., Neurocomputing 544:126247, 2023), ALGORITHMS §5.3 **[R]/[U]**.

Verified about DTIF (§5.2, from the abstract only): the threshold of an IF neuron is adjusted at every step and is
"inversely related to the neuron input", to raise spike activity and lower latency versus max-norm. Everything
below — the function g, β, g_min, the three variants — is the spec's reconstruction, **not** the authors' method.

Float model (raw units, layer l, λ = λ^l; u = x(t)/λ):

    g(u) = 1                                      u ≤ 0        (negative input never raises θ above λ)
    g(u) = max(g_min, 1/(1 + β·u))                u > 0        shape 'hyperbolic' (default)
    g(u) = max(g_min, exp(−β·u))                  u > 0        shape 'exp'
    θ(t) = λ·g(u(t));   m = v + x;   s = [m ≥ θ]  (Γ > 1: min(Γ, ⌊(m − θ)/r⌋ + 1) for m ≥ θ)
    variant 'a' (default): r = q = λ    v = m − s·λ, o = s·λ   (binary spikes of value λ; charge conserved)
    variant 'b':           r = q = θ    v = m − s·θ, o = s·θ   (graded; = MSAT DET-only with another g)
    variant 'c':           r = θ, q = λ v = m − s·θ, o = s·λ   (NOT charge-conserving; an ablation)

Fixed model (normalized domain, real = integer·λ·2^−F; x̂ is the integer input, so û = x̂·2^−F): one table over
the clamped input, linear interpolation (round half up), G = 8 guard bits:

    θ̂ = 2^F                                                     x̂ ≤ 0
    θ̂ = clip((L[i]·2^s + (L[i+1] − L[i])·ρ + 2^(s+G−1)) >> (s+G), θ̂_min, 2^F)   x̂ > 0,
         a = min(x̂, x̂_max) + o, i = a >> s, ρ = a mod 2^s,
         L[k] = floor(g((k·2^s − o)·2^−F)·2^(F+G) + 0.5) (int32; g's smooth branch for the one point below 0,
         which may exceed 2^(F+G) by < 2^(F+G−1)/2^F),   θ̂_min = max(1, floor(g_min·2^F + 0.5)),
         x̂_max = ⌈û_max·2^F⌉, o = (n−1)·2^s − x̂_max ∈ [0, 2^s): the last grid point is the corner at û_max

The table covers û ∈ [0, û_max] with û_max = (1/g_min − 1)/β (hyperbolic) or ln(1/g_min)/β (exp), beyond which
g = g_min exactly; s is the largest shift keeping the interpolation error ≤ 1/4 LSB (:func:`table_geometry`;
at most 8193 entries, which needs g_min ≳ 1/64 for the hyperbolic shape). Reset/payload: r̂ = q̂ = 2^F (variant a),
θ̂ (b), r̂ = θ̂ and q̂ = 2^F (c). State v̂ saturates at state_bits as every model's (§9.2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np

from netx_export.neuron import NeuronSpecError, _check_keys, _integer, _real, _text
from netx_export.neurons import NeuronModel, Param, register

__all__ = ["DtifParams", "DtifTables", "DtifR", "SHAPES", "VARIANTS", "GUARD_BITS", "MAX_ENTRIES", "u_max"]

SHAPES = ("hyperbolic", "exp")
VARIANTS = ("a", "b", "c")
GUARD_BITS = 8
MAX_ENTRIES = 8193
BETA_MAX = 64.0
BETA_MIN = 1e-3  # β is 0 (plain IF) or at least this (bounds the table's domain)


@dataclass(frozen=True)
class DtifParams:
    """DTIF-R parameters (all **[U]**; defaults are the spec's, ALGORITHMS §5.3).

    * ``beta`` β: gain of the threshold modulation, 0 (θ = λ, plain max-norm IF) or in [1e-3, 64]; default 1.
    * ``g_min``: floor of g, in (0, 1]; default 0.25 (θ ≥ λ/4).
    * ``shape``: 'hyperbolic' (1/(1+βu), default) | 'exp' (e^(−βu)).
    * ``variant``: 'a' (reset and payload λ, default) | 'b' (θ, graded) | 'c' (reset θ, payload λ).
    """

    beta: float = 1.0
    g_min: float = 0.25
    shape: str = "hyperbolic"
    variant: str = "a"

    def __post_init__(self):
        beta = _real(self.beta, "beta")
        if not (beta == 0.0 or BETA_MIN <= beta <= BETA_MAX):
            raise NeuronSpecError(f"must be 0 or in [{BETA_MIN}, {BETA_MAX}], got {beta!r}", field="beta")
        object.__setattr__(self, "beta", beta)
        g_min = _real(self.g_min, "g_min")
        if not 0.0 < g_min <= 1.0:
            raise NeuronSpecError(f"must be in (0, 1], got {g_min!r}", field="g_min")
        object.__setattr__(self, "g_min", g_min)
        shape = _text(self.shape, "shape")
        if shape not in SHAPES:
            raise NeuronSpecError(f"must be one of {list(SHAPES)}, got {shape!r}", field="shape")
        object.__setattr__(self, "shape", shape)
        variant = _text(self.variant, "variant").lower()
        if variant not in VARIANTS:
            raise NeuronSpecError(f"must be one of {list(VARIANTS)}, got {variant!r}", field="variant")
        object.__setattr__(self, "variant", variant)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DtifParams":
        names = tuple(f.name for f in fields(cls))
        _check_keys(data, names, names, "params")
        return cls(**{k: data[k] for k in names})


def u_max(params: DtifParams) -> float:
    """û_max: beyond it g = g_min exactly (0 for β = 0)."""
    if params.beta == 0.0:
        return 0.0
    if params.shape == "hyperbolic":
        return (1.0 / params.g_min - 1.0) / params.beta
    return math.log(1.0 / params.g_min) / params.beta


def g_float64(params: DtifParams, u: np.ndarray) -> np.ndarray:
    """g(u) in float64 numpy (table generation and tests)."""
    u = np.asarray(u, dtype=np.float64)
    pos = np.maximum(u, 0.0)
    if params.shape == "hyperbolic":
        core = 1.0 / (1.0 + params.beta * pos)
    else:
        core = np.exp(-params.beta * pos)
    return np.where(u > 0, np.maximum(params.g_min, core), 1.0)


_T_SCALARS = ("frac_bits", "shift", "guard", "x_max", "offset", "theta_min")


@dataclass(frozen=True, eq=False)
class DtifTables:
    """The fixed-point threshold table of one DTIF-R layer (module docstring): ``g_lut`` (1-D int32, F + G
    fractional bits), ``shift`` s, ``guard`` G, ``x_max`` = ⌈û_max·2^F⌉ (input clamp), ``offset`` o ∈ [0, 2^s)
    with x_max + o = (len − 1)·2^s (the grid ends on the corner where g reaches g_min), ``theta_min``."""

    mode: str
    frac_bits: int
    shift: int
    guard: int
    x_max: int
    offset: int
    theta_min: int
    g_lut: np.ndarray

    def __post_init__(self):
        mode = _text(self.mode, "luts.mode")
        if mode != DtifR.name:
            raise NeuronSpecError(f"must be {DtifR.name!r}, got {mode!r}", field="luts.mode")
        object.__setattr__(self, "mode", mode)
        for name in _T_SCALARS:
            object.__setattr__(self, name, _integer(getattr(self, name), f"luts.{name}"))
        if not 4 <= self.frac_bits <= 16:
            raise NeuronSpecError("must be in [4, 16]", field="luts.frac_bits")
        if not 0 <= self.shift <= 40:
            raise NeuronSpecError("must be in [0, 40]", field="luts.shift")
        if self.guard != GUARD_BITS:
            raise NeuronSpecError(f"must be {GUARD_BITS}", field="luts.guard")
        raw = np.asarray(self.g_lut)
        if raw.ndim != 1 or not 1 <= raw.size <= MAX_ENTRIES or raw.dtype.kind not in "iu":
            raise NeuronSpecError(f"must be a 1-D integer array of 1..{MAX_ENTRIES} entries", field="luts.g_lut")
        wide = raw.astype(np.int64)
        one_g = 1 << (self.frac_bits + self.guard)
        if wide.min() < 1 or wide.max() > 2 * one_g:
            raise NeuronSpecError(f"entries must be in [1, 2^(F+G+1)] = [1, {2 * one_g}]", field="luts.g_lut")
        arr = wide.astype(np.int32)
        arr.setflags(write=False)
        object.__setattr__(self, "g_lut", arr)
        if not 0 <= self.offset < 1 << self.shift or (self.shift == 0 and self.offset):
            raise NeuronSpecError("must be in [0, 2^shift)", field="luts.offset")
        if self.x_max < 0 or self.x_max + self.offset != (arr.size - 1) << self.shift:
            raise NeuronSpecError("x_max + offset must be (len(g_lut) − 1)·2^shift", field="luts.x_max")
        if not 1 <= self.theta_min <= 1 << self.frac_bits:
            raise NeuronSpecError("must be in [1, 2^F]", field="luts.theta_min")

    @property
    def one(self) -> int:
        return 1 << self.frac_bits

    @property
    def n_entries(self) -> int:
        return int(self.g_lut.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DtifTables):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in ("mode",) + _T_SCALARS) and \
            np.array_equal(self.g_lut, other.g_lut)

    __hash__ = None

    @classmethod
    def field_kinds(cls) -> dict[str, str]:
        return {"mode": "str", **{n: "int" for n in _T_SCALARS}, "g_lut": "i32_1d"}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode}
        out.update({n: getattr(self, n) for n in _T_SCALARS})
        out["g_lut"] = np.array(self.g_lut, dtype=np.int32)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DtifTables":
        names = tuple(cls.field_kinds())
        _check_keys(data, names, names, "luts")
        return cls(**{n: data[n] for n in names})


def table_geometry(params: DtifParams, frac_bits: int) -> tuple[int, int]:
    """(s, n): the index shift and the number of entries. s is the largest shift whose linear-interpolation error
    stays ≤ 1/4 LSB: the step h = 2^s·2^−F in u has h²·max|g''|/8 ≤ 2^−F/4, with max|g''| = 2β² (hyperbolic) or
    β² (exp), i.e. (2^s·β)² ≤ c·2^F with c = 1 or 2; n = ⌈x̂_max/2^s⌉ + 1 for x̂_max = ⌈û_max·2^F⌉. More than
    MAX_ENTRIES entries (g_min too small for the hyperbolic shape, below ≈ 1/64) is refused."""
    F = frac_bits
    x_hi = int(math.ceil(u_max(params) * (1 << F)))
    shift = 0
    if params.beta > 0:
        c = 1.0 if params.shape == "hyperbolic" else 2.0
        while shift < 40 and (2.0 ** (shift + 1) * params.beta) ** 2 <= c * (1 << F):
            shift += 1
    n = -(-x_hi // (1 << shift)) + 1
    if n > MAX_ENTRIES:
        raise NeuronSpecError(f"the threshold table would need {n} entries (at most {MAX_ENTRIES}): raise g_min "
                              f"(got {params.g_min!r}) or use shape 'exp'", field="params/g_min")
    return shift, n


def make_tables(spec) -> DtifTables:
    """The layer's table from its spec (float64, module docstring)."""
    p: DtifParams = spec.params
    F, G = spec.frac_bits, GUARD_BITS
    shift, n = table_geometry(p, F)
    x_hi = int(math.ceil(u_max(p) * (1 << F)))
    offset = ((n - 1) << shift) - x_hi
    # grid point k sits at x̂ = k·2^s − offset; the first may lie just below 0 (within one step), where the smooth
    # branch of g is used (the runtime only interpolates there for x̂ > 0 and clips θ̂ ≤ 2^F)
    u = (np.arange(n, dtype=np.float64) * float(1 << shift) - offset) / float(1 << F)
    core = 1.0 / (1.0 + p.beta * u) if p.shape == "hyperbolic" else np.exp(-p.beta * u)
    lut = np.floor(np.maximum(p.g_min, core) * float(1 << (F + G)) + 0.5)  # ≤ 2^(F+G)·(1 + 2^−F/2)
    theta_min = max(1, int(math.floor(p.g_min * (1 << F) + 0.5)))
    return DtifTables(mode=DtifR.name, frac_bits=F, shift=shift, guard=G, x_max=x_hi, offset=offset,
                      theta_min=theta_min, g_lut=lut.astype(np.int32))


@register
class DtifR(NeuronModel):
    name = "dtif-r"
    order = 10
    summary = ("DTIF-R (our reconstruction of DTIF, §5.3): θ = λ·max(g_min, 1/(1+β·x/λ)) for x > 0 else λ, "
               "every step; variant a resets and transmits λ")
    since = (1, 4)
    params_type = DtifParams
    params = (Param("beta", float, 1.0, "gain β of the threshold modulation (0 = plain IF)"),
              Param("g_min", float, 0.25, "floor of θ/λ, in (0, 1]"),
              Param("shape", str, "hyperbolic", "g shape", SHAPES),
              Param("variant", str, "a", "a: reset/payload λ; b: θ (graded); c: reset θ, payload λ", VARIANTS))
    tables_type = DtifTables
    graded = False  # variants a, c: one payload value per layer (λ); variant b is graded
    reconstruction = True

    def check(self, spec) -> None:
        if math.floor(spec.params.g_min * (1 << spec.frac_bits) + 0.5) < 1:
            raise NeuronSpecError(f"g_min·2^frac_bits rounds to 0 (g_min={spec.params.g_min!r})",
                                  field="params/g_min")
        table_geometry(spec.params, spec.frac_bits)

    def make_tables(self, spec) -> DtifTables:
        return make_tables(spec)
