"""BSNN-R: our reconstruction of BSNN (Li, Zeng, Zhao, arXiv 2105.12917), ALGORITHMS §6.4–6.6 **[R]/[U]**.

Verified about BSNN (§6.2): bistable neurons deliver information "more accurately to the next layer after one
cycle" (phase coding, SIN from phase lead/lag), and synchronous neurons (SN) on ResNet shortcuts fix the
"incomplete information" of the fast shortcut path. The equations below are the spec's reconstruction, **not**
the authors' method.

Phase coding with K phases per cycle: c = ⌊t/K⌋ (cycle), k = t mod K (phase), ω(k) = 2^−(k+1). A stage at depth
d ≥ 1 (d = 1 + the largest depth among the spiking stages feeding it; the input has depth 0) is, in cycle c,

    INT   if c ≥ d−1 and (c − d + 1) even:   integrates its input, never fires
    FIRE  if c ≥ d   and (c − d) even:       ignores its input, fires the binary expansion of its charge
    IDLE  otherwise (c < d − 1)

Float model (raw units, §6.4): INT: x = Σ W·o + b/K (the image current (W·img + b)/K for a stage fed by the
input), m = v + x, s = 0;  FIRE: m = v (input gated off), θ = λ·ω(k), s = [m ≥ θ] (Γ > 1: min(Γ, ⌊m/θ⌋), the
burst extends a cycle's range to Γ·λ(1 − 2^−K)), v = m − s·θ, o = s·θ.  A FIRE cycle after charge M emits
Q(M) = λ·⌊clip(M/λ, 0, 1 − 2^−K)·2^K⌋/2^K (Γ = 1) and keeps v = M − Q(M) (no reset between cycles).
The 1/K of the bias and of the image terms is applied by the converter (:meth:`BsnnR.bias_gain`,
:meth:`BsnnR.input_gain`; exact exponent shifts for K a power of two).
Fixed model (normalized integers, F = frac_bits ≥ K): θ̂ = 2^F >> (k+1) (exact), reset and payload θ̂.
The classifier readout adds its bias b/K (:meth:`BsnnR.readout_bias_gain`) only on the FIRE steps of the deepest
stage (``msat_lava.dynamics.models.bsnn_r``), so every delivered cycle adds W·a + b once.

Synchronous neurons (§6.5): :meth:`BsnnR.prepare_graph` inserts, on every branch of an ``add`` whose depth is
below the other branch's, the missing number of ``relu`` nodes right after the branch's source spiking stage
(before a subsample / projection conv: the SN sees the block-input spikes). In the ANN they are identities (their
input is a ReLU output), their λ is the source's; in the SNN each is a bistable stage, a K-step delay line.
Max pooling stays LIPooling (§6.6 allows it as the approximate alternative) at its input's depth.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from netx_export.neuron import NeuronSpecError, _check_keys, _integer
from netx_export.neurons import NeuronModel, Param, register

__all__ = ["BsnnParams", "BsnnR", "stage_depths", "insert_synchronous_neurons", "K_DEFAULT", "SN_TAG"]

K_DEFAULT = 8
DEPTH_MAX = 4096
#: name of the j-th synchronous neuron after source node ``s``: f"{s}{SN_TAG}{j}"
SN_TAG = ".sn"


@dataclass(frozen=True)
class BsnnParams:
    """BSNN-R parameters: ``k`` K phases per cycle, 1 ≤ K ≤ frac_bits (default 8, **[U]**); ``depth`` d of the
    stage, 1 ≤ d ≤ 4096, derived by the converter from the graph (:func:`stage_depths`)."""

    k: int = K_DEFAULT
    depth: int = 1

    def __post_init__(self):
        k = _integer(self.k, "k")
        if not 1 <= k <= 16:
            raise NeuronSpecError(f"must be in [1, 16], got {k}", field="k")
        object.__setattr__(self, "k", k)
        depth = _integer(self.depth, "depth")
        if not 1 <= depth <= DEPTH_MAX:
            raise NeuronSpecError(f"must be in [1, {DEPTH_MAX}], got {depth}", field="depth")
        object.__setattr__(self, "depth", depth)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BsnnParams":
        names = tuple(f.name for f in fields(cls))
        _check_keys(data, names, names, "params")
        return cls(**{k: data[k] for k in names})


def stage_depths(graph: Any) -> dict[str, int]:
    """Bistable depth of every node: input 0; relu 1 + its input's; every other node the max of its inputs'."""
    depth: dict[str, int] = {}
    for node in graph:
        base = max((depth[i] for i in node.inputs), default=0)
        depth[node.name] = base + 1 if node.kind == "relu" else base
    return depth


def _spiking_source(graph: Any, name: str) -> tuple[str, str] | None:
    """Walk back from ``name`` through single-input non-spiking nodes to the first relu / maxpool / input:
    (source, the node reading it on this branch), None when the branch merges another one first."""
    node = graph[name]
    child = None
    while node.kind not in ("relu", "maxpool", "input"):
        if len(node.inputs) != 1:
            return None
        child, node = node, graph[node.inputs[0]]
    return node.name, (child.name if child is not None else None)


def insert_synchronous_neurons(graph: Any) -> tuple[Any, dict[str, str]]:
    """§6.5: the graph with SN relus on every shallower branch of an ``add``, and {SN name: its source relu}
    (the λ of each SN is its source's). A graph without such branches comes back unchanged."""
    from netx_export.ir import Graph, Relu

    nodes = list(graph.nodes)
    aliases: dict[str, str] = {}
    changed = True
    while changed:  # one add at a time, depths recomputed after each rewrite
        changed = False
        g = Graph(tuple(nodes))
        depth = stage_depths(g)
        for node in g:
            if node.kind != "add":
                continue
            want = max(depth[i] for i in node.inputs)
            for inp in node.inputs:
                gap = want - depth[inp]
                if gap <= 0:
                    continue
                found = _spiking_source(g, inp)
                if found is None or g[found[0]].kind == "input":
                    raise NeuronSpecError(f"add {node.name!r}: branch {inp!r} is {gap} stage(s) shallower and its "
                                          "source is not a spiking stage: no synchronous neuron can be placed",
                                          field="graph")
                src, reader = found
                relu_src = src if g[src].kind == "relu" else g[src].inputs[0]
                prev = src
                new = []
                for j in range(1, gap + 1):
                    name = f"{src}{SN_TAG}{j}"
                    while name in g or name in aliases:
                        name += "_"
                    new.append(Relu(name, (prev,)))
                    aliases[name] = aliases.get(relu_src, relu_src)
                    prev = name
                reader = reader or node.name
                out = []
                for n in nodes:
                    if n.name == reader:
                        ins = tuple(prev if (i == src and (n.name != node.name or i == inp)) else i
                                    for i in n.inputs)
                        n = replace(n, inputs=ins)
                    out.append(n)
                    if n.name == src:
                        out.extend(new)
                nodes = out
                changed = True
                break
            if changed:
                break
    return (Graph(tuple(nodes)) if aliases else graph), aliases


@register
class BsnnR(NeuronModel):
    name = "bsnn-r"
    order = 20
    summary = ("BSNN-R (our reconstruction of BSNN, §6.4-6.5): bistable phase-coded stages (INT one cycle, FIRE "
               "the K-bit code the next), synchronous neurons on residual shortcuts")
    since = (1, 4)
    params_type = BsnnParams
    params = (Param("k", int, K_DEFAULT, "phases per cycle K (1 ≤ K ≤ frac_bits)"),
              Param("depth", int, 1, "stage depth (derived from the graph by the converter)"))
    layer_fields = ("depth",)
    reconstruction = True

    def check(self, spec) -> None:
        if spec.v_init != 0.0:
            raise NeuronSpecError("bsnn-r starts empty (a start of v_init·λ would enter the first cycle's code as "
                                  f"charge, not as a rounding offset), got {spec.v_init!r}", field="v_init")
        if spec.params.k > spec.frac_bits:
            raise NeuronSpecError(f"K = {spec.params.k} phases need frac_bits >= K (got {spec.frac_bits})",
                                  field="params/k")

    def layer_params(self, params: Any, graph: Any, name: str) -> Any:
        return replace(params, depth=stage_depths(graph)[name])

    def bias_gain(self, spec) -> float:
        return 1.0 / spec.params.k

    def input_gain(self, spec) -> float:
        return 1.0 / spec.params.k

    def readout_bias_gain(self, spec) -> float:
        return 1.0 / spec.params.k

    def prepare_graph(self, graph: Any) -> tuple[Any, dict[str, str]]:
        return insert_synchronous_neurons(graph)
