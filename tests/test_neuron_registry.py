"""The neuron-model registry (netx_export.neurons + msat_lava.dynamics.models): every model has both halves, the
CLI / eval / docs come from it, and a model defined in two small classes (here, in this test) goes through the
converter, the file and the reference simulator with no other code."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from msat_lava import reference
from msat_lava.dynamics import models, xp
from msat_lava.program import from_converted
from netx_export import hdf5, neurons
from netx_export.neuron import NeuronSpecError, _real
from netx_export.quantize import methods, quantize

from test_hdf5 import LAMS, zoo_graph

REPO = Path(__file__).resolve().parents[1]


def test_every_model_has_dynamics_and_the_msat_family_is_fused():
    assert neurons.names()[:4] == ("const", "dtt", "det", "msat")
    assert {"dtif-r", "bsnn-r"} <= set(neurons.names())
    assert set(models.names()) == set(neurons.names())
    assert {n for n in neurons.names() if models.has_fused(n)} == {"const", "dtt", "det", "msat"}
    assert methods() == neurons.names()


def test_docs_table_is_the_registry():
    assert neurons.markdown_table() in (REPO / "docs" / "DESIGN.md").read_text(encoding="utf-8")


def test_cli_choices_come_from_the_registry():
    import argparse

    from msat_lava.cli_convert import add_convert_parser

    parser = argparse.ArgumentParser()
    add_convert_parser(parser.add_subparsers())
    action = next(a for a in parser._subparsers._group_actions[0].choices["convert"]._actions
                  if a.dest == "method")
    assert tuple(action.choices) == neurons.names()


def test_unknown_mode_names_the_known_ones():
    with pytest.raises(NeuronSpecError) as info:
        neurons.get("lif")
    assert info.value.field == "mode" and "dtif-r" in str(info.value)


# a model written here in two classes: θ = frac·λ every step (a constant threshold with its own parameter)
@dataclass(frozen=True)
class _FracParams:
    frac: float = 0.5

    def __post_init__(self):
        value = _real(self.frac, "frac")
        if not 0.0 < value <= 1.0:
            raise NeuronSpecError("must be in (0, 1]", field="frac")
        object.__setattr__(self, "frac", value)

    def to_dict(self):
        return {"frac": self.frac}

    @classmethod
    def from_dict(cls, data):
        return cls(**dict(data))


class _Frac(neurons.NeuronModel):
    name = "test-frac"
    order = 99
    since = (1, 4)
    params_type = _FracParams
    params = (neurons.Param("frac", float, 0.5, "θ/λ"),)


class _FracDyn(models.DynamicsModel):
    name = "test-frac"

    def float_threshold(self, spec, state, x):
        return xp.full(x.shape, spec.params.frac * spec.lam, x, "float")

    def fixed_threshold(self, spec, tables, state, x):
        return xp.full(x.shape, int(math.floor(spec.params.frac * spec.one + 0.5)), x, "int")


@pytest.fixture
def frac_model():
    neurons.register(_Frac)
    models.register(_FracDyn)
    yield
    del neurons._REGISTRY["test-frac"], models._REGISTRY["test-frac"]


def test_a_new_model_needs_no_other_code(tmp_path, frac_model):
    net = quantize(zoo_graph(), LAMS, input_scale=2.0, method="test-frac", params={"frac": 0.25})
    back = hdf5.read(hdf5.write(net, tmp_path / "frac.net"))
    assert back == net and back.neurons["r0"].params == _FracParams(0.25)
    const = quantize(zoo_graph(), LAMS, input_scale=2.0, method="const", k_const=0.25)
    x = np.random.default_rng(0).normal(size=(3, 3, 8, 8)) * 0.7
    a = reference.simulate(from_converted(back), x, 12, precision="fixed", record_readout=True, progress=False)
    b = reference.simulate(from_converted(const), x, 12, precision="fixed", record_readout=True, progress=False)
    assert np.array_equal(a.readout, b.readout) and np.abs(a.readout).max() > 0  # = const with k = 0.25
    from msat_lava.cli_eval import parse_methods

    assert parse_methods("test-frac:frac=0.5+b2") == ["test-frac:frac=0.5+b2"]
