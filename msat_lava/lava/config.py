"""Run configurations for msat-lava's processes: Lava's tag selection, then the chosen model specialised per
process.

:class:`SpecializingRunCfg` is a mixin for any Lava ``RunConfig``: its ``select`` lets the base class pick the
model (``select_tag`` = ``fixed_pt`` / ``floating_pt``, resources, ``exception_proc_model_map``), then, when
that model has a ``for_process`` class method (:class:`msat_lava.lava.procs.models._Declaring`), returns the
model specialised for the process (one Lava type per port and Var of that instance, precisions from the spec).
Models of Lava's own processes pass through unchanged.

* :func:`sim_config` — ``Loihi2SimCfg`` + the mixin: what :func:`msat_lava.lava.build.run_lava` runs under.
* A hardware configuration would be ``class MsatHwCfg(SpecializingRunCfg, Loihi2HwCfg)`` once a
  ``Loihi2NeuroCore`` model of :class:`~msat_lava.lava.procs.process.MsatGroup` exists (docs/LOIHI2.md §5;
  lava-loihi only, not shipped).

Import after :func:`msat_lava.lava.compat.install` (this module imports Lava).
"""
from __future__ import annotations

from typing import Any

from lava.magma.core.run_configs import Loihi2SimCfg

__all__ = ["SpecializingRunCfg", "MsatSimCfg", "sim_config", "TAGS"]

#: precision → the process-model tag Lava selects
TAGS = {"fixed": "fixed_pt", "float": "floating_pt"}


class SpecializingRunCfg:
    """Mixin (put it first): ``select`` = the base class's choice, specialised by its ``for_process``."""

    def select(self, process: Any, proc_models: Any) -> Any:
        chosen = super().select(process, proc_models)  # type: ignore[misc]
        declare = getattr(chosen, "for_process", None)
        return declare(process) if callable(declare) else chosen


class MsatSimCfg(SpecializingRunCfg, Loihi2SimCfg):
    """``Loihi2SimCfg`` (Python CPU models only) with per-process model specialisation."""


def sim_config(precision: str = "fixed", **kwargs: Any) -> MsatSimCfg:
    """The CPU simulator configuration selecting the ``fixed_pt`` or ``floating_pt`` models."""
    if precision not in TAGS:
        raise ValueError(f"precision must be one of {list(TAGS)}, got {precision!r}")
    return MsatSimCfg(select_tag=TAGS[precision], **kwargs)
