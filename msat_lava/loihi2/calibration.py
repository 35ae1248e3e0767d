"""The calibration topologies: networks whose Loihi 2 core counts are public (LOIHI2_FACTS.md §2.2), described
layer by layer (no weights needed: the plan depends on shapes only).

* ``mnist_mlp``: MNIST 784-128-64-10, CUBA (input layer + three dense layers): public **5** cores.
* ``pilotnet_lif``: lava-dl's PilotNet LIF exactly as in ``netx_peer/pilotnet_lif/network.net`` (input
  3×66×200, conv 24/36/48/64/64 k3, strides 2,2,2,(2,1),1, padding 0,0,0,(1,0),0, flatten 2560, dense
  100-50-10-1), CUBA-LIF: public **74** cores.
* ``pilotnet_sdnn``: lava-dl's PilotNet SDNN (input 3×33×100, sigma-delta conv 24/36/64/64 k3, strides
  2,2,(2,1),1, padding 0,0,(1,0),0, flatten 64·40 = 2560, dense 100-50-10-1): public **61** cores.
"""
from __future__ import annotations

from msat_lava.loihi2.topology import LayerDesc, NetDesc, chain

__all__ = ["PUBLIC_CORES", "TOPOLOGIES", "mnist_mlp", "pilotnet_lif", "pilotnet_sdnn"]

#: Public core counts (LOIHI2_FACTS.md §2.2, lava-dl netx tutorial compile logs).
PUBLIC_CORES = {"mnist_mlp": 5, "pilotnet_lif": 74, "pilotnet_sdnn": 61}


def _net(name: str, input_shape, spec, model: str) -> NetDesc:
    layers, _, _ = chain("L", "input", input_shape, spec, model=model)
    return NetDesc(name, (LayerDesc("input", "input" if model == "cuba" else model, tuple(input_shape)),
                          *layers), tuple(input_shape))


def mnist_mlp() -> NetDesc:
    return _net("mnist_mlp", (784,), [("dense", 128), ("dense", 64), ("dense", 10)], "cuba")


def pilotnet_lif() -> NetDesc:
    spec = [("conv", 24, 3, 2, 0), ("conv", 36, 3, 2, 0), ("conv", 48, 3, 2, 0), ("conv", 64, 3, (2, 1), (1, 0)),
            ("conv", 64, 3, 1, 0), ("flatten",), ("dense", 100), ("dense", 50), ("dense", 10), ("dense", 1)]
    return _net("pilotnet_lif", (3, 66, 200), spec, "cuba")


def pilotnet_sdnn() -> NetDesc:
    spec = [("conv", 24, 3, 2, 0), ("conv", 36, 3, 2, 0), ("conv", 64, 3, (2, 1), (1, 0)), ("conv", 64, 3, 1, 0),
            ("flatten",), ("dense", 100), ("dense", 50), ("dense", 10), ("dense", 1)]
    return _net("pilotnet_sdnn", (3, 33, 100), spec, "sdn")


TOPOLOGIES = {"mnist_mlp": mnist_mlp, "pilotnet_lif": pilotnet_lif, "pilotnet_sdnn": pilotnet_sdnn}
