"""torch.fx tracing (netx_export.trace), BN folding / cleanup (netx_export.fold) and the ANN evaluator
(netx_export.ann): the four pretrained models convert unmodified and reproduce their logits; every
unsupported construct is reported by name in one UnsupportedOpError."""
from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from netx_export import ann, fold, ir
from netx_export.errors import GraphError, UnsupportedOpError
from netx_export.trace import trace, trace_with_info

try:  # tests/ is on sys.path (pytest's default import mode) ...
    from models import cifar10_test, load_mnistnet, load_resnet, mnist_test, resnet20
except ImportError:  # ... or tests/ is a package
    from tests.models import cifar10_test, load_mnistnet, load_resnet, mnist_test, resnet20


def _kinds(graph: ir.Graph) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in graph.nodes:
        out[n.kind] = out.get(n.kind, 0) + 1
    return out


def _f64(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double().eval()


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (so folding is really tested)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.2)
    return model.eval()


def _check_equal(model: nn.Module, shape: tuple[int, ...], *, batch: int = 4, tol: float = 1e-10,
                 out_fn=lambda y: y) -> ir.Graph:
    """Trace ``model`` and demand the float64 ANN graph equals the float64 model on random inputs."""
    graph = trace(model, shape)
    x = torch.randn((batch,) + shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        ref = _f64(model)(x)
    got = out_fn(ann.evaluate(graph, x))
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= tol
    return graph


# ---------------------------------------------------------------------------------------------
# the four real models
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth, n_images", [(20, 64), (32, 32), (56, 16)])
def test_resnet_logits(depth, n_images):
    model = load_resnet(depth)
    result = trace_with_info(model, (3, 32, 32))
    graph = result.graph
    n = (depth - 2) // 6
    kinds = _kinds(graph)
    assert kinds == {"input": 1, "conv": 6 * n + 1, "relu": 6 * n + 1, "add": 3 * n, "subsample": 2,
                     "chanpad": 2, "avgpool": 1, "flatten": 1, "linear": 1}
    assert result.notes == ()
    # option-A shortcut: x[:, :, ::2, ::2] then planes//4 zero channels before and after
    pads = [nd for nd in graph.nodes if isinstance(nd, ir.ChanPad)]
    assert [(p.before, p.after) for p in pads] == [(8, 8), (16, 16)]
    assert all(nd.step == (2, 2) for nd in graph.nodes if isinstance(nd, ir.Subsample))
    pool = next(nd for nd in graph.nodes if isinstance(nd, ir.AvgPool))
    assert pool.kernel == (8, 8) and pool.stride == (8, 8)
    assert graph.output.name == "linear" and graph.input.name == "x"
    assert result.origins["conv1"] == ("conv1", "bn1")
    assert result.origins["layer1_0_conv2"] == ("layer1_0_conv2", "layer1_0_bn2")

    x, _ = cifar10_test(n_images, stride=10000 // n_images)
    with torch.no_grad():
        ref32 = model(x)
        ref64 = _f64(model)(x[:8].double())  # the unmodified model in float64: folding is exact
    out = ann.evaluate(graph, x)
    assert out.dtype == torch.float64
    assert (out - ref32.double()).abs().max().item() < 1e-4
    assert (out[:8] - ref64).abs().max().item() < 1e-9
    assert torch.equal(out.argmax(1), ref32.argmax(1))


def test_mnistnet_logits():
    model = load_mnistnet()
    result = trace_with_info(model, (1, 28, 28))
    graph = result.graph
    assert [(n.name, n.kind) for n in graph.nodes] == [
        ("x", "input"), ("conv1", "conv"), ("relu", "relu"), ("max_pool2d", "maxpool"), ("conv2", "conv"),
        ("relu_1", "relu"), ("max_pool2d_1", "maxpool"), ("view", "flatten"), ("fc1", "linear"),
        ("relu_2", "relu"), ("fc2", "linear")]
    assert graph["max_pool2d"].kernel == (2, 2) and graph["max_pool2d"].stride == (2, 2)
    assert len(result.notes) == 1 and "log_softmax" in result.notes[0] and "argmax" in result.notes[0]
    assert result.sources["fc1"].endswith("x = F.relu(self.fc1(x))")

    x, _ = mnist_test(64, stride=150)
    with torch.no_grad():
        ref32 = model(x)
        ref64 = _f64(model)(x.double())
    logits = ann.evaluate(graph, x)
    assert (torch.log_softmax(logits, 1) - ref32.double()).abs().max().item() < 1e-4
    assert (torch.log_softmax(logits, 1) - ref64).abs().max().item() < 1e-9
    assert torch.equal(logits.argmax(1), ref32.argmax(1))


def test_resnet20_ann_accuracy_matches_model():
    """1000 test images, every 10th (the set is class-sorted): identical predictions, same accuracy."""
    model = load_resnet(20)
    graph = trace(model, (3, 32, 32))
    x, y = cifar10_test(1000, stride=10)
    runner = ann.AnnRunner(graph, dtype=torch.float32)
    preds_model, preds_graph = [], []
    with torch.no_grad():
        for i in range(0, len(x), 250):
            preds_model.append(model(x[i:i + 250]).argmax(1))
            preds_graph.append(runner(x[i:i + 250]).argmax(1))
    pm, pg = torch.cat(preds_model), torch.cat(preds_graph)
    assert torch.equal(pm, pg)
    acc = (pg == y).double().mean().item()
    assert 0.88 < acc < 0.95  # ResNet20 is 91.73 % on the full test set


def test_trace_restores_training_flags_and_leaves_model_unchanged():
    model = _randomize_bn(resnet20())
    model.train()
    model.layer2.eval()  # a mixed state must come back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {name: m.training for name, m in model.named_modules()}
    trace(model, (3, 32, 32))
    assert {name: m.training for name, m in model.named_modules()} == flags
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched


def test_resnet_option_b_projection_shortcut():
    model = _randomize_bn(resnet20(option="B"))
    graph = _check_equal(model, (3, 32, 32), batch=2)
    kinds = _kinds(graph)
    assert kinds["conv"] == 21 and "chanpad" not in kinds and "subsample" not in kinds
    # the 1x1 projection convs (BN folded) are added to the residual branch
    proj = [n for n in graph.nodes if isinstance(n, ir.Conv) and n.weight.shape[2:] == (1, 1)]
    assert len(proj) == 2 and all(n.stride == (2, 2) and n.bias is not None for n in proj)


def test_node_names_unique_and_from_fx():
    graph = trace(load_resnet(20), (3, 32, 32))
    names = [n.name for n in graph.nodes]
    assert len(names) == len(set(names))
    assert all("." not in n and "/" not in n for n in names)
    assert {"x", "conv1", "relu", "layer1_0_conv1", "layer3_2_conv2", "getitem", "pad", "add_8", "avg_pool2d",
            "view", "linear"} <= set(names)
    assert graph == trace(load_resnet(20), (3, 32, 32))  # stable


# ---------------------------------------------------------------------------------------------
# supported variants
# ---------------------------------------------------------------------------------------------
class _Variants(nn.Module):
    """Many spellings of the supported ops in one model."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding="same")
        self.bn1 = nn.BatchNorm2d(8)
        self.act = nn.ReLU(inplace=True)  # used twice: each call becomes its own relu node
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(8, 16, 1, stride=1)
        self.drop = nn.Dropout(0.3)
        self.avg = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 12)
        self.bn_fc = nn.BatchNorm1d(12)
        self.idn = nn.Identity()
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = self.act(self.bn1(self.conv1(x)))
        x = self.pool(x)
        y = self.conv2(x)
        y = y + x  # residual with operator.add
        y = self.act(y)
        y = self.drop(self.conv3(y))
        y = y.relu()
        y = self.avg(y)
        y = self.gap(y)
        y = torch.flatten(y, 1)
        y = F.relu(self.bn_fc(self.fc(y)))
        return self.head(self.idn(F.dropout(y, 0.5, training=self.training)))


def test_supported_variants():
    model = _randomize_bn(_Variants(), seed=3)
    graph = _check_equal(model, (3, 8, 8))
    kinds = _kinds(graph)
    assert kinds == {"input": 1, "conv": 3, "relu": 4, "maxpool": 1, "add": 1, "avgpool": 2, "flatten": 1,
                     "linear": 2}
    assert graph["conv1"].padding == (1, 1) and graph["conv2"].groups == 2
    assert graph["conv2"].bias is None
    relus = [n.name for n in graph.nodes if n.kind == "relu"]
    assert relus[:2] == ["act", "act_1"]  # the reused ReLU module


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(6, 2, 3, 3) * 0.3)
        self.b1 = nn.Parameter(torch.randn(6) * 0.1)
        self.fc = nn.Linear(6, 4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x):
        y = F.conv2d(x, self.w1, self.b1, stride=2, padding=1)
        y = F.relu(y, inplace=True)
        y = F.max_pool2d(y, kernel_size=2)
        s = y[:, :, ::1, :]  # full slices: identity
        y = torch.add(y, s)  # both terms the same maxpool output
        y = y.clamp(min=0)
        z = F.adaptive_avg_pool2d(y, 1).reshape(y.size(0), -1)
        y = y.mean((2, 3))  # global mean -> avgpool + flatten
        y.add_(z)  # in place: the later read of `y` sees the sum
        h = self.fc(y)
        torch.relu_(h)  # in place: the later read of `h` sees the ReLU
        return torch.log_softmax(self.fc2(h), dim=-1)


def test_functional_forms_and_inplace_semantics():
    model = _Functional().eval()
    result = trace_with_info(model, (2, 8, 8))
    graph = result.graph
    kinds = _kinds(graph)
    assert kinds == {"input": 1, "conv": 1, "relu": 3, "maxpool": 1, "add": 2, "avgpool": 2, "flatten": 2,
                     "linear": 2}
    assert graph["fc"].inputs == ("add_",)  # y.add_(z) mutated y
    assert graph[graph["fc2"].inputs[0]].kind == "relu"  # torch.relu_(h) mutated h
    assert graph["mean_flatten"].inputs == ("mean",) and graph["mean"].kernel == (2, 2)
    assert result.notes and "log_softmax" in result.notes[0]
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        ref = _f64(model)(x)
    assert (torch.log_softmax(ann.evaluate(graph, x), -1) - ref).abs().max().item() < 1e-12


class _Akamaster(nn.Module):
    """The akamaster head: avg_pool2d(out, out.size()[3]) and view(out.size(0), -1)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.linear = nn.Linear(8, 2)

    def forward(self, x):
        out = F.relu(self.conv(x))
        sc = F.pad(out[:, :, ::2, ::2], (0, 0, 0, 0, 4 // 2, 4 // 2), "constant", 0)
        out = F.relu(sc + F.pad(out[..., ::2, ::2], (0, 0, 0, 0, 1, 3)))
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        return self.linear(out)


def test_size_calls_pad_and_subsample():
    graph = _check_equal(_Akamaster().eval(), (3, 6, 6))
    pads = [(n.before, n.after) for n in graph.nodes if isinstance(n, ir.ChanPad)]
    assert sorted(pads) == [(1, 3), (2, 2)]
    pool = next(n for n in graph.nodes if isinstance(n, ir.AvgPool))
    assert pool.kernel == (3, 3)


def test_vector_input_model():
    model = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Dropout(), nn.Linear(7, 3)).eval()
    _randomize_bn(model)
    graph = _check_equal(model, (5,))
    assert [n.kind for n in graph.nodes] == ["input", "linear", "relu", "linear"]
    assert graph.input.name == "input_1"  # fx renames the `input` argument (a builtin name)


# ---------------------------------------------------------------------------------------------
# unsupported models
# ---------------------------------------------------------------------------------------------
class _Activations(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.gelu = nn.GELU()
        self.fc2 = nn.Linear(4, 4)
        self.fc3 = nn.Linear(4, 4)
        self.fc4 = nn.Linear(4, 2)

    def forward(self, x):
        x = self.gelu(self.fc1(x))
        x = torch.sigmoid(self.fc2(x))
        x = self.fc3(x).tanh()
        return self.fc4(F.relu(x))


def test_one_error_lists_every_unsupported_node():
    with pytest.raises(UnsupportedOpError) as info:
        trace(_Activations(), (4,))
    err = info.value
    got = {(n.name, n.op) for n in err.nodes}
    assert got == {("gelu", "call_module"), ("sigmoid", "call_function"), ("tanh", "call_method")}
    by_name = {n.name: n for n in err.nodes}
    assert "GELU" in by_name["gelu"].target
    assert by_name["sigmoid"].target == "torch.sigmoid"
    assert by_name["tanh"].target == "tanh"
    assert "x = torch.sigmoid(self.fc2(x))" in by_name["sigmoid"].source
    assert "test_trace.py" in by_name["gelu"].source
    text = str(err)
    assert "3 unsupported node(s)" in text
    assert all(name in text for name in ("gelu", "sigmoid", "tanh", "_Activations"))


def _unsupported(model: nn.Module, shape) -> dict[str, str]:
    with pytest.raises(UnsupportedOpError) as info:
        trace(model, shape)
    return {n.name: n.reason for n in info.value.nodes}


class _Lambda(nn.Module):
    def __init__(self, fn, **mods):
        super().__init__()
        for k, v in mods.items():
            setattr(self, k, v)
        self.fn = fn

    def forward(self, x):
        return self.fn(self, x)


def test_tuple_output_rejected():
    m = _Lambda(lambda s, x: (s.fc(x), s.fc(x)), fc=nn.Linear(3, 2))
    reasons = _unsupported(m, (3,))
    assert "single tensor" in reasons["output"] and "tuple of 2" in reasons["output"]


def test_maxpool_not_after_relu_rejected():
    m = _Lambda(lambda s, x: s.fc(torch.flatten(F.max_pool2d(s.conv(x), 2), 1)),
                conv=nn.Conv2d(1, 2, 3), fc=nn.Linear(2 * 2 * 2, 2))
    reasons = _unsupported(m, (1, 6, 6))
    assert "ReLU output" in reasons["max_pool2d"] and "'conv'" in reasons["max_pool2d"]


def test_batchnorm_after_add_rejected():
    m = _Lambda(lambda s, x: s.fc(torch.flatten(F.relu(s.bn(s.c1(x) + s.c2(x))), 1)),
                c1=nn.Conv2d(1, 2, 3), c2=nn.Conv2d(1, 2, 3), bn=nn.BatchNorm2d(2), fc=nn.Linear(8, 2))
    reasons = _unsupported(m.eval(), (1, 4, 4))
    assert set(reasons) == {"bn"} and "add" in reasons["bn"]


def test_batchnorm_fold_with_other_reader_rejected():
    m = _Lambda(lambda s, x: s.fc(torch.flatten(F.relu(s.bn(s.c(x))), 1)), c=nn.Conv2d(1, 2, 3),
                bn=nn.BatchNorm2d(2), fc=nn.Linear(8, 2))
    trace(m.eval(), (1, 4, 4))  # plain conv-BN is fine

    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.bn, self.fc = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Linear(8, 2)

        def forward(self, x):
            y = self.c(x)
            a = F.relu(y)  # reads the conv output without the BN
            b = F.relu(self.bn(y))
            return self.fc(torch.flatten(a + b, 1))

    reasons = _unsupported(TwoReaders().eval(), (1, 4, 4))
    assert set(reasons) == {"bn"} and "relu" in reasons["bn"]


def test_weighted_ops_in_series_rejected():
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Dropout(), nn.Linear(8, 2))
    reasons = _unsupported(m.eval(), (4,))
    assert set(reasons) == {"_4"}  # fx names the Sequential's 5th module "_4"
    assert "'_2'" in reasons["_4"] and "series" in reasons["_4"]

    # conv -> flatten -> linear without a ReLU: the linear is reported, naming the conv
    m2 = _Lambda(lambda s, x: s.fc(torch.flatten(s.conv(F.relu(s.c0(x))), 1)),
                 c0=nn.Conv2d(1, 2, 1), conv=nn.Conv2d(2, 2, 3), fc=nn.Linear(8, 2))
    reasons = _unsupported(m2, (1, 4, 4))
    assert set(reasons) == {"fc"} and "'conv'" in reasons["fc"]

    # a residual path: conv -> add(conv', relu) -> linear has two weighted ops in series too
    m3 = _Lambda(lambda s, x: s.fc(torch.flatten(s.a(F.relu(x)) + F.relu(x), 1)),
                 a=nn.Conv2d(1, 1, 1), fc=nn.Linear(16, 2))
    reasons = _unsupported(m3, (1, 4, 4))
    assert set(reasons) == {"fc"}


def test_output_must_be_linear():
    reasons = _unsupported(nn.Sequential(nn.Linear(3, 2), nn.ReLU()), (3,))
    assert "readout" in reasons["_1"]


@pytest.mark.parametrize("builder, shape, name, fragment", [
    (lambda: _Lambda(lambda s, x: s.fc(torch.flatten(F.relu(s.c(x)), 1)), c=nn.Conv2d(1, 2, 3, dilation=2),
                     fc=nn.Linear(8, 2)), (1, 6, 6), "c", "dilation"),
    (lambda: _Lambda(lambda s, x: s.fc(torch.flatten(F.relu(s.c(x)), 1)),
                     c=nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), fc=nn.Linear(32, 2)),
     (1, 4, 4), "c", "padding_mode"),
    (lambda: _Lambda(lambda s, x: s.fc(torch.flatten(F.pad(F.relu(x), (1, 1, 1, 1)), 1)), fc=nn.Linear(36, 2)),
     (1, 4, 4), "pad", "channel axis"),
    (lambda: _Lambda(lambda s, x: s.fc(torch.flatten(F.relu(x)[:, :, 1::2, ::2], 1)), fc=nn.Linear(4, 2)),
     (1, 4, 4), "getitem", "index 0"),
    (lambda: _Lambda(lambda s, x: s.fc(torch.flatten(F.relu(x)[:, :1], 1)), fc=nn.Linear(16, 2)),
     (2, 4, 4), "getitem", "whole"),
    (lambda: _Lambda(lambda s, x: s.fc(torch.softmax(F.relu(x), 1)), fc=nn.Linear(3, 2)), (3,), "softmax",
     "final op"),
    (lambda: _Lambda(lambda s, x: s.fc(F.dropout(F.relu(x), 0.5)), fc=nn.Linear(3, 2)), (3,), "dropout",
     "training=True"),
    (lambda: _Lambda(lambda s, x: s.fc(F.relu(x) * 2), fc=nn.Linear(3, 2)), (3,), "mul", "not supported"),
    (lambda: _Lambda(lambda s, x: s.fc(F.relu(x) + 1), fc=nn.Linear(3, 2)), (3,), "add", "constant"),
    (lambda: _Lambda(lambda s, x: s.fc(torch.cat([F.relu(x), F.relu(x)], 1)), fc=nn.Linear(6, 2)), (3,), "cat",
     "not supported"),
    (lambda: _Lambda(lambda s, x: s.fc(F.relu(s.bn(x))), bn=nn.BatchNorm1d(3, track_running_stats=False),
                     fc=nn.Linear(3, 2)), (3,), "bn", "running statistics"),
    (lambda: _Lambda(lambda s, x: s.fc(F.relu(x.view(x.size(0), 2, -1))), fc=nn.Linear(8, 2)), (16,), "view",
     "reshape"),
    (lambda: _Lambda(lambda s, x: s.fc(F.relu(x)), fc=nn.Linear(2, 2)), (1, 2, 2), "fc", "vector input"),
])
def test_clear_errors(builder, shape, name, fragment):
    reasons = _unsupported(builder().eval(), shape)
    assert name in reasons, reasons
    assert fragment in reasons[name], reasons[name]


def test_final_softmax_kept_when_asked():
    model = load_mnistnet()
    with pytest.raises(UnsupportedOpError) as info:
        trace(model, (1, 28, 28), drop_final_softmax=False)
    assert [n.name for n in info.value.nodes] == ["log_softmax"]


def test_bad_example_shape():
    with pytest.raises(GraphError, match="example_input_shape"):
        trace(nn.Linear(3, 2), (3, 2))
    with pytest.raises(GraphError, match="example_input_shape"):
        trace(nn.Linear(3, 2), (4,))  # the model cannot run on it


def test_untraceable_model():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(UnsupportedOpError, match="symbolic tracing failed"):
        trace(Branchy(), (3,))


# ---------------------------------------------------------------------------------------------
# fold.py
# ---------------------------------------------------------------------------------------------
def test_fold_batchnorm_formula():
    w = np.arange(12, dtype=np.float64).reshape(3, 4) - 5
    b = np.array([1.0, -2.0, 0.5])
    mean, var = np.array([0.5, 1.0, -1.0]), np.array([4.0, 0.25, 1.0])
    gamma, beta = np.array([2.0, 1.0, -1.0]), np.array([0.0, 3.0, 1.0])
    wf, bf = fold.fold_batchnorm(w, b, mean=mean, var=var, eps=0.0, gamma=gamma, beta=beta)
    s = np.array([1.0, 2.0, -1.0])  # gamma / sqrt(var)
    assert np.array_equal(wf, w * s[:, None])
    assert np.array_equal(bf, s * (b - mean) + beta)
    wf2, bf2 = fold.fold_batchnorm(w, None, mean=mean, var=var, eps=0.0)  # no bias, no affine
    assert np.array_equal(wf2, w / np.sqrt(var)[:, None]) and np.array_equal(bf2, -mean / np.sqrt(var))
    conv = ir.Conv("c", ("x",), weight=np.ones((3, 1, 1, 1)), stride=2)
    folded = fold.fold_bn_into(conv, mean=mean, var=var, eps=0.0, gamma=gamma, beta=beta)
    assert folded.name == "c" and folded.stride == (2, 2) and folded.bias is not None
    with pytest.raises(GraphError):
        fold.fold_batchnorm(w, b, mean=mean[:2], var=var, eps=0.0)


def _g(*nodes):
    return ir.Graph(tuple(nodes))


def test_simplify_passes():
    x = ir.Input("x", shape=(4, 8, 8))
    r = ir.Relu("r", ("x",))
    r2 = ir.Relu("r2", ("r",))  # relu of relu: identity
    s1 = ir.Subsample("s1", ("r2",), step=2)
    s2 = ir.Subsample("s2", ("s1",), step=(1, 2))
    p1 = ir.ChanPad("p1", ("s2",), before=1, after=0)
    p2 = ir.ChanPad("p2", ("p1",), before=0, after=3)
    p0 = ir.ChanPad("p0", ("p2",))  # 0/0: identity
    a1 = ir.Add("a1", ("p0", "p0"))
    dead = ir.Relu("dead", ("a1",))
    a2 = ir.Add("a2", ("a1", "p0"))
    pool = ir.AvgPool("pool", ("a2",), kernel=1, stride=1)
    fl = ir.Flatten("fl", ("pool",))
    fl2 = ir.Flatten("fl2", ("fl",))  # flatten of a vector: identity
    lin = ir.Linear("lin", ("fl2",), weight=np.ones((2, 8 * 4 * 2)))
    graph = _g(x, r, r2, s1, s2, p1, p2, p0, a1, dead, a2, pool, fl, fl2, lin)
    out = fold.simplify(graph)
    assert [(n.name, n.kind, n.inputs) for n in out.nodes] == [
        ("x", "input", ()), ("r", "relu", ("x",)), ("s2", "subsample", ("r",)), ("p2", "chanpad", ("s2",)),
        ("a2", "add", ("p2", "p2", "p2")), ("fl", "flatten", ("a2",)), ("lin", "linear", ("fl",))]
    assert out["s2"].step == (2, 4) and (out["p2"].before, out["p2"].after) == (1, 3)
    assert fold.simplify(out) is out  # idempotent
    xin = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    assert torch.allclose(ann.evaluate(graph, xin), ann.evaluate(out, xin), rtol=0, atol=1e-12)


def test_remove_identity_output():
    graph = _g(ir.Input("x", shape=(3,)), ir.Linear("l", ("x",), weight=np.eye(3)), ir.Flatten("f", ("l",)))
    out = fold.remove_identities(graph)
    assert [n.name for n in out.nodes] == ["x", "l"]


# ---------------------------------------------------------------------------------------------
# ann.py
# ---------------------------------------------------------------------------------------------
def test_ann_record_and_relu_inputs():
    graph = trace(load_mnistnet(), (1, 28, 28))
    x, _ = mnist_test(4)
    out, acts = ann.evaluate(graph, x, record=True)
    assert set(acts) == {n.name for n in graph.nodes}
    assert torch.equal(acts["fc2"], out)
    assert ann.relu_inputs(graph) == {"relu": "conv1", "relu_1": "conv2", "relu_2": "fc1"}
    assert torch.equal(acts["relu"], torch.relu(acts["conv1"]))
    out2, some = ann.evaluate(graph, x.numpy(), record=["relu_2"])
    assert set(some) == {"relu_2"} and torch.equal(out, out2)
    assert ann.evaluate(graph, x, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(GraphError, match="shape"):
        ann.evaluate(graph, x[:, :, :27])
    with pytest.raises(GraphError, match="unknown"):
        ann.evaluate(graph, x, record=["nope"])


def test_ann_map_equals_plain_calls_in_order():
    """AnnRunner.map: the values of one plain (multi-threaded) call per batch, bit for bit, in batch order, on
    one or several worker threads; the caller's thread count is restored afterwards, also when it stops early."""
    graph = trace(load_mnistnet(), (1, 28, 28))  # conv, maxpool, linear and a relu after a linear
    x, _ = mnist_test(23)
    batches = [x[i:i + 4] for i in range(0, 23, 4)]
    runner = ann.AnnRunner(graph)
    plain = [runner(b, record=["relu", "relu_2"]) for b in batches]
    threads = torch.get_num_threads()
    for workers in (None, 1, 3):
        got = list(runner.map(iter(batches), record=["relu", "relu_2"], workers=workers))
        assert len(got) == len(plain)
        for (out, acts), (want, want_acts) in zip(got, plain):
            assert torch.equal(out, want) and acts.keys() == want_acts.keys()
            assert all(torch.equal(acts[k], want_acts[k]) for k in acts)
        assert torch.get_num_threads() == threads
    stream = runner.map(batches, workers=2)
    assert torch.equal(next(stream), plain[0][0])
    stream.close()
    assert torch.get_num_threads() == threads
    with pytest.raises(GraphError, match="shape"):  # a worker's error reaches the caller
        list(runner.map([x[:2], x[:2, :, :27]], workers=2))
    assert torch.get_num_threads() == threads


def test_graph_roundtrip_after_trace():
    graph = trace(load_resnet(20), (3, 32, 32))
    again = ir.Graph.from_dict(graph.to_dict())
    assert again == graph
    digest = hashlib.sha256(np.ascontiguousarray(graph["conv1"].weight).tobytes()).hexdigest()
    assert digest == hashlib.sha256(np.ascontiguousarray(again["conv1"].weight).tobytes()).hexdigest()
