"""Batched PyTorch reference simulator of a converted network, in float and in fixed point.

It executes the same :class:`~msat_lava.program.Program` as the Lava process graph, with the neuron rules of
:mod:`msat_lava.dynamics` (the single definition per precision), on a batch of samples at once:

    for t = 0..T−1:   for each stage in topological order:
        neuron : x(t) = Σ_terms term(payload_src(t)) + bias;  (state, payload) = step(spec, state, x)
        lipool : (A, y(t)) = step_lipool(A, payload_src(t))
        readout: Out(t) = Out(t−1) + Σ_terms term(payload_src(t)) + bias

Units: float = raw ANN units (image fed as is every step); fixed = integers of the normalized domain
(DESIGN.md §4), the image quantized once to p_in = round(x/λ^0·2^F_in). The readout accumulator is float64
(float) or exact integers held in float64 (< 2^53, fixed). Zero delay (ANN-like timing) is the native timing and
is what the Lava graph does; ``delay=True`` models Loihi 2's one step of latency per layer by shifting the readout
(predictions and accumulated readout) by its depth (every layer runs on layer-local time, so the shift is exact);
recorded traces and spike counts stay on layer-local time.

One run of T steps returns the prediction after every step (accuracy vs T from one run) and, on request,
per-layer spike counts, full payload traces, payload sums and membrane states at chosen steps. CPU by default,
any torch device on request.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from msat_lava.dynamics import lipool as lip
from msat_lava.dynamics import neuron as dyn
from msat_lava.program import Program, apply_term_torch, check_run_inputs, input_payload_np, stage_depths

PRECISIONS = ("float", "fixed")
#: dtypes the float model may compute its stage-fed synaptic sums in (:func:`simulate`).
SYNAPSE_DTYPES = ("float64", "float32")
#: execution engines of :func:`simulate`.
ENGINES = ("auto", "fast", "step")


@dataclass
class RunResult:
    """Outputs of one reference run over N samples and T steps.

    predictions: (T, N) int64, argmax of the accumulated readout after step t (lowest index on ties).
    readout: (T, N, K) accumulated readout (raw units / fixed integers) when requested, else None.
    spike_counts: per neuron stage (N, *shape) int64 total gated spikes over T steps, when requested.
    traces: per recorded stage (T, N, *shape) payloads (float raw / int64), when requested.
    payload_sums: {k: {neuron stage: (N, *shape) float64 Σ_{t<k} payload}} for each requested step count k
      (``sums_at``); raw units (float) or normalized integers (fixed: real = value·λ·2^−F).
    membrane: {k: {neuron stage: (N, *shape) float64 v(k)/λ}} after each requested step count k (``membrane_at``):
      the membrane residual after step k (after reset) in units of the layer's λ (θ at t = 0), float v/λ,
      fixed v̂·2^−F (exact); layer-local time.
    input_clipped: number of input values clipped by the fixed-point input quantizer.
    saturated: per neuron stage, number of (sample, neuron, step) where v̂ hit the state bound (fixed only).
    """

    precision: str
    steps: int
    predictions: np.ndarray
    readout: np.ndarray | None = None
    spike_counts: dict[str, np.ndarray] = field(default_factory=dict)
    traces: dict[str, np.ndarray] = field(default_factory=dict)
    payload_sums: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    membrane: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    input_clipped: int = 0
    saturated: dict[str, int] = field(default_factory=dict)

    def mean_rates(self, program: Program, k: int) -> dict[str, np.ndarray]:
        """{neuron stage: (N, *shape) float64 Σ_{t<k} payload / k in raw units} from ``payload_sums[k]``
        (fixed: one LSB = λ·2^−F of the stage)."""
        out = {}
        for s in program.neuron_stages:
            unit = s.spec.lsb if self.precision == "fixed" else 1.0
            out[s.name] = self.payload_sums[k][s.name] * (unit / k)
        return out

    def accuracy(self, labels: Sequence[int]) -> np.ndarray:
        """(T,) accuracy after each step (1-based step k = index + 1)."""
        labels = np.asarray(labels).reshape(1, -1)
        return (self.predictions == labels).mean(axis=1)


def _batches(n: int, batch_size: int) -> Iterable[tuple[int, int]]:
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def simulate(program: Program, x: Any, steps: int, *, precision: str = "fixed", seed: int | None = None,
             sample_ids: Sequence[int] | None = None, batch_size: int = 64, device: str | None = None,
             record: Sequence[str] = (), record_readout: bool = False, record_counts: bool = False,
             delay: bool = False, progress: bool = True, threads: int | None = None,
             sums_at: Sequence[int] = (), membrane_at: Sequence[int] = (),
             synapse_dtype: str = "float64", engine: str = "auto", chunk: int | None = None) -> RunResult:
    """Run ``program`` on inputs ``x`` (N, *input_shape) for ``steps`` steps.

    ``seed`` keys the spike-confidence gate (default: the program's seed); ``sample_ids`` are the dataset
    indices used in the gate key (default 0..N−1), so a sample's result does not depend on the batch it is in.
    ``record`` names stages whose payload traces to return; ``device`` defaults to CPU ("cuda" if asked);
    ``threads`` sets torch's intra-op threads for this call only (1 is fastest for small batches on few cores).
    ``sums_at``: step counts k (1 ≤ k ≤ steps) after which every neuron's summed payload is returned
    (``RunResult.payload_sums``; layer-local time, like the traces). ``membrane_at``: step counts k after which
    every neuron's membrane residual is returned in units of λ (``RunResult.membrane``).
    ``synapse_dtype`` ("float64" or "float32", float precision only): the dtype of the synaptic sums fed by
    other stages. float32 runs the convolutions ≈ 10× faster on CPU at a relative rounding error of ≈ 1e-7 of
    each sum (the neuron state stays float64, the input-fed terms are computed once in float64); fixed point
    is exact whatever this says.
    ``engine``: "fast" (layer-major over chunks of ``chunk`` time steps with compiled neuron loops,
    :mod:`msat_lava.engine`; CPU), "step" (the plain step-by-step loop below, any device) or "auto" (fast on CPU,
    step elsewhere). The fast engine runs every registered neuron model: a fused kernel for the MSAT family
    (:func:`msat_lava.dynamics.models.has_fused`), the models' own step function after the batched synaptic terms
    otherwise. Both engines give the same fixed-point integers; float results differ by float rounding only. ``chunk`` (fast engine): steps per chunk, default :func:`msat_lava.engine.default_chunk`
    of the batch (8 at batch ≤ 25, 2 at batch ≥ 100); the results do not depend on it.
    """
    import torch

    inputs = check_run_inputs(program, x, steps, sample_ids=sample_ids, seed=seed, record=record,
                              precisions=PRECISIONS, precision=precision)
    if synapse_dtype not in SYNAPSE_DTYPES:
        raise ValueError(f"synapse_dtype must be one of {list(SYNAPSE_DTYPES)}, got {synapse_dtype!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    from msat_lava.engine import default_chunk

    chunk = default_chunk(min(int(batch_size), max(1, len(inputs.x)))) if chunk is None else int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    x, ids, seed, fixed = inputs.x, inputs.ids, inputs.seed, precision == "fixed"
    dev = torch.device(device or "cpu")
    if engine == "auto":
        engine = "fast" if dev.type == "cpu" else "step"
    elif engine == "fast" and dev.type != "cpu":
        raise ValueError(f"engine 'fast' runs on CPU only, not on {dev}; use engine='step'")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _simulate(program, x, steps, fixed, seed, ids, dev, record, record_readout, record_counts, delay,
                         progress, batch_size, sums_at, membrane_at, getattr(torch, synapse_dtype), engine, chunk)
    finally:
        torch.set_num_threads(previous_threads)


def _simulate(program, x, steps, fixed, seed, ids, dev, record, record_readout, record_counts, delay, progress,
              batch_size, sums_at, membrane_at, synapse_dtype, engine="step", chunk=8) -> RunResult:
    import torch

    precision = "fixed" if fixed else "float"
    n = x.shape[0]
    sums_at = _step_counts("sums_at", sums_at, steps)
    membrane_at = _step_counts("membrane_at", membrane_at, steps)
    sums = {k: {s.name: np.zeros((n,) + s.shape) for s in program.neuron_stages} for k in sums_at}
    membrane = {k: {s.name: np.zeros((n,) + s.shape) for s in program.neuron_stages} for k in membrane_at}

    out = program.readout
    k = int(np.prod(out.shape))
    preds = np.zeros((steps, n), dtype=np.int64)
    readout = np.zeros((steps, n, k), dtype=np.float64) if record_readout else None
    counts = {s.name: np.zeros((n,) + s.shape, dtype=np.int64) for s in program.neuron_stages} \
        if record_counts else {}
    traces = {name: np.zeros((steps, n) + program.stage(name).shape,
                             dtype=np.int64 if fixed else np.float64) for name in record}
    saturated = {s.name: 0 for s in program.neuron_stages}
    clipped = 0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n * steps, desc=f"reference {precision}", unit="sample-step", leave=False)
    cache: dict = {}
    with torch.no_grad():
        for lo, hi in _batches(n, batch_size):
            inp, c = input_tensor(program, x[lo:hi], fixed, dev)
            clipped += c
            ids_b = torch.as_tensor(np.array(ids[lo:hi]), device=dev)  # a copy: ids may be read-only (a file)
            if engine == "fast":
                from msat_lava.engine import run_batch

                res = run_batch(program, inp, steps, fixed, seed, ids_b, cache, bar, record, traces, lo, sums_at,
                                membrane_at, synapse_dtype, chunk)
            else:
                res = _run_batch(program, inp, steps, fixed, seed, ids_b, cache, bar, record, traces, lo, sums_at,
                                 membrane_at, synapse_dtype)
            preds[:, lo:hi] = res["preds"]
            if readout is not None:
                readout[:, lo:hi] = res["readout"]
            for name, c in res["counts"].items():
                if record_counts:
                    counts[name][lo:hi] = c
            for name, c in res["saturated"].items():
                saturated[name] += c
            for got, into in ((res["sums"], sums), (res["membrane"], membrane)):
                for k, per in got.items():
                    for name, v in per.items():
                        into[k][name][lo:hi] = v
    if bar is not None:
        bar.close()
    if delay:
        d = stage_depths(program)[out.name]
        shifted = np.zeros_like(preds)
        shifted[d:] = preds[:steps - d] if d < steps else shifted[d:]
        preds = shifted
        if readout is not None:
            r = np.zeros_like(readout)
            r[d:] = readout[:steps - d] if d < steps else r[d:]
            readout = r
    return RunResult(precision=precision, steps=steps, predictions=preds, readout=readout,
                     spike_counts=counts, traces=traces, payload_sums=sums, membrane=membrane,
                     input_clipped=clipped,
                     saturated=saturated if fixed else {})


def _step_counts(name: str, ks: Sequence[int], steps: int) -> list[int]:
    """Sorted distinct step counts k, each in [1, steps] (ValueError naming the argument otherwise)."""
    ks = sorted({int(k) for k in ks})
    if ks and not 1 <= ks[0] <= ks[-1] <= steps:
        raise ValueError(f"{name} must lie in [1, {steps}], got {ks}")
    return ks


def input_tensor(program: Program, x: np.ndarray, fixed: bool, device=None):
    """The input payload fed every step, float64 (B, *input_shape): the analog image (float) or its quantized
    integers p_in = round(x/λ^0·2^F_in) (fixed), with the number of clipped values. A program with
    ``float_input_quantized`` feeds its float model p_in·λ^0·2^−F_in instead of x."""
    import torch

    payload, clipped = input_payload_np(program, x, fixed)
    return torch.as_tensor(payload, dtype=torch.float64, device=device), clipped


def constant_input(stage, inp, fixed: bool, cache: dict):
    """The time-constant part of a stage's input for a batch: bias + every term fed by the input."""
    import torch

    bias = stage.bias_fixed if fixed else stage.bias_float
    base = torch.as_tensor(np.asarray(bias, dtype=np.float64), device=inp.device)
    base = base.expand((inp.shape[0],) + tuple(stage.shape)).clone()
    for term in stage.terms:
        if term.source == "input":
            base = base + apply_term_torch(term, inp, fixed, cache)
    return base


def stage_input(stage, base, payload, fixed: bool, cache: dict, synapse_dtype=None):
    """x(t) of a neuron / readout stage: ``base`` (:func:`constant_input`) + the terms fed by stages, from this
    step's ``payload`` {stage name: tensor}; each term is computed in ``synapse_dtype`` (float only; default
    float64) and added to ``base`` in float64."""
    import torch

    dtype = torch.float64 if fixed or synapse_dtype is None else synapse_dtype
    xin = base
    for term in stage.terms:
        if term.source != "input":
            xin = xin + apply_term_torch(term, payload[term.source].to(dtype), fixed, cache).to(torch.float64)
    return xin


def _run_batch(program: Program, inp, steps: int, fixed: bool, seed: int, ids, cache: dict, bar,
               record: Sequence[str], traces: dict, lo: int, sums_at: Sequence[int], membrane_at: Sequence[int],
               synapse_dtype) -> dict:
    import torch

    b = inp.shape[0]
    hi = lo + b
    like = inp.to(torch.int64) if fixed else inp
    # Terms fed by the input are constant over time: evaluate them once per batch.
    const_x: dict[str, Any] = {}
    states: dict[str, Any] = {}
    for s in program.stages:
        const_x[s.name] = constant_input(s, inp, fixed, cache)
        if s.kind == "neuron":
            states[s.name] = (dyn.init_fixed_state((b,) + s.shape, like, s.spec) if fixed
                              else dyn.init_float_state((b,) + s.shape, like, s.spec))
        elif s.kind == "lipool":
            src = program.stage(s.source)
            geom = lip.lipool_geometry(src.shape[1:], s.kernel, s.stride, s.padding)
            states[s.name] = (geom, lip.init_lipool_state(geom, b, src.shape[0], like, integer=fixed))
    out = program.readout
    acc = torch.zeros((b,) + out.shape, dtype=torch.float64, device=inp.device)
    preds = np.zeros((steps, b), dtype=np.int64)
    readout = np.zeros((steps, b, int(np.prod(out.shape))), dtype=np.float64)
    counts = {s.name: torch.zeros((b,) + s.shape, dtype=torch.int64, device=inp.device)
              for s in program.neuron_stages}
    saturated = {s.name: 0 for s in program.neuron_stages}
    acc_sums = {s.name: torch.zeros((b,) + s.shape, dtype=torch.float64, device=inp.device)
                for s in program.neuron_stages} if sums_at else {}
    sums: dict[int, dict[str, np.ndarray]] = {}
    membrane: dict[int, dict[str, np.ndarray]] = {}
    for t in range(steps):
        payload: dict[str, Any] = {}
        for s in program.stages:
            if s.kind == "lipool":
                geom, st = states[s.name]
                st, y = lip.step_lipool(geom, st, payload[s.source])
                states[s.name] = (geom, st)
                payload[s.name] = y
            else:
                xin = stage_input(s, const_x[s.name], payload, fixed, cache, synapse_dtype)
                if s.kind == "readout":
                    if s.bias_gate is not None and not s.bias_gate(t):  # the model adds the bias only at some t
                        xin = xin - torch.as_tensor(np.asarray(s.bias_fixed if fixed else s.bias_float,
                                                               dtype=np.float64), device=xin.device)
                    acc = acc + xin
                    payload[s.name] = acc
                else:
                    st = states[s.name]
                    if fixed:
                        st, o = dyn.step_fixed(s.spec, s.luts, st, xin.to(torch.int64), ids, s.index, seed)
                        saturated[s.name] += int((st.v.abs() >= s.spec.v_max).sum())
                    else:
                        st, o = dyn.step_float(s.spec, st, xin, ids, s.index, seed)
                    states[s.name] = st
                    counts[s.name] += o.spikes
                    payload[s.name] = o.payload
                    if sums_at:
                        acc_sums[s.name] += o.payload
            if s.name in traces:
                traces[s.name][t, lo:hi] = payload[s.name].cpu().numpy()
        flat = acc.reshape(b, -1)
        preds[t] = torch.argmax(flat, dim=1).cpu().numpy()  # first maximal index on ties
        readout[t] = flat.cpu().numpy()
        if t + 1 in sums_at:
            sums[t + 1] = {k: v.cpu().numpy().copy() for k, v in acc_sums.items()}
        if t + 1 in membrane_at:  # v / λ: fixed v̂·2^−F, float v / λ
            membrane[t + 1] = {s.name: (states[s.name].v.to(torch.float64) / (s.spec.one if fixed else s.spec.lam))
                               .cpu().numpy() for s in program.neuron_stages}
        if bar is not None:
            bar.update(b)
    return {"preds": preds, "readout": readout, "sums": sums, "membrane": membrane,
            "counts": {k: v.cpu().numpy() for k, v in counts.items()}, "saturated": saturated}
