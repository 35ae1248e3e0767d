"""``msat-lava eval``: accuracy vs T of several threshold methods, SIN statistics, firing rates and energy.

This module only parses the flags into a :class:`msat_lava.evaluate.EvalConfig`, calls
:func:`msat_lava.evaluate.evaluate` (THE pipeline: methods → networks → runs → manifest), prints the summary
(:func:`msat_lava.reports.format_summary`) and saves the files (:meth:`msat_lava.evaluate.EvalReport.save`). The
method grammar is :mod:`msat_lava.methods`; ``parse_methods``, ``method_settings``, ``threshold_divisor``,
``divided_lambdas``, ``DEFAULT_METHODS``, ``FILES`` and ``neuron_traces`` stay importable from here.

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
from pathlib import Path
from typing import Any, Callable, Sequence

from msat_lava import methods as _methods
from msat_lava.cli_common import add_common_options, add_config_option, seed_arg, steps_arg
from msat_lava.cli_run import EXIT_OK, _add_data_args, _exit_codes, _positive_int
from msat_lava.methods import DEFAULT_METHODS, MethodSpec, divided_lambdas, method_settings, threshold_divisor
from msat_lava.reports import FILES, format_summary

__all__ = ["add_eval_parser", "run_eval", "eval_config", "neuron_traces", "parse_methods", "method_settings",
           "threshold_divisor", "divided_lambdas", "DEFAULT_METHODS", "FILES"]


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"const,p99.9,msat+sc"`` → validated, de-duplicated list of names (:func:`msat_lava.methods.parse_methods`,
    whose module docstring has the grammar)."""
    return [str(spec) for spec in _methods.parse_methods(text)]


def _model_params_of(method: str) -> dict[str, str] | None:
    """The ``:key=value`` parameters of a registry-model core (text), None for the MSAT family."""
    return MethodSpec.of(method).model_params


def neuron_traces(*args: Any, **kwargs: Any):
    """:func:`msat_lava.evaluate.neuron_traces` (replay of one spiking layer for one sample)."""
    from msat_lava.evaluate import neuron_traces as _neuron_traces

    return _neuron_traces(*args, **kwargs)


def eval_config(args: argparse.Namespace):
    """The :class:`msat_lava.evaluate.EvalConfig` of parsed ``eval`` arguments."""
    from msat_lava.evaluate import EvalConfig

    return EvalConfig(
        steps=args.steps, precision=args.precision, report_steps=args.report_steps, calib_samples=args.calib_samples,
        calib_seed=args.calib_seed, lambda_from=args.lambda_from, percentile_nonzero=args.percentile_nonzero,
        preset=args.preset, msat_units=args.msat_units, bc_samples=args.bc_samples, sc_window=args.sc_window,
        sc_layers=args.sc_layers, sin_batch=args.sin_batch, seed=args.seed, batch_size=args.batch_size,
        threads=args.threads, split=args.split, samples=args.samples, input_scale=args.input_scale,
        norm_mean=args.norm_mean, norm_std=args.norm_std)


def run_eval(args: argparse.Namespace, log: Callable[[str], None] = lambda s: None,
             ctx: Any = None) -> dict[str, Any] | None:
    """The whole evaluation for parsed ``eval`` arguments; returns the manifest (also written to ``--out``).

    ``--out`` is checked first (before any work, on every rank), then :func:`msat_lava.evaluate.evaluate` runs
    with ``ctx`` (the :class:`msat_lava.distributed.Context` of a torchrun launch, default one process) and rank 0
    records the arguments in the manifest and saves the files. Ranks other than 0 log nothing and return None.
    """
    from msat_lava.evaluate import check_out_dir, evaluate

    out_dir = check_out_dir(args.out)  # before any work
    if args.calib_data:  # an unreadable --calib-data is named as such (not as "no calibration images")
        from msat_lava.data import DataError, npz_members

        try:
            npz_members(args.calib_data)
        except DataError as exc:
            raise DataError(f"--calib-data: {exc}") from None
    report = evaluate(args.net, args.data, args.methods, eval_config(args), calibration=args.calib_data or None,
                      ctx=ctx, log=log, progress=not (args.json or getattr(args, "quiet", False)))
    if report is None:  # not rank 0
        return None
    report.manifest["arguments"] = {k: v for k, v in vars(args).items() if k != "func"}
    report.save(out_dir, html=not args.no_html)
    manifest = report.manifest
    log(f"wrote {', '.join(str(p) for p in manifest['files'].values())}")
    return manifest


DEFAULT_OUT = "msat-lava-eval"


@_exit_codes("eval")
def _cmd_eval(args: argparse.Namespace) -> int:
    from msat_lava import distributed

    def log(message: str) -> None:
        if not (args.json or args.quiet):
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
                print(format_summary(manifest))
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
    add_config_option(p)
    add_common_options(p, quiet="the progress messages, the progress bars and the 'wrote' line (the summary "
                                "table, or --json's manifest, still prints)")
    p.set_defaults(func=_cmd_eval)
