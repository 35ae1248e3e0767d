"""Evaluation metrics of converted networks (ALGORITHMS §3.2, §4): pure functions on arrays and programs.

**SIN statistics** (§3.1, §4.1), per spiking layer l, over a measurement window of the first E steps
(E = 16 for spike confidence). For each sample, z_i = the ANN pre-activation (input of the ReLU) of neuron i
for the same image and n_i = gated spikes neuron i emitted in steps 0..E−1:

    inactive = #{i : z_i ≤ 0}                N_SIN = #{i : z_i ≤ 0 and n_i > 0}
    N_POS    = #{i : z_i ≥ 0 and n_i > 0}    silent = #{i : z_i ≥ 0 and n_i = 0}   ("should fire but silent")
    SIN ratio    = N_SIN / inactive          (the paper's "neurons with SIN ratio")
    SIN share    = N_SIN / N                 POS share = N_POS / N        silent share = silent / N
    c            = N_SIN / (N_SIN + N_POS)   (share of the firing neurons that are SIN);   p = 1 − c
    ANS          = (Σ_{i ∈ SIN} n_i) / N_SIN (mean number of erroneous spikes per SIN neuron in the window)

z = 0 counts as both inactive and positive (measure-zero case, as the authors' code). A ratio whose
denominator is 0 is 0 (the spec's convention for c, applied to every ratio, so p = 1 when nothing fires).

*Aggregation.* The authors compute every ratio per batch and average the ratios over batches (§4.1), which makes
the result depend on the batch size. **This project reports pooled statistics by default**: the counts of all
samples are summed first and the ratios taken once (batch-size independent; the same as one batch holding every
sample). The authors' variant is :func:`sin_stats` with ``batch_size=B`` (ratios per consecutive batch of B
samples, then the unweighted mean over batches, last batch possibly smaller) and :func:`sin_stats_per_batch`.
Both work from :class:`SinCounts`, integer counts kept **per sample**, so any batching can be applied afterwards
and long runs can be processed in chunks.

**Firing rate** (§4.2): FR^l(T) = Σ n^l / (N_samples · N^l · T), spikes per neuron per step, counted with the
gated spikes over steps 0..T−1 and averaged over the samples.

**Operation counts and energy** (§4.3), all *estimates* under the Rathi & Roy (DIET-SNN) convention
(32-bit float MAC = 4.6 pJ, AC = 0.9 pJ, no operation without a spike). Only the weighted ops (conv, linear)
are counted, as the paper does; additions, pooling, shortcuts and neuron updates are not.

* MAC of a conv = H_out·W_out·kH·kW·(C_in/groups)·C_out; of a linear = in·out.
* ANN: E_ANN = 4.6 pJ · Σ_nodes MAC (each conv/linear node of the graph once, per inference).
* SNN, per synaptic term of the program (a linear path from a source to a target, DESIGN §4): a term fed by the
  analog input is charged as MAC at every step (direct input encoding: the first layer recomputes every step);
  any other term costs MAC_term · FR_source(T) accumulates per step. So

      E_SNN(T) = 4.6 pJ · T · Σ_{input terms} MAC + 0.9 pJ · T · Σ_{other terms} MAC_term · FR_source(T)

  which is ALGORITHMS' E_SNN(T) = 4.6·MAC_1·T + 0.9·T·Σ_{l≥2} MAC_l·FR^{l−1}(T) written per term (a conv
  after a residual addition is counted once per source feeding it). The source rate of a LIPool is its rate of
  non-zero outputs per output neuron per step. The variant "first layer charged once" is reported beside it
  because the paper's convention is unknown (§4.3 [U]).

**Layer agreement** (where a converted network loses accuracy): for spiking layer l after k steps, the SNN rate
r_i = Σ_{t<k} o_i(t) / k (raw units) against the ANN activation a_i = max(z_i, 0) of the same image, over all
samples and neurons of the layer:

    relative L1 error = Σ|r_i − a_i| / Σ|a_i|        Pearson correlation ρ(r, a)

kept as running sums (:class:`AgreementMoments`) so chunks of samples can be pooled exactly.

**Latency**: :func:`steps_to_reach` = the 1-based number of steps after which the accuracy curve first reaches
a target (ANN − 1 %, ANN − 0.1 %, ANN accuracy; absolute percentage points).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "E_MAC_PJ", "E_AC_PJ", "SinCounts", "SinStats", "sin_counts", "sin_stats", "sin_stats_per_batch",
    "sin_statistics", "firing_rate", "firing_rate_from_total", "conv_output_hw", "conv_macs", "linear_macs",
    "graph_macs", "TermOps", "term_ops", "energy_estimate", "steps_to_reach", "latency_targets",
    "LATENCY_TARGETS", "ENERGY_CONVENTION", "AgreementMoments",
]

E_MAC_PJ = 4.6  # pJ per 32-bit float multiply-accumulate (Rathi & Roy)
E_AC_PJ = 0.9   # pJ per 32-bit float accumulate

ENERGY_CONVENTION = (
    "ESTIMATE (Rathi & Roy / DIET-SNN convention, ALGORITHMS §4.3): MAC = 4.6 pJ, AC = 0.9 pJ; only conv/linear "
    "ops counted. ANN: 4.6 pJ x sum of MACs per inference. SNN: terms fed by the analog input (the first layer) "
    "are charged as MAC (4.6 pJ) at EVERY step; every other term costs 0.9 pJ x MAC x firing rate of its source "
    "x T. 'first_layer_once' charges the input terms once instead of T times (the paper's exact convention is "
    "unknown). Per sample (one inference of T steps).")

#: name → offset from the ANN accuracy (fractions: −0.01 = one percentage point below the ANN)
LATENCY_TARGETS = {"ann-1%": -0.01, "ann-0.1%": -0.001, "ann": 0.0}


# ----------------------------------------------------------------------------------------------------------
# SIN statistics
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SinCounts:
    """Integer SIN counts of one layer, **per sample** (every field is an int64 array of shape (N,)).

    ``neurons`` = N^l; ``inactive`` = #{z ≤ 0}; ``sin`` = #{z ≤ 0, n > 0}; ``pos`` = #{z ≥ 0, n > 0};
    ``silent`` = #{z ≥ 0, n = 0}; ``sin_spikes`` = Σ_{i ∈ SIN} n_i.
    """

    neurons: np.ndarray
    inactive: np.ndarray
    sin: np.ndarray
    pos: np.ndarray
    silent: np.ndarray
    sin_spikes: np.ndarray

    def __len__(self) -> int:
        return int(self.neurons.shape[0])

    def __getitem__(self, index: Any) -> "SinCounts":
        """Select samples (a slice or an index array); the result keeps the per-sample layout."""
        return SinCounts(**{f.name: np.atleast_1d(getattr(self, f.name)[index]) for f in fields(self)})

    @classmethod
    def concat(cls, parts: Iterable["SinCounts"]) -> "SinCounts":
        """Samples of several parts, in order (e.g. chunks of one long run)."""
        parts = list(parts)
        if not parts:
            return cls(**{f.name: np.zeros(0, np.int64) for f in fields(cls)})
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def totals(self) -> dict[str, int]:
        """Every count summed over the samples."""
        return {f.name: int(np.sum(getattr(self, f.name))) for f in fields(self)}


def sin_counts(z: Any, n: Any) -> SinCounts:
    """Per-sample SIN counts from the ANN pre-activations ``z`` and the window spike counts ``n``.

    Both are (N, *shape) for one layer (same shape; numpy arrays or torch tensors); n = gated spikes in steps
    0..E−1. See the module docstring for the definitions.
    """
    z = _np(z).astype(np.float64, copy=False)
    n = _np(n)
    if z.shape != n.shape:
        raise ValueError(f"pre-activations have shape {z.shape}, spike counts {n.shape}")
    if z.ndim < 1:
        raise ValueError("expected batched arrays (N, *shape)")
    b = z.shape[0]
    z = z.reshape(b, -1)
    n = n.reshape(b, -1).astype(np.int64, copy=False)
    if np.any(n < 0):
        raise ValueError("spike counts must be >= 0")
    inact = z <= 0
    act = z >= 0
    fired = n > 0
    sin = inact & fired
    return SinCounts(
        neurons=np.full(b, z.shape[1], dtype=np.int64),
        inactive=inact.sum(axis=1).astype(np.int64),
        sin=sin.sum(axis=1).astype(np.int64),
        pos=(act & fired).sum(axis=1).astype(np.int64),
        silent=(act & ~fired).sum(axis=1).astype(np.int64),
        sin_spikes=np.where(sin, n, 0).sum(axis=1).astype(np.int64),
    )


@dataclass(frozen=True)
class SinStats:
    """SIN statistics of one layer (module docstring). Counts are totals over all samples; the ratios are
    pooled (``mode='pooled'``, ``batches`` = 1) or means of per-batch ratios (``mode='per-batch'``)."""

    n_sin: int
    n_pos: int
    n_inactive: int
    n_silent: int
    n_neurons: int          # N^l · samples
    sin_spikes: int
    samples: int
    sin_ratio: float        # N_SIN / #{z ≤ 0}
    sin_share: float        # N_SIN / N
    pos_share: float        # N_POS / N
    silent_share: float     # #{z ≥ 0, n = 0} / N
    c: float                # N_SIN / (N_SIN + N_POS)
    p: float                # 1 − c
    ans: float              # Σ_{SIN} n / N_SIN
    mode: str = "pooled"
    batches: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def _ratios(t: Mapping[str, int]) -> dict[str, float]:
    c = _div(t["sin"], t["sin"] + t["pos"])
    return {"sin_ratio": _div(t["sin"], t["inactive"]), "sin_share": _div(t["sin"], t["neurons"]),
            "pos_share": _div(t["pos"], t["neurons"]), "silent_share": _div(t["silent"], t["neurons"]),
            "c": c, "p": 1.0 - c, "ans": _div(t["sin_spikes"], t["sin"])}


def _stats(counts: SinCounts, ratios: Mapping[str, float], mode: str, batches: int) -> SinStats:
    t = counts.totals()
    return SinStats(n_sin=t["sin"], n_pos=t["pos"], n_inactive=t["inactive"], n_silent=t["silent"],
                    n_neurons=t["neurons"], sin_spikes=t["sin_spikes"], samples=len(counts), mode=mode,
                    batches=batches, **ratios)


def sin_stats_per_batch(counts: SinCounts, batch_size: int) -> list[SinStats]:
    """One pooled :class:`SinStats` per consecutive batch of ``batch_size`` samples (the last may be smaller)."""
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return [sin_stats(counts[lo:lo + int(batch_size)]) for lo in range(0, len(counts), int(batch_size))]


def sin_stats(counts: SinCounts, batch_size: int | None = None) -> SinStats:
    """SIN statistics from per-sample counts.

    ``batch_size=None`` (default): pooled — sum the counts over all samples, then take each ratio once.
    ``batch_size=B``: the authors' way (§4.1) — the ratios of every consecutive batch of B samples, averaged
    over the batches with equal weight (counts in the result are still totals).
    """
    if len(counts) == 0:
        raise ValueError("no samples")
    if batch_size is None:
        return _stats(counts, _ratios(counts.totals()), "pooled", 1)
    per = sin_stats_per_batch(counts, batch_size)
    keys = ("sin_ratio", "sin_share", "pos_share", "silent_share", "c", "p", "ans")
    mean = {k: float(np.mean([getattr(s, k) for s in per])) for k in keys}
    return _stats(counts, mean, "per-batch", len(per))


def sin_statistics(z: Any, n: Any, batch_size: int | None = None) -> SinStats:
    """:func:`sin_stats` of :func:`sin_counts` (``z``, ``n``): one call from arrays to statistics."""
    return sin_stats(sin_counts(z, n), batch_size)


# ----------------------------------------------------------------------------------------------------------
# firing rate
# ----------------------------------------------------------------------------------------------------------
def firing_rate_from_total(total_spikes: float, samples: int, neurons: int, steps: int) -> float:
    """FR = total_spikes / (samples · neurons · steps) (spikes per neuron per step)."""
    denom = int(samples) * int(neurons) * int(steps)
    if denom <= 0:
        raise ValueError(f"samples, neurons and steps must be positive, got {samples}, {neurons}, {steps}")
    return float(total_spikes) / denom


def firing_rate(n: Any, steps: int) -> float:
    """FR^l(T) = Σ n / (N_samples · N^l · T) for spike counts ``n`` (N_samples, *shape) over ``steps`` = T."""
    n = _np(n)
    if n.ndim < 1 or n.shape[0] == 0:
        raise ValueError("expected batched spike counts (N, *shape)")
    return firing_rate_from_total(float(n.sum()), n.shape[0], int(np.prod(n.shape[1:], dtype=np.int64)), steps)


# ----------------------------------------------------------------------------------------------------------
# operation counts
# ----------------------------------------------------------------------------------------------------------
def _pair(v: Any) -> tuple[int, int]:
    if np.ndim(v) == 0:
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def conv_output_hw(in_hw: Sequence[int], kernel: Any, stride: Any = 1, padding: Any = 0) -> tuple[int, int]:
    """Output height and width of a conv (or pool): ⌊(H + 2P − K)/S⌋ + 1 per axis (no dilation)."""
    (h, w), (kh, kw), (sh, sw), (ph, pw) = _pair(in_hw), _pair(kernel), _pair(stride), _pair(padding)
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"kernel {kh}x{kw} does not fit input {h}x{w} with padding {ph},{pw}")
    return ho, wo


def conv_macs(in_shape: Sequence[int], weight_shape: Sequence[int], stride: Any = 1, padding: Any = 0,
              groups: int = 1) -> int:
    """MACs of one conv on one sample: H_out·W_out·kH·kW·(C_in/groups)·C_out.

    ``in_shape`` = (C_in, H, W); ``weight_shape`` = (C_out, C_in/groups, kH, kW) (torch layout).
    """
    c_in, h, w = (int(v) for v in in_shape)
    c_out, c_in_g, kh, kw = (int(v) for v in weight_shape)
    if c_in % groups or c_in // groups != c_in_g or c_out % groups:
        raise ValueError(f"weight {tuple(weight_shape)} does not fit {c_in} input channels in {groups} groups")
    ho, wo = conv_output_hw((h, w), (kh, kw), stride, padding)
    return ho * wo * kh * kw * c_in_g * c_out


def linear_macs(n_in: int, n_out: int) -> int:
    """MACs of one linear layer on one sample: in·out."""
    return int(n_in) * int(n_out)


def graph_macs(graph: Any) -> dict[str, int]:
    """MACs per sample of every conv/linear node of a :class:`netx_export.ir.Graph` (graph order): the ANN's
    operation count (each node once)."""
    out: dict[str, int] = {}
    for node in graph:
        if node.kind == "conv":
            out[node.name] = conv_macs(graph.shape(node.inputs[0]), np.shape(node.weight), node.stride,
                                       node.padding, node.groups)
        elif node.kind == "linear":
            o, i = np.shape(node.weight)
            out[node.name] = linear_macs(i, o)
    return out


@dataclass(frozen=True)
class TermOps:
    """One synaptic term of a program: target stage, source ('input' or a stage), its weighted op node (None for
    a structural/gain path: not counted), MACs per application, and whether the analog input feeds it."""

    target: str
    source: str
    op: str | None
    macs: int

    @property
    def input_fed(self) -> bool:
        return self.source == "input"


def _op_macs(op: Any) -> int:
    if op.kind == "conv":
        return conv_macs(op.in_shape, np.shape(op.weight), op.params["stride"], op.params["padding"],
                         op.params["groups"])
    if op.kind == "linear":
        o, i = np.shape(op.weight)
        return linear_macs(i, o)
    return 0


def term_ops(program: Any) -> list[TermOps]:
    """Every term of a :class:`msat_lava.program.Program` with its MACs per application (stage order)."""
    out = []
    for stage in program.stages:
        for term in stage.terms:
            weighted = [op for op in term.ops if op.kind in ("conv", "linear")]
            op = weighted[0] if weighted else None
            out.append(TermOps(stage.name, term.source, None if op is None else op.node,
                               0 if op is None else _op_macs(op)))
    return out


# ----------------------------------------------------------------------------------------------------------
# energy
# ----------------------------------------------------------------------------------------------------------
def energy_estimate(program: Any, rates: Mapping[str, float], steps: int, *, e_mac: float = E_MAC_PJ,
                    e_ac: float = E_AC_PJ) -> dict[str, Any]:
    """Energy ESTIMATE per inference of the ANN and of the SNN run for ``steps`` = T (module docstring).

    ``rates``: firing rate FR(T) of every term source that is a stage (neuron layers: spikes per neuron per step;
    LIPool stages: non-zero outputs per output neuron per step). A LIPool missing from ``rates`` gets the rate of
    the layer it pools, flagged ``"rate_estimated": true`` in its term rows (an approximation).
    Returns a JSON-ready dict: ``ann`` {macs, energy_pj}, ``snn`` {input_macs, synaptic_ops, energy_pj,
    energy_first_layer_once_pj}, ``ratio`` (E_SNN/E_ANN), ``ratio_first_layer_once``, per-term rows and the
    convention text.
    """
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    T = int(steps)
    ann_macs: dict[str, int] = {}
    rows = []
    input_macs = 0
    syn_ops = 0.0
    for t in term_ops(program):
        if t.op is not None:
            ann_macs.setdefault(t.op, t.macs)
        estimated = False
        if t.input_fed:
            rate = None
            ops = float(t.macs * T)
            energy = e_mac * ops
            input_macs += t.macs
        else:
            rate = rates.get(t.source)
            if rate is None:
                stage = program.stage(t.source)
                if stage.kind == "lipool" and stage.source in rates:
                    rate, estimated = rates[stage.source], True
                else:
                    raise KeyError(f"no firing rate for source {t.source!r} of {t.target!r}")
            ops = float(t.macs) * float(rate) * T
            energy = e_ac * ops
            syn_ops += ops
        rows.append({"target": t.target, "source": t.source, "op": t.op, "macs": t.macs,
                     "input_fed": t.input_fed, "source_rate": rate, "rate_estimated": estimated,
                     "ops": ops, "energy_pj": energy})
    total_ann_macs = int(sum(ann_macs.values()))
    e_ann = e_mac * total_ann_macs
    e_syn = e_ac * syn_ops
    e_snn = e_mac * input_macs * T + e_syn
    e_once = e_mac * input_macs + e_syn
    return {
        "estimate": True,
        "convention": ENERGY_CONVENTION,
        "first_layer": "charged as MAC (4.6 pJ) at every step",
        "e_mac_pj": e_mac, "e_ac_pj": e_ac, "steps": T,
        "ann": {"macs": total_ann_macs, "energy_pj": e_ann, "macs_per_op": ann_macs},
        "snn": {"input_macs_per_step": int(input_macs), "synaptic_ops": syn_ops, "energy_pj": e_snn,
                "energy_first_layer_once_pj": e_once},
        "ratio": _div(e_snn, e_ann),
        "ratio_first_layer_once": _div(e_once, e_ann),
        "terms": rows,
    }


# ----------------------------------------------------------------------------------------------------------
# latency
# ----------------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------------
# layer agreement (SNN rate vs ANN activation)
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AgreementMoments:
    """Running sums over neuron pairs (r = SNN rate, a = ANN activation): n, Σ|r − a|, Σ|a|, Σr, Σa, Σr², Σa², Σra."""

    n: int = 0
    abs_err: float = 0.0
    abs_ann: float = 0.0
    sr: float = 0.0
    sa: float = 0.0
    srr: float = 0.0
    saa: float = 0.0
    sra: float = 0.0

    @classmethod
    def of(cls, r: Any, a: Any) -> "AgreementMoments":
        r = _np(r).astype(np.float64).ravel()
        a = _np(a).astype(np.float64).ravel()
        if r.shape != a.shape:
            raise ValueError(f"rates and activations differ in size: {r.size} vs {a.size}")
        return cls(int(r.size), float(np.abs(r - a).sum()), float(np.abs(a).sum()), float(r.sum()), float(a.sum()),
                   float((r * r).sum()), float((a * a).sum()), float((r * a).sum()))

    def __add__(self, other: "AgreementMoments") -> "AgreementMoments":
        return AgreementMoments(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def rel_l1(self) -> float:
        """Σ|r − a| / Σ|a| (0 when the ANN layer is silent and the SNN too; inf if only the SNN fires)."""
        if self.abs_ann == 0:
            return 0.0 if self.abs_err == 0 else float("inf")
        return self.abs_err / self.abs_ann

    @property
    def corr(self) -> float:
        """Pearson ρ(r, a); 0 when either side is constant."""
        vr = self.n * self.srr - self.sr ** 2
        va = self.n * self.saa - self.sa ** 2
        if vr <= 0 or va <= 0:
            return 0.0
        return float((self.n * self.sra - self.sr * self.sa) / np.sqrt(vr * va))

    def to_dict(self) -> dict[str, float]:
        return {"rel_l1": self.rel_l1, "corr": self.corr, "mean_rate": self.sr / self.n if self.n else 0.0,
                "mean_ann": self.sa / self.n if self.n else 0.0, "neurons": self.n}


def steps_to_reach(curve: Sequence[float], target: float) -> int | None:
    """1-based number of steps k after which ``curve`` (accuracy after steps 1..T) first reaches ``target``
    (within 1e-12); None if it never does."""
    hit = np.nonzero(np.asarray(curve, dtype=np.float64) >= float(target) - 1e-12)[0]
    return int(hit[0]) + 1 if hit.size else None


def latency_targets(curve: Sequence[float], ann_accuracy: float) -> dict[str, int | None]:
    """Steps to reach ANN − 1 %, ANN − 0.1 % and the ANN accuracy (keys of :data:`LATENCY_TARGETS`)."""
    return {k: steps_to_reach(curve, ann_accuracy + d) for k, d in LATENCY_TARGETS.items()}


def _np(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)
