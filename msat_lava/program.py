"""Execution program of a converted network: stages and synaptic terms, shared by every backend.

A :class:`Program` is derived once from a :class:`netx_export.network.ConvertedNetwork`. It lists the
stateful **stages** in topological order:

* ``neuron``  — one spiking layer (a ReLU of the ANN), rule given by its ``NeuronSpec`` (+ LUTs);
* ``lipool``  — LIPooling of one spiking layer's payloads (ALGORITHMS §1.9);
* ``readout`` — the accumulating, non-spiking classifier (ALGORITHMS §1.8).

A neuron or readout stage receives x(t) = Σ_terms term(t) + bias, where each :class:`Term` is one linear path
from a source (``input``, a neuron stage or a lipool stage) through structural ops (subsample, chanpad,
sum-pool, flatten) and at most one weighted op (conv / linear, or a scalar gain).

Precisions (DESIGN.md §3–4):

* float: payloads and x in raw ANN units; the weighted op uses the float weight W; sum-pools are scaled by
  1/area; the input payload is the analog image.
* fixed: payloads are integers (normalized domain, F fractional bits); the weighted op uses the int8
  mantissa, and the term ends with ``round_shift(acc, exp)`` = floor((acc + 2^(−exp−1)) / 2^−exp) for exp < 0,
  acc·2^exp otherwise. All intermediate sums are integers below 2^53, so float64 arithmetic is exact.

The op implementations below exist once per array library (torch for the batched reference, numpy for
the Lava process models); ``tests/test_program.py`` feeds both the same integers and demands equal bits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Op:
    """One linear op of a term. ``kind`` ∈ subsample | chanpad | sumpool | flatten | conv | linear | gain.

    ``params``: subsample (step), chanpad (before, after), sumpool (kernel, stride, padding, area),
    conv (stride, padding, groups), linear (), gain (). Weighted ops carry ``weight`` (float, raw units)
    and ``mant`` (int8 mantissa, fixed point); ``gain`` ops carry scalars.
    """

    kind: str
    node: str
    in_shape: Shape
    out_shape: Shape
    params: Mapping[str, Any] = field(default_factory=dict)
    weight: Any = None  # float64 array (or scalar for gain)
    mant: Any = None    # int64 array (or scalar for gain)


@dataclass(frozen=True)
class Term:
    source: str
    ops: tuple[Op, ...]
    exp: int                 # fixed-point shift applied at the end of the term
    float_scale: float = 1.0  # extra float factor (1/area of sum-pools when no weighted op absorbs it)


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str                 # neuron | lipool | readout
    shape: Shape
    index: int                # layer id (PRNG key, Lava process naming)
    terms: tuple[Term, ...] = ()
    bias_float: Any = None    # float64 array of `shape`, raw units
    bias_fixed: Any = None    # int64 array of `shape`, state units
    spec: Any = None          # netx_export.neuron.NeuronSpec for neuron stages
    luts: Any = None          # netx_export.lut.ThresholdLuts or None
    source: str | None = None  # lipool: the neuron stage it pools
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    # readout: None (bias every step) or a function of the layer-local step t → whether the bias is added at t
    # (the neuron model's :meth:`~msat_lava.dynamics.models.DynamicsModel.readout_bias_gate`; BSNN-R)
    bias_gate: Any = None


@dataclass(frozen=True)
class Program:
    input_shape: Shape
    input_scale: float        # λ^0
    input_frac_bits: int      # F_in
    frac_bits: int            # F (state / payload fractional bits)
    stages: tuple[Stage, ...]
    seed: int = 0             # spike-confidence gate seed
    float_input_quantized: bool = False  # float model fed λ^0·2^−F_in·p_in (diagnostic, see from_converted)

    @property
    def readout(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def neuron_stages(self) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages if s.kind == "neuron")

    def sources_of(self, stage: Stage) -> tuple[str, ...]:
        """Distinct term sources of a stage, in first-use order (LIPool: its pooled stage)."""
        if stage.kind == "lipool":
            return (stage.source,)  # type: ignore[return-value]
        out: list[str] = []
        for t in stage.terms:
            if t.source not in out:
                out.append(t.source)
        return tuple(out)

    def source_shape(self, name: str) -> Shape:
        return self.input_shape if name == "input" else self.stage(name).shape


# ----------------------------------------------------------------------------------------------
# Input encoding
# ----------------------------------------------------------------------------------------------
def quantize_input_np(x: np.ndarray, scale: float, frac_bits: int) -> tuple[np.ndarray, int]:
    """p_in = clip(round_half_up(x / λ^0 · 2^F_in), ±(2^(F_in+7)−1)); returns (int64 array, #clipped).

    The clip bound leaves 7 integer bits above the calibrated maximum (|x| ≤ 128·λ^0)."""
    lim = (1 << (frac_bits + 7)) - 1
    q = np.floor(np.asarray(x, dtype=np.float64) / scale * (1 << frac_bits) + 0.5)
    clipped = int(np.count_nonzero(np.abs(q) > lim))
    return np.clip(q, -lim, lim).astype(np.int64), clipped


def input_payload_np(program: "Program", x: np.ndarray, fixed: bool) -> tuple[np.ndarray, int]:
    """The input payload fed every step and the number of clipped values: the quantized integers p_in (fixed),
    the analog image x (float), or p_in·λ^0·2^−F_in (float of a ``float_input_quantized`` program)."""
    if not (fixed or program.float_input_quantized):
        return np.asarray(x, dtype=np.float64), 0
    q, clipped = quantize_input_np(x, program.input_scale, program.input_frac_bits)
    if fixed:
        return q, clipped
    return q * (program.input_scale / (1 << program.input_frac_bits)), clipped


# ----------------------------------------------------------------------------------------------
# numpy backend (Lava process models): arrays without batch axis, one sample at a time
# ----------------------------------------------------------------------------------------------
def _round_shift_np(acc: np.ndarray, exp: int) -> np.ndarray:
    if exp >= 0:
        return acc * float(1 << exp)
    half = float(1 << (-exp - 1))
    return np.floor((acc + half) / float(1 << -exp))


def _conv_np(x: np.ndarray, w: np.ndarray, stride, padding, groups: int) -> np.ndarray:
    """Cross-correlation like torch.conv2d for one sample: x (C,H,W), w (Cout, C/g, kh, kw)."""
    ph, pw = padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (ph, ph), (pw, pw)))
    cout, cin_g, kh, kw = w.shape
    sh, sw = stride
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]  # C,Ho,Wo,kh,kw
    out_g = cout // groups
    outs = []
    for g in range(groups):
        xs = win[g * cin_g:(g + 1) * cin_g]
        ws = w[g * out_g:(g + 1) * out_g]
        outs.append(np.tensordot(ws, xs, axes=([1, 2, 3], [0, 3, 4])))
    return np.concatenate(outs, axis=0) if groups > 1 else outs[0]


def _sumpool_np(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    ph, pw = padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(x, tuple(kernel), axis=(1, 2))[:, ::stride[0], ::stride[1]]
    return win.sum(axis=(3, 4))


def apply_op_np(op: Op, x: np.ndarray, fixed: bool) -> np.ndarray:
    k = op.kind
    if k == "subsample":
        sh, sw = op.params["step"]
        return x[:, ::sh, ::sw]
    if k == "chanpad":
        return np.pad(x, ((op.params["before"], op.params["after"]), (0, 0), (0, 0)))
    if k == "sumpool":
        return _sumpool_np(x, op.params["kernel"], op.params["stride"], op.params["padding"])
    if k == "flatten":
        return x.reshape(-1)
    w = np.asarray(op.mant if fixed else op.weight, dtype=np.float64)
    if k == "conv":
        return _conv_np(x, w, op.params["stride"], op.params["padding"], op.params["groups"])
    if k == "linear":
        return w @ x
    if k == "gain":
        return x * w
    raise ValueError(f"unknown op kind {k!r} in node {op.node!r}")


def apply_term_np(term: Term, payload: np.ndarray, fixed: bool) -> np.ndarray:
    x = np.asarray(payload, dtype=np.float64)
    for op in term.ops:
        x = apply_op_np(op, x, fixed)
    if fixed:
        return _round_shift_np(x, term.exp)
    return x * term.float_scale if term.float_scale != 1.0 else x


# ----------------------------------------------------------------------------------------------
# torch backend (reference simulator): batched arrays (B, *shape)
# ----------------------------------------------------------------------------------------------
def _round_shift_torch(acc, exp: int):
    import torch

    if exp >= 0:
        return acc * float(1 << exp)
    half = float(1 << (-exp - 1))
    return torch.floor((acc + half) / float(1 << -exp))


def apply_op_torch(op: Op, x, fixed: bool, cache: dict | None = None):
    import torch
    import torch.nn.functional as F

    k = op.kind
    if k == "subsample":
        sh, sw = op.params["step"]
        return x[:, :, ::sh, ::sw]
    if k == "chanpad":
        return F.pad(x, (0, 0, 0, 0, op.params["before"], op.params["after"]))
    if k == "sumpool":
        return F.avg_pool2d(x, tuple(op.params["kernel"]), tuple(op.params["stride"]),
                            tuple(op.params["padding"]), count_include_pad=True, divisor_override=1)
    if k == "flatten":
        return x.reshape(x.shape[0], -1)
    if k not in ("conv", "linear", "gain"):
        raise ValueError(f"unknown op kind {k!r} in node {op.node!r}")
    if fixed and k != "gain":
        chunks, bits = _exact_f32_chunks(op, x, cache)
        if chunks:
            return _weighted_f32_exact(op, x, chunks, bits, cache)
    return _weighted(op, x, _weight_tensor(op, fixed, x.device, x.dtype, cache))


def _weight_tensor(op: Op, fixed: bool, device, dtype, cache: dict | None):
    import torch

    key = (id(op), fixed, device, dtype)
    w = cache.get(key) if cache is not None else None
    if w is None:
        w = torch.as_tensor(np.array(op.mant if fixed else op.weight, dtype=np.float64)).to(
            device=device, dtype=dtype)
        if cache is not None:
            cache[key] = w
    return w


def _weighted(op: Op, x, w):
    import torch.nn.functional as F

    if op.kind == "conv":
        return F.conv2d(x, w, None, tuple(op.params["stride"]), tuple(op.params["padding"]), 1,
                        op.params["groups"])
    if op.kind == "linear":
        return x @ w.T
    return x * w


#: float32 represents every integer of magnitude below 2^24 exactly.
_F32_EXACT_BITS = 24


def _row_l1_max(op: Op, cache: dict | None) -> int:
    """max over output units of Σ|mantissa| (the largest |Σ w·x| per unit of max x), cached per op."""
    key = ("l1", id(op))
    hit = cache.get(key) if cache is not None else None
    if hit is None:
        mant = np.asarray(op.mant, dtype=np.int64)
        hit = int(np.abs(mant).reshape(mant.shape[0], -1).sum(axis=1).max()) if mant.size else 0
        if cache is not None:
            cache[key] = hit
    return hit


def _exact_f32_chunks(op: Op, x, cache: dict | None = None, xmax: float | None = None) -> tuple[int, int]:
    """(number of chunks, bits per chunk) for an exact float32 conv/linear of ``x``; (0, 0) = use float64.

    x must hold non-negative integers (spike payloads, LIPool outputs). ``xmax``: a known bound on max(x) (the
    caller guarantees x ≥ 0), which saves the two reductions over x. Split x = Σ_k c_k·2^(b·k) with
    0 ≤ c_k < 2^b. Every partial sum of one output unit's products is bounded by ‖w_row‖₁·(2^b − 1); with
    max_row ‖w_row‖₁·(2^b − 1) < 2^24 every float32 product and partial sum is an exact integer, whatever the
    summation order, and recombining the chunks in float64 is exact as well.
    """
    l1 = _row_l1_max(op, cache)
    if l1 == 0 or x.numel() == 0 or (xmax is None and float(x.min()) < 0):
        return 0, 0
    top = int(x.max()) if xmax is None else int(xmax)
    if l1 * top < 1 << _F32_EXACT_BITS:
        return 1, _F32_EXACT_BITS  # every partial sum ≤ ‖w_row‖₁·max x < 2^24: one exact float32 op
    bits = _F32_EXACT_BITS - 1 - int(np.ceil(np.log2(l1 + 1)))
    if bits < 1:
        return 0, 0
    chunks = -(-max(1, top.bit_length()) // bits)
    return (chunks, bits) if chunks <= 3 else (0, 0)


def _weighted_f32_exact(op: Op, x, chunks: int, bits: int, cache: dict | None):
    """The conv/linear of integer-valued ``x`` as float32 ops on its b-bit chunks (see :func:`_exact_f32_chunks`);
    chunks that are zero everywhere (e.g. the low bits of a power-of-two payload) are skipped."""
    import torch

    w = _weight_tensor(op, True, x.device, torch.float32, cache)
    if chunks == 1:
        return _weighted(op, x.to(torch.float32), w).to(torch.float64)
    scale = float(1 << bits)
    if x.dtype == torch.float32:
        # float32 x holds exact integers below 2^24 (the engine's payload buffers): split in float32, hi =
        # ⌊x·2^−b⌋ (a power-of-two scaling and a floor: exact), lo = x − hi·2^b ∈ [0, 2^b) (exact); no int64 copies
        def split(rest):
            hi = torch.floor(rest * (1.0 / scale))
            return torch.add(rest, hi, alpha=-scale), hi
        rest = x
    else:
        mask = (1 << bits) - 1

        def split(rest):
            return torch.bitwise_and(rest, mask).to(torch.float32), torch.bitwise_right_shift(rest, bits)
        rest = x.to(torch.int64)
    # the parts' exact float32 sums accumulate into one float64 result (integers below 2^53: exact)
    out = None
    for k in range(chunks):
        low, rest = split(rest) if k < chunks - 1 else (rest.to(torch.float32), None)
        if bool(low.any()) or (out is None and k == chunks - 1):
            part = _weighted(op, low, w)
            f = float(1 << (bits * k))
            if out is None:
                out = part.to(torch.float64)
                if k:
                    out.mul_(f)
            else:
                out.add_(part, alpha=f)
    return out


def apply_term_torch(term: Term, payload, fixed: bool, cache: dict | None = None):
    x = payload
    for op in term.ops:
        x = apply_op_torch(op, x, fixed, cache)
    if fixed:
        return _round_shift_torch(x, term.exp)
    return x * term.float_scale if term.float_scale != 1.0 else x


def stage_depths(program: Program) -> dict[str, int]:
    """Longest path (in stages) from the input: used to model Loihi's one step of latency per layer."""
    depth: dict[str, int] = {"input": 0}
    for s in program.stages:
        depth[s.name] = 1 + max(depth[src] for src in program.sources_of(s))
    return depth


@dataclass(frozen=True)
class RunInputs:
    """Validated inputs of one run: x float64 (N, *input_shape), sample ids (N,) int64, gate seed, steps."""

    x: np.ndarray
    ids: np.ndarray
    seed: int
    steps: int


def check_run_inputs(program: Program, x: Any, steps: int, *, sample_ids: Sequence[int] | None,
                     seed: int | None, record: Sequence[str], precisions: Sequence[str],
                     precision: str) -> RunInputs:
    """Validate what every backend's run receives (ValueError naming the bad argument)."""
    if precision not in precisions:
        raise ValueError(f"precision must be one of {sorted(precisions)}, got {precision!r}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = np.ascontiguousarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if tuple(x.shape[1:]) != tuple(program.input_shape):
        raise ValueError(f"input shape {tuple(x.shape[1:])} does not match the network input "
                         f"{tuple(program.input_shape)}")
    n = x.shape[0]
    ids = np.arange(n, dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"sample_ids must have shape ({n},), got {ids.shape}")
    unknown = set(record) - {s.name for s in program.stages}
    if unknown:
        raise ValueError(f"cannot record unknown stage(s) {sorted(unknown)}")
    return RunInputs(x=x, ids=ids, seed=program.seed if seed is None else int(seed), steps=int(steps))


# ----------------------------------------------------------------------------------------------
# ConvertedNetwork -> Program
# ----------------------------------------------------------------------------------------------
#: Float weights a program can carry (:func:`from_converted`).
FLOAT_WEIGHTS = ("exact", "quantized")


def from_converted(net: Any, *, float_weights: str = "exact") -> Program:
    """Derive the execution program of a :class:`netx_export.network.ConvertedNetwork`.

    Stages follow the graph order: each ``relu`` → neuron stage, each ``maxpool`` → lipool stage, the graph's
    output node → readout. Each target's terms become :class:`Term` objects whose ops carry both the raw float
    weights (float model) and the int8 mantissas (fixed model); a path without a weighted op ends with a scalar
    ``gain`` op (float weight 1, fixed mantissa). Float terms are scaled by Π 1/area of their avgpools.

    ``float_weights='quantized'`` gives the float model the input, weights and biases the fixed model stands for
    (a diagnostic: float neurons on fixed-point synapses). With g = (λ_src/λ_tgt)·2^(F_tgt − F_src)·Π 1/area
    (netx_export.quantize), the float weight becomes W_q = mantissa·2^e / g (W_q = W up to half a mantissa
    LSB), the float bias b_q = bias_int·λ_tgt·2^−F_tgt and the float input x_q = p_in·λ^0·2^−F_in. The fixed
    model is unchanged.
    """
    from msat_lava.dynamics import models
    from netx_export.network import target_root
    from netx_export.quantize import bias_gain, input_gain, zero_source_values

    if float_weights not in FLOAT_WEIGHTS:
        raise ValueError(f"float_weights must be one of {FLOAT_WEIGHTS}, got {float_weights!r}")
    quantized = float_weights == "quantized"
    graph = net.graph
    targets = {t.name: t for t in net.targets}
    roots = {name: target_root(graph, name) for name in targets}
    zero = zero_source_values(graph, roots.values())

    def make_op(name: str, term_mant: np.ndarray) -> tuple[Op, float]:
        node = graph[name]
        in_shape = graph.shape(node.inputs[0])
        out_shape = graph.shape(name)
        k = node.kind
        if k == "subsample":
            return Op("subsample", name, in_shape, out_shape, {"step": node.step}), 1.0
        if k == "chanpad":
            return Op("chanpad", name, in_shape, out_shape, {"before": node.before, "after": node.after}), 1.0
        if k == "avgpool":
            area = float(node.kernel[0] * node.kernel[1])
            return Op("sumpool", name, in_shape, out_shape, {"kernel": node.kernel, "stride": node.stride,
                                                                 "padding": node.padding}), 1.0 / area
        if k == "flatten":
            return Op("flatten", name, in_shape, out_shape), 1.0
        mant = np.asarray(term_mant, dtype=np.int64)
        if k == "conv":
            return Op("conv", name, in_shape, out_shape,
                      {"stride": node.stride, "padding": node.padding, "groups": node.groups},
                      weight=np.asarray(node.weight, dtype=np.float64), mant=mant), 1.0
        if k == "linear":
            return Op("linear", name, in_shape, out_shape, {}, weight=np.asarray(node.weight, dtype=np.float64),
                      mant=mant), 1.0
        raise ValueError(f"node {name!r} of kind {k!r} cannot be on a synaptic path")

    def quantized_weight(target: Any, t: Any, scale: float) -> np.ndarray:
        lam_s, f_s = net.source_scale(t.source)
        gain = (lam_s / target.lam) * math.ldexp(1.0, target.frac_bits - f_s) * scale  # scale has input_gain
        return np.asarray(t.mantissa, dtype=np.float64) * math.ldexp(1.0, int(t.exponent)) / gain

    def make_terms(target: Any) -> tuple[Term, ...]:
        terms = []
        for t in target.terms:
            ops, scale = [], input_gain(net.neurons, target.name, t.source, graph)  # 1 but BSNN-R's image term
            for name in t.path:
                op, s = make_op(name, t.mantissa)
                ops.append(op)
                scale *= s
            if t.op is None:
                shape = ops[-1].out_shape if ops else (graph.input.shape if t.source == "input"
                                                       else graph.shape(t.source))
                ops.append(Op("gain", f"{t.source}->gain", shape, shape, {}, weight=np.float64(1.0),
                              mant=np.int64(int(np.asarray(t.mantissa)))))
            if quantized:
                i = next(i for i, o in enumerate(ops) if o.kind in ("conv", "linear", "gain"))
                ops[i] = replace(ops[i], weight=quantized_weight(target, t, scale))
            source = "input" if t.source == graph.input.name else t.source
            terms.append(Term(source=source, ops=tuple(ops), exp=int(t.exponent), float_scale=scale))
        return tuple(terms)

    def float_bias(name: str) -> np.ndarray:
        if quantized:
            tgt = targets[name]
            return np.asarray(tgt.bias, dtype=np.float64) * (tgt.lam * math.ldexp(1.0, -tgt.frac_bits))
        root = roots[name]
        value = zero.get(root)
        shape = graph.shape(root)
        gain = bias_gain(net.neurons, name if name in net.neurons else "")  # the neuron model's (1 but BSNN-R's readout)
        return np.zeros(shape) if value is None else np.asarray(value, dtype=np.float64).reshape(shape) * gain

    stages: list[Stage] = []
    for node in graph:
        if node.kind == "relu":
            tgt = targets[node.name]
            stages.append(Stage(node.name, "neuron", graph.shape(node.name), len(stages), terms=make_terms(tgt),
                                bias_float=float_bias(node.name), bias_fixed=np.asarray(tgt.bias, np.int64),
                                spec=net.neurons[node.name], luts=net.luts[node.name]))
        elif node.kind == "maxpool":
            stages.append(Stage(node.name, "lipool", graph.shape(node.name), len(stages), source=node.inputs[0],
                                kernel=node.kernel, stride=node.stride, padding=node.padding))
    out = graph.output
    tgt = targets[out.name]
    specs = list(net.neurons.values())
    gate = models.get(specs[0].mode).readout_bias_gate(specs) if specs else None
    stages.append(Stage(out.name, "readout", graph.shape(out.name), len(stages), terms=make_terms(tgt),
                        bias_float=float_bias(out.name), bias_fixed=np.asarray(tgt.bias, np.int64),
                        bias_gate=gate))
    frac = {t.frac_bits for t in net.targets}
    if len(frac) != 1:
        raise ValueError(f"targets use different fractional bit widths {sorted(frac)}")
    return Program(input_shape=tuple(graph.input.shape), input_scale=float(net.input_scale),
                   input_frac_bits=int(net.input_frac_bits), frac_bits=frac.pop(), stages=tuple(stages),
                   seed=int(getattr(net.provenance, "seed", 0) or 0), float_input_quantized=quantized)
