"""Bit-exactness of the Lava fixed-point run against the reference simulator, and the fixed↔float report.

:func:`verify` runs the same inputs (same dataset indices, so the same spike-confidence gate keys) through

* Lava, fixed point (:func:`msat_lava.lava.build.run_lava`, every stage recorded), and
* the reference simulator, fixed point (:func:`msat_lava.reference.simulate`, every stage + the readout),

and demands **bit-exact** equality of every stage's payload (spiking layers: θ̂ at spikes; LIPool: pooled
payloads; readout: the accumulated integer logits) at every step, plus equal readouts and predictions.

**First divergence.** On a mismatch the report names the first one in causal order: the earliest step t
(steps count from 0 inside each sample; samples are independent and reset at their boundary), then the
earliest stage in topological order at that step (stages update in that order within a step), then the
lowest sample position, then the lowest neuron (flat C-order index, also given as a multi-index into the
stage's shape), with both values. A layer that diverges at step t can only disturb later layers at step t
and every layer after t, so this points at the stage where the two backends first part.

**Fixed vs float** (reference only, same inputs; ``compare_float=True``): accuracy after every step for
both precisions (when labels are given) and its difference at the reported T's, the fraction of samples
whose predictions agree, per spiking layer the relative spike-count error
``mean|count_fixed − count_float| / mean count_float`` and the firing rates, saturation counts of the fixed
state (per layer, (sample, neuron, step) triples where |v̂| reached the bound), the number of clipped input
values, the readout error in logit units at every reported T (``max|Out_fixed·2^−F − Out_float|``), and per
spiking layer the membrane error in threshold units, ``|v̂(t)·2^−F − v(t)/λ|`` (the residual after step t,
in units of the layer's λ = θ at t = 0), its maximum and mean over samples, neurons and the reported T's. A
spike that one precision fires a step before the other moves that residual by the threshold θ(t) ≤ λ (MSAT's
quiescent θ is a fraction of λ), so a maximum of that order says that the two spike trains parted somewhere;
the mean says how much of the layer that is.

:meth:`VerifyReport.to_json` writes the report atomically (temporary file + ``os.replace``).

**Against a recorded output** (:func:`verify_against`, ``msat-lava verify NET --against RECORDED.npz``): a run
made elsewhere (Loihi 2 on an INRC system, or any backend) saved with :func:`save_recorded` is compared with
the fixed-point reference on the same dataset indices: whatever it recorded (stage traces, the readout, the
predictions) bit for bit, reporting the first divergence in the same causal order.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from netx_export.fileio import atomic_target

from msat_lava.program import Program, from_converted

__all__ = ["Divergence", "StageComparison", "FloatComparison", "VerifyReport", "verify", "as_program",
           "compare_outputs", "compare_fixed_float", "default_report_steps", "atomic_write_json", "Recorded",
           "save_recorded", "load_recorded", "verify_against", "AgainstReport"]


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
def as_program(net_or_program: Any) -> Program:
    """A :class:`Program` from a Program or a :class:`netx_export.network.ConvertedNetwork`."""
    if isinstance(net_or_program, Program):
        return net_or_program
    if hasattr(net_or_program, "targets") and hasattr(net_or_program, "graph"):
        return from_converted(net_or_program)
    raise TypeError(f"expected a ConvertedNetwork or a Program, got {type(net_or_program).__name__}")


def default_report_steps(steps: int) -> list[int]:
    """Powers of two below ``steps``, and ``steps`` itself: 1, 2, 4, ..., T."""
    out = [1 << k for k in range(int(math.log2(steps)) + 1) if (1 << k) < steps] if steps >= 1 else []
    return out + [int(steps)]


def _check_report_steps(report_steps: Sequence[int] | None, steps: int) -> list[int]:
    if report_steps is None:
        return default_report_steps(steps)
    out = sorted({int(t) for t in report_steps})
    bad = [t for t in out if t < 1 or t > steps]
    if bad:
        raise ValueError(f"report steps {bad} are outside 1..{steps}")
    return out


def _scalar(v: Any) -> int | float:
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 2 ** 63 else f


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def atomic_write_json(data: Any, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (temporary file in the same directory, then
    ``os.replace``); parent directories are created; an existing file is refused unless ``overwrite``.
    Returns the path."""
    path = Path(path)
    with atomic_target(path, make_parents=True, overwrite=overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(_jsonable(data), fh, indent=2, allow_nan=False)
            fh.write("\n")
    return path


# ----------------------------------------------------------------------------------------------------------
# report types
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Divergence:
    """The first differing value between the two runs (see the module docstring for the order).

    ``stage``: stage name ('predictions' when only the argmax differs); ``kind``: neuron | lipool | readout |
    predictions | shape; ``step``: 0-based step within the sample; ``sample``: position in the run;
    ``sample_id``: dataset index; ``flat_index`` / ``index``: neuron (C-order) in the stage's shape;
    ``lava`` / ``reference``: the two values; ``mismatches``: how many values of that stage differ in total.
    """

    stage: str
    kind: str
    step: int
    sample: int
    sample_id: int
    flat_index: int
    index: tuple[int, ...]
    lava: int | float
    reference: int | float
    mismatches: int = 1
    detail: str = ""

    def describe(self) -> str:
        """One line for humans."""
        if self.kind == "shape":
            return f"stage {self.stage!r}: {self.detail}"
        return (f"stage {self.stage!r} ({self.kind}) at step {self.step} (1-based {self.step + 1}), sample "
                f"{self.sample} (dataset index {self.sample_id}), neuron {self.flat_index} "
                f"{tuple(self.index)}: lava {self.lava} != reference {self.reference} "
                f"({self.mismatches} differing value(s) in this stage)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["index"] = list(self.index)
        return d


@dataclass(frozen=True)
class StageComparison:
    """Per stage: values compared and how many differ."""

    name: str
    kind: str
    shape: tuple[int, ...]
    compared: int
    mismatches: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass
class FloatComparison:
    """Fixed vs float reference on the same inputs (see the module docstring)."""

    steps: int
    report_steps: list[int]
    accuracy_fixed: list[float] | None       # after every step 1..T (labels given)
    accuracy_float: list[float] | None
    accuracy_delta: dict[int, float] | None  # fixed − float at each reported T
    prediction_agreement: dict[int, float]   # fraction of samples with equal predictions at each reported T
    spike_count_error: dict[str, float]      # mean|c_fixed − c_float| / mean c_float (nan → None if no spikes)
    spike_rate_fixed: dict[str, float]       # spikes per neuron per step
    spike_rate_float: dict[str, float]
    saturated: dict[str, int]
    input_clipped: int
    readout_max_abs_error: dict[int, float]  # logits, at each reported T
    readout_scale: float                     # max |Out_float| at T (for relative reading)
    membrane_error: dict[str, float] | None = None       # max |v̂·2^−F − v/λ| per spiking layer (units of λ)
    membrane_error_mean: dict[str, float] | None = None  # mean of the same
    membrane_error_units: str = "the layer's λ (θ at t = 0); over samples, neurons and the reported T's"
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass
class VerifyReport:
    """Outcome of :func:`verify`. ``bit_exact`` is the verdict; ``divergence`` the first mismatch (or None)."""

    bit_exact: bool
    precision: str
    steps: int
    n_samples: int
    sample_ids: list[int]
    stages: list[StageComparison]
    divergence: Divergence | None
    predictions_equal: bool
    readout_equal: bool
    lava_wall_s: float
    lava_wall_per_sample_s: float
    reference_wall_s: float
    input_clipped: int
    report_steps: list[int] = field(default_factory=list)
    lava_accuracy: dict[int, float] | None = None
    reference_accuracy: dict[int, float] | None = None
    float_comparison: FloatComparison | None = None
    network: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({
            "bit_exact": self.bit_exact,
            "precision": self.precision,
            "steps": self.steps,
            "n_samples": self.n_samples,
            "sample_ids": list(self.sample_ids),
            "stages": [s.to_dict() for s in self.stages],
            "divergence": None if self.divergence is None else self.divergence.to_dict(),
            "predictions_equal": self.predictions_equal,
            "readout_equal": self.readout_equal,
            "lava_wall_s": self.lava_wall_s,
            "lava_wall_per_sample_s": self.lava_wall_per_sample_s,
            "reference_wall_s": self.reference_wall_s,
            "input_clipped": self.input_clipped,
            "report_steps": self.report_steps,
            "lava_accuracy": self.lava_accuracy,
            "reference_accuracy": self.reference_accuracy,
            "float_comparison": None if self.float_comparison is None else self.float_comparison.to_dict(),
            "network": self.network,
        })

    def to_json(self, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` atomically; returns the path."""
        return atomic_write_json(self.to_dict(), path, overwrite=overwrite)

    def format(self) -> str:
        """A short human-readable summary (used by ``msat-lava verify``)."""
        lines = [f"{'BIT-EXACT' if self.bit_exact else 'MISMATCH'}: Lava fixed point vs reference, "
                 f"{self.n_samples} sample(s) x {self.steps} steps, {len(self.stages)} stages, "
                 f"{sum(s.compared for s in self.stages)} values compared"]
        if self.divergence is not None:
            lines.append(f"first divergence: {self.divergence.describe()}")
            bad = [f"{s.name} ({s.mismatches})" for s in self.stages if s.mismatches]
            if bad:
                lines.append(f"differing stages: {', '.join(bad)}")
        lines.append(f"Lava wall time {self.lava_wall_s:.2f} s ({self.lava_wall_per_sample_s:.3f} s/sample); "
                     f"reference {self.reference_wall_s:.2f} s; input values clipped: {self.input_clipped}")
        if self.lava_accuracy:
            lines.append("Lava accuracy: " + ", ".join(f"T={t} {a:.4f}" for t, a in self.lava_accuracy.items()))
        fc = self.float_comparison
        if fc is not None:
            if fc.accuracy_delta is not None:
                lines.append("fixed - float accuracy: " + ", ".join(
                    f"T={t} {d:+.4f}" for t, d in fc.accuracy_delta.items()))
            lines.append("fixed/float prediction agreement: " + ", ".join(
                f"T={t} {a:.3f}" for t, a in fc.prediction_agreement.items()))
            errs = ", ".join(f"{k} {'n/a' if v is None else f'{v:.4f}'}" for k, v in fc.spike_count_error.items())
            lines.append(f"spike-count error |fixed-float|/float: {errs}")
            sat = sum(fc.saturated.values())
            lines.append(f"saturated state values: {sat}; readout max |error| at T={fc.steps}: "
                         f"{fc.readout_max_abs_error.get(fc.steps, float('nan')):.4g} logits "
                         f"(max |logit| {fc.readout_scale:.4g})")
            if fc.membrane_error:
                worst = max(fc.membrane_error, key=fc.membrane_error.get)
                mean = max(fc.membrane_error_mean.values())
                lines.append(f"membrane |fixed-float| in units of λ at T={','.join(map(str, fc.report_steps))}: "
                             f"max {fc.membrane_error[worst]:.4g} ({worst}), largest layer mean {mean:.4g}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# comparison
# ----------------------------------------------------------------------------------------------------------
def _stage_arrays(program: Program, lava: Any, ref: Any) -> list[tuple[str, str, tuple[int, ...], Any, Any]]:
    out = []
    for s in program.stages:
        if s.kind == "readout":
            a, b = lava.readout, ref.readout
        else:
            a, b = lava.traces.get(s.name), ref.traces.get(s.name)
        out.append((s.name, s.kind, tuple(s.shape), a, b))
    return out


def compare_outputs(program: Program, lava: Any, ref: Any, sample_ids: Sequence[int] | None = None
                    ) -> tuple[Divergence | None, list[StageComparison], bool, bool]:
    """Compare two runs (objects with ``predictions`` (T, N), ``readout`` (T, N, K) and ``traces``
    {stage: (T, N, *shape)}) exactly. Returns (first divergence or None, per-stage comparisons,
    predictions equal, readout equal). Missing traces count as a 'shape' divergence."""
    steps, n = np.asarray(ref.predictions).shape
    ids = np.arange(n, dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
    comparisons: list[StageComparison] = []
    firsts: list[tuple[int, int, Divergence]] = []   # (step, stage order, divergence)
    shape_problem: Divergence | None = None
    for order, (name, kind, shape, a, b) in enumerate(_stage_arrays(program, lava, ref)):
        if a is None or b is None:
            missing = "lava" if a is None else "reference"
            shape_problem = shape_problem or Divergence(name, "shape", 0, 0, int(ids[0]) if n else 0, 0, (), 0, 0,
                                                        detail=f"no {missing} output recorded")
            comparisons.append(StageComparison(name, kind, shape, 0, 0))
            continue
        a = np.asarray(a)
        b = np.asarray(b)
        width = int(np.prod(shape)) if shape else 1
        want = (steps, n) + shape
        if a.size != steps * n * width or b.size != steps * n * width:
            shape_problem = shape_problem or Divergence(
                name, "shape", 0, 0, int(ids[0]) if n else 0, 0, (), 0, 0,
                detail=f"lava output {a.shape} / reference output {b.shape}, expected {want}")
            comparisons.append(StageComparison(name, kind, shape, 0, 0))
            continue
        a = a.reshape(steps, n, width)
        b = b.reshape(steps, n, width)
        diff = a != b
        count = int(diff.sum())
        comparisons.append(StageComparison(name, kind, shape, int(diff.size), count))
        if not count:
            continue
        per_step = diff.any(axis=(1, 2))
        t = int(np.argmax(per_step))
        per_sample = diff[t].any(axis=1)
        i = int(np.argmax(per_sample))
        j = int(np.argmax(diff[t, i]))
        index = tuple(int(v) for v in np.unravel_index(j, shape)) if shape else ()
        firsts.append((t, order, Divergence(name, kind, t, i, int(ids[i]), j, index, _scalar(a[t, i, j]),
                                            _scalar(b[t, i, j]), count)))
    pa, pb = np.asarray(lava.predictions), np.asarray(ref.predictions)
    preds_equal = pa.shape == pb.shape and bool(np.array_equal(pa, pb))
    ra, rb = np.asarray(lava.readout), np.asarray(ref.readout)
    readout_equal = ra.shape == rb.shape and bool(np.array_equal(ra, rb))
    if shape_problem is not None:
        return shape_problem, comparisons, preds_equal, readout_equal
    if firsts:
        firsts.sort(key=lambda f: (f[0], f[1]))
        return firsts[0][2], comparisons, preds_equal, readout_equal
    if not preds_equal:
        if pa.shape != pb.shape:
            return (Divergence("predictions", "shape", 0, 0, int(ids[0]) if n else 0, 0, (), 0, 0,
                               detail=f"lava predictions {pa.shape} vs reference {pb.shape}"),
                    comparisons, preds_equal, readout_equal)
        diff = pa != pb
        t = int(np.argmax(diff.any(axis=1)))
        i = int(np.argmax(diff[t]))
        return (Divergence("predictions", "predictions", t, i, int(ids[i]), 0, (), _scalar(pa[t, i]),
                           _scalar(pb[t, i]), int(diff.sum())), comparisons, preds_equal, readout_equal)
    return None, comparisons, preds_equal, readout_equal


def _accuracy_at(predictions: np.ndarray, labels: np.ndarray, report_steps: Sequence[int]) -> dict[int, float]:
    acc = (np.asarray(predictions) == np.asarray(labels).reshape(1, -1)).mean(axis=1)
    return {int(t): float(acc[t - 1]) for t in report_steps}


def compare_fixed_float(program: Program, fixed: Any, flt: Any, *, labels: Sequence[int] | None = None,
                        report_steps: Sequence[int] | None = None) -> FloatComparison:
    """Build a :class:`FloatComparison` from a fixed and a float reference run of the same inputs (both with
    ``record_counts=True`` and ``record_readout=True``; the membrane error needs ``membrane_at`` = the report
    steps in both, and is None otherwise)."""
    steps = int(fixed.steps)
    rsteps = _check_report_steps(report_steps, steps)
    acc_fx = acc_fl = delta = None
    if labels is not None:
        y = np.asarray(labels).reshape(1, -1)
        acc_fx = (fixed.predictions == y).mean(axis=1)
        acc_fl = (flt.predictions == y).mean(axis=1)
        delta = {t: float(acc_fx[t - 1] - acc_fl[t - 1]) for t in rsteps}
        acc_fx, acc_fl = [float(a) for a in acc_fx], [float(a) for a in acc_fl]
    agree = {t: float(np.mean(fixed.predictions[t - 1] == flt.predictions[t - 1])) for t in rsteps}
    count_err: dict[str, float | None] = {}
    rate_fx: dict[str, float] = {}
    rate_fl: dict[str, float] = {}
    for s in program.neuron_stages:
        cf = np.asarray(fixed.spike_counts.get(s.name, np.zeros(0)), dtype=np.float64)
        cl = np.asarray(flt.spike_counts.get(s.name, np.zeros(0)), dtype=np.float64)
        if cf.size == 0 or cf.shape != cl.shape:
            continue
        mean_fl = float(cl.mean())
        count_err[s.name] = float(np.abs(cf - cl).mean() / mean_fl) if mean_fl > 0 else (
            0.0 if float(cf.mean()) == 0 else None)
        rate_fx[s.name] = float(cf.mean() / steps)
        rate_fl[s.name] = float(cl.mean() / steps)
    scale = 2.0 ** -program.frac_bits
    ro_err: dict[int, float] = {}
    ro_scale = 0.0
    if fixed.readout is not None and flt.readout is not None:
        for t in rsteps:
            ro_err[t] = float(np.max(np.abs(fixed.readout[t - 1] * scale - flt.readout[t - 1]))) \
                if fixed.readout.size else 0.0
        ro_scale = float(np.max(np.abs(flt.readout[-1]))) if flt.readout.size else 0.0
    mem_max = mem_mean = None
    if all(t in fixed.membrane and t in flt.membrane for t in rsteps):
        mem_max, mem_mean = {}, {}
        for s in program.neuron_stages:
            err = np.stack([np.abs(fixed.membrane[t][s.name] - flt.membrane[t][s.name]) for t in rsteps])
            mem_max[s.name] = float(err.max()) if err.size else 0.0
            mem_mean[s.name] = float(err.mean()) if err.size else 0.0
    return FloatComparison(steps=steps, report_steps=rsteps, accuracy_fixed=acc_fx, accuracy_float=acc_fl,
                           accuracy_delta=delta, prediction_agreement=agree, spike_count_error=count_err,
                           spike_rate_fixed=rate_fx, spike_rate_float=rate_fl,
                           saturated={k: int(v) for k, v in fixed.saturated.items()},
                           input_clipped=int(fixed.input_clipped), readout_max_abs_error=ro_err,
                           readout_scale=ro_scale, membrane_error=mem_max, membrane_error_mean=mem_mean)


# ----------------------------------------------------------------------------------------------------------
# verify
# ----------------------------------------------------------------------------------------------------------
def verify(net_or_program: Any, x: Any, steps: int, sample_ids: Sequence[int] | None = None, *,
           labels: Sequence[int] | None = None, report_steps: Sequence[int] | None = None,
           compare_float: bool = True, seed: int | None = None, reference_program: Program | None = None,
           progress: bool = False) -> VerifyReport:
    """Run ``x`` (N, *input_shape) for ``steps`` steps in Lava (fixed) and the reference (fixed) and compare
    every stage bit for bit (module docstring); optionally compare fixed vs float in the reference.

    ``sample_ids``: dataset indices (spike-confidence gate keys; default 0..N−1); ``labels``: for accuracies;
    ``report_steps``: T's to report (default 1, 2, 4, ..., T); ``seed``: gate seed (default the network's);
    ``reference_program``: run the reference on this program instead of the same one (to check a modified
    copy, or in tests a deliberately corrupted one). Every Lava run is stopped, also on errors.
    """
    from msat_lava.lava.build import run_lava
    from msat_lava.reference import simulate

    program = as_program(net_or_program)
    ref_program = program if reference_program is None else as_program(reference_program)
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    n = int(x.shape[0])
    if n < 1:
        raise ValueError("verify needs at least one sample")
    ids = np.arange(n, dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"sample_ids must have shape ({n},), got {ids.shape}")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    rsteps = _check_report_steps(report_steps, steps)
    names = tuple(s.name for s in program.stages)
    ref_names = tuple(s.name for s in ref_program.stages)

    lava = run_lava(program, x, steps, precision="fixed", sample_ids=ids, seed=seed, record=names)
    t0 = time.perf_counter()
    mem_at = rsteps if compare_float else ()
    ref = simulate(ref_program, x, steps, precision="fixed", seed=seed, sample_ids=ids, record=ref_names,
                   record_readout=True, record_counts=compare_float, membrane_at=mem_at, progress=progress)
    ref_wall = time.perf_counter() - t0

    divergence, stages, preds_equal, readout_equal = compare_outputs(program, lava, ref, ids)
    bit_exact = divergence is None and preds_equal and readout_equal

    float_cmp = None
    if compare_float:
        t1 = time.perf_counter()
        flt = simulate(ref_program, x, steps, precision="float", seed=seed, sample_ids=ids, record_readout=True,
                       record_counts=True, membrane_at=mem_at, progress=progress)
        float_cmp = compare_fixed_float(ref_program, ref, flt, labels=labels, report_steps=rsteps)
        float_cmp.wall_s = time.perf_counter() - t1

    network = {"input_shape": list(program.input_shape), "input_scale": program.input_scale,
               "frac_bits": program.frac_bits, "seed": program.seed if seed is None else int(seed),
               "stages": len(program.stages),
               "modes": sorted({s.spec.mode for s in program.neuron_stages if s.spec is not None})}
    return VerifyReport(
        bit_exact=bit_exact, precision="fixed", steps=steps, n_samples=n, sample_ids=[int(i) for i in ids],
        stages=stages, divergence=divergence, predictions_equal=preds_equal, readout_equal=readout_equal,
        lava_wall_s=float(lava.wall_s), lava_wall_per_sample_s=float(lava.wall_s) / n,
        reference_wall_s=ref_wall, input_clipped=int(lava.input_clipped), report_steps=rsteps,
        lava_accuracy=None if labels is None else _accuracy_at(lava.predictions, labels, rsteps),
        reference_accuracy=None if labels is None else _accuracy_at(ref.predictions, labels, rsteps),
        float_comparison=float_cmp, network=network)


# ----------------------------------------------------------------------------------------------------------
# verify --against RECORDED_OUTPUT (a hardware run, or any earlier run)
# ----------------------------------------------------------------------------------------------------------
#: Keys of a recorded output (.npz). Required: ``predictions`` (T, N) integers, ``indices`` (N,) dataset
#: indices. Optional: ``readout`` (T, N, K) accumulated fixed-point readout, ``trace_<stage>`` (T, N, *shape)
#: payloads of a stage, ``steps``. Ignored (written by ``msat-lava run --predictions``): ``labels``,
#: ``accuracy``, ``report_steps``, ``backend``. Anything else is refused.
RECORDED_IGNORED = ("labels", "accuracy", "report_steps", "backend")
TRACE_PREFIX = "trace_"


@dataclass
class Recorded:
    """A recorded output (see :data:`RECORDED_IGNORED` for the file layout)."""

    predictions: np.ndarray
    indices: np.ndarray
    readout: np.ndarray | None = None
    traces: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.predictions.shape[0])


def save_recorded(path: str | os.PathLike, *, predictions: Any, indices: Any, readout: Any = None,
                  traces: dict[str, Any] | None = None, steps: int | None = None, backend: str | None = None,
                  overwrite: bool = False) -> Path:
    """Write a recorded output atomically (``np.savez_compressed``; ``backend`` is not stored: only numeric
    arrays are ever read back)."""
    arrays: dict[str, Any] = {"predictions": np.asarray(predictions, dtype=np.int64),
                              "indices": np.asarray(indices, dtype=np.int64)}
    if steps is not None:
        arrays["steps"] = np.int64(steps)
    if readout is not None:
        arrays["readout"] = np.asarray(readout)
    for name, value in (traces or {}).items():
        arrays[TRACE_PREFIX + name] = np.asarray(value)
    path = Path(path)
    with atomic_target(path, make_parents=True, suffix=".npz", overwrite=overwrite) as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def load_recorded(path: str | os.PathLike, program: Program) -> Recorded:
    """Read and check a recorded output against ``program`` (every problem a DataError naming the file and
    key): shapes are checked from the ``.npy`` headers before anything is read."""
    from msat_lava.cli_common import MAX_STEPS
    from msat_lava.data import DataError, member_header, npz_members, read_member

    spath = str(path)
    members = npz_members(spath)
    known = {s.name for s in program.stages}
    headers = {}
    for key, info in members.items():
        if key in RECORDED_IGNORED:
            continue
        if key in ("predictions", "indices", "readout", "steps") or (
                key.startswith(TRACE_PREFIX) and key[len(TRACE_PREFIX):] in known):
            headers[key] = member_header(spath, info)
        elif key.startswith(TRACE_PREFIX):
            raise DataError(f"no stage {key[len(TRACE_PREFIX):]!r} in the network", path=spath, key=key)
        else:
            raise DataError("unexpected member (expected predictions, indices, readout, steps, trace_<stage>)",
                            path=spath, key=key)
    for key in ("predictions", "indices"):
        if key not in headers:
            raise DataError("missing", path=spath, key=key)
    ph, ih = headers["predictions"], headers["indices"]
    if len(ph.shape) != 2 or ph.dtype.kind not in "iu":
        raise DataError(f"expected (T, N) integers, got {ph.shape} {ph.dtype}", path=spath, key="predictions")
    steps, n = ph.shape
    if not (1 <= steps <= MAX_STEPS and n >= 1):
        raise DataError(f"T = {steps}, N = {n}: need 1 ≤ T ≤ {MAX_STEPS} and N ≥ 1", path=spath, key="predictions")
    if ih.shape != (n,) or ih.dtype.kind not in "iu":
        raise DataError(f"expected ({n},) integers, got {ih.shape} {ih.dtype}", path=spath, key="indices")
    k = int(np.prod(program.readout.shape))
    want = {"readout": (steps, n, k)}
    for key in headers:
        if key.startswith(TRACE_PREFIX):
            want[key] = (steps, n) + tuple(program.stage(key[len(TRACE_PREFIX):]).shape)
    for key, shape in want.items():
        if key in headers and headers[key].shape != shape:
            raise DataError(f"expected shape {shape}, got {headers[key].shape}", path=spath, key=key)
    preds = np.asarray(read_member(spath, ph), dtype=np.int64)
    if preds.size and (preds.min() < 0 or preds.max() >= k):
        raise DataError(f"predictions must be class indices in [0, {k})", path=spath, key="predictions")
    indices = np.asarray(read_member(spath, ih), dtype=np.int64)
    if indices.size and indices.min() < 0:
        raise DataError("negative dataset index", path=spath, key="indices")
    if "steps" in headers:
        st = read_member(spath, headers["steps"])
        if st.shape != () or int(st) != steps:
            raise DataError(f"steps {st} does not match predictions' T = {steps}", path=spath, key="steps")
    readout = None
    if "readout" in headers:
        readout = np.asarray(read_member(spath, headers["readout"]))
        if readout.dtype.kind == "f" and not np.all(np.isfinite(readout)):
            raise DataError("non-finite values", path=spath, key="readout")
    traces = {key[len(TRACE_PREFIX):]: np.asarray(read_member(spath, h)) for key, h in headers.items()
              if key.startswith(TRACE_PREFIX)}
    return Recorded(preds, indices, readout, traces)


@dataclass
class AgainstReport:
    """Outcome of :func:`verify_against`: the recorded run vs the fixed-point reference on the same inputs."""

    bit_exact: bool
    steps: int
    n_samples: int
    sample_ids: list[int]
    compared: list[str]                      # stages / 'readout' / 'predictions' present in the recording
    stages: list[StageComparison]
    divergence: Divergence | None
    predictions_equal: bool
    readout_equal: bool | None               # None: no readout recorded
    reference_wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({"bit_exact": self.bit_exact, "steps": self.steps, "n_samples": self.n_samples,
                          "sample_ids": self.sample_ids, "compared": self.compared,
                          "stages": [s.to_dict() for s in self.stages],
                          "divergence": None if self.divergence is None else self.divergence.to_dict(),
                          "predictions_equal": self.predictions_equal, "readout_equal": self.readout_equal,
                          "reference_wall_s": self.reference_wall_s})

    def format(self) -> str:
        lines = [f"{'BIT-EXACT' if self.bit_exact else 'MISMATCH'}: recorded output vs reference (fixed point), "
                 f"{self.n_samples} sample(s) x {self.steps} steps; compared: {', '.join(self.compared)}"]
        if self.divergence is not None:
            lines.append("first divergence: " + self.divergence.describe().replace(": lava ", ": recorded "))
        return "\n".join(lines)


def verify_against(program: Program, x: Any, recorded: Recorded, *, seed: int | None = None,
                   progress: bool = False) -> AgainstReport:
    """Run the reference (fixed point) on ``x`` (the inputs of ``recorded.indices``, in that order) for the
    recorded T and compare what was recorded: every recorded stage trace, the readout if recorded, and the
    predictions. The first divergence follows the causal order of :func:`compare_outputs` (step, then stage
    in topological order, then sample, then neuron); predictions are compared last."""
    from types import SimpleNamespace

    from msat_lava.reference import simulate

    ids = np.asarray(recorded.indices, dtype=np.int64)
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] != ids.shape[0]:
        raise ValueError(f"{x.shape[0]} input(s) for {ids.shape[0]} recorded sample(s)")
    t0 = time.perf_counter()
    ref = simulate(program, x, recorded.steps, precision="fixed", seed=seed, sample_ids=ids,
                   record=tuple(recorded.traces), record_readout=True, progress=progress)
    wall = time.perf_counter() - t0
    stages = tuple(s for s in program.stages
                   if s.name in recorded.traces or (s.kind == "readout" and recorded.readout is not None))
    sub = replace(program, stages=stages) if stages else None
    fake = SimpleNamespace(predictions=recorded.predictions,
                           readout=recorded.readout if recorded.readout is not None else ref.readout,
                           traces=recorded.traces)
    if sub is not None:
        divergence, comps, preds_equal, readout_equal = compare_outputs(sub, fake, ref, ids)
    else:  # predictions only
        pa, pb = np.asarray(recorded.predictions), np.asarray(ref.predictions)
        comps, preds_equal, readout_equal, divergence = [], bool(np.array_equal(pa, pb)), True, None
        if not preds_equal:
            diff = pa != pb
            t = int(np.argmax(diff.any(axis=1)))
            i = int(np.argmax(diff[t]))
            divergence = Divergence("predictions", "predictions", t, i, int(ids[i]), 0, (), _scalar(pa[t, i]),
                                    _scalar(pb[t, i]), int(diff.sum()))
    compared = [s.name for s in stages if s.kind != "readout"] + (
        ["readout"] if recorded.readout is not None else []) + ["predictions"]
    ro = readout_equal if recorded.readout is not None else None
    bit_exact = divergence is None and preds_equal and (ro is None or ro)
    return AgainstReport(bit_exact, recorded.steps, int(ids.shape[0]), [int(i) for i in ids], compared, comps,
                         divergence, preds_equal, ro, wall)


class _CallableModule(__import__("types").ModuleType):
    """``msat_lava.verify`` is both this module and the library call ``msat_lava.verify(net, x, steps)``: importing
    the submodule binds it to the package attribute, so the module itself calls :func:`verify`."""

    def __call__(self, *args: Any, **kwargs: Any) -> VerifyReport:
        return verify(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
