"""Typed exceptions shared by the converter, the quantizer and the file reader/writer.

Every error names the offending thing (node, layer, field, file) in its message and keeps it
as attributes, so callers (and the CLI) can report it without parsing text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


class NetxExportError(Exception):
    """Base class of every error raised by :mod:`netx_export`."""


def located(message: str, **where: object) -> str:
    """Prefix ``message`` with the non-None locations, e.g. "layer 'relu_3', field 'bias': ..."."""
    parts = [f"{key} {str(value)!r}" for key, value in where.items() if value is not None]
    return f"{', '.join(parts)}: {message}" if parts else message


class GraphError(NetxExportError, ValueError):
    """The typed graph is inconsistent (unknown input, duplicate name, cycle, shape mismatch)."""

    def __init__(self, message: str, *, node: str | None = None, field: str | None = None):
        super().__init__(located(message, node=node, field=field))
        self.node = node
        self.field = field
        self.detail = message  # the message without its location (for an error that re-locates it)


@dataclass(frozen=True)
class UnsupportedNode:
    """One node of a traced model that cannot be converted."""

    name: str
    op: str
    target: str
    reason: str
    source: str | None = None  # model source line, where torch.fx records it

    def describe(self) -> str:
        text = f"{self.name} [{self.op} {self.target}]: {self.reason}"
        if self.source:
            text += f"\n      at {self.source.strip()}"
        return text


class UnsupportedOpError(NetxExportError):
    """The model has nodes that cannot be converted; ``nodes`` lists every one of them."""

    def __init__(self, nodes: Sequence[UnsupportedNode], model: str | None = None):
        self.nodes = tuple(nodes)
        head = f"cannot convert model {model!r}" if model else "cannot convert model"
        lines = [f"{head}: {len(self.nodes)} unsupported node(s)"]
        lines += [f"  - {n.describe()}" for n in self.nodes]
        super().__init__("\n".join(lines))


class CalibrationError(NetxExportError, ValueError):
    """Calibration data or settings are unusable (empty data, wrong shape, bad percentile...)."""


class QuantizationError(NetxExportError, ValueError):
    """A value cannot be represented in the fixed-point format (names layer and field)."""

    def __init__(self, message: str, *, layer: str | None = None, field: str | None = None):
        super().__init__(located(message, layer=layer, field=field))
        self.layer = layer
        self.field = field
        self.detail = message  # the message without its location


class FormatError(NetxExportError, ValueError):
    """A network file is malformed: names the file, the layer and the field."""

    def __init__(self, message: str, *, path: str | None = None, layer: str | None = None,
                 field: str | None = None):
        super().__init__(located(message, file=path, layer=layer, field=field))
        self.path = path
        self.layer = layer
        self.field = field


class FileExistsRefusedError(NetxExportError, FileExistsError):
    """Refusing to overwrite an existing file without ``overwrite=True``."""
