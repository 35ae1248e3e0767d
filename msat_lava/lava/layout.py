"""What each Lava process of a Program declares: its ports and Vars, with shapes and precisions from the spec
(numpy only, no Lava import).

:mod:`msat_lava.lava.procs.process` creates one Lava ``InPort`` / ``OutPort`` / ``Var`` per :class:`Member`
listed here, and every process model declares one Lava type per member with the member's precision
(:meth:`msat_lava.lava.procs.models._Declaring.for_process`), so the process is the interface and the numbers
come from one place. Names are Python identifiers built from the stage's index (stage names need not be):

* state Vars, per stage i (written every step by the CPU model, readable with ``Var.get()``; a hardware model
  keeps them in its neuron state):

  =================  ==========================  ==================================================================
  name               stage kind                  value, precision (fixed point)
  =================  ==========================  ==================================================================
  ``v_i``            neuron                      v̂, signed ``spec.state_bits`` (saturating)
  ``vsum_i``         neuron                      Ŝ = Σ v̂ since the sample began, signed state_bits + ⌈log2 T⌉
  ``count_i``        neuron                      n, gated spikes since the sample began, unsigned bits(Γ·T)
  ``t_i``            neuron                      t, steps since the sample began (0..T), unsigned bits(T); shape (1,)
  ``acc_i``          lipool                      window accumulators A (C, Ho, Wo, kH·kW), signed bits(T·P_source)
  ``acc_i``          readout                     the accumulated readout, signed 64 (the reference's int64)
  =================  ==========================  ==================================================================

* read-only Vars (the program's constants, as a hardware model would load them): ``w<k>_i`` the weighted op's
  mantissas of term k (int8: ``netx_export.network.MANTISSA_MIN..MAX``; a scalar gain has shape (1,)),
  ``e<k>_i`` its exponent (shape (1,), signed bits of ``EXPONENT_MIN..MAX``), ``bias_i`` b̂ (neuron: signed
  state_bits; readout: 64), and a neuron stage's tables: one Var per array field of its tables dataclass
  (``sig_lut_i``, ``sp_lut_i``, ``det_lut_i`` for MSAT, ``g_lut_i`` for DTIF-R …, precision the array's
  dtype) and ``lutc_i``, the tables' integer constants in field order (:func:`table_constants`);
* ports: ``in_input`` / ``in_<j>`` one per distinct source outside the process (precision the source's payload
  width), ``out_i`` per stage a later process reads, ``rec_i`` per recorded stage (its payload; the readout's
  accumulator): recording is an ``OutPort`` that the builder taps (:mod:`msat_lava.lava.build`).

Payload widths (LOIHI2.md §3): input p_in ∈ ±(2^(F_in+7) − 1) signed F_in + 8 bits; a neuron stage s·θ̂ ≤ Γ·2^F
unsigned bits(Γ·2^F) (13 for F = 12, Γ = 1); a LIPool output ∈ [0, P_source], its source's width.
Float models carry float64 raw-unit state and payloads and declare no precision (Lava's convention for
floating_pt models); the constants stay the fixed-point integers.

The sample reset is ``LIFReset``-style: every stateful stage resets at the start of each sample window,
``time_step % reset_interval == reset_offset`` with ``reset_interval`` = T, ``reset_offset`` = 1 (mod T).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Member", "input_bits", "payload_bits", "stage_state", "stage_constants", "table_constants",
           "source_port_name", "STATE_ROLES", "READOUT_BITS"]

#: the reference's readout accumulator (and its bias) is int64
READOUT_BITS = 64
#: state Var roles per stage kind, in declaration order
STATE_ROLES = {"neuron": ("v", "vsum", "count", "t"), "lipool": ("acc",), "readout": ("acc",)}


@dataclass(frozen=True)
class Member:
    """One port or Var of a process.

    ``kind``: 'in' | 'out' | 'var'; ``stage``: the stage it belongs to ('input' for the image source, the source
    stage for an input port); ``role``: v, vsum, count, t, acc, w<k>, e<k>, bias, a table field, lutc, payload,
    record, data; ``bits``: declared precision (None: float); ``signed``; ``integer``: integer (True) or float
    values; ``scalar``: a (1,)-shaped Var the models hold as a Python int (``t``); ``init``: a Var's initial
    value; ``read_only``: a constant of the program (the CPU model computes with the same values from its stage
    parameters and never reads it back)."""

    name: str
    kind: str
    stage: str
    role: str
    shape: tuple[int, ...]
    bits: int | None
    signed: bool
    integer: bool = True
    scalar: bool = False
    init: Any = 0
    read_only: bool = False


def _signed_bits(v: int) -> int:
    return int(abs(int(v))).bit_length() + 1


def _log2_ceil(n: int) -> int:
    return max(1, math.ceil(math.log2(max(2, int(n)))))


def input_bits(input_frac_bits: int) -> int:
    """Signed width of p_in ∈ ±(2^(F_in+7) − 1): F_in + 8 (16 for F_in = 8)."""
    return _signed_bits((1 << (int(input_frac_bits) + 7)) - 1)


def payload_max(stage: Any, by_name: dict[str, Any], input_frac_bits: int) -> int:
    """Largest payload a source sends: p_in's bound, Γ·2^F, or (LIPool) its source's."""
    if stage is None:
        return (1 << (int(input_frac_bits) + 7)) - 1
    if stage.kind == "neuron":
        return int(stage.spec.gamma) << int(stage.spec.frac_bits)
    if stage.kind == "lipool":
        return payload_max(by_name.get(stage.source), by_name, input_frac_bits)
    raise ValueError(f"stage {stage.name!r} ({stage.kind}) sends no payload to other stages")


def payload_bits(stage: Any, by_name: dict[str, Any], input_frac_bits: int) -> tuple[int, bool]:
    """(bits, signed) of what ``stage`` sends (None: the image source); the readout: its 64-bit accumulator."""
    if stage is None:
        return input_bits(input_frac_bits), True
    if stage.kind == "readout":
        return READOUT_BITS, True
    return int(payload_max(stage, by_name, input_frac_bits)).bit_length(), False


def source_port_name(source: str, by_name: dict[str, Any]) -> str:
    return "in_input" if source == "input" else f"in_{by_name[source].index}"


def _lipool_shape(stage: Any, src_shape: Sequence[int]) -> tuple[int, ...]:
    from msat_lava.dynamics import lipool as lip

    geom = lip.lipool_geometry(tuple(src_shape[1:]), stage.kernel, stage.stride, stage.padding)
    ho, wo = geom.out_hw
    return (int(src_shape[0]), ho, wo, int(stage.kernel[0] * stage.kernel[1]))


def stage_state(stage: Any, *, steps: int, fixed: bool, src_shape: Sequence[int] | None = None,
                source_payload_max: int | None = None) -> list[Member]:
    """The state Vars of one stage (module docstring's table), initialised to the state a sample starts from."""
    i, shape, steps = stage.index, tuple(int(v) for v in stage.shape), int(steps)
    bits = (lambda b: b) if fixed else (lambda b: None)
    if stage.kind == "neuron":
        spec = stage.spec
        v0 = spec.v_init_fixed if fixed else spec.v_init * spec.lam
        sb = int(spec.state_bits)
        return [
            Member(f"v_{i}", "var", stage.name, "v", shape, bits(sb), True, fixed, init=np.full(shape, v0)),
            Member(f"vsum_{i}", "var", stage.name, "vsum", shape, bits(sb + _log2_ceil(steps)), True, fixed,
                   init=np.zeros(shape)),
            Member(f"count_{i}", "var", stage.name, "count", shape, (int(spec.gamma) * steps).bit_length(),
                   False, True, init=np.zeros(shape)),
            Member(f"t_{i}", "var", stage.name, "t", (1,), steps.bit_length(), False, True, scalar=True, init=0),
        ]
    if stage.kind == "lipool":
        if src_shape is None or source_payload_max is None:
            raise ValueError(f"LIPool stage {stage.name!r}: the source shape and payload bound are needed")
        acc = _lipool_shape(stage, src_shape)
        return [Member(f"acc_{i}", "var", stage.name, "acc", acc, bits(_signed_bits(steps * source_payload_max)),
                       True, fixed, init=np.zeros(acc))]
    return [Member(f"acc_{i}", "var", stage.name, "acc", shape, bits(READOUT_BITS), True, fixed,
                   init=np.zeros(shape))]


def table_constants(tables: Any) -> tuple[list[str], list[str]]:
    """(array fields, integer-constant fields) of a neuron stage's tables dataclass, in field order."""
    if tables is None:
        return [], []
    names = [f.name for f in dataclasses.fields(tables)] if dataclasses.is_dataclass(tables) else list(vars(tables))
    arrays, consts = [], []
    for n in names:
        v = getattr(tables, n)
        if isinstance(v, np.ndarray):
            arrays.append(n)
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            consts.append(n)
    return arrays, consts


def _weighted_op(term: Any) -> Any:
    for op in term.ops:
        if op.kind in ("conv", "linear", "gain"):
            return op
    return None


def term_constants(stage: Any, *, terms: Any = None, index: int | None = None) -> list[Member]:
    """Read-only Vars ``w<k>_<i>`` (the weighted op's mantissas) and ``e<k>_<i>`` (the term's shift) of a stage's
    terms (``terms``: a subset, default all; ``index``: only term k = index)."""
    from netx_export.network import EXPONENT_MAX, EXPONENT_MIN, MANTISSA_MAX, MANTISSA_MIN

    i = stage.index
    wbits = int(MANTISSA_MAX - MANTISSA_MIN).bit_length()
    ebits = max(_signed_bits(EXPONENT_MIN), _signed_bits(EXPONENT_MAX))
    out: list[Member] = []
    for k, term in enumerate(stage.terms if terms is None else terms):
        if index is not None and k != index:
            continue
        op = _weighted_op(term)
        if op is not None:
            mant = np.asarray(op.mant, dtype=np.int64)
            mant = mant.reshape(1) if mant.ndim == 0 else mant
            out.append(Member(f"w{k}_{i}", "var", stage.name, f"w{k}", tuple(mant.shape), wbits, True,
                              init=mant, read_only=True))
        out.append(Member(f"e{k}_{i}", "var", stage.name, f"e{k}", (1,), ebits, True,
                          init=np.array([int(term.exp)]), read_only=True))
    return out


def term_bound(term: Any, source_payload_max: int) -> int:
    """A bound on |term contribution| (after the round-shift) for source payloads in [0, source_payload_max]
    (the image source: |p_in| ≤ that bound): the bound pushed through the ops (conv/linear: the largest row
    Σ|mantissa|; gain: |g|; sum-pool: its area; the others move values), then the shift."""
    b = int(source_payload_max)
    for op in term.ops:
        if op.kind in ("conv", "linear"):
            mant = np.abs(np.asarray(op.mant, dtype=np.int64))
            b *= int(mant.reshape(mant.shape[0], -1).sum(axis=1).max()) if mant.size else 0
        elif op.kind == "gain":
            b *= int(np.max(np.abs(np.asarray(op.mant, dtype=np.int64))))
        elif op.kind == "sumpool":
            b *= int(op.params["kernel"][0] * op.params["kernel"][1])
    e = int(term.exp)
    return b << e if e >= 0 else (b + (1 << (-e - 1))) >> -e


def term_bits(term: Any, by_name: dict[str, Any], input_frac_bits: int) -> int:
    """Signed width of a term contribution (the port a separate synapse process sends on and its target group
    receives on), from the bound of its source's payload (``by_name``: the program's stages)."""
    src = None if term.source == "input" else by_name[term.source]
    return _signed_bits(term_bound(term, payload_max(src, by_name, input_frac_bits)))


def stage_constants(stage: Any, *, terms: bool = True) -> list[Member]:
    """The read-only Vars of one stage: term mantissas and exponents (``terms``: False when separate synapse
    processes hold them), the bias, the neuron's tables."""
    if stage.kind == "lipool":
        return []
    i = stage.index
    out: list[Member] = term_constants(stage, terms=stage.terms if terms else ())
    bias = np.asarray(stage.bias_fixed, dtype=np.int64).reshape(tuple(stage.shape))
    bbits = int(stage.spec.state_bits) if stage.kind == "neuron" else READOUT_BITS
    out.append(Member(f"bias_{i}", "var", stage.name, "bias", tuple(bias.shape), bbits, True, init=bias,
                      read_only=True))
    if stage.kind == "neuron":
        arrays, consts = table_constants(stage.luts)
        for n in arrays:
            arr = np.asarray(getattr(stage.luts, n))
            bits = 8 * arr.dtype.itemsize if np.issubdtype(arr.dtype, np.integer) else None
            out.append(Member(f"{n}_{i}", "var", stage.name, n, tuple(arr.shape), bits, True,
                              bits is not None, init=arr.astype(np.int64 if bits else np.float64),
                              read_only=True))
        if consts:
            vals = np.array([int(getattr(stage.luts, n)) for n in consts], dtype=np.int64)
            out.append(Member(f"lutc_{i}", "var", stage.name, "lutc", (len(consts),),
                              max(32, max(_signed_bits(v) for v in vals)), True, init=vals, read_only=True))
    return out
