"""Partition every layer of a :class:`~msat_lava.loihi2.topology.NetDesc` onto Loihi 2 cores and list every
violation of the :class:`~msat_lava.loihi2.constraints.Loihi2Constraints` (docs/LOIHI2.md §2).

**Tiles.** A layer of shape (C, H, W) (a dense layer (N,) is (N, 1, 1)) is cut into a regular grid of tiles
of t_c × t_h × t_w neurons (the last tile of an axis may be smaller); each tile is one neuron group on its own
core, as in the public compile logs (one group = 12.5 % 'NeuronGr'). cores(layer) = Π ceil(D/t). The
partitioner takes, among all grids (t = ceil(D/a) for a = 1..D per axis), the one with the fewest tiles whose
largest (interior) tile fits every per-core limit below; ties go to the fewest input axons per core.

**Per-core resources of a tile T** (an interior tile: the largest receptive fields), summed over the layer's
input paths (each path's chain of ops mapped backwards from T to its source, axis by axis):

* neurons:   |T| · slots(model) ≤ neuron_slots_per_core;
* axons in:  Σ_paths |rf(T)|, the distinct source neurons with a synapse into T (fan-in) ≤ axons_in_per_core;
* synaptic memory, in words of W = synmem_word_bits bits, b = weight_bits (+ delay_bits for paths with delays):
  dense (linear):  |rf(T)| · ceil(|T| · b / W)   (each input axon stores one row of |T| weights, packed);
  conv, shared weights: ceil(t_c · |rf(one neuron)| · b / W)   (the tile's kernel slice, stored once);
  conv, explicit:  |rf(T)| · ceil(s̄ · b / W), s̄ = |T|·|rf(one neuron)| / |rf(T)| synapses per axon;
  one-to-one (gain, shortcut): |rf(T)| words;   LIPool window: |rf(T)| · ceil(s̄ · b / W), s̄ = |T|·kH·kW/|rf(T)|;
  ≤ synmem_words_per_core;
* axons out: Σ over consumer paths and consumer tiles U of |rf(U) ∩ T| (one routing entry per neuron and
  destination core) ≤ axons_out_per_core. Fan-out depends on the consumers' tiles, so the grid search runs
  again with the consumers' grids until no grid changes ("converged after k iterations", at most 8);
* LUT entries of a microcoded model (every core of the layer holds its layer's tables) ≤ lut_entries_per_core.

A layer that no grid can fit gets the grid with the smallest worst overshoot (max over resources of
need/limit), among those the one exceeding the fewest limits (so a limit that some grid of the same worst
overshoot meets is not reported), then the fewest tiles; every resource it still exceeds is a violation naming the layer, the number and the limit.
chips_needed = ceil(Σ cores / cores_per_chip) (Lava's mapper: chip = core id // 128); more than ``chips`` is a
violation. The estimate ignores what is not public (compression, axon-map formats, the cost function):
docs/LOIHI2.md §4 compares it with the public core counts.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from msat_lava.loihi2.constraints import Loihi2Constraints
from msat_lava.loihi2.topology import Conn, LayerDesc, NetDesc, PathOp

__all__ = ["Violation", "LayerPlan", "Plan", "plan_network", "tile_resources"]

Box = tuple[range, range, range]
MAX_ITERATIONS = 8


@dataclass(frozen=True)
class Violation:
    """One broken limit: ``layer`` (or 'network'), ``resource`` (the constraint's name), ``value`` vs ``limit``."""

    layer: str
    resource: str
    value: int
    limit: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LayerPlan:
    """Plan of one layer: ``tile`` (t_c, t_h, t_w), ``cores`` = number of tiles, per-core maxima
    (``neuron_slots``, ``synmem_words``, ``axons_in``, ``axons_out``), ``synapses`` (explicit synapse count of
    the whole layer, for reference), ``lut_entries`` per core."""

    name: str
    model: str
    shape: tuple[int, ...]
    neurons: int
    tile: tuple[int, int, int]
    cores: int
    slots_per_neuron: int
    neuron_slots: int
    synmem_words: int
    axons_in: int
    axons_out: int
    synapses: int
    lut_entries: int
    violations: list[Violation] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"], d["tile"] = list(self.shape), list(self.tile)
        d["violations"] = [v.to_dict() for v in self.violations]
        return d


@dataclass
class Plan:
    network: str
    constraints: Loihi2Constraints
    layers: list[LayerPlan]
    cores: int
    chips_needed: int
    iterations: int
    violations: list[Violation]

    @property
    def ok(self) -> bool:
        return not self.violations

    def layer(self, name: str) -> LayerPlan:
        return next(p for p in self.layers if p.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network, "cores": self.cores, "chips_needed": self.chips_needed,
                "chips_available": self.constraints.chips, "cores_per_chip": self.constraints.cores_per_chip,
                "iterations": self.iterations, "ok": self.ok,
                "layers": [p.to_dict() for p in self.layers],
                "violations": [v.to_dict() for v in self.violations],
                "constraints": self.constraints.to_dict()}


# --------------------------------------------------------------------------------------------------- geometry
def _as3(shape: Sequence[int]) -> tuple[int, int, int]:
    s = tuple(int(v) for v in shape)
    if len(s) == 3:
        return s  # type: ignore[return-value]
    if len(s) == 1:
        return (s[0], 1, 1)
    n = 1
    for v in s:
        n *= v
    return (n, 1, 1)


def _full(shape: Sequence[int]) -> Box:
    c, h, w = _as3(shape)
    return (range(c), range(h), range(w))


def _window(r: range, k: int, s: int, p: int, n: int) -> range:
    """Input positions read by outputs ``r`` of a k-wide, stride-s, padding-p window axis of an n-long input."""
    if len(r) == 0:
        return range(0)
    lo, hi = r[0] * s - p, r[-1] * s - p + k
    return range(max(0, lo), max(max(0, lo), min(n, hi)))


def _back(op: PathOp, box: Box) -> Box:
    """The part of ``op``'s input that its outputs ``box`` read (a product of per-axis ranges)."""
    c, h, w = box
    cin, hin, win = _as3(op.in_shape)
    k = op.kind
    if k in ("linear", "flatten"):
        return _full(op.in_shape)
    if k == "gain":
        return box
    if k == "chanpad":
        b = int(op.params["before"])
        if len(c) == 0:
            return (range(0), h, w)
        lo, hi = max(0, c[0] - b), min(cin, c[-1] + 1 - b)
        return (range(lo, max(lo, hi)), h, w)
    if k == "subsample":
        sh, sw = op.params["step"]
        hh = range(h[0] * sh, h[-1] * sh + 1, h.step * sh) if len(h) else range(0)
        ww = range(w[0] * sw, w[-1] * sw + 1, w.step * sw) if len(w) else range(0)
        return (c, hh, ww)
    (kh, kw), (sh, sw), (ph, pw) = op.params["kernel"], op.params["stride"], op.params["padding"]
    hh, ww = _window(h, kh, sh, ph, hin), _window(w, kw, sw, pw, win)
    if k in ("sumpool", "window"):
        return (c, hh, ww)
    if k == "conv":
        groups = int(op.params.get("groups", 1))
        if groups == 1 or len(c) == 0:
            cc = range(cin)
        else:
            cout = _as3(op.out_shape)[0]
            og, ig = cout // groups, cin // groups
            cc = range((c[0] // og) * ig, (c[-1] // og + 1) * ig)
        return (cc, hh, ww)
    raise ValueError(f"unknown path op {k!r}")


def _rf(conn: Conn, box: Box) -> Box:
    for op in reversed(conn.ops):
        box = _back(op, box)
    return box


def _count(box: Box) -> int:
    return len(box[0]) * len(box[1]) * len(box[2])


def _tile_box(shape3: tuple[int, int, int], tile: tuple[int, int, int]) -> Box:
    """An interior tile (largest receptive fields): the middle tile of each axis, kept inside the layer."""
    out = []
    for d, t in zip(shape3, tile):
        n = math.ceil(d / t)
        start = min(t * (n // 2), d - t)
        out.append(range(start, start + t))
    return tuple(out)  # type: ignore[return-value]


def _tiles_of(d: int, t: int) -> list[range]:
    return [range(j, min(d, j + t)) for j in range(0, d, t)]


def _candidates(d: int) -> list[int]:
    """Distinct tile lengths ceil(d/a), a = 1..d, largest first."""
    return sorted({math.ceil(d / a) for a in range(1, d + 1)}, reverse=True)


# --------------------------------------------------------------------------------------------------- resources
def _synapse_bits(c: Loihi2Constraints, conn: Conn) -> int:
    return c.weight_bits + (c.delay_bits if conn.delay else 0)


def tile_resources(layer: LayerDesc, tile: tuple[int, int, int], c: Loihi2Constraints) -> dict[str, int]:
    """Per-core resources of the interior tile of ``layer`` cut into ``tile`` (module docstring), without
    fan-out: neuron_slots, axons_in, synmem_words, synapses (of this tile, explicit)."""
    shape3 = _as3(layer.shape)
    box = _tile_box(shape3, tile)
    n_t = _count(box)
    slots = layer.slots if layer.slots is not None else c.slots.get(layer.model, 1)
    axons = words = syn = 0
    W = c.synmem_word_bits
    for conn in layer.conns:
        rf = _rf(conn, box)
        a = _count(rf)
        axons += a
        b = _synapse_bits(c, conn)
        op = conn.weighted
        kind = op.kind if op is not None else "gain"
        if kind == "linear":
            words += a * math.ceil(n_t * b / W)
            syn += a * n_t
        elif kind == "conv":
            # one interior neuron (the layer's centre, first channel of the tile): its full kernel
            centre = (range(box[0].start, box[0].start + 1),) + tuple(
                range(d // 2, d // 2 + 1) for d in shape3[1:])
            one = _rf(conn, centre)  # type: ignore[arg-type]
            per = _count(one)
            s = n_t * per
            syn += s
            if c.conv_weight_sharing:
                words += math.ceil(len(box[0]) * per * b / W)
            else:
                words += a * math.ceil(math.ceil(s / max(a, 1)) * b / W)
        elif kind == "window":
            kh, kw = op.params["kernel"]
            s = n_t * kh * kw
            syn += s
            words += a * math.ceil(math.ceil(s / max(a, 1)) * b / W)
        else:  # one-to-one
            syn += a
            words += a * math.ceil(b / W)
    return {"neuron_slots": n_t * slots, "axons_in": axons, "synmem_words": words, "synapses": syn,
            "neurons": n_t, "slots_per_neuron": slots}


def _fan_out(layer: LayerDesc, tile: tuple[int, int, int], net: NetDesc,
             grids: dict[str, tuple[int, int, int]]) -> int:
    """Σ over consumer paths and consumer tiles U of |rf(U) ∩ T| for the interior tile T of ``layer``."""
    shape3 = _as3(layer.shape)
    src = _tile_box(shape3, tile)
    total = 0
    for cons, conn in net.consumers(layer.name):
        cgrid = grids.get(cons.name)
        if cgrid is None:
            continue
        cshape = _as3(cons.shape)
        if any(op.kind in ("linear", "flatten") for op in conn.ops):
            ntiles = 1
            for d, t in zip(cshape, cgrid):
                ntiles *= math.ceil(d / t)
            total += ntiles * _count(src)
            continue
        prod = 1
        for axis in range(3):
            acc = 0
            for r in _tiles_of(cshape[axis], cgrid[axis]):
                full = list(_full(cons.shape))
                full[axis] = r
                back = _rf(conn, tuple(full))[axis]  # type: ignore[arg-type]
                acc += len(set(back) & set(src[axis])) if back.step != 1 else max(
                    0, min(back.stop, src[axis].stop) - max(back.start, src[axis].start))
            prod *= acc
        total += prod
    return total


_LIMITS = (("neuron_slots", "neuron_slots_per_core"), ("axons_in", "axons_in_per_core"),
           ("synmem_words", "synmem_words_per_core"), ("axons_out", "axons_out_per_core"))


def _evaluate(layer, tile, c, net, grids, with_fanout):
    res = tile_resources(layer, tile, c)
    res["axons_out"] = _fan_out(layer, tile, net, grids) if with_fanout else 0
    over = max(res[k] / getattr(c, lim) for k, lim in _LIMITS)
    return res, over


def _grid_search(layer: LayerDesc, c: Loihi2Constraints, net: NetDesc, grids, with_fanout: bool):
    """(tile, resources) of the grid with the fewest tiles that fits; else the smallest worst overshoot, then the
    fewest limits exceeded, then the fewest tiles."""
    shape3 = _as3(layer.shape)
    slots = layer.slots if layer.slots is not None else c.slots.get(layer.model, 1)
    combos = []
    for t in itertools.product(*(_candidates(d) for d in shape3)):
        n = 1
        for d, tt in zip(shape3, t):
            n *= math.ceil(d / tt)
        combos.append((n, t))
    combos.sort(key=lambda x: (x[0], -x[1][0]))
    found = None
    for n, t in combos:  # fewest tiles first; only grids whose neurons fit can fit; ties: fewest axons in
        if found is not None and n > found[0]:
            break
        if t[0] * t[1] * t[2] * slots > c.neuron_slots_per_core:
            continue
        res, over = _evaluate(layer, t, c, net, grids, with_fanout)
        if over <= 1 and (found is None or res["axons_in"] < found[2]["axons_in"]):
            found = (n, t, res)
    if found is not None:
        return found[1], found[2]
    best = None
    for n, t in combos:  # nothing fits: the smallest worst overshoot, then the fewest limits exceeded, then tiles
        res, over = _evaluate(layer, t, c, net, grids, with_fanout)
        exceeded = sum(res[k] > getattr(c, lim) for k, lim in _LIMITS)
        key = (over, exceeded, n)
        if best is None or key < best[0]:
            best = (key, t, res)
    return best[1], best[2]


# --------------------------------------------------------------------------------------------------- plan
def plan_network(net: NetDesc, c: Loihi2Constraints | None = None) -> Plan:
    """Partition ``net`` (module docstring) and collect every violation."""
    c = c or Loihi2Constraints()
    layers = [layer for layer in net.layers if layer.model != "input" or c.input_on_chip]
    grids: dict[str, tuple[int, int, int]] = {}
    results: dict[str, dict[str, int]] = {}
    for layer in layers:
        grids[layer.name], results[layer.name] = _grid_search(layer, c, net, grids, with_fanout=False)
    iterations = 1
    for iterations in range(2, MAX_ITERATIONS + 1):
        changed = False
        for layer in layers:
            t, res = _grid_search(layer, c, net, grids, with_fanout=True)
            if t != grids[layer.name]:
                changed = True
            grids[layer.name], results[layer.name] = t, res
        if not changed:
            break
    plans: list[LayerPlan] = []
    violations: list[Violation] = []
    for layer in layers:
        t, res = grids[layer.name], results[layer.name]
        shape3 = _as3(layer.shape)
        cores = 1
        for d, tt in zip(shape3, t):
            cores *= math.ceil(d / tt)
        full_syn = 0
        # explicit synapses of the whole layer (for the table): per-tile count × tiles (interior upper bound)
        full_syn = res["synapses"] * cores
        lp = LayerPlan(layer.name, layer.model, tuple(layer.shape), layer.neurons, t, cores,
                       res["slots_per_neuron"], res["neuron_slots"], res["synmem_words"], res["axons_in"],
                       res["axons_out"], full_syn, layer.lut_entries)
        for key, lim in _LIMITS:
            if res[key] > getattr(c, lim):
                lp.violations.append(Violation(layer.name, lim, int(res[key]), int(getattr(c, lim)),
                                               _why(layer, key, res, t, c)))
        if layer.lut_entries > c.lut_entries_per_core:
            lp.violations.append(Violation(layer.name, "lut_entries_per_core", layer.lut_entries,
                                           c.lut_entries_per_core,
                                           f"layer {layer.name!r}: threshold LUTs of {layer.lut_entries} entries "
                                           f"> lut_entries_per_core {c.lut_entries_per_core} (every core of "
                                           "the layer holds its tables)"))
        violations += lp.violations
        plans.append(lp)
    cores = sum(p.cores for p in plans)
    chips = c.chips_needed(cores)
    if chips > c.chips:
        violations.append(Violation("network", "chips", chips, c.chips,
                                    f"network: {cores} cores need {chips} chips of {c.cores_per_chip} cores > "
                                    f"chips {c.chips} available (--set chips=N for a larger board)"))
    return Plan(net.name, c, plans, cores, chips, iterations, violations)


def _why(layer: LayerDesc, key: str, res: dict[str, int], tile, c: Loihi2Constraints) -> str:
    names = {"neuron_slots": "neuron slots per core", "axons_in": "input axons per core (fan-in)",
             "synmem_words": f"synaptic memory words ({c.synmem_word_bits}-bit) per core",
             "axons_out": "output axons per core (fan-out)"}
    lim = dict(_LIMITS)[key]
    hint = {"neuron_slots": "even a 1-neuron tile needs more slots than a core has",
            "axons_in": "the receptive field of the smallest tile is larger than a core's input axons: "
                        "reduce the layer's fan-in (fewer input channels / smaller kernel / fewer dense inputs)",
            "synmem_words": "the smallest tile's synapses do not fit: reduce fan-in or weight bits",
            "axons_out": "a tile sends to more destinations than a core can address: reduce the consumers' "
                         "fan-in or the number of consumer cores"}[key]
    return (f"layer {layer.name!r}: {res[key]} {names[key]} > {lim} {getattr(c, lim)} "
            f"(tile {tuple(tile)}; {hint})")
