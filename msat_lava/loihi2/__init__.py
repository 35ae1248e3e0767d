"""Loihi 2 pre-flight: the constraints model (:mod:`.constraints`), network descriptions (:mod:`.topology`),
the partitioner (:mod:`.partition`), fixed-point width checks (:mod:`.widths`), the calibration topologies
(:mod:`.calibration`) and the MSAT integer program a NeuroCore model must run (:mod:`.microcode`).
See docs/LOIHI2.md. Nothing here imports Lava."""
from msat_lava.loihi2.constraints import ConstraintsError, Loihi2Constraints, load_constraints
from msat_lava.loihi2.partition import LayerPlan, Plan, Violation, plan_network
from msat_lava.loihi2.topology import NetDesc, from_program

__all__ = ["ConstraintsError", "Loihi2Constraints", "load_constraints", "LayerPlan", "Plan", "Violation",
           "plan_network", "NetDesc", "from_program"]
