"""Spike-confidence calibration (ALGORITHMS §3.2–3.3) and chunked runs that collect SIN / firing statistics.

:func:`calibrate_spike_confidence` runs the network **without** spike confidence (normally the MSAT SNN) on
calibration images — a split of the *training* data, never the test set — for the window E = 16 steps with the
reference simulator (fixed or float), counts every neuron's spikes over steps 0..E−1, evaluates the ANN on the
same images for the pre-activations z, and computes for each gated layer

    c^l = N_SIN^l / (N_SIN^l + N_POS^l),   p^l = 1 − c^l     (:mod:`msat_lava.metrics`)

for the last spiking layer (default, §3.3) or for every layer (``layers='all'``). Statistics are pooled over
all calibration samples by default (``batch_size=B``: the authors' per-batch mean). A p below 2^−24 (every firing
neuron a SIN) is raised to 2^−24, the smallest keep probability the gate can represent (DESIGN §5). The returned
``{relu_name: p}`` feeds ``netx_export.quantize.quantize(..., sc_p=...)`` and is stored in the exported file.

:func:`run_with_statistics` is the shared engine: it runs the reference simulator in chunks of samples (memory
stays bounded by the chunk), and keeps only what the metrics need: predictions after every step, total gated
spikes per layer over T steps, per-sample SIN counts over the window (from a second, E-step run: the first E steps
of a T-step run are identical, the gate being keyed by dataset index and step), and optionally the number of
non-zero LIPool outputs (for the energy estimate).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from msat_lava.metrics import AgreementMoments, SinCounts, SinStats, sin_counts, sin_stats
from msat_lava.program import Program

__all__ = ["ScCalibration", "RunStatistics", "calibrate_spike_confidence", "run_with_statistics",
           "gated_layers", "preactivation_fn", "P_MIN", "DEFAULT_WINDOW"]

DEFAULT_WINDOW = 16
P_MIN = 2.0 ** -24  # smallest keep probability of the 24-bit gate


@dataclass
class RunStatistics:
    """What :func:`run_with_statistics` keeps of a run over N samples and T steps.

    predictions (T, N); spikes: layer → total gated spikes over all samples and T steps; neurons: layer → N^l;
    sin: layer → per-sample :class:`SinCounts` over the window (when z was available); window: E actually used
    (≤ T); lipool_events: LIPool stage → number of non-zero outputs over all samples and steps (when recorded);
    input_clipped / saturated: as :class:`msat_lava.reference.RunResult`; agreement: {k: {layer:
    :class:`~msat_lava.metrics.AgreementMoments`}} of the SNN rates after k steps vs the ANN activations.
    """

    steps: int
    window: int
    predictions: np.ndarray
    spikes: dict[str, int]
    neurons: dict[str, int]
    sin: dict[str, SinCounts] = field(default_factory=dict)
    lipool_events: dict[str, int] = field(default_factory=dict)
    lipool_neurons: dict[str, int] = field(default_factory=dict)
    input_clipped: int = 0
    saturated: dict[str, int] = field(default_factory=dict)
    agreement: dict[int, dict[str, AgreementMoments]] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return int(self.predictions.shape[1])

    def firing_rates(self) -> dict[str, float]:
        """FR^l(T) per neuron layer (spikes per neuron per step)."""
        from msat_lava.metrics import firing_rate_from_total

        return {k: firing_rate_from_total(v, self.samples, self.neurons[k], self.steps) for k, v in self.spikes.items()}

    def source_rates(self) -> dict[str, float]:
        """Firing rates of every recorded source: neuron layers and LIPool stages (non-zero outputs per output
        neuron per step) — the ``rates`` argument of :func:`msat_lava.metrics.energy_estimate`."""
        from msat_lava.metrics import firing_rate_from_total

        out = self.firing_rates()
        for k, v in self.lipool_events.items():
            out[k] = firing_rate_from_total(v, self.samples, self.lipool_neurons[k], self.steps)
        return out

    def sin_stats(self, batch_size: int | None = None) -> dict[str, SinStats]:
        return {k: sin_stats(v, batch_size) for k, v in self.sin.items()}

    @classmethod
    def concat(cls, parts: Sequence["RunStatistics"]) -> "RunStatistics":
        """The statistics of consecutive blocks of samples of one run (same program, steps, window, layers), in
        order: predictions and SIN counts concatenated, counts summed (exact integers), agreement moments
        added left to right (so the float sums are those of one pass over the blocks in this order)."""
        if not parts:
            raise ValueError("no statistics to concatenate")
        first = parts[0]
        for p in parts[1:]:
            if (p.steps, p.window, p.neurons, list(p.sin), list(p.lipool_events), list(p.agreement)) != (
                    first.steps, first.window, first.neurons, list(first.sin), list(first.lipool_events),
                    list(first.agreement)):
                raise ValueError("statistics of different runs cannot be concatenated")
        agreement = {k: dict(v) for k, v in first.agreement.items()}
        for p in parts[1:]:
            for k, per in p.agreement.items():
                for layer, m in per.items():
                    agreement[k][layer] = agreement[k][layer] + m
        return cls(
            steps=first.steps, window=first.window,
            predictions=np.concatenate([p.predictions for p in parts], axis=1),
            spikes={k: sum(int(p.spikes[k]) for p in parts) for k in first.spikes}, neurons=dict(first.neurons),
            sin={k: SinCounts.concat([p.sin[k] for p in parts]) for k in first.sin},
            lipool_events={k: sum(int(p.lipool_events[k]) for p in parts) for k in first.lipool_events},
            lipool_neurons=dict(first.lipool_neurons),
            input_clipped=sum(int(p.input_clipped) for p in parts),
            saturated={k: sum(int(p.saturated.get(k, 0)) for p in parts) for k in first.saturated},
            agreement=agreement)


def run_with_statistics(program: Program, x: np.ndarray, steps: int, *, precision: str = "fixed",
                        sample_ids: Sequence[int] | None = None, window: int | None = DEFAULT_WINDOW,
                        preactivations: Callable[[np.ndarray], Mapping[str, Any]] | None = None,
                        chunk: int = 128, record_lipool: bool = False, seed: int | None = None,
                        on_progress: Callable[[int], None] | None = None,
                        agreement_at: Sequence[int] = (),
                        map_chunks: Callable[[int, Callable[[int], RunStatistics]],
                                             list[RunStatistics] | None] | None = None) -> RunStatistics | None:
    """Run ``program`` on ``x`` for ``steps`` in chunks of ``chunk`` samples and collect statistics.

    ``preactivations(x_chunk)`` → {relu name: z (chunk, *shape)} enables the SIN counts over the first
    ``window`` steps (capped at ``steps``; None or 0 disables them). ``record_lipool`` counts non-zero LIPool
    outputs (records their traces per chunk: T·chunk·size values). ``on_progress(k)`` is called with the number
    of sample-steps done after each simulator call. ``agreement_at``: step counts k at which each layer's
    SNN rates are compared with the ANN activations (needs ``preactivations``; :class:`AgreementMoments`).

    Each chunk c (samples c·chunk .. (c+1)·chunk − 1) gives its own :class:`RunStatistics`; they are merged in
    chunk order (:meth:`RunStatistics.concat`). ``map_chunks(C, f)`` replaces ``[f(c) for c in range(C)]``:
    :meth:`msat_lava.distributed.Context.map_chunks` computes the chunks on several processes and returns
    the list on rank 0 only; this function then returns None on the other ranks. The result does not depend
    on where the chunks ran.
    """
    from msat_lava.distributed import n_chunks
    from msat_lava.program import check_run_inputs
    from msat_lava.reference import PRECISIONS, simulate

    inputs = check_run_inputs(program, x, steps, sample_ids=sample_ids, seed=seed, record=(),
                              precisions=PRECISIONS, precision=precision)
    x, ids, n = inputs.x, inputs.ids, inputs.x.shape[0]
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    neuron_stages = program.neuron_stages
    win = 0 if (window is None or preactivations is None) else min(int(window), int(steps))
    lipools = [s.name for s in program.stages if s.kind == "lipool"] if record_lipool else []
    agree_at = sorted({int(k) for k in agreement_at}) if preactivations is not None else []
    neurons = {s.name: int(np.prod(s.shape)) for s in neuron_stages}
    lipool_neurons = {k: int(np.prod(program.stage(k).shape)) for k in lipools}

    def one(c: int) -> RunStatistics:
        lo, hi = c * chunk, min(n, (c + 1) * chunk)
        xc, ic = x[lo:hi], ids[lo:hi]
        res = simulate(program, xc, steps, precision=precision, sample_ids=ic, batch_size=hi - lo,
                       record=lipools, record_counts=True, progress=False, seed=seed, sums_at=agree_at)
        if on_progress is not None:
            on_progress((hi - lo) * steps)
        z = preactivations(xc) if (win or agree_at) else None
        agreement = {}
        for k in agree_at:
            rates = res.mean_rates(program, k)
            agreement[k] = {s.name: AgreementMoments.of(rates[s.name], np.maximum(z[s.name], 0.0))
                            for s in neuron_stages}
        sin = {}
        if win:
            counts = res.spike_counts
            if win != steps:
                counts = simulate(program, xc, win, precision=precision, sample_ids=ic, batch_size=hi - lo,
                                  record_counts=True, progress=False, seed=seed).spike_counts
                if on_progress is not None:
                    on_progress((hi - lo) * win)
            sin = {s.name: sin_counts(z[s.name], counts[s.name]) for s in neuron_stages}
        return RunStatistics(
            steps=int(steps), window=win, predictions=np.asarray(res.predictions, dtype=np.int64),
            spikes={s.name: int(res.spike_counts[s.name].sum()) for s in neuron_stages}, neurons=neurons, sin=sin,
            lipool_events={k: int(np.count_nonzero(res.traces[k])) for k in lipools}, lipool_neurons=lipool_neurons,
            input_clipped=int(res.input_clipped),
            saturated={s.name: int(res.saturated.get(s.name, 0)) for s in neuron_stages}
            if precision == "fixed" else {},
            agreement=agreement)

    count = n_chunks(n, chunk)
    parts = [one(c) for c in range(count)] if map_chunks is None else map_chunks(count, one)
    if parts is None:
        return None
    empty = RunStatistics(
        steps=int(steps), window=win, predictions=np.zeros((steps, 0), dtype=np.int64),
        spikes={s.name: 0 for s in neuron_stages}, neurons=neurons,
        sin={s.name: SinCounts.concat([]) for s in neuron_stages} if win else {},
        lipool_events={k: 0 for k in lipools}, lipool_neurons=lipool_neurons, input_clipped=0,
        saturated={s.name: 0 for s in neuron_stages} if precision == "fixed" else {},
        agreement={k: {s.name: AgreementMoments() for s in neuron_stages} for k in agree_at})
    return RunStatistics.concat([empty, *parts])


def preactivation_fn(graph: Any) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """``f(x)`` → {relu name: ANN pre-activation z (float64 numpy, (B, *shape))} for a folded float graph."""
    import torch

    from netx_export.ann import AnnRunner, relu_inputs

    pre = relu_inputs(graph)
    runner = AnnRunner(graph, dtype=torch.float64)
    nodes = sorted(set(pre.values()))

    def f(x: np.ndarray) -> dict[str, np.ndarray]:
        _, rec = runner(np.asarray(x, dtype=np.float64), record=nodes)
        return {relu: rec[node].cpu().numpy() for relu, node in pre.items()}

    return f


def gated_layers(program: Program, layers: str | Iterable[str] = "last") -> list[str]:
    """Names of the layers to gate: 'last' (the last spiking layer, §3.3), 'all', or explicit names."""
    names = [s.name for s in program.neuron_stages]
    if not names:
        raise ValueError("the network has no spiking layer")
    if isinstance(layers, str):
        if layers == "last":
            return names[-1:]
        if layers == "all":
            return names
        layers = [v for v in layers.split(",") if v.strip()]
    chosen = [str(v).strip() for v in layers]
    unknown = [v for v in chosen if v not in names]
    if unknown or not chosen:
        raise ValueError(f"unknown spiking layer(s) {unknown}; known: {names}")
    return chosen


@dataclass(frozen=True)
class ScCalibration:
    """Result of :func:`calibrate_spike_confidence`.

    ``p``: gated relu name → p (the ``sc_p`` argument of ``quantize``); ``stats``: every spiking layer's
    :class:`SinStats` over the window (p^l = stats[l].p before the 2^−24 floor); ``window``: E; ``precision``;
    ``samples``; ``mode``: 'pooled' | 'per-batch'.
    """

    p: dict[str, float]
    stats: dict[str, SinStats]
    window: int
    precision: str
    samples: int
    mode: str

    def to_dict(self) -> dict[str, Any]:
        return {"p": dict(self.p), "window": self.window, "precision": self.precision, "samples": self.samples,
                "mode": self.mode, "stats": {k: v.to_dict() for k, v in self.stats.items()}}


def calibrate_spike_confidence(net: Any, x: np.ndarray, *, sample_ids: Sequence[int] | None = None,
                               window: int = DEFAULT_WINDOW, layers: str | Iterable[str] = "last",
                               precision: str = "fixed", batch_size: int | None = None, chunk: int = 128,
                               on_progress: Callable[[int], None] | None = None) -> ScCalibration:
    """p^l = 1 − c^l of the SC-free network ``net`` (a ConvertedNetwork) on calibration inputs ``x`` (module
    docstring). ``sample_ids``: dataset indices of ``x`` (default 0..N−1); ``batch_size``: None = pooled
    statistics, B = per-batch mean. Raises ValueError when ``net`` already has spike confidence on a layer.
    """
    from msat_lava.program import from_converted

    if int(window) < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    gated = [k for k, s in net.neurons.items() if s.sc_enabled]
    if gated:
        raise ValueError(f"spike confidence must be measured without SC, but layer(s) {gated} have it")
    program = from_converted(net)
    chosen = gated_layers(program, layers)
    stats = run_with_statistics(program, x, int(window), precision=precision, sample_ids=sample_ids,
                                window=int(window), preactivations=preactivation_fn(net.graph), chunk=chunk,
                                on_progress=on_progress)
    per_layer = stats.sin_stats(batch_size)
    p = {k: max(per_layer[k].p, P_MIN) for k in chosen}
    return ScCalibration(p=p, stats=per_layer, window=int(window), precision=precision, samples=stats.samples,
                         mode="pooled" if batch_size is None else "per-batch")
