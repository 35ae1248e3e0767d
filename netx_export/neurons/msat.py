"""The MSAT family (ALGORITHMS §1.2, §2): 'const' (θ = k·λ, max-norm / percentile IF), 'dtt', 'det', 'msat'.

Their parameters predate the registry and live in the shared :class:`~netx_export.neuron.NeuronSpec` fields they
have always used (format 1.0–1.2 layout, unchanged): ``k_const`` (const), ``coefs`` (:class:`MsatCoefs`, dtt/det/
msat) and ``units`` ('raw' | 'normalized', dtt/det/msat). Their tables are MSAT's threshold LUTs
(:class:`netx_export.lut.ThresholdLuts`, :func:`netx_export.lut.make_luts`; none for 'const').
"""
from __future__ import annotations

from netx_export.lut import ThresholdLuts, make_luts
from netx_export.neuron import NeuronSpecError
from netx_export.neurons import NeuronModel, register


@register
class Const(NeuronModel):
    name = "const"
    order = 0
    summary = "IF with soft reset, θ = k_const·λ (k_const = 1: max-norm / percentile-norm; §1.2)"
    graded = False  # one payload value per layer (k·λ): binary spikes with a folded weight scale


class _MsatBase(NeuronModel):
    tables_type = ThresholdLuts

    def check(self, spec) -> None:
        if spec.coefs is None:
            raise NeuronSpecError(f"required for mode {spec.mode!r}", field="coefs")

    def make_tables(self, spec):
        return make_luts(spec)


@register
class Dtt(_MsatBase):
    name = "dtt"
    order = 1
    summary = "MSAT with its dynamic tracking threshold only: θ = λ·σ(τ_mp·DTT) (§2.2)"


@register
class Det(_MsatBase):
    name = "det"
    order = 2
    summary = "MSAT with its dynamic evoked threshold only: θ = λ·σ(τ_rd·DET) (§2.2)"


@register
class Msat(_MsatBase):
    name = "msat"
    order = 3
    summary = "multi-stage adaptive threshold: θ = λ·σ(τ_mp·DTT + τ_rd·DET), θ(0) = λ (§2.2)"
