"""One interface for running a converted network: ``reference``, ``lava-cpu`` and ``loihi2``.

Every backend has ``check(program, ...)``, which raises a typed :class:`BackendError` (a bad-input error:
exit code 2 on the command line) **before anything is built**, and ``run(program, x, steps, ...)``, which
returns an object with ``predictions`` (T, N), ``readout`` (T, N, K) and ``traces`` {stage: (T, N, *shape)}.

* :class:`ReferenceBackend` — :func:`msat_lava.reference.simulate` (batched torch; fixed or float).
* :class:`LavaCpuBackend` — :func:`msat_lava.lava.build.run_lava` (Lava's CPU simulator,
  :func:`msat_lava.lava.config.sim_config`: ``Loihi2SimCfg`` selecting the ``fixed_pt`` / ``floating_pt``
  models); check: Lava importable (every program builds: a process gets one port per source it reads).
* :class:`Loihi2Backend` — Loihi 2 through lava-loihi (:mod:`msat_lava.lava.loihi2`): a constant-threshold
  export whose netx view is loadable runs as Lava's own Dense/Conv/LIF under ``Loihi2HwCfg``. check: lava-loihi
  installed (else :class:`BackendUnavailable` with the INRC route), fixed point only, no MSAT or LIPool layer
  (:class:`UnsupportedProgram` with :data:`msat_lava.loihi2.microcode.MSAT_ON_HARDWARE`: they need a
  microcoded NeuroCore model), and a netx-loadable view. Problems are collected and reported together.

Never a silent fallback: a backend that cannot run a program says so and runs nothing; the caller decides
(``msat-lava deploy --run --sim`` runs the reference explicitly).
"""
from __future__ import annotations

import importlib.util
from typing import Any, Sequence

import numpy as np

from msat_lava.cli_common import BadInput

__all__ = ["BackendError", "BackendUnavailable", "UnsupportedProgram", "Backend", "ReferenceBackend",
           "LavaCpuBackend", "Loihi2Backend", "BACKEND_NAMES", "get_backend"]


class BackendError(BadInput):
    """A backend cannot run this program (raised by ``check`` before any build; exit code 2)."""


class BackendUnavailable(BackendError):
    """The backend's software or hardware is not present here."""


class UnsupportedProgram(BackendError):
    """The program uses something the backend has no model for."""


class Backend:
    name = "?"
    precisions: tuple[str, ...] = ("fixed",)

    def check(self, program: Any, *, precision: str = "fixed", net: Any = None, path: Any = None) -> None:
        if precision not in self.precisions:
            raise UnsupportedProgram(f"backend {self.name}: precision {precision!r} is not supported "
                                     f"(supported: {', '.join(self.precisions)})")

    def run(self, program: Any, x: Any, steps: int, *, precision: str = "fixed",
            sample_ids: Sequence[int] | None = None, record: Sequence[str] = (), net: Any = None,
            path: Any = None, progress: bool = False) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class ReferenceBackend(Backend):
    name = "reference"
    precisions = ("fixed", "float")

    def run(self, program, x, steps, *, precision="fixed", sample_ids=None, record=(), net=None, path=None,
            progress=False):
        from msat_lava.reference import simulate

        self.check(program, precision=precision)
        return simulate(program, x, steps, precision=precision, sample_ids=sample_ids, record=tuple(record),
                        record_readout=True, progress=progress)


class LavaCpuBackend(Backend):
    name = "lava-cpu"
    precisions = ("fixed", "float")

    def check(self, program, *, precision="fixed", net=None, path=None):
        super().check(program, precision=precision)
        if importlib.util.find_spec("lava") is None:
            raise BackendUnavailable("backend lava-cpu: lava-nc is not installed (pip install lava-nc)")

    def run(self, program, x, steps, *, precision="fixed", sample_ids=None, record=(), net=None, path=None,
            progress=False):
        from msat_lava.lava.build import run_lava

        self.check(program, precision=precision)
        return run_lava(program, x, steps, precision=precision, sample_ids=sample_ids, record=tuple(record))


class Loihi2Backend(Backend):
    name = "loihi2"
    precisions = ("fixed",)

    def problems(self, program: Any, *, precision: str = "fixed", net: Any = None) -> list[str]:
        """Every reason this program cannot run on Loihi 2 here (empty: it can)."""
        from msat_lava.lava import loihi2 as hw
        from msat_lava.loihi2.microcode import MSAT_ON_HARDWARE, NO_LAVA_LOIHI, msat_layers

        out = []
        if not hw.is_installed():
            out.append(NO_LAVA_LOIHI)
        if precision not in self.precisions:
            out.append(f"backend loihi2 runs fixed point only, not {precision!r}.")
        layers = msat_layers(program)
        if layers:
            shown = ", ".join(layers[:6]) + (f", … {len(layers)} in all" if len(layers) > 6 else "")
            out.append(MSAT_ON_HARDWARE.format(layers=shown))
        elif net is not None:
            from netx_export.hdf5 import netx_view

            view = netx_view(net)
            if not view.loadable:
                out.append(f"the constant-threshold network has no netx view Lava's Dense/Conv/LIF can load "
                           f"({view.reason}).")
        elif net is None:
            out.append("backend loihi2 needs the converted network (its netx view) to build Lava's processes.")
        return out

    def check(self, program, *, precision="fixed", net=None, path=None):
        problems = self.problems(program, precision=precision, net=net)
        if not problems:
            return
        from msat_lava.lava import loihi2 as hw

        cls = UnsupportedProgram if hw.is_installed() else BackendUnavailable
        raise cls("backend loihi2: " + " Also: ".join(problems))

    def run_config(self) -> Any:
        from msat_lava.lava import loihi2 as hw

        return hw.hw_run_config()

    def run(self, program, x, steps, *, precision="fixed", sample_ids=None, record=(), net=None, path=None,
            progress=False):
        from msat_lava.lava import loihi2 as hw
        from msat_lava.program import quantize_input_np
        from netx_export.hdf5 import netx_view

        self.check(program, precision=precision, net=net)
        if path is None:
            raise UnsupportedProgram("backend loihi2: the network file path is needed (netx loads the file)")
        view = netx_view(net)
        p_in, _ = quantize_input_np(np.asarray(x, dtype=np.float64), program.input_scale, program.input_frac_bits)
        return hw.run_netx(str(path), p_in, int(steps), input_message_bits=view.input_message_bits,
                           run_cfg=self.run_config(), frac_bits=program.input_frac_bits)


_BACKENDS = {"reference": ReferenceBackend, "lava-cpu": LavaCpuBackend, "loihi2": Loihi2Backend}
BACKEND_NAMES = tuple(_BACKENDS)


def get_backend(name: str) -> Backend:
    try:
        return _BACKENDS[name]()
    except KeyError:
        raise BackendError(f"unknown backend {name!r} (known: {', '.join(BACKEND_NAMES)})") from None
