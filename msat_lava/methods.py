"""The threshold-method grammar of ``msat-lava eval``, ``benchmarks/accuracy.py`` and :func:`msat_lava.evaluate`.

This module owns the method names: what is a name, what it means, and the one parser every caller uses
(``cli_eval.parse_methods`` / ``method_settings`` / ``threshold_divisor`` / ``divided_lambdas`` are thin wrappers
of the functions here). What a method does to a network (calibration, bias / weight correction, spike confidence,
quantization) is :class:`msat_lava.evaluate.NetworkBuilder`'s business.

A method name is a **core**, then optional **suffixes**, each at most once, in this order::

    core[:key=value...][+pQ][+cw][+h][+bN | +bsN][+wc[T]][+bc[T]][+sc]

* cores: ``const`` (θ = λ, max-norm IF); ``pQ`` (const with λ = the Q-th percentile, 0 < Q ≤ 100); ``dtt``,
  ``det``, ``msat`` (MSAT with one / both of its terms, in the formula units of the network or ``--msat-units``);
  the same with ``-norm`` (units 'normalized', the BrainCog variant); every registered neuron model with
  parameters (:mod:`netx_export.neurons`: ``dtif-r``, ``bsnn-r``, ...), with its parameters as ``:key=value``
  (defaults otherwise), e.g. ``dtif-r:beta=3``, ``bsnn-r:k=6``.
* suffixes: ``+pQ`` (λ = Q-th percentile; not after const/pQ, which spell it as the core), ``+cw`` (channel-wise
  λ by channel balancing, :mod:`netx_export.balance`), ``+h`` (v_init = ½, half-threshold start), ``+bN``
  (burst: up to Γ = N spikes per step, ALGORITHMS §7) or ``+bsN`` (const / pQ cores only: burst Γ = N with
  θ = λ/N, :meth:`MethodSpec.threshold_divisor`), ``+wc`` / ``+wcT`` (weight calibration after T = 16 / T
  steps, :mod:`msat_lava.weight_calibration`), ``+bc`` / ``+bcT`` (bias correction after T = 32 / T steps,
  :mod:`msat_lava.bias_correction`), ``+sc`` (spike confidence; msat / msat-norm only).

:class:`MethodSpec` is one parsed name. ``MethodSpec.parse(text)`` normalizes (blanks, case), checks the grammar
and the ranges exactly as ``--methods`` does (:class:`msat_lava.data.DataError` otherwise), and
``str(spec)`` gives the normalized name back; ``MethodSpec.parse(str(spec)) == spec``. The spelling is kept
(``+bc`` and ``+bc32`` mean the same steps but are two names), so a spec and its string identify each other.
:func:`parse_methods` parses a comma list (validated, de-duplicated, in order).

The grammar deliberately matches what ``cli_eval`` accepted before this module existed, quirks included: the
patterns are Python ``re`` patterns anchored with ``^…$`` (``\\d`` takes any Unicode digit). One crash became a
refusal: a bare ``+p`` token after dtt/det/msat raised AttributeError, it is now an unknown method.

This module imports neither torch nor Lava (only the neuron registry, for the model cores).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["MethodSpec", "parse_methods", "method_settings", "threshold_divisor", "divided_lambdas",
           "DEFAULT_METHODS", "BC_STEPS", "WC_STEPS", "HALF"]

DEFAULT_METHODS = ("const", "p99.9", "p99.99", "dtt", "det", "msat", "msat+sc")
BC_STEPS = 32     # T of the bias-correction runs of "+bc" (override: "+bcN")
WC_STEPS = 16     # T of the weight-calibration runs of "+wc" (override: "+wcN")
HALF = 0.5        # v_init of the "+h" methods (half-threshold start)
BURST_MAX = 1 << 16
CORRECTION_STEPS_MAX = 4096

_PCT = re.compile(r"^p(\d+(?:\.\d+)?)$")
_MSAT_CORE = re.compile(r"^(?:const|p\d+(?:\.\d+)?|(?:dtt|det|msat)(?:-norm)?)$")
_PARAM = re.compile(r"^([a-z_][a-z0-9_]*)=([^:+,]+)$")
_BURST = re.compile(r"^b(\d+)$")
_BURST_SCALED = re.compile(r"^bs(\d+)$")   # burst with θ = λ/Γ ("+bsN", const cores)
_BC = re.compile(r"^bc(\d+)?$")
_WC = re.compile(r"^wc(\d+)?$")
#: the suffix kinds in grammar order (each at most once, in this order)
_ORDER = ("p", "cw", "h", "b", "wc", "bc", "sc")


def _registry_core(core: str) -> tuple[str, dict[str, str]] | None:
    """``name:key=value:...`` for a registered neuron model with parameters (netx_export.neurons) → (name,
    {key: text}); None if ``core`` is not of that form."""
    from netx_export import neurons

    name, *pairs = core.split(":")
    if name not in neurons.names() or neurons.get(name).params_type is None:
        return None
    out: dict[str, str] = {}
    for pair in pairs:
        m = _PARAM.match(pair)
        if m is None or m.group(1) in out:
            return None
        out[m.group(1)] = m.group(2)
    return name, out


def _registry_cores() -> list[str]:
    from netx_export import neurons

    return [n for n in neurons.names() if neurons.get(n).params_type is not None]


def _const_core(core: str) -> bool:
    return core == "const" or bool(_PCT.match(core))


def _kind(token: str) -> str:
    """The grammar kind of a suffix token (one of :data:`_ORDER`), or the token itself when it is none."""
    if _BURST.match(token) or _BURST_SCALED.match(token):
        return "b"
    if _BC.match(token):
        return "bc"
    if _WC.match(token):
        return "wc"
    if _PCT.match(token):
        return "p"
    return token if token in ("cw", "h", "sc") else "?"


def _split(core: str, tokens: Sequence[str]) -> dict[str, Any] | None:
    """The suffix values of ``core+token+...``: {"pct": float | None, "cw": bool, "h": bool, "gamma": int | None,
    "burst_scaled": bool, "wc": int | None, "bc": int | None, "sc": bool}; None if the name is not in the
    grammar (module docstring)."""
    if not (_MSAT_CORE.match(core) or _registry_core(core) is not None):
        return None
    opts: dict[str, Any] = {"pct": None, "cw": False, "h": False, "gamma": None, "burst_scaled": False, "wc": None,
                            "bc": None, "sc": False}
    order = list(_ORDER)
    for tok in tokens:
        kind = _kind(tok)
        if kind not in order:
            return None
        order = order[order.index(kind) + 1:]
        if kind == "p":
            if _const_core(core):
                return None
            opts["pct"] = float(_PCT.match(tok).group(1))
        elif kind in ("cw", "h", "sc"):
            opts[kind] = True
        elif kind == "b":
            scaled = _BURST_SCALED.match(tok)
            if scaled and not _const_core(core):
                return None
            opts["gamma"] = int((scaled or _BURST.match(tok)).group(1))
            opts["burst_scaled"] = bool(scaled)
        elif kind == "bc":
            opts["bc"] = int(_BC.match(tok).group(1) or BC_STEPS)
        else:  # wc
            opts["wc"] = int(_WC.match(tok).group(1) or WC_STEPS)
    if opts["sc"] and not core.startswith("msat"):
        return None
    return opts


def _unknown_message(raw: str) -> str:
    others = ", ".join(_registry_cores())
    return (f"--methods: unknown method {raw!r} (cores: const, pQ e.g. p99.9, dtt, det, msat, and "
            f"dtt/det/msat with -norm; {others} with optional :key=value parameters; optional "
            "suffixes in this order: +pQ (not after const/pQ), +cw, +h, "
            "+bN or +bsN (N ≥ 1; +bsN after const/pQ only), +wc[T], +bc[T], +sc (msat only), e.g. "
            "const+h, p99.9+cw+h+bc, p99.9+h+bs4, msat-norm+p99.9, msat-norm+h+b4+sc, dtif-r:beta=3+b2)")


@dataclass(frozen=True)
class MethodSpec:
    """One method name, parsed (module docstring): ``core`` (the text before the first '+': const, p99.9,
    msat-norm, dtif-r:beta=3, ...) and its ``suffixes`` as written (tokens without '+', grammar order).

    Build one with :meth:`parse` (normalizes and checks like ``--methods``) or :meth:`of` (an exact name, grammar
    only); the constructor checks the grammar (ValueError). ``str(spec)`` is the name. Typed views:
    :attr:`mode`, :meth:`units`, :attr:`percentile`, :attr:`channelwise`, :attr:`half` / :attr:`v_init`,
    :attr:`burst` / :meth:`gamma`, :attr:`threshold_divisor` (+bsN), :attr:`weight_calibration_steps`,
    :attr:`bias_correction_steps`, :attr:`sc`, :attr:`model_params` / :meth:`params_object`,
    :meth:`settings` (the ``method_settings`` dict).
    """

    core: str
    suffixes: tuple[str, ...] = ()
    _opts: Mapping[str, Any] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "suffixes", tuple(str(t) for t in self.suffixes))
        text = str(self)
        opts = None if text.split("+") != [self.core, *self.suffixes] else _split(self.core, self.suffixes)
        if opts is None:
            raise ValueError(f"malformed method name {text!r} (parse_methods validates names)")
        object.__setattr__(self, "_opts", opts)

    # ---- text
    @classmethod
    def of(cls, method: "str | MethodSpec") -> "MethodSpec":
        """The spec of an exact (already normalized) name; a MethodSpec is returned as is. ValueError when the
        name is not in the grammar; no range checks (:meth:`parse` makes them)."""
        if isinstance(method, MethodSpec):
            return method
        core, *tokens = str(method).split("+")
        return cls(core, tuple(tokens))

    @classmethod
    def parse(cls, text: "str | MethodSpec") -> "MethodSpec":
        """``" P99.9+cw+h+bc32 "`` → MethodSpec (surrounding blanks and case ignored), with ``--methods``' checks:
        :class:`msat_lava.data.DataError` for an unknown method (the message lists the grammar), bad model
        parameters, a percentile outside (0, 100], a burst size outside 1..65536, correction steps outside
        1..4096."""
        from msat_lava.data import DataError

        raw = text if isinstance(text, str) else str(text)
        try:
            spec = cls.of(raw.strip().lower())
        except ValueError:
            raise DataError(_unknown_message(raw)) from None
        spec._check(raw)
        return spec

    def __str__(self) -> str:
        return "+".join((self.core, *self.suffixes))

    def __repr__(self) -> str:
        return f"MethodSpec.parse({str(self)!r})"

    def _check(self, raw: str) -> None:
        """The range checks of ``--methods`` (DataError naming the method as written), in their historic order."""
        from msat_lava.data import DataError
        from netx_export import neurons

        params = self.model_params
        if params is not None:
            try:
                neurons.params_from_options(self.mode, params, parse=True)
            except neurons.NeuronSpecError as exc:
                raise DataError(f"--methods: {raw!r}: {exc}") from None
        q = self.percentile
        if q is not None and not 0 < q <= 100:
            raise DataError(f"--methods: percentile of {raw!r} must be in (0, 100]")
        if self.burst is not None and not 1 <= self.burst <= BURST_MAX:
            raise DataError(f"--methods: burst size of {raw!r} must be in 1..65536")
        bc = self.bias_correction_steps
        if bc is not None and not 1 <= bc <= CORRECTION_STEPS_MAX:
            raise DataError(f"--methods: bias-correction steps of {raw!r} must be in 1..4096")
        wc = self.weight_calibration_steps
        if wc is not None and not 1 <= wc <= CORRECTION_STEPS_MAX:
            raise DataError(f"--methods: weight-calibration steps of {raw!r} must be in 1..4096")

    # ---- typed views
    @property
    def registry(self) -> bool:
        """The core is a registered neuron model with parameters (dtif-r, bsnn-r, ...), not the MSAT family."""
        return _registry_core(self.core) is not None

    @property
    def model_params(self) -> dict[str, str] | None:
        """The ``:key=value`` parameters of a registry-model core (text), None for the MSAT family."""
        reg = _registry_core(self.core)
        return None if reg is None else reg[1]

    def params_object(self) -> Any:
        """The registry model's parameter object (defaults + :key=value; NeuronSpecError for bad ones), None for
        the MSAT family."""
        params = self.model_params
        if params is None:
            return None
        from netx_export import neurons

        return neurons.params_from_options(self.mode, params, parse=True)

    @property
    def mode(self) -> str:
        """The quantize method: const for const/pQ, a registry model's name for its core (parameters dropped),
        else dtt/det/msat without -norm."""
        reg = _registry_core(self.core)
        if reg is not None:
            return reg[0]
        if self.core == "const" or _PCT.match(self.core):
            return "const"
        return self.core.removesuffix("-norm")

    def units(self, default: str = "raw") -> str:
        """MSAT formula units: 'normalized' for a -norm core, else ``default`` (the network's)."""
        return "normalized" if self.core.endswith("-norm") else default

    @property
    def percentile(self) -> float | None:
        """Q of a "pQ" core or a "+pQ" suffix (λ = Q-th percentile), None for λ = max."""
        m = _PCT.match(self.core)
        return float(m.group(1)) if m else self._opts["pct"]

    @property
    def channelwise(self) -> bool:
        """+cw: channel-wise λ by channel balancing."""
        return self._opts["cw"]

    @property
    def half(self) -> bool:
        """+h: the half-threshold start."""
        return self._opts["h"]

    @property
    def v_init(self) -> float:
        """NeuronSpec.v_init: HALF for the "+h" methods, else 0 (the paper's empty start)."""
        return HALF if self.half else 0.0

    @property
    def burst(self) -> int | None:
        """N of "+bN" / "+bsN", None = the network's Γ."""
        return self._opts["gamma"]

    def gamma(self, default: int = 1) -> int:
        """Γ of the method: N for "+bN" / "+bsN", else ``default`` (the network file's)."""
        return default if self.burst is None else self.burst

    @property
    def burst_scaled(self) -> bool:
        """+bsN (burst with θ = λ/N) rather than +bN."""
        return self._opts["burst_scaled"]

    @property
    def threshold_divisor(self) -> int:
        """N for a "+bsN" method (θ = λ/N: the calibrated λ of every spiking layer is divided by N before
        quantization, with Γ = N, so that up to N spikes of λ/N reproduce activations up to λ in one step; the
        input scale λ^0 is not divided), else 1."""
        return self.burst if self.burst_scaled else 1

    def divided_lambdas(self, lambdas: Mapping[str, float], keep: Iterable[str] = ()) -> dict[str, float]:
        """The λ this method quantizes with: ``lambdas`` (name → λ) divided by :attr:`threshold_divisor` (the
        names in ``keep``, e.g. the input node, unchanged); a plain copy for every other method."""
        d = self.threshold_divisor
        keep = tuple(keep)
        return dict(lambdas) if d == 1 else {k: (v if k in keep else v / d) for k, v in lambdas.items()}

    @property
    def bias_correction_steps(self) -> int | None:
        """T of the bias-correction runs of "+bc" / "+bcT", None without."""
        return self._opts["bc"]

    @property
    def weight_calibration_steps(self) -> int | None:
        """T of the weight-calibration runs of "+wc" / "+wcT", None without."""
        return self._opts["wc"]

    @property
    def sc(self) -> bool:
        """+sc: spike confidence calibrated on the calibration images."""
        return self._opts["sc"]

    def without_sc(self) -> "MethodSpec":
        """The same method without "+sc" (the network spike confidence is calibrated on)."""
        return MethodSpec(self.core, self.suffixes[:-1]) if self.sc else self

    @property
    def needs_calibration(self) -> bool:
        """The method needs calibration images whatever λ source: percentile λ, +cw, +wc, +bc or +sc."""
        return (self.sc or self.percentile is not None or self.bias_correction_steps is not None
                or self.weight_calibration_steps is not None or self.channelwise)

    @property
    def lambda_key(self) -> str:
        """The λ rule (methods with the same key share one λ set): max or pQ, with "+cw" when channel-wise."""
        q = self.percentile
        return ("max" if q is None else f"p{q}") + ("+cw" if self.channelwise else "")

    def settings(self, default_units: str = "raw", default_gamma: int = 1) -> dict[str, Any]:
        """:func:`method_settings` of this spec."""
        out = {"mode": self.mode, "units": self.units(default_units), "v_init": self.v_init,
               "gamma": self.gamma(default_gamma), "percentile": self.percentile,
               "threshold_divisor": self.threshold_divisor, "channelwise": self.channelwise,
               "bias_correction_steps": self.bias_correction_steps,
               "weight_calibration_steps": self.weight_calibration_steps, "sc": self.sc}
        if self.model_params is not None:  # a registry model with parameters: its parameter object
            out["params"] = self.params_object()
        return out


def parse_methods(text: "str | Sequence[str | MethodSpec]") -> list[MethodSpec]:
    """``"const,p99.9,msat+sc"`` (or a sequence of names / specs) → validated, de-duplicated MethodSpecs in order
    (:meth:`MethodSpec.parse` for each non-blank name), e.g. const+h, p99.9+cw+h+bc, p99.9+h+bs4,
    msat-norm+p99.9+bc, msat-norm+h+b4+sc, dtif-r:beta=3+b2, bsnn-r:k=6+p99.9. DataError as
    :meth:`MethodSpec.parse`, or when no method is given."""
    from msat_lava.data import DataError

    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    out: list[MethodSpec] = []
    for raw in items:
        if not raw.strip().lower():
            continue
        spec = MethodSpec.parse(raw)
        if spec not in out:
            out.append(spec)
    if not out:
        raise DataError("--methods: no method given")
    return out


def method_settings(method: "str | MethodSpec", default_units: str = "raw", default_gamma: int = 1
                    ) -> dict[str, Any]:
    """What a (parsed) method name means: quantize ``mode``, MSAT formula ``units``, ``v_init``, ``gamma``, the λ
    ``percentile`` (None = max), ``threshold_divisor`` (N for "+bsN": θ = λ/N, else 1), ``channelwise`` λ
    (channel balancing), ``bias_correction_steps`` / ``weight_calibration_steps`` (None = none) and whether spike
    confidence is calibrated (``sc``); for a registry model with parameters also ``params`` (its parameter
    object). ValueError for a name outside the grammar."""
    return MethodSpec.of(method).settings(default_units, default_gamma)


def threshold_divisor(method: "str | MethodSpec") -> int:
    """N for a "+bsN" method (θ = λ/N), else 1 (:attr:`MethodSpec.threshold_divisor`)."""
    return MethodSpec.of(method).threshold_divisor


def divided_lambdas(lambdas: Mapping[str, float], method: "str | MethodSpec", keep: Iterable[str] = ()
                    ) -> dict[str, float]:
    """The λ a method quantizes with (:meth:`MethodSpec.divided_lambdas`)."""
    return MethodSpec.of(method).divided_lambdas(lambdas, keep)
