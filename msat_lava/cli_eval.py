"""``msat-lava eval``: accuracy vs T of several threshold methods, SIN statistics, firing rates and energy.

    msat-lava eval NET --data D.npz [--samples N] --steps T
        [--methods const,p99.9,p99.99,dtt,det,msat,msat+sc] [--precision float|fixed|both] [--out DIR] [--json]

**Methods are re-derived from one float graph.** NET is a converted file; its folded float graph is the ANN, and
every method is quantized again from it (:func:`netx_export.quantize.quantize`) with the file's neuron settings
(Γ, F, state bits, gate variant, MSAT coefficients of the file or ``--preset``) so that all methods share the same
weights. The thresholds λ come from **one calibration set**: a seeded random subset (``--calib-samples``, default
512, seed ``--calib-seed`` = 23) of the training split (``x_train`` of ``--calib-data``, default the ``--data``
file), normalized like the test data. On it the ANN activations give λ = max (const, dtt, det, msat, msat+sc) or
λ = the q-th percentile (``pQ`` methods, e.g. p99.9, p99.99: const thresholds, MSAT code's index rule over all
elements, ``--percentile-nonzero`` for the non-zero ones), and λ^0 = max |x|. ``--lambda-from file`` (the default
when no training split exists) reuses the λ stored in NET for the max-based methods; percentile methods and
msat+sc then need ``--calib-data`` (they are skipped with a note when ``--methods`` was not given).

* const = θ = λ (max-norm IF); pQ = const with percentile λ; dtt / det = MSAT with one of its two terms;
  msat = DTT + DET, in the MSAT formula units of NET (or ``--msat-units``); a ``-norm`` suffix (dtt-norm,
  det-norm, msat-norm) selects units 'normalized' (the BrainCog variant, docs/DESIGN.md) for that method;
* msat+sc (msat-norm+sc) = msat (msat-norm) with spike confidence p^l = 1 − c^l measured on the calibration subset
  with that network run without SC (:func:`msat_lava.sc_calibration.calibrate_spike_confidence`, window
  E = ``--sc-window`` = 16, layer(s) ``--sc-layers`` = the last spiking layer by default, precision = the first
  of ``--precision``), stored in the quantized network like ``convert --sc-p`` does.

For every method and precision one reference run of T steps (chunks of ``--batch-size`` samples) gives the
accuracy after every step; a second run of E steps gives the spike counts of the SIN window (the first E steps
of both runs are identical). Reported (:mod:`msat_lava.metrics` for the definitions): ANN accuracy, steps to
reach ANN − 1 % / − 0.1 % / ANN, SIN statistics per layer (pooled over the samples, ``--sin-batch B`` for the
authors' per-batch mean), firing rate per layer at T, an energy ESTIMATE (first layer charged as MAC every step),
and per layer the agreement of the SNN rates with the ANN activations after each report step (relative L1 error,
correlation: where accuracy is lost).

Files written to ``--out`` (default ``msat-lava-eval``; atomic writes, replaced if present):
``eval.json`` (manifest: hashes of network and data, config, seeds, tool version, λ and exponents per method,
curves, SIN tables, firing rates, energy, layer agreement), ``accuracy_vs_T.png``, ``firing_rate.png``,
``sin_ratio.png``, ``layer_error.png`` (relative L1 error of the rates per layer at the report steps),
``neuron_traces.png`` (membrane potential and threshold of a few neurons of the last spiking layer for the first
sample, replayed with :mod:`msat_lava.dynamics.neuron`) and ``report.html`` (self-contained, images embedded).
Exit codes: 0 ok, 2 bad input (data/network/options).

**Data-parallel** under ``torchrun --nproc_per_node=N -m msat_lava.cli eval ...`` (:mod:`msat_lava.distributed`,
docs/DESIGN.md §7): every rank derives the methods' networks itself (deterministic, compared across ranks),
simulates its contiguous block of whole ``--batch-size`` chunks, and rank 0 gathers the per-chunk statistics,
computes every aggregate from them in chunk order and writes the files: the same numbers as one process
(wall times and the ``distributed`` record aside). Ranks other than 0 print nothing but errors; when one rank
fails every rank exits non-zero.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from msat_lava.cli_common import seed_arg, steps_arg
from msat_lava import methods as _methods
from msat_lava.cli_run import (EXIT_OK, _add_data_args, _exit_codes, _positive_int, _report_steps)
from msat_lava.methods import DEFAULT_METHODS, MethodSpec, divided_lambdas, method_settings, threshold_divisor
from msat_lava.plots import accuracy_plot, figure, save
from netx_export.fileio import atomic_directory, atomic_target

__all__ = ["add_eval_parser", "run_eval", "neuron_traces", "parse_methods", "method_settings", "threshold_divisor",
           "divided_lambdas", "DEFAULT_METHODS",
           "FILES"]

FILES = {"manifest": "eval.json", "accuracy": "accuracy_vs_T.png", "firing_rate": "firing_rate.png",
         "sin": "sin_ratio.png", "layer_error": "layer_error.png", "traces": "neuron_traces.png", "html": "report.html"}
LIPOOL_RECORD_BYTES = 256 << 20   # budget for recording LIPool outputs per chunk (exact LIPool rates)
TRACE_STEPS_MAX = 128


# ----------------------------------------------------------------------------------------------------------
# methods: the grammar lives in msat_lava.methods (one implementation); these names stay importable from here
# ----------------------------------------------------------------------------------------------------------
def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"const,p99.9,msat+sc"`` → validated, de-duplicated list of names (:func:`msat_lava.methods.parse_methods`,
    whose module docstring has the grammar)."""
    return [str(spec) for spec in _methods.parse_methods(text)]


def _spec(method: str) -> MethodSpec:
    return MethodSpec.of(method)


def _has_sc(method: str) -> bool:
    return _spec(method).sc


def _model_params_of(method: str) -> dict[str, str] | None:
    """The ``:key=value`` parameters of a registry-model core (text), None for the MSAT family."""
    return _spec(method).model_params


def _needs_data(method: str) -> bool:
    return _spec(method).needs_calibration


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
    """The calibration images' key of ``path``: ``x_train``; for an explicit ``--calib-data`` file also ``x``
    (convert's rule for ``--data``: x_train preferred, else x). In ``--data`` (the test file) an ``x`` key means
    evaluation data, never calibration. None when there is none."""
    from msat_lava.data import DataError, npz_members

    try:
        files = set(npz_members(path))
    except DataError:  # unreadable files are reported by load_npz
        return None
    if "x_train" in files and (explicit or "x" not in files):
        return "x_train"
    if explicit and "x" in files:
        return "x"
    return None


def _has_train_split(path: str, explicit: bool = False) -> bool:
    return _calib_key(path, explicit) is not None


def _load_calibration(path: str, n: int, seed: int, *, input_scale, mean, std, input_shape,
                      explicit: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random subset (sorted indices) of the calibration images of ``path`` (:func:`_calib_key`),
    normalized like the test data."""
    from msat_lava.data import DataError, member_header, normalize, npz_members, read_member, to_nchw

    key = _calib_key(path, explicit)
    if key is None:
        raise DataError("no training split: a calibration file needs the key 'x_train' (or, for --calib-data, 'x')",
                        path=path, key="x_train")
    member = member_header(path, npz_members(path)[key])  # header only: bounded, never unpickles
    if member.dtype.kind not in "uif" or len(member.shape) < 2 or member.shape[0] == 0:
        raise DataError(f"expected a non-empty numeric array (N, ...), got {member.dtype} {member.shape}",
                        path=path, key=key)
    total = member.shape[0]
    k = min(int(n), total)
    idx = np.sort(np.random.default_rng(seed).choice(total, k, replace=False)).astype(np.int64)
    raw = read_member(path, member, idx)
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
        raise DataError("inputs contain NaN or infinity", path=path, key=key)
    arranged = to_nchw(raw, input_shape, path=path, key=key)
    try:
        x = normalize(arranged, input_scale=input_scale, mean=mean, std=std, raw_dtype=member.dtype)
    except DataError as exc:
        raise DataError(str(exc), path=path, key=key) from None
    return np.ascontiguousarray(x), idx


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
# plots and HTML
# ----------------------------------------------------------------------------------------------------------
def _run_label(run: dict) -> str:
    return f"{run['method']} ({run['precision']})"


_PRECISION_STYLE = {"fixed": "-", "float": "--"}


def _style(run: dict, methods: list[str]) -> dict[str, Any]:
    """One colour per method, solid lines for fixed point and dashed for float."""
    k = methods.index(run["method"]) if run["method"] in methods else 0
    return {"color": f"C{k % 10}", "linestyle": _PRECISION_STYLE.get(run["precision"], "-")}


def _methods_of(runs: list[dict]) -> list[str]:
    out: list[str] = []
    for r in runs:
        if r["method"] not in out:
            out.append(r["method"])
    return out


def _plot_accuracy(path: Path, runs: list[dict], ann: float, report_steps: list[int], title: str) -> Path:
    methods = _methods_of(runs)
    series = [dict(label=_run_label(run), steps=np.arange(1, len(run["accuracy_curve"]) + 1),
                   accuracy=run["accuracy_curve"], **_style(run, methods)) for run in runs]
    return accuracy_plot(path, series, ann=ann, title=title, ticks=report_steps)


def _layer_axis(ax, layers: list[str]) -> None:
    ax.set_xticks(range(1, len(layers) + 1))
    ax.set_xticklabels(layers, rotation=45 if len(layers) > 4 else 0, ha="right" if len(layers) > 4 else "center",
                       fontsize=7 if len(layers) > 10 else 8)
    ax.set_xlabel("spiking layer")


def _layer_panel(ax, runs: list[dict], layers: list[str], value: Callable[[dict, str], float], *, ylabel: str,
                 title: str, label: Callable[[dict], str] = _run_label, legend: bool = True) -> None:
    """One line per run over the spiking layers (``value(run, layer)``), one colour per method."""
    xs = np.arange(1, len(layers) + 1)
    methods = _methods_of(runs)
    for run in runs:
        ax.plot(xs, [value(run, k) for k in layers], marker="o", markersize=3, label=label(run),
                **_style(run, methods))
    _layer_axis(ax, layers)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(loc="best", fontsize=7)


def _plot_firing(path: Path, runs: list[dict], layers: list[str], steps: int) -> Path:
    fig = figure(7.2, 4.6)
    _layer_panel(fig.add_subplot(1, 1, 1), runs, layers, lambda run, k: run["firing_rates"][k],
                 ylabel="firing rate (spikes / neuron / step)", title=f"firing rate per layer over T = {steps} steps",
                 label=lambda run: f"{_run_label(run)}: mean {run['mean_firing_rate']:.3f}")
    return save(fig, path)


def _plot_layer_error(path: Path, runs: list[dict], layers: list[str], report_steps: list[int]) -> Path:
    """Relative L1 error Σ|r − a| / Σ|a| per layer: one panel per report step (the last three), one line per run."""
    ks = [k for k in report_steps if str(k) in runs[0]["layer_agreement"]][-3:] if runs else []
    fig = figure(4.2 * max(1, len(ks)), 4.4)
    for i, k in enumerate(ks):
        _layer_panel(fig.add_subplot(1, max(1, len(ks)), i + 1), runs, layers,
                     lambda run, name, k=k: run["layer_agreement"][str(k)][name]["rel_l1"],
                     ylabel="relative L1 error Σ|r − a| / Σ|a|", title=f"SNN rate r vs ANN activation a, T = {k}")
    return save(fig, path)


def _plot_sin(path: Path, runs: list[dict], layers: list[str], window: int) -> Path:
    fig = figure(10.0, 4.4)
    _layer_panel(fig.add_subplot(1, 2, 1), runs, layers, lambda run, k: run["sin"]["layers"][k]["sin_ratio"],
                 ylabel="SIN ratio = N_SIN / #{z ≤ 0}", title=f"SIN ratio per layer (first {window} steps)")
    _layer_panel(fig.add_subplot(1, 2, 2), runs, layers, lambda run, k: run["sin"]["layers"][k]["ans"],
                 ylabel="ANS = spikes per SIN neuron", title=f"ANS per layer (first {window} steps)", legend=False)
    return save(fig, path)


def _plot_traces(path: Path, traces: dict, picks: list[tuple[int, str]], z: np.ndarray, title: str) -> Path:
    rows = max(1, len(picks))
    fig = figure(7.2, 1.9 * rows + 0.8)
    steps = traces["m"].shape[0]
    t = np.arange(steps)
    ax0 = None
    for r, (i, kind) in enumerate(picks):
        ax = fig.add_subplot(rows, 1, r + 1, sharex=ax0)
        ax0 = ax0 or ax
        ax.plot(t, traces["m"][:, i], label="membrane m(t) (before firing)", linewidth=1.2)
        ax.plot(t, traces["theta"][:, i], linestyle="--", label="threshold θ(t)", linewidth=1.2)
        fired = np.flatnonzero(traces["spikes"][:, i] > 0)
        if fired.size:
            ax.plot(fired, traces["m"][fired, i], linestyle="none", marker="^", color="tab:red", markersize=4,
                    label="spike")
        ax.set_ylabel("raw units")
        ax.set_title(f"neuron {i} ({kind}, ANN z = {z[i]:.3g}, {int(traces['spikes'][:, i].sum())} spikes)",
                     fontsize=9)
        ax.grid(True, alpha=0.3)
        if r == 0:
            ax.legend(loc="upper right", fontsize=7)
    if ax0 is not None:
        ax.set_xlabel("time step t")
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


def _html_report(path: Path, manifest: dict, images: dict[str, Path]) -> Path:
    esc = html.escape

    def table(head: list[str], rows: list[list[Any]]) -> str:
        out = ["<table><tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in head) + "</tr>"]
        for row in rows:
            out.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>")
        return "\n".join(out) + "</table>"

    def pct(v):
        return "–" if v is None else f"{100 * v:.2f}"

    rs = manifest["report_steps"]
    runs = manifest["runs"]
    acc_rows = [[_run_label(r)] + [pct(r["accuracy_at"][str(t)]) for t in rs] +
                [r["steps_to"][k] if r["steps_to"][k] is not None else "never" for k in ("ann-1%", "ann-0.1%", "ann")]
                for r in runs]
    sin_rows = []
    for prec, row in manifest["sin_last_layer"].items():
        for label, s in row.items():
            if s is not None:
                sin_rows.append([prec, label, f"{s['sin_ratio']:.4f}", f"{s['ans']:.3f}", f"{s['c']:.4f}",
                                 f"{s['p']:.4f}", f"{s['sin_share']:.4f}", f"{s['pos_share']:.4f}",
                                 f"{s['silent_share']:.4f}"])
    energy_rows = [[_run_label(r), f"{r['mean_firing_rate']:.4f}", f"{r['energy']['ann']['energy_pj'] / 1e6:.4f}",
                    f"{r['energy']['snn']['energy_pj'] / 1e6:.4f}", f"{100 * r['energy']['ratio']:.1f}",
                    f"{100 * r['energy']['ratio_first_layer_once']:.1f}"] for r in runs]
    imgs = "\n".join(
        f"<h3>{esc(name)}</h3><img alt='{esc(name)}' src='data:image/png;base64,"
        f"{base64.b64encode(Path(p).read_bytes()).decode('ascii')}'>" for name, p in images.items())
    net = manifest["network"]
    cfg = manifest["config"]
    sin_head = ["precision", "run", "SIN ratio", "ANS", "c", "p = 1 − c", "SIN share", "POS share", "silent share"]
    body = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>msat-lava eval: {esc(Path(net['path']).name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}} th{{background:#eee}} img{{max-width:100%}}
code{{background:#f4f4f4}}</style></head><body>
<h1>msat-lava eval</h1>
<p>network <code>{esc(net['path'])}</code> (sha256 {esc(net['file_sha256'][:16])}…, model hash
{esc(str(net['model_hash'])[:16])}…); data <code>{esc(manifest['data']['path'])}</code>
({manifest['data']['samples']} samples of split {esc(manifest['data']['split'])}); T = {manifest['config']['steps']};
tool {esc(manifest['tool_version'])}.</p>
<h2>Accuracy (%)</h2><p>ANN accuracy: {pct(manifest['ann']['accuracy'])} %. Steps to reach: 1-based.</p>
{table(['run'] + [f'T={t}' for t in rs] + ['→ANN−1%', '→ANN−0.1%', '→ANN'], acc_rows)}
<h2>SIN statistics, last spiking layer (first {cfg['sin_window']} steps, {esc(cfg['sin_mode'])})</h2>
{table(sin_head, sin_rows)}
<h2>Firing rate and energy (ESTIMATE)</h2><p>{esc(manifest['energy_convention'])}</p>
{table(['run', 'mean FR', 'E_ANN (µJ)', 'E_SNN (µJ)', 'E_SNN/E_ANN (%)', 'first layer once (%)'], energy_rows)}
{imgs}
</body></html>
"""
    with atomic_target(path, suffix=".html") as tmp:
        Path(tmp).write_text(body, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------
# the evaluation
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


def _method_net(graph, lams, input_scale, method: str, settings: dict, *, sc_p=None, sc_window: int, seed: int,
                model_hash: str, data_hash: str, lambda_info: dict):
    from netx_export.quantize import quantize

    from netx_export import neurons

    spec = _spec(method)
    mode = spec.mode
    params = _model_params_of(method)
    extra: dict[str, Any] = {}
    if params is not None:
        try:
            extra["params"] = neurons.params_from_options(mode, params, parse=True)
        except neurons.NeuronSpecError as exc:
            from msat_lava.data import DataError

            raise DataError(f"--methods: {method!r}: parameter {exc}") from None
    elif mode != "const":
        extra["msat_units"] = spec.units(settings["units"])
    units = extra
    graph, aliases = neurons.get(mode).prepare_graph(graph)  # BSNN-R: synchronous neurons take their source's λ
    lams = divided_lambdas(dict(lams, **{sn: lams[src] for sn, src in aliases.items()}), method,
                           keep=(graph.input.name,))
    return quantize(graph, lams, method=mode, preset=None, coefs=None if mode == "const" else settings["coefs"],
                    k_const=1.0, sc_p=sc_p, gamma=spec.gamma(settings["gamma"]), sc_early=sc_window,
                    sc_gate=settings["sc_gate"], frac_bits=settings["frac_bits"], state_bits=settings["state_bits"],
                    input_scale=input_scale, input_frac_bits=settings["input_frac_bits"], seed=seed,
                    model_hash=model_hash, data_hash=data_hash, hyperparameters={"eval_method": method, **lambda_info},
                    v_init=spec.v_init, **units)


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


def run_eval(args: argparse.Namespace, log: Callable[[str], None] = lambda s: None,
             ctx: Any = None) -> dict[str, Any] | None:
    """The whole evaluation for parsed ``eval`` arguments; returns the manifest (also written to ``--out``).

    ``ctx``: the :class:`msat_lava.distributed.Context` of a torchrun launch (default: one process). Every rank
    loads the data and computes the calibration, the methods' networks, spike-confidence calibration and bias
    correction itself (deterministic; the networks are compared across ranks); each rank simulates its block of
    ``--batch-size`` chunks, rank 0 gathers the per-chunk statistics, computes every aggregate from them in
    chunk order (the numbers of a single-process run), runs the ANN, the neuron traces and writes the files.
    Ranks other than 0 log nothing and return None.
    """
    import warnings

    import torch

    from netx_export.api import load
    from netx_export.balance import calibrate_balanced
    from netx_export.calibrate import calibrate
    from netx_export.quantize import QuantizationWarning, tool_version

    from msat_lava import metrics
    from msat_lava.data import DataError, load_npz, parse_floats
    from msat_lava.distributed import Context
    from msat_lava.program import from_converted
    from msat_lava.bias_correction import correct_biases
    from msat_lava.sc_calibration import (calibrate_spike_confidence, gated_layers, preactivation_fn,
                                          run_with_statistics)
    from msat_lava.verify import atomic_write_json
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    ctx = Context() if ctx is None else ctx
    if not ctx.is_main:
        def log(message: str) -> None:  # noqa: F811  (ranks other than 0 print nothing but errors)
            pass
    quiet = bool(args.json) or not ctx.is_main  # progress bars on rank 0 only
    steps = int(args.steps)
    out_dir = _check_out_dir(args.out)  # before any work
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    explicit_methods = args.methods is not None
    methods = parse_methods(args.methods if explicit_methods else ",".join(DEFAULT_METHODS))
    precisions = ["fixed", "float"] if args.precision == "both" else [args.precision]
    primary = precisions[0]
    rsteps = _report_steps(args.report_steps, steps)
    window = int(args.sc_window)
    if not 1 <= window <= 256:
        raise DataError(f"--sc-window must be in 1..256, got {window}")
    sin_window = min(window, steps)

    mean, std = parse_floats(args.norm_mean, "--norm-mean"), parse_floats(args.norm_std, "--norm-std")
    net = load(args.net)
    program0 = from_converted(net)
    graph = net.graph
    try:
        sc_layers = gated_layers(program0, args.sc_layers)
    except ValueError as exc:
        raise DataError(f"--sc-layers: {exc}") from None
    data = load_npz(args.data, split=args.split, samples=args.samples, input_scale=args.input_scale, mean=mean,
                    std=std, input_shape=program0.input_shape,
                    num_classes=int(np.prod(program0.readout.shape)))
    if data.y is None:
        raise DataError("eval needs labels (key y or y_<split>)", path=args.data)
    n = len(data.indices)

    # ---- calibration data and λ
    calib_path = args.calib_data or args.data
    explicit_calib = bool(args.calib_data)
    have_calib = _has_train_split(calib_path, explicit_calib)
    if args.calib_data and not have_calib:
        raise DataError("no calibration images: --calib-data needs the key 'x_train' or 'x'", path=calib_path)
    lambda_from = args.lambda_from or ("data" if have_calib else "file")
    if lambda_from == "data" and not have_calib:
        raise DataError("--lambda-from data needs a training split (x_train) in --data or --calib-data",
                        path=calib_path)
    notes: list[str] = []
    if not have_calib:
        missing = [m for m in methods if _needs_data(m)]
        if missing and explicit_methods:
            raise DataError(f"method(s) {missing} need calibration images: give --calib-data with an x_train split "
                            "(the test data is never used for calibration)", path=calib_path)
        if missing:
            notes.append(f"skipped {missing}: no training split in {calib_path} (use --calib-data)")
            methods = [m for m in methods if m not in missing]
    x_cal = cal_idx = None
    calibration_info: dict[str, Any] = {"lambda_from": lambda_from, "source": None}
    if have_calib and (lambda_from == "data" or any(_needs_data(m) for m in methods)):
        x_cal, cal_idx = _load_calibration(calib_path, args.calib_samples, args.calib_seed,
                                           input_scale=args.input_scale, mean=mean, std=std,
                                           input_shape=program0.input_shape, explicit=explicit_calib)
        calibration_info.update({
            "source": f"{calib_path}:{_calib_key(calib_path, explicit_calib)}", "file_sha256": _sha256_file(calib_path), "samples": int(len(cal_idx)),
            "seed": int(args.calib_seed), "indices_sha256": _sha256_arrays(cal_idx),
            "overlaps_evaluated_split": bool(args.split == "train" and os.path.abspath(calib_path)
                                             == os.path.abspath(args.data))})
        if calibration_info["overlaps_evaluated_split"]:
            notes.append("the calibration images come from the evaluated split (--split train)")
    seed = int(net.provenance.seed if args.seed is None else args.seed)
    settings = _quantize_settings(net, args.preset, args.msat_units)
    model_hash = net.provenance.model_hash

    lam_cache: dict[str, tuple[dict, float, str, dict, Any]] = {}

    def lambdas_for(method: str) -> tuple[dict, float, str, dict, Any]:
        """(λ per layer, λ^0, data hash, λ info, graph) of a method's λ rule: max, pQ, either with +cw (the
        channel-balanced graph, netx_export.balance), or the file's λ."""
        q = _spec(method).percentile
        cw = _spec(method).channelwise
        key = ("max" if q is None else f"p{q}") + ("+cw" if cw else "")
        if key in lam_cache:
            return lam_cache[key]
        rule = dict(method="max") if q is None else dict(method="percentile", percentile=q,
                                                         nonzero_only=args.percentile_nonzero)
        info = {"lambda_method": rule["method"]}
        if q is not None:
            info.update({"percentile": q, "nonzero_only": bool(args.percentile_nonzero)})
        if cw:
            g_m, scales, cal = calibrate_balanced(graph, x_cal, **rule)
            info.update({"channelwise": True, "balanced_layers": list(scales)})
        elif q is not None or lambda_from == "data":
            g_m, cal = graph, calibrate(graph, x_cal, progress=False, **rule)
        else:
            hp = dict(net.provenance.hyperparameters)
            value = ({k: s.lam for k, s in net.neurons.items()}, net.input_scale, net.provenance.data_hash,
                     {"lambda_method": "file", "file_lambda_method": hp.get("lambda_method"),
                      "file_percentile": hp.get("percentile")}, graph)
            lam_cache[key] = value
            return value
        info["calibration_samples"] = cal.n_samples
        value = (dict(cal.lambdas), cal.input_scale, cal.data_hash, info, g_m)
        lam_cache[key] = value
        return value

    # ---- networks per method
    log(f"eval {args.net}: {n} sample(s) x {steps} steps; methods {', '.join(methods)}; precision "
        f"{', '.join(precisions)}; λ from {lambda_from}" + (f" ({len(cal_idx)} calibration images, seed "
                                                            f"{args.calib_seed})" if cal_idx is not None else ""))
    nets: dict[str, Any] = {}
    sc_results: dict[str, Any] = {}
    bc_results: dict[str, Any] = {}
    graphs: dict[str, Any] = {}

    def build(g, method: str, sc_p=None):
        """``method``'s ConvertedNetwork of graph ``g`` (λ of the method, the shared settings)."""
        lams, lam0, dhash, info, _ = lambdas_for(method)
        return _method_net(g, lams, lam0, method, settings, sc_p=sc_p, sc_window=window, seed=seed,
                           model_hash=model_hash, data_hash=dhash, lambda_info=info)

    def graph_for(method: str):
        """The graph a method converts: the original (channel-balanced for "+cw"), weight-calibrated for "+wc",
        bias-corrected for "+bc" (in that order)."""
        plain = method.removesuffix("+sc")
        bc_steps = _spec(plain).bias_correction_steps
        wc_steps = _spec(plain).weight_calibration_steps
        base = lambdas_for(plain)[4]
        if wc_steps is not None:
            key = ("wc", plain)
            if key not in graphs:
                from msat_lava.weight_calibration import calibrate_weights

                xb = x_cal[:args.bc_samples]
                log(f"weight calibration: {plain} on {len(xb)} calibration images, T = {wc_steps} ({primary}) ...")
                res_w = calibrate_weights(base, xb, steps=wc_steps, precision=primary, batch_size=args.batch_size,
                                          convert=lambda g: build(g, plain))
                graphs[key] = res_w.graph
                bc_results[plain + " (weights)"] = res_w.to_dict()
            base = graphs[key]
        if bc_steps is None:
            return base
        if plain not in graphs:
            xb = x_cal[:args.bc_samples]
            log(f"bias correction: {plain} on {len(xb)} calibration images, T = {bc_steps} ({primary}) ...")
            with tqdm(total=len(program0.neuron_stages), desc=f"bias correction {plain}", unit="layer",
                      leave=False, disable=quiet, file=sys.stderr) as bar:
                res = correct_biases(base, xb, steps=bc_steps, precision=primary, batch_size=args.batch_size,
                                     convert=lambda g: build(g, plain), on_layer=lambda *_: bar.update(1))
            graphs[plain] = res.graph
            bc_results[plain] = res.to_dict()
        return graphs[plain]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QuantizationWarning)
        for method in methods:
            g_m = graph_for(method)
            if _has_sc(method):
                plain = method.removesuffix("+sc")
                base = nets.get(plain) or build(g_m, plain)
                log(f"spike confidence: {plain} without SC on {len(cal_idx)} calibration images, first {window} "
                    f"steps ({primary}), layer(s) {', '.join(sc_layers)} ...")
                with tqdm(total=len(cal_idx) * window, desc=f"SC calibration {plain}", unit="sample-step",
                          leave=False, disable=quiet, file=sys.stderr) as bar:
                    sc = calibrate_spike_confidence(base, x_cal, sample_ids=cal_idx, window=window, layers=sc_layers,
                                                    precision=primary, batch_size=args.sin_batch,
                                                    chunk=args.batch_size, on_progress=bar.update)
                sc_results[method] = sc
                log("      p = " + ", ".join(f"{k}: {v:.4f}" for k, v in sc.p.items()))
                nets[method] = build(g_m, method, sc_p=sc.p)
            else:
                nets[method] = build(g_m, method)
    quant_warnings = [str(w.message) for w in caught if issubclass(w.category, QuantizationWarning)]
    # every rank derived the networks itself: they must be the same before the ranks split the samples
    ctx.check_same([(m, nets[m]) for m in methods], "the methods' converted networks")

    # ---- ANN (rank 0: only the aggregates need it)
    ann_acc = float("nan")
    if ctx.is_main:
        ann_pred = _ann_predictions(graph, data.x, args.batch_size)
        ann_acc = float(np.mean(ann_pred == data.y))
    log(f"ANN accuracy {100 * ann_acc:.2f} %")

    # ---- SNN runs
    pre_fns: dict[tuple, Any] = {}

    def pre_fn_for(method: str):
        """ANN pre-activations in the units of the method's λ: the graph it was calibrated on (the channel-
        balanced graph for "+cw"; the original ANN for everything else, bias correction included)."""
        from netx_export import neurons

        g_m = lambdas_for(method.removesuffix("+sc"))[4]
        model = neurons.get(_spec(method).mode)
        key = (id(g_m), type(model).prepare_graph is not neurons.NeuronModel.prepare_graph)
        if key not in pre_fns:  # a model's prepared graph (BSNN-R: + synchronous neurons, ANN-identical)
            pre_fns[key] = preactivation_fn(model.prepare_graph(g_m)[0] if key[1] else g_m)
        return pre_fns[key]

    lipool_size = sum(int(np.prod(s.shape)) for s in program0.stages if s.kind == "lipool")
    record_lipool = lipool_size > 0 and steps * min(args.batch_size, n) * lipool_size * 8 <= LIPOOL_RECORD_BYTES
    if lipool_size and not record_lipool:
        notes.append("LIPool output rates approximated by the rate of the pooled layer (recording too large)")
    layers = [s.name for s in program0.neuron_stages]
    runs: list[dict[str, Any]] = []
    programs: dict[str, Any] = {}
    for method in methods:
        programs[method] = from_converted(nets[method])
        for precision in precisions:
            lo, hi = ctx.samples(n, args.batch_size)  # this rank's share (all samples in one process)
            total = (hi - lo) * (steps + (sin_window if sin_window != steps else 0))
            with tqdm(total=total, desc=f"{method} {precision}", unit="sample-step", leave=False,
                      disable=quiet, file=sys.stderr) as bar:
                t0 = time.perf_counter()
                st = run_with_statistics(programs[method], data.x, steps, precision=precision,
                                         sample_ids=data.indices, window=sin_window, preactivations=pre_fn_for(method),
                                         chunk=args.batch_size, record_lipool=record_lipool, seed=seed,
                                         on_progress=bar.update, agreement_at=rsteps, map_chunks=ctx.map_chunks)
                wall = time.perf_counter() - t0
            if st is None:  # not rank 0: the statistics went to rank 0
                continue
            curve = (st.predictions == data.y.reshape(1, -1)).mean(axis=1)
            fr = st.firing_rates()
            sin = st.sin_stats(args.sin_batch)
            energy = metrics.energy_estimate(programs[method], st.source_rates(), steps)
            run = {
                "method": method, "precision": precision, "wall_s": wall,
                "accuracy_curve": [float(a) for a in curve],
                "accuracy_at": {str(t): float(curve[t - 1]) for t in rsteps},
                "steps_to": metrics.latency_targets(curve, ann_acc),
                "firing_rates": fr, "mean_firing_rate": float(np.mean(list(fr.values()))) if fr else 0.0,
                "sin": {"window": st.window, "mode": "pooled" if args.sin_batch is None else
                        f"per-batch mean (batch {args.sin_batch})",
                        "layers": {k: v.to_dict() for k, v in sin.items()},
                        "last_layer": sin[layers[-1]].to_dict() if layers else None},
                "energy": energy, "input_clipped": st.input_clipped, "saturated": st.saturated,
                "layer_agreement": {str(k): {layer: m.to_dict() for layer, m in per.items()}
                                    for k, per in st.agreement.items()},
            }
            runs.append(run)
            log(f"{method:>8} {precision:>5}: " + "  ".join(f"T={t}: {100 * curve[t - 1]:.2f}" for t in rsteps)
                + f"  | →ANN−1%: {run['steps_to']['ann-1%']}  FR {run['mean_firing_rate']:.4f}  "
                  f"E/E_ANN {100 * energy['ratio']:.1f} %  ({wall:.1f} s)")

    if not ctx.is_main:
        return None

    # ---- SIN with / without SC (last spiking layer)
    sin_last: dict[str, dict[str, Any]] = {}
    for precision in precisions:
        row = {}
        pairs = [(m.removesuffix("+sc"), m) for m in methods if _has_sc(m)] or [("msat", None)]
        labels = [(f"without_sc ({a})", a) for a, _ in pairs] + [(f"with_sc ({b})", b) for _, b in pairs if b]
        for label, m in labels:
            r = next((r for r in runs if r["method"] == m and r["precision"] == precision), None)
            row[label] = None if r is None else r["sin"]["last_layer"]
        sin_last[precision] = row

    # ---- traces
    trace_method = next((m for m in ("msat", "msat-norm", "msat+sc", "msat-norm+sc", "dtt", "det") if m in methods),
                        methods[0])
    trace_steps = min(steps, TRACE_STEPS_MAX)
    last = layers[-1]
    tr = neuron_traces(programs[trace_method], last, data.x[0], trace_steps, precision=primary,
                       sample_id=int(data.indices[0]), seed=seed)
    z0 = pre_fn_for(trace_method)(data.x[:1])[last].reshape(-1)
    picks = _pick_neurons(z0, tr["spikes"], min(window, trace_steps))

    # ---- files: written into a temporary sibling directory that then replaces --out, so it appears whole
    files = {k: out_dir / v for k, v in FILES.items()}
    with atomic_directory(out_dir) as tmp_dir:
        tmp_files = {k: tmp_dir / v for k, v in FILES.items()}
        title = f"{Path(args.net).name}: {n} samples, {args.split} split"
        images = {
            "accuracy vs T": _plot_accuracy(tmp_files["accuracy"], runs, ann_acc, rsteps, title),
            "firing rate per layer": _plot_firing(tmp_files["firing_rate"], runs, layers, steps),
            "SIN ratio per layer": _plot_sin(tmp_files["sin"], runs, layers, sin_window),
            "SNN rate vs ANN activation per layer": _plot_layer_error(tmp_files["layer_error"], runs, layers, rsteps),
            "neuron traces": _plot_traces(tmp_files["traces"], tr, picks, z0,
                                          f"{trace_method} ({primary}), layer {last}, sample {int(data.indices[0])}"),
        }
        manifest: dict[str, Any] = {
            "tool": "msat-lava eval",
            "tool_version": tool_version(),
            "arguments": {k: v for k, v in vars(args).items() if k != "func"},
            "network": {"path": str(args.net), "file_sha256": _sha256_file(args.net), "model_hash": model_hash,
                        "file_method": net.method, "file_data_hash": net.provenance.data_hash,
                        "file_seed": int(net.provenance.seed), "format_version": net.provenance.format_version},
            "data": {"path": str(args.data), "file_sha256": _sha256_file(args.data), "split": args.split,
                     "samples": n, "samples_requested": args.samples,
                     "subset": "all" if args.samples is None else "strided (msat_lava.data.strided_indices)",
                     "indices_sha256": _sha256_arrays(data.indices),
                     "inputs_sha256": _sha256_arrays(data.x, data.y),
                     "normalization": {"input_scale": args.input_scale, "mean": mean, "std": std}},
            "calibration": calibration_info,
            "seeds": {"calibration_subset": int(args.calib_seed), "sc_gate": seed},
            "distributed": ctx.describe(),
            "config": {"steps": steps, "methods": methods, "precisions": precisions, "report_steps": rsteps,
                       "sc_window": window, "sc_layers": sc_layers, "sin_window": sin_window,
                       "sin_mode": "pooled" if args.sin_batch is None else f"per-batch mean (batch {args.sin_batch})",
                       "batch_size": args.batch_size, "percentile_nonzero": bool(args.percentile_nonzero),
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
            "methods": {m: _net_summary(nets[m], lambdas_for(m)[3]) for m in methods},
            "sc_calibration": {m: r.to_dict() for m, r in sc_results.items()},
            "bias_correction": bc_results,
            "runs": runs,
            "sin_last_layer": sin_last,
            "layers": layers,
            "energy_convention": metrics.ENERGY_CONVENTION,
            "traces": {"method": trace_method, "precision": primary, "layer": last, "sample": int(data.indices[0]),
                       "steps": trace_steps, "neurons": [{"index": i, "kind": k, "z": float(z0[i])} for i, k in picks]},
            "notes": notes,
            "quantization_warnings": quant_warnings,
            "files": {k: str(v) for k, v in files.items()},
        }
        if not args.no_html:
            _html_report(tmp_files["html"], manifest, images)
        else:
            manifest["files"].pop("html")
        manifest["total_s"] = time.perf_counter() - t_start
        atomic_write_json(manifest, tmp_files["manifest"])
    log(f"wrote {', '.join(str(p) for p in manifest['files'].values())}")
    return manifest


def _check_out_dir(path: str) -> Path:
    """``eval --out DIR``: a new directory, or one that holds only eval results (it is replaced whole)."""
    from msat_lava.cli_common import check_destination
    from msat_lava.data import DataError

    out_dir = check_destination(path, "--out", directory=True)
    if out_dir.is_dir():
        other = sorted(p.name for p in out_dir.iterdir() if p.name not in set(FILES.values()))
        if other:
            raise DataError(f"--out {str(out_dir)!r} holds files eval did not write ({other[:3]}); it is replaced "
                            "whole, so give a new directory or a previous eval output")
    return out_dir


def _format(manifest: dict) -> str:
    lines = ["", f"ANN accuracy: {100 * manifest['ann']['accuracy']:.2f} %  (steps to reach ANN−1 % / −0.1 % / ANN "
                 "per run below)"]
    for r in manifest["runs"]:
        s = r["steps_to"]
        last = r["sin"]["last_layer"]
        lines.append(f"  {_run_label(r):<22} acc@T={manifest['config']['steps']}: "
                     f"{100 * r['accuracy_curve'][-1]:6.2f} %  steps: {s['ann-1%']} / {s['ann-0.1%']} / {s['ann']}"
                     f"  FR {r['mean_firing_rate']:.4f}  last-layer SIN ratio {last['sin_ratio']:.4f} "
                     f"ANS {last['ans']:.3f}  energy {100 * r['energy']['ratio']:.1f} % of ANN (estimate)")
    for method, sc in manifest["sc_calibration"].items():
        lines.append(f"spike confidence p ({method}): " + ", ".join(f"{k} = {v:.4f}" for k, v in sc["p"].items()))
    for note in manifest["notes"]:
        lines.append(f"note: {note}")
    lines.append(f"report: {manifest['files']['manifest']}")
    return "\n".join(lines)


DEFAULT_OUT = "msat-lava-eval"


@_exit_codes("eval")
def _cmd_eval(args: argparse.Namespace) -> int:
    from msat_lava import distributed

    def log(message: str) -> None:
        if not args.json:
            print(message, flush=True)

    # under torchrun: data-parallel over the ranks (msat_lava.distributed); otherwise exactly one process
    scratch = None
    if args.out is None:
        if args.json:  # --json alone: the manifest on stdout, nothing left on disk
            import tempfile

            scratch = tempfile.TemporaryDirectory(prefix="msat-lava-eval-")
            args.out = str(Path(scratch.name) / "eval")
        else:
            args.out = DEFAULT_OUT
    try:
        with distributed.session() as ctx:
            manifest = run_eval(args, log, ctx)
            if manifest is None:  # not rank 0
                return EXIT_OK
            if args.json:  # exactly the manifest written to disk (files: none when --out was not given)
                import json

                text = Path(manifest["files"]["manifest"]).read_text(encoding="utf-8")
                if scratch is not None:
                    data = json.loads(text)
                    data["files"] = {}
                    data["arguments"]["out"] = None
                    text = json.dumps(data, indent=2) + "\n"
                print(text, end="")
            else:
                print(_format(manifest))
    finally:
        if scratch is not None:
            scratch.cleanup()
    return EXIT_OK


def _sin_batch(text: str) -> int:
    return _positive_int(text)


def add_eval_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="compare threshold methods: accuracy vs T, SIN statistics, firing rates, energy estimate",
        description=("Re-derive the threshold methods from NET's float graph (λ from a seeded subset of the training "
                     "split), run each in the reference simulator for T steps and report accuracy after every step "
                     "beside the ANN, steps to reach the ANN, SIN statistics (with and without spike confidence), "
                     "per-layer firing rates and an energy estimate; writes a JSON manifest, PNG plots and an HTML "
                     "page to --out. Exit 0 ok, 2 bad input."),
    )
    _add_data_args(p, samples_default=None)
    p.add_argument("--steps", type=steps_arg, required=True, metavar="T", help="time steps per sample")
    p.add_argument("--methods", default=None, metavar="M1,M2,..",
                   help=f"threshold methods (default {','.join(DEFAULT_METHODS)}); pQ = const with λ = Q-th "
                        "percentile")
    p.add_argument("--precision", choices=("fixed", "float", "both"), default="fixed",
                   help="reference precision (default fixed; both = fixed and float)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"output directory (default ./{DEFAULT_OUT}; with --json and no --out nothing is written, "
                        "the manifest goes to stdout), replaced whole: the results are written into a "
                        "temporary sibling directory that is then renamed into place; an existing DIR holding other "
                        "files than eval's is refused")
    p.add_argument("--calib-data", default=None, metavar="C.npz",
                   help="file whose x_train split calibrates λ and spike confidence (default: --data)")
    p.add_argument("--calib-samples", type=_positive_int, default=512, metavar="N",
                   help="random calibration subset size (default 512)")
    p.add_argument("--calib-seed", type=seed_arg, default=23, help="seed of the calibration subset (default 23)")
    p.add_argument("--lambda-from", choices=("data", "file"), default=None,
                   help="λ of the max-based methods: re-calibrated on the training split (data, default when one "
                        "exists) or the λ stored in NET (file)")
    p.add_argument("--percentile-nonzero", action="store_true",
                   help="percentile methods: take the percentile over non-zero activations only")
    p.add_argument("--preset", default=None, help="MSAT coefficient preset (default: the coefficients in NET)")
    p.add_argument("--msat-units", choices=("raw", "normalized"), default=None,
                   help="units of the MSAT formula for dtt/det/msat (default: NET's; a '-norm' method is always "
                        "'normalized')")
    p.add_argument("--bc-samples", type=_positive_int, default=64, metavar="N",
                   help="calibration images used by the bias correction of +bc methods (default 64; one "
                   "reference run of N images per spiking layer)")
    p.add_argument("--sc-window", type=_positive_int, default=16, metavar="E",
                   help="spike-confidence stage and SIN window in steps (default 16)")
    p.add_argument("--sc-layers", default="last", metavar="last|all|NAMES",
                   help="layers gated by spike confidence: last (default), all, or comma-separated relu names")
    p.add_argument("--sin-batch", type=_sin_batch, default=None, metavar="B",
                   help="SIN statistics as the mean of per-batch ratios over batches of B samples (authors' way); "
                        "default: pooled over all samples")
    p.add_argument("--seed", type=seed_arg, default=None, help="spike-confidence gate seed in [0, 2^32) (default: NET's)")
    p.add_argument("--batch-size", type=_positive_int, default=32, metavar="B",
                   help="samples per reference-simulator chunk (default 32; results do not depend on it. On a CPU "
                   "small chunks keep a ResNet's state in cache, ResNet20 ran ≈ 1.5× faster at 25 than at 125; "
                   "raise it on a GPU)")
    p.add_argument("--no-html", action="store_true", help="do not write report.html")
    p.set_defaults(func=_cmd_eval)
