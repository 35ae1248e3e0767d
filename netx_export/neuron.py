"""Parameters of one spiking (neuron) layer, as stored in the exported file.

A spiking layer replaces one ReLU of the ANN (ALGORITHMS §1.2, §2). Its rule is fully described by a
:class:`NeuronSpec`; the dynamics themselves live in :mod:`msat_lava.dynamics` (this package never imports
``msat_lava`` or ``lava``). Units:

* ``lam`` (λ^l) is the layer scale in raw ANN activation units; the float model runs in raw units, the
  fixed-point model in the normalized domain (real value = integer · λ · 2^−frac_bits, DESIGN §4).
* ``coefs`` are the MSAT hyperparameters of ALGORITHMS §2.4 (Table 2), applied in raw units (§2.2):

      DTT(t) = α·Δ + V_T + k_a·ln(1 + exp(Δ/k_i)),   V_T = −λ,   Δ = v(t−1) − V̄(t)
      DET(t) = exp(−x(t)/C)
      z(t)   = τ_mp·DTT + τ_rd·DET   (mode 'msat'),  τ_mp·DTT ('dtt'),  τ_rd·DET ('det')
      θ(t)   = λ·σ(z(t)) for t ≥ 1,  θ(0) = λ;       mode 'const': θ(t) = k_const·λ for every t.

  ``units`` = 'normalized' (opt-in) selects the BrainCog port's variant instead (ALGORITHMS §2.2 note): the same
  formula on Δ̂ = Δ/λ, x̂ = x/λ with λ = 1 inside it (V_T = −1), still θ = λ·σ(z). Both variants are one formula
  with λ_f = :attr:`NeuronSpec.formula_lam` (λ or 1) applied to Δ, x divided by λ/λ_f (1 or λ).

* Spike confidence (ALGORITHMS §3): with ``sc_p`` = p set, for t < ``sc_early`` every spike is kept with
  probability p by the counter-based gate of :mod:`msat_lava.dynamics.prng`; ``sc_gate`` = 'code' discards
  the suppressed charge (gate after soft reset, §3.4), 'keep_charge' leaves it in the membrane.

Both dataclasses are frozen, validated at construction (:class:`NeuronSpecError`, naming the field) and
round-trip through :meth:`to_dict` / :meth:`from_dict`.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

from netx_export.errors import NetxExportError

__all__ = [
    "NeuronSpecError",
    "MsatCoefs",
    "PRESETS",
    "NeuronSpec",
    "MODES",
    "modes",
    "SC_GATES",
    "MAX_SC_EARLY",
    "UNITS",
]

#: The MSAT family's modes (the models of formats 1.0–1.3). Every registered mode: :func:`modes`.
MODES = ("const", "dtt", "det", "msat")
SC_GATES = ("code", "keep_charge")
UNITS = ("raw", "normalized")  # MSAT formula units: the paper's raw units, or the BrainCog port's Δ/λ, x/λ
MAX_SC_EARLY = 256  # the gate's key packs t in 8 bits (msat_lava.dynamics.prng)


def modes() -> tuple[str, ...]:
    """Every registered neuron model's name (:mod:`netx_export.neurons`), in registry order."""
    from netx_export import neurons

    return neurons.names()


class NeuronSpecError(NetxExportError, ValueError):
    """A neuron-layer parameter (or a LUT derived from it) is invalid; ``field`` names it."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(f"field {field!r}: {message}" if field is not None else message)
        self.field = field
        self.detail = message  # the message without its location (for an error that re-locates it)


def _real(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise NeuronSpecError(f"expected a real number, got {value!r}", field=field)
    out = float(value)
    if not math.isfinite(out):
        raise NeuronSpecError(f"must be finite, got {out!r}", field=field)
    return out


def _integer(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise NeuronSpecError(f"expected an integer, got {value!r}", field=field)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value) == int(value):
        return int(value)
    raise NeuronSpecError(f"expected an integer, got {value!r}", field=field)


def _text(value: Any, field: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise NeuronSpecError(f"expected a string, got {value!r}", field=field)
    return value


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], required: tuple[str, ...], what: str):
    if not isinstance(data, Mapping):
        raise NeuronSpecError(f"{what}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise NeuronSpecError(f"{what}: unknown key(s) {unknown}", field=unknown[0])
    for key in required:
        if key not in data:
            raise NeuronSpecError(f"{what}: missing key", field=key)


@dataclass(frozen=True)
class MsatCoefs:
    """MSAT hyperparameters (ALGORITHMS §2.4, order of Table 2): α, k_a, k_i, C, τ_mp, τ_rd.

    Constraints: all finite; α, k_a, τ_mp, τ_rd ≥ 0 (keeps z monotone in Δ and x, which the fixed-point
    LUT design relies on); k_i > 0 and C > 0 (divisors).
    """

    alpha: float
    k_a: float
    k_i: float
    C: float
    tau_mp: float
    tau_rd: float

    FIELDS = ("alpha", "k_a", "k_i", "C", "tau_mp", "tau_rd")

    def __post_init__(self):
        for name in self.FIELDS:
            value = _real(getattr(self, name), f"coefs.{name}")
            object.__setattr__(self, name, value)
            if name in ("k_i", "C"):
                if value <= 0.0:
                    raise NeuronSpecError(f"must be > 0, got {value!r}", field=f"coefs.{name}")
            elif value < 0.0:
                raise NeuronSpecError(f"must be >= 0, got {value!r}", field=f"coefs.{name}")

    def to_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MsatCoefs":
        _check_keys(data, cls.FIELDS, cls.FIELDS, "coefs")
        return cls(**{name: data[name] for name in cls.FIELDS})


#: Paper Table 2 (ALGORITHMS §2.4): (α, k_a, k_i, C, τ_mp, τ_rd).
PRESETS: dict[str, MsatCoefs] = {
    "vgg16": MsatCoefs(alpha=0.03, k_a=1.0, k_i=1.0, C=5.0, tau_mp=1.0, tau_rd=1.0),
    "resnet20": MsatCoefs(alpha=0.3, k_a=1.0, k_i=1.0, C=5.0, tau_mp=0.5, tau_rd=0.5),
    "resnet34": MsatCoefs(alpha=1.0, k_a=1.0, k_i=1.0, C=5.0, tau_mp=0.5, tau_rd=0.5),
}


@dataclass(frozen=True)
class NeuronSpec:
    """One spiking layer's rule.

    Fields (validated; numbers are normalized to Python ``float`` / ``int``):

    * ``mode``: a registered neuron model (:mod:`netx_export.neurons`): 'const' | 'dtt' | 'det' | 'msat' (ALGORITHMS
      §2.2 mode flags; 'const' = §1.2 VthHand) | 'dtif-r' | 'bsnn-r' | ...
    * ``lam``: λ^l > 0, raw activation units.
    * ``k_const``: const-mode threshold factor, 0 < k ≤ 1 (θ = k·λ; fixed point θ̂ = floor(k·2^F + 0.5) ≥ 1,
      so that θ̂ ∈ [1, 2^F] as DESIGN §4 requires).
    * ``coefs``: :class:`MsatCoefs`, required unless mode is 'const' (where it may be given and is ignored).
    * ``gamma``: Γ ≥ 1, maximum spikes per step.
    * ``sc_p``: spike confidence p ∈ (0, 1], or None (gate off).
    * ``sc_early``: E, gate active for layer-local steps t < E; 0 ≤ E ≤ 256.
    * ``sc_gate``: 'code' (reset with the ungated spike, suppressed charge discarded) | 'keep_charge'.
    * ``frac_bits``: F, fractional bits of the normalized fixed-point domain, 4 ≤ F ≤ 16 (DESIGN: 12).
    * ``state_bits``: width of the saturating signed state v̂, F + 2 ≤ bits ≤ 32 (DESIGN: 24).
    * ``units``: units of the MSAT formula (ALGORITHMS §2.2): 'raw' (default; the paper/code's raw-unit model,
      V_T = −λ) | 'normalized' (the BrainCog port: Δ/λ, x/λ and λ = 1 inside the formula, θ = λ·σ(z)). Only the
      threshold of modes dtt/det/msat depends on it; absent from older files/dicts, where it means 'raw'.
    * ``v_init``: initial residual as a fraction of λ, 0 ≤ v_init < 1: v(0) = v_init·λ (raw units), fixed point
      v̂(0) = floor(v_init·2^F + 0.5). 0 (default; the paper) starts empty; 0.5 is the half-threshold start of
      Bu et al. 2022 (ICLR, "Optimal ANN-SNN conversion"), which turns the rate code's floor into a rounding
      and removes most of the low-T conversion error. Absent from older files/dicts, where it means 0.
    * ``params``: the model-specific parameter object of modes registered from format 1.4 on (the model's
      ``params_type``, e.g. :class:`netx_export.neurons.dtif_r.DtifParams`; a mapping is converted), None for the
      MSAT family. For such a mode the MSAT-family fields keep their defaults (k_const 1, coefs None, units
      'raw'). Absent from older dicts, where it means None.
    """

    mode: str
    lam: float
    k_const: float = 1.0
    coefs: MsatCoefs | None = None
    gamma: int = 1
    sc_p: float | None = None
    sc_early: int = 16
    sc_gate: str = "code"
    frac_bits: int = 12
    state_bits: int = 24
    units: str = "raw"
    v_init: float = 0.0
    params: Any = None

    FIELDS = ("mode", "lam", "k_const", "coefs", "gamma", "sc_p", "sc_early", "sc_gate", "frac_bits",
              "state_bits", "units", "v_init", "params")

    def __post_init__(self):
        from netx_export import neurons

        mode = _text(self.mode, "mode")
        model = neurons.get(mode)
        object.__setattr__(self, "mode", mode)

        lam = _real(self.lam, "lam")
        if lam <= 0.0:
            raise NeuronSpecError(f"must be > 0, got {lam!r}", field="lam")
        object.__setattr__(self, "lam", lam)

        frac_bits = _integer(self.frac_bits, "frac_bits")
        if not 4 <= frac_bits <= 16:
            raise NeuronSpecError(f"must be in [4, 16], got {frac_bits}", field="frac_bits")
        object.__setattr__(self, "frac_bits", frac_bits)

        state_bits = _integer(self.state_bits, "state_bits")
        if not frac_bits + 2 <= state_bits <= 32:
            raise NeuronSpecError(f"must be in [frac_bits + 2, 32] = [{frac_bits + 2}, 32], got {state_bits}",
                                  field="state_bits")
        object.__setattr__(self, "state_bits", state_bits)

        k_const = _real(self.k_const, "k_const")
        if not 0.0 < k_const <= 1.0:
            raise NeuronSpecError(f"must be in (0, 1], got {k_const!r}", field="k_const")
        if math.floor(k_const * (1 << frac_bits) + 0.5) < 1:
            raise NeuronSpecError(f"k_const·2^frac_bits rounds to 0 (k_const={k_const!r})", field="k_const")
        object.__setattr__(self, "k_const", k_const)

        coefs = self.coefs
        if isinstance(coefs, Mapping):
            coefs = MsatCoefs.from_dict(coefs)
        if coefs is not None and not isinstance(coefs, MsatCoefs):
            raise NeuronSpecError(f"expected MsatCoefs or None, got {type(coefs).__name__}", field="coefs")
        object.__setattr__(self, "coefs", coefs)

        gamma = _integer(self.gamma, "gamma")
        if not 1 <= gamma <= 1 << 16:
            raise NeuronSpecError(f"must be in [1, 65536], got {gamma}", field="gamma")
        object.__setattr__(self, "gamma", gamma)

        if self.sc_p is not None:
            sc_p = _real(self.sc_p, "sc_p")
            if not 0.0 < sc_p <= 1.0:
                raise NeuronSpecError(f"must be in (0, 1] or None, got {sc_p!r}", field="sc_p")
            object.__setattr__(self, "sc_p", sc_p)

        sc_early = _integer(self.sc_early, "sc_early")
        if not 0 <= sc_early <= MAX_SC_EARLY:
            raise NeuronSpecError(f"must be in [0, {MAX_SC_EARLY}], got {sc_early}", field="sc_early")
        object.__setattr__(self, "sc_early", sc_early)

        sc_gate = _text(self.sc_gate, "sc_gate")
        if sc_gate not in SC_GATES:
            raise NeuronSpecError(f"must be one of {SC_GATES}, got {sc_gate!r}", field="sc_gate")
        object.__setattr__(self, "sc_gate", sc_gate)

        units = _text(self.units, "units")
        if units not in UNITS:
            raise NeuronSpecError(f"must be one of {UNITS}, got {units!r}", field="units")
        object.__setattr__(self, "units", units)

        v_init = _real(self.v_init, "v_init")
        if not 0.0 <= v_init < 1.0:
            raise NeuronSpecError(f"must be in [0, 1), got {v_init!r}", field="v_init")
        object.__setattr__(self, "v_init", v_init)

        params = self.params
        if model.params_type is None:
            if params is not None:
                raise NeuronSpecError(f"mode {mode!r} has no model parameters, got {params!r}", field="params")
        else:
            if isinstance(params, Mapping):
                params = model.params_from_dict(params)
            if params is None:
                params = model.default_params()
            if not isinstance(params, model.params_type):
                raise NeuronSpecError(f"expected {model.params_type.__name__}, got {type(params).__name__}",
                                      field="params")
            for name, default in (("k_const", 1.0), ("coefs", None), ("units", "raw")):
                if getattr(self, name) != default:
                    raise NeuronSpecError(f"an MSAT-family field; mode {mode!r} needs the default {default!r}",
                                          field=name)
        object.__setattr__(self, "params", params)
        model.check(self)

    # ---- derived integer constants (fixed point, DESIGN §4) ----
    @property
    def one(self) -> int:
        """ONE = 2^F, the fixed-point value of λ (θ̂ at t = 0)."""
        return 1 << self.frac_bits

    @property
    def v_max(self) -> int:
        """Saturation bound of v̂: 2^(state_bits−1) − 1 (v̂ ∈ [−v_max, v_max])."""
        return (1 << (self.state_bits - 1)) - 1

    @property
    def lsb(self) -> float:
        """Raw-unit value of one fixed-point LSB of this layer's state and payload: λ·2^−F."""
        return self.lam / self.one

    @property
    def theta_const_fixed(self) -> int:
        """Const-mode fixed threshold θ̂ = floor(k_const·2^F + 0.5)."""
        return int(math.floor(self.k_const * self.one + 0.5))

    @property
    def v_init_fixed(self) -> int:
        """v̂(0) = floor(v_init·2^F + 0.5), the fixed-point initial residual (≤ 2^F: rounding may reach λ)."""
        return int(math.floor(self.v_init * self.one + 0.5))

    @property
    def formula_lam(self) -> float:
        """λ_f, the λ inside the MSAT formula: λ for units 'raw', 1 for 'normalized'. The formula's Δ and x are the
        raw-unit values divided by λ/λ_f, so one LSB of the normalized fixed-point domain is λ_f·2^−F there."""
        return self.lam if self.units == "raw" else 1.0

    @property
    def sc_enabled(self) -> bool:
        """True when the spike-confidence gate can act (p set and E > 0)."""
        return self.sc_p is not None and self.sc_early > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "lam": self.lam,
            "k_const": self.k_const,
            "coefs": None if self.coefs is None else self.coefs.to_dict(),
            "gamma": self.gamma,
            "sc_p": self.sc_p,
            "sc_early": self.sc_early,
            "sc_gate": self.sc_gate,
            "frac_bits": self.frac_bits,
            "state_bits": self.state_bits,
            "units": self.units,
            "v_init": self.v_init,
            "params": None if self.params is None else self.params.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NeuronSpec":
        """Inverse of :meth:`to_dict`; only ``mode`` and ``lam`` are required (a dict without ``units``,
        ``v_init`` or ``params``, as written before those fields existed, gives 'raw' / 0 / None)."""
        _check_keys(data, cls.FIELDS, ("mode", "lam"), "neuron")
        kwargs = dict(data)
        coefs = kwargs.get("coefs")
        if coefs is not None:
            kwargs["coefs"] = MsatCoefs.from_dict(coefs)
        return cls(**kwargs)
