"""torch.fx tracing of an unmodified ``nn.Module`` into the typed graph (:mod:`netx_export.ir`).

``trace(model, (C, H, W))`` symbolically traces ``model`` (in eval mode; every submodule's training flag
is restored afterwards), runs the traced module once on a zero input of batch 2 to learn every
intermediate shape and every shape-derived Python value (``out.size()[3]``, ``x.size(0)``...), then maps
each fx node to IR nodes:

================================================  ==============================================
PyTorch                                           IR
================================================  ==============================================
``nn.Conv2d`` / ``F.conv2d`` (zero padding,       ``conv`` (padding ``'same'`` with odd kernels,
dilation 1, any stride / groups / bias)           ``'valid'``)
``nn.Linear`` / ``F.linear`` on a vector          ``linear``
``nn.BatchNorm1d/2d`` / ``F.batch_norm`` (eval)   folded into the directly preceding conv/linear
``nn.ReLU``, ``F.relu``, ``torch.relu``,          ``relu`` (each call its own node; in-place forms
``Tensor.relu``, ``relu_``, ``clamp(min=0)``      rebind the mutated tensor)
``nn.MaxPool2d`` / ``F.max_pool2d`` /             ``maxpool`` (input must be a ``relu`` output)
``nn.AdaptiveMaxPool2d`` (divisible sizes)
``nn.AvgPool2d`` / ``F.avg_pool2d`` /             ``avgpool`` (+ ``flatten`` when the mean drops
``nn.AdaptiveAvgPool2d`` / ``x.mean((2, 3))``     the spatial axes)
``nn.Flatten``, ``torch.flatten``, ``view``,      ``flatten`` (only to ``(B, -1)``; a no-op reshape
``reshape``, ``squeeze``                          is removed)
``+``, ``+=``, ``torch.add``, ``Tensor.add(_)``   ``add`` (same shapes, alpha 1)
``x[:, :, ::a, ::b]``                             ``subsample``
``F.pad`` of the channel axis with zeros          ``chanpad``
Dropout (eval), ``nn.Identity``, ``contiguous``,  removed
``clone``, ``detach``
final ``softmax`` / ``log_softmax``               removed, with a note (argmax-invariant)
================================================  ==============================================

Everything else that touches a tensor (GELU, sigmoid, tanh, ``torch.cat``, multiplication...) is
collected, and one :class:`~netx_export.errors.UnsupportedOpError` lists every such node with its fx
name, op, target and the model source line. The same error reports structural problems: an output that
is not a single tensor, a max-pool whose input is not a ReLU output, a BatchNorm that does not directly
follow a conv/linear, two weighted ops (conv/linear) in series without a ReLU between them
(docs/DESIGN.md §4), and an output that is not a linear op.

Node names are the fx node names (fx derives them from the module path or function, e.g.
``layer1_0_conv1``, ``relu_3``, ``getitem``), with dots replaced by ``_``. A BatchNorm folded into a
conv keeps the conv's name. The few extra nodes the tracer creates get ``<fx name>_<kind>`` (e.g.
``mean_flatten``), made unique with a numeric suffix. The input node takes the name of ``forward``'s
first argument (usually ``x``).

The returned graph has already been through :func:`netx_export.fold.simplify` (dead nodes, identities,
chains of structural ops); calling ``simplify`` again changes nothing.

Exported programs (``torch.export``)
------------------------------------
:func:`trace_exported` (or :func:`trace` given a :class:`torch.export.ExportedProgram`, or given its
``ep.module()``, e.g. from ``torch.export.load`` — any ``GraphModule`` whose calls are ATen ops) converts
the ATen graph with the same converter: each ATen op is mapped onto the handler of its PyTorch spelling
(``aten.conv2d``/``convolution`` → conv, ``aten.linear``/``addmm``/``mm`` of a constant weight → linear,
``aten.batch_norm``/``_native_batch_norm_legit_no_training`` (+ ``getitem``) → folded, ``relu(_)``,
``clamp(min=0)``, ``max_pool2d(_with_indices)``, ``avg_pool2d``, ``adaptive_avg/max_pool2d``, ``mean.dim``,
``add(_).Tensor``, ``view``/``reshape``/``flatten``/``squeeze``, one ``slice`` per axis for ``x[:, :, ::a, ::b]``,
``pad``/``constant_pad_nd``, ``dropout``/``clone``/``alias``/``detach`` (removed), ``_assert_*``/``sym_size``
(no value), final ``(_)log_softmax``/``(_)softmax``), so the graph equals the fx path's in structure and
ANN output; both the pre-dispatch export and ``run_decompositions()`` (core ATen) are handled. Parameters
and buffers are read from the program's state. The graph is used as captured (no re-tracing and no
``eval()``: a program exported in training mode has training-mode BatchNorm/dropout, reported as such).
Unsupported ATen ops are reported like fx nodes (the ATen node name, ``call_function`` and the op, the
owning module and the model source line from the program's stack traces). IR names follow the fx path's
where possible: an op of a supported layer module takes the module path (``layer1_0_conv1``), in-place ops
drop their trailing ``_``, other nodes keep the ATen node name.

Batch size: the shape-propagation run uses the program's batch size when it was exported with a static
batch, else 2 (clamped to the range of the dynamic batch dimension). The converted graph is per-sample
either way. The per-sample shape must match the exported one (else :class:`GraphError`); only programs with
one tensor input are supported.
"""
from __future__ import annotations

import builtins
import linecache
import math
import operator
import os
import re
import sys
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from netx_export import fold, ir
from netx_export.errors import GraphError, UnsupportedNode, UnsupportedOpError

__all__ = ["trace", "trace_with_info", "trace_exported", "trace_exported_with_info", "TraceResult"]

_EXAMPLE_BATCH = 2  # batch of the shape-propagation run; 2 so that reshapes of the batch axis show
_TORCH_DIR = os.path.dirname(torch.__file__)


@dataclass(frozen=True)
class TraceResult:
    """What :func:`trace_with_info` returns.

    * ``graph``: the IR graph (BatchNorm folded, simplified).
    * ``notes``: human-readable records of what the tracer dropped or rewrote (e.g. a final
      ``log_softmax``).
    * ``origins``: IR node name → the fx node names that became this node (a conv and its folded
      BatchNorm, a mean and its flatten...).
    * ``sources``: IR node name → the model source line fx recorded for it (``file:line in func: code``),
      where known.
    """

    graph: ir.Graph
    notes: tuple[str, ...] = ()
    origins: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)


def trace(model: nn.Module, example_input_shape: tuple[int, ...], *,
          drop_final_softmax: bool = True) -> ir.Graph:
    """Trace ``model`` into an :class:`ir.Graph` for per-sample input shape ``example_input_shape``
    ((C, H, W) or (F,)). BatchNorm is folded; see the module docstring for the supported ops. ``model`` may
    also be a ``torch.export`` program or its ``ep.module()`` (see "Exported programs" in the module docstring).

    ``drop_final_softmax``: a softmax / log_softmax over the features that is the model's last op is
    dropped (it does not change the argmax; the graph then outputs logits). With False it is reported as
    unsupported. Raises :class:`UnsupportedOpError` (listing every offending node) or
    :class:`GraphError` (bad ``example_input_shape``).
    """
    return trace_with_info(model, example_input_shape, drop_final_softmax=drop_final_softmax).graph


def trace_with_info(model: nn.Module, example_input_shape: tuple[int, ...], *,
                    drop_final_softmax: bool = True) -> TraceResult:
    """Like :func:`trace`, and also return the notes, node origins and source lines (:class:`TraceResult`)."""
    if isinstance(model, torch.export.ExportedProgram):
        return trace_exported_with_info(model, example_input_shape, drop_final_softmax=drop_final_softmax)
    shape = _check_shape(example_input_shape)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if _is_aten_graph(model):  # ep.module() of a torch.export program (or another ATen-level GraphModule)
        return _trace_aten(model, shape, drop_final_softmax)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        gm = _symbolic_trace(model)
        concrete = _propagate(gm, model, shape)
        return _Converter(gm, concrete, shape, drop_final_softmax, type(model).__name__).run()
    finally:
        for m, flag in flags:
            m.training = flag


def trace_exported(program: Any, example_input_shape: tuple[int, ...] | None = None, *,
                   drop_final_softmax: bool = True) -> ir.Graph:
    """Convert a ``torch.export`` program (:class:`torch.export.ExportedProgram`, e.g. from
    ``torch.export.load``) into an :class:`ir.Graph`, like :func:`trace` does for an ``nn.Module``.

    ``example_input_shape``: per-sample (C, H, W) or (F,); None takes it from the program's input (it must
    then be static apart from the batch axis). See the module docstring ("Exported programs").
    """
    return trace_exported_with_info(program, example_input_shape, drop_final_softmax=drop_final_softmax).graph


def trace_exported_with_info(program: Any, example_input_shape: tuple[int, ...] | None = None, *,
                             drop_final_softmax: bool = True) -> TraceResult:
    """Like :func:`trace_exported`, and also return the notes, node origins and source lines."""
    if not isinstance(program, torch.export.ExportedProgram):
        raise TypeError(f"program must be a torch.export.ExportedProgram, got {type(program).__name__}")
    gm = program.module()  # parameters and buffers become get_attr nodes; one placeholder per user input
    if example_input_shape is None:
        _single_input(gm, _exported_model_name(gm))
        example_input_shape = _exported_sample_shape(gm)
    return _trace_aten(gm, _check_shape(example_input_shape), drop_final_softmax)


# ---------------------------------------------------------------------------------------------
# tracing and shape propagation
# ---------------------------------------------------------------------------------------------
def _check_shape(shape: Any) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
        ok = all(int(s) == s for s in shape)
    except (TypeError, ValueError):
        out, ok = (), False
    if not ok or len(out) not in (1, 3) or any(s < 1 for s in out):
        raise GraphError(f"example_input_shape must be (C, H, W) or (F,) with positive sizes, got {shape!r}",
                         field="example_input_shape")
    return out


class _Tracer(fx.Tracer):
    """fx tracer that records, for each call node, the innermost model source line that created it.

    (fx's own ``record_stack_traces`` works too but its first use imports torch._inductor, ~2 s.)
    """

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        if kind.startswith("call_"):
            node.meta["netx_source"] = _caller_source()
        return node


def _caller_source() -> str | None:
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename == __file__:  # back in trace(): no model frame (e.g. torch's own Sequential.forward)
            return None
        if not filename.startswith(_TORCH_DIR):
            line = linecache.getline(filename, frame.f_lineno).strip()
            return f"{filename}:{frame.f_lineno} in {frame.f_code.co_name}: {line}"
        frame = frame.f_back
    return None  # pragma: no cover - trace() is always on the stack


def _symbolic_trace(model: nn.Module) -> fx.GraphModule:
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, NotImplementedError...)
        raise UnsupportedOpError(
            [UnsupportedNode(name="<model>", op="trace", target=type(model).__name__,
                             reason=f"torch.fx symbolic tracing failed ({type(exc).__name__}: {exc}); the "
                                    "forward pass must not branch on tensor values")],
            model=type(model).__name__) from exc
    return fx.GraphModule(tracer.root, graph)


class _Recorder(fx.Interpreter):
    """Runs the traced module and keeps every node's result."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=False)


def _propagate(gm: fx.GraphModule, model: nn.Module, shape: tuple[int, ...]) -> dict[fx.Node, Any]:
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros((_EXAMPLE_BATCH,) + shape, dtype=dtype, device=device)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    extra = [n.args[0] if n.args else None for n in placeholders[1:]]
    rec = _Recorder(gm)
    try:
        with torch.no_grad():
            model(x, *extra)  # plain run first: its failure is cheap to format (a GraphModule's is not)
            rec.run(x, *extra)
    except Exception as exc:
        raise GraphError(f"running the model on a zero input of shape {(_EXAMPLE_BATCH,) + shape} "
                         f"failed ({type(exc).__name__}: {exc})", field="example_input_shape") from exc
    return dict(rec.env)


# -- ATen-level graphs (torch.export) ----------------------------------------------------------
_OpOverload = torch._ops.OpOverload


def _is_aten_graph(model: nn.Module) -> bool:
    """A GraphModule whose calls are ATen ops (``torch.export``'s ``ep.module()``, ``make_fx``...): it is
    converted as it is (no re-tracing, no ``eval()``: the mode was fixed when the program was captured)."""
    return isinstance(model, fx.GraphModule) and any(
        n.op == "call_function" and isinstance(n.target, _OpOverload) for n in model.graph.nodes)


def _user_inputs(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "placeholder"]


def _exported_sample_shape(gm: fx.GraphModule) -> tuple[int, ...]:
    inputs = _user_inputs(gm)
    val = inputs[0].meta.get("val") if len(inputs) == 1 else None
    dims = tuple(val.shape[1:]) if isinstance(val, torch.Tensor) else None
    if dims is None or not all(isinstance(d, int) for d in dims):
        raise GraphError("cannot infer the per-sample input shape of the exported program (it needs one input "
                         "tensor with static non-batch dimensions); pass example_input_shape",
                         field="example_input_shape")
    return dims


def _exported_model_name(gm: fx.GraphModule) -> str:
    """The class name of the exported model (from the nodes' nn_module_stack), else the GraphModule's."""
    for n in gm.graph.nodes:
        for path, typ in (n.meta.get("nn_module_stack") or {}).values():
            if path == "":
                return str(getattr(typ, "__name__", typ)).rsplit(".", 1)[-1]
    return type(gm).__name__


def _pick_batch(b: Any) -> int:
    """Batch size for the shape-propagation run: the exported one when static, else 2 clamped to the
    range the program was exported with (a dynamic batch dimension)."""
    if isinstance(b, int):
        return b
    try:
        node = b.node
        rng = node.shape_env.var_to_range[node.expr]
        batch = _EXAMPLE_BATCH
        if rng.lower > batch:
            batch = int(rng.lower)
        if rng.upper < batch:
            batch = int(rng.upper)
        return max(batch, 1)
    except Exception:  # private API moved: the default is valid for torch.export.Dim's default range
        return _EXAMPLE_BATCH


def _single_input(gm: fx.GraphModule, model_name: str) -> fx.Node:
    inputs = _user_inputs(gm)
    if len(inputs) != 1:
        raise UnsupportedOpError(
            [UnsupportedNode(name=n.name, op=n.op, target=str(n.target),
                             reason="only programs with a single tensor input are supported (pass the "
                                    "ExportedProgram or ep.module(), not the lifted ep.graph_module)")
             for n in inputs[1:]] or
            [UnsupportedNode(name="<model>", op="placeholder", target="", reason="the program has no input")],
            model=model_name)
    return inputs[0]


def _propagate_aten(gm: fx.GraphModule, shape: tuple[int, ...], model_name: str) -> tuple[dict[fx.Node, Any], int]:
    val = _single_input(gm, model_name).meta.get("val")
    batch = _EXAMPLE_BATCH
    if isinstance(val, torch.Tensor):
        dims = tuple(val.shape)
        static = tuple(d if isinstance(d, int) else None for d in dims[1:])
        if len(dims) != 1 + len(shape) or any(d is not None and d != s for d, s in zip(static, shape)):
            raise GraphError(f"the exported program takes inputs of shape ({', '.join(map(str, dims))}) "
                             f"(batch first), which does not match the per-sample shape {shape}",
                             field="example_input_shape")
        batch = _pick_batch(dims[0])
    param = next((p for p in gm.parameters() if p.is_floating_point()), None)
    dtype = val.dtype if isinstance(val, torch.Tensor) and val.is_floating_point() else (
        param.dtype if param is not None else torch.float32)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros((batch,) + shape, dtype=dtype, device=device)
    rec = _Recorder(gm)
    try:
        with torch.no_grad():
            rec.run(x)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise GraphError(f"running the exported program on a zero input of shape {(batch,) + shape} failed "
                         f"({type(exc).__name__}: {first})", field="example_input_shape") from exc
    return dict(rec.env), batch


def _trace_aten(gm: fx.GraphModule, shape: tuple[int, ...], drop_final_softmax: bool) -> TraceResult:
    name = _exported_model_name(gm)
    concrete, batch = _propagate_aten(gm, shape, name)
    return _Converter(gm, concrete, shape, drop_final_softmax, name, batch=batch, aten=True).run()


# ---------------------------------------------------------------------------------------------
# values flowing through the conversion
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _T:
    """A tensor computed from the input: IR node ``name`` as of fold ``version``."""

    name: str
    version: int = 0


@dataclass(frozen=True)
class _S:
    """A value that does not depend on the input data (parameters, shapes, Python constants)."""

    value: Any


class _Bad:
    """Result of an unsupported node (suppresses follow-up reports)."""


_BAD = _Bad()


@dataclass(frozen=True)
class _NoOutput:
    """A secondary result of a multi-output ATen op (max-pool indices, BatchNorm statistics...): reading it
    (``getitem``) is unsupported, for ``reason``."""

    reason: str


class _Unsupported(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _leaves(value: Any) -> list[Any]:
    out: list[Any] = []
    fx.node.map_aggregate(value, out.append)
    return out


def _unwrap(value: Any, what: str) -> Any:
    """The plain Python value of a static argument (nested tuples/lists/dicts/slices allowed)."""

    def un(v: Any) -> Any:
        if isinstance(v, _S):
            return v.value
        if isinstance(v, _T):
            raise _Unsupported(f"{what} must not depend on the input data")
        if isinstance(v, _Bad):  # pragma: no cover - callers bail out on _BAD first
            raise _Unsupported(f"{what} comes from an unsupported node")
        return v

    return fx.node.map_aggregate(value, un)


def _arg(args: tuple, kwargs: Mapping[str, Any], index: int, name: str, default: Any = None) -> Any:
    if index < len(args):
        return args[index]
    return kwargs.get(name, default)


def _static_arg(args: tuple, kwargs: Mapping[str, Any], index: int, name: str, default: Any = None) -> Any:
    return _unwrap(_arg(args, kwargs, index, name, default), f"argument {name!r}")


def _pair(value: Any, what: str) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            value = (value[0], value[0])
        if len(value) != 2:
            raise _Unsupported(f"{what} must be an int or a pair, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _np(t: Any) -> np.ndarray | None:
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", torch.float64).numpy().copy()
    return np.asarray(t, dtype=np.float64)


def _qualname(target: Any) -> str:
    if isinstance(target, str):
        return target
    try:
        return fx.node._get_qualified_name(target)
    except Exception:  # pragma: no cover - exotic callables
        return getattr(target, "__name__", repr(target))


def _source(node: fx.Node) -> str | None:
    """The model source line (``file:line in func: code``) recorded for ``node`` while tracing (fx path), or
    the innermost model frame of the stack trace ``torch.export`` stored with it."""
    source = node.meta.get("netx_source")
    if source is None and isinstance(node.meta.get("stack_trace"), str):
        source = _stack_source(node.meta["stack_trace"])
    return source


_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>[^\n]+)\n(?P<code>[^\n]*)')


def _stack_source(stack: str) -> str | None:
    for m in reversed(list(_FRAME.finditer(stack))):
        if not m["file"].startswith(_TORCH_DIR):
            return f"{m['file']}:{m['line']} in {m['func'].strip()}: {m['code'].strip()}"
    return None


# ---------------------------------------------------------------------------------------------
# the converter
# ---------------------------------------------------------------------------------------------
class _Converter:
    def __init__(self, gm: fx.GraphModule, concrete: dict[fx.Node, Any], shape: tuple[int, ...],
                 drop_final_softmax: bool, model_name: str, *, batch: int = _EXAMPLE_BATCH,
                 aten: bool = False) -> None:
        self.gm = gm
        self.batch = batch  # batch size of the shape-propagation run
        self.aten = aten  # an ATen-level graph (torch.export)
        self.concrete = concrete
        self.input_shape = shape
        self.drop_final_softmax = drop_final_softmax
        self.model_name = model_name
        self.modules = dict(gm.named_modules())
        self.values: dict[fx.Node, Any] = {}
        self.nodes: dict[str, ir.Node] = {}  # insertion order = topological order
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.version: dict[str, int] = {}
        self.uses: dict[str, list[tuple[str, int]]] = {}  # consumer -> [(input name, version read)]
        self.fx_of: dict[str, fx.Node] = {}
        self.origins: dict[str, list[str]] = {}
        self.folded_by: dict[str, list[fx.Node]] = {}
        self.base_names = {n: (_aten_base_name(n, self.modules) if aten else n.name).replace(".", "_")
                           for n in gm.graph.nodes}
        self.taken = {n.name.replace(".", "_") for n in gm.graph.nodes} | set(self.base_names.values())
        self.used: set[str] = set()
        self.notes: list[str] = []
        self.problems: list[UnsupportedNode] = []
        self.output: _T | None = None
        self.input_name: str | None = None

    # -- bookkeeping ---------------------------------------------------------------------
    def name_for(self, n: fx.Node, suffix: str | None = None) -> str:
        base = self.base_names[n]
        if suffix is None and base not in self.used:
            return base
        if suffix is None:  # a repeated base name (a module called twice in an exported program): fx-style _1, _2
            i = 1
            while f"{base}_{i}" in self.used or f"{base}_{i}" in self.taken:
                i += 1
            return f"{base}_{i}"
        cand = f"{base}_{suffix}"
        i = 1
        while cand in self.used or cand in self.taken:
            cand = f"{base}_{suffix}_{i}"
            i += 1
        return cand

    def emit(self, node: ir.Node, n: fx.Node, inputs: tuple[_T, ...] = (), *,
             expect: tuple[int, ...] | None = None) -> _T:
        try:
            shape = tuple(node.out_shape([self.shapes[t.name] for t in inputs]))
        except GraphError as exc:
            raise _Unsupported(str(exc)) from None
        if expect is not None and shape != tuple(expect):
            raise _Unsupported(f"converted to {node.kind} with output shape {shape}, but PyTorch computes "
                               f"{tuple(expect)} (unsupported option)")
        self.nodes[node.name] = node
        self.shapes[node.name] = shape
        self.version[node.name] = 0
        self.uses[node.name] = [(t.name, t.version) for t in inputs]
        self.fx_of[node.name] = n
        self.origins[node.name] = [n.name]
        self.used.add(node.name)
        return _T(node.name)

    def shape_of(self, t: _T) -> tuple[int, ...]:
        return self.shapes[t.name]

    def kind_of(self, t: _T) -> str:
        return self.nodes[t.name].kind

    def out_shape(self, n: fx.Node) -> tuple[int, ...]:
        value = self.concrete.get(n)
        if isinstance(value, (tuple, list)) and value and isinstance(n.target, _OpOverload):
            value = value[0]  # a multi-output ATen op (max_pool2d_with_indices...): the main result
        if not isinstance(value, torch.Tensor):
            raise _Unsupported(f"expected a tensor result, got {type(value).__name__}")
        if value.dim() == 0 or value.shape[0] != self.batch:
            raise _Unsupported(f"the result has shape {tuple(value.shape)}: the batch axis is not preserved")
        return tuple(value.shape[1:])

    def tensor(self, value: Any, what: str = "input") -> _T:
        if isinstance(value, _T):
            return value
        raise _Unsupported(f"{what} must be a tensor computed from the model input, got a constant")

    def report(self, n: fx.Node, reason: str, name: str | None = None) -> None:
        if n.op == "call_module":
            target = f"{n.target} ({type(self.modules[n.target]).__name__})"
        else:
            target = _qualname(n.target)
        if self.aten and (owner := _owner_module(n)) is not None and owner[0]:
            reason += f" (in module {owner[0]!r}: {owner[1]})"
        self.problems.append(UnsupportedNode(name=name or self.base_names.get(n, n.name.replace(".", "_")),
                                             op=n.op, target=target, reason=reason, source=_source(n)))

    def report_ir(self, name: str, reason: str) -> None:
        """Report IR node ``name`` under its own name, with the op and source of the fx node it came from."""
        self.report(self.fx_of[name], reason, name=name)

    # -- main loop -----------------------------------------------------------------------
    def run(self) -> TraceResult:
        for n in self.gm.graph.nodes:
            if n.op == "output":
                self.do_output(n)
                continue
            try:
                self.values[n] = self.convert(n)
            except _Unsupported as exc:
                self.report(n, exc.reason)
                self.values[n] = _BAD
        self.raise_if_problems()
        assert self.output is not None
        graph = self.build()
        return TraceResult(
            graph=graph,
            notes=tuple(self.notes),
            origins=MappingProxyType({k: tuple(v) for k, v in self.origins.items() if k in
                                      {nd.name for nd in graph.nodes}}),
            sources=MappingProxyType({nd.name: s for nd in graph.nodes
                                      if (s := _source(self.fx_of[nd.name])) is not None}),
        )

    def raise_if_problems(self) -> None:
        if self.problems:
            raise UnsupportedOpError(self.problems, model=self.model_name)

    def convert(self, n: fx.Node) -> Any:
        if n.op == "placeholder":
            if self.input_name is None:
                self.input_name = self.name_for(n)
                return self.emit(ir.Input(self.input_name, shape=self.input_shape), n)
            if n.args:  # an extra forward argument with a default value
                return _S(n.args[0])
            raise _Unsupported("only models with a single tensor input are supported")
        if n.op == "get_attr":
            return _S(self.concrete[n])
        if n.op == "call_module" and type(self.modules.get(n.target)).__name__ == "GuardsFn":
            return _S(None)  # torch.export's input-shape guards

        args = fx.node.map_arg(n.args, lambda a: self.values[a])
        kwargs = fx.node.map_arg(n.kwargs, lambda a: self.values[a])
        if self.is_shape_query(n):
            return _S(self.concrete[n])
        leaves = _leaves((args, kwargs))
        handler = self.handler(n)
        if handler is None:
            if not any(isinstance(v, (_T, _Bad)) for v in leaves):
                return _S(self.concrete[n])  # pure Python / constant computation
            # reported even when its input comes from another unsupported node: list them all
            raise _Unsupported(self.unsupported_reason(n))
        if any(isinstance(v, _Bad) for v in leaves):
            self.check_unfoldable_bn(n)  # still listed when its input comes from an unsupported node
            return _BAD
        if not any(isinstance(v, _T) for v in leaves) and n.op != "call_module":
            return _S(self.concrete[n])
        return handler(self, n, tuple(args), dict(kwargs))

    def check_unfoldable_bn(self, n: fx.Node) -> None:
        """A BatchNorm whose input is known (from the fx graph alone) not to be a conv/linear is reported even
        when that input could not be converted, so the unsupported-op error lists every offending node."""
        def what(m: fx.Node) -> tuple[bool, str]:
            if m.op == "call_module":
                kind = type(self.modules.get(m.target)).__name__
                return kind.startswith("BatchNorm"), kind
            if m.op in ("call_function", "call_method"):
                name = str(m.target) if m.op == "call_method" else _qualname(m.target)
                return "batch_norm" in name, name
            return False, m.op

        is_bn, _ = what(n)
        src = n.args[0] if n.args else None
        if not is_bn or not isinstance(src, fx.Node):
            return
        _, kind = what(src)
        if not any(k in kind.lower() for k in ("conv", "linear", "addmm")):
            self.report(n, f"BatchNorm can only be folded into a directly preceding Conv2d/Linear; its input "
                           f"{self.base_names.get(src, src.name)!r} is a {kind}")

    def unsupported_reason(self, n: fx.Node) -> str:
        if n.op == "call_module":
            kind = type(self.modules[n.target]).__name__
            return f"module type {kind} is not supported by the converter"
        if n.op == "call_method":
            return f"tensor method .{n.target}() is not supported by the converter"
        if isinstance(n.target, _OpOverload):
            return f"ATen op {n.target} is not supported by the converter"
        return f"function {_qualname(n.target)} is not supported by the converter"

    def is_shape_query(self, n: fx.Node) -> bool:
        if n.op == "call_method":
            return n.target in ("size", "dim", "numel", "ndimension", "nelement")
        if n.op == "call_function":
            if n.target in _ATEN_SHAPE_QUERIES:
                return True
            if n.target is builtins.getattr:
                return len(n.args) > 1 and n.args[1] in ("shape", "ndim")
            return n.target is builtins.len
        return False

    def handler(self, n: fx.Node) -> Callable | None:
        if n.op == "call_module":
            mod = self.modules[n.target]
            for cls, h in _MODULE_HANDLERS:
                if type(mod) is cls:
                    return h
            return None
        if n.op == "call_function":
            return _FUNCTION_HANDLERS.get(n.target)
        if n.op == "call_method":
            return _METHOD_HANDLERS.get(n.target)
        return None

    def rebind_inplace(self, n: fx.Node, result: _T) -> _T:
        """An in-place op mutated its first argument: later readers of that fx value see the result."""
        first = n.args[0] if n.args else None
        if isinstance(first, fx.Node):
            self.values[first] = result
        return result

    # -- output and final checks -----------------------------------------------------------
    def output_args(self, n: fx.Node) -> Any:
        """What the output node ``n`` returns, as the model returns it: ``torch.export`` flattens the
        model's output into a tuple (its ``_out_spec`` says how to rebuild it); a single tensor is unwrapped."""
        out = n.args[0]
        spec = getattr(self.gm, "_out_spec", None)
        if self.aten and isinstance(out, (tuple, list)) and len(out) == 1 and spec is not None:
            try:
                leaf = spec.is_leaf()
            except Exception:  # pragma: no cover - pytree API moved
                leaf = False
            if leaf:
                return out[0]
        return out

    def is_model_output(self, n: fx.Node) -> bool:
        """``n`` is the model's (single) output and has no other user."""
        users = list(n.users)
        return len(users) == 1 and users[0].op == "output" and self.output_args(users[0]) is n

    def do_output(self, n: fx.Node) -> None:
        value = fx.node.map_arg(self.output_args(n), lambda a: self.values[a])
        if isinstance(value, _T):
            self.output = value
            return
        if isinstance(value, _Bad):
            return
        if isinstance(value, (tuple, list, dict)):
            what = f"a {type(value).__name__} of {len(value)} values"
        else:
            what = "a constant" if isinstance(value, _S) else type(value).__name__
        self.report(n, f"the model output must be a single tensor, got {what}")

    def build(self) -> ir.Graph:
        out = self.output
        assert out is not None and self.input_name is not None
        kind = self.kind_of(out)
        if kind in ("input", "relu", "maxpool"):
            self.report_ir(out.name, f"the model output comes from a {kind} node; the readout needs a "
                                     "linear op (normally nn.Linear) as the last layer")
            self.raise_if_problems()
        # live nodes, and BatchNorm folds that other consumers would not see
        live = {out.name, self.input_name}
        for name in reversed(list(self.nodes)):
            if name in live:
                live.update(src for src, _ in self.uses[name])
        reads = [(c, src, v) for c in self.nodes if c in live for src, v in self.uses[c]]
        reads.append(("<output>", out.name, out.version))
        for consumer, src, v in reads:
            if v != self.version[src]:
                bn = self.folded_by[src][v]
                who = "the model output" if consumer == "<output>" else f"node {consumer!r}"
                self.report(bn, f"cannot fold this BatchNorm into {src!r}: {who} also reads {src!r} "
                                "without it")
        self.raise_if_problems()
        nodes = tuple(nd for name, nd in self.nodes.items() if name in live)
        if nodes[-1].name != out.name:  # pragma: no cover - insertion order is topological
            raise GraphError("output is not the last live node", node=out.name)
        graph = fold.simplify(ir.Graph(nodes))
        self.check_structure(graph)
        self.raise_if_problems()
        return graph

    def check_structure(self, graph: ir.Graph) -> None:
        """Max-pools read ReLU outputs; no two weighted ops in series without a ReLU (DESIGN §4)."""
        upstream: dict[str, set[str]] = {}
        for node in graph.nodes:
            if isinstance(node, ir.MaxPool) and not isinstance(graph[node.inputs[0]], ir.Relu):
                self.report_ir(node.name, f"max-pooling is only supported directly on a ReLU output (LIPooling); "
                                          f"its input {node.inputs[0]!r} is a {graph[node.inputs[0]].kind}")
            if node.kind in ir.STATEFUL_KINDS or isinstance(node, ir.Input):
                upstream[node.name] = set()
                continue
            before = set().union(*(upstream[i] for i in node.inputs))
            if node.kind in ir.WEIGHTED_KINDS:
                if before:
                    self.report_ir(node.name, "two weighted ops in series without a ReLU between them: this "
                                              f"{node.kind} reads the output of {sorted(before)} through linear "
                                              "ops only (docs/DESIGN.md §4); insert a ReLU or merge the layers")
                upstream[node.name] = {node.name}
            else:
                upstream[node.name] = before


# ---------------------------------------------------------------------------------------------
# handlers: (converter, fx node, resolved args, resolved kwargs) -> value
# ---------------------------------------------------------------------------------------------
def _require_map(c: _Converter, x: _T, what: str) -> tuple[int, int, int]:
    shape = c.shape_of(x)
    if len(shape) != 3:
        raise _Unsupported(f"{what} needs a (C, H, W) feature map, got per-sample shape {shape}")
    return shape  # type: ignore[return-value]


def _conv(c: _Converter, n: fx.Node, x: _T, weight: Any, bias: Any, stride: Any, padding: Any,
          dilation: Any, groups: Any, padding_mode: str = "zeros") -> _T:
    _require_map(c, x, "Conv2d")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise _Unsupported("conv weight must be a constant 4-D tensor")
    if padding_mode != "zeros":
        raise _Unsupported(f"padding_mode={padding_mode!r} is not supported (only 'zeros')")
    if _pair(dilation, "dilation") != (1, 1):
        raise _Unsupported(f"dilation={dilation!r} is not supported (only 1)")
    kh, kw = weight.shape[2], weight.shape[3]
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same" and kh % 2 == 1 and kw % 2 == 1:
            padding = ((kh - 1) // 2, (kw - 1) // 2)
        else:
            raise _Unsupported(f"padding={padding!r} with kernel {(kh, kw)} is not supported (asymmetric)")
    node = ir.Conv(c.name_for(n), (x.name,), weight=_np(weight), bias=_np(bias), stride=_pair(stride, "stride"),
                   padding=_pair(padding, "padding"), groups=int(groups))
    return c.emit(node, n, (x,), expect=c.out_shape(n))


def _linear(c: _Converter, n: fx.Node, x: _T, weight: Any, bias: Any) -> _T:
    shape = c.shape_of(x)
    if len(shape) != 1:
        raise _Unsupported(f"Linear needs a vector input (flatten first), got per-sample shape {shape}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise _Unsupported("linear weight must be a constant 2-D tensor")
    node = ir.Linear(c.name_for(n), (x.name,), weight=_np(weight), bias=_np(bias))
    return c.emit(node, n, (x,), expect=c.out_shape(n))


def _batchnorm(c: _Converter, n: fx.Node, x: _T, mean: Any, var: Any, gamma: Any, beta: Any, eps: float) -> _T:
    if mean is None or var is None:
        raise _Unsupported("BatchNorm without running statistics (track_running_stats=False) normalizes with "
                           "batch statistics at inference and cannot be folded")
    src = c.nodes[x.name]
    if not isinstance(src, (ir.Conv, ir.Linear)):
        raise _Unsupported(f"BatchNorm can only be folded into a directly preceding Conv2d/Linear; its input "
                           f"{x.name!r} is a {src.kind}")
    if x.version != c.version[x.name]:
        raise _Unsupported(f"{x.name!r} is already followed by another folded BatchNorm")
    expect = c.out_shape(n)
    if expect != c.shape_of(x):
        raise _Unsupported(f"BatchNorm input shape {c.shape_of(x)} differs from its output shape {expect}")
    try:
        folded = fold.fold_bn_into(src, mean=_np(mean), var=_np(var), eps=float(eps), gamma=_np(gamma),
                                   beta=_np(beta))
    except GraphError as exc:
        raise _Unsupported(str(exc)) from None
    c.nodes[x.name] = folded
    c.folded_by.setdefault(x.name, []).append(n)
    c.version[x.name] += 1
    c.origins[x.name].append(n.name)
    return _T(x.name, c.version[x.name])


def _relu(c: _Converter, n: fx.Node, x: Any, inplace: bool) -> _T:
    x = c.tensor(x)
    out = c.emit(ir.Relu(c.name_for(n), (x.name,)), n, (x,), expect=c.out_shape(n))
    return c.rebind_inplace(n, out) if inplace else out


def _maxpool(c: _Converter, n: fx.Node, x: Any, kernel: Any, stride: Any, padding: Any, dilation: Any,
             ceil_mode: bool, return_indices: bool) -> _T:
    x = c.tensor(x)
    _require_map(c, x, "max-pooling")
    if return_indices:
        raise _Unsupported("max-pooling with return_indices=True is not supported")
    if _pair(dilation, "dilation") != (1, 1):
        raise _Unsupported(f"max-pooling with dilation={dilation!r} is not supported")
    if c.kind_of(x) != "relu":
        raise _Unsupported(f"max-pooling is only supported directly on a ReLU output (it becomes LIPooling); "
                           f"its input {x.name!r} is a {c.kind_of(x)}")
    kernel = _pair(kernel, "kernel_size")
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride, "stride")
    node = ir.MaxPool(c.name_for(n), (x.name,), kernel=kernel, stride=stride, padding=_pair(padding, "padding"))
    return c.emit(node, n, (x,), expect=c.out_shape(n))


def _avgpool(c: _Converter, n: fx.Node, x: Any, kernel: Any, stride: Any, padding: Any, ceil_mode: bool,
             count_include_pad: bool, divisor_override: Any) -> _T:
    x = c.tensor(x)
    _require_map(c, x, "average pooling")
    padding = _pair(padding, "padding")
    if divisor_override is not None:
        raise _Unsupported("average pooling with divisor_override is not supported")
    if not count_include_pad and padding != (0, 0):
        raise _Unsupported("average pooling with padding and count_include_pad=False is not supported")
    kernel = _pair(kernel, "kernel_size")
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride, "stride")
    node = ir.AvgPool(c.name_for(n), (x.name,), kernel=kernel, stride=stride, padding=padding)
    return c.emit(node, n, (x,), expect=c.out_shape(n))


def _adaptive(c: _Converter, n: fx.Node, x: Any, output_size: Any, kind: str) -> _T:
    x = c.tensor(x)
    _, h, w = _require_map(c, x, "adaptive pooling")
    if not isinstance(output_size, (list, tuple)):
        output_size = (output_size, output_size)
    oh, ow = (h if output_size[0] is None else int(output_size[0]),
              w if output_size[-1] is None else int(output_size[-1]))
    if h % oh or w % ow:
        raise _Unsupported(f"adaptive pooling from {(h, w)} to {(oh, ow)} has unequal windows (sizes must divide)")
    k = (h // oh, w // ow)
    if kind == "max":
        return _maxpool(c, n, x, k, k, 0, 1, False, False)
    return _avgpool(c, n, x, k, k, 0, False, True, None)


def _global_mean(c: _Converter, n: fx.Node, x: Any, dims: Any, keepdim: bool) -> _T:
    x = c.tensor(x)
    shape = c.shape_of(x)
    if dims is None:
        raise _Unsupported("a mean over all axes (including the batch axis) is not supported")
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shape) != 3 or sorted(d % 4 for d in dims) != [2, 3]:
        raise _Unsupported(f"only the spatial mean x.mean((2, 3)) of a feature map is supported, got dims {dims} "
                           f"of a tensor with per-sample shape {shape}")
    _, h, w = shape
    pool = ir.AvgPool(c.name_for(n), (x.name,), kernel=(h, w), stride=(h, w), padding=(0, 0))
    expect = c.out_shape(n)
    if keepdim:
        return c.emit(pool, n, (x,), expect=expect)
    t = c.emit(pool, n, (x,))
    flat = c.emit(ir.Flatten(c.name_for(n, "flatten"), (t.name,)), n, (t,), expect=expect)
    c.origins[flat.name] = [n.name]
    return flat


def _reshape(c: _Converter, n: fx.Node, x: Any) -> _T:
    """view / reshape / flatten / squeeze: supported when the result is (B, -1) or unchanged."""
    x = c.tensor(x)
    shape = c.shape_of(x)
    out = c.out_shape(n)
    if out == shape:
        return x
    if out == (math.prod(shape),):
        return c.emit(ir.Flatten(c.name_for(n), (x.name,)), n, (x,), expect=out)
    raise _Unsupported(f"reshape of per-sample shape {shape} to {out} is not supported (only flattening to "
                       "(B, -1))")


def _add(c: _Converter, n: fx.Node, a: Any, b: Any, alpha: Any = 1, inplace: bool = False) -> _T:
    if not isinstance(a, _T) or not isinstance(b, _T):
        raise _Unsupported("adding a constant to a tensor is not supported (only tensor + tensor)")
    if alpha != 1:
        raise _Unsupported(f"add with alpha={alpha!r} is not supported")
    if c.shape_of(a) != c.shape_of(b):
        raise _Unsupported(f"add of different shapes {c.shape_of(a)} and {c.shape_of(b)} (broadcasting) is not "
                           "supported")
    out = c.emit(ir.Add(c.name_for(n), (a.name, b.name)), n, (a, b), expect=c.out_shape(n))
    return c.rebind_inplace(n, out) if inplace else out


def _is_full(s: Any, size: int | None) -> bool:
    return (isinstance(s, slice) and s.start in (None, 0) and s.step in (None, 1)
            and (s.stop is None or (size is not None and isinstance(s.stop, int) and s.stop >= size)))


def _getitem(c: _Converter, n: fx.Node, args: tuple, kwargs: dict) -> Any:
    if isinstance(args[0], (tuple, list)):  # an output of a multi-output ATen op
        item = args[0][_unwrap(args[1], "index")]
        if isinstance(item, _NoOutput):
            raise _Unsupported(item.reason)
        return item
    x = c.tensor(args[0])
    index = _unwrap(args[1], "index")
    shape = c.shape_of(x)
    index = index if isinstance(index, tuple) else (index,)
    ndim = len(shape) + 1
    if sum(i is Ellipsis for i in index) > 1:
        raise _Unsupported("indexing with more than one Ellipsis")
    if Ellipsis in index:
        k = index.index(Ellipsis)
        index = index[:k] + (slice(None),) * (ndim - len(index) + 1) + index[k + 1:]
    index = index + (slice(None),) * (ndim - len(index))
    if len(index) != ndim or not all(isinstance(i, slice) for i in index):
        raise _Unsupported(f"tensor indexing {args[1]!r} is not supported (only slices like x[:, :, ::2, ::2])")
    sizes = (None,) + shape
    if not all(_is_full(index[i], sizes[i]) for i in range(2 if ndim == 4 else ndim)):
        raise _Unsupported(f"indexing {index!r} is not supported: the batch and channel axes must be taken "
                           "whole (only spatial subsampling x[:, :, ::a, ::b])")
    if ndim != 4:
        return x
    steps = []
    for i in (2, 3):
        s = index[i]
        if s.start not in (None, 0) or not (s.stop is None or s.stop >= sizes[i]) or (s.step or 1) < 1:
            raise _Unsupported(f"spatial slice {s!r} is not supported (only ::step from index 0)")
        steps.append(int(s.step or 1))
    node = ir.Subsample(c.name_for(n), (x.name,), step=(steps[0], steps[1]))
    return c.emit(node, n, (x,), expect=c.out_shape(n))


def _pad(c: _Converter, n: fx.Node, args: tuple, kwargs: dict) -> _T:
    x = c.tensor(args[0])
    pad = tuple(int(p) for p in _static_arg(args, kwargs, 1, "pad"))
    mode = _static_arg(args, kwargs, 2, "mode", "constant")
    value = _static_arg(args, kwargs, 3, "value", None)
    if mode != "constant" or value not in (None, 0, 0.0):
        raise _Unsupported(f"F.pad with mode={mode!r}, value={value!r} is not supported (only zeros)")
    _require_map(c, x, "F.pad")
    pad = pad + (0,) * (8 - len(pad))
    if len(pad) != 8 or any(pad[:4]) or any(pad[6:]):
        raise _Unsupported(f"F.pad {pad!r} is not supported: only the channel axis may be padded "
                           "(pad=(0, 0, 0, 0, before, after))")
    if pad[4] < 0 or pad[5] < 0:
        raise _Unsupported("F.pad with negative padding (cropping) is not supported")
    return c.emit(ir.ChanPad(c.name_for(n), (x.name,), before=pad[4], after=pad[5]), n, (x,),
                  expect=c.out_shape(n))


def _identity(c: _Converter, n: fx.Node, x: Any) -> _T:
    return c.tensor(x)


def _final_softmax(c: _Converter, n: fx.Node, x: Any, dim: Any) -> _T:
    x = c.tensor(x)
    is_last = c.is_model_output(n)
    if not c.drop_final_softmax:
        raise _Unsupported("softmax/log_softmax is not supported (drop_final_softmax=False)")
    if not is_last:
        raise _Unsupported("softmax/log_softmax is only supported as the model's final op (where it is "
                           "dropped: it does not change the argmax)")
    if len(c.shape_of(x)) != 1 or dim not in (None, 1, -1):
        raise _Unsupported(f"a final softmax must run over the feature axis of a (B, F) tensor (dim={dim!r})")
    c.notes.append(f"dropped the final {_qualname(n.target) if n.op != 'call_module' else n.target} "
                   f"(node {n.name!r}): it does not change the argmax; the graph outputs the logits of "
                   f"{x.name!r}")
    return x


# -- module handlers -------------------------------------------------------------------------------
def _m(c: _Converter, n: fx.Node) -> nn.Module:
    return c.modules[n.target]


def _mod_conv(c, n, args, kwargs):
    m = _m(c, n)
    return _conv(c, n, c.tensor(args[0]), m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups,
                 m.padding_mode)


def _mod_linear(c, n, args, kwargs):
    m = _m(c, n)
    return _linear(c, n, c.tensor(args[0]), m.weight, m.bias)


def _mod_bn(c, n, args, kwargs):
    m = _m(c, n)
    x = c.tensor(args[0])
    return _batchnorm(c, n, x, m.running_mean, m.running_var, m.weight, m.bias, m.eps)


def _mod_relu(c, n, args, kwargs):
    return _relu(c, n, args[0], bool(_m(c, n).inplace))


def _mod_maxpool(c, n, args, kwargs):
    m = _m(c, n)
    return _maxpool(c, n, args[0], m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)


def _mod_avgpool(c, n, args, kwargs):
    m = _m(c, n)
    return _avgpool(c, n, args[0], m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
                    m.divisor_override)


def _mod_adaptive_avg(c, n, args, kwargs):
    return _adaptive(c, n, args[0], _m(c, n).output_size, "avg")


def _mod_adaptive_max(c, n, args, kwargs):
    m = _m(c, n)
    if m.return_indices:
        raise _Unsupported("adaptive max-pooling with return_indices=True is not supported")
    return _adaptive(c, n, args[0], m.output_size, "max")


def _mod_identity(c, n, args, kwargs):
    return _identity(c, n, args[0])


def _mod_reshape(c, n, args, kwargs):
    return _reshape(c, n, args[0])


def _mod_softmax(c, n, args, kwargs):
    return _final_softmax(c, n, args[0], _m(c, n).dim)


_MODULE_HANDLERS: tuple[tuple[type, Callable], ...] = (
    (nn.Conv2d, _mod_conv),
    (nn.Linear, _mod_linear),
    (nn.BatchNorm2d, _mod_bn),
    (nn.BatchNorm1d, _mod_bn),
    (nn.ReLU, _mod_relu),
    (nn.MaxPool2d, _mod_maxpool),
    (nn.AvgPool2d, _mod_avgpool),
    (nn.AdaptiveAvgPool2d, _mod_adaptive_avg),
    (nn.AdaptiveMaxPool2d, _mod_adaptive_max),
    (nn.Flatten, _mod_reshape),
    (nn.Identity, _mod_identity),
    (nn.Dropout, _mod_identity),
    (nn.Dropout1d, _mod_identity),
    (nn.Dropout2d, _mod_identity),
    (nn.Dropout3d, _mod_identity),
    (nn.AlphaDropout, _mod_identity),
    (nn.FeatureAlphaDropout, _mod_identity),
    (nn.Softmax, _mod_softmax),
    (nn.LogSoftmax, _mod_softmax),
)


# -- function / method handlers --------------------------------------------------------------------
def _fn_conv2d(c, n, args, kwargs):
    s = lambda i, name, d=None: _static_arg(args, kwargs, i, name, d)  # noqa: E731
    return _conv(c, n, c.tensor(args[0]), s(1, "weight"), s(2, "bias"), s(3, "stride", 1), s(4, "padding", 0),
                 s(5, "dilation", 1), s(6, "groups", 1))


def _fn_linear(c, n, args, kwargs):
    return _linear(c, n, c.tensor(args[0]), _static_arg(args, kwargs, 1, "weight"),
                   _static_arg(args, kwargs, 2, "bias"))


def _fn_batch_norm(c, n, args, kwargs):
    s = lambda i, name, d=None: _static_arg(args, kwargs, i, name, d)  # noqa: E731
    if s(5, "training", False):
        raise _Unsupported("F.batch_norm with training=True uses batch statistics and cannot be folded")
    return _batchnorm(c, n, c.tensor(args[0]), s(1, "running_mean"), s(2, "running_var"), s(3, "weight"),
                      s(4, "bias"), s(7, "eps", 1e-5))


def _fn_relu(c, n, args, kwargs):
    return _relu(c, n, args[0], bool(_static_arg(args, kwargs, 1, "inplace", False)))


def _fn_relu_(c, n, args, kwargs):
    return _relu(c, n, args[0], True)


def _clamp(c, n, args, kwargs, inplace):
    lo = _static_arg(args, kwargs, 1, "min")
    hi = _static_arg(args, kwargs, 2, "max")
    if not isinstance(lo, (int, float)) or isinstance(lo, bool) or lo != 0 or hi is not None:
        raise _Unsupported(f"clamp(min={lo!r}, max={hi!r}) is not supported (only clamp(min=0), i.e. ReLU)")
    return _relu(c, n, args[0], inplace)


def _fn_clamp(c, n, args, kwargs):
    return _clamp(c, n, args, kwargs, False)


def _fn_clamp_(c, n, args, kwargs):
    return _clamp(c, n, args, kwargs, True)


def _fn_max_pool2d(c, n, args, kwargs):
    s = lambda i, name, d=None: _static_arg(args, kwargs, i, name, d)  # noqa: E731
    return _maxpool(c, n, args[0], s(1, "kernel_size"), s(2, "stride"), s(3, "padding", 0), s(4, "dilation", 1),
                    s(5, "ceil_mode", False), s(6, "return_indices", False))


def _fn_avg_pool2d(c, n, args, kwargs):
    s = lambda i, name, d=None: _static_arg(args, kwargs, i, name, d)  # noqa: E731
    return _avgpool(c, n, args[0], s(1, "kernel_size"), s(2, "stride"), s(3, "padding", 0), s(4, "ceil_mode", False),
                    s(5, "count_include_pad", True), s(6, "divisor_override"))


def _fn_adaptive_avg(c, n, args, kwargs):
    return _adaptive(c, n, args[0], _static_arg(args, kwargs, 1, "output_size"), "avg")


def _fn_adaptive_max(c, n, args, kwargs):
    if _static_arg(args, kwargs, 2, "return_indices", False):
        raise _Unsupported("adaptive max-pooling with return_indices=True is not supported")
    return _adaptive(c, n, args[0], _static_arg(args, kwargs, 1, "output_size"), "max")


def _fn_reshape(c, n, args, kwargs):
    return _reshape(c, n, args[0])


def _fn_mean(c, n, args, kwargs):
    if _static_arg(args, kwargs, 3, "dtype") is not None:
        raise _Unsupported("mean with a dtype is not supported")
    return _global_mean(c, n, args[0], _static_arg(args, kwargs, 1, "dim"),
                        bool(_static_arg(args, kwargs, 2, "keepdim", False)))


def _fn_add(c, n, args, kwargs):
    if _arg(args, kwargs, 3, "out") is not None:
        raise _Unsupported("torch.add with out= is not supported")
    return _add(c, n, args[0], _arg(args, kwargs, 1, "other"), _static_arg(args, kwargs, 2, "alpha", 1))


def _fn_iadd(c, n, args, kwargs):
    return _add(c, n, args[0], args[1], 1, inplace=True)


def _method_add_(c, n, args, kwargs):
    return _add(c, n, args[0], _arg(args, kwargs, 1, "other"), _static_arg(args, kwargs, 2, "alpha", 1),
                inplace=True)


def _fn_getitem(c, n, args, kwargs):
    return _getitem(c, n, args, kwargs)


def _fn_dropout(c, n, args, kwargs):
    if _static_arg(args, kwargs, 2, "training", True):
        raise _Unsupported("functional dropout with training=True is random at inference; pass "
                           "training=self.training")
    return _identity(c, n, args[0])


def _fn_identity(c, n, args, kwargs):
    return _identity(c, n, args[0])


def _fn_softmax(c, n, args, kwargs):
    return _final_softmax(c, n, args[0], _static_arg(args, kwargs, 1, "dim"))


def _fn_pad(c, n, args, kwargs):
    return _pad(c, n, args, kwargs)


_FUNCTION_HANDLERS: dict[Any, Callable] = {
    F.conv2d: _fn_conv2d, torch.conv2d: _fn_conv2d,
    F.linear: _fn_linear,
    F.batch_norm: _fn_batch_norm,
    F.relu: _fn_relu, torch.relu: _fn_relu, torch.relu_: _fn_relu_, F.relu_: _fn_relu_,
    torch.clamp: _fn_clamp, torch.clamp_min: _fn_clamp, torch.clip: _fn_clamp,
    torch.clamp_: _fn_clamp_, torch.clamp_min_: _fn_clamp_,
    F.max_pool2d: _fn_max_pool2d, torch.max_pool2d: _fn_max_pool2d,
    F.avg_pool2d: _fn_avg_pool2d,
    F.adaptive_avg_pool2d: _fn_adaptive_avg,
    F.adaptive_max_pool2d: _fn_adaptive_max,
    torch.flatten: _fn_reshape, torch.reshape: _fn_reshape, torch.squeeze: _fn_reshape,
    torch.mean: _fn_mean,
    operator.add: _fn_add, torch.add: _fn_add, operator.iadd: _fn_iadd,
    operator.getitem: _fn_getitem,
    F.pad: _fn_pad,
    F.dropout: _fn_dropout, F.dropout1d: _fn_dropout, F.dropout2d: _fn_dropout, F.dropout3d: _fn_dropout,
    F.alpha_dropout: _fn_dropout, F.feature_alpha_dropout: _fn_dropout,
    F.softmax: _fn_softmax, F.log_softmax: _fn_softmax, torch.softmax: _fn_softmax,
    torch.log_softmax: _fn_softmax,
}
if hasattr(torch._C._nn, "pad"):
    _FUNCTION_HANDLERS.setdefault(torch._C._nn.pad, _fn_pad)


_METHOD_HANDLERS: dict[str, Callable] = {
    "relu": _fn_relu, "relu_": _fn_relu_,
    "clamp": _fn_clamp, "clamp_min": _fn_clamp, "clip": _fn_clamp,
    "clamp_": _fn_clamp_, "clamp_min_": _fn_clamp_, "clip_": _fn_clamp_,
    "view": _fn_reshape, "reshape": _fn_reshape, "flatten": _fn_reshape, "squeeze": _fn_reshape,
    "mean": _fn_mean,
    "add": _fn_add, "add_": _method_add_, "__add__": _fn_add, "__iadd__": _method_add_,
    "contiguous": _fn_identity, "clone": _fn_identity, "detach": _fn_identity,
    "softmax": _fn_softmax, "log_softmax": _fn_softmax,
}


# -- ATen ops (torch.export): mapped onto the same handlers ----------------------------------------
_TRAINING_HINT = ("the program was captured from a model in training mode; call model.eval() before "
                  "torch.export.export")


def _aten_convolution(c, n, args, kwargs):
    """convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)."""
    s = lambda i, name, d=None: _static_arg(args, kwargs, i, name, d)  # noqa: E731
    if s(6, "transposed", False):
        raise _Unsupported("transposed convolution is not supported")
    return _conv(c, n, c.tensor(args[0]), s(1, "weight"), s(2, "bias"), s(3, "stride", 1), s(4, "padding", 0),
                 s(5, "dilation", 1), s(8, "groups", 1))


def _mm_weight(w: Any) -> Any:
    """The Linear weight (out, in) of ``x @ w`` (decomposed Linear: ``addmm(b, x, permute(W))``)."""
    return w.t() if isinstance(w, torch.Tensor) and w.dim() == 2 else w


def _aten_addmm(c, n, args, kwargs):
    """addmm(bias, x, W^T, *, beta=1, alpha=1) = a decomposed Linear."""
    beta, alpha = _static_arg(args, kwargs, 3, "beta", 1), _static_arg(args, kwargs, 4, "alpha", 1)
    if beta != 1 or alpha != 1:
        raise _Unsupported(f"addmm with beta={beta!r}, alpha={alpha!r} is not supported (only 1)")
    bias = _static_arg(args, kwargs, 0, "bias")
    if isinstance(bias, torch.Tensor) and bias.dim() == 2 and bias.shape[0] == 1:
        bias = bias[0]
    return _linear(c, n, c.tensor(args[1]), _mm_weight(_static_arg(args, kwargs, 2, "weight")), bias)


def _aten_mm(c, n, args, kwargs):
    """mm(x, W^T) = a decomposed Linear without bias."""
    return _linear(c, n, c.tensor(args[0]), _mm_weight(_static_arg(args, kwargs, 1, "weight")), None)


def _aten_batch_norm(c, n, args, kwargs):
    """batch_norm / native_batch_norm / _native_batch_norm_legit / cudnn_batch_norm:
    (input, weight, bias, running_mean, running_var, training, momentum, eps, ...)."""
    s = lambda i, name, d=None: _static_arg(args, kwargs, i, name, d)  # noqa: E731
    if s(5, "training", False):
        raise _Unsupported(f"BatchNorm in training mode uses batch statistics and cannot be folded: {_TRAINING_HINT}")
    return _batchnorm(c, n, c.tensor(args[0]), s(3, "running_mean"), s(4, "running_var"), s(1, "weight"),
                      s(2, "bias"), s(7, "eps", 1e-5))


def _aten_bn_no_training(c, n, args, kwargs):
    """_native_batch_norm_legit_no_training(input, weight, bias, running_mean, running_var, momentum, eps)."""
    s = lambda i, name, d=None: _static_arg(args, kwargs, i, name, d)  # noqa: E731
    return _batchnorm(c, n, c.tensor(args[0]), s(3, "running_mean"), s(4, "running_var"), s(1, "weight"),
                      s(2, "bias"), s(6, "eps", 1e-5))


def _aten_bn_no_stats(c, n, args, kwargs):
    raise _Unsupported("BatchNorm without running statistics (track_running_stats=False) normalizes with batch "
                       "statistics at inference and cannot be folded")


def _aten_slice(c, n, args, kwargs):
    """slice(x, dim, start, end, step): ``x[:, :, ::a, ::b]`` is exported as one slice per axis."""
    x = c.tensor(args[0])
    s = lambda i, name, d=None: _static_arg(args, kwargs, i, name, d)  # noqa: E731
    dim, start, end, step = s(1, "dim", 0), s(2, "start"), s(3, "end"), s(4, "step", 1)
    full = (c.batch,) + c.shape_of(x)
    if not isinstance(dim, int) or not -len(full) <= dim < len(full):
        raise _Unsupported(f"slice of dim {dim!r} of a tensor with {len(full)} axes")
    dim %= len(full)
    start = None if start in (None, 0) else start
    end = None if end is None or (isinstance(end, int) and end >= full[dim]) else end
    step = None if step in (None, 1) else step
    if start is None and end is None and step is None:
        return x  # the whole axis
    index = (slice(None),) * dim + (slice(start, end, step),)
    return _getitem(c, n, (x, _S(index)), {})


def _aten_constant_pad_nd(c, n, args, kwargs):
    """constant_pad_nd(x, pad, value=0)."""
    return _pad(c, n, (args[0], _arg(args, kwargs, 1, "pad"), "constant", _arg(args, kwargs, 2, "value", 0)), {})


def _aten_dropout(c, n, args, kwargs):
    """dropout(input, p, train) and its variants."""
    if _static_arg(args, kwargs, 2, "train", False):
        raise _Unsupported(f"dropout in training mode is random at inference: {_TRAINING_HINT}")
    return _identity(c, n, args[0])


def _aten_ignore(c, n, args, kwargs):
    """Runtime assertions (``_assert_tensor_metadata``...): no value."""
    return _S(None)


def _multi(handler: Callable, n_outputs: int, what: str) -> Callable:
    """Handler of an ATen op with several results, of which only the first (computed by ``handler``) is
    supported; ``getitem`` of another one is reported."""

    def h(c, n, args, kwargs):
        first = handler(c, n, args, kwargs)
        return (first,) + tuple(_NoOutput(f"result {i} of {n.target} ({what}) is not supported")
                                for i in range(1, n_outputs))

    h.__name__ = f"_multi_{getattr(handler, '__name__', 'handler')}"
    return h


def _aten_ops(*names: str) -> list[_OpOverload]:
    """The ATen overloads ``packet.overload`` (default ``.default``) that this torch has."""
    out = []
    for name in names:
        packet_name, _, overload = name.partition(".")
        try:
            out.append(getattr(getattr(torch.ops.aten, packet_name), overload or "default"))
        except (AttributeError, RuntimeError):  # pragma: no cover - op absent from this torch version
            pass
    return out


_BN_STATS = "BatchNorm batch statistics"
_ATEN_HANDLERS: dict[Any, Callable] = {}
for _names, _handler in (
    (("conv2d", "conv2d.padding"), _fn_conv2d),
    (("convolution",), _aten_convolution),
    (("linear",), _fn_linear),
    (("addmm",), _aten_addmm),
    (("mm",), _aten_mm),
    (("batch_norm",), _aten_batch_norm),
    (("native_batch_norm", "_native_batch_norm_legit"), _multi(_aten_batch_norm, 3, _BN_STATS)),
    (("_native_batch_norm_legit_functional",), _multi(_aten_batch_norm, 5, _BN_STATS)),
    (("cudnn_batch_norm",), _multi(_aten_batch_norm, 4, _BN_STATS)),
    (("_native_batch_norm_legit_no_training",), _multi(_aten_bn_no_training, 3, _BN_STATS)),
    (("_native_batch_norm_legit.no_stats",), _aten_bn_no_stats),
    (("relu",), _fn_relu),
    (("relu_",), _fn_relu_),
    (("clamp", "clamp_min", "clip"), _fn_clamp),
    (("clamp_", "clamp_min_", "clip_"), _fn_clamp_),
    (("max_pool2d",), _fn_max_pool2d),
    (("max_pool2d_with_indices",), _multi(_fn_max_pool2d, 2, "max-pooling indices")),
    (("avg_pool2d",), _fn_avg_pool2d),
    (("adaptive_avg_pool2d", "_adaptive_avg_pool2d"), _fn_adaptive_avg),
    (("adaptive_max_pool2d",), _multi(_fn_adaptive_max, 2, "max-pooling indices")),
    (("mean.dim", "mean"), _fn_mean),
    (("add.Tensor", "add.Scalar"), _fn_add),
    (("add_.Tensor", "add_.Scalar"), _method_add_),
    (("view", "reshape", "_unsafe_view", "view_copy", "flatten.using_ints", "squeeze", "squeeze.dim",
      "squeeze.dims"), _fn_reshape),
    (("slice.Tensor",), _aten_slice),
    (("constant_pad_nd",), _aten_constant_pad_nd),
    (("pad",), _fn_pad),
    (("dropout", "dropout_", "feature_dropout", "feature_dropout_", "alpha_dropout", "alpha_dropout_",
      "feature_alpha_dropout", "feature_alpha_dropout_"), _aten_dropout),
    (("native_dropout",), _multi(_aten_dropout, 2, "dropout mask")),
    (("clone", "alias", "detach", "detach_", "contiguous", "lift_fresh_copy"), _fn_identity),
    (("_assert_tensor_metadata", "_assert_async", "_assert_async.msg", "_assert_scalar"), _aten_ignore),
    (("log_softmax.int", "softmax.int", "_log_softmax", "_softmax"), _fn_softmax),
):
    for _op in _aten_ops(*_names):
        _ATEN_HANDLERS[_op] = _handler
_FUNCTION_HANDLERS.update(_ATEN_HANDLERS)
del _names, _handler, _op

_ATEN_SHAPE_QUERIES = frozenset(_aten_ops("sym_size.int", "sym_size", "sym_numel", "sym_stride.int", "sym_stride",
                                          "sym_storage_offset", "size.int", "size", "dim", "numel"))
_LEAF_MODULE_TYPES = frozenset(f"{cls.__module__}.{cls.__qualname__}" for cls, _ in _MODULE_HANDLERS)
_NONWORD = re.compile(r"\W")
# ATen spellings of ops whose fx-path node is named after the torch function
_ATEN_NAME_ALIASES = {"max_pool2d_with_indices": "max_pool2d", "constant_pad_nd": "pad",
                      "_adaptive_avg_pool2d": "adaptive_avg_pool2d", "_log_softmax": "log_softmax",
                      "_softmax": "softmax"}


def _owner_module(n: fx.Node) -> tuple[str, str] | None:
    """(module path, type name) of the innermost module that issued ATen node ``n`` (torch.export's
    ``nn_module_stack``), if recorded."""
    stack = n.meta.get("nn_module_stack")
    if not stack:
        return None
    path, typ = list(stack.values())[-1]
    if not isinstance(typ, str):
        typ = f"{getattr(typ, '__module__', '')}.{getattr(typ, '__qualname__', typ)}"
    return str(path), typ


def _aten_base_name(n: fx.Node, modules: Mapping[str, nn.Module]) -> str:
    """IR name of ATen node ``n``, chosen like the fx path's: the module path for an op of a supported
    layer module (``layer1.0.conv1`` → ``layer1_0_conv1``), else the node name, with the trailing ``_`` of an
    in-place op dropped (``add_``/``add__1`` → ``add``/``add_1``)."""
    if n.op != "call_function" or not isinstance(n.target, _OpOverload):
        return n.name
    owner = _owner_module(n)
    if owner is not None and owner[0] and owner[1] in _LEAF_MODULE_TYPES and n.target in _ATEN_HANDLERS:
        name = _NONWORD.sub("_", owner[0])
        return f"_{name}" if name[0].isdigit() else name  # as fx names call_module nodes: "0" -> "_0"
    op = n.target._schema.name.split("::")[-1]
    if not n.name.startswith(op):
        return n.name
    if op in _ATEN_NAME_ALIASES:
        return _ATEN_NAME_ALIASES[op] + n.name[len(op):]
    if op.endswith("_") and not op.endswith("__"):
        return op[:-1] + n.name[len(op):]
    return n.name
