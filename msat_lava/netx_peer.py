"""Standard netx (lava-dl) CUBA networks: a validating reader and a batched, bit-exact fixed-point simulator.

This module reads the HDF5 files lava-dl's slayer writes (``layer/<i>`` groups of type ``input``, ``conv``,
``flatten`` and ``dense`` with ``LOIHI``/``CUBA`` neurons) into a typed :class:`NetxNetwork`, and runs B samples
at once in the integer semantics that ``lava.lib.dl.netx.hdf5.Network`` gets from Lava's bit-accurate CPU models
(``PyLifModelBitAcc`` / ``PyLifResetModelBitAcc``, ``PyDenseModelBitAcc``, ``PyConvModelFixed``) under
``Loihi2SimCfg(select_tag='fixed_pt')``. It imports neither Lava nor lava-dl.

Integer semantics (every quantity is an integer; widths as in Lava's models)
---------------------------------------------------------------------------
Processes are the non-flatten layers, numbered k = 0 (input), 1, 2, ... ; time steps t = 1, 2, ... (Lava's
``time_step`` starts at 1). Per neuron of process k, with decays read from the file as ``iDecay`` (12-bit
``du = iDecay - 1``) and ``vDecay`` (12-bit ``dv``)::

    trunc12(x, d)  = sign(x * (4096 - d)) * (|x * (4096 - d)| >> 12)        (product in 64 bits: rounds toward 0)
    a_k(t)         = 0                              for k = 0 (the input layer has no synapse)
                   = Syn_k(s_{k-1}(t - 1)),  s(0) = 0   for k >= 1 (one step of delay per synapse)
    [reset]          u, v <- 0 before the step when t mod I == (r0 + 1 + k) mod I   (reset interval I, offset r0)
    x              = trunc12(u(t-1), iDecay) + (a_k(t) << 6)
    u(t)           = x - 2^24 if x > 2^23;  x + 2^24 if x <= -2^23;  else x      (24-bit wrap, applied once)
    v'             = clip(trunc12(v(t-1), vDecay) + u(t) + (b << 6), -(2^23 - 1), 2^23 - 1)
    s(t)           = v' > (vThMant << 6)                                     (strict; vThMant 17-bit unsigned)
    v(t)           = 0 where s(t) else v'                                    (reset to zero)

``b`` is the 13-bit signed bias mantissa (``bias_mant``, exponent fixed at 6 by netx); for the input layer it is
the external drive (a rate-encoded image: ``Network.in_layer.neuron.bias_mant``). Synapses:

* conv: ``Syn(s) = wrap24(conv2d(s, W, stride, padding, dilation, groups))`` with the file's (O, I/g, kH, kW)
  kernel as a cross-correlation over (C, H, W) (Lava flips the kernel twice), ``wrap24`` the signed 24-bit
  wrap of ``PyConvModelFixed``; no weight exponent (netx passes none).
* dense: Lava's weight scaling. netx's ``optimize_weight_bits`` turns the file's weights w into
  ``w' = w << sb`` with ``weight_exp = -sb`` and ``num_weight_bits``; ``PyDenseModelBitAcc`` then clips w' to
  8 bits for its sign mode and truncates it to ``num_weight_bits`` (``(w' >> n) << n``), so
  ``Syn(s) = (W' s) >> sb`` (an arithmetic shift: floor). A flatten before a dense layer orders (C, H, W)
  row-major (netx's ``transpose([2, 1, 0]).flatten()`` of Lava's (W, H, C) order).

The reader refuses (one-line :class:`~netx_export.errors.FormatError` naming file, layer and field) anything
outside these semantics instead of guessing: links, virtual/external storage and oversized datasets (the shared
metadata scan of :mod:`netx_export.hdf5` runs before any data is read), unknown members, non-integer or
out-of-range weights and biases, decays outside 12 bits, thresholds outside 17 bits, graded spikes, synaptic
delays, refractory delays other than 1 and weight exponents other than 0 (lava-dl ignores both, slayer does not),
and networks whose worst-case synaptic input could leave Lava's 32-bit arithmetic (where this module and Lava
would no longer agree bit for bit).

For the command line (``msat-lava info / run / verify``, :mod:`msat_lava.cli_netx`): :func:`network_file_kind` is
the rule that tells a plain netx file from an msat-lava network file (any ``/msat`` trace → ours; docs/FORMAT.md
§2.1), :func:`read_network_file` reads either kind in one scan, :func:`summary` is the layer table, and
:func:`compare_runs` compares a Lava run (:mod:`msat_lava.lava.netx_peer_lava`) with ours as a
:class:`msat_lava.verify.VerifyReport`.

Layouts: the simulator works in (B, C, H, W) internally; :class:`Recording` hands arrays back in Lava's order
((W, H, C) for conv/input layers, (N,) for dense ones) with time last, like the golden files lava-dl ships.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from netx_export.errors import FormatError

__all__ = [
    "BIAS_MAX", "BIAS_MIN", "VTH_MAX", "CubaNeuron", "InputLayer", "ConvLayer", "DenseLayer", "NetxNetwork",
    "Recording", "NetxSimulator", "read_netx", "cuba_step", "trunc_decay", "lava_dense_weights",
    "reset_steps", "MSAT_FILE", "NETX_FILE", "network_file_kind", "read_network_file", "summary", "compare_runs",
]

#: bias_mant: 13-bit signed.
BIAS_MIN, BIAS_MAX = -(1 << 12), (1 << 12) - 1
#: vThMant: 17-bit unsigned.
VTH_MAX = (1 << 17) - 1
#: u and v: 24-bit signed.
UV_BITS = 24
_M = 1 << (UV_BITS - 1)
#: Largest worst-case |a| (synaptic input) accepted: a << 6 plus two 24-bit states stays inside int32.
A_MAX = ((1 << 31) - (1 << 25)) >> 6
#: Largest number of neurons in one layer and of layers the reader accepts (bounds what a run allocates).
MAX_NEURONS = 1 << 24
MAX_LAYERS = 256
_NEURON_TYPES = ("LOIHI", "CUBA")


# =========================================================================================================
# the typed description
# =========================================================================================================

@dataclass(frozen=True)
class CubaNeuron:
    """CUBA-LIF parameters of one layer, as Lava uses them: u decays by (4096 - i_decay)/4096 (du = i_decay - 1,
    12-bit), v by (4096 - v_decay)/4096 (dv = v_decay, 12-bit), spike when v > vth_mant << 6 (vth 17-bit)."""

    i_decay: int      # 1..4096  (du = i_decay - 1 in 0..4095)
    v_decay: int      # 0..4095  (dv)
    vth_mant: int     # 0..131071
    kind: str = "CUBA"

    @property
    def du(self) -> int:
        return self.i_decay - 1

    @property
    def dv(self) -> int:
        return self.v_decay

    @property
    def vth(self) -> int:
        """The effective threshold compared with v: ``vth_mant << 6``."""
        return self.vth_mant << 6


@dataclass(frozen=True)
class InputLayer:
    """The input layer: CUBA neurons without a synapse, driven by an external bias mantissa per neuron.
    ``transform_weight`` / ``transform_bias`` are the file's input transform, which netx stores but never applies."""

    name: str
    shape: tuple[int, int, int]           # (C, H, W)
    neuron: CubaNeuron
    transform_weight: int | None = None
    transform_bias: int | None = None


@dataclass(frozen=True)
class ConvLayer:
    name: str
    in_shape: tuple[int, int, int]        # (C, H, W)
    shape: tuple[int, int, int]           # (C_out, H_out, W_out)
    weight: np.ndarray = field(repr=False)  # int64 (O, I/groups, kH, kW)
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    bias: np.ndarray = field(repr=False)    # int64 (O,)
    neuron: CubaNeuron

    @property
    def a_bound(self) -> int:
        """Worst-case |synaptic input| of one neuron (binary spikes): max over channels of sum |w|."""
        return int(np.abs(self.weight).reshape(self.weight.shape[0], -1).sum(axis=1).max(initial=0))


@dataclass(frozen=True)
class DenseLayer:
    name: str
    in_features: int
    out_features: int
    weight: np.ndarray = field(repr=False)  # int64 (N, M): the file's weights
    lava_weight: np.ndarray = field(repr=False)  # int64 (N, M): Lava's scaled, clipped, truncated weights
    weight_exp: int                          # Lava's weight exponent (-scale bits)
    num_weight_bits: int
    bias: np.ndarray = field(repr=False)     # int64 (N,)
    neuron: CubaNeuron
    flatten_before: bool = False

    @property
    def shape(self) -> tuple[int]:
        return (self.out_features,)

    @property
    def a_bound(self) -> int:
        total = int(np.abs(self.lava_weight).sum(axis=1).max(initial=0))
        return total << self.weight_exp if self.weight_exp > 0 else -((-total) >> -self.weight_exp)


@dataclass(frozen=True)
class NetxNetwork:
    """A standard netx CUBA network: ``layers[0]`` is the input layer, then conv/dense layers in order."""

    path: str
    layers: tuple
    ts: int | None = None
    t_sample: int | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the input layer."""
        return self.layers[0].shape

    @property
    def input_shape_lava(self) -> tuple[int, int, int]:
        """(W, H, C): the order of ``bias_mant`` in Lava."""
        c, h, w = self.input_shape
        return (w, h, c)

    def describe(self) -> str:
        rows = [f"netx network {os.path.basename(self.path)}: {len(self.layers)} layers"]
        for k, layer in enumerate(self.layers):
            n = layer.neuron
            if isinstance(layer, InputLayer):
                what = f"input {layer.shape}"
            elif isinstance(layer, ConvLayer):
                kh, kw = layer.weight.shape[2:]
                what = (f"conv {layer.in_shape}->{layer.shape} k={kh}x{kw} s={layer.stride} p={layer.padding} "
                        f"d={layer.dilation} g={layer.groups}")
            else:
                what = (f"dense {layer.in_features}->{layer.out_features}{' (flatten)' if layer.flatten_before else ''}"
                        f" weight_exp={layer.weight_exp} bits={layer.num_weight_bits}")
            rows.append(f"  {k}: {what}  iDecay={n.i_decay} vDecay={n.v_decay} vThMant={n.vth_mant}")
        return "\n".join(rows)


# =========================================================================================================
# Lava's arithmetic, in closed form
# =========================================================================================================

def trunc_decay(x, decay: int):
    """``sign(x * (4096 - decay)) * (|x * (4096 - decay)| >> 12)``: Lava's 12-bit decay, rounding toward zero
    (so -5 decayed by half is -2, not -3). Works on numpy int64 arrays, torch int64 tensors and ints."""
    f = 4096 - int(decay)
    if isinstance(x, (int, np.integer)):
        p = int(x) * f
        return -((-p) >> 12) if p < 0 else p >> 12
    p = x * f
    if isinstance(p, np.ndarray):
        return np.sign(p) * (np.abs(p) >> 12)
    return p.sign() * (p.abs() >> 12)


def _wrap24_once(x):
    """Lava's single 24-bit wrap of u: x - 2^24 where x > 2^23, x + 2^24 where x <= -2^23."""
    if isinstance(x, np.ndarray):
        return np.where(x > _M, x - 2 * _M, np.where(x <= -_M, x + 2 * _M, x))
    import torch

    return torch.where(x > _M, x - 2 * _M, torch.where(x <= -_M, x + 2 * _M, x))


def cuba_step(u, v, a, bias, neuron: CubaNeuron):
    """One Lava bit-accurate CUBA step (without the interval reset): returns (u, v, s) from the previous
    (u, v), the synaptic input ``a`` and the bias mantissa ``bias`` (numpy int64 arrays or torch int64 tensors,
    broadcastable). See the module docstring for the equations."""
    u = _wrap24_once(trunc_decay(u, neuron.i_decay) + (a << 6))
    v = trunc_decay(v, neuron.v_decay) + u + (bias << 6)
    v = v.clip(-(_M - 1), _M - 1)
    s = v > neuron.vth
    v = v * (~s) if not isinstance(v, np.ndarray) else np.where(s, 0, v)
    return u, v, s


def reset_steps(steps: int, k: int, interval: int | None, offset: int = 0) -> list[int]:
    """The steps t in 1..steps before which process k's u and v are zeroed by netx's
    ``reset_interval=interval, reset_offset=offset`` (``LIFReset``: t mod I == (offset + 1 + k) mod I)."""
    if interval is None:
        return []
    phase = (offset + 1 + k) % interval
    return [t for t in range(1, steps + 1) if t % interval == phase]


def lava_dense_weights(weight: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The weights a netx dense layer computes with in Lava, from the file's integer weights (N, M).

    netx ``optimize_weight_bits``: sign mode from min/max; ``scale`` = min(127/max, -128/min) (mixed), -256/min
    (inhibitory) or 255/max (excitatory); ``sb = floor(log2(scale)) + is_signed``; ``n`` = the largest n <= 8
    with every weight a multiple of 2^n, minus ``is_signed``; ``num_weight_bits = 8 - sb - n``;
    ``weight_exp = -sb``; ``w' = w << sb``. Lava's ``PyDenseModelBitAcc`` then clips w' to [-256, 255]
    (mixed) / [0, 255] (one sign, on |w'|) and truncates ``(w' >> t) << t`` with
    ``t = 8 - num_weight_bits + is_mixed`` (on |w'| for inhibitory weights).
    Returns (effective weights, weight_exp, num_weight_bits). Raises ValueError where Lava's procedure is not
    defined (all-zero weights: a division by zero; a negative shift: weights above 127 / below -128 in mixed
    mode)."""
    w = np.asarray(weight, dtype=np.int64)
    wmax, wmin = int(w.max()), int(w.min())
    if wmax > 254 and wmin < 0 or wmin < -256 and wmax > 0:  # netx clips before optimising, with a warning
        w = np.clip(w, -256, 254)
        wmax, wmin = int(w.max()), int(w.min())
    if wmax < 0:
        mode, is_signed = "inhibitory", 0
    elif wmin >= 0:
        mode, is_signed = "excitatory", 0
    else:
        mode, is_signed = "mixed", 1
    if mode == "excitatory" and wmax == 0:
        raise ValueError("all weights are zero (Lava's optimize_weight_bits divides by the largest weight)")
    if mode == "mixed":
        scale = min(127 / wmax, -128 / wmin)
    elif mode == "inhibitory":
        scale = -256 / wmin
    else:
        scale = 255 / wmax
    sb = int(np.floor(np.log2(scale))) + is_signed
    if sb < 0:
        raise ValueError(f"weights in [{wmin}, {wmax}] need a negative scale shift ({sb}), which Lava does not define")
    n = 8
    while n > 0:
        if np.all(w % (1 << n) == 0):
            break
        n -= 1
    n -= is_signed
    num_weight_bits = 8 - sb - n
    weight_exp = -sb
    ws = w << sb
    # PyDenseModelBitAcc: the sign mode is determined again from the scaled weights (it is not passed through)
    lmin, lmax = int(ws.min()), int(ws.max())
    lmode = "excitatory" if lmin >= 0 else ("inhibitory" if lmax <= 0 else "mixed")
    mixed = int(lmode == "mixed")
    x = -ws if lmode == "inhibitory" else ws
    x = np.clip(x, -(1 << 8) * mixed, (1 << 8) - 1)
    t = 8 - num_weight_bits + mixed
    x = (x >> t) << t if t >= 0 else x << -t
    if lmode == "inhibitory":
        x = -x
    return x.astype(np.int64), weight_exp, num_weight_bits


# =========================================================================================================
# the reader
# =========================================================================================================

class _NetxReader:
    """Validated, typed access to the netx layout (which stores strings as (1,) byte arrays or object scalars
    and numbers with the dtypes slayer happened to use), on top of :class:`netx_export.hdf5._Reader`."""

    def __init__(self, r):
        self.r = r

    def fail(self, message: str, layer: str | None, field_: str | None) -> FormatError:
        return self.r.fail(message, layer, field_)

    def has(self, group, key: str) -> bool:
        try:
            return key in group
        except Exception:
            return False

    def _read(self, group, key, layer, max_size: int):
        ds, where = self.r.dataset(group, key, layer)
        if ds.shape is None:
            raise self.fail("missing value (null dataset)", layer, where)
        size = int(np.prod(ds.shape)) if ds.shape else 1
        if size > max_size:
            raise self.fail(f"expected at most {max_size} element(s), got shape {ds.shape}", layer, where)
        return ds, where

    def string(self, group, key, layer, choices=None) -> str:
        h5py = _h5py()
        ds, where = self._read(group, key, layer, 1)
        if h5py.check_string_dtype(ds.dtype) is None and ds.dtype.kind != "S":
            raise self.fail(f"expected a string, got dtype {ds.dtype}", layer, where)
        raw = self.r._value(ds, where, layer)
        raw = np.asarray(raw).reshape(-1)[0] if np.ndim(raw) else raw
        try:
            text = raw.decode("ascii") if isinstance(raw, (bytes, np.bytes_)) else str(raw)
        except UnicodeDecodeError:
            raise self.fail("not ASCII", layer, where) from None
        if choices is not None and text not in choices:
            raise self.fail(f"must be one of {list(choices)}, got {text!r}", layer, where)
        return text

    def ints(self, group, key, layer, *, size: int | None = None, lo=None, hi=None) -> np.ndarray:
        """An integer-valued numeric dataset (any int/float dtype), flattened; ``size`` elements if given."""
        ds, where = self._read(group, key, layer, size if size is not None else 8)
        if ds.dtype.kind not in "iuf":
            raise self.fail(f"expected a number, got dtype {ds.dtype}", layer, where)
        value = np.asarray(self.r._value(ds, where, layer)).reshape(-1)
        if size is not None and value.size != size:
            raise self.fail(f"expected {size} value(s), got shape {ds.shape}", layer, where)
        return self._integral(value, lo, hi, layer, where)

    def _integral(self, value, lo, hi, layer, where) -> np.ndarray:
        if value.dtype.kind == "f":
            if not np.all(np.isfinite(value)):
                raise self.fail("contains NaN or infinity", layer, where)
            if not np.all(value == np.round(value)):
                bad = value[value != np.round(value)][0]
                raise self.fail(f"must hold integers (netx stores quantized values; Lava would truncate), got "
                                f"{bad!r}", layer, where)
            if value.size and np.abs(value).max() > 2.0 ** 53:
                raise self.fail("values too large", layer, where)
        value = value.astype(np.int64)
        if value.size and ((lo is not None and value.min() < lo) or (hi is not None and value.max() > hi)):
            raise self.fail(f"values must lie in [{lo}, {hi}], got [{value.min()}, {value.max()}]", layer, where)
        return value

    def integer(self, group, key, layer, lo=None, hi=None) -> int:
        return int(self.ints(group, key, layer, size=1, lo=lo, hi=hi)[0])

    def pair(self, group, key, layer, lo=None, hi=None) -> tuple[int, int]:
        """A scalar (used for both axes) or a (2,) pair, in the file's (H, W) order."""
        ds, where = self._read(group, key, layer, 2)
        value = self.ints(group, key, layer, size=None, lo=lo, hi=hi)
        if value.size == 1:
            return int(value[0]), int(value[0])
        if value.size != 2 or len(ds.shape) != 1:
            raise self.fail(f"expected a scalar or 2 values, got shape {ds.shape}", layer, where)
        return int(value[0]), int(value[1])

    def real(self, group, key, layer) -> float:
        ds, where = self._read(group, key, layer, 1)
        if ds.dtype.kind not in "iuf":
            raise self.fail(f"expected a number, got dtype {ds.dtype}", layer, where)
        value = float(np.asarray(self.r._value(ds, where, layer)).reshape(-1)[0])
        if not math.isfinite(value):
            raise self.fail(f"must be finite, got {value!r}", layer, where)
        return value

    def int_array(self, group, key, layer, *, shapes: Sequence[tuple], lo, hi) -> np.ndarray:
        """A numeric array whose shape (checked from metadata, before reading) is one of ``shapes``."""
        ds, where = self.r.dataset(group, key, layer)
        if ds.shape is None:
            raise self.fail("missing value (null dataset)", layer, where)
        if tuple(ds.shape) not in [tuple(s) for s in shapes]:
            want = " or ".join(str(tuple(s)) for s in shapes)
            raise self.fail(f"expected shape {want}, got {ds.shape}", layer, where)
        if ds.dtype.kind not in "iuf":
            raise self.fail(f"expected numbers, got dtype {ds.dtype}", layer, where)
        value = np.asarray(self.r._value(ds, where, layer))
        shape = value.shape
        return self._integral(value.reshape(-1), lo, hi, layer, where).reshape(shape)


def _h5py():
    import h5py

    return h5py


_NEURON_KEYS = {"type", "iDecay", "vDecay", "vThMant", "refDelay", "wgtExp", "theta", "tauRho", "scaleRho",
                "messageBits", "gradedSpike"}


def _read_neuron(x: _NetxReader, g, layer: str) -> CubaNeuron:
    if not x.has(g, "neuron"):
        raise x.fail("missing (a layer without neurons would get netx's default integrator, whose threshold "
                     "1 << 17 does not fit 17 bits; refused)", layer, f"{g.name.lstrip('/')}/neuron")
    n = x.r.group(g, "neuron", layer)
    where = n.name.lstrip("/")
    extra = sorted(set(n.keys()) - _NEURON_KEYS)
    if extra:
        raise x.fail(f"unsupported neuron field(s) {extra[:4]}", layer, f"{where}/{extra[0]}")
    kind = x.string(n, "type", layer)
    if kind not in _NEURON_TYPES:
        raise x.fail(f"neuron type {kind!r} is not supported (only {list(_NEURON_TYPES)}: CUBA-LIF)", layer,
                     f"{where}/type")
    i_decay = x.integer(n, "iDecay", layer, lo=1, hi=4096)
    v_decay = x.integer(n, "vDecay", layer, lo=0, hi=4095)
    vth = x.integer(n, "vThMant", layer, lo=0, hi=VTH_MAX)
    if x.has(n, "refDelay"):
        ref = x.integer(n, "refDelay", layer)
        if ref != 1:
            raise x.fail(f"refractory delay {ref} refused: lava-dl netx ignores it (Lava's LIF has no refractory "
                         f"period) while slayer and Loihi honour it", layer, f"{where}/refDelay")
    if x.has(n, "wgtExp"):
        wexp = x.integer(n, "wgtExp", layer)
        if wexp != 0:
            raise x.fail(f"weight exponent {wexp} refused: lava-dl netx ignores it, slayer scales by it",
                         layer, f"{where}/wgtExp")
    if x.has(n, "messageBits"):
        bits = x.integer(n, "messageBits", layer)
        if bits != 0:
            raise x.fail(f"graded spikes ({bits} message bits) are not supported (binary spikes only)", layer,
                         f"{where}/messageBits")
    if x.has(n, "gradedSpike"):
        if x.integer(n, "gradedSpike", layer, lo=0, hi=1):
            raise x.fail("graded spikes are not supported (binary spikes only)", layer, f"{where}/gradedSpike")
    for key in ("theta", "tauRho", "scaleRho"):  # slayer's surrogate-gradient parameters: no effect on inference
        if x.has(n, key):
            x.real(n, key, layer)
    return CubaNeuron(i_decay=i_decay, v_decay=v_decay, vth_mant=vth, kind=kind)


def _read_shape(x: _NetxReader, g, layer: str) -> tuple[int, int, int]:
    c, h, w = (int(v) for v in x.ints(g, "shape", layer, size=3, lo=1, hi=MAX_NEURONS))
    if c * h * w > MAX_NEURONS:
        raise x.fail(f"{c}x{h}x{w} neurons, more than {MAX_NEURONS}", layer, f"{g.name.lstrip('/')}/shape")
    return c, h, w


def _check_keys(x: _NetxReader, g, layer: str, allowed: set[str], what: str) -> None:
    extra = sorted(set(g.keys()) - allowed)
    if extra:
        key = extra[0]
        reason = {"delay": "synaptic delays are not supported",
                  "weight_rec": "recurrent weights are not supported"}.get(key, f"not part of a netx {what} layer")
        raise x.fail(f"unsupported member {key!r}: {reason}", layer, f"{g.name.lstrip('/')}/{key}")


def _read_input(x: _NetxReader, g, layer: str) -> InputLayer:
    _check_keys(x, g, layer, {"type", "shape", "neuron", "weight", "bias"}, "input")
    shape = _read_shape(x, g, layer)
    neuron = _read_neuron(x, g, layer)
    tw = x.integer(g, "weight", layer) if x.has(g, "weight") else None
    tb = x.integer(g, "bias", layer) if x.has(g, "bias") else None
    return InputLayer(name=layer, shape=shape, neuron=neuron, transform_weight=tw, transform_bias=tb)


def _conv_out(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _read_conv(x: _NetxReader, g, layer: str, in_shape: tuple[int, int, int]) -> ConvLayer:
    _check_keys(x, g, layer, {"type", "shape", "neuron", "weight", "bias", "stride", "padding", "dilation",
                              "groups", "inChannels", "outChannels", "kernelSize"}, "conv")
    where = g.name.lstrip("/")
    shape = _read_shape(x, g, layer)
    neuron = _read_neuron(x, g, layer)
    stride = x.pair(g, "stride", layer, lo=1, hi=255)
    padding = x.pair(g, "padding", layer, lo=0, hi=255)
    dilation = x.pair(g, "dilation", layer, lo=1, hi=255)
    groups = x.integer(g, "groups", layer, lo=1, hi=1 << 16)
    c_in, h_in, w_in = in_shape
    c_out = shape[0]
    if c_in % groups or c_out % groups:
        raise x.fail(f"groups {groups} must divide the {c_in} input and {c_out} output channels", layer,
                     f"{where}/groups")
    # the kernel's shape from metadata: (O, I/g, kH, kW) or slayer's (O, I/g, kH, kW, 1)
    ds, wwhere = x.r.dataset(g, "weight", layer)
    dshape = tuple(ds.shape or ())
    if len(dshape) not in (4, 5) or (len(dshape) == 5 and dshape[4] != 1) or dshape[:2] != (c_out, c_in // groups):
        raise x.fail(f"expected shape ({c_out}, {c_in // groups}, kH, kW[, 1]), got {ds.shape}", layer, wwhere)
    kh, kw = dshape[2], dshape[3]
    if not (1 <= kh <= 255 and 1 <= kw <= 255):
        raise x.fail(f"kernel {kh}x{kw} out of range", layer, wwhere)
    weight = x.int_array(g, "weight", layer, shapes=[dshape], lo=-256, hi=255).reshape(dshape[:4])
    if x.has(g, "inChannels") and x.integer(g, "inChannels", layer) != c_in:
        raise x.fail(f"does not match the previous layer's {c_in} channels", layer, f"{where}/inChannels")
    if x.has(g, "outChannels") and x.integer(g, "outChannels", layer) != c_out:
        raise x.fail(f"does not match shape's {c_out} channels", layer, f"{where}/outChannels")
    if x.has(g, "kernelSize") and x.pair(g, "kernelSize", layer) != (kh, kw):
        raise x.fail(f"does not match the kernel's {kh}x{kw}", layer, f"{where}/kernelSize")
    want = (c_out, _conv_out(h_in, kh, stride[0], padding[0], dilation[0]),
            _conv_out(w_in, kw, stride[1], padding[1], dilation[1]))
    if shape != want:
        raise x.fail(f"{shape} does not match the convolution of the {in_shape} input, {want}", layer,
                     f"{where}/shape")
    bias = (x.int_array(g, "bias", layer, shapes=[(c_out,)], lo=BIAS_MIN, hi=BIAS_MAX) if x.has(g, "bias")
            else np.zeros(c_out, np.int64))
    return ConvLayer(name=layer, in_shape=in_shape, shape=shape, weight=weight, stride=stride, padding=padding,
                     dilation=dilation, groups=groups, bias=bias.reshape(-1), neuron=neuron)


def _read_dense(x: _NetxReader, g, layer: str, in_features: int, flatten_before: bool) -> DenseLayer:
    _check_keys(x, g, layer, {"type", "shape", "neuron", "weight", "bias", "inFeatures", "outFeatures"}, "dense")
    where = g.name.lstrip("/")
    c, h, w = _read_shape(x, g, layer)
    n_out = c * h * w
    neuron = _read_neuron(x, g, layer)
    if n_out * in_features > 1 << 28:
        raise x.fail(f"a {n_out}x{in_features} weight matrix is implausibly large", layer, f"{where}/weight")
    weight = x.int_array(g, "weight", layer, shapes=[(n_out, in_features), (n_out * in_features,)],
                         lo=-(1 << 15), hi=(1 << 15)).reshape(n_out, in_features)
    if x.has(g, "inFeatures") and x.integer(g, "inFeatures", layer) != in_features:
        raise x.fail(f"does not match the previous layer's {in_features} outputs", layer, f"{where}/inFeatures")
    if x.has(g, "outFeatures") and x.integer(g, "outFeatures", layer) != n_out:
        raise x.fail(f"does not match shape's {n_out} neurons", layer, f"{where}/outFeatures")
    if x.has(g, "bias"):
        bias = x.int_array(g, "bias", layer, shapes=[(), (1,), (n_out,)], lo=BIAS_MIN, hi=BIAS_MAX)
        bias = np.broadcast_to(bias.reshape(-1), (n_out,)).copy()
    else:
        bias = np.zeros(n_out, np.int64)
    try:
        lava_w, wexp, nbits = lava_dense_weights(weight)
    except ValueError as exc:
        raise x.fail(str(exc), layer, f"{where}/weight") from None
    return DenseLayer(name=layer, in_features=in_features, out_features=n_out, weight=weight, lava_weight=lava_w,
                      weight_exp=wexp, num_weight_bits=nbits, bias=bias, neuron=neuron, flatten_before=flatten_before)


def _read_layers(x: _NetxReader) -> NetxNetwork:
    r = x.r
    root = r.f
    for key in root.keys():
        if key not in ("layer", "simulation"):
            raise x.fail(f"unsupported top-level member {key!r}", None, key)
    lg = r.group(root, "layer", None)
    n = len(lg.keys())
    if not 1 <= n <= MAX_LAYERS:
        raise x.fail(f"{n} layers (expected 1..{MAX_LAYERS})", None, "layer")
    groups = r.indexed(lg, None)
    layers: list = []
    flatten_next = False
    prev_shape: tuple | None = None
    for i, g in enumerate(groups):
        name = f"layer {i}"
        kind = x.string(g, "type", name)
        if i == 0 and kind != "input":
            raise x.fail(f"the first layer must be 'input' (with neurons), got {kind!r}", name, f"layer/{i}/type")
        if kind == "input":
            if i != 0:
                raise x.fail("an input layer is only allowed first", name, f"layer/{i}/type")
            layer = _read_input(x, g, name)
            prev_shape = layer.shape
        elif kind == "conv":
            if flatten_next or len(prev_shape) != 3:
                raise x.fail("a conv layer needs a (C, H, W) input (not after flatten or dense)", name,
                             f"layer/{i}/type")
            layer = _read_conv(x, g, name, prev_shape)
            prev_shape = layer.shape
        elif kind == "flatten":
            _check_keys(x, g, name, {"type", "shape"}, "flatten")
            if flatten_next:
                raise x.fail("two flatten layers in a row", name, f"layer/{i}/type")
            if x.has(g, "shape"):
                c, h, w = _read_shape(x, g, name)
                if c * h * w != int(np.prod(prev_shape)):
                    raise x.fail(f"{c * h * w} elements, but the previous layer has {int(np.prod(prev_shape))}",
                                 name, f"layer/{i}/shape")
            flatten_next = True
            continue
        elif kind == "dense":
            if len(prev_shape) == 3 and not flatten_next:
                raise x.fail(f"a dense layer after a {prev_shape} layer needs a flatten layer before it", name,
                             f"layer/{i}/type")
            layer = _read_dense(x, g, name, int(np.prod(prev_shape)), flatten_next)
            flatten_next = False
            prev_shape = layer.shape
        else:
            raise x.fail(f"layer type {kind!r} is not supported (input, conv, flatten, dense)", name,
                         f"layer/{i}/type")
        if not isinstance(layer, InputLayer) and layer.a_bound > A_MAX:
            raise x.fail(f"worst-case synaptic input {layer.a_bound} exceeds {A_MAX}: Lava's 32-bit arithmetic "
                         f"could overflow", name, f"layer/{i}/weight")
        layers.append(layer)
    if flatten_next:
        raise x.fail("the network ends with a flatten layer", f"layer {n - 1}", f"layer/{n - 1}/type")
    ts = t_sample = None
    if x.has(root, "simulation"):
        sim = r.group(root, "simulation", None)
        for key in sim.keys():
            if key not in ("Ts", "tSample"):
                raise x.fail(f"unsupported member {key!r}", None, f"simulation/{key}")
        ts = x.integer(sim, "Ts", None, lo=0, hi=1 << 31) if x.has(sim, "Ts") else None
        t_sample = x.integer(sim, "tSample", None, lo=0, hi=1 << 31) if x.has(sim, "tSample") else None
    return NetxNetwork(path=r.path, layers=tuple(layers), ts=ts, t_sample=t_sample)


def _read_netx_scanned(r, found: Mapping[str, str]) -> NetxNetwork:
    """The netx reader on a file :func:`netx_export.hdf5.read_scanned` has opened and scanned."""
    from netx_export import hdf5

    net = _read_layers(_NetxReader(r))
    # groups whose keys were all checked count as read; datasets must have been opened one by one
    for name, kind in found.items():
        if kind == "group":
            r.visited.add(name)
    hdf5._check_unexpected(r, found)
    return net


def read_netx(path: str | os.PathLike) -> NetxNetwork:
    """Read and validate a standard netx (lava-dl) CUBA network file.

    Raises :class:`FormatError` (file, layer, field) for every problem; the HDF5 metadata scan of
    :mod:`netx_export.hdf5` (links, virtual/external storage, filters, sizes) runs before any data is read,
    and every member of the file must be one the reader understood. A file that :func:`network_file_kind` calls
    an msat-lava network file is refused (naming ``msat``): it is never read as a plain netx file."""
    from netx_export import hdf5

    def body(r, found):
        if network_file_kind(found, r.path) == MSAT_FILE:
            raise FormatError("an msat-lava network file (it has /msat), not a plain netx file: read it with "
                              "netx_export.load (msat-lava info/run/verify detect the kind)", path=r.path,
                              field="msat")
        return _read_netx_scanned(r, found)

    return hdf5.read_scanned(path, body)


# =========================================================================================================
# which reader: an msat-lava network file or a plain netx file
# =========================================================================================================

#: The two kinds of network file ``msat-lava info/run/verify`` accept (:func:`network_file_kind`).
MSAT_FILE, NETX_FILE = "msat-lava", "netx"


def network_file_kind(found: Mapping[str, str], path: str | None = None) -> str:
    """Which reader must read a file, decided from its metadata scan alone (``found``: member path → 'group' |
    'dataset', what :func:`netx_export.hdf5.read_scanned` hands its body). The rule (docs/FORMAT.md §2.1):

    1. A root member named ``msat`` (a group, or anything else) → :data:`MSAT_FILE`. Any trace of the extension
       makes the file ours, and an msat-lava file must be complete: :func:`netx_export.hdf5.read` validates all
       of it (and its content digest) and refuses any damage, a partly emptied ``/msat`` included.
    2. No ``/msat`` and no ``/layer`` → refused: neither kind.
    3. No ``/msat``, and ``layer/0`` has no ``neuron`` group → refused (field ``msat``). msat-lava's writer
       stores the input layer exactly so (FORMAT.md §3: "No ``neuron``"), while lava-dl's input layers carry
       neurons: this is an msat-lava file that lost its ``/msat`` group. Its ``/layer`` is only the max-norm IF
       view of the network, so running it as netx would simulate another network. (A netx input layer without
       neurons could not be run here either: :func:`read_netx` needs its neuron parameters.)
    4. Otherwise → :data:`NETX_FILE`: a plain netx file, which :func:`read_netx` then validates in full
       (members it does not know — a renamed ``/msat`` too — are refused there).

    No marker is added to our files for this: the rule uses what the writer already stores (format 1.x).
    """
    if "msat" in found:
        return MSAT_FILE
    if "layer" not in found:
        raise FormatError("not a network file: no /msat group (msat-lava network file) and no /layer group "
                          "(netx file)", path=path, field="layer")
    if "layer/0" in found and "layer/0/neuron" not in found:
        raise FormatError("no /msat group, and the input layer has no neurons, as msat-lava's writer stores it: "
                          "a damaged msat-lava network file (its /layer is only a netx view of the network; it is "
                          "not run as a plain netx file), or a netx file whose input layer cannot be simulated",
                          path=path, field="msat")
    return NETX_FILE


def read_network_file(path: str | os.PathLike):
    """``(kind, network)``: (:data:`MSAT_FILE`, a :class:`netx_export.network.ConvertedNetwork` read by
    :func:`netx_export.hdf5.read`) or (:data:`NETX_FILE`, a :class:`NetxNetwork`), by :func:`network_file_kind`
    on the one open-and-scan of :func:`netx_export.hdf5.read_scanned`; a netx file is read inside that scan,
    an msat-lava file by its own reader (which opens and scans it again). Every problem is a
    :class:`FormatError` naming the file and field."""
    from netx_export import hdf5

    def body(r, found):
        kind = network_file_kind(found, r.path)
        return kind, (_read_netx_scanned(r, found) if kind == NETX_FILE else None)

    kind, net = hdf5.read_scanned(path, body)
    if kind == MSAT_FILE:
        net = hdf5.read(path)
    return kind, net


# =========================================================================================================
# the layer table (msat-lava info)
# =========================================================================================================

def _signed_bits(lo: int, hi: int) -> int:
    """Bits of the two's-complement integers that hold [lo, hi]."""
    n = 1
    while not (-(1 << (n - 1)) <= lo and hi <= (1 << (n - 1)) - 1):
        n += 1
    return n


def summary(net: NetxNetwork) -> dict:
    """A JSON-serialisable description of a netx network for ``msat-lava info``: one row per process (the
    file's layers without the flatten layers, which are noted on the dense layer after them) and totals.

    Row fields: ``process`` (index k used by ``--record``), ``layer`` (the file's ``layer/<i>``), ``kind``,
    ``connection`` (conv geometry or dense fan-in), ``shape`` (C, H, W) / (N,), ``shape_lava`` (Lava's order),
    ``neurons``, ``weight_shape``, ``weight_min``/``weight_max``, ``weight_bits`` (signed bits of the file's
    integer weights), for dense layers ``lava_weight_exp``/``lava_num_weight_bits`` (netx's weight scaling),
    ``bias_min``/``bias_max`` (mantissas; the input layer's bias is the run's input), ``neuron`` (type,
    ``iDecay``, ``vDecay``, ``du``, ``dv``, ``vThMant``, threshold ``vThMant << 6``), ``a_bound`` (worst-case
    synaptic input)."""
    rows = []
    neurons = weights = 0
    for k, layer in enumerate(net.layers):
        n = layer.neuron
        row: dict = {"process": k, "layer": int(layer.name.split()[-1]), "name": layer.name}
        if isinstance(layer, InputLayer):
            row.update(kind="input", connection="input (bias_mant drive)", shape=list(layer.shape),
                       shape_lava=list(net.input_shape_lava), weight_shape=None, weight_min=None, weight_max=None,
                       weight_bits=None, bias_min=None, bias_max=None, a_bound=0)
        else:
            w = layer.weight
            wmin, wmax = (int(w.min()), int(w.max())) if w.size else (0, 0)
            if isinstance(layer, ConvLayer):
                kh, kw = w.shape[2:]
                conn = (f"conv {'x'.join(map(str, layer.in_shape))}->{'x'.join(map(str, layer.shape))} "
                        f"k={kh}x{kw} s={layer.stride[0]},{layer.stride[1]} p={layer.padding[0]},{layer.padding[1]} "
                        f"d={layer.dilation[0]},{layer.dilation[1]} g={layer.groups}")
                c, h, wd = layer.shape
                row.update(kind="conv", shape=list(layer.shape), shape_lava=[wd, h, c])
            else:
                conn = f"dense {layer.in_features}->{layer.out_features}{' (flatten)' if layer.flatten_before else ''}"
                row.update(kind="dense", shape=[layer.out_features], shape_lava=[layer.out_features],
                           lava_weight_exp=layer.weight_exp, lava_num_weight_bits=layer.num_weight_bits)
            row.update(connection=conn, weight_shape=list(w.shape), weight_min=wmin, weight_max=wmax,
                       weight_bits=_signed_bits(wmin, wmax), bias_min=int(layer.bias.min()),
                       bias_max=int(layer.bias.max()), a_bound=layer.a_bound)
            weights += int(w.size)
        count = int(np.prod(row["shape"]))
        neurons += count
        row["neurons"] = count
        row["neuron"] = {"type": n.kind, "iDecay": n.i_decay, "vDecay": n.v_decay, "du": n.du, "dv": n.dv,
                         "vThMant": n.vth_mant, "threshold": n.vth}
        rows.append(row)
    return {
        "file_kind": NETX_FILE,
        "format": "plain netx file (lava-dl CUBA)",
        "simulator": "msat_lava.netx_peer",
        "lava_equivalent": "lava.lib.dl.netx.hdf5.Network under Loihi2SimCfg(select_tag='fixed_pt')",
        "input": {"shape": list(net.input_shape), "shape_lava": list(net.input_shape_lava),
                  "drive": "bias_mant of the input layer, 13-bit ints in Lava's (W, H, C) order",
                  "bias_range": [BIAS_MIN, BIAS_MAX]},
        "layers": rows,
        "totals": {"processes": len(rows), "file_layers": rows[-1]["layer"] + 1, "neurons": neurons,
                   "weights": weights},
        "simulation": {"Ts": net.ts, "tSample": net.t_sample},
        "reset_interval": None,
        "reset_note": "netx files store no reset interval: netx's reset_interval / reset_offset are run options "
                      "(--reset-interval, --reset-offset)",
    }


# =========================================================================================================
# the batched simulator
# =========================================================================================================

@dataclass
class Recording:
    """What a run recorded, per process k (0 = input): arrays with the batch first and time last, in Lava's
    neuron order ((W, H, C) for input/conv layers, (N,) for dense ones): ``spikes[k]`` bool (B, *shape, T),
    ``u[k]`` / ``v[k]`` int32 (B, *shape, T) (only for the layers asked for)."""

    spikes: dict[int, np.ndarray]
    u: dict[int, np.ndarray]
    v: dict[int, np.ndarray]
    steps: int


class NetxSimulator:
    """Runs a :class:`NetxNetwork` on B samples at once in Lava's exact integer semantics (module docstring).

    ``reset_interval`` / ``reset_offset`` are netx's ``Network(reset_interval=, reset_offset=)``: process k's
    u and v are zeroed before step t when t mod I == (offset + 1 + k) mod I. The synaptic sums run as float32
    (or float64) convolutions/matmuls, exact because the reader bounds every sum (``a_bound``) far below 2^24
    (2^53); the states are int64 tensors holding Lava's 24-bit values."""

    def __init__(self, net: NetxNetwork, *, reset_interval: int | None = None, reset_offset: int = 0,
                 device: str = "cpu"):
        import torch

        if reset_interval is not None and (not isinstance(reset_interval, int) or reset_interval < 1):
            raise ValueError(f"reset_interval must be a positive int or None, got {reset_interval!r}")
        self.net = net
        self.reset_interval = reset_interval
        self.reset_offset = int(reset_offset)
        self.device = torch.device(device)
        self._syn = []
        for layer in net.layers[1:]:
            fdt = torch.float32 if layer.a_bound < (1 << 24) else torch.float64
            w = layer.weight if isinstance(layer, ConvLayer) else layer.lava_weight
            self._syn.append((torch.as_tensor(w, dtype=fdt, device=self.device), fdt))
        # |u| <= a_bound * 64 * 4096 / i_decay (geometric sum); below 2^23 the wrap can never trigger
        self._wrap_needed = [False] + [
            layer.a_bound * 64 * 4096 >= _M * layer.neuron.i_decay for layer in net.layers[1:]]
        self._bias = [None] + [torch.as_tensor(layer.bias, dtype=torch.int64, device=self.device)
                               for layer in net.layers[1:]]

    def _synapse(self, k: int, s):
        import torch
        import torch.nn.functional as F

        layer = self.net.layers[k]
        w, fdt = self._syn[k - 1]
        x = s.to(fdt)
        if isinstance(layer, ConvLayer):
            a = F.conv2d(x, w, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                         groups=layer.groups)
            a = a.to(torch.int64)
            return torch.remainder(a + _M, 2 * _M) - _M  # PyConvModelFixed: signed 24-bit clamp (wrap)
        a = (x.reshape(x.shape[0], -1) @ w.T).to(torch.int64)
        e = layer.weight_exp
        return a << e if e > 0 else a >> -e

    def _step(self, k: int, u, v, a, bias6):
        """:func:`cuba_step` in place on int64 tensors (``bias6`` = bias << 6), skipping work that is exact to
        skip: a decay by 4096 (u becomes the input) or by 0 (no change), and the 24-bit wrap of u when the
        reader's worst-case bound shows it cannot trigger (``_wrap_needed``)."""
        import torch

        neuron = self.net.layers[k].neuron
        fu = 4096 - neuron.i_decay
        if a is None:  # the input layer: no synapse, u stays 0 (it starts at 0 and every reset zeroes it)
            if fu != 4096 and fu != 0:
                u.copy_(torch.div(u * fu, 4096, rounding_mode="trunc"))
            elif fu == 0:
                u.zero_()
        else:
            a6 = a << 6
            if fu == 0:
                u.copy_(a6)
            elif fu == 4096:
                u.add_(a6)
            else:
                u.copy_(torch.div(u * fu, 4096, rounding_mode="trunc")).add_(a6)
            if self._wrap_needed[k]:
                u.copy_(_wrap24_once(u))
        fv = 4096 - neuron.v_decay
        if fv == 0:
            v.copy_(u)
        elif fv == 4096:
            v.add_(u)
        else:
            v.copy_(torch.div(v * fv, 4096, rounding_mode="trunc")).add_(u)
        v.add_(bias6).clamp_(-(_M - 1), _M - 1)
        sk = v > neuron.vth
        v.masked_fill_(sk, 0)
        return sk

    def _shape(self, k: int) -> tuple:
        layer = self.net.layers[k]
        return tuple(layer.shape)

    def run(self, bias_mant, steps: int, *, record_layers: Sequence[int] | None = None,
            record_state: bool = False) -> Recording:
        """Run ``steps`` steps. ``bias_mant``: the input layer's bias mantissas, int array (B, W, H, C) in
        Lava's order (or (W, H, C) for one sample), each in the 13-bit range. ``record_layers``: process
        indices whose spikes (and, with ``record_state``, u and v) to return; default: the last layer's spikes."""
        import torch

        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        b = np.asarray(bias_mant)
        wh_c = self.net.input_shape_lava
        if b.shape == wh_c:
            b = b[None]
        if b.ndim != 4 or b.shape[1:] != wh_c:
            raise ValueError(f"bias_mant must have shape (B, {', '.join(map(str, wh_c))}) in Lava's (W, H, C) "
                             f"order, got {np.asarray(bias_mant).shape}")
        if b.dtype.kind == "f":
            if not np.all(np.isfinite(b)) or not np.all(b == np.round(b)):
                raise ValueError("bias_mant must hold integers")
        elif b.dtype.kind not in "iub":
            raise ValueError(f"bias_mant must be integers, got dtype {b.dtype}")
        b = b.astype(np.int64)
        if b.size and (b.min() < BIAS_MIN or b.max() > BIAS_MAX):
            raise ValueError(f"bias_mant must lie in the 13-bit range [{BIAS_MIN}, {BIAS_MAX}], got "
                             f"[{b.min()}, {b.max()}]")
        n_proc = len(self.net.layers)
        rec = list(record_layers) if record_layers is not None else [n_proc - 1]
        for k in rec:
            if not 0 <= k < n_proc:
                raise ValueError(f"record_layers: no process {k} (0..{n_proc - 1})")
        batch = b.shape[0]
        dev = self.device
        biases = [torch.as_tensor(b.transpose(0, 3, 2, 1).copy(), device=dev) << 6]  # (B, C, H, W), b << 6
        for k in range(1, n_proc):
            bk = self._bias[k] << 6
            biases.append(bk.view(1, -1, 1, 1) if isinstance(self.net.layers[k], ConvLayer) else bk.view(1, -1))
        u = [torch.zeros((batch, *self._shape(k)), dtype=torch.int64, device=dev) for k in range(n_proc)]
        v = [torch.zeros_like(x) for x in u]
        s = [torch.zeros(x.shape, dtype=torch.bool, device=dev) for x in u]
        out_s = {k: [] for k in rec}
        out_u = {k: [] for k in rec} if record_state else {}
        out_v = {k: [] for k in rec} if record_state else {}
        interval = self.reset_interval
        phases = [((self.reset_offset + 1 + k) % interval) if interval else None for k in range(n_proc)]
        with torch.no_grad():
            for t in range(1, steps + 1):
                new_s = []
                for k in range(n_proc):
                    if interval and t % interval == phases[k]:
                        u[k].zero_()
                        v[k].zero_()
                    a = None if k == 0 else self._synapse(k, s[k - 1])  # s[k-1] is still s_{k-1}(t-1)
                    sk = self._step(k, u[k], v[k], a, biases[k])
                    new_s.append(sk)
                    if k in out_s:
                        out_s[k].append(sk.cpu())
                        if record_state:
                            out_u[k].append(u[k].to(torch.int32).cpu())
                            out_v[k].append(v[k].to(torch.int32).cpu())
                s = new_s

        def lava_order(frames: list, k: int) -> np.ndarray:
            x = torch.stack(frames, dim=-1).numpy()  # (B, *shape, T)
            if x.ndim == 5:  # (B, C, H, W, T) -> (B, W, H, C, T)
                x = x.transpose(0, 3, 2, 1, 4)
            return np.ascontiguousarray(x)

        return Recording(spikes={k: lava_order(f, k) for k, f in out_s.items()},
                         u={k: lava_order(f, k) for k, f in out_u.items()},
                         v={k: lava_order(f, k) for k, f in out_v.items()}, steps=steps)


# =========================================================================================================
# Lava vs this simulator (msat-lava verify on a netx file)
# =========================================================================================================

def compare_runs(net: NetxNetwork, lava, ours: Recording, *, sample_ids: Sequence[int] | None = None,
                 lava_wall_s: float = 0.0, reference_wall_s: float = 0.0, reset_interval: int | None = None,
                 reset_offset: int = 0):
    """Compare a run of lava-dl's netx network in Lava (``lava``: ``spikes[k]`` (B, *shape, T) and final
    ``u[k]``/``v[k]`` (B, *shape) for every process k, as :func:`msat_lava.lava.netx_peer_lava.run_netx_lava`
    returns them) with :class:`Recording` ``ours`` of the same inputs (every process, ``record_state=True``)
    exactly, and return a :class:`msat_lava.verify.VerifyReport` (``reference`` = this module's simulator).

    Stages, in causal order: per process k its final u and v (kinds ``u (final)``, ``v (final)``, compared at
    the last step) and its spikes at every step (kind ``spikes``); neuron indices are in Lava's order ((W, H, C)
    or (N,)). The comparison is :func:`msat_lava.verify.compare_outputs` (first divergence: earliest step, then
    earliest stage in that order, then sample, then neuron); its readout is the last process's cumulative spike
    count and its prediction that count's argmax. ``network`` holds the totals (``mismatches``, ``compared``)."""
    from dataclasses import replace
    from types import SimpleNamespace

    from msat_lava.verify import StageComparison, VerifyReport, compare_outputs

    n_proc = len(net.layers)
    steps = int(ours.steps)
    first = np.asarray(ours.spikes[0])
    batch = int(first.shape[0])
    ids = np.arange(batch, dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)

    def run_obj(spikes, u, v):
        last = np.moveaxis(np.asarray(spikes[n_proc - 1], dtype=np.int64).reshape(batch, -1, steps), -1, 0)
        readout = np.cumsum(last, axis=0)                       # (T, B, K)
        return (SimpleNamespace(traces={f"{net.layers[k].name} spikes": np.moveaxis(
                    np.asarray(spikes[k], dtype=np.int64), -1, 0) for k in range(n_proc)},
                    predictions=np.argmax(readout, axis=2), readout=readout),
                SimpleNamespace(traces={**{f"{net.layers[k].name} u": np.asarray(u[k], dtype=np.int64)[None]
                                           for k in range(n_proc)},
                                        **{f"{net.layers[k].name} v": np.asarray(v[k], dtype=np.int64)[None]
                                           for k in range(n_proc)}},
                                predictions=np.zeros((1, batch), np.int64), readout=np.zeros((1, batch, 1))))

    shapes = [tuple(np.asarray(ours.spikes[k]).shape[1:-1]) for k in range(n_proc)]
    spike_prog = SimpleNamespace(stages=[SimpleNamespace(name=f"{net.layers[k].name} spikes", kind="spikes",
                                                         shape=shapes[k]) for k in range(n_proc)])
    state_prog = SimpleNamespace(stages=[SimpleNamespace(name=f"{net.layers[k].name} {x}", kind=f"{x} (final)",
                                                         shape=shapes[k]) for k in range(n_proc) for x in "uv"])
    missing = [k for k in range(n_proc) if k not in ours.u or k not in ours.v]
    if missing:
        raise ValueError(f"ours must record every process with record_state=True (missing {missing})")
    lava_spk, lava_state = run_obj(lava.spikes, lava.u, lava.v)
    ours_spk, ours_state = run_obj(ours.spikes, {k: ours.u[k][..., -1] for k in range(n_proc)},
                                   {k: ours.v[k][..., -1] for k in range(n_proc)})
    d_spk, c_spk, preds_equal, readout_equal = compare_outputs(spike_prog, lava_spk, ours_spk, ids)
    d_state, c_state, _, _ = compare_outputs(state_prog, lava_state, ours_state, ids)
    if d_state is not None and d_state.kind != "shape":
        d_state = replace(d_state, step=steps - 1)
    order = {s.name: i for i, s in enumerate(
        [x for k in range(n_proc) for x in (state_prog.stages[2 * k], state_prog.stages[2 * k + 1],
                                            spike_prog.stages[k])])}
    candidates = [d for d in (d_spk, d_state) if d is not None]
    divergence = min(candidates, key=lambda d: (d.kind != "shape", d.step, order.get(d.stage, -1)), default=None)
    stages: list[StageComparison] = []
    for k in range(n_proc):
        stages += [c_state[2 * k], c_state[2 * k + 1], c_spk[k]]
    mismatches = sum(s.mismatches for s in stages)
    compared = sum(s.compared for s in stages)
    return VerifyReport(
        bit_exact=divergence is None and mismatches == 0, precision="fixed", steps=steps, n_samples=batch,
        sample_ids=[int(i) for i in ids], stages=stages, divergence=divergence, predictions_equal=preds_equal,
        readout_equal=readout_equal, lava_wall_s=float(lava_wall_s),
        lava_wall_per_sample_s=float(lava_wall_s) / max(batch, 1), reference_wall_s=float(reference_wall_s),
        input_clipped=0, report_steps=[steps],
        network={"file_kind": NETX_FILE, "path": net.path, "processes": n_proc, "reset_interval": reset_interval,
                 "reset_offset": reset_offset, "mismatches": mismatches, "compared": compared,
                 "lava": "lava.lib.dl.netx.hdf5.Network under Loihi2SimCfg(select_tag='fixed_pt')",
                 "reference": "msat_lava.netx_peer.NetxSimulator"})
