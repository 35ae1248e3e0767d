"""Exchange networks through NIR (the Neuromorphic Intermediate Representation, https://neuroir.org, ``nir`` 1.x).

Export — :func:`to_nir` / :func:`write_nir`: a converted network whose neurons NIR can express (constant
threshold, one spike per step, no gate, no initial charge) becomes a NIR graph, node for node:

=====================  ================================================================================
ours (float graph)     NIR
=====================  ================================================================================
Input (C, H, W)        Input
Conv                   Conv2d (weight, bias, stride, padding; dilation 1; a grouped conv as its dense,
                       block-diagonal weight, since nir 1.0's type checks take C_in from the weight alone)
Linear                 Affine
Relu (spiking layer)   IF(r = 1, v_threshold = θ = k·λ) → Scale(θ): the IF emits 0/1, the Scale gives the
                       spike its value θ (the payload of our model), so the weights stay the ANN's
AvgPool (k, s, p)      SumPool2d(k, s, p) → Scale(1/(k_h·k_w))  (zero padding counted, like ours)
Flatten                Flatten(start_dim 0, end_dim −1 over the per-sample shape)
Add                    several edges into one node: NIR sums a node's incoming edges
Subsample (step)       Conv2d 1×1, identity weight, stride = step (the same selection)
ChanPad (before/after) Conv2d 1×1 whose weight is the identity placed at channels before … before + C − 1
readout (output node)  its linear op → I(r = 1): the readout accumulates its input every step
=====================  ================================================================================

What NIR cannot say is stated, not dropped. NIR's IF is ``v > v_thr`` with a reset *to* ``v_reset``; ours fires on
``m ≥ θ`` and subtracts θ (reset by subtraction, the residual carries over). Every IF node therefore carries
``metadata = {"msat_lava": {"reset": "subtract", "fire": ">=", "dt": 1}}`` and the graph's metadata says the
same: a consumer that ignores metadata runs a hard-reset, strict-threshold IF net (a different SNN, with the same
ANN). Refused with the layer named: adaptive thresholds (dtt/det/msat and every other non-const model), burst
(Γ > 1), the spike-confidence gate, a non-zero initial charge v_init (``+h``), and max pooling (our LIPool has no
NIR node). Fixed-point widths are not NIR's business: the export is of the float network the file stores.

Import — :func:`graph_from_nir` / :func:`read_nir`: a NIR graph of an ANN-equivalent network becomes our float
graph (then ``convert`` calibrates and quantizes it like a traced PyTorch model). An IF(r, θ) node stands for a
ReLU whose rate is r·ReLU(x)/θ, so it becomes Relu followed by a gain r/θ; gains (and Scale nodes) are folded
forward through pooling / flatten / subsample into the next Conv/Affine's input weights, exactly (a positive gain
commutes with ReLU, every op in between is linear). A 1×1 Conv2d that only copies channels (identity block, no
bias) comes back as Subsample / ChanPad, so our own exports round-trip to the same graph kinds. Accepted: Input, Output, Affine, Linear, Conv2d (dilation 1),
IF, Scale, SumPool2d, AvgPool2d, Flatten, and I/LI/IF on the output (the readout). Anything else is refused by
node name and type, so is a gain that cannot be folded (e.g. into a residual sum, or onto the output).

Untrusted files: :func:`read_nir` first walks the HDF5 file's metadata with the network-file scanner
(``netx_export.hdf5``: no external/soft links, virtual datasets, external storage, foreign filters, sizes the
file cannot hold), then lets ``nir.read`` parse it; every node's arrays are checked (finite, shapes consistent)
while building our graph, which validates itself (:class:`~netx_export.ir.Graph`).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from netx_export import ir
from netx_export.errors import FormatError, GraphError, NetxExportError

__all__ = ["to_nir", "write_nir", "graph_from_nir", "read_nir", "NirError", "IF_METADATA"]

#: what our IF nodes mean beyond NIR's own IF (see the module docstring)
IF_METADATA = {"reset": "subtract", "fire": ">=", "dt": 1}


class NirError(NetxExportError, ValueError):
    """A network that NIR cannot express, or a NIR graph we cannot import; names the node and what breaks."""


def _nir():
    try:
        import nir
    except ImportError as exc:  # pragma: no cover - nir is a pinned dependency
        raise NirError("the 'nir' package is not installed (pip install nir)") from exc
    return nir


# ------------------------------------------------------------------------------------------------ export

def _exportable(net) -> dict[str, float]:
    """θ per relu node, or NirError naming the first layer NIR cannot express."""
    thetas = {}
    for name, spec in net.neurons.items():
        if spec.mode != "const":
            raise NirError(f"layer {name!r}: mode {spec.mode!r} has an adaptive threshold, which NIR cannot express "
                           f"(only constant-threshold IF layers; convert with --method const)")
        if int(spec.gamma) != 1:
            raise NirError(f"layer {name!r}: burst spikes (Γ = {spec.gamma}) are graded payloads, which NIR's IF "
                           "cannot express")
        if spec.sc_enabled:
            raise NirError(f"layer {name!r}: the spike-confidence gate has no NIR equivalent")
        if spec.v_init:
            raise NirError(f"layer {name!r}: an initial membrane charge (v_init = {spec.v_init}) has no NIR "
                           "equivalent")
        thetas[name] = float(spec.k_const * spec.lam)
    for node in net.graph:
        if node.kind == "maxpool":
            raise NirError(f"node {node.name!r}: max pooling (LIPooling in the SNN) has no NIR node")
    return thetas


def _dense_groups(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv's weight (C_out, C_in/g, kh, kw) as the equivalent dense (C_out, C_in, kh, kw), zero off
    the group blocks: nir 1.0's type inference takes C_in from the weight alone, so grouped Conv2d nodes fail its
    checks; the dense form computes the same sums."""
    if groups == 1:
        return w
    c_out, c_in_g = w.shape[:2]
    dense = np.zeros((c_out, c_in_g * groups) + w.shape[2:])
    per = c_out // groups
    for gi in range(groups):
        dense[gi * per:(gi + 1) * per, gi * c_in_g:(gi + 1) * c_in_g] = w[gi * per:(gi + 1) * per]
    return dense


def to_nir(net) -> Any:
    """The NIR graph (``nir.NIRGraph``) of a converted network (module docstring); NirError if inexpressible."""
    nir = _nir()
    thetas = _exportable(net)
    graph = net.graph
    shapes = graph.shapes()
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    head: dict[str, str] = {}  # our node → NIR node whose output is our node's output
    out_name = graph.output.name if hasattr(graph, "output") else graph.nodes[-1].name

    def add(name: str, node: Any) -> str:
        if name in nodes:
            raise NirError(f"node name {name!r} is used twice")
        nodes[name] = node
        return name

    def sources(node) -> list[str]:
        return [head[s] for s in node.inputs]

    for node in graph:
        k, name = node.kind, node.name
        if k == "input":
            head[name] = add(name, nir.Input(input_type=np.array(shapes[name])))
            continue
        in_shape = shapes[node.inputs[0]]
        if k == "conv":
            w = _dense_groups(np.asarray(node.weight, dtype=np.float64), node.groups)
            b = np.zeros(w.shape[0]) if node.bias is None else np.asarray(node.bias, dtype=np.float64)
            first = add(name, nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=w, stride=node.stride,
                                         padding=node.padding, dilation=(1, 1), groups=1, bias=b))
            last = first
        elif k == "linear":
            w = np.asarray(node.weight, dtype=np.float64)
            b = np.zeros(w.shape[0]) if node.bias is None else np.asarray(node.bias, dtype=np.float64)
            first = last = add(name, nir.Affine(weight=w, bias=b))
        elif k == "relu":
            theta = thetas[name]
            shape = shapes[name]
            first = add(name, nir.IF(r=np.ones(shape), v_threshold=np.full(shape, theta),
                                     v_reset=np.zeros(shape), metadata={"msat_lava": dict(IF_METADATA)}))
            last = add(f"{name}.payload", nir.Scale(scale=np.full(shape, theta)))
            edges.append((first, last))
        elif k == "avgpool":
            kh, kw = node.kernel
            first = add(name, nir.SumPool2d(kernel_size=np.array(node.kernel), stride=np.array(node.stride),
                                            padding=np.array(node.padding)))
            last = add(f"{name}.mean", nir.Scale(scale=np.full(shapes[name], 1.0 / (kh * kw))))
            edges.append((first, last))
        elif k == "flatten":
            first = last = add(name, nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0,
                                                 end_dim=-1))
        elif k == "add":
            first = last = add(name, nir.Scale(scale=np.ones(shapes[name])))  # NIR sums the incoming edges
        elif k == "subsample":
            c = in_shape[0]
            first = last = add(name, nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=np.eye(c)[:, :, None, None],
                                                stride=tuple(node.step), padding=(0, 0), dilation=(1, 1), groups=1,
                                                bias=np.zeros(c)))
        elif k == "chanpad":
            c = in_shape[0]
            c_out = c + node.before + node.after
            w = np.zeros((c_out, c, 1, 1))
            w[np.arange(c) + node.before, np.arange(c), 0, 0] = 1.0
            first = last = add(name, nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=w, stride=(1, 1),
                                                padding=(0, 0), dilation=(1, 1), groups=1, bias=np.zeros(c_out)))
        else:  # pragma: no cover - the graph's kinds are closed
            raise NirError(f"node {name!r}: kind {k!r} has no NIR mapping")
        for src in sources(node):
            edges.append((src, first))
        head[name] = last
    out_shape = shapes[out_name]
    readout = add(f"{out_name}.readout", nir.I(r=np.ones(out_shape)))
    edges.append((head[out_name], readout))
    add("output", nir.Output(output_type=np.array(out_shape)))
    edges.append((readout, "output"))
    meta = {"msat_lava": {"neuron": "IF with reset by subtraction, fires on m >= v_threshold (IF nodes' metadata)",
                          "time": "discrete, dt = 1; the Input is a constant current every step",
                          "readout": "I node: the output layer's input accumulated over the steps",
                          "units": "raw ANN units (weights and biases are the ANN's, spikes carry theta)"}}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def write_nir(net, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write :func:`to_nir` of ``net`` to ``path`` (HDF5, ``nir.write``) atomically."""
    from netx_export.fileio import atomic_target

    graph = to_nir(net)
    nir = _nir()
    with atomic_target(path, overwrite=overwrite) as tmp:
        nir.write(tmp, graph)


# ------------------------------------------------------------------------------------------------ import

def _arr(node_name: str, field: str, value: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise NirError(f"node {node_name!r}: {field} is not numeric ({exc})") from None
    if not np.all(np.isfinite(a)):
        raise NirError(f"node {node_name!r}: {field} contains NaN or infinity")
    if shape is not None and a.shape != tuple(shape):
        raise NirError(f"node {node_name!r}: {field} has shape {a.shape}, expected {tuple(shape)}")
    return a


def _pair(node_name: str, field: str, value: Any) -> tuple[int, int]:
    a = np.asarray(value).reshape(-1)
    if a.size == 1:
        a = np.repeat(a, 2)
    if a.size != 2 or not np.all(np.equal(np.mod(a, 1), 0)):
        raise NirError(f"node {node_name!r}: {field} must be an int or a pair of ints, got {value!r}")
    return int(a[0]), int(a[1])


def _gain_per_channel(node_name: str, gain: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A gain over a (C, H, W) or (F,) tensor as one factor per channel (C,) / feature (F,), or NirError."""
    g = np.broadcast_to(gain, shape)
    if len(shape) == 3:
        per = g.reshape(shape[0], -1)
        if not np.all(per == per[:, :1]):
            raise NirError(f"node {node_name!r}: a gain that varies within a channel cannot be folded into a conv")
        return per[:, 0].copy()
    return np.asarray(g, dtype=np.float64).reshape(-1).copy()


def _selection(w: np.ndarray, b: np.ndarray, groups: int, padding: tuple[int, int]) -> tuple[int, int] | None:
    """(before, after) when a Conv2d only copies its C input channels to outputs before … before + C − 1 (1×1
    kernel, identity block, zeros elsewhere, no bias, no padding), else None."""
    if groups != 1 or w.shape[2:] != (1, 1) or padding != (0, 0) or np.any(b != 0):
        return None
    c_out, c_in = w.shape[:2]
    m = w[:, :, 0, 0]
    for before in range(c_out - c_in + 1):
        want = np.zeros((c_out, c_in))
        want[before:before + c_in] = np.eye(c_in)
        if np.array_equal(m, want):
            return before, c_out - c_in - before
    return None


def graph_from_nir(g: Any) -> ir.Graph:
    """Our float graph of a NIR graph of an ANN-equivalent network (module docstring); NirError if not."""
    nir = _nir()
    nodes = dict(g.nodes)
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    succs: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in g.edges:
        if a not in nodes or b not in nodes:
            raise NirError(f"edge ({a!r}, {b!r}) names a node that does not exist")
        preds[b].append(a)
        succs[a].append(b)
    # topological order (Kahn), refusing cycles (recurrence is not an ANN)
    order, indeg = [], {n: len(p) for n, p in preds.items()}
    ready = [n for n in nodes if indeg[n] == 0]
    while ready:
        n = ready.pop(0)
        order.append(n)
        for s in succs[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    if len(order) != len(nodes):
        raise NirError("the graph has a cycle (recurrent NIR graphs are not ANN-equivalent)")
    outputs = [n for n in order if isinstance(nodes[n], nir.Output)]
    if len(outputs) != 1:
        raise NirError(f"expected one Output node, found {len(outputs)}")

    out: list[ir.Node] = []
    shape_of: dict[str, tuple[int, ...]] = {}
    # each NIR node maps to (our node name or None, pending gain array or None)
    value: dict[str, tuple[str | None, np.ndarray | None]] = {}

    def emit(node: ir.Node) -> str:
        out.append(node)
        shape_of[node.name] = ir.Graph(tuple(out_for_shapes(node))).shapes()[node.name]
        return node.name

    def out_for_shapes(last: ir.Node) -> list[ir.Node]:
        need, stack = set(), [last.name]
        by_name = {n.name: n for n in out}
        while stack:
            n = stack.pop()
            if n in need:
                continue
            need.add(n)
            stack.extend(by_name[n].inputs)
        return [n for n in out if n.name in need]

    def source(name: str) -> tuple[str, np.ndarray | None]:
        """The single input of NIR node ``name``: (our node, pending gain); several edges are summed (Add)."""
        ps = preds[name]
        if not ps:
            raise NirError(f"node {name!r} has no input")
        vals = [value[p] for p in ps]
        if any(v[0] is None for v in vals):
            raise NirError(f"node {name!r}: its input comes from the Output")
        if len(vals) == 1:
            return vals[0]  # type: ignore[return-value]
        if any(v[1] is not None and not np.all(v[1] == 1.0) for v in vals):
            raise NirError(f"node {name!r}: a gain on one input of a sum cannot be folded")
        return emit(ir.Add(name=f"{name}.sum", inputs=tuple(v[0] for v in vals))), None  # type: ignore[misc]

    readout_seen = False
    for name in order:
        node = nodes[name]
        if isinstance(node, nir.Input):
            if preds[name]:
                raise NirError(f"node {name!r}: an Input with incoming edges")
            shape = tuple(int(v) for v in np.asarray(node.input_type["input"]).reshape(-1))
            value[name] = (emit(ir.Input(name=name, shape=shape)), None)
            continue
        if isinstance(node, nir.Output):
            value[name] = (None, None)
            src, gain = source(name)
            if gain is not None and not np.all(gain == 1.0):
                raise NirError(f"node {name!r}: a gain on the output cannot be folded")
            if out[-1].name != src:
                raise NirError(f"node {name!r}: the output must be the last operation")
            continue
        src, gain = source(name)
        in_shape = shape_of[src]
        if isinstance(node, (nir.Affine, nir.Linear)):
            w = _arr(name, "weight", node.weight)
            if w.ndim != 2 or len(in_shape) != 1 or w.shape[1] != in_shape[0]:
                raise NirError(f"node {name!r}: weight shape {w.shape} does not fit input shape {in_shape}")
            if gain is not None:
                w = w * _gain_per_channel(name, gain, in_shape)[None, :]
            b = _arr(name, "bias", node.bias, (w.shape[0],)) if isinstance(node, nir.Affine) else None
            value[name] = (emit(ir.Linear(name=name, inputs=(src,), weight=w, bias=b)), None)
        elif isinstance(node, nir.Conv2d):
            w = _arr(name, "weight", node.weight)
            if _pair(name, "dilation", node.dilation) != (1, 1):
                raise NirError(f"node {name!r}: dilated convolutions are not supported")
            if isinstance(node.padding, str):
                raise NirError(f"node {name!r}: padding {node.padding!r}: give explicit integers")
            groups = int(node.groups)
            if w.ndim != 4 or len(in_shape) != 3 or w.shape[1] * groups != in_shape[0]:
                raise NirError(f"node {name!r}: weight shape {w.shape} (groups {groups}) does not fit input shape "
                               f"{in_shape}")
            if gain is not None:
                gc = _gain_per_channel(name, gain, in_shape)
                w = w * gc.reshape(groups, w.shape[1])[np.arange(w.shape[0]) // (w.shape[0] // groups)][:, :, None,
                                                                                                           None]
            b = _arr(name, "bias", node.bias, (w.shape[0],))
            stride = _pair(name, "stride", node.stride)
            sel = _selection(w, b, groups, _pair(name, "padding", node.padding))
            if sel is not None:  # a channel selection (our subsample / chanpad as NIR convs): no weighted op
                before, after = sel
                cur = src
                if stride != (1, 1):
                    cur = emit(ir.Subsample(name=f"{name}.sub" if before or after else name, inputs=(cur,),
                                            step=stride))
                if before or after or cur == src:
                    cur = emit(ir.ChanPad(name=name, inputs=(cur,), before=before, after=after))
                value[name] = (cur, gain)  # a selection moves channels; a per-channel gain moves with them
                if gain is not None:
                    gc = _gain_per_channel(name, gain, in_shape)
                    value[name] = (cur, np.broadcast_to(np.concatenate([np.ones(before), gc, np.ones(after)])
                                                        [:, None, None], shape_of[cur]))
                continue
            value[name] = (emit(ir.Conv(name=name, inputs=(src,), weight=w, bias=b,
                                        stride=_pair(name, "stride", node.stride),
                                        padding=_pair(name, "padding", node.padding), groups=groups)), None)
        elif isinstance(node, nir.IF):
            is_readout = any(isinstance(nodes[s], nir.Output) for s in succs[name])
            if is_readout:  # an output layer of IF neurons: its rates rank like its input (readout = last op)
                readout_seen = True
                value[name] = (src, gain)
                continue
            r = _arr(name, "r", node.r)
            th = _arr(name, "v_threshold", node.v_threshold)
            if np.any(th <= 0) or np.any(r <= 0):
                raise NirError(f"node {name!r}: r and v_threshold must be > 0 for a rate (ReLU) reading")
            if gain is not None and np.any(gain <= 0):
                raise NirError(f"node {name!r}: a non-positive gain before a ReLU cannot be folded")
            relu = emit(ir.Relu(name=name, inputs=(src,)))
            g2 = np.broadcast_to(r / th, shape_of[relu]).astype(np.float64)
            if gain is not None:  # ReLU(g·x) = g·ReLU(x) for g > 0
                g2 = g2 * np.broadcast_to(gain, shape_of[relu])
            value[name] = (relu, None if np.all(g2 == 1.0) else g2)
        elif isinstance(node, nir.Scale):
            s = _arr(name, "scale", node.scale)
            g2 = np.broadcast_to(s, in_shape).astype(np.float64)
            if gain is not None:
                g2 = g2 * np.broadcast_to(gain, in_shape)
            value[name] = (src, None if np.all(g2 == 1.0) else g2)
        elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            if len(in_shape) != 3:
                raise NirError(f"node {name!r}: pooling needs a (C, H, W) input, got {in_shape}")
            kern = _pair(name, "kernel_size", node.kernel_size)
            pool = emit(ir.AvgPool(name=name, inputs=(src,), kernel=kern, stride=_pair(name, "stride", node.stride),
                                   padding=_pair(name, "padding", node.padding)))
            g2 = None if gain is None else np.repeat(_gain_per_channel(name, gain, in_shape), 1)
            if isinstance(node, nir.SumPool2d):  # Σ = k_h·k_w · mean
                g2 = (np.ones(in_shape[0]) if g2 is None else g2) * float(kern[0] * kern[1])
            value[name] = (pool, None if g2 is None else np.broadcast_to(g2[:, None, None], shape_of[pool]))
        elif isinstance(node, nir.Flatten):
            flat = emit(ir.Flatten(name=name, inputs=(src,)))
            g2 = None if gain is None else np.broadcast_to(gain, in_shape).reshape(-1)
            value[name] = (flat, g2)
        elif isinstance(node, (nir.I, nir.LI)) and any(isinstance(nodes[s], nir.Output) for s in succs[name]):
            readout_seen = True
            value[name] = (src, gain)  # the readout integrates its input: the ANN's output is that input
        else:
            raise NirError(f"node {name!r}: NIR node type {type(node).__name__} is not supported for import "
                           "(Input, Output, Affine, Linear, Conv2d, IF, Scale, SumPool2d, AvgPool2d, Flatten; "
                           "I/LI/IF before the Output)")
    del readout_seen
    try:
        return ir.Graph(tuple(out))
    except GraphError as exc:
        raise NirError(f"the imported graph is inconsistent: {exc}") from None


def read_nir(path: str | os.PathLike) -> ir.Graph:
    """:func:`graph_from_nir` of a NIR file, after the HDF5 metadata scan of the network-file reader."""
    from netx_export import hdf5

    spath = os.fspath(path)
    hdf5.read_scanned(spath, lambda r, found: None)  # the metadata scan, before nir reads any data
    nir = _nir()
    try:
        g = nir.read(spath)
    except NirError:
        raise
    except Exception as exc:  # nir's own parser: any failure is a malformed file
        raise FormatError(f"not a NIR graph nir can read ({type(exc).__name__}: {exc})", path=spath) from None
    try:
        return graph_from_nir(g)
    except NirError as exc:
        raise NirError(f"{spath}: {exc}") from None
