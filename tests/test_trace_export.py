"""torch.export programs through netx_export.trace (trace_exported / trace on ep.module()) and the CLI's
``msat-lava convert --exported``: the ATen graph converts to the same typed graph as the fx path (same node
kinds, same ANN output), unsupported ATen ops are listed in one UnsupportedOpError."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from netx_export import ann, ir
from netx_export.errors import GraphError, UnsupportedOpError
from netx_export.trace import trace, trace_exported, trace_exported_with_info, trace_with_info

try:  # tests/ is on sys.path (pytest's default import mode) ...
    from models import cifar10_test, load_mnistnet, load_resnet, mnist_test
except ImportError:  # ... or tests/ is a package
    from tests.models import cifar10_test, load_mnistnet, load_resnet, mnist_test


def _export(model: nn.Module, shape: tuple[int, ...], *, batch: int = 2, dynamic: bool = False):
    kw = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamic else {}
    return torch.export.export(model, (torch.randn((batch,) + shape),), **kw)


def _kinds(graph: ir.Graph) -> list[str]:
    return [n.kind for n in graph.nodes]


def _names(graph: ir.Graph, *kinds: str) -> list[str]:
    return [n.name for n in graph.nodes if n.kind in kinds]


# ---------------------------------------------------------------------------------------------
# the real models
# ---------------------------------------------------------------------------------------------
def test_mnistnet_exported_static_batch():
    model = load_mnistnet()
    ep = _export(model, (1, 28, 28))  # static batch 2: shape propagation runs with the exported batch
    result = trace_exported_with_info(ep)  # per-sample shape taken from the program
    graph, ref = result.graph, trace(model, (1, 28, 28))
    assert _kinds(graph) == _kinds(ref)
    assert [n.name for n in graph.nodes] == [n.name for n in ref.nodes]  # conv1, relu, max_pool2d, ..., fc2
    assert len(result.notes) == 1 and "log_softmax" in result.notes[0]
    assert result.sources["fc1"].endswith("x = F.relu(self.fc1(x))")

    x, _ = mnist_test(16, stride=500)
    with torch.no_grad():
        want = model(x).double()
    logits = ann.evaluate(graph, x.double())
    assert (torch.log_softmax(logits, 1) - want).abs().max().item() < 1e-4
    assert torch.equal(logits, ann.evaluate(ref, x.double()))


@pytest.fixture(scope="module")
def resnet20_program():
    return _export(load_resnet(20), (3, 32, 32), dynamic=True)


def test_resnet20_exported_dynamic_batch(resnet20_program):
    model = load_resnet(20)
    graph, ref = trace_exported(resnet20_program, (3, 32, 32)), trace(model, (3, 32, 32))
    assert _kinds(graph) == _kinds(ref)
    assert _names(graph, "conv", "linear", "relu", "add", "chanpad") == _names(ref, "conv", "linear", "relu", "add",
                                                                              "chanpad")
    # option-A shortcut: one aten.slice per axis, merged back into one subsample
    assert [n.step for n in graph.nodes if isinstance(n, ir.Subsample)] == [(2, 2), (2, 2)]
    assert [(n.before, n.after) for n in graph.nodes if isinstance(n, ir.ChanPad)] == [(8, 8), (16, 16)]

    x, _ = cifar10_test(8, stride=1250)
    with torch.no_grad():
        want = model(x).double()
    got = ann.evaluate(graph, x.double())
    assert (got - want).abs().max().item() < 1e-4
    assert torch.equal(got, ann.evaluate(ref, x.double()))
    # the CLI's route: trace() on the program's module(), and on the program itself
    assert trace(resnet20_program.module(), (3, 32, 32)) == graph
    assert trace(resnet20_program, (3, 32, 32)) == graph


def test_decomposed_program():
    """run_decompositions() (core ATen: convolution, addmm, max_pool2d_with_indices + getitem, _log_softmax)."""
    model = load_mnistnet()
    ep = _export(model, (1, 28, 28), dynamic=True).run_decompositions()
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert {"aten.convolution.default", "aten.addmm.default", "aten.max_pool2d_with_indices.default"} <= targets
    graph, ref = trace_exported(ep), trace(model, (1, 28, 28))
    assert [n.name for n in graph.nodes] == [n.name for n in ref.nodes]
    x, _ = mnist_test(8, stride=1000)
    assert torch.equal(ann.evaluate(graph, x.double()), ann.evaluate(ref, x.double()))


# ---------------------------------------------------------------------------------------------
# many spellings, exported and decomposed
# ---------------------------------------------------------------------------------------------
class _Spellings(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding="same")
        self.bn1 = nn.BatchNorm2d(8)
        self.act = nn.ReLU(inplace=True)  # called twice
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.conv3 = nn.Conv2d(8, 16, 1, stride=2)
        self.drop = nn.Dropout(0.3)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 12)
        self.bn_fc = nn.BatchNorm1d(12)
        self.idn = nn.Identity()
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = self.pool(self.act(self.bn1(self.conv1(x))))  # (8, 4, 4)
        y = self.act(self.conv2(x) + x)
        sc = F.pad(y[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4))  # option-A shortcut: (16, 2, 2)
        y = F.relu(self.drop(self.conv3(y)))
        y.add_(sc)  # in place: later reads of y see the sum
        y = y.clamp(min=0)
        a = torch.flatten(self.gap(y), 1)
        b = F.avg_pool2d(y, 2).mean((2, 3))
        h = torch.relu_(self.bn_fc(self.fc(a + b)))
        return F.softmax(self.head(self.idn(F.dropout(h, 0.5, training=self.training))), dim=1)


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


@pytest.mark.parametrize("decompose", [False, True], ids=["export", "core-aten"])
def test_spellings_match_fx_path(decompose):
    torch.manual_seed(0)
    model = _randomize_bn(_Spellings())
    ep = _export(model, (3, 8, 8), dynamic=True)
    if decompose:
        ep = ep.run_decompositions()
    result, ref = trace_exported_with_info(ep), trace_with_info(model, (3, 8, 8))
    graph = result.graph
    assert _kinds(graph) == _kinds(ref.graph)
    assert _names(graph, "conv", "linear", "relu")[:4] == ["conv1", "act", "conv2", "act_1"]
    assert len(result.notes) == 1 and "softmax" in result.notes[0]
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    assert (ann.evaluate(graph, x) - ann.evaluate(ref.graph, x)).abs().max().item() < 1e-12
    with torch.no_grad():
        want = model(x.float()).double()
    assert (torch.softmax(ann.evaluate(graph, x), 1) - want).abs().max().item() < 1e-5


# ---------------------------------------------------------------------------------------------
# unsupported models
# ---------------------------------------------------------------------------------------------
class _GeluTanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.act = nn.GELU()
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        x = self.act(self.conv(x))
        x = torch.tanh(x)
        return self.fc(x.flatten(1))


def test_unsupported_aten_ops_listed_in_one_error():
    ep = _export(_GeluTanh().eval(), (1, 8, 8))
    with pytest.raises(UnsupportedOpError) as info:
        trace_exported(ep)
    err = info.value
    assert [n.name for n in err.nodes] == ["gelu", "tanh"]
    assert [n.op for n in err.nodes] == ["call_function", "call_function"]
    assert "aten.gelu" in err.nodes[0].target and "aten.tanh" in err.nodes[1].target
    assert "'act'" in err.nodes[0].reason  # the owning module
    assert err.nodes[0].source.endswith("x = self.act(self.conv(x))") and __file__ in err.nodes[0].source
    assert err.nodes[1].source.endswith("x = torch.tanh(x)")
    text = str(err)
    assert "_GeluTanh" in text and "2 unsupported node(s)" in text and "gelu" in text and "tanh" in text


def test_training_mode_program_reported():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    ep = _export(model.train(), (1, 8, 8))
    with pytest.raises(UnsupportedOpError) as info:
        trace_exported(ep)
    assert [n.name for n in info.value.nodes] == ["_1"]  # the BatchNorm, named by its module path
    assert "model.eval()" in info.value.nodes[0].reason


def test_shape_and_input_errors():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    ep = _export(model, (1, 8, 8))
    with pytest.raises(GraphError, match=r"\(2, 1, 8, 8\).*\(1, 9, 9\)"):
        trace_exported(ep, (1, 9, 9))

    class Two(nn.Module):
        def forward(self, x, y):
            return x + y

    ep2 = torch.export.export(Two(), (torch.randn(2, 3), torch.randn(2, 3)))
    with pytest.raises(UnsupportedOpError, match="single tensor input"):
        trace_exported(ep2, (3,))
    with pytest.raises(TypeError):
        trace_exported(model)


def test_static_batch_one():
    """A program exported with a static batch of 1 (its view() has the batch baked in)."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3)
            self.fc = nn.Linear(3 * 4 * 4, 2)

        def forward(self, x):
            x = F.relu(self.conv(x))
            return self.fc(x.view(x.size(0), -1))

    model = Net().eval()
    graph = trace_exported(_export(model, (2, 6, 6), batch=1))
    assert _kinds(graph) == _kinds(trace(model, (2, 6, 6)))
    x = torch.randn(5, 2, 6, 6)
    with torch.no_grad():
        assert (ann.evaluate(graph, x.double()) - model(x).double()).abs().max().item() < 1e-5


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def test_cli_convert_exported(tmp_path):
    from msat_lava.cli import main
    from netx_export.api import load

    pt2 = tmp_path / "mnist.pt2"
    torch.export.save(_export(load_mnistnet(), (1, 28, 28)), str(pt2))
    x, _ = mnist_test(24, stride=400)
    data = tmp_path / "data.npz"
    np.savez(data, x=x.numpy())
    out = tmp_path / "mnist.net"
    code = main(["convert", "--exported", str(pt2), "--data", str(data), "--out", str(out), "--quiet"])
    assert code == 0 and out.is_file() and out.stat().st_size > 0
    net = load(out)
    assert [(n.name, n.kind) for n in net.graph.nodes] == [(n.name, n.kind) for n in
                                                           trace(load_mnistnet(), (1, 28, 28)).nodes]
