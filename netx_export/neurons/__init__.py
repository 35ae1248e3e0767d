"""The neuron-model registry: one registered unit per spiking-layer rule (NIR style: typed classes with symmetric
to/from dict; the dynamics, Norse style, are pure step functions in :mod:`msat_lava.dynamics.models`).

A spiking layer is described by one :class:`netx_export.neuron.NeuronSpec`: the **shared spec** (mode = the
model's name, λ, Γ, v_init, frac_bits F, state_bits, spike confidence) plus, for models registered from format
1.4 on, a **model-specific parameter object** ``spec.params`` whose type the model declares. The model knows

* its parameter type (``params_type``: a frozen dataclass with ``to_dict`` / ``from_dict`` and validation in
  ``__post_init__``, raising :class:`~netx_export.neuron.NeuronSpecError` with ``field`` = the parameter name),
  and the checks that tie parameters to the shared spec (:meth:`NeuronModel.check`);
* its derived tables (``tables_type``, :meth:`NeuronModel.make_tables`): integer tables the fixed-point step
  reads, generated offline in float64, stored in the file under ``neurons/<i>/lut`` and re-derived and compared
  by the reader (MSAT's LUTs are the MSAT family's tables; a model without tables stores a null ``lut``);
* how the converter treats the layer's bias (:meth:`NeuronModel.bias_gain`) and whether its spikes are graded;
* the first format version that may hold it (``since``).

Adding a model = one module here (parameters, validation, tables) + one module in
:mod:`msat_lava.dynamics.models` (the float and the fixed threshold/firing rule), both found by package
discovery (every submodule is imported and calls :func:`register`): no other source file changes. The CLI
choices, the method grammar of ``eval`` and the file-format registry read :func:`names` / :func:`get`.

This package never imports ``msat_lava`` or ``lava``.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Mapping

from netx_export.neuron import NeuronSpecError

__all__ = ["NeuronModel", "NeuronSpecError", "register", "get", "names", "models", "Param",
           "params_from_options", "describe", "TABLE_KINDS"]

#: How a table field is stored: 'str' scalar string, 'int' int64 scalar, 'i32_1d' 1-D int32 array.
TABLE_KINDS = ("str", "int", "i32_1d")


@dataclass(frozen=True)
class Param:
    """One model parameter as the converter / CLI see it: ``name``, Python ``type`` (float, int, str),
    ``default``, ``help``, ``choices`` (str parameters)."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None

    def parse(self, text: str) -> Any:
        """The value of a ``--param name=text`` / eval ``:name=text`` option (NeuronSpecError naming it)."""
        try:
            value = self.type(text)
        except (TypeError, ValueError):
            raise NeuronSpecError(f"expected a {self.type.__name__}, got {text!r}", field=self.name) from None
        if self.choices is not None and value not in self.choices:
            raise NeuronSpecError(f"must be one of {list(self.choices)}, got {value!r}", field=self.name)
        return value


class NeuronModel:
    """Base class of a registered neuron model. Subclasses set the class attributes and override what differs.

    * ``name``: the mode / method name (``spec.mode``, ``convert --method``, the eval core).
    * ``order``: position in :func:`names` (CLI choices, docs tables).
    * ``summary``: one line for help texts and docs.
    * ``since``: first format version (major, minor) whose files may hold this mode.
    * ``params_type``: the model-specific parameter dataclass, or None (no ``spec.params``).
    * ``params``: the :class:`Param` list of ``params_type`` (converter options, eval suffixes).
    * ``tables_type``: the derived-table dataclass, or None (null ``lut`` in the file).
    * ``graded``: True when the payload varies per spike (needs graded spikes on Loihi 2).
    * ``reconstruction``: True for the spec's reconstructions of methods whose printed equations are lost
      (named ``-r``; docs state what is verified and what is assumed).
    """

    name: ClassVar[str] = ""
    order: ClassVar[int] = 100
    summary: ClassVar[str] = ""
    since: ClassVar[tuple[int, int]] = (1, 0)
    params_type: ClassVar[type | None] = None
    params: ClassVar[tuple[Param, ...]] = ()
    tables_type: ClassVar[type | None] = None
    graded: ClassVar[bool] = True
    reconstruction: ClassVar[bool] = False
    #: parameters the converter derives per layer from the graph (:meth:`layer_params`); the network-wide
    #: setting recorded in ``provenance/hyperparameters['params']`` is compared without them.
    layer_fields: ClassVar[tuple[str, ...]] = ()

    # -- parameters ---------------------------------------------------------------------------------
    def default_params(self) -> Any:
        """The parameter object with every default (None for a model without ``params_type``)."""
        if self.params_type is None:
            return None
        return self.params_type(**{p.name: p.default for p in self.params})

    def params_from_dict(self, data: Mapping[str, Any] | None) -> Any:
        if self.params_type is None:
            if data is not None:
                raise NeuronSpecError(f"mode {self.name!r} has no model parameters", field="params")
            return None
        if data is None:
            raise NeuronSpecError(f"required for mode {self.name!r}", field="params")
        return self.params_type.from_dict(data)

    def check(self, spec: Any) -> None:
        """Model-specific validation of a whole spec (after the shared fields are validated)."""

    # -- tables -------------------------------------------------------------------------------------
    def make_tables(self, spec: Any) -> Any:
        """The layer's derived integer tables (float64 offline generation), or None."""
        return None

    def table_kinds(self) -> dict[str, str]:
        """Field name → one of :data:`TABLE_KINDS`, in storage order."""
        if self.tables_type is None:
            return {}
        return dict(self.tables_type.field_kinds())

    def tables_from_dict(self, data: Mapping[str, Any]) -> Any:
        return self.tables_type.from_dict(data)

    def check_tables(self, spec: Any, tables: Any) -> None:
        """``tables`` must be of ``tables_type`` and match the spec's mode and F (NeuronSpecError 'luts')."""
        if self.tables_type is None:
            if tables is not None:
                raise NeuronSpecError(f"mode {self.name!r} has no tables", field="luts")
            return
        if not isinstance(tables, self.tables_type):
            raise NeuronSpecError(f"mode {self.name!r} needs {self.tables_type.__name__}", field="luts")
        if getattr(tables, "mode", spec.mode) != spec.mode or tables.frac_bits != spec.frac_bits:
            raise NeuronSpecError("table mode/frac_bits differ from the neuron spec", field="luts.mode")

    # -- converter ----------------------------------------------------------------------------------
    def layer_params(self, params: Any, graph: Any, name: str) -> Any:
        """The parameters of spiking layer ``name`` of ``graph`` given the network-wide ``params``."""
        return params

    def bias_gain(self, spec: Any) -> float:
        """Factor applied to the layer's per-step bias by the quantizer (1: the bias every step, §1.7)."""
        return 1.0

    def input_gain(self, spec: Any) -> float:
        """Factor on the terms fed by the graph's input (the analog image current) into a layer (1)."""
        return 1.0

    def readout_bias_gain(self, spec: Any) -> float:
        """Factor on the readout's bias in a network of this model (``spec``: its first spiking layer)."""
        return 1.0

    def prepare_graph(self, graph: Any) -> tuple[Any, dict[str, str]]:
        """The float graph this model converts (e.g. BSNN-R's synchronous neurons on shortcuts: ANN-identical
        extra relu nodes) and {new relu: the relu whose λ it takes}; default: unchanged, {}."""
        return graph, {}

    def __repr__(self) -> str:
        return f"<neuron model {self.name!r}>"


_REGISTRY: dict[str, NeuronModel] = {}
_LOADED = False


def register(model: NeuronModel | type) -> NeuronModel:
    """Register a model (an instance or a subclass, instantiated); usable as a class decorator."""
    inst = model() if isinstance(model, type) else model
    if not isinstance(inst, NeuronModel) or not inst.name:
        raise TypeError(f"not a named NeuronModel: {model!r}")
    if inst.name in _REGISTRY and type(_REGISTRY[inst.name]) is not type(inst):
        raise ValueError(f"neuron model {inst.name!r} is already registered")
    if inst.params_type is not None:
        declared = [f.name for f in fields(inst.params_type)]
        if declared != [p.name for p in inst.params]:
            raise TypeError(f"{inst.name}: params {[p.name for p in inst.params]} != fields {declared}")
    _REGISTRY[inst.name] = inst
    return model


def _load() -> None:
    """Import every submodule of this package once (each registers its models)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def models() -> tuple[NeuronModel, ...]:
    """Every registered model, in ``order``."""
    _load()
    return tuple(sorted(_REGISTRY.values(), key=lambda m: (m.order, m.name)))


def names() -> tuple[str, ...]:
    """The registered mode names, in ``order`` (const, dtt, det, msat, dtif-r, bsnn-r, ...)."""
    return tuple(m.name for m in models())


def get(name: str) -> NeuronModel:
    """The model called ``name`` (NeuronSpecError field 'mode' naming the known ones otherwise)."""
    _load()
    model = _REGISTRY.get(name) if isinstance(name, str) else None
    if model is None:
        raise NeuronSpecError(f"must be one of {names()}, got {name!r}", field="mode")
    return model


def params_from_options(mode: str, options: Mapping[str, Any] | None,
                        parse: bool = False) -> Any:
    """The parameter object of ``mode`` from ``options`` (name → value, or text when ``parse``), the model's
    defaults for the rest; NeuronSpecError naming an unknown or bad option."""
    model = get(mode)
    options = dict(options or {})
    if model.params_type is None:
        if options:
            raise NeuronSpecError(f"mode {mode!r} has no parameters (got {sorted(options)})",
                                  field=sorted(options)[0])
        return None
    known = {p.name: p for p in model.params}
    values = {p.name: p.default for p in model.params}
    for key, value in options.items():
        if key not in known:
            raise NeuronSpecError(f"unknown parameter of {mode!r} (known: {sorted(known)})", field=key)
        values[key] = known[key].parse(value) if parse else value
    return model.params_type(**values)


def describe() -> list[dict[str, Any]]:
    """One row per model for docs tables and ``--help``: name, summary, since, parameters, tables, graded."""
    return [{"name": m.name, "summary": m.summary, "since": ".".join(map(str, m.since)),
             "params": [{"name": p.name, "default": p.default, "help": p.help} for p in m.params],
             "tables": m.tables_type.__name__ if m.tables_type else None, "graded": m.graded,
             "reconstruction": m.reconstruction} for m in models()]


Factory = Callable[..., Any]


def markdown_table() -> str:
    """The registry as the Markdown table of docs/DESIGN.md §8 (``python -m netx_export.neurons`` prints it; a test
    keeps the docs equal to it)."""
    lines = ["| model | since | parameters (default) | tables | graded | what it is |", "|---|---|---|---|---|---|"]
    for row in describe():
        ps = ", ".join(f"`{p['name']}`={p['default']}" for p in row["params"]) or "— (MSAT-family fields)"
        lines.append(f"| `{row['name']}` | {row['since']} | {ps} | {row['tables'] or '—'} | "
                     f"{'yes' if row['graded'] else 'no'} | {row['summary']} |")
    return "\n".join(lines)

