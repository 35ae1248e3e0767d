"""Layer-major execution of a program over chunks of time steps: the fast engine of the reference simulator.

The plain engine (:func:`msat_lava.reference._run_batch`) advances every stage by one step at a time. Because the
program is a zero-delay DAG, a stage's input for steps t0 … t1−1 only needs its sources' payloads for the same
steps, so the work can be ordered layer by layer within a chunk of Tc steps:

    for each chunk [t0, t1):
        for each stage in topological order:
            a_k = term_k(payload_src(t0 … t1−1))      one (Tc·B)-batched conv / linear per term
            neuron : (state, payload(t0 … t1−1)) = fused neuron loop over the chunk   (dynamics.fused)
                     or, for a model without a fused kernel, its step function for t0 … t1−1
            lipool : fused.lipool_chunk over t0 … t1−1 (step_lipool's operations, compiled)
            readout: Out(t) = Out(t−1) + bias + Σ_k term_k(t)   (bias only where the model's gate says so)

Only the neuron recursion is sequential in time, and it runs in one compiled pass per stage and chunk with the
state in registers. Image-shaped tensors are kept channels-last (the convolution layout that runs fastest on CPU)
and neuron arrays in the same physical order, so nothing is transposed on the hot path.

Every registered neuron model runs here. The MSAT family (``fused.MODE_CODES``,
:func:`msat_lava.dynamics.models.has_fused`) has fused kernels; any other model (DTIF-R, BSNN-R, …) takes the
generic path: its chunk input x(t0 … t1−1) is built from the same batched terms, then the plain engine's own
stage step (:func:`msat_lava.dynamics.neuron.step_fixed` / ``step_float``: the model's threshold, quanta,
schedule, Γ, gate, saturation) advances the stage one step at a time on numpy arrays of the logical layout, so
no neuron rule is written twice. DTIF-R's fixed model also has a fused kernel (``FIXED_KERNELS``,
``fused.dtif_fixed_chunk``, read from the same tables as the step function's interpolation), and so has every
model with one θ̂ per step for the whole layer (``DynamicsModel.fixed_uniform_step``: BSNN-R's fixed model,
``fused.uniform_fixed_chunk``; its schedule and θ̂ come from that method, evaluated per step of the chunk). A
neuron stage whose payloads are all 0 over a chunk (any fixed-point stage, or a generic one; BSNN-R outside its
FIRE cycles) feeds no term: its consumers skip those convolutions (every op of a term is linear).

Exactness (fixed point): payloads are non-negative integers ≤ Γ·2^F. A weighted op runs in float32 when
:func:`msat_lava.program._exact_f32_chunks` proves every partial sum an exact integer below 2^24 (one chunk), on
b-bit chunks recombined in float64 when it needs several, and in float64 otherwise; structural ops (subsample,
channel padding, flatten) copy values and a sum-pool is run in float32 only while its sums stay below 2^24. The
term's round-shift, the bias and the neuron rule are evaluated in int64 by the fused kernel (generic path: in
int64 torch ops, then the step function). The result is the same integers as the plain engine, which
``tests/test_engine.py`` checks on random networks of every stage kind and every registered model.
Float: terms are computed exactly as the plain engine computes them (same ops, ``synapse_dtype``), in batches of
Tc·B instead of B, so sums may differ by float rounding only (and with them, rarely, a spike at a threshold).

Outputs have the plain engine's contract (``reference._run_batch``): predictions per step, readout, spike counts,
saturation counts, traces, payload sums and membrane snapshots on layer-local time. Chunk boundaries are placed at
every step after which a payload sum or a membrane snapshot is requested.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from msat_lava.dynamics import fused
from msat_lava.dynamics import lipool as lip
from msat_lava.dynamics import models
from msat_lava.dynamics import neuron as dyn
from msat_lava.dynamics import prng
from msat_lava.program import (Program, _exact_f32_chunks, _round_shift_torch, _row_l1_max, _weight_tensor,
                               _weighted, _weighted_f32_exact, apply_op_torch, apply_term_torch)

__all__ = ["run_batch", "DEFAULT_CHUNK", "default_chunk", "chunk_bounds"]

#: Time steps per chunk. Larger chunks batch more samples per convolution but move the chunk's payloads out of
#: cache; 8 measured fastest for ResNet20 at batch 25 on a 2-core CPU (benchmarks/sim_speed.py --chunk).
DEFAULT_CHUNK = 8
#: Rows (chunk × batch) of a chunk's convolutions that :func:`default_chunk` aims at: ResNet20 at batch 100 ran
#: const float 1.63× / msat fixed 4.67× an ANN forward with chunk 8, 1.24× / 3.58× with chunk 2 (AVX-512 machine,
#: 1 thread, T = 64); batch 25 stays best at 8.
CHUNK_ROWS = 200


def default_chunk(batch: int) -> int:
    """Chunk length for a batch of ``batch`` samples: round(CHUNK_ROWS / batch) clamped to [2, DEFAULT_CHUNK]
    (results do not depend on it; only speed does)."""
    return max(2, min(DEFAULT_CHUNK, round(CHUNK_ROWS / max(1, int(batch)))))
_F32_LIMIT = float(1 << 24)


def chunk_bounds(steps: int, chunk: int, breaks: Sequence[int] = ()) -> list[tuple[int, int]]:
    """[(t0, t1)] covering 0 … steps−1 in chunks of at most ``chunk`` steps, split after every step count in
    ``breaks`` (so a snapshot after k steps falls on a chunk end)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    edges = set(range(0, steps, chunk)) | {int(k) for k in breaks if 0 < int(k) < steps} | {steps}
    edges = sorted(edges | {0})
    return list(zip(edges[:-1], edges[1:]))


class _Layout:
    """Physical order of one stage's arrays: channels-last for (C, H, W) stages, C order otherwise."""

    def __init__(self, shape: Sequence[int], batch: int):
        self.shape = tuple(int(s) for s in shape)
        self.batch = batch
        self.image = len(self.shape) == 3
        self.size = batch * int(np.prod(self.shape))

    def to_phys(self, t):
        """Logical (B, *shape) tensor → flat physical numpy view/copy (B·N,)."""
        if self.image:
            t = t.permute(0, 2, 3, 1)
        return t.contiguous().reshape(-1).numpy()

    def chunk_to_phys(self, t, tc: int):
        """Logical (tc·B, *shape) tensor → physical numpy (tc, B·N) (a view when already channels-last)."""
        if self.image:
            t = t.permute(0, 2, 3, 1)
        return t.contiguous().reshape(tc, -1).numpy()

    def chunk_from_phys(self, a: np.ndarray, tc: int):
        """Physical numpy (tc, B·N) → logical (tc·B, *shape) tensor sharing its memory (channels-last)."""
        import torch

        t = torch.from_numpy(a)
        if self.image:
            c, h, w = self.shape
            return t.view(tc * self.batch, h, w, c).permute(0, 3, 1, 2)
        return t.view((tc * self.batch,) + self.shape)

    def from_phys(self, a: np.ndarray) -> np.ndarray:
        """Physical numpy (B·N,) → logical numpy (B, *shape) (a copy)."""
        if self.image:
            c, h, w = self.shape
            return np.ascontiguousarray(a.reshape(self.batch, h, w, c).transpose(0, 3, 1, 2))
        return a.reshape((self.batch,) + self.shape).copy()


def _pack_interp(a: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, int]:
    """(P, k): an interpolation table's (A, D) pair (neuron._interp_tables) as one int64 table P = A·2^k + D, with
    k one more than D's bit length, so that one read gives both: D = the low k bits read as signed
    ((P << (64 − k)) >> (64 − k)), A = (P − D) >> k (:func:`fused._pinterp`; the same integers, one gather
    instead of two)."""
    a, d = np.asarray(a, dtype=np.int64), np.asarray(d, dtype=np.int64)
    k = int(np.abs(d).max(initial=0)).bit_length() + 1
    if k > 30 or int(np.abs(a).max(initial=0)).bit_length() + k > 62:
        raise ValueError(f"interpolation table out of the packed range (|A| < 2^{62 - k}, |D| < 2^29)")
    return (a << k) + d, k


def _lut_tables(luts) -> tuple:
    """(ip, sig, sp, det) for :func:`fused.fixed_chunk` from a layer's LUTs: ip the 17 int64 parameters (the last
    three: each table's k), each table packed by :func:`_pack_interp`."""
    empty = np.zeros(1, dtype=np.int64)
    if luts is None:
        return (np.zeros(17, dtype=np.int64),) + (empty,) * 3
    sig, k_sig = _pack_interp(*dyn._interp_tables(luts.sig_lut, luts.sig_shift, luts.sig_guard))
    sp, k_sp = _pack_interp(*dyn._interp_tables(luts.sp_lut, luts.sp_shift, 0))
    det, k_det = _pack_interp(*dyn._interp_tables(luts.det_lut, luts.det_shift, 0))
    ip = np.array([dyn.DELTA_CLIP, luts.dtt_slope_neg, luts.dtt_slope_pos, luts.dtt_slope_shift, luts.dtt_offset,
                   (int(luts.sp_lut.size) - 1) << luts.sp_shift, luts.sp_shift, luts.det_x0,
                   (int(luts.det_lut.size) - 1) << luts.det_shift, luts.det_shift, luts.z_max, luts.sig_shift,
                   luts.sig_guard, 1 << luts.frac_bits, k_sig, k_sp, k_det], dtype=np.int64)
    return (ip, sig, sp, det)


def _gate(stage, lay: _Layout, sample_ids: np.ndarray, seed: int) -> tuple:
    """(E, sample ids, physical → logical neuron index, K_seed, K) for :func:`fused.fixed_chunk`; E = 0 when the
    layer has no gate (or its p keeps every spike). Checked like :func:`msat_lava.dynamics.prng.uniform24`."""
    spec = stage.spec
    n = int(np.prod(lay.shape))
    if lay.image:
        c, h, w = lay.shape
        nidx = np.arange(n, dtype=np.int64).reshape(c, h, w).transpose(1, 2, 0).reshape(-1).copy()
    else:
        nidx = np.arange(n, dtype=np.int64)
    if not spec.sc_enabled or prng.keep_threshold(spec.sc_p) == 0:
        return (0, sample_ids, nidx, np.uint64(0), 0)
    if sample_ids.size and (int(sample_ids.min()) < 0 or int(sample_ids.max()) > prng.MAX_SAMPLE_ID):
        raise ValueError(f"sample_ids must be in [0, 2^24), got range [{int(sample_ids.min())}, "
                         f"{int(sample_ids.max())}]")
    return (int(spec.sc_early), sample_ids, nidx, np.uint64(prng.seed_key(seed, stage.index)),
            int(prng.keep_threshold(spec.sc_p)))


def _float_params(spec) -> np.ndarray:
    c = spec.coefs
    if c is None:
        return np.zeros(10)
    inv_u, inv_ki, kx = dyn.float_theta_constants(spec)
    return np.array([inv_u, spec.formula_lam, inv_ki, c.tau_mp, c.alpha, c.k_a, c.tau_rd, kx, dyn.EXP_ARG_MAX,
                     spec.lsb], dtype=np.float64)


def _trailing_gain(term, fixed: bool) -> tuple[tuple, Any]:
    """(ops, g): a term whose last op is a scalar gain as its other ops and that gain, which the neuron kernel
    applies instead of an array pass: fixed, the integer mantissa g joins the term's multiplier q (the kernel's
    (a·q·g + add) >> shift in int64 is the same integer as round_shift((a·g)·q)); float, only a gain of exactly 1
    (raw units) is dropped, x·1.0 = x. Otherwise (term.ops, None)."""
    ops = term.ops
    if not ops or ops[-1].kind != "gain":
        return ops, None
    if fixed:
        return ops[:-1], int(np.asarray(ops[-1].mant))
    if float(np.asarray(ops[-1].weight)) == 1.0 and term.float_scale == 1.0:
        return ops[:-1], 1
    return ops, None


def _term_fixed(ops, x, xmax: float, cache: dict):
    """The integer sum of a term's ``ops`` (before its round-shift) for a (tc·B, …) tensor ``x`` of non-negative
    integers below ``xmax`` (inclusive), computed in float32 wherever every value and partial sum is provably an
    exact integer below 2^24 and in float64 otherwise (module docstring). Bounds are carried through the ops, so
    nothing is reduced over x."""
    import torch

    bound = float(xmax)
    for op in ops:
        k = op.kind
        if k in ("conv", "linear"):
            chunks, bits = _exact_f32_chunks(op, x, cache, xmax=bound)
            if chunks == 1:
                x = _weighted(op, x.to(torch.float32), _weight_tensor(op, True, x.device, torch.float32, cache))
            elif chunks:
                x = _weighted_f32_exact(op, x, chunks, bits, cache)
            else:
                x = _weighted(op, x.to(torch.float64), _weight_tensor(op, True, x.device, torch.float64, cache))
            bound *= _row_l1_max(op, cache)
        elif k == "gain":
            g = float(np.asarray(op.mant))
            bound *= abs(g)
            if x.dtype == torch.float32 and bound >= _F32_LIMIT:
                x = x.to(torch.float64)
            x = x * g
        else:
            if k == "sumpool":
                bound *= op.params["kernel"][0] * op.params["kernel"][1]
                if x.dtype == torch.float32 and bound >= _F32_LIMIT:
                    x = x.to(torch.float64)
            x = apply_op_torch(op, x, True, cache)
    return x


def _source_terms(stage, payload: dict, fixed: bool, synapse_dtype, cache: dict,
                  zero: Any = ()) -> list[tuple[Any, int, int]]:
    """[(a, q, exp)] of a stage's stage-fed terms for one chunk: the term's sum is a·q before its round-shift
    by exp (fixed), or a itself (float: q = 1, exp = 0). Terms fed by a stage in ``zero`` (all its payloads of the
    chunk are 0) are left out: every op of a term is linear, so they are 0."""
    out = []
    for term in stage.terms:
        if term.source == "input" or term.source in zero:
            continue
        x, q, xmax = payload[term.source]
        ops, g = _trailing_gain(term, fixed)
        if fixed:
            out.append((_term_fixed(ops, x, xmax, cache), q * (1 if g is None else g), term.exp))
        elif g is not None:  # a unit gain: the payload itself (after any structural ops)
            x = x.to(synapse_dtype)
            for op in ops:
                x = apply_op_torch(op, x, False, cache)
            out.append((x, 1, 0))
        else:
            out.append((apply_term_torch(term, x.to(synapse_dtype), False, cache), 1, 0))
    return out


#: registered models (outside the MSAT family) whose fixed model has a fused kernel in :mod:`~msat_lava.dynamics.fused`;
#: their float model, and every other model, takes the generic path (module docstring).
FIXED_KERNELS = {"dtif-r"}


def _uniform_model(spec) -> bool:
    """True when the spec's model gives one θ̂ per step for the whole layer with the default quanta
    (``DynamicsModel.fixed_uniform_step``): its fixed model runs in :func:`fused.uniform_fixed_chunk`."""
    model = models.get(spec.mode)
    return (type(model).fixed_uniform_step is not models.DynamicsModel.fixed_uniform_step
            and type(model).fixed_quanta is models.DynamicsModel.fixed_quanta)


def _path(spec, fixed: bool) -> str:
    """'msat' (fused MSAT-family kernels), 'dtif' (fused DTIF-R fixed kernel), 'uniform' (fused kernel of a model
    with one θ̂ per step: BSNN-R fixed) or 'generic' (the step function)."""
    if models.has_fused(spec.mode):
        return "msat"
    if fixed and spec.mode in FIXED_KERNELS:
        return "dtif"
    if fixed and _uniform_model(spec):
        return "uniform"
    return "generic"


def _dtif_tables(spec, tables) -> tuple:
    """(variant code, (x̂_max, o, s, G, θ̂_min), A, D) for :func:`fused.dtif_fixed_chunk` from the layer's table,
    A and D being neuron._interp_tables of it (what the step function's interpolation reads)."""
    dyn.check_tables(spec, tables)
    g_a, g_d = dyn._interp_tables(tables.g_lut, tables.shift, tables.guard)
    dp = np.array([tables.x_max, tables.offset, tables.shift, tables.guard, tables.theta_min], dtype=np.int64)
    return fused.DTIF_VARIANTS[spec.params.variant], dp, g_a, g_d


def _fixed_buffers(tc: int, size: int, wide: bool) -> tuple[np.ndarray, np.ndarray]:
    """(payload (tc, size), per-block maxima) for a fused fixed kernel: payloads are exact integers, in float32
    unless ``wide`` (a payload may reach 2^24)."""
    return (np.empty((tc, size), dtype=np.float64 if wide else np.float32),
            np.zeros(-(-size // fused.BLOCK), dtype=np.int64))


def _phys(lay: _Layout, state: dict, key: str) -> np.ndarray:
    """A neuron stage's state array ``key`` ('v' | 'count') as a flat physical numpy array (B·N,)."""
    if "st" in state:
        import torch

        return lay.to_phys(torch.from_numpy(getattr(state["st"], key)))
    return state[key]


def _chunk_input(cx, terms: list, shape: tuple, fixed: bool):
    """x(t) of a chunk's steps, (tc, B, *shape) in the logical layout (contiguous, or the base broadcast over
    the chunk when no term is left): int64 (fixed) or float64.

    Fixed: the integers of the plain engine (base + Σ_k round_shift(a_k·q_k, exp_k)), computed in int64, where
    every sum is exact in any order. Float: base + a_1 + a_2 + … in float64 in the plain engine's order of
    additions (``reference.stage_input``), so each x(t) differs from the plain engine's only as far as the
    batched convolutions' sums do."""
    import torch

    if fixed:
        x = None
        for a, q, e in terms:
            t = a.reshape(shape).to(torch.int64, memory_format=torch.contiguous_format, copy=True)
            mul, add, sh = fused.shift_params(q, e)  # the kernels' round-shift: (a·mul + add) >> sh
            if mul != 1:
                t.mul_(mul)
            if add:
                t.add_(add)
            if sh:
                t.bitwise_right_shift_(sh)
            x = t if x is None else x.add_(t)
        base = cx.to(torch.int64)
        return base.unsqueeze(0).expand(shape) if x is None else x.add_(base)  # no terms: base, read-only
    if not terms:
        return cx.to(torch.float64).unsqueeze(0).expand(shape)
    x = torch.empty(shape, dtype=torch.float64)
    a, _, _ = terms[0]
    torch.add(cx, a.reshape(shape), out=x)
    for a, _, _ in terms[1:]:
        x.add_(a.reshape(shape))
    return x


def _generic_chunk(s, lay: _Layout, state: dict, cx, tc: int, b: int, fixed: bool, terms: list, pay_dtype, ids,
                   seed: int, psums: dict | None) -> tuple[tuple[Any, int, float], bool]:
    """One chunk of a neuron stage whose model has no fused kernel: x(t) = base + Σ_k term_k(t) from the chunk's
    batched terms, then, step by step, the very step function of the plain engine
    (:func:`~msat_lava.dynamics.neuron.step_fixed` / :func:`~msat_lava.dynamics.neuron.step_float`) on numpy
    arrays of the logical layout (numpy runs these elementwise rules 1.5–2.5× faster than torch on CPU; the
    rules give the same values in both backends). Returns the chunk's payload entry (tensor, q = 1, max payload)
    and whether every payload of the chunk is 0."""
    import torch

    spec = s.spec
    shape = (tc, b) + tuple(s.shape)
    xs = _chunk_input(cx, terms, shape, fixed).numpy()
    f32 = not fixed and pay_dtype == torch.float32
    buf = np.empty(shape, dtype=np.float32 if f32 else np.float64)  # payloads, logical layout
    st = state["st"]
    for k in range(tc):
        if fixed:
            st, o = dyn.step_fixed(spec, s.luts, st, xs[k], ids, s.index, seed)
            state["sat"] += int(np.count_nonzero(np.abs(st.v) >= spec.v_max))
        else:
            st, o = dyn.step_float(spec, st, xs[k], ids, s.index, seed)
        buf[k] = o.payload
    state["st"] = st
    out = torch.from_numpy(buf).view((tc * b,) + tuple(s.shape))
    if not buf.any():  # nothing to convert: the consumers leave this stage's terms out
        return (out, 1, 0.0), True
    top = float(buf.max()) if fixed else 0.0
    if fixed and top < _F32_LIMIT:
        f32 = True
    # one pass to the engine's layout (channels-last) and payload dtype, only for a chunk with spikes
    out = out.to(torch.float32 if f32 else torch.float64,
                 memory_format=torch.channels_last if lay.image else torch.contiguous_format)
    if psums is not None:
        psums[s.name] += lay.to_phys(torch.from_numpy(buf.sum(axis=0, dtype=np.float64)))
    return (out, 1, top), False


def run_batch(program: Program, inp, steps: int, fixed: bool, seed: int, ids, cache: dict, bar,
              record: Sequence[str], traces: dict, lo: int, sums_at: Sequence[int], membrane_at: Sequence[int],
              synapse_dtype, chunk: int = DEFAULT_CHUNK) -> dict:
    """One batch through the fast engine; same arguments and result as ``reference._run_batch`` (CPU only)."""
    import torch

    from msat_lava.reference import constant_input

    if inp.device.type != "cpu":
        raise ValueError("the fast engine runs on CPU; use engine='step' on other devices")
    if steps >= 1 << 21:
        raise ValueError(f"the fast engine runs at most 2^21 − 1 steps, got {steps}")  # fused._floor_div
    b = int(inp.shape[0])
    hi = lo + b
    pay_dtype = torch.float32 if fixed or synapse_dtype == torch.float32 else torch.float64
    like = inp.to(torch.int64) if fixed else inp
    out = program.readout
    n_out = int(np.prod(out.shape))
    layouts, states, base, params, paths = {}, {}, {}, {}, {}
    for s in program.stages:
        lay = _Layout(s.shape, b)
        layouts[s.name] = lay
        cx = constant_input(s, inp, fixed, cache)
        if s.kind == "neuron":
            paths[s.name] = _path(s.spec, fixed)
        if s.kind == "neuron" and paths[s.name] == "generic":
            # the generic path: the state of dynamics.neuron (numpy, logical layout), stepped by its step function
            base[s.name] = cx
            st = (dyn.init_fixed_state((b,) + s.shape, np.zeros(0, np.int64), s.spec) if fixed
                  else dyn.init_float_state((b,) + s.shape, np.zeros(0, np.float64), s.spec))
            states[s.name] = dict(st=st, sat=0)
        elif s.kind == "neuron":
            spec = s.spec
            m = lay.size
            if fixed:
                base[s.name] = lay.to_phys(cx).astype(np.int64)
                v = np.full(m, spec.v_init_fixed, dtype=np.int64)
                states[s.name] = dict(v=v, vsum=np.zeros(m, np.int64), count=np.zeros(m, np.int64),
                                      sat=np.zeros(m, np.int64))
                if paths[s.name] == "dtif":
                    params[s.name] = _dtif_tables(spec, s.luts)
                elif paths[s.name] == "uniform":
                    dyn.check_tables(spec, s.luts)
                    params[s.name] = models.get(spec.mode)
                else:
                    params[s.name] = _lut_tables(s.luts if spec.mode != "const" else None)
            else:
                base[s.name] = np.ascontiguousarray(lay.to_phys(cx), dtype=np.float64)
                v = np.zeros(m, np.float64)
                if spec.v_init:
                    v = v + spec.v_init * spec.lam
                states[s.name] = dict(v=v, vsum=np.zeros(m, np.float64), count=np.zeros(m, np.int64))
                params[s.name] = _float_params(spec)
        elif s.kind == "lipool":
            src = program.stage(s.source)
            geom = lip.lipool_geometry(src.shape[1:], s.kernel, s.stride, s.padding)
            states[s.name] = (geom, lip.init_lipool_state(geom, b, src.shape[0], like, integer=fixed))
        else:
            base[s.name] = cx.reshape(b, n_out)
    acc = torch.zeros((b, n_out), dtype=torch.float64)
    preds = np.zeros((steps, b), dtype=np.int64)
    readout = np.zeros((steps, b, n_out), dtype=np.float64)
    psums = {s.name: np.zeros(layouts[s.name].size) for s in program.neuron_stages} if sums_at else {}
    sums: dict[int, dict[str, np.ndarray]] = {}
    membrane: dict[int, dict[str, np.ndarray]] = {}
    # the last stage reading each stage's payloads: a chunk's payloads are dropped once read for the last time
    last_use = {src: i for i, st_ in enumerate(program.stages) for src in program.sources_of(st_) if src != "input"}
    drop_after = {}
    for src, i in last_use.items():
        drop_after.setdefault(i, []).append(src)
    sids = np.ascontiguousarray(ids.cpu().numpy(), dtype=np.int64)
    gates = {s.name: _gate(s, layouts[s.name], sids, seed) for s in program.neuron_stages
             if paths[s.name] != "generic"}

    bias_off = None if out.bias_gate is None else torch.as_tensor(
        np.asarray(out.bias_fixed if fixed else out.bias_float, dtype=np.float64)).reshape(n_out)

    previous_threads = fused.set_threads(torch.get_num_threads())
    try:
        for t0, t1 in chunk_bounds(steps, chunk, list(sums_at) + list(membrane_at)):
            tc = t1 - t0
            payload: dict[str, Any] = {}
            zero: set[str] = set()  # generic stages whose payloads are all 0 in this chunk (their terms are 0)
            for si, s in enumerate(program.stages):
                lay = layouts[s.name]
                if s.kind == "lipool":
                    geom, st = states[s.name]
                    src, q, _ = payload[s.source]
                    c_in = int(src.shape[1])
                    xs = src.contiguous().reshape(tc, b * c_in, -1).numpy()  # NCHW planes of the chunk's steps
                    acc_np = st.acc.numpy().reshape(b * c_in, -1, st.acc.shape[-1])  # a view: updated in place
                    y = np.empty((tc, b * c_in, acc_np.shape[1]), dtype=np.float64)
                    fused.lipool_chunk(xs, geom.index.reshape(acc_np.shape[1:]), geom.valid.reshape(acc_np.shape[1:]),
                                       acc_np, y)
                    ys = torch.from_numpy(y).reshape((tc * b,) + s.shape)
                    top = float(y.max()) if fixed else 0.0
                    payload[s.name] = (ys.to(pay_dtype if top < _F32_LIMIT else torch.float64), q, top)
                elif s.kind == "readout":
                    xin = base[s.name].unsqueeze(0).expand(tc, b, n_out)
                    for a, q, e in _source_terms(s, payload, fixed, synapse_dtype, cache, zero):
                        part = _round_shift_torch(a.to(torch.float64) * q, e) if fixed else a.to(torch.float64)
                        xin = xin + part.reshape(tc, b, n_out)
                    for k in range(tc):
                        if s.bias_gate is not None and not s.bias_gate(t0 + k):  # as reference._run_batch
                            acc = acc + (xin[k] - bias_off)
                        else:
                            acc = acc + xin[k]
                        readout[t0 + k] = acc.numpy()
                    preds[t0:t1] = torch.argmax(torch.from_numpy(readout[t0:t1]), dim=2).numpy()
                elif paths[s.name] == "generic":
                    payload[s.name], silent = _generic_chunk(
                        s, lay, states[s.name], base[s.name], tc, b, fixed,
                        _source_terms(s, payload, fixed, synapse_dtype, cache, zero), pay_dtype, sids, seed,
                        psums if sums_at else None)
                    if silent:
                        zero.add(s.name)
                else:
                    spec = s.spec
                    terms = _source_terms(s, payload, fixed, synapse_dtype, cache, zero)
                    if len(terms) > 2:  # fold the extra terms into one (fixed: round-shifted, exp 0)
                        rest = sum(_round_shift_torch(a.to(torch.float64) * q, e) if fixed else a.to(torch.float64)
                                   for a, q, e in terms[1:])
                        terms = [terms[0], (rest, 1, 0)]
                    arrs = [(lay.chunk_to_phys(a.contiguous(memory_format=torch.channels_last) if lay.image else a,
                                               tc), q, e) for a, q, e in terms]
                    if not arrs:
                        arrs = [(np.zeros((tc, lay.size), dtype=np.float32), 1, 0)]
                    a0, q0, e0 = arrs[0]
                    a1, q1, e1 = arrs[-1]
                    gate = gates[s.name]
                    plain = spec.gamma == 1 and t0 >= gate[0]
                    st = states[s.name]
                    gate_code = 1 if spec.sc_gate == "code" else 0
                    mode = fused.MODE_CODES.get(spec.mode, -1)
                    if fixed:
                        sp0, sp1 = np.array(fused.shift_params(q0, e0)), np.array(fused.shift_params(q1, e1))
                    if paths[s.name] == "dtif":
                        spikes_only = spec.params.variant != "b"  # payload 2^F per spike: spike counts, q = 2^F
                        q_out = spec.one if spikes_only else 1
                        wide = spec.gamma * (1 if spikes_only else spec.one) >= 1 << 24
                        pay, pmax = _fixed_buffers(tc, lay.size, wide)
                        fused.dtif_fixed_chunk(a0, sp0, a1, sp1, len(arrs), base[s.name], st["v"], st["vsum"],
                                               st["count"], st["sat"], t0, spec.one, spec.v_max, spec.gamma, gate,
                                               gate_code, spikes_only, *params[s.name], pay, pmax)
                        top = float(pmax.max())
                    elif paths[s.name] == "uniform":
                        steps_k = [params[s.name].fixed_uniform_step(spec, s.luts, t) for t in range(t0, t1)]
                        integ = np.array([int(bool(i)) for i, _, _ in steps_k], dtype=np.int64)
                        fire = np.array([int(bool(f)) for _, f, _ in steps_k], dtype=np.int64)
                        theta = np.array([int(th) for _, _, th in steps_k], dtype=np.int64)
                        q_out = 1
                        wide = spec.gamma * int(theta.max(initial=0)) >= 1 << 24
                        pay, pmax = _fixed_buffers(tc, lay.size, wide)
                        fused.uniform_fixed_chunk(a0, sp0, a1, sp1, len(arrs), base[s.name], st["v"], st["vsum"],
                                                  st["count"], st["sat"], t0, spec.v_max, spec.gamma, gate,
                                                  gate_code, integ, fire, theta, pay, pmax)
                        top = float(pmax.max())
                    elif fixed:
                        spikes_only = spec.mode == "const"
                        q_out = spec.theta_const_fixed if spikes_only else 1
                        wide = spec.gamma * (1 if spikes_only else spec.one) >= 1 << 24
                        pay, pmax = _fixed_buffers(tc, lay.size, wide)
                        if plain:
                            fused.fixed_chunk_plain(a0, sp0, a1, sp1, len(arrs), base[s.name], st["v"], st["vsum"],
                                                    st["count"], st["sat"], t0, mode, spec.theta_const_fixed,
                                                    spec.one, spec.v_max, spikes_only, *params[s.name], pay, pmax)
                        else:
                            fused.fixed_chunk(a0, sp0, a1, sp1, len(arrs), base[s.name], st["v"], st["vsum"],
                                              st["count"], st["sat"], t0, mode, spec.theta_const_fixed, spec.one,
                                              spec.v_max, spec.gamma, gate, gate_code, spikes_only,
                                              *params[s.name], pay, pmax)
                        top = float(pmax.max())
                    else:
                        q_out, top = 1, 0.0
                        pay = np.empty((tc, lay.size), dtype=np.float32 if pay_dtype == torch.float32
                                       else np.float64)
                        if plain:
                            fused.float_chunk_plain(a0, a1, len(arrs), base[s.name], st["v"], st["vsum"],
                                                    st["count"], t0, mode, spec.lam, spec.k_const * spec.lam,
                                                    params[s.name], pay)
                        else:
                            fused.float_chunk(a0, a1, len(arrs), base[s.name], st["v"], st["vsum"], st["count"],
                                              t0, mode, spec.lam, spec.k_const * spec.lam, spec.gamma, gate,
                                              gate_code, params[s.name], pay)
                    if fixed and top == 0.0:
                        zero.add(s.name)  # no spike in the chunk: its consumers leave its terms out
                    if sums_at:
                        psums[s.name] += pay.sum(axis=0, dtype=np.float64) * q_out
                    payload[s.name] = (lay.chunk_from_phys(pay, tc), q_out, top)
                if s.name in traces:
                    if s.kind == "readout":
                        vals = readout[t0:t1].reshape((tc, b) + s.shape)
                    else:
                        p, q, _ = payload[s.name]
                        vals = p.contiguous().reshape((tc, b) + s.shape).numpy() * q
                    traces[s.name][t0:t1, lo:hi] = vals
                for name in drop_after.get(si, ()):
                    payload.pop(name, None)
            if t1 in sums_at:
                sums[t1] = {name: layouts[name].from_phys(v) for name, v in psums.items()}
            if t1 in membrane_at:
                membrane[t1] = {s.name: layouts[s.name].from_phys(
                    _phys(layouts[s.name], states[s.name], "v") / float(s.spec.one if fixed else s.spec.lam))
                    for s in program.neuron_stages}
            if bar is not None:
                bar.update(b * tc)
    finally:
        fused.set_threads(previous_threads)
    counts = {s.name: layouts[s.name].from_phys(_phys(layouts[s.name], states[s.name], "count"))
              for s in program.neuron_stages}
    saturated = {s.name: int(np.sum(states[s.name]["sat"])) if fixed else 0 for s in program.neuron_stages}
    return {"preds": preds, "readout": readout.reshape(steps, b, n_out), "sums": sums, "membrane": membrane,
            "counts": counts, "saturated": saturated}
