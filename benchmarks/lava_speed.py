"""Lava per-step wall time of our ResNet20 network vs a lava-dl netx CUBA-LIF network of the same layers (issue 12).

    python benchmarks/lava_speed.py                                  # 2 samples, T = 64, 2 rounds, ≈ 4–5 min
    python benchmarks/lava_speed.py --samples 2 --steps 32 --rounds 1 --layouts fused --no-write   # quick look

**Ours.** The akamaster ResNet20 converted like ``benchmarks/verify.sh`` (``netx_export.api.convert``, method
msat, preset resnet20, 512 calibration images of the CIFAR-10 training set drawn with seed 0, fixed point), run
by :func:`msat_lava.lava.build.run_lava` on ``--samples`` strided CIFAR-10 test images × ``--steps`` steps in
one compiled run, ``msat_lava.lava.config.sim_config('fixed')`` (a ``Loihi2SimCfg`` subclass selecting the
``fixed_pt`` models and specialising them per process; lava-dl's side runs under
``Loihi2SimCfg(select_tag='fixed_pt')``). Layouts (``--layouts``): ``fused`` = run_lava's
default (``stages_per_process=None``: the whole network in one Lava process beside the image source) and
``per-stage`` (``stages_per_process=1``: one Lava process per stage, 20 + 1) and ``separate-synapses``
(``synapses='separate'``: one process per stage plus one ``MsatSynapse`` process per synaptic term, netx's layout
of a Conv/Dense process beside each neuron process).

**lava-dl.** A netx HDF5 file written here with h5py in lava-dl's layout (LAVA_NOTES §2; the layout of
shared/data/netx_peer's slayer-written files): input (3, 32, 32) → the same 19 convs (shapes, kernels, strides,
paddings, int8 mantissas of our program as weights) each with a CUBA neuron (iDecay 4096, vDecay 0: non-leaky IF,
vThMant and per-channel bias from the netx view of docs/FORMAT.md §3.2) → flatten → dense 4096 → 10 (our readout's
global sum-pool folded into the dense weights; CUBA with vThMant 131071, an accumulator). Same number of
layers (19 spiking + readout) and neurons per layer (188,416 + 10). **netx has no residual add**, so the
shortcuts are left out: it is a plain feed-forward chain of the same convs. It is loaded with
``lava.lib.dl.netx.hdf5.Network(input_message_bits=10, reset_interval=T, reset_offset=1)`` (per-sample reset,
LAVA_NOTES §2.6), fed the same quantized images p_in through a ``RingBuffer`` (graded input, as our first
layer), its output spikes go to a sink ``RingBuffer``, and it runs for the same N·T steps with the same run
config. netx builds one Conv/Dense process plus one LIF process per layer.

**Timing.** Every run is ``RunSteps(1)`` (compile, start the worker processes, first step) then
``RunSteps(N·T − 1)``; per step = the second call's wall time ÷ (N·T − 1). Build (process creation) and compile
are reported separately and excluded. Each round runs every configuration once, alternating; each figure is the
best over ``--rounds``. ``compute_only`` steps our stages in this process without Lava
(:class:`msat_lava.lava.stages.StageRunner`, the code the process models run) on one sample: per-step Lava
overhead = Lava per step − compute_only. ``--profile`` adds a cProfile of that compute-only loop.

Output: JSON on stdout and in ``--out`` (default ``benchmarks/results/lava_speed.json``, written atomically):
per-step times, ratio = ours ÷ netx per step (goal ≤ 1.2), samples per minute at T (steady state, = 60 / (T ·
per step); end-to-end with build, compile and collection for the N samples), build/compile times, machine.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import msat_lava  # noqa: E402,F401  (installs the Lava compatibility hooks)
from netx_export.fileio import atomic_target  # noqa: E402

CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)
#: layout name → (stages_per_process, synapses) of run_lava
LAYOUTS = {"fused": (None, "fused"), "per-stage": (1, "fused"), "separate-synapses": (1, "separate")}
VTH_MAX = (1 << 17) - 1   # netx vThMant is 17-bit
NETX_MAX_SHIFT = 16       # FORMAT §3.2: 2^−u capped at 2^16


def shared_data() -> Path:
    return Path(os.environ.get("MSAT_SHARED_DATA", ROOT.parent / "shared" / "data"))


# ----------------------------------------------------------------------------------------------------------
# our network
# ----------------------------------------------------------------------------------------------------------
def convert_resnet20(calib: int, seed: int = 0):
    """The ConvertedNetwork of ``msat-lava convert --model tests/models.py:resnet20 ... --method msat``."""
    import models as zoo  # tests/models.py

    from msat_lava.cli_convert import load_data
    from netx_export.api import convert

    model = zoo.load_resnet(20)
    x = load_data(str(shared_data() / "cifar10.npz"), norm_mean=list(CIFAR_MEAN), norm_std=list(CIFAR_STD),
                  samples=calib, seed=seed)
    return convert(model, x, method="msat", preset="resnet20", seed=seed, progress=False)


def test_images(n: int, program) -> np.ndarray:
    from msat_lava.data import load_npz

    return load_npz(shared_data() / "cifar10.npz", split="test", samples=n, mean=CIFAR_MEAN, std=CIFAR_STD,
                    input_shape=program.input_shape).x


def run_ours(program, x: np.ndarray, steps: int, layout) -> dict[str, Any]:
    from msat_lava.lava.build import run_lava

    stages_per_process, synapses = layout
    r = run_lava(program, x, steps, precision="fixed", stages_per_process=stages_per_process, synapses=synapses)
    return {"per_step_s": r.per_step_s, "build_s": r.build_s, "compile_s": r.compile_s, "run_s": r.run_s,
            "collect_s": r.collect_s, "wall_s": r.wall_s, "processes": r.num_processes,
            "predictions_at_T": r.predictions[-1].tolist()}


def compute_only(program, x: np.ndarray, steps: int, profile: bool = False) -> dict[str, Any]:
    """Our stages stepped in this process (no Lava), one sample: the arithmetic part of a Lava step."""
    from msat_lava.lava.stages import StageRunner
    from msat_lava.program import input_payload_np

    images, _ = input_payload_np(program, x[:1], True)
    runners = [StageRunner(s, fixed=True, steps=steps, sample_ids=[0], seed=program.seed) for s in program.stages]
    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    for ts in range(1, steps + 1):
        got: dict[str, np.ndarray] = {"input": images[0]}
        for r in runners:
            got[r.name] = r.step(ts, got)
    if prof:
        prof.disable()
    out: dict[str, Any] = {"per_step_s": (time.perf_counter() - t0) / steps}
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
        out["profile_top"] = buf.getvalue()
    return out


# ----------------------------------------------------------------------------------------------------------
# the lava-dl netx CUBA network
# ----------------------------------------------------------------------------------------------------------
def _main_conv(stage):
    convs = [(t, op) for t in stage.terms for op in t.ops if op.kind == "conv"]
    if len(convs) != 1:
        raise ValueError(f"stage {stage.name!r} has {len(convs)} conv terms; the netx chain needs exactly one")
    return convs[0]


def _netx_scale(u: int, mant: np.ndarray) -> tuple[np.ndarray, int]:
    """FORMAT §3.2: vThMant = 2^−u, capped at 2^16 by shifting the mantissas right (round half up)."""
    if -u > NETX_MAX_SHIFT:
        d = -u - NETX_MAX_SHIFT
        mant = (mant + (1 << (d - 1))) >> d
        u = -NETX_MAX_SHIFT
    return mant, u


def _cuba(g, vth: int) -> None:
    n = g.create_group("neuron")
    n.create_dataset("type", data="CUBA")
    n.create_dataset("iDecay", data=4096)
    n.create_dataset("vDecay", data=0)
    n.create_dataset("vThMant", data=int(vth))
    n.create_dataset("refDelay", data=1)
    n.create_dataset("gradedSpike", data=False)


def write_cuba_netx(program, path: str | os.PathLike) -> dict[str, Any]:
    """Write the CUBA-LIF chain of our ResNet program (module docstring) as a netx HDF5 file; returns a summary.

    Works for programs whose neuron stages each have exactly one conv term and whose readout is
    sum-pool → flatten → linear (or flatten → linear); anything else raises ValueError.
    """
    import h5py

    f_in, frac = program.input_frac_bits, program.frac_bits
    layers: list[dict[str, Any]] = []
    prev_shape = tuple(program.input_shape)
    with atomic_target(path, make_parents=True) as tmp, h5py.File(tmp, "w") as f:
        top = f.create_group("layer")
        g = top.create_group("0")
        g.create_dataset("type", (1,), "S10", [b"input"])
        g.create_dataset("shape", data=np.array(prev_shape, dtype=np.int64))
        i = 1
        for s in program.stages:
            if s.kind == "lipool":
                raise ValueError("LIPool stages have no netx equivalent")
            if s.kind == "readout":
                break
            term, op = _main_conv(s)
            if tuple(op.in_shape) != prev_shape:
                raise ValueError(f"conv {op.node!r} reads {op.in_shape}, the chain provides {prev_shape}")
            mant = np.asarray(op.mant, dtype=np.int64)
            # one stored unit of v = 2^u normalized units (FORMAT §3.2): graded p_in input u = e − F, spikes u = e
            u = term.exp - frac if term.source == "input" else term.exp
            mant, u = _netx_scale(u, mant)
            vth = min(1 << -u, VTH_MAX) if u <= 0 else 1
            bias_state = np.asarray(s.bias_fixed, dtype=np.float64).reshape(s.shape[0], -1).mean(axis=1)
            bias = np.floor(bias_state * 2.0 ** (-frac - u) + 0.5)
            g = top.create_group(str(i))
            g.create_dataset("type", (1,), "S10", [b"conv"])
            g.create_dataset("shape", data=np.array(s.shape, dtype=np.int64))
            g.create_dataset("inChannels", data=int(op.in_shape[0]))
            g.create_dataset("outChannels", data=int(s.shape[0]))
            g.create_dataset("groups", data=int(op.params["groups"]))
            g.create_dataset("kernelSize", data=np.array(mant.shape[2:], dtype=np.int64))
            g.create_dataset("stride", data=np.array(op.params["stride"], dtype=np.int64))
            g.create_dataset("padding", data=np.array(op.params["padding"], dtype=np.int64))
            g.create_dataset("dilation", data=np.array([1, 1], dtype=np.int64))
            g.create_dataset("weight", data=mant.astype(np.float32))
            g.create_dataset("bias", data=bias.astype(np.float32))
            _cuba(g, vth)
            layers.append({"type": "conv", "name": s.name, "neurons": int(np.prod(s.shape)),
                           "desc": f"conv {tuple(mant.shape)} stride {tuple(op.params['stride'])} -> "
                                   f"{tuple(s.shape)}, vThMant {int(vth)}"})
            prev_shape = tuple(s.shape)
            i += 1
        ro = program.readout
        (term,) = [t for t in ro.terms]
        kinds = [op.kind for op in term.ops]
        if kinds not in (["sumpool", "flatten", "linear"], ["flatten", "linear"]):
            raise ValueError(f"readout path {kinds} is not (sumpool →) flatten → linear")
        lin = term.ops[-1]
        mant = np.asarray(lin.mant, dtype=np.int64)
        c, h, w = prev_shape
        if kinds[0] == "sumpool":
            pool = term.ops[0]
            if tuple(pool.out_shape[1:]) != (1, 1) or tuple(pool.params["kernel"]) != (h, w):
                raise ValueError("only a global sum-pool can be folded into the dense layer")
            dense = np.repeat(mant, h * w, axis=1)  # (out, C·H·W) in torch (C, H, W) flatten order
        else:
            dense = mant
        g = top.create_group(str(i))
        g.create_dataset("type", (1,), "S10", [b"flatten"])
        g.create_dataset("shape", data=np.array([c * h * w, 1, 1], dtype=np.int64))
        g = top.create_group(str(i + 1))
        g.create_dataset("type", (1,), "S10", [b"dense"])
        g.create_dataset("shape", data=np.array([dense.shape[0], 1, 1], dtype=np.int64))
        g.create_dataset("inFeatures", data=int(dense.shape[1]))
        g.create_dataset("outFeatures", data=int(dense.shape[0]))
        g.create_dataset("weight", data=dense.astype(np.float32))
        _cuba(g, VTH_MAX)
        layers.append({"type": "dense", "name": ro.name, "neurons": int(dense.shape[0]),
                       "desc": f"flatten, dense {tuple(dense.shape)}, vThMant {VTH_MAX}"})
    return {"path": str(path), "bytes": os.path.getsize(path),
            "layers": [f"{lay['name']}: {lay['desc']}" for lay in layers],
            "spiking_layers": sum(1 for lay in layers if lay["type"] == "conv"),
            "neurons": sum(lay["neurons"] for lay in layers), "input_message_bits": f_in + 2}


def run_netx(path: str | os.PathLike, p_in: np.ndarray, steps: int, input_message_bits: int,
             probe_layer: int | None = None) -> dict[str, Any]:
    """Load ``path`` with netx and run N·T steps (p_in: (N, C, H, W) integers, T steps each).

    ``probe_layer``: also record that block's output spikes (Lava's (W, H, C, N·T) layout) as ``probe_spikes``
    (one more sink process; for tests, not for timing)."""
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    n = p_in.shape[0]
    total = n * steps
    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    t0 = time.perf_counter()
    net = netx.hdf5.Network(net_config=str(path), input_message_bits=input_message_bits, reset_interval=steps,
                            reset_offset=1)
    data = np.repeat(np.asarray(p_in).transpose(0, 3, 2, 1)[..., None], steps, axis=-1)  # (N, W, H, C, T)
    data = np.moveaxis(data, 0, -2).reshape(data.shape[1:4] + (total,))                   # (W, H, C, N·T)
    source = Source(data=data)
    sink = Sink(shape=net.out.shape, buffer=total)
    source.s_out.connect(net.inp)
    net.out.connect(sink.a_in)
    probe = None
    if probe_layer is not None:
        probe = Sink(shape=net.layers[probe_layer].out.shape, buffer=total)
        net.layers[probe_layer].out.connect(probe.a_in)
    t1 = time.perf_counter()
    t2 = t3 = t1
    try:
        net.run(condition=RunSteps(num_steps=1), run_cfg=cfg)
        t2 = time.perf_counter()
        if total > 1:
            net.run(condition=RunSteps(num_steps=total - 1), run_cfg=cfg)
        t3 = time.perf_counter()
        spikes = np.rint(sink.data.get()).astype(np.int64)
        probed = None if probe is None else np.rint(probe.data.get()).astype(np.int64)
        try:
            processes = len(net.runtime._executable.process_list)
        except AttributeError:  # private Lava attribute; only informational
            processes = None
    finally:
        net.stop()
    t4 = time.perf_counter()
    return {"per_step_s": (t3 - t2) / (total - 1) if total > 1 else 0.0, "build_s": t1 - t0, "compile_s": t2 - t1,
            "run_s": t3 - t2, "collect_s": t4 - t3, "wall_s": t4 - t0, "processes": processes,
            "layers": len(net.layers), "output_spikes": int(spikes.sum()),
            **({} if probed is None else {"probe_spikes": probed})}


def netx_kernel_time(path: str | os.PathLike, density: float = 0.2, seed: int = 0) -> float:
    """Seconds one step of the file's synapses costs in this process with the kernels Lava's fixed-point models
    call (``lava.proc.conv.utils.conv`` per conv, ``W[:, s].sum(1)`` for the dense), on random binary spikes."""
    import h5py
    from lava.proc.conv import utils as conv_utils

    rng = np.random.default_rng(seed)
    total = 0.0
    prev: tuple[int, ...] = ()
    with h5py.File(path, "r") as f:
        layer = f["layer"]
        for i in range(len(layer)):
            g = layer[str(i)]
            kind = g["type"][0].decode()
            if kind == "conv":
                w = g["weight"][()].astype(np.int32)
                w = w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)              # netx: torch → Lava (Cout, kW, kH, Cin)
                cin = int(g["inChannels"][()])
                s_in = (rng.random(prev[::-1]) < density).astype(np.int32)  # (W, H, C)
                args = [np.asarray(g[k][()])[::-1] for k in ("kernelSize", "stride", "padding", "dilation")]
                t0 = time.perf_counter()
                conv_utils.conv(s_in, w, *args, int(g["groups"][()]))
                total += time.perf_counter() - t0
                assert s_in.shape[-1] == cin
            elif kind == "dense":
                w = g["weight"][()].astype(np.int32)
                s_in = rng.random(w.shape[1]) < density
                t0 = time.perf_counter()
                w[:, s_in].sum(axis=1)
                total += time.perf_counter() - t0
            if kind in ("input", "conv"):
                prev = tuple(int(v) for v in g["shape"][()])
    return total


# ----------------------------------------------------------------------------------------------------------
def _best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    best = min(rows, key=lambda r: r["per_step_s"])
    return {**best, "per_step_all_s": [r["per_step_s"] for r in rows]}


def _ms(v: float) -> float:
    return round(v * 1e3, 3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=2, help="strided CIFAR-10 test images per run")
    ap.add_argument("--steps", type=int, default=64, help="T per sample")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; figures are the best round")
    ap.add_argument("--layouts", default="fused,per-stage", help=f"comma list of {', '.join(LAYOUTS)}")
    ap.add_argument("--calib", type=int, default=512, help="calibration images (msat-lava convert's default)")
    ap.add_argument("--net", default=None, help="use this converted .net instead of converting ResNet20")
    ap.add_argument("--netx-file", default=None, help="where to write the CUBA netx file (default: a temp dir)")
    ap.add_argument("--profile", action="store_true", help="cProfile the compute-only loop (top 15 by own time)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lava_speed.json"))
    ap.add_argument("--no-write", action="store_true", help="print the JSON only")
    args = ap.parse_args(argv)
    layouts = [v for v in args.layouts.split(",") if v]
    bad = [v for v in layouts if v not in LAYOUTS]
    if bad or not layouts:
        ap.error(f"--layouts: unknown {bad}; choose from {', '.join(LAYOUTS)}")
    if args.samples < 1 or args.steps < 1 or args.rounds < 1 or args.samples * args.steps < 2:
        ap.error("--samples, --steps, --rounds must be >= 1 and samples·steps >= 2")

    from msat_lava.program import from_converted, input_payload_np

    t0 = time.perf_counter()
    if args.net:
        from netx_export.api import load

        net = load(args.net)
    else:
        net = convert_resnet20(args.calib)
    convert_s = time.perf_counter() - t0
    program = from_converted(net)
    x = test_images(args.samples, program)
    p_in, _ = input_payload_np(program, x, True)

    with tempfile.TemporaryDirectory(prefix="lava-speed-") as work:
        netx_path = args.netx_file or os.path.join(work, "resnet20_cuba.net")
        netx_info = write_cuba_netx(program, netx_path)
        rows: dict[str, list[dict[str, Any]]] = {k: [] for k in layouts}
        rows["netx"], rows["compute_only"] = [], []
        for rnd in range(args.rounds):
            for layout in layouts:
                rows[layout].append(run_ours(program, x, args.steps, LAYOUTS[layout]))
                print(f"round {rnd + 1}: ours {layout}: {_ms(rows[layout][-1]['per_step_s'])} ms/step",
                      file=sys.stderr, flush=True)
            rows["netx"].append(run_netx(netx_path, p_in, args.steps, netx_info["input_message_bits"]))
            print(f"round {rnd + 1}: lava-dl netx: {_ms(rows['netx'][-1]['per_step_s'])} ms/step",
                  file=sys.stderr, flush=True)
            rows["compute_only"].append(compute_only(program, x, args.steps,
                                                     profile=args.profile and rnd == args.rounds - 1))
        netx_kernel_s = netx_kernel_time(netx_path)
        if not args.netx_file:
            netx_info["path"] = None  # temporary

    netx_best = _best(rows["netx"])
    comp = _best(rows["compute_only"])
    ours = {}
    for layout in layouts:
        b = _best(rows[layout])
        ours[layout] = {
            "stages_per_process": LAYOUTS[layout][0], "synapses": LAYOUTS[layout][1], "processes": b["processes"],
            "per_step_ms": _ms(b["per_step_s"]), "per_step_all_ms": [_ms(v) for v in b["per_step_all_s"]],
            "ratio_to_netx": round(b["per_step_s"] / netx_best["per_step_s"], 3),
            "lava_overhead_per_step_ms": _ms(b["per_step_s"] - comp["per_step_s"]),
            "samples_per_min_steady": round(60.0 / (args.steps * b["per_step_s"]), 2),
            "samples_per_min_end_to_end": round(60.0 * args.samples / b["wall_s"], 2),
            "build_s": round(b["build_s"], 3), "compile_s": round(b["compile_s"], 3),
            "collect_s": round(b["collect_s"], 3), "predictions_at_T": b["predictions_at_T"],
        }
    main_layout = layouts[0]
    result = {
        "benchmark": "lava_speed", "issue": 12, "goal_ratio": 1.2,
        "config": {"samples": args.samples, "steps": args.steps, "rounds": args.rounds, "layouts": layouts,
                   "run_cfg": "ours: msat_lava.lava.config.sim_config('fixed'); netx: Loihi2SimCfg(select_tag='fixed_pt')", "network": args.net or
                   f"akamaster ResNet20, msat, preset resnet20, {args.calib} calibration images (seed 0)",
                   "convert_s": round(convert_s, 2)},
        "ratio": ours[main_layout]["ratio_to_netx"], "ratio_layout": main_layout,
        "ours_per_step_ms": ours[main_layout]["per_step_ms"],
        "netx_per_step_ms": _ms(netx_best["per_step_s"]),
        "samples_per_min_at_T": ours[main_layout]["samples_per_min_steady"],
        "ours": ours,
        "compute_only_per_step_ms": _ms(comp["per_step_s"]),
        "spiking_layers": len(program.neuron_stages),
        "neurons": int(sum(np.prod(s.shape) for s in program.stages)),
        "netx": {"per_step_ms": _ms(netx_best["per_step_s"]),
                 "per_step_all_ms": [_ms(v) for v in netx_best["per_step_all_s"]],
                 "processes": netx_best["processes"], "blocks": netx_best["layers"],
                 "build_s": round(netx_best["build_s"], 3), "compile_s": round(netx_best["compile_s"], 3),
                 "collect_s": round(netx_best["collect_s"], 3),
                 "samples_per_min_steady": round(60.0 / (args.steps * netx_best["per_step_s"]), 2),
                 "synapse_kernels_per_step_ms": _ms(netx_kernel_s),
                 "output_spikes": netx_best["output_spikes"], "file": netx_info,
                 "note": "plain feed-forward chain of our 19 convs + folded readout: netx has no residual add"},
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
    }
    if args.profile:
        result["compute_only_profile"] = comp.get("profile_top")
    text = json.dumps(result, indent=1)
    print(text)
    if not args.no_write:
        with atomic_target(args.out, make_parents=True) as tmp:
            Path(tmp).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
