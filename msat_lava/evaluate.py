"""Evaluation as a library: :func:`evaluate` is THE pipeline behind ``msat-lava eval`` (:mod:`msat_lava.cli_eval`
only turns its flags into an :class:`EvalConfig`, calls it, prints and saves).

    import msat_lava as ml
    report = ml.evaluate("resnet20.net", "cifar10.npz", "const,p99.9,msat+sc", ml.EvalConfig(steps=64))
    report.accuracy("msat+sc")            # accuracy after every step (primary precision), numpy (T,)
    report.steps_to("const", "ann-1%")    # 1-based steps to reach ANN − 1 % (None: not within T)
    report.save("eval-out")               # eval.json, the PNGs and report.html, atomically

This module owns:

* :class:`EvalConfig`: the evaluation settings (the ``eval`` flags: steps, precision, report steps, calibration
  subset, λ source, spike-confidence window / layers, SIN batches, batch size, threads, seed, preset, MSAT units,
  and how a data / calibration *file* is read and normalized);
* :class:`NetworkBuilder`: method → converted network, from one float graph (λ per λ rule, cached; +cw channel
  balancing; +wc weight calibration; +bc bias correction; +bsN divided λ; +sc spike-confidence calibration),
  shared with ``benchmarks/accuracy.py``; :func:`quantize_method` is its one quantize call;
* :func:`evaluate`: data, calibration images, networks, the reference runs (accuracy after every step, SIN window,
  firing rates, energy estimate, per-layer agreement with the ANN), neuron traces, the manifest;
* :class:`EvalReport`: the manifest (the dict ``eval.json`` holds), typed accessors and :meth:`EvalReport.save`.

The method grammar is :mod:`msat_lava.methods`; the figures, HTML page and text summary are
:mod:`msat_lava.reports`; the statistics' definitions are :mod:`msat_lava.metrics` and
:mod:`msat_lava.sc_calibration`.

**Methods are re-derived from one float graph.** The network's folded float graph is the ANN, and every method is
quantized again from it with the network's neuron settings (Γ, F, state bits, gate variant, MSAT coefficients of
the network or ``preset``), so that all methods share the same weights. λ comes from **one calibration set**: a
seeded random subset (``calib_samples``, seed ``calib_seed``) of the calibration images, normalized like the test
data: by default the ``x_train`` split of the data file; ``calibration=`` a file (its ``x_train``, else ``x``) or
an array of images already normalized (the subset is drawn from it the same way). Without calibration images λ
comes from the network file (``lambda_from="file"``) and the methods that need images are refused when the
methods were given, skipped with a note when they were the defaults.

**Data-parallel**: with ``ctx`` (:class:`msat_lava.distributed.Context` of a torchrun launch) every rank derives
the networks itself (deterministic, compared across ranks), simulates its block of whole ``batch_size`` chunks, and
rank 0 gathers the per-chunk statistics and computes every aggregate in chunk order: the numbers of one process.
:func:`evaluate` returns the report on rank 0 and None on the other ranks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from msat_lava.methods import DEFAULT_METHODS, MethodSpec, parse_methods

__all__ = ["EvalConfig", "EvalReport", "NetworkBuilder", "evaluate", "quantize_method", "neuron_traces",
           "check_out_dir", "PRECISIONS"]

PRECISIONS = ("fixed", "float", "both")
LIPOOL_RECORD_BYTES = 256 << 20   # budget for recording LIPool outputs per chunk (exact LIPool rates)
TRACE_STEPS_MAX = 128


def _tuple(value):
    return tuple(value) if value is not None and not isinstance(value, str) else value


@dataclass(frozen=True)
class EvalConfig:
    """The settings of an evaluation; one field per ``msat-lava eval`` flag (same defaults).

    ``steps`` T; ``precision`` fixed | float | both (fixed then float); ``report_steps`` (None: 1, 2, 4, …, T);
    ``calib_samples`` / ``calib_seed``: the seeded calibration subset; ``lambda_from`` data | file | None (data
    when calibration images exist); ``percentile_nonzero``: percentiles over the non-zero activations;
    ``preset`` / ``msat_units``: MSAT coefficients and formula units (None: the network's); ``bc_samples``:
    calibration images of the +bc / +wc runs; ``sc_window`` E (1..256): spike-confidence stage and SIN window;
    ``sc_layers`` last | all | comma-separated names (or a sequence); ``sin_batch``: SIN as the mean of per-batch
    ratios (None: pooled); ``seed``: spike-confidence gate seed (None: the network's); ``batch_size``: samples
    per simulator chunk (results do not depend on it); ``threads``: torch threads (None: torch's). How a data or
    calibration FILE is read: ``split`` (test | train), ``samples`` (strided subset, None: all), ``input_scale``,
    ``norm_mean`` / ``norm_std`` (floats, or comma-separated text as on the command line).
    """

    steps: int
    precision: str = "fixed"
    report_steps: tuple[int, ...] | None = None
    calib_samples: int = 512
    calib_seed: int = 23
    lambda_from: str | None = None
    percentile_nonzero: bool = False
    preset: str | None = None
    msat_units: str | None = None
    bc_samples: int = 64
    sc_window: int = 16
    sc_layers: str | tuple[str, ...] = "last"
    sin_batch: int | None = None
    seed: int | None = None
    batch_size: int = 32
    threads: int | None = None
    split: str = "test"
    samples: int | None = None
    input_scale: float | None = None
    norm_mean: str | tuple[float, ...] | None = None
    norm_std: str | tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        from msat_lava.cli_common import MAX_STEPS, SEED_MAX
        from msat_lava.data import DataError

        for name in ("report_steps", "sc_layers", "norm_mean", "norm_std"):
            object.__setattr__(self, name, _tuple(getattr(self, name)))
        if self.report_steps is not None:
            object.__setattr__(self, "report_steps", tuple(sorted({int(t) for t in self.report_steps})))

        def positive(name: str, value: Any, top: int | None = None, optional: bool = False) -> None:
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1 or (
                    top is not None and value > top):
                raise DataError(f"EvalConfig.{name} must be an integer in [1, {top or 'inf'}], got {value!r}")

        positive("steps", self.steps, MAX_STEPS)
        for name in ("calib_samples", "bc_samples", "sc_window", "batch_size"):
            positive(name, getattr(self, name))
        for name in ("sin_batch", "threads", "samples"):
            positive(name, getattr(self, name), optional=True)
        if self.report_steps:
            for t in self.report_steps:
                positive("report_steps", t, MAX_STEPS)
        for name in ("calib_seed", "seed"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                      or not 0 <= value <= SEED_MAX):
                raise DataError(f"EvalConfig.{name} must be an integer seed in [0, 2^32), got {value!r}")
        choices = {"precision": PRECISIONS, "lambda_from": ("data", "file", None), "split": ("test", "train"),
                   "msat_units": ("raw", "normalized", None)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise DataError(f"EvalConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def precisions(self) -> list[str]:
        """The precisions run, in order (the first is the primary one: SC / bias-correction runs, traces)."""
        return ["fixed", "float"] if self.precision == "both" else [self.precision]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


# ----------------------------------------------------------------------------------------------------------
# data helpers
# ----------------------------------------------------------------------------------------------------------
def _sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode("ascii"))
        h.update(a.tobytes())
    return h.hexdigest()


def _calib_key(path: str, explicit: bool = False) -> str | None:
    """The calibration images' key of ``path`` (:func:`msat_lava.data.calibration_key`: ``x_train``; for an
    explicit calibration file also ``x``). None when there is none. An unreadable explicit calibration file is
    a DataError naming it; an unreadable ``--data`` file gives None here (load_npz reports it)."""
    from msat_lava.data import DataError, calibration_key, npz_members

    try:
        files = list(npz_members(path))
    except DataError:
        if explicit:
            raise
        return None
    return calibration_key(files, explicit=explicit)


def _has_train_split(path: str, explicit: bool = False) -> bool:
    return _calib_key(path, explicit) is not None


def _load_calibration(path: str, n: int, seed: int, *, input_scale, mean, std, input_shape,
                      explicit: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random subset (sorted indices) of the calibration images of ``path``, normalized like the test
    data: :func:`msat_lava.data.load_calibration` (convert's loader, the same subset rule)."""
    from msat_lava.data import load_calibration

    loaded = load_calibration(path, samples=n, seed=seed, input_scale=input_scale, mean=mean, std=std,
                              input_shape=input_shape, explicit=explicit)
    return loaded.x, loaded.indices


def _ann_predictions(graph, x: np.ndarray, chunk: int) -> np.ndarray:
    import torch

    from netx_export.ann import AnnRunner

    runner = AnnRunner(graph, dtype=torch.float64)
    out = []
    for lo in range(0, len(x), chunk):
        out.append(runner(np.asarray(x[lo:lo + chunk], dtype=np.float64)).reshape(min(chunk, len(x) - lo), -1)
                   .argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


# ----------------------------------------------------------------------------------------------------------
# neuron traces
# ----------------------------------------------------------------------------------------------------------
def neuron_traces(program, stage_name: str, x: np.ndarray, steps: int, *, precision: str = "float",
                  sample_id: int = 0, seed: int | None = None) -> dict[str, np.ndarray]:
    """Replay one spiking layer of ``program`` for one sample ``x`` (input shape) over ``steps`` steps.

    The payloads of the layer's sources are recorded by the reference simulator; the layer's input x(t) is
    rebuilt from them (its terms + bias) and fed to :func:`msat_lava.dynamics.neuron.step_float` (or
    ``step_fixed``), which exposes what the simulator does not record. Returns float64 arrays (steps, N^l) in
    raw ANN units (fixed point converted with λ·2^−F): ``x`` input, ``m`` membrane potential before firing,
    ``theta`` threshold, ``v`` residual after reset, ``payload`` transmitted value; and int64 ``spikes``
    (gated). The replayed payloads are checked against the simulator's (RuntimeError if they differ).
    """
    import torch

    from msat_lava.dynamics import neuron as dyn
    from msat_lava.reference import constant_input, input_tensor, simulate, stage_input

    stage = program.stage(stage_name)
    if stage.kind != "neuron":
        raise ValueError(f"stage {stage_name!r} is a {stage.kind}, not a spiking layer")
    fixed = precision == "fixed"
    seed = program.seed if seed is None else int(seed)
    sources = [s for s in program.sources_of(stage) if s != "input"]
    x1 = np.asarray(x, dtype=np.float64)[None]
    res = simulate(program, x1, steps, precision=precision, sample_ids=[sample_id], record=sources + [stage_name],
                   progress=False, seed=seed, batch_size=1)
    inp, _ = input_tensor(program, x1, fixed)
    cache: dict = {}
    base = constant_input(stage, inp, fixed, cache)
    ids = torch.as_tensor([int(sample_id)])
    like = inp.to(torch.int64) if fixed else inp
    state = (dyn.init_fixed_state((1,) + stage.shape, like, stage.spec) if fixed
             else dyn.init_float_state((1,) + stage.shape, like, stage.spec))
    rec = {k: [] for k in ("x", "m", "theta", "v", "payload", "spikes")}
    for t in range(steps):
        xin = stage_input(stage, base, {k: torch.as_tensor(v[t]) for k, v in res.traces.items()}, fixed, cache)
        if fixed:
            xin = xin.to(torch.int64)
            m = state.v + xin
            state, o = dyn.step_fixed(stage.spec, stage.luts, state, xin, ids, stage.index, seed)
        else:
            m = state.v + xin
            state, o = dyn.step_float(stage.spec, state, xin, ids, stage.index, seed)
        for k, v in (("x", xin), ("m", m), ("theta", o.theta), ("v", state.v), ("payload", o.payload),
                     ("spikes", o.spikes)):
            rec[k].append(v.reshape(-1).cpu().numpy())
    out = {k: np.stack(v) for k, v in rec.items()}
    recorded = np.asarray(res.traces[stage_name]).reshape(steps, -1)
    if not np.array_equal(out["payload"], recorded):
        raise RuntimeError(f"replay of layer {stage_name!r} differs from the reference simulator")
    scale = stage.spec.lsb if fixed else 1.0
    for k in ("x", "m", "theta", "v", "payload"):
        out[k] = out[k].astype(np.float64) * scale
    out["spikes"] = out["spikes"].astype(np.int64)
    return out


def _pick_neurons(z: np.ndarray, spikes: np.ndarray, window: int, k: int = 4) -> list[tuple[int, str]]:
    """Up to k neurons: the SIN neurons (z ≤ 0, spiking in the window) with most window spikes (at most half),
    then the active neurons (z > 0) with most spikes, then the largest z ≤ 0."""
    z = z.reshape(-1)
    total = spikes.sum(axis=0)
    early = spikes[:window].sum(axis=0)
    chosen: list[tuple[int, str]] = []
    sin = np.flatnonzero((z <= 0) & (early > 0))
    for i in sin[np.argsort(-early[sin], kind="stable")][: k // 2]:
        chosen.append((int(i), "SIN"))
    act = np.flatnonzero(z > 0)
    for i in act[np.argsort(-total[act], kind="stable")]:
        if len(chosen) >= k:
            break
        chosen.append((int(i), "active"))
    rest = [i for i in np.argsort(-z, kind="stable") if int(i) not in {c[0] for c in chosen}]
    for i in rest[: k - len(chosen)]:
        chosen.append((int(i), "inactive" if z[i] <= 0 else "active"))
    return chosen


# ----------------------------------------------------------------------------------------------------------
# network settings and summaries
# ----------------------------------------------------------------------------------------------------------
def _quantize_settings(net, preset: str | None, msat_units: str | None = None) -> dict[str, Any]:
    from netx_export.neuron import PRESETS
    from msat_lava.data import DataError

    specs = list(net.neurons.values())
    spec0 = specs[0]
    hp = dict(net.provenance.hyperparameters)
    if preset is not None:
        if preset not in PRESETS:
            raise DataError(f"--preset: unknown preset {preset!r}; known: {sorted(PRESETS)}")
        coefs, source = PRESETS[preset], f"preset {preset}"
    elif spec0.coefs is not None:
        coefs, source = spec0.coefs, "the network file"
    else:
        name = hp.get("preset") or "resnet20"
        coefs, source = PRESETS[name] if name in PRESETS else PRESETS["resnet20"], f"preset {name}"
    units = msat_units or getattr(spec0, "units", "raw")
    return {"coefs": coefs, "coefs_source": source, "gamma": spec0.gamma, "sc_gate": spec0.sc_gate,
            "frac_bits": spec0.frac_bits, "state_bits": spec0.state_bits, "input_frac_bits": net.input_frac_bits,
            "units": units, "units_source": "--msat-units" if msat_units else "the network file"}


def _net_summary(net, lambda_info: dict) -> dict[str, Any]:
    return {
        "mode": net.method,
        "units": sorted({getattr(s, "units", "raw") for s in net.neurons.values()})
        if net.method in ("dtt", "det", "msat") else None,
        "params": {k: s.params.to_dict() for k, s in net.neurons.items() if s.params is not None} or None,
        "lambda": {k: s.lam for k, s in net.neurons.items()},
        "input_scale": net.input_scale,
        "v_init": max((s.v_init for s in net.neurons.values()), default=0.0),
        "gamma": max((s.gamma for s in net.neurons.values()), default=1),
        "lambda_method": lambda_info,
        "sc_p": {k: s.sc_p for k, s in net.neurons.items() if s.sc_p is not None},
        "exponents": {t.name: [{"source": term.source, "op": term.op, "exponent": int(term.exponent)}
                               for term in t.terms] for t in net.targets},
        "quantization_warnings": list(net.report.warnings),
    }


# ----------------------------------------------------------------------------------------------------------
# method → network
# ----------------------------------------------------------------------------------------------------------
def quantize_method(graph, lambdas: Mapping[str, float], input_scale: float, method: "str | MethodSpec", *,
                    units: str = "raw", gamma: int = 1, **options: Any):
    """``method``'s ConvertedNetwork of the float ``graph`` (:func:`netx_export.quantize.quantize`): the model's
    prepared graph (BSNN-R: synchronous neurons, which take their source's λ), λ divided for "+bsN"
    (:meth:`MethodSpec.divided_lambdas`, the input scale kept), the method's mode, MSAT units (``units`` unless
    -norm) or model parameters, v_init and Γ (``gamma`` unless +bN / +bsN). ``options``: the caller's other
    quantize settings; preset / coefs are dropped for const cores (they have none)."""
    from netx_export import neurons
    from netx_export.quantize import quantize

    spec = MethodSpec.of(method)
    mode = spec.mode
    extra: dict[str, Any] = {}
    if spec.model_params is not None:
        try:
            extra["params"] = spec.params_object()
        except neurons.NeuronSpecError as exc:
            from msat_lava.data import DataError

            raise DataError(f"--methods: {str(spec)!r}: parameter {exc}") from None
    elif mode != "const":
        extra["msat_units"] = spec.units(units)
    else:
        options = {**options, "preset": None, "coefs": None}
    graph, aliases = neurons.get(mode).prepare_graph(graph)
    lams = spec.divided_lambdas({**lambdas, **{sn: lambdas[src] for sn, src in aliases.items()}},
                                keep=(graph.input.name,))
    return quantize(graph, lams, method=mode, gamma=spec.gamma(gamma), input_scale=input_scale,
                    v_init=spec.v_init, **options, **extra)


class NetworkBuilder:
    """Method → ConvertedNetwork from one float ``graph``, with its caches (``msat-lava eval``,
    :func:`evaluate`, ``benchmarks/accuracy.py``).

    ``x_cal``: the calibration images (normalized; None when λ comes from the file and no method needs images),
    ``calibration_ids`` their dataset indices (they key the spike-confidence gate of the SC calibration runs).
    ``quantize_options``: the settings every network shares (:func:`quantize_method` adds the method's);
    ``units`` / ``gamma``: the defaults a method overrides with -norm / +bN. λ: one set per λ rule
    (:attr:`MethodSpec.lambda_key`: max, pQ, either channel-balanced), calibrated on ``x_cal`` — or, for
    ``lambda_from="file"``, the max rule's λ is ``file_lambdas`` = (λ per layer, λ^0, data hash, info).
    Corrections (+wc, +bc) run on the first ``correction_samples`` calibration images in ``precision`` with
    ``correction_batch_size`` / ``correction_threads``; spike confidence (+sc) on all of them over the first
    ``sc_window`` steps, layers ``sc_layers``, ``sc_batch`` (None: pooled), chunks of ``sc_chunk``.

    Results: :meth:`network` (cached in :attr:`networks`, keyed by method name), :attr:`sc_results` (method →
    ScCalibration), :attr:`corrections` (eval's ``bias_correction`` keys: "<method> (weights)" for +wc, "<method>"
    for +bc → (result, wall seconds), in the order they ran); :meth:`lambdas_for`, :meth:`graph_for`,
    :meth:`build`, :meth:`preactivations`.
    """

    def __init__(self, graph, x_cal: np.ndarray | None = None, *, quantize_options: Mapping[str, Any],
                 units: str = "raw", gamma: int = 1, lambda_from: str = "data",
                 file_lambdas: tuple[dict, float, str, dict] | None = None, percentile_nonzero: bool = False,
                 precision: str = "fixed", correction_samples: int = 64, correction_batch_size: int = 32,
                 correction_threads: int | None = None, sc_window: int = 16, sc_layers: Any = "last",
                 sc_batch: int | None = None, sc_chunk: int = 32, calibration_ids: np.ndarray | None = None,
                 log: Callable[[str], None] | None = None, progress: bool = False):
        self.graph = graph
        self.x_cal = x_cal
        self.calibration_ids = calibration_ids
        self.quantize_options = dict(quantize_options)
        self.units, self.gamma = units, gamma
        self.lambda_from, self.file_lambdas = lambda_from, file_lambdas
        self.percentile_nonzero = bool(percentile_nonzero)
        self.precision = precision
        self.correction_samples, self.correction_batch_size = correction_samples, correction_batch_size
        self.correction_threads = correction_threads
        self.sc_window, self.sc_layers, self.sc_batch, self.sc_chunk = sc_window, sc_layers, sc_batch, sc_chunk
        self.log = log or (lambda message: None)
        self.progress = progress
        self.networks: dict[str, Any] = {}
        self.sc_results: dict[str, Any] = {}
        self.corrections: dict[str, tuple[Any, float]] = {}
        self._lambdas: dict[str, tuple[dict, float, str, dict, Any]] = {}
        self._graphs: dict[Any, Any] = {}
        self._pre: dict[tuple, Any] = {}

    def lambdas_for(self, method: "str | MethodSpec") -> tuple[dict, float, str, dict, Any]:
        """(λ per layer, λ^0, data hash, λ info, graph) of a method's λ rule: max, pQ, either with +cw (the
        channel-balanced graph, netx_export.balance), or the file's λ."""
        from netx_export.balance import calibrate_balanced
        from netx_export.calibrate import calibrate

        spec = MethodSpec.of(method)
        q, cw = spec.percentile, spec.channelwise
        key = spec.lambda_key
        if key in self._lambdas:
            return self._lambdas[key]
        rule = dict(method="max") if q is None else dict(method="percentile", percentile=q,
                                                         nonzero_only=self.percentile_nonzero)
        info: dict[str, Any] = {"lambda_method": rule["method"]}
        if q is not None:
            info.update({"percentile": q, "nonzero_only": self.percentile_nonzero})
        if cw:
            g_m, scales, cal = calibrate_balanced(self.graph, self.x_cal, **rule)
            info.update({"channelwise": True, "balanced_layers": list(scales)})
        elif q is not None or self.lambda_from == "data":
            g_m, cal = self.graph, calibrate(self.graph, self.x_cal, progress=False, **rule)
        else:
            value = (*self.file_lambdas, self.graph)
            self._lambdas[key] = value
            return value
        info["calibration_samples"] = cal.n_samples
        value = (dict(cal.lambdas), cal.input_scale, cal.data_hash, info, g_m)
        self._lambdas[key] = value
        return value

    def build(self, graph, method: "str | MethodSpec", sc_p: Mapping[str, float] | None = None):
        """``method``'s ConvertedNetwork of ``graph`` (λ of the method's rule, the shared settings)."""
        spec = MethodSpec.of(method)
        lams, lam0, dhash, info, _ = self.lambdas_for(spec)
        return quantize_method(graph, lams, lam0, spec, units=self.units, gamma=self.gamma, sc_p=sc_p,
                               sc_early=self.sc_window, data_hash=dhash,
                               hyperparameters={"eval_method": str(spec), **info}, **self.quantize_options)

    def _bar(self, **kwargs):
        from tqdm.auto import tqdm

        return tqdm(leave=False, disable=not self.progress, file=sys.stderr, **kwargs)

    def graph_for(self, method: "str | MethodSpec"):
        """The graph a method converts: the original (channel-balanced for "+cw"), weight-calibrated for "+wc",
        bias-corrected for "+bc" (in that order); "+sc" does not change it."""
        spec = MethodSpec.of(method).without_sc()
        plain = str(spec)
        bc_steps, wc_steps = spec.bias_correction_steps, spec.weight_calibration_steps
        base = self.lambdas_for(spec)[4]
        if wc_steps is not None:
            key = ("wc", plain)
            if key not in self._graphs:
                from msat_lava.weight_calibration import calibrate_weights

                xb = self.x_cal[:self.correction_samples]
                self.log(f"weight calibration: {plain} on {len(xb)} calibration images, T = {wc_steps} "
                         f"({self.precision}) ...")
                t0 = time.perf_counter()
                res_w = calibrate_weights(base, xb, steps=wc_steps, precision=self.precision,
                                          batch_size=self.correction_batch_size, threads=self.correction_threads,
                                          convert=lambda g: self.build(g, spec))
                self._graphs[key] = res_w.graph
                self.corrections[plain + " (weights)"] = (res_w, time.perf_counter() - t0)
            base = self._graphs[key]
        if bc_steps is None:
            return base
        if plain not in self._graphs:
            from msat_lava.bias_correction import correct_biases

            xb = self.x_cal[:self.correction_samples]
            self.log(f"bias correction: {plain} on {len(xb)} calibration images, T = {bc_steps} ({self.precision}) ...")
            t0 = time.perf_counter()
            with self._bar(total=len([n for n in self.graph if n.kind == "relu"]), desc=f"bias correction {plain}",
                           unit="layer") as bar:
                res = correct_biases(base, xb, steps=bc_steps, precision=self.precision,
                                     batch_size=self.correction_batch_size, threads=self.correction_threads,
                                     convert=lambda g: self.build(g, spec), on_layer=lambda *_: bar.update(1))
            self._graphs[plain] = res.graph
            self.corrections[plain] = (res, time.perf_counter() - t0)
        return self._graphs[plain]

    def network(self, method: "str | MethodSpec"):
        """``method``'s ConvertedNetwork (cached): :meth:`graph_for`, then :meth:`build`; for "+sc" the spike
        confidence p is measured first on the SC-free network over the calibration images."""
        from msat_lava.sc_calibration import calibrate_spike_confidence

        spec = MethodSpec.of(method)
        name = str(spec)
        if name in self.networks:
            return self.networks[name]
        g_m = self.graph_for(spec)
        if spec.sc:
            plain = spec.without_sc()
            base = self.networks.get(str(plain)) or self.build(g_m, plain)
            n_cal, window = len(self.x_cal), self.sc_window
            self.log(f"spike confidence: {plain} without SC on {n_cal} calibration images, first {window} "
                     f"steps ({self.precision}), layer(s) {', '.join(self.sc_layers)} ...")
            with self._bar(total=n_cal * window, desc=f"SC calibration {plain}", unit="sample-step") as bar:
                sc = calibrate_spike_confidence(base, self.x_cal, sample_ids=self.calibration_ids, window=window,
                                                layers=self.sc_layers, precision=self.precision,
                                                batch_size=self.sc_batch, chunk=self.sc_chunk,
                                                on_progress=bar.update)
            self.sc_results[name] = sc
            self.log("      p = " + ", ".join(f"{k}: {v:.4f}" for k, v in sc.p.items()))
            net = self.build(g_m, spec, sc_p=sc.p)
        else:
            net = self.build(g_m, spec)
        self.networks[name] = net
        return net

    def preactivations(self, method: "str | MethodSpec"):
        """``f(x)`` → ANN pre-activations in the units of the method's λ: the graph it was calibrated on (the
        channel-balanced graph for "+cw"; the original ANN for everything else, bias correction included), as
        the method's model prepares it (BSNN-R: + synchronous neurons, ANN-identical)."""
        from netx_export import neurons

        from msat_lava.sc_calibration import preactivation_fn

        spec = MethodSpec.of(method)
        g_m = self.lambdas_for(spec.without_sc())[4]
        model = neurons.get(spec.mode)
        key = (id(g_m), type(model).prepare_graph is not neurons.NeuronModel.prepare_graph)
        if key not in self._pre:
            self._pre[key] = preactivation_fn(model.prepare_graph(g_m)[0] if key[1] else g_m)
        return self._pre[key]


# ----------------------------------------------------------------------------------------------------------
# the evaluation
# ----------------------------------------------------------------------------------------------------------
def _label_of(path_or_obj: Any) -> str | None:
    return str(path_or_obj) if isinstance(path_or_obj, (str, os.PathLike)) else None


def _as_data(data: Any):
    """A LoadedData from a LoadedData or an (x, y) pair (indices 0..N−1)."""
    from msat_lava.data import DataError, LoadedData

    if isinstance(data, LoadedData):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        x = np.ascontiguousarray(np.asarray(data[0], dtype=np.float32))
        y = None if data[1] is None else np.asarray(data[1]).astype(np.int64).reshape(-1)
        return LoadedData(x, y, np.arange(len(x), dtype=np.int64))
    raise DataError(f"data must be a .npz path, a msat_lava.data.LoadedData or an (x, y) pair, got "
                    f"{type(data).__name__}")


def _calibration_array(images: Any, n: int, seed: int, input_shape) -> tuple[np.ndarray, np.ndarray]:
    """The seeded subset (sorted indices) of calibration images given as an array, drawn as from a file."""
    from msat_lava.data import DataError, LoadedData

    x = images.x if isinstance(images, LoadedData) else images
    x = np.asarray(x)
    if x.dtype.kind not in "uif" or x.ndim < 2 or len(x) == 0:
        raise DataError(f"calibration images: expected a non-empty numeric array (N, ...), got {x.dtype} {x.shape}")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(f"calibration images: per-sample shape {tuple(x.shape[1:])} is not the network's input "
                        f"shape {tuple(input_shape)} (give normalized images in the network's layout, or a file)")
    if not np.all(np.isfinite(x)):
        raise DataError("calibration images contain NaN or infinity")
    k = min(int(n), len(x))
    idx = np.sort(np.random.default_rng(seed).choice(len(x), k, replace=False)).astype(np.int64)
    return np.ascontiguousarray(x[idx], dtype=np.float32), idx


def evaluate(net: Any, data: Any, methods: "str | Sequence[str | MethodSpec] | None" = None,
             config: EvalConfig | None = None, *, calibration: Any = None, ctx: Any = None,
             log: Callable[[str], None] | None = None, progress: bool = False, **options: Any
             ) -> "EvalReport | None":
    """Evaluate threshold ``methods`` of ``net`` on ``data`` (module docstring); returns the :class:`EvalReport`
    (None on torchrun ranks other than 0).

    ``net``: a ConvertedNetwork or the path of a network file; ``data``: a ``.npz`` path (read with the config's
    split / samples / normalization), a :class:`msat_lava.data.LoadedData` or an (x, y) pair of normalized
    inputs and labels; ``methods``: names or MethodSpecs (comma text or a sequence; None: DEFAULT_METHODS, from
    which those needing calibration images are skipped with a note when there are none); ``config``: an
    :class:`EvalConfig` (``options``: its fields, overriding); ``calibration``: a file (x_train, else x), an
    array of normalized images (or a LoadedData), or None (the data file's x_train split, if any);
    ``ctx``: :class:`msat_lava.distributed.Context` (default: one process); ``log``: called with the progress
    lines ``msat-lava eval`` prints; ``progress``: tqdm bars on stderr. Raises
    :class:`msat_lava.data.DataError` (and the network reader's errors) for bad input, before any simulation.
    """
    import warnings

    import torch

    from netx_export.api import load
    from netx_export.quantize import QuantizationWarning

    from msat_lava import metrics
    from msat_lava.cli_run import _report_steps
    from msat_lava.data import DataError, load_npz, parse_floats
    from msat_lava.distributed import Context
    from msat_lava.program import from_converted
    from msat_lava.sc_calibration import gated_layers, run_with_statistics
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    if config is None:
        if "steps" not in options:
            raise TypeError("evaluate() needs config=EvalConfig(steps=...) (or steps=...)")
        config = EvalConfig(**options)
    elif options:
        config = dataclasses.replace(config, **options)
    ctx = Context() if ctx is None else ctx
    say = (log or (lambda message: None)) if ctx.is_main else (lambda message: None)  # other ranks: errors only
    quiet = not progress or not ctx.is_main  # progress bars on rank 0 only
    steps = int(config.steps)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    explicit_methods = methods is not None
    method_names = [str(m) for m in parse_methods(methods if explicit_methods else ",".join(DEFAULT_METHODS))]
    precisions = config.precisions
    primary = precisions[0]
    rsteps = _report_steps(None if config.report_steps is None else list(config.report_steps), steps)
    window = int(config.sc_window)
    if not 1 <= window <= 256:
        raise DataError(f"--sc-window must be in 1..256, got {window}")
    sin_window = min(window, steps)

    mean, std = parse_floats(config.norm_mean, "--norm-mean"), parse_floats(config.norm_std, "--norm-std")
    net_path = _label_of(net)
    net = load(net_path) if net_path is not None else net
    program0 = from_converted(net)
    graph = net.graph
    try:
        sc_layers = gated_layers(program0, config.sc_layers if isinstance(config.sc_layers, str)
                                 else list(config.sc_layers))
    except ValueError as exc:
        raise DataError(f"--sc-layers: {exc}") from None
    data_path = _label_of(data)
    if data_path is not None:
        data = load_npz(data_path, split=config.split, samples=config.samples, input_scale=config.input_scale,
                        mean=mean, std=std, input_shape=program0.input_shape,
                        num_classes=int(np.prod(program0.readout.shape)))
    else:
        data = _as_data(data)
        if tuple(data.x.shape[1:]) != tuple(program0.input_shape):
            raise DataError(f"data: per-sample shape {tuple(data.x.shape[1:])} is not the network's input shape "
                            f"{tuple(program0.input_shape)}")
    if data.y is None:
        raise DataError("eval needs labels (key y or y_<split>)", path=data_path)
    n = len(data.indices)

    # ---- calibration data and λ
    calib_array = calibration is not None and not isinstance(calibration, (str, os.PathLike))
    calib_path = None if calib_array else (_label_of(calibration) or data_path)
    explicit_calib = calibration is not None
    if calib_array:
        have_calib = True
    else:
        have_calib = calib_path is not None and _has_train_split(calib_path, explicit_calib)
    if explicit_calib and not have_calib:
        raise DataError("no calibration images: --calib-data needs the key 'x_train' or 'x'", path=calib_path)
    lambda_from = config.lambda_from or ("data" if have_calib else "file")
    if lambda_from == "data" and not have_calib:
        raise DataError("--lambda-from data needs a training split (x_train) in --data or --calib-data",
                        path=calib_path)
    notes: list[str] = []
    if not have_calib:
        missing = [m for m in method_names if MethodSpec.of(m).needs_calibration]
        if missing and explicit_methods:
            raise DataError(f"method(s) {missing} need calibration images: give --calib-data with an x_train split "
                            "(the test data is never used for calibration)", path=calib_path)
        if missing:
            notes.append(f"skipped {missing}: no training split in {calib_path} (use --calib-data)")
            method_names = [m for m in method_names if m not in missing]
    x_cal = cal_idx = None
    calibration_info: dict[str, Any] = {"lambda_from": lambda_from, "source": None}
    if have_calib and (lambda_from == "data" or any(MethodSpec.of(m).needs_calibration for m in method_names)):
        if calib_array:
            x_cal, cal_idx = _calibration_array(calibration, config.calib_samples, config.calib_seed,
                                                program0.input_shape)
            source, file_hash, overlaps = "array", None, False
        else:
            x_cal, cal_idx = _load_calibration(calib_path, config.calib_samples, config.calib_seed,
                                               input_scale=config.input_scale, mean=mean, std=std,
                                               input_shape=program0.input_shape, explicit=explicit_calib)
            source = f"{calib_path}:{_calib_key(calib_path, explicit_calib)}"
            file_hash = _sha256_file(calib_path)
            overlaps = bool(config.split == "train" and data_path is not None
                            and os.path.abspath(calib_path) == os.path.abspath(data_path))
        calibration_info.update({
            "source": source, "file_sha256": file_hash, "samples": int(len(cal_idx)),
            "seed": int(config.calib_seed), "indices_sha256": _sha256_arrays(cal_idx),
            "overlaps_evaluated_split": overlaps})
        if overlaps:
            notes.append("the calibration images come from the evaluated split (--split train)")
    seed = int(net.provenance.seed if config.seed is None else config.seed)
    settings = _quantize_settings(net, config.preset, config.msat_units)
    model_hash = net.provenance.model_hash
    hp = dict(net.provenance.hyperparameters)
    builder = NetworkBuilder(
        graph, x_cal, calibration_ids=cal_idx, units=settings["units"], gamma=settings["gamma"],
        quantize_options=dict(preset=None, coefs=settings["coefs"], k_const=1.0, sc_gate=settings["sc_gate"],
                              frac_bits=settings["frac_bits"], state_bits=settings["state_bits"],
                              input_frac_bits=settings["input_frac_bits"], seed=seed, model_hash=model_hash),
        lambda_from=lambda_from, percentile_nonzero=config.percentile_nonzero,
        file_lambdas=({k: s.lam for k, s in net.neurons.items()}, net.input_scale, net.provenance.data_hash,
                      {"lambda_method": "file", "file_lambda_method": hp.get("lambda_method"),
                       "file_percentile": hp.get("percentile")}),
        precision=primary, correction_samples=config.bc_samples, correction_batch_size=config.batch_size,
        sc_window=window, sc_layers=sc_layers, sc_batch=config.sin_batch, sc_chunk=config.batch_size,
        log=say, progress=not quiet)

    # ---- networks per method
    say(f"eval {net_path or 'network'}: {n} sample(s) x {steps} steps; methods {', '.join(method_names)}; precision "
        f"{', '.join(precisions)}; λ from {lambda_from}" + (f" ({len(cal_idx)} calibration images, seed "
                                                            f"{config.calib_seed})" if cal_idx is not None else ""))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QuantizationWarning)
        nets = {m: builder.network(m) for m in method_names}
    quant_warnings = [str(w.message) for w in caught if issubclass(w.category, QuantizationWarning)]
    # every rank derived the networks itself: they must be the same before the ranks split the samples
    ctx.check_same([(m, nets[m]) for m in method_names], "the methods' converted networks")

    # ---- ANN (rank 0: only the aggregates need it)
    ann_acc = float("nan")
    if ctx.is_main:
        ann_pred = _ann_predictions(graph, data.x, config.batch_size)
        ann_acc = float(np.mean(ann_pred == data.y))
    say(f"ANN accuracy {100 * ann_acc:.2f} %")

    # ---- SNN runs
    lipool_size = sum(int(np.prod(s.shape)) for s in program0.stages if s.kind == "lipool")
    record_lipool = lipool_size > 0 and steps * min(config.batch_size, n) * lipool_size * 8 <= LIPOOL_RECORD_BYTES
    if lipool_size and not record_lipool:
        notes.append("LIPool output rates approximated by the rate of the pooled layer (recording too large)")
    layers = [s.name for s in program0.neuron_stages]
    sin_mode = "pooled" if config.sin_batch is None else f"per-batch mean (batch {config.sin_batch})"
    runs: list[dict[str, Any]] = []
    programs: dict[str, Any] = {}
    for method in method_names:
        programs[method] = from_converted(nets[method])
        for precision in precisions:
            lo, hi = ctx.samples(n, config.batch_size)  # this rank's share (all samples in one process)
            total = (hi - lo) * (steps + (sin_window if sin_window != steps else 0))
            with tqdm(total=total, desc=f"{method} {precision}", unit="sample-step", leave=False,
                      disable=quiet, file=sys.stderr) as bar:
                t0 = time.perf_counter()
                st = run_with_statistics(programs[method], data.x, steps, precision=precision,
                                         sample_ids=data.indices, window=sin_window,
                                         preactivations=builder.preactivations(method), chunk=config.batch_size,
                                         record_lipool=record_lipool, seed=seed, on_progress=bar.update,
                                         agreement_at=rsteps, map_chunks=ctx.map_chunks)
                wall = time.perf_counter() - t0
            if st is None:  # not rank 0: the statistics went to rank 0
                continue
            curve = (st.predictions == data.y.reshape(1, -1)).mean(axis=1)
            fr = st.firing_rates()
            sin = st.sin_stats(config.sin_batch)
            energy = metrics.energy_estimate(programs[method], st.source_rates(), steps)
            run = {
                "method": method, "precision": precision, "wall_s": wall,
                "accuracy_curve": [float(a) for a in curve],
                "accuracy_at": {str(t): float(curve[t - 1]) for t in rsteps},
                "steps_to": metrics.latency_targets(curve, ann_acc),
                "firing_rates": fr, "mean_firing_rate": float(np.mean(list(fr.values()))) if fr else 0.0,
                "sin": {"window": st.window, "mode": sin_mode,
                        "layers": {k: v.to_dict() for k, v in sin.items()},
                        "last_layer": sin[layers[-1]].to_dict() if layers else None},
                "energy": energy, "input_clipped": st.input_clipped, "saturated": st.saturated,
                "layer_agreement": {str(k): {layer: m.to_dict() for layer, m in per.items()}
                                    for k, per in st.agreement.items()},
            }
            runs.append(run)
            say(f"{method:>8} {precision:>5}: " + "  ".join(f"T={t}: {100 * curve[t - 1]:.2f}" for t in rsteps)
                + f"  | →ANN−1%: {run['steps_to']['ann-1%']}  FR {run['mean_firing_rate']:.4f}  "
                  f"E/E_ANN {100 * energy['ratio']:.1f} %  ({wall:.1f} s)")

    if not ctx.is_main:
        return None

    # ---- SIN with / without SC (last spiking layer)
    sin_last: dict[str, dict[str, Any]] = {}
    for precision in precisions:
        row = {}
        pairs = [(m.removesuffix("+sc"), m) for m in method_names if MethodSpec.of(m).sc] or [("msat", None)]
        labels = [(f"without_sc ({a})", a) for a, _ in pairs] + [(f"with_sc ({b})", b) for _, b in pairs if b]
        for label, m in labels:
            r = next((r for r in runs if r["method"] == m and r["precision"] == precision), None)
            row[label] = None if r is None else r["sin"]["last_layer"]
        sin_last[precision] = row

    # ---- traces
    trace_method = next((m for m in ("msat", "msat-norm", "msat+sc", "msat-norm+sc", "dtt", "det")
                         if m in method_names), method_names[0])
    trace_steps = min(steps, TRACE_STEPS_MAX)
    last = layers[-1]
    tr = neuron_traces(programs[trace_method], last, data.x[0], trace_steps, precision=primary,
                       sample_id=int(data.indices[0]), seed=seed)
    z0 = builder.preactivations(trace_method)(data.x[:1])[last].reshape(-1)
    picks = _pick_neurons(z0, tr["spikes"], min(window, trace_steps))

    from netx_export.quantize import tool_version

    arguments = {"net": net_path, "data": data_path,
                 "calibration": "array" if calib_array else _label_of(calibration),
                 "methods": None if methods is None else
                 (methods if isinstance(methods, str) else [str(m) for m in methods]), **config.to_dict()}
    manifest: dict[str, Any] = {
        "tool": "msat-lava eval",
        "tool_version": tool_version(),
        "arguments": arguments,
        "network": {"path": net_path, "file_sha256": None if net_path is None else _sha256_file(net_path),
                    "model_hash": model_hash, "file_method": net.method, "file_data_hash": net.provenance.data_hash,
                    "file_seed": int(net.provenance.seed), "format_version": net.provenance.format_version},
        "data": {"path": data_path, "file_sha256": None if data_path is None else _sha256_file(data_path),
                 "split": config.split if data_path is not None else None,
                 "samples": n, "samples_requested": config.samples if data_path is not None else None,
                 "subset": ("all" if config.samples is None else "strided (msat_lava.data.strided_indices)")
                 if data_path is not None else "given",
                 "indices_sha256": _sha256_arrays(data.indices),
                 "inputs_sha256": _sha256_arrays(data.x, data.y),
                 "normalization": {"input_scale": config.input_scale, "mean": mean, "std": std}},
        "calibration": calibration_info,
        "seeds": {"calibration_subset": int(config.calib_seed), "sc_gate": seed},
        "distributed": ctx.describe(),
        "config": {"steps": steps, "methods": method_names, "precisions": precisions, "report_steps": rsteps,
                   "sc_window": window, "sc_layers": sc_layers, "sin_window": sin_window, "sin_mode": sin_mode,
                   "batch_size": config.batch_size, "percentile_nonzero": bool(config.percentile_nonzero),
                   "coefs": settings["coefs"].to_dict(), "coefs_source": settings["coefs_source"],
                   "gamma": settings["gamma"], "sc_gate": settings["sc_gate"], "frac_bits": settings["frac_bits"],
                   "state_bits": settings["state_bits"], "msat_units": settings["units"],
                   "msat_units_source": settings["units_source"], "torch_threads": torch.get_num_threads(),
                   "lipool_rates": "measured" if record_lipool or not lipool_size else "approximated",
                   "firing_rate": "FR^l(T) = spikes / (samples x neurons x T), gated spikes; mean_firing_rate = "
                                  "unweighted mean over the spiking layers (ALGORITHMS §4.2)",
                   "sin_definitions": "msat_lava.metrics (ALGORITHMS §3.1, §4.1); z = ANN pre-activation"},
        "report_steps": rsteps,
        "ann": {"accuracy": ann_acc},
        "methods": {m: _net_summary(nets[m], builder.lambdas_for(m)[3]) for m in method_names},
        "sc_calibration": {m: r.to_dict() for m, r in builder.sc_results.items()},
        "bias_correction": {k: r.to_dict() for k, (r, _) in builder.corrections.items()},
        "runs": runs,
        "sin_last_layer": sin_last,
        "layers": layers,
        "energy_convention": metrics.ENERGY_CONVENTION,
        "traces": {"method": trace_method, "precision": primary, "layer": last, "sample": int(data.indices[0]),
                   "steps": trace_steps, "neurons": [{"index": i, "kind": k, "z": float(z0[i])} for i, k in picks]},
        "notes": notes,
        "quantization_warnings": quant_warnings,
        "files": {},
    }
    return EvalReport(manifest, networks=nets, traces=tr, z=z0, t_start=t_start)


def check_out_dir(path: str | os.PathLike) -> Path:
    """An evaluation output directory: a new one, or one that holds only evaluation results (it is replaced
    whole); BadInput / DataError naming ``--out`` otherwise."""
    from msat_lava.cli_common import check_destination
    from msat_lava.data import DataError
    from msat_lava.reports import FILES

    out_dir = check_destination(path, "--out", directory=True)
    if out_dir.is_dir():
        other = sorted(p.name for p in out_dir.iterdir() if p.name not in set(FILES.values()))
        if other:
            raise DataError(f"--out {str(out_dir)!r} holds files eval did not write ({other[:3]}); it is replaced "
                            "whole, so give a new directory or a previous eval output")
    return out_dir


class EvalReport:
    """The result of :func:`evaluate`: :attr:`manifest` (the dict ``eval.json`` holds, module
    :mod:`msat_lava.cli_eval` docstring for its keys), :attr:`networks` (method → the ConvertedNetwork that ran),
    typed accessors and :meth:`save`.

    Accessors take a method name (or MethodSpec) and a precision (default: the primary one, the first run):
    :meth:`run`, :meth:`accuracy` (curve, numpy (T,)), :meth:`accuracy_at`, :meth:`steps_to`,
    :meth:`firing_rates`, :meth:`energy_ratio`, :meth:`lambdas`, :meth:`sc_p`; and :attr:`methods`,
    :attr:`precisions`, :attr:`steps`, :attr:`layers`, :attr:`report_steps`, :attr:`ann_accuracy`.
    """

    def __init__(self, manifest: dict[str, Any], *, networks: Mapping[str, Any] | None = None,
                 traces: Mapping[str, np.ndarray] | None = None, z: np.ndarray | None = None,
                 t_start: float | None = None):
        self.manifest = manifest
        self.networks = dict(networks or {})
        self._traces, self._z = traces, z
        self._t_start = time.perf_counter() if t_start is None else t_start

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EvalReport":
        """The report of an ``eval.json`` (or its directory); no networks or traces (it cannot be saved again)."""
        from msat_lava.reports import FILES

        p = Path(path)
        p = p / FILES["manifest"] if p.is_dir() else p
        return cls(json.loads(p.read_text(encoding="utf-8")))

    def __repr__(self) -> str:
        return (f"EvalReport(methods={self.methods}, precisions={self.precisions}, steps={self.steps}, "
                f"ann_accuracy={self.ann_accuracy:.4f})")

    # ---- what was run
    @property
    def methods(self) -> list[str]:
        return list(self.manifest["config"]["methods"])

    @property
    def precisions(self) -> list[str]:
        return list(self.manifest["config"]["precisions"])

    @property
    def steps(self) -> int:
        return int(self.manifest["config"]["steps"])

    @property
    def layers(self) -> list[str]:
        return list(self.manifest["layers"])

    @property
    def report_steps(self) -> list[int]:
        return list(self.manifest["report_steps"])

    @property
    def ann_accuracy(self) -> float:
        return float(self.manifest["ann"]["accuracy"])

    # ---- per run
    def _name(self, method: "str | MethodSpec") -> str:
        name = str(method) if isinstance(method, MethodSpec) else str(MethodSpec.parse(method))
        if name not in self.methods:
            raise KeyError(f"method {name!r} was not evaluated; evaluated: {self.methods}")
        return name

    def run(self, method: "str | MethodSpec", precision: str | None = None) -> dict[str, Any]:
        """The manifest's run record of ``method`` in ``precision`` (default: the primary precision)."""
        name = self._name(method)
        precision = self.precisions[0] if precision is None else precision
        for r in self.manifest["runs"]:
            if r["method"] == name and r["precision"] == precision:
                return r
        raise KeyError(f"no run of {name!r} in precision {precision!r}; precisions: {self.precisions}")

    def accuracy(self, method: "str | MethodSpec", precision: str | None = None) -> np.ndarray:
        """Accuracy after every step 1..T (float64 (T,))."""
        return np.asarray(self.run(method, precision)["accuracy_curve"], dtype=np.float64)

    def accuracy_at(self, method: "str | MethodSpec", t: int, precision: str | None = None) -> float:
        """Accuracy after step ``t`` (1-based)."""
        if not 1 <= int(t) <= self.steps:
            raise ValueError(f"t must be in 1..{self.steps}, got {t}")
        return float(self.accuracy(method, precision)[int(t) - 1])

    def steps_to(self, method: "str | MethodSpec", target: str = "ann-1%", precision: str | None = None
                 ) -> int | None:
        """1-based steps to reach ``target`` (ann-1%, ann-0.1%, ann: the ANN accuracy minus 1 / 0.1 points, or
        it); None when not reached within T."""
        targets = self.run(method, precision)["steps_to"]
        if target not in targets:
            raise KeyError(f"unknown target {target!r}; known: {sorted(targets)}")
        return targets[target]

    def firing_rates(self, method: "str | MethodSpec", precision: str | None = None) -> dict[str, float]:
        """Firing rate per spiking layer over T (spikes / neuron / step)."""
        return dict(self.run(method, precision)["firing_rates"])

    def energy_ratio(self, method: "str | MethodSpec", precision: str | None = None) -> float:
        """E_SNN / E_ANN of the energy ESTIMATE (manifest ``energy_convention``)."""
        return float(self.run(method, precision)["energy"]["ratio"])

    def lambdas(self, method: "str | MethodSpec") -> dict[str, float]:
        """λ per spiking layer of the method's network."""
        return dict(self.manifest["methods"][self._name(method)]["lambda"])

    def sc_p(self, method: "str | MethodSpec") -> dict[str, float]:
        """Spike confidence p per gated layer of a "+sc" method ({} for the others)."""
        return dict(self.manifest["methods"][self._name(method)]["sc_p"])

    def to_json(self) -> str:
        return json.dumps(self.manifest, indent=2) + "\n"

    # ---- files
    def save(self, out_dir: str | os.PathLike, *, html: bool = True) -> dict[str, Path]:
        """Write eval.json, the five PNGs (:mod:`msat_lava.reports`) and, with ``html``, report.html into
        ``out_dir``: written into a temporary sibling directory that then replaces ``out_dir``, so it appears
        whole (:func:`check_out_dir`: a directory holding other files is refused). Sets the manifest's
        ``files`` and ``total_s`` (seconds since :func:`evaluate` started). Returns {key: path}."""
        from msat_lava import reports
        from msat_lava.verify import atomic_write_json
        from netx_export.fileio import atomic_directory

        if self._traces is None:
            raise ValueError("this report has no neuron traces (EvalReport.load): it cannot be saved again")
        out_dir = check_out_dir(out_dir)
        files = {k: out_dir / v for k, v in reports.FILES.items()}
        manifest = self.manifest
        with atomic_directory(out_dir) as tmp_dir:
            tmp_files = {k: tmp_dir / v for k, v in reports.FILES.items()}
            images = reports.write_figures(tmp_dir, manifest, self._traces, self._z)
            manifest["files"] = {k: str(v) for k, v in files.items()}
            if html:
                reports.html_report(tmp_files["html"], manifest, images)
            else:
                manifest["files"].pop("html")
            manifest["total_s"] = time.perf_counter() - self._t_start
            atomic_write_json(manifest, tmp_files["manifest"])
        return {k: Path(v) for k, v in manifest["files"].items()}


class _CallableModule(__import__("types").ModuleType):
    """``msat_lava.evaluate`` is both this module and the library call ``msat_lava.evaluate(net, data, ...)``:
    importing the submodule binds it to the package attribute, so the module itself calls :func:`evaluate`."""

    def __call__(self, *args: Any, **kwargs: Any) -> "EvalReport | None":
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
