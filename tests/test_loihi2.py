"""Loihi 2 constraints model and partitioner: hand-computed plans of small networks, every violation listed at
once, overrides, and the calibration topologies against the documented estimates (docs/LOIHI2.md §4)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from msat_lava.loihi2.calibration import PUBLIC_CORES, TOPOLOGIES, mnist_mlp, pilotnet_lif, pilotnet_sdnn
from msat_lava.loihi2.constraints import SOURCES, ConstraintsError, Loihi2Constraints, load_constraints, parse_override
from msat_lava.loihi2.partition import plan_network
from msat_lava.loihi2.topology import Conn, LayerDesc, NetDesc, PathOp, chain


def _dense_net(n_in, sizes, name="d"):
    layers, _, _ = chain("L", "input", (n_in,), [("dense", n) for n in sizes])
    return NetDesc(name, (LayerDesc("input", "input", (n_in,)), *layers), (n_in,))


# ------------------------------------------------------------------------------------------- constraints
def test_every_constraint_has_a_source_and_defaults_match_the_public_numbers():
    c = Loihi2Constraints()
    assert set(SOURCES) == set(c.to_dict())
    assert all(tag and text for tag, text in SOURCES.values())
    # public values (LOIHI2_FACTS.md §2.1)
    assert (c.cores_per_chip, c.neuron_slots_per_core, c.neuron_groups_per_core, c.synmem_words_per_core) == \
        (128, 4096, 8, 12000)
    assert (c.weight_bits, c.delay_bits, c.payload_bits, c.state_bits, c.bias_mant_bits) == (8, 6, 24, 24, 13)
    assert c.max_delay == 63
    assert c.chips_needed(128) == 1 and c.chips_needed(129) == 2


def test_overrides_from_json_and_set(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"_comment": "x", "chips": 8, "slots": {"msat": 3}, "axons_in_per_core": 2048}))
    c = load_constraints(path, {"slots.sdn": 4, "conv_weight_sharing": False})
    assert (c.chips, c.slots["msat"], c.slots["sdn"], c.axons_in_per_core, c.conv_weight_sharing) == \
        (8, 3, 4, 2048, False)
    assert c.slots["cuba"] == 1
    assert parse_override("chips=0x10") == ("chips", 16) and parse_override("input_on_chip=false") == \
        ("input_on_chip", False)


@pytest.mark.parametrize("content, needle", [
    ('{"chips": 0}', "'chips': must be >= 1"),
    ('{"nope": 1}', "unknown constraint 'nope'"),
    ('{"chips": 1.5}', "'chips': expected an integer"),
    ('{"input_on_chip": 1}', "'input_on_chip': expected true or false"),
    ('{"slots": {"lif": 2}}', "'slots.lif': unknown neuron model"),
    ('[1, 2]', "expected a JSON object"),
    ('{"chips": ', "constraints file"),
])
def test_bad_constraints_file_names_file_and_key(tmp_path, content, needle):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConstraintsError) as err:
        load_constraints(path)
    assert needle in str(err.value) and str(path) in str(err.value)


# ------------------------------------------------------------------------------------------- partition
def test_mnist_mlp_plan_by_hand():
    """784-128-64-10: 784·ceil(128·8/64) = 12544 words > 12000 → two tiles of 64 (784·8 = 6272 words)."""
    plan = plan_network(mnist_mlp())
    got = {p.name: (p.tile[0], p.cores, p.synmem_words, p.axons_in, p.axons_out) for p in plan.layers}
    assert got == {"input": (784, 1, 0, 0, 784 * 2), "L0": (64, 2, 784 * 8, 784, 64),
                   "L1": (64, 1, 128 * 8, 128, 64), "L2": (10, 1, 64 * math.ceil(80 / 64), 64, 0)}
    assert plan.cores == 5 and plan.chips_needed == 1 and plan.ok


def test_conv_tile_resources_by_hand():
    """Input 2×8×8, conv 4 k3 s1 p1 → 4×8×8 = 256 neurons in one tile: axons = all 128 inputs, shared kernel
    words = ceil(4·2·9·8 / 64) = 9; explicit: 128 axons × ceil(ceil(256·18/128)·8/64) = 128·5 = 640."""
    layers, _, _ = chain("C", "input", (2, 8, 8), [("conv", 4, 3, 1, 1)])
    net = NetDesc("c", (LayerDesc("input", "input", (2, 8, 8)), *layers), (2, 8, 8))
    p = plan_network(net).layer("C0")
    assert (p.tile, p.cores, p.axons_in, p.synmem_words, p.neuron_slots) == ((4, 8, 8), 1, 128, 9, 256)
    q = plan_network(net, Loihi2Constraints(conv_weight_sharing=False)).layer("C0")
    assert q.synmem_words == 128 * math.ceil(math.ceil(256 * 18 / 128) * 8 / 64) == 640


def test_strided_conv_receptive_field_by_hand():
    """Conv k3 s2 p0 on 3×9×9 → 4×4×4; with 8 neuron slots per core: 8 tiles of 4×1×2 (or 4×2×1, the same
    fan-in): the interior tile rows [2,3) cols [2,4) reads rows 4..6 and cols 4..8 → 3·3·5 = 45 axons."""
    layers, _, _ = chain("C", "input", (3, 9, 9), [("conv", 4, 3, 2, 0)])
    net = NetDesc("s", (LayerDesc("input", "input", (3, 9, 9)), *layers), (3, 9, 9))
    c = Loihi2Constraints(neuron_slots_per_core=8, input_on_chip=False)
    p = plan_network(net, c).layer("C0")
    assert p.cores == 8 and p.tile[0] * p.tile[1] * p.tile[2] == 8
    assert p.tile in ((4, 1, 2), (4, 2, 1)) and p.axons_in == 45
    # a 1×2×4 tile (also 8 tiles) reads rows 4..8, cols 0..8: 3·5·9 = 135 axons; the tie-break avoids it
    from msat_lava.loihi2.partition import tile_resources
    assert tile_resources(net.layer("C0"), (1, 2, 4), c)["axons_in"] == 3 * 5 * 9


def test_neuron_slots_split_a_layer():
    plan = plan_network(_dense_net(10, [250]), Loihi2Constraints(neuron_slots_per_core=100))
    p = plan.layer("L0")
    assert (p.tile[0], p.cores) == (84, 3)          # ceil(250/3) = 84 ≤ 100 < ceil(250/2)
    plan = plan_network(_dense_net(10, [250]), Loihi2Constraints(neuron_slots_per_core=100, slots={"cuba": 2}))
    assert plan.layer("L0").cores == 5              # 2 slots each: ≤ 50 neurons per core


def test_fan_out_splits_the_source():
    """Input 1000 → dense 64; synmem 5000 words: dense tiles of 32 (1000·4 = 4000 words) → 2 consumer tiles, so
    an input tile sends each neuron twice: with 1200 output axons the input tile holds ≤ 600 → 2 tiles of 500."""
    c = Loihi2Constraints(synmem_words_per_core=5000, axons_out_per_core=1200)
    plan = plan_network(_dense_net(1000, [64]), c)
    assert plan.layer("L0").cores == 2 and plan.layer("L0").tile[0] == 32
    assert plan.layer("input").cores == 2 and plan.layer("input").axons_out == 500 * 2
    assert plan.cores == 4 and plan.iterations >= 2 and plan.ok


def test_unfittable_layer_reports_only_the_unavoidable_violation():
    """Input 1000 → dense 64 with 300 input axons per core: every tile reads all 1000 inputs (3.33× over, on
    every grid). One tile of 64 would also need 1000·8 = 8000 > 5000 words; tiles of 32 need 4000: the plan takes
    those and lists the axon violation alone."""
    c = Loihi2Constraints(synmem_words_per_core=5000, axons_in_per_core=300)
    plan = plan_network(_dense_net(1000, [64]), c)
    p = plan.layer("L0")
    assert p.tile[0] <= 32 and p.synmem_words == 1000 * math.ceil(p.tile[0] * 8 / 64) <= 5000
    got = {(v.layer, v.resource): (v.value, v.limit) for v in plan.violations if v.layer == "L0"}
    assert got == {("L0", "axons_in_per_core"): (1000, 300)}


def test_every_violation_is_listed():
    """One network breaking five limits on purpose: all five are reported, each with its layer and number."""
    wide = LayerDesc("wide", "cuba", (8,), (Conn("input", (PathOp("linear", (5000,), (8,)),)),))
    fat = LayerDesc("fat", "cuba", (4,), (Conn("wide", (PathOp("linear", (8,), (4,)),)),), slots=5000)
    lut = LayerDesc("lut", "msat", (4,), (Conn("fat", (PathOp("linear", (4,), (4,)),)),), lut_entries=20000)
    deep = LayerDesc("deep", "cuba", (16,), (Conn("lut", (PathOp("linear", (4,), (16,)),)),))
    net = NetDesc("bad", (LayerDesc("input", "input", (5000,)), wide, fat, lut, deep), (5000,))
    c = Loihi2Constraints(cores_per_chip=2, synmem_words_per_core=2000)
    plan = plan_network(net, c)
    got = {(v.layer, v.resource): (v.value, v.limit) for v in plan.violations}
    assert got[("wide", "axons_in_per_core")] == (5000, 4096)
    assert got[("wide", "synmem_words_per_core")] == (5000, 2000)    # even one neuron: 5000 rows of 1 word
    assert got[("fat", "neuron_slots_per_core")] == (5000, 4096)
    assert got[("lut", "lut_entries_per_core")] == (20000, 16384)
    cores = plan.cores
    assert got[("network", "chips")] == (math.ceil(cores / 2), 1)
    assert len(plan.violations) == 5
    assert all(v.layer in v.message and str(v.value) in v.message and str(v.limit) in v.message
               for v in plan.violations)
    assert not plan.ok


def test_delays_widen_synapses():
    """A path with delays stores weight + delay bits: 784 × ceil(128·14/64) = 784·28 words → 2 tiles of 64 no
    longer fit (784·14 = 10976 fits, so tiles of 64 still work); with 200 → 256 like oxford: 200·ceil(256·14/64)."""
    layers, _, _ = chain("L", "input", (200,), [("dense", 256)], delay=True)
    net = NetDesc("o", (LayerDesc("input", "input", (200,)), *layers), (200,))
    p = plan_network(net).layer("L0")
    assert p.synmem_words <= 12000
    assert p.synmem_words == 200 * math.ceil(p.tile[0] * 14 / 64)
    assert p.cores == 1  # 200 · 56 = 11200 words


# ------------------------------------------------------------------------------------------- calibration
#: The documented estimates (docs/LOIHI2.md §4 table; benchmarks/results/loihi2_calibration.json).
DOCUMENTED = {"mnist_mlp": 5, "pilotnet_lif": 73, "pilotnet_sdnn": 64}


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_calibration_topologies_give_the_documented_estimates(name):
    plan = plan_network(TOPOLOGIES[name]())
    assert plan.cores == DOCUMENTED[name]
    assert plan.ok
    assert abs(plan.cores - PUBLIC_CORES[name]) / PUBLIC_CORES[name] <= 0.05  # within 5 % of the public count


def test_pilotnet_shapes_match_the_netx_file():
    """The hand-built PilotNet LIF has the layer shapes of netx_peer/pilotnet_lif/network.net (C, H, W)."""
    shapes = [l.shape for l in pilotnet_lif().layers]
    assert shapes == [(3, 66, 200), (24, 32, 99), (36, 15, 49), (48, 7, 24), (64, 4, 22), (64, 2, 20),
                      (100,), (50,), (10,), (1,)]
    sd = [l.shape for l in pilotnet_sdnn().layers]
    assert sd[4] == (64, 2, 20) and math.prod(sd[4]) == 64 * 40


def test_pilotnet_lif_file_agrees_when_present(shared_data_dir):
    h5py = pytest.importorskip("h5py")
    path = shared_data_dir / "netx_peer" / "pilotnet_lif" / "network.net"
    if not path.exists():
        pytest.skip("netx_peer not present")
    with h5py.File(path, "r") as f:
        shapes = [tuple(int(v) for v in f["layer"][str(i)]["shape"][()]) for i in range(len(f["layer"]))]
    ours = [l.shape for l in pilotnet_lif().layers]
    # the file stores (C, H, W) for conv/input and (N, 1, 1) for dense; the flatten layer has no neurons
    netx = [s for s, i in zip(shapes, range(len(shapes))) if i != 6]
    assert [s if len(o) == 3 else (s[0],) for s, o in zip(netx, ours)] == ours


# ------------------------------------------------------------------------------------------- docs agree
def _doc() -> str:
    from pathlib import Path

    return (Path(__file__).resolve().parents[1] / "docs" / "LOIHI2.md").read_text(encoding="utf-8")


def test_docs_table_lists_every_constraint_with_its_default():
    doc = _doc()
    c = Loihi2Constraints().to_dict()
    for key, value in c.items():
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row is not None, key
        cell = row.split("|")[2].strip()
        if isinstance(value, dict):
            assert cell == ", ".join(f"{k} {v}" for k, v in value.items()), key
        else:
            assert cell == (str(value).lower() if isinstance(value, bool) else str(value)), key
        assert row.split("|")[3].strip().split(" ")[0] == SOURCES[key][0].split(" ")[0], key


def test_docs_quote_the_refusal_and_the_program_verbatim():
    from msat_lava.loihi2.microcode import MSAT_ON_HARDWARE, PROGRAM

    doc = _doc()
    quoted = " ".join(line[2:] for line in doc.splitlines() if line.startswith("> "))
    assert " ".join(MSAT_ON_HARDWARE.format(layers="*names*").split()) == " ".join(quoted.split())
    assert PROGRAM in doc
