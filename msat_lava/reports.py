"""The rendering of an evaluation (:func:`msat_lava.evaluate.evaluate`, ``msat-lava eval``): this module owns
the report files' names (:data:`FILES`), the figures (accuracy vs T, firing rate, SIN ratio, SNN-vs-ANN error per
layer, neuron traces), the self-contained HTML page and the text summary the CLI prints.

Every function here reads the manifest (the dict ``eval.json`` holds) and, for the neuron traces, the replayed
arrays (:func:`msat_lava.evaluate.neuron_traces`); none computes a statistic. :func:`write_figures` draws the five
PNGs into a directory; :meth:`msat_lava.evaluate.EvalReport.save` calls it inside the atomic output directory,
then :func:`html_report` and writes ``eval.json``.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from msat_lava.plots import accuracy_plot, figure, save
from netx_export.fileio import atomic_target

__all__ = ["FILES", "run_label", "plot_accuracy", "plot_firing", "plot_layer_error", "plot_sin", "plot_traces",
           "write_figures", "html_report", "format_summary", "title_of", "traces_title"]

#: the files of an evaluation output directory (key → file name)
FILES = {"manifest": "eval.json", "accuracy": "accuracy_vs_T.png", "firing_rate": "firing_rate.png",
         "sin": "sin_ratio.png", "layer_error": "layer_error.png", "traces": "neuron_traces.png", "html": "report.html"}


def run_label(run: dict) -> str:
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


def plot_accuracy(path: Path, runs: list[dict], ann: float, report_steps: list[int], title: str) -> Path:
    methods = _methods_of(runs)
    series = [dict(label=run_label(run), steps=np.arange(1, len(run["accuracy_curve"]) + 1),
                   accuracy=run["accuracy_curve"], **_style(run, methods)) for run in runs]
    return accuracy_plot(path, series, ann=ann, title=title, ticks=report_steps)


def _layer_axis(ax, layers: list[str]) -> None:
    ax.set_xticks(range(1, len(layers) + 1))
    ax.set_xticklabels(layers, rotation=45 if len(layers) > 4 else 0, ha="right" if len(layers) > 4 else "center",
                       fontsize=7 if len(layers) > 10 else 8)
    ax.set_xlabel("spiking layer")


def _layer_panel(ax, runs: list[dict], layers: list[str], value: Callable[[dict, str], float], *, ylabel: str,
                 title: str, label: Callable[[dict], str] = run_label, legend: bool = True) -> None:
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


def plot_firing(path: Path, runs: list[dict], layers: list[str], steps: int) -> Path:
    fig = figure(7.2, 4.6)
    _layer_panel(fig.add_subplot(1, 1, 1), runs, layers, lambda run, k: run["firing_rates"][k],
                 ylabel="firing rate (spikes / neuron / step)", title=f"firing rate per layer over T = {steps} steps",
                 label=lambda run: f"{run_label(run)}: mean {run['mean_firing_rate']:.3f}")
    return save(fig, path)


def plot_layer_error(path: Path, runs: list[dict], layers: list[str], report_steps: list[int]) -> Path:
    """Relative L1 error Σ|r − a| / Σ|a| per layer: one panel per report step (the last three), one line per run."""
    ks = [k for k in report_steps if str(k) in runs[0]["layer_agreement"]][-3:] if runs else []
    fig = figure(4.2 * max(1, len(ks)), 4.4)
    for i, k in enumerate(ks):
        _layer_panel(fig.add_subplot(1, max(1, len(ks)), i + 1), runs, layers,
                     lambda run, name, k=k: run["layer_agreement"][str(k)][name]["rel_l1"],
                     ylabel="relative L1 error Σ|r − a| / Σ|a|", title=f"SNN rate r vs ANN activation a, T = {k}")
    return save(fig, path)


def plot_sin(path: Path, runs: list[dict], layers: list[str], window: int) -> Path:
    fig = figure(10.0, 4.4)
    _layer_panel(fig.add_subplot(1, 2, 1), runs, layers, lambda run, k: run["sin"]["layers"][k]["sin_ratio"],
                 ylabel="SIN ratio = N_SIN / #{z ≤ 0}", title=f"SIN ratio per layer (first {window} steps)")
    _layer_panel(fig.add_subplot(1, 2, 2), runs, layers, lambda run, k: run["sin"]["layers"][k]["ans"],
                 ylabel="ANS = spikes per SIN neuron", title=f"ANS per layer (first {window} steps)", legend=False)
    return save(fig, path)


def plot_traces(path: Path, traces: dict, picks: list[tuple[int, str]], z: np.ndarray, title: str) -> Path:
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


def html_report(path: Path, manifest: dict, images: dict[str, Path]) -> Path:
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
    acc_rows = [[run_label(r)] + [pct(r["accuracy_at"][str(t)]) for t in rs] +
                [r["steps_to"][k] if r["steps_to"][k] is not None else "never" for k in ("ann-1%", "ann-0.1%", "ann")]
                for r in runs]
    sin_rows = []
    for prec, row in manifest["sin_last_layer"].items():
        for label, s in row.items():
            if s is not None:
                sin_rows.append([prec, label, f"{s['sin_ratio']:.4f}", f"{s['ans']:.3f}", f"{s['c']:.4f}",
                                 f"{s['p']:.4f}", f"{s['sin_share']:.4f}", f"{s['pos_share']:.4f}",
                                 f"{s['silent_share']:.4f}"])
    energy_rows = [[run_label(r), f"{r['mean_firing_rate']:.4f}", f"{r['energy']['ann']['energy_pj'] / 1e6:.4f}",
                    f"{r['energy']['snn']['energy_pj'] / 1e6:.4f}", f"{100 * r['energy']['ratio']:.1f}",
                    f"{100 * r['energy']['ratio_first_layer_once']:.1f}"] for r in runs]
    imgs = "\n".join(
        f"<h3>{esc(name)}</h3><img alt='{esc(name)}' src='data:image/png;base64,"
        f"{base64.b64encode(Path(p).read_bytes()).decode('ascii')}'>" for name, p in images.items())
    net = manifest["network"]
    cfg = manifest["config"]
    sin_head = ["precision", "run", "SIN ratio", "ANS", "c", "p = 1 − c", "SIN share", "POS share", "silent share"]
    body = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>msat-lava eval: {esc(Path(net['path']).name if net['path'] else 'network')}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}} th{{background:#eee}} img{{max-width:100%}}
code{{background:#f4f4f4}}</style></head><body>
<h1>msat-lava eval</h1>
<p>network <code>{esc(str(net['path']))}</code> (sha256 {esc(str(net['file_sha256'])[:16])}…, model hash
{esc(str(net['model_hash'])[:16])}…); data <code>{esc(str(manifest['data']['path']))}</code>
({manifest['data']['samples']} samples of split {esc(str(manifest['data']['split']))}); T = {manifest['config']['steps']};
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


def title_of(manifest: Mapping[str, Any]) -> str:
    """The accuracy plot's title: the network file's name (``network`` when it was given in memory), the number of
    samples and the split."""
    path = manifest["network"]["path"]
    name = Path(path).name if path else "network"
    return f"{name}: {manifest['data']['samples']} samples, {manifest['data']['split']} split"


def traces_title(manifest: Mapping[str, Any]) -> str:
    tr = manifest["traces"]
    return f"{tr['method']} ({tr['precision']}), layer {tr['layer']}, sample {tr['sample']}"


def write_figures(directory: Path, manifest: Mapping[str, Any], traces: Mapping[str, np.ndarray],
                  z: np.ndarray) -> dict[str, Path]:
    """Draw the five figures of ``manifest`` into ``directory`` (file names :data:`FILES`); ``traces``: the
    replayed arrays of the traced layer, ``z``: its ANN pre-activations (flat) for the first sample. Returns
    {caption: path}, in the order of the HTML page."""
    directory = Path(directory)
    runs, layers, rsteps = manifest["runs"], manifest["layers"], manifest["report_steps"]
    picks = [(int(n["index"]), n["kind"]) for n in manifest["traces"]["neurons"]]
    return {
        "accuracy vs T": plot_accuracy(directory / FILES["accuracy"], runs, manifest["ann"]["accuracy"], rsteps,
                                       title_of(manifest)),
        "firing rate per layer": plot_firing(directory / FILES["firing_rate"], runs, layers,
                                             manifest["config"]["steps"]),
        "SIN ratio per layer": plot_sin(directory / FILES["sin"], runs, layers, manifest["config"]["sin_window"]),
        "SNN rate vs ANN activation per layer": plot_layer_error(directory / FILES["layer_error"], runs, layers,
                                                                 rsteps),
        "neuron traces": plot_traces(directory / FILES["traces"], traces, picks, z, traces_title(manifest)),
    }


def format_summary(manifest: Mapping[str, Any]) -> str:
    """The text ``msat-lava eval`` prints: ANN accuracy, one line per run, spike-confidence p, notes, the
    manifest's path."""
    lines = ["", f"ANN accuracy: {100 * manifest['ann']['accuracy']:.2f} %  (steps to reach ANN−1 % / −0.1 % / ANN "
                 "per run below)"]
    for r in manifest["runs"]:
        s = r["steps_to"]
        last = r["sin"]["last_layer"]
        lines.append(f"  {run_label(r):<22} acc@T={manifest['config']['steps']}: "
                     f"{100 * r['accuracy_curve'][-1]:6.2f} %  steps: {s['ann-1%']} / {s['ann-0.1%']} / {s['ann']}"
                     f"  FR {r['mean_firing_rate']:.4f}  last-layer SIN ratio {last['sin_ratio']:.4f} "
                     f"ANS {last['ans']:.3f}  energy {100 * r['energy']['ratio']:.1f} % of ANN (estimate)")
    for method, sc in manifest["sc_calibration"].items():
        lines.append(f"spike confidence p ({method}): " + ", ".join(f"{k} = {v:.4f}" for k, v in sc["p"].items()))
    for note in manifest["notes"]:
        lines.append(f"note: {note}")
    lines.append(f"report: {manifest['files']['manifest']}")
    return "\n".join(lines)

