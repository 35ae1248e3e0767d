"""Preview (issue 17): burst spikes with the threshold divided by Γ — θ = λ/Γ, up to Γ spikes per step, so a
neuron's per-step output takes Γ + 1 levels 0, λ/Γ, …, λ (the scale pre-transform of Li & Zeng 2022's burst
spikes, ALGORITHMS §7). Now the named method ``+bsN`` of eval / accuracy.py (e.g. ``p99.9+h+bs4``, same numbers;
use that for results); this script remains for sweeping extra λ factors ``s``. Const IF layers, λ = Q-th percentile over 512 training images (seed 23),
v_init = 0.5·θ (+h), fixed point, reference simulator; prints accuracy after T steps and the saturation counts.

    MSAT_SHARED_DATA=../shared/data python benchmarks/burst_scale.py m=resnet20 n=0 T=32 g=4      # full test set
    MSAT_SHARED_DATA=../shared/data python benchmarks/burst_scale.py m=resnet56 n=250 T=32 g=1,4,8

Arguments key=value: m model (accuracy.py's MODELS), n test images (np.linspace-strided as accuracy.py's old
subset; 0 = all), T steps, g list of Γ, p percentile, s list of extra λ factors, save DIR for the network files.
"""
import sys, time, json
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "tests")); sys.path.insert(0, str(ROOT / "benchmarks"))
import numpy as np, torch
import msat_lava
import models as zoo
from accuracy import MODELS, _prep
from netx_export.trace import trace
from netx_export.calibrate import calibrate
from netx_export.quantize import quantize
from msat_lava.program import from_converted
from msat_lava import reference
torch.set_num_threads(1)
args = dict(a.split("=") for a in sys.argv[1:])
n = int(args.get("n", 250)); T = int(args.get("T", 32)); gammas = [int(g) for g in args.get("g", "1,2,4").split(",")]
pct = float(args.get("p", 99.9)); scales = [float(s) for s in args.get("s", "1").split(",")]
cfg = MODELS[args.get("m", "resnet20")]; model = cfg["load"]()
data = np.load(zoo.shared_file(cfg["data"]), allow_pickle=False)
rng = np.random.default_rng(23)
ci = np.sort(rng.choice(len(data["x_train"]), 512, replace=False))
x_cal = _prep(data["x_train"][ci], cfg)
nt = len(data["x_test"])
idx = np.arange(nt) if n == 0 else np.unique(np.linspace(0, nt - 1, n).round().astype(int))
x = _prep(data["x_test"][idx], cfg); y = data["y_test"][idx]
g = trace(model, cfg["shape"])
cal = calibrate(g, x_cal, method="percentile", percentile=pct, progress=False)
for gam in gammas:
  for s in scales:
    lams = {k: v * s / gam for k, v in cal.lambdas.items()}
    lams[g.input.name] = cal.input_scale
    net = quantize(g, lams, method="const", v_init=0.5, gamma=gam, seed=23)
    if "save" in args:  # save=DIR: the network file of every (Γ, s), for msat-lava verify
        Path(args["save"]).mkdir(parents=True, exist_ok=True)
        net.save(Path(args["save"]) / f"p{pct}_h_g{gam}_s{s}.net", overwrite=True)
    prog = from_converted(net)
    t0 = time.time()
    run = reference.simulate(prog, x, T, precision="fixed", batch_size=125, threads=1, progress=False)
    c = run.accuracy(y)
    print(f"p{pct} g={gam} s={s}: " + " ".join(f"T{t}={100*c[t-1]:.2f}" for t in (4,8,16,24,32) if t <= T),
          f"sat={run.saturated} {time.time()-t0:.0f}s", flush=True)
