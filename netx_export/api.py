"""One-call conversion: ``convert(model, data) -> ConvertedNetwork``, ``load(path)``, ``summary(net)``.

``convert`` = :func:`netx_export.trace.trace` (BatchNorm folded, graph simplified) →
:func:`netx_export.calibrate.calibrate` (λ per spiking layer, λ^0) → :func:`netx_export.quantize.quantize`
(fixed-point program, LUTs, provenance). Save with ``net.save(path)`` (:func:`netx_export.hdf5.write`),
read back with :func:`load`.
"""
from __future__ import annotations

import math

import dataclasses
import itertools
import os
import time
from typing import Any, Mapping, MutableMapping

import numpy as np

from netx_export.errors import CalibrationError
from netx_export.network import ConvertedNetwork
from netx_export.quantize import quantize, state_hash

__all__ = ["convert", "load", "summary", "PhaseClock", "quiescent_theta_ratio"]


def _first_batch_shape(data: Any) -> tuple[tuple[int, ...], Any]:
    """Per-sample input shape of ``data`` and the data to use (a consumed iterator is put back together)."""
    if hasattr(data, "shape") and hasattr(data, "__len__"):
        shape = tuple(int(s) for s in data.shape)
        if len(shape) < 2:
            raise CalibrationError(f"calibration data must be (N, *input_shape), got shape {shape}")
        return shape[1:], data
    try:
        iterator = iter(data)
    except TypeError:
        raise CalibrationError(f"cannot iterate calibration data of type {type(data).__name__}") from None
    try:
        first = next(iterator)
    except StopIteration:
        raise CalibrationError("calibration data is empty") from None
    batch = first[0] if isinstance(first, (tuple, list)) else first
    if not hasattr(batch, "shape") or len(batch.shape) < 2:
        raise CalibrationError("calibration batches must be arrays/tensors of shape (B, *input_shape)")
    if iterator is data:  # a one-shot iterator: chain the consumed batch back in front
        data = itertools.chain([first], iterator)
    return tuple(int(s) for s in batch.shape[1:]), data


def convert(model, calibration_data, *, method: str = "msat", preset: str | None = "resnet20",
            input_shape: tuple[int, ...] | None = None, lambda_method: str = "max", percentile: float = 99.99,
            nonzero_only: bool = False, channelwise: bool = False, sc_p: Mapping[str, float] | float | None = None,
            seed: int = 0, progress: bool = True, msat_units: str = "raw", v_init: float = 0.0,
            timings: MutableMapping[str, float] | None = None, params: Any = None,
            gamma: int = 1, threshold_divisor: int = 1) -> ConvertedNetwork:
    """Convert a PyTorch ``model`` into a :class:`ConvertedNetwork`.

    * ``calibration_data``: tensor/array ``(N, *input_shape)`` (normalized exactly as the model expects),
      a DataLoader, or an iterable of batches (or of ``(x, y)`` tuples).
    * ``method``: a registered neuron model (:func:`netx_export.neurons.names`): 'const' (max-norm / percentile
      IF), 'dtt', 'det', 'msat', 'dtif-r', 'bsnn-r'; ``preset``: MSAT coefficients ('vgg16', 'resnet20',
      'resnet34'), used by dtt/det/msat only; ``params``: the model parameters of a model that has them (object or
      mapping over the defaults); ``gamma``: Γ, spikes per step (burst, ALGORITHMS §7); ``threshold_divisor``:
      N ≥ 1, every spiking layer's calibrated λ is divided by N before quantization (θ = λ/N; the input scale λ^0
      is not): with ``gamma=N`` this is the scaled burst of eval's ``+bsN`` methods, one step's output taking the
      N + 1 levels 0, λ/N, …, λ (msat_lava.methods.threshold_divisor).
    * ``input_shape``: per-sample (C, H, W) or (F,); inferred from the data when None.
    * ``lambda_method`` 'max' | 'percentile' with ``percentile`` (in (0, 100]) and ``nonzero_only``.
    * ``channelwise``: channel-wise λ where the graph allows it (:mod:`netx_export.balance`): the channels of
      every relu between a conv/linear and conv/linear consumers are rescaled so that they share the layer's λ
      (the stored graph carries the rescaled, ANN-equivalent weights); other layers keep a layer-wise λ.
      The calibration data is read twice (it must not be a one-shot iterator).
    * ``sc_p``: spike confidence p per relu node name, or one number for every relu; ``seed``: recorded for the SC gate.
    * ``progress``: tqdm bar (stderr) during calibration.
    * ``msat_units``: 'raw' (default; the paper's raw-unit MSAT) or 'normalized' (the BrainCog port, λ = 1 inside
      the threshold formula; ALGORITHMS §2.2), stored per spiking layer (``NeuronSpec.units``).
    * ``v_init``: initial membrane residual as a fraction of λ, in [0, 1) (``NeuronSpec.v_init``); 0.5 is the
      half-threshold start that removes most low-T error of rate coding.
    * ``timings``: if given, receives the wall seconds of each phase under the keys 'trace', 'calibrate'
      and 'quantize'.

    Raises UnsupportedOpError (every unsupported node listed), CalibrationError, QuantizationError.
    """
    from netx_export.balance import calibrate_balanced
    from netx_export.calibrate import calibrate
    from netx_export.trace import trace

    if isinstance(threshold_divisor, bool) or not isinstance(threshold_divisor, int) or threshold_divisor < 1:
        raise CalibrationError(f"threshold_divisor must be an integer >= 1, got {threshold_divisor!r}")
    inferred, calibration_data = _first_batch_shape(calibration_data)
    if input_shape is None:
        input_shape = inferred
    input_shape = tuple(int(s) for s in input_shape)
    clock = PhaseClock(timings)
    from netx_export.ir import Graph

    if isinstance(model, Graph):  # an already typed float graph (e.g. netx_export.nir_io.read_nir)
        graph = model
        if tuple(graph.input.shape) != input_shape:
            raise CalibrationError(f"calibration samples have shape {input_shape}, the graph's input is "
                                   f"{tuple(graph.input.shape)}")
        model = {f"{n.name}.{k}": getattr(n, k) for n in graph for k in ("weight", "bias")
                 if getattr(n, k, None) is not None}  # what state_hash absorbs below
    else:
        graph = trace(model, input_shape)
    from netx_export import neurons

    graph, _ = neurons.get(method).prepare_graph(graph)  # e.g. BSNN-R's synchronous neurons (ANN-identical)
    clock.lap("trace")
    rule = dict(method=lambda_method, percentile=percentile, nonzero_only=nonzero_only, progress=progress)
    balanced: list[str] = []
    if channelwise:
        graph, scales, cal = calibrate_balanced(graph, calibration_data, **rule)
        balanced = list(scales)
    else:
        cal = calibrate(graph, calibration_data, channelwise=False, **rule)
    clock.lap("calibrate")
    if threshold_divisor != 1:  # θ = λ/N (scaled burst); the calibration's hash and λ^0 stay
        cal = dataclasses.replace(cal, lambdas={k: v / threshold_divisor for k, v in cal.lambdas.items()})
    hyper = {
        "lambda_method": lambda_method,
        "percentile": float(cal.percentile),
        "nonzero_only": bool(nonzero_only),
        "channelwise": bool(channelwise),
        "balanced_layers": balanced,
        "calibration_samples": int(cal.n_samples),
        "input_shape": list(input_shape),
    }
    if threshold_divisor != 1:
        hyper["threshold_divisor"] = int(threshold_divisor)
    net = quantize(graph, cal, method=method, preset=preset, sc_p=sc_p, seed=seed, model_hash=state_hash(model),
                   hyperparameters=hyper, msat_units=msat_units, v_init=v_init, params=params, gamma=gamma)
    clock.lap("quantize")
    return net


class PhaseClock:
    """Writes the wall seconds since the previous lap into ``timings[name]`` (nothing when it is None)."""

    def __init__(self, timings: MutableMapping[str, float] | None) -> None:
        self.timings, self.start = timings, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[name] = now - self.start
        self.start = now

    def restart(self) -> None:
        """Start the next lap now (the time since the last lap is not recorded)."""
        self.start = time.perf_counter()


def load(path: str | os.PathLike) -> ConvertedNetwork:
    """Read and validate a network file (:func:`netx_export.hdf5.read`)."""
    from netx_export import hdf5

    return hdf5.read(path)


def summary(net: ConvertedNetwork) -> dict[str, Any]:
    """A JSON-serializable description of ``net`` for ``msat-lava info``: one row per target
    (spiking layers in graph order, then the readout) and totals.

    Row fields: ``name``, ``kind`` ('relu' | 'readout'), ``shape``, ``neurons``, ``lam``, ``frac_bits``,
    ``mode``, ``gamma``, ``v_init`` (None for the readout), ``theta_q_over_lambda`` (the quiescent MSAT threshold
    θ_q/λ of a dtt/det/msat layer, :func:`quiescent_theta_ratio`; None otherwise), ``sc_p``, ``terms`` (list of {source, path, op,
    exponent, weights, rel_rms_error, clipped}), ``bias_min``/``bias_max`` (target LSBs), ``lut_entries``.
    """
    graph = net.graph
    rows = []
    totals = {"spiking_layers": 0, "neurons": 0, "weights": 0, "clipped": net.report.total_clipped,
              "lut_entries": 0, "terms": 0}
    for tgt, rep in zip(net.targets, net.report.layers):
        shape = list(graph.shape(tgt.name))
        spec = net.neurons.get(tgt.name) if tgt.kind == "relu" else None
        lut = net.luts.get(tgt.name) if tgt.kind == "relu" else None
        terms = []
        for term, trep in zip(tgt.terms, rep.terms):
            terms.append({"source": term.source, "path": list(term.path), "op": term.op, "exponent": term.exponent,
                          "weights": int(term.mantissa.size), "rel_rms_error": trep.rel_rms_error,
                          "clipped": trep.clipped})
            totals["weights"] += int(term.mantissa.size)
        totals["terms"] += len(terms)
        row = {
            "name": tgt.name, "kind": tgt.kind, "shape": shape, "neurons": int(np.prod(shape)),
            "lam": tgt.lam, "frac_bits": tgt.frac_bits,
            "mode": spec.mode if spec else None, "sc_p": spec.sc_p if spec else None,
            "gamma": spec.gamma if spec else None, "v_init": spec.v_init if spec else None,
            "theta_q_over_lambda": quiescent_theta_ratio(spec) if spec else None,
            "terms": terms,
            "bias_min": int(tgt.bias.min()) if tgt.bias.size else 0,
            "bias_max": int(tgt.bias.max()) if tgt.bias.size else 0,
            "bias_saturated": rep.bias_saturated, "bias_over_state": rep.bias_over_state,
            "lut_entries": lut.n_entries if lut is not None else 0,
        }
        if tgt.kind == "relu":
            totals["spiking_layers"] += 1
            totals["neurons"] += row["neurons"]
            totals["lut_entries"] += row["lut_entries"]
        rows.append(row)
    from netx_export.hdf5 import netx_view

    view = netx_view(net)
    prov = net.provenance.to_dict()
    return {
        "format_version": prov["format_version"],
        "method": net.method,
        "input": {"name": graph.input.name, "shape": list(graph.input.shape), "scale": net.input_scale,
                  "frac_bits": net.input_frac_bits},
        "nodes": [{"name": n.name, "kind": n.kind, "inputs": list(n.inputs)} for n in graph],
        "layers": rows,
        "totals": totals,
        "netx": {"loadable": view.loadable, "reason": view.reason,
                 "input_message_bits": view.input_message_bits},
        "warnings": list(net.report.warnings) + _slow_msat_warnings(net),
        "provenance": prov,
    }


#: a layer whose quiescent threshold is below this fraction of λ passes its charge slowly (MSAT_FIDELITY)
SLOW_THETA_RATIO = 0.1


def quiescent_theta_ratio(spec) -> float | None:
    """θ_q/λ = σ(z_q) of a dtt/det/msat layer at rest (Δ = 0, x = 0): z_q = τ_mp·(k_a·ln 2 − λ_f) [dtt, msat]
    + τ_rd [det, msat], λ_f = λ in raw units, 1 in normalized units (the float formula's value; the fixed
    tables follow it to within an LSB). None for other modes."""
    if spec.mode not in ("dtt", "det", "msat") or spec.coefs is None:
        return None
    c = spec.coefs
    z = 0.0
    if spec.mode in ("dtt", "msat"):
        z += c.tau_mp * (c.k_a * math.log(2.0) - spec.formula_lam)
    if spec.mode in ("det", "msat"):
        z += c.tau_rd
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def _slow_msat_warnings(net) -> list[str]:
    """One line when raw-unit dtt/det/msat layers have quiescent thresholds far below λ: the README's ResNet20
    example then reads 10 % at T = 64 (faithful to the paper, not a bug; docs/RESULTS.md §3.2)."""
    slow = []
    for name, spec in net.neurons.items():
        r = quiescent_theta_ratio(spec)
        if r is not None and r < SLOW_THETA_RATIO:
            slow.append((r, name, spec.lam))
    if not slow:
        return []
    r, name, lam = min(slow)
    return [f"{len(slow)} of {len(net.neurons)} layers have a quiescent MSAT threshold below "
            f"{SLOW_THETA_RATIO:g}·λ (lowest θ/λ = {r:.2g} at {name}, λ = {lam:.3g}): the paper's raw-unit threshold "
            "is not scale-invariant and with Γ = 1 these layers need many steps to pass their charge (expect "
            "chance-level accuracy for tens of steps); --msat-units normalized, or --method const with "
            "--v-init 0.5 --lambda percentile --percentile 99.9 (with --burst 4 --burst-scaled: ResNet20 "
            "within 0.6 points of the ANN at T = 16, docs/RESULTS.md §3.7), converge far faster"]
