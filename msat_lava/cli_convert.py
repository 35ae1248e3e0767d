"""``msat-lava convert`` and ``msat-lava info``.

``add_convert_parser(subparsers)`` / ``add_info_parser(subparsers)`` register the two subcommands (see
``msat_lava.cli``). Their handlers return 0 on success and **2** for bad input or an unsupported model
(unreadable files, bad arguments, unsupported nodes — all listed in one message —, calibration or
quantization errors, a malformed network file, an existing output without ``--overwrite``); the message goes
to stderr. Anything else propagates (``msat_lava.cli.main`` turns it into exit code 1).

``main(argv)`` runs the two subcommands standalone (tests, ``python -m msat_lava.cli_convert``).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

__all__ = ["add_convert_parser", "add_info_parser", "main", "load_model", "load_data", "format_summary",
           "format_netx_summary", "EXIT_OK", "EXIT_BAD_INPUT"]

from msat_lava.cli_common import (EXIT_BAD_INPUT, EXIT_OK, BadInput, Parser, add_common_options,
                                  add_config_option, check_destination, debug_on, error_line, positive_int, seed_arg)
from msat_lava.cli_common import bad_input_errors as _bad_input_errors


def _fail(command: str, exc: BaseException) -> int:
    if debug_on():
        import traceback

        traceback.print_exc()
    print(error_line(command, exc), file=sys.stderr)
    return EXIT_BAD_INPUT


# ---------------------------------------------------------------------------------------------------------
# model and data loading
# ---------------------------------------------------------------------------------------------------------

def _strip_module_prefix(state: dict) -> dict:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_model(spec: str | None = None, weights: str | None = None, exported: str | None = None):
    """The ``nn.Module`` named by ``--model module:callable`` (+ ``--weights``) or ``--exported file.pt2``.

    ``module`` is a dotted module name (the current directory is importable) or a path to a ``.py`` file;
    ``callable`` is called without arguments. ``--weights`` is loaded with ``torch.load(weights_only=True)``;
    a ``{'state_dict': ...}`` container is unwrapped and a ``module.`` prefix stripped. Unexpected keys, or
    missing keys other than BatchNorm ``num_batches_tracked``, are errors.
    """
    import torch

    if (spec is None) == (exported is None):
        raise BadInput("give exactly one of --model module:callable or --exported file.pt2")
    if exported is not None:
        if weights is not None:
            raise BadInput("--weights cannot be combined with --exported")
        path = Path(exported)
        if not path.is_file():
            raise BadInput(f"exported program {exported!r} does not exist")
        from msat_lava.safe_load import load_exported

        program = load_exported(path)  # refuses any archive that would unpickle, before anything runs
        module = program.module()
        # An unlifted exported module refuses .eval()/.train(); it already has the mode it was exported in.
        module.eval = types.MethodType(lambda self: self, module)
        module.train = types.MethodType(lambda self, mode=True: self, module)
        return module

    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise BadInput(f"--model must look like module:callable or path/to/file.py:callable, got {spec!r}")
    try:
        if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
            file = Path(module_name)
            if not file.is_file():
                raise BadInput(f"model file {module_name!r} does not exist")
            mod_spec = importlib.util.spec_from_file_location(f"_msat_lava_model_{file.stem}", file)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except BadInput:
        raise
    except (Exception, SystemExit) as exc:  # a module calling sys.exit(0) must not end convert with exit 0
        raise BadInput(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise BadInput(f"{module_name!r} has no attribute {attr!r}")
    if not callable(factory):
        raise BadInput(f"{spec!r} is not callable")
    try:
        model = factory()
    except (Exception, SystemExit) as exc:  # SystemExit(0) from a factory is a failure, not a success
        raise BadInput(f"calling {spec!r} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise BadInput(f"{spec!r} returned a {type(model).__name__}, not a torch.nn.Module")

    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise BadInput(f"weights file {weights!r} does not exist")
        from msat_lava.safe_load import load_weights

        state = load_weights(path)  # torch.load(weights_only=True), no fallback
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise BadInput(f"weights file {weights!r} holds a {type(state).__name__}, not a state_dict")
        state = _strip_module_prefix(state)
        bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad:
            raise BadInput(f"weights file {weights!r}: entry {str(bad[0])!r} is not a tensor")
        try:
            result = model.load_state_dict(state, strict=False)
        except (RuntimeError, ValueError, TypeError) as exc:  # e.g. a tensor of the wrong shape
            text = " ".join(str(exc).split())[:400]
            raise BadInput(f"weights {weights!r} do not match the model: {text}") from None
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise BadInput(f"weights {weights!r} do not match the model: missing {missing[:8]}"
                           f"{'...' if len(missing) > 8 else ''}, unexpected {result.unexpected_keys[:8]}")
    model.eval()
    return model


def load_data(path: str, *, norm_mean: list[float] | None = None, norm_std: list[float] | None = None,
              input_scale: float | None = None, samples: int | None = None, seed: int = 0):
    """Calibration inputs of ``convert --data``: :func:`msat_lava.data.load_calibration` (key ``x_train`` if
    present, else ``x``; labels ignored; the layouts and normalization of every command; a seeded random subset
    of ``samples``, sorted: the CIFAR-10 file is class-sorted, so a prefix would be one class). Returns the float32
    array; a :class:`msat_lava.data.DataError` names the file and the key."""
    from msat_lava.data import load_calibration

    return load_calibration(path, samples=samples, seed=seed, input_scale=input_scale, mean=norm_mean,
                            std=norm_std).x


# ---------------------------------------------------------------------------------------------------------
# text output
# ---------------------------------------------------------------------------------------------------------

def format_summary(info: dict) -> str:
    """The layer table of :func:`netx_export.api.summary` as text."""
    inp = info["input"]
    lines = [f"method {info['method']}  format {info['format_version']}  input {inp['name']} "
             f"{tuple(inp['shape'])}  λ0 {inp['scale']:.6g}  F_in {inp['frac_bits']}"]
    quiescent = any(row.get("theta_q_over_lambda") is not None for row in info["layers"])
    burst = any((row.get("gamma") or 1) > 1 for row in info["layers"])
    extra = (f" {'θq/λ':>8}" if quiescent else "") + (f" {'Γ':>3}" if burst else "")
    head = (f"{'layer':<22} {'kind':<8} {'shape':<14} {'λ':>10} {'mode':<6} {'SC p':>5}{extra} {'terms':<44} "
            f"{'bias':>21}")
    lines += [head, "-" * len(head)]
    for row in info["layers"]:
        terms = ", ".join(f"{t['source']}{'·' + t['op'] if t['op'] else ''} e{t['exponent']}"
                          for t in row["terms"])
        if len(terms) > 44:
            terms = terms[:41] + "..."
        sc = "" if row["sc_p"] is None else f"{row['sc_p']:.3g}"
        cells = ""
        if quiescent:
            q = row.get("theta_q_over_lambda")
            cells += f" {'-' if q is None else f'{q:.2g}':>8}"
        if burst:
            cells += f" {row['gamma'] or '-':>3}"
        lines.append(f"{row['name']:<22} {row['kind']:<8} {'x'.join(map(str, row['shape'])):<14} "
                     f"{row['lam']:>10.5g} {row['mode'] or '-':<6} {sc:>5}{cells} {terms:<44} "
                     f"{'[' + str(row['bias_min']) + ', ' + str(row['bias_max']) + ']':>21}")
    t = info["totals"]
    lines.append(f"{t['spiking_layers']} spiking layers, {t['neurons']} neurons, {t['weights']} int8 weights in "
                 f"{t['terms']} terms, {t['lut_entries']} LUT entries, {t['clipped']} clipped values")
    nx = info["netx"]
    lines.append("netx view: loadable by lava-dl netx.hdf5.Network (input_message_bits="
                 f"{nx['input_message_bits']})" if nx["loadable"] else f"netx view: not loadable ({nx['reason']})")
    for warning in info["warnings"]:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def format_netx_summary(info: dict) -> str:
    """The layer table of :func:`msat_lava.netx_peer.summary` (a plain netx file) as text."""
    inp = info["input"]
    tot = info["totals"]
    name = os.path.basename(info.get("file", {}).get("path", "")) or "netx network"
    lines = [f"plain netx file (lava-dl CUBA), simulated with msat_lava.netx_peer: {name}, {tot['processes']} "
             f"processes in {tot['file_layers']} file layers",
             f"input (C, H, W) {tuple(inp['shape'])}: the input layer's bias_mant, {tuple(inp['shape_lava'])} in "
             f"Lava's (W, H, C) order, 13-bit ints"]
    rows = []
    for r in info["layers"]:
        n = r["neuron"]
        if r["weight_shape"] is None:
            weight = bits = wrange = brange = "-"
        else:
            weight = "x".join(map(str, r["weight_shape"]))
            bits = str(r["weight_bits"])
            if r["kind"] == "dense":
                bits += f" (Lava {r['lava_num_weight_bits']}b e{r['lava_weight_exp']})"
            wrange = f"[{r['weight_min']}, {r['weight_max']}]"
            brange = f"[{r['bias_min']}, {r['bias_max']}]"
        rows.append([str(r["process"]), str(r["layer"]), r["connection"], "x".join(map(str, r["shape"])),
                     str(r["neurons"]), weight, bits, wrange, brange, n["type"], f"{n['iDecay']} ({n['du']})",
                     f"{n['vDecay']} ({n['dv']})", f"{n['vThMant']} ({n['threshold']})"])
    head = ["proc", "layer", "kind", "shape", "neurons", "weight", "bits", "w range", "bias", "neuron",
            "iDecay (du)", "vDecay (dv)", "vThMant (<<6)"]
    widths = [max(len(head[j]), *(len(row[j]) for row in rows)) for j in range(len(head))]
    right = {0, 1, 4}

    def fmt(cells):
        return "  ".join(c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths)))

    lines += [fmt(head).rstrip(), "-" * len(fmt(head).rstrip())]
    lines += [fmt(row).rstrip() for row in rows]
    lines.append(f"{tot['neurons']} neurons, {tot['weights']} weights; CUBA: spike when v > vThMant << 6, v reset to "
                 "0; per step u *= (4096 - iDecay)/4096, v *= (4096 - vDecay)/4096 (toward 0)")
    sim = info["simulation"]
    if sim["Ts"] is not None or sim["tSample"] is not None:
        lines.append(f"simulation: Ts {sim['Ts']}, tSample {sim['tSample']}")
    lines.append(f"reset interval: none stored in the file (netx's reset_interval / reset_offset are run options: "
                 "--reset-interval I --reset-offset O)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# subcommands
# ---------------------------------------------------------------------------------------------------------

def _sc_pairs(values: list[str] | None) -> dict[str, float] | None:
    if not values:
        return None
    out = {}
    for item in values:
        name, sep, value = item.rpartition("=")
        try:
            out[name] = float(value)
        except ValueError:
            name = ""
        if not sep or not name:
            raise BadInput(f"--sc-p expects LAYER=P, got {item!r}")
        if not 0.0 < out[name] <= 1.0:
            raise BadInput(f"--sc-p {item!r}: the spike confidence P of layer {name!r} must be in (0, 1]")
    return out


def _model_params(items: list[str] | None, method: str):
    """``--param KEY=VALUE`` (repeatable) → the parameter object of a registry model with parameters
    (:mod:`netx_export.neurons`), None for a model without (where --param is refused)."""
    from netx_export import neurons

    pairs: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip() or key.strip() in pairs:
            raise BadInput(f"--param expects KEY=VALUE (each key once), got {item!r}")
        pairs[key.strip()] = value.strip()
    model = neurons.get(method)
    if model.params_type is None:
        if pairs:
            raise BadInput(f"--param: method {method!r} has no model parameters")
        return None
    try:
        return neurons.params_from_options(method, pairs, parse=True)
    except neurons.NeuronSpecError as exc:
        raise BadInput(f"--param: method {method!r}: {exc}") from None


def _method_help() -> str:
    from netx_export import neurons

    rows = []
    for m in neurons.models():
        ps = ", ".join(f"{p.name}={p.default}" for p in m.params)
        rows.append(f"{m.name}" + (f" [--param {ps}]" if ps else ""))
    return "neuron model (default msat): " + "; ".join(rows)


def _cmd_convert(args: argparse.Namespace) -> int:
    timings: dict[str, float] = {}  # wall seconds per phase, in order (--json: "timings")
    try:
        from netx_export.api import PhaseClock, convert, summary

        from msat_lava.data import parse_floats

        clock = PhaseClock(timings)
        # the destination is checked before any work: its directory exists and is writable, no silent overwrite
        out = check_destination(args.out, "--out", overwrite=args.overwrite)
        sc_p = _sc_pairs(args.sc_p)  # the options' own bounds, before any work
        params = _model_params(args.param, args.method)
        if not 0.0 <= args.v_init < 1.0:
            raise BadInput(f"--v-init {args.v_init!r}: the initial residual v_init is a fraction of λ in [0, 1)")
        if not 0.0 < args.percentile <= 100.0:
            raise BadInput(f"--percentile {args.percentile!r}: must be in (0, 100]")
        if args.burst_scaled and args.method != "const":
            raise BadInput(f"--burst-scaled: only for --method const (θ = λ/Γ of a constant threshold), got "
                           f"--method {args.method}")
        if args.nir is not None:
            if args.weights is not None:
                raise BadInput("--weights cannot be combined with --nir")
            from netx_export.nir_io import read_nir

            model = read_nir(args.nir)
        else:
            model = load_model(args.model, args.weights, args.exported)
        clock.lap("load_model")
        x = load_data(args.data, norm_mean=parse_floats(args.norm_mean, "--norm-mean"),
                      norm_std=parse_floats(args.norm_std, "--norm-std"), input_scale=args.input_scale,
                      samples=args.calib_samples, seed=args.seed)
        clock.lap("load_data")
        from netx_export.errors import GraphError

        try:
            net = convert(model, x, method=args.method, params=params, preset=args.preset,
                          lambda_method=args.lambda_method, percentile=args.percentile,
                          nonzero_only=args.nonzero_only, sc_p=sc_p,
                          seed=args.seed, progress=not (args.quiet or args.json), msat_units=args.msat_units,
                          v_init=args.v_init, channelwise=args.channelwise, timings=timings, gamma=args.burst,
                          threshold_divisor=args.burst if args.burst_scaled else 1)
        except GraphError as exc:  # the model does not take the data's samples: name the data file too
            if exc.field != "example_input_shape":
                raise
            raise BadInput(f"--data {args.data!r}: samples of shape {tuple(x.shape[1:])} do not fit the model "
                           f"({exc})") from None
        clock.restart()  # convert() timed its own phases
        net.save(out, overwrite=args.overwrite)
        clock.lap("write")
    except _bad_input_errors() as exc:
        return _fail("convert", exc)
    info = summary(net)
    info["file"] = {"path": str(out), "bytes": out.stat().st_size}
    clock.lap("summary")
    info["timings"] = {k: round(v, 4) for k, v in timings.items()}
    if isinstance(args.config, dict):  # --config: path and sha256 of the TOML file (msat_lava.cli.main)
        info["config"] = args.config
    if args.json:
        print(json.dumps(info, indent=2))
    elif not args.quiet:
        print(format_summary(info))
        print(f"wrote {out} ({out.stat().st_size} bytes) in {sum(timings.values()):.1f} s")
    return EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    try:
        from netx_export.api import summary

        from msat_lava.netx_peer import NETX_FILE, read_network_file

        kind, net = read_network_file(args.net)  # an msat-lava file or a plain netx file (FORMAT.md §2.1)
        if kind == NETX_FILE:
            from msat_lava.cli_netx import info_netx

            return info_netx(args.net, net, as_json=args.json)
    except _bad_input_errors() as exc:
        return _fail("info", exc)
    info = summary(net)
    info["file"] = {"path": str(args.net), "bytes": os.path.getsize(args.net)}
    print(json.dumps(info, indent=2) if args.json else format_summary(info))
    return EXIT_OK


def _burst_arg(text: str) -> int:
    """argparse type of ``--burst``: Γ in 1..BURST_MAX, the bound of eval's +bN / +bsN (msat_lava.methods)."""
    from msat_lava.methods import BURST_MAX

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in 1..{BURST_MAX}, got {text!r}") from None
    if not 1 <= value <= BURST_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer in 1..{BURST_MAX}, got {value}")
    return value


def add_convert_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a PyTorch model into a network file (.net)",
        description=(
            "Trace a PyTorch model, calibrate λ per spiking layer on --data, quantize to the fixed-point "
            "program and write the network file (netx HDF5 + /msat extension, docs/FORMAT.md). "
            "Exit 0 on success, 2 for bad input or an unsupported model (every unsupported node is listed)."),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="MODULE:CALLABLE",
                     help="import MODULE (dotted name or path/to/file.py) and call CALLABLE() for the nn.Module")
    src.add_argument("--exported", metavar="FILE.pt2", help="a torch.export archive (torch.export.save)")
    src.add_argument("--nir", metavar="FILE.nir", help="a NIR graph of an ANN-equivalent network (IF layers read "
                     "as ReLUs; netx_export.nir_io documents what is accepted)")
    p.add_argument("--weights", metavar="FILE", help="state_dict (.pt/.th) for --model; loaded with "
                   "torch.load(weights_only=True); {'state_dict': ...} and a 'module.' prefix are accepted")
    p.add_argument("--data", required=True, metavar="FILE.npz",
                   help="calibration data: key x_train (preferred) or x; (N,H,W), (N,H,W,C), (N,C,H,W) or (N,F)")
    p.add_argument("--norm-mean", metavar="M1,M2,..", help="per-channel mean subtracted after --input-scale")
    p.add_argument("--norm-std", metavar="S1,S2,..", help="per-channel std divided after the mean")
    p.add_argument("--input-scale", type=float, default=None,
                   help="divide raw data by this first (default 255 for uint8 data, else 1)")
    p.add_argument("--calib-samples", type=positive_int, default=512, metavar="N",
                   help="seeded random subset of N calibration samples (default 512)")
    from netx_export import neurons

    p.add_argument("--method", choices=neurons.names(), default="msat", help=_method_help())
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="a parameter of the --method's neuron model (repeatable; docs/DESIGN.md neuron models), "
                   "e.g. --method dtif-r --param beta=3")
    p.add_argument("--preset", choices=("vgg16", "resnet20", "resnet34"), default="resnet20",
                   help="MSAT coefficient preset (ALGORITHMS §2.4; default resnet20)")
    p.add_argument("--msat-units", choices=("raw", "normalized"), default="raw",
                   help="units of the MSAT threshold formula: raw (default; the paper's model, V_T = -λ) or "
                   "normalized (the BrainCog port: Δ/λ, x/λ with λ = 1 inside the formula; ALGORITHMS §2.2)")
    p.add_argument("--v-init", type=float, default=0.0, metavar="F",
                   help="initial membrane residual as a fraction of λ, in [0, 1) (default 0, the paper; 0.5 = "
                   "half-threshold start, Bu et al. 2022, far fewer steps for the same accuracy)")
    p.add_argument("--burst", type=_burst_arg, default=1, metavar="N",
                   help="burst spikes: up to Γ = N spikes per neuron and step (default 1; ALGORITHMS §7; eval's +bN)")
    p.add_argument("--burst-scaled", action="store_true",
                   help="with --burst N and --method const: divide every spiking layer's λ by N, θ = λ/N, so one "
                   "step's output takes N + 1 levels 0, λ/N, …, λ (eval's +bsN; e.g. --lambda percentile "
                   "--percentile 99.9 --v-init 0.5 --burst 4 --burst-scaled: ResNet20 91.2 %% at T = 16, "
                   "docs/RESULTS.md §3.7)")
    p.add_argument("--lambda", dest="lambda_method", choices=("max", "percentile"), default="max",
                   help="λ per layer: max activation or a percentile (default max)")
    p.add_argument("--percentile", type=float, default=99.99, help="percentile for --lambda percentile")
    p.add_argument("--nonzero-only", action="store_true", help="percentile over non-zero activations only")
    p.add_argument("--channelwise", action="store_true",
                   help="channel-wise λ where the graph allows it: channels of relus between conv/linear layers "
                   "are rescaled to share the layer's λ (ANN-equivalent weights; netx_export.balance)")
    p.add_argument("--sc-p", action="append", metavar="LAYER=P", help="spike confidence p for a relu node "
                   "(repeatable)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the calibration subset and the SC gate, in "
                   "[0, 2^32) (default 0)")
    p.add_argument("--out", required=True, metavar="NET", help="output network file")
    p.add_argument("--overwrite", action="store_true", help="replace NET if it exists")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (with the wall seconds of each "
                   "phase under 'timings': load_model, load_data, trace, calibrate, quantize, write, summary)")
    add_config_option(p)
    add_common_options(p, quiet="the calibration progress bar, the layer table and the 'wrote' line (--json "
                                "still prints the summary)")
    p.set_defaults(func=_cmd_convert)


def add_info_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="show the layer table of a network file (msat-lava or plain lava-dl netx)",
        description=("Read and validate a network file and print its layer table: an msat-lava network file, or a "
                     "plain lava-dl netx (CUBA) file, told apart by the rule of docs/FORMAT.md §2.1 (a damaged "
                     "msat-lava file is refused, never read as netx). Exit 2 if it is malformed."),
    )
    p.add_argument("net", metavar="NET", help="network file written by msat-lava convert, or a lava-dl netx file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_common_options(p, quiet="nothing, the table (or --json) is the result")
    p.set_defaults(func=_cmd_info)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry with just ``convert`` and ``info``."""
    parser = Parser(prog="msat-lava")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_convert_parser(sub)
    add_info_parser(sub)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
