"""Small random torch models and a conversion helper for the simulator tests.

Every model is built deterministically from a seed, with random BatchNorm statistics (so the folded biases are
non-trivial), and converted the documented way: trace → ANN activations on random calibration inputs →
λ^l = max activation of each ReLU, λ^0 = max |input| → ``quantize`` → ``from_converted``.

* :class:`ResMix` (3×12×12 → 5): conv+BN stem, MaxPool (→ LIPool), an identity-shortcut block with a grouped
  conv (the shortcut source is the LIPool), an option-A block (``x[:, :, ::2, ::2]`` + channel zero padding,
  stride-2 conv), a projection block (1×1 stride-2 conv + BN shortcut), global ``F.avg_pool2d(x, x.size()[3])``,
  ``view`` flatten, a hidden Linear + ReLU and the Linear readout.
* :class:`PoolMix` (2×10×10 → 4): an AvgPool straight on the input, a 'valid' conv, a non-global AvgPool
  (k2 s2), a depthwise conv, an overlapping padded MaxPool (k3 s2 p1 → LIPool), a padded AvgPool
  (k3 s1 p1, count_include_pad) into a conv, ``torch.flatten`` and the Linear readout.
* :class:`TinyMLP` (n_in → hidden → classes): one spiking layer; used for closed-form checks.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from msat_lava.program import Program, from_converted
from netx_export import ann
from netx_export.ir import Graph
from netx_export.network import ConvertedNetwork
from netx_export.quantize import quantize
from netx_export.trace import trace


def randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Random running statistics and affine parameters for every BatchNorm (eval-mode folding is non-trivial)."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(n, generator=gen) * 0.6 - 0.3)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.7 - 0.3)


class _Block(nn.Module):
    """BasicBlock conv-BN-ReLU-conv-BN + shortcut, ReLU. ``kind``: 'id' | 'A' | 'proj'."""

    def __init__(self, cin: int, cout: int, stride: int, kind: str, groups: int = 1) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.kind = kind
        self.pad = (cout - cin) // 2
        if kind == "proj":
            self.sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        if self.kind == "A":
            sc = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)
        elif self.kind == "proj":
            sc = self.sc(x)
        else:
            sc = x
        return F.relu(out + sc)


class ResMix(nn.Module):
    input_shape = (3, 12, 12)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.bn = nn.BatchNorm2d(8)
        self.mp = nn.MaxPool2d(2)
        self.b1 = _Block(8, 8, 1, "id", groups=2)
        self.b2 = _Block(8, 16, 2, "A")
        self.b3 = _Block(16, 16, 2, "proj")
        self.fc1 = nn.Linear(16, 12)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x):
        x = self.mp(F.relu(self.bn(self.stem(x))))
        x = self.b3(self.b2(self.b1(x)))
        x = F.avg_pool2d(x, x.size()[3])
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


class PoolMix(nn.Module):
    input_shape = (2, 10, 10)

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 6, 3, 1, 0)             # valid conv on the (avg-pooled) input
        self.c2 = nn.Conv2d(6, 6, 3, 1, 1, groups=6)   # depthwise
        self.bn2 = nn.BatchNorm2d(6)
        self.c3 = nn.Conv2d(6, 8, 3, 1, 1)
        self.bn3 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 2 * 2, 4)

    def forward(self, x):
        x = F.avg_pool2d(x, 2, 1)                      # 2×9×9, straight on the input
        x = F.relu(self.c1(x))                         # 6×7×7
        x = F.avg_pool2d(x, 2, 2)                      # 6×3×3
        x = F.relu(self.bn2(self.c2(x)))               # 6×3×3
        x = F.max_pool2d(x, 3, 2, 1)                   # 6×2×2, overlapping padded windows
        x = F.avg_pool2d(x, 3, 1, 1)                   # 6×2×2, padding counted
        x = F.relu(self.bn3(self.c3(x)))               # 8×2×2
        return self.fc(torch.flatten(x, 1))


class TinyMLP(nn.Module):
    def __init__(self, n_in: int = 6, hidden: int = 5, classes: int = 3) -> None:
        super().__init__()
        self.input_shape = (n_in,)
        self.fc1 = nn.Linear(n_in, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


MODELS = {"resmix": ResMix, "poolmix": PoolMix, "mlp": TinyMLP}


def build(name: str, seed: int = 0) -> nn.Module:
    """The model ``name`` with weights drawn from ``seed`` (global RNG state untouched), eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MODELS[name]()
    randomize_bn(model, torch.Generator().manual_seed(seed + 1000))
    return model.eval()


def random_inputs(shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n,) + tuple(shape))


@dataclass(frozen=True)
class Converted:
    model: nn.Module
    graph: Graph
    net: ConvertedNetwork
    program: Program
    calib: np.ndarray           # calibration inputs (λ = max activation over them)
    lambdas: dict[str, float]

    @property
    def relus(self) -> list[str]:
        return [n.name for n in self.graph if n.kind == "relu"]


@lru_cache(maxsize=None)
def _traced(name: str, seed: int, n_calib: int) -> tuple[nn.Module, Graph, np.ndarray, tuple]:
    model = build(name, seed)
    graph = trace(model, tuple(model.input_shape))
    calib = random_inputs(model.input_shape, n_calib, seed + 1)
    _, acts = ann.evaluate(graph, calib, record=True)
    lams = tuple((n.name, float(acts[n.name].max())) for n in graph if n.kind == "relu")
    return model, graph, calib, lams


def convert(name: str, method: str, *, sc: tuple[tuple[str, float], ...] = (), seed: int = 0,
            n_calib: int = 16, gate_seed: int = 5, **kw: Any) -> Converted:
    """Trace, calibrate (λ = max) and quantize model ``name``; ``sc`` = ((relu index or name, p), ...)."""
    from netx_export import neurons

    model, graph, calib, lams = _traced(name, seed, n_calib)
    graph, aliases = neurons.get(method).prepare_graph(graph)  # BSNN-R: synchronous neurons (λ of their source)
    lams = tuple(lams) + tuple((sn, dict(lams)[src]) for sn, src in aliases.items())
    relus = [n.name for n in graph if n.kind == "relu"]
    sc_p = {(relus[k] if isinstance(k, int) else k): p for k, p in sc}
    net = quantize(graph, dict(lams), method=method, preset="resnet20", sc_p=sc_p,
                   input_scale=float(np.abs(calib).max()), seed=gate_seed, **kw)
    return Converted(model, graph, net, from_converted(net), calib, dict(lams))


def stateful_depths(graph: Graph) -> dict[str, int]:
    """Longest path, counted in stateful nodes (relu, maxpool, graph output), from the input to every node.

    Written from DESIGN §3 directly on the IR graph (independent of ``msat_lava.program.stage_depths``)."""
    out_name = graph.output.name
    depth: dict[str, int] = {}
    for node in graph:
        base = max((depth[i] for i in node.inputs), default=0)
        depth[node.name] = base + (1 if node.kind in ("relu", "maxpool") or node.name == out_name else 0)
    return depth
