"""Loading user-supplied torch files without ever unpickling (docs/SECURITY.md).

* :func:`load_exported` reads a ``torch.export.save`` archive (``.pt2``). The zip is inspected **before** torch
  sees it: only the entries a plain exported program has are accepted (``models/model.json``, the weight and
  constant payload configs and their raw tensor payloads, the sample inputs, ``extra/`` text, the archive
  markers); anything else (AOTInductor / ExecuTorch / MTIA binaries, legacy ``.pt`` state files, custom or opaque
  objects) is refused, as is any payload config entry marked ``use_pickle``. Then ``torch.export.load`` runs with
  every unpickling door shut for its duration: ``torch.load`` always gets ``weights_only=True`` (a request for
  ``weights_only=False`` — torch's own fallback — is refused, never retried), ``pickle.load(s)`` and torch's
  object unpickler raise. torch's warnings and its logged tracebacks are not shown.
* :func:`load_weights` reads a state_dict with ``torch.load(weights_only=True)``: no fallback.

Every refusal raises :class:`~msat_lava.cli_common.BadInput` (exit code 2) naming the file and the entry.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator

from msat_lava.cli_common import BadInput

__all__ = ["load_exported", "load_weights", "check_pt2_archive", "no_unpickling", "UnpicklingRefused",
           "MAX_ARCHIVE_BYTES"]

#: Largest total uncompressed size of a ``.pt2`` archive's entries (and of one weights file) accepted.
MAX_ARCHIVE_BYTES = 4 << 30
#: A compressed entry may expand at most this many times (zip bombs).
_MAX_RATIO = 200

_FIXED = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id",
          ".data/serialization_type"}
_PATTERNS = [re.compile(p) for p in (
    r"models/[A-Za-z0-9_.-]+\.json",
    r"data/weights/[A-Za-z0-9_.-]+_weights_config\.json",
    r"data/weights/weight_\d+",
    r"data/constants/[A-Za-z0-9_.-]+_constants_config\.json",
    r"data/constants/tensor_\d+",
    r"data/sample_inputs/[A-Za-z0-9_.-]+\.pt",
    r"extra/[^\x00]+",
)]


class UnpicklingRefused(Exception):
    """Raised inside :func:`no_unpickling` when anything tries to unpickle."""


def _refused(what: str):
    def refuse(*args: Any, **kwargs: Any):
        raise UnpicklingRefused(f"{what} refused: the file would need unpickling (arbitrary code)")
    return refuse


class _RefusedUnpickler(pickle.Unpickler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise UnpicklingRefused("pickle.Unpickler refused: the file would need unpickling (arbitrary code)")


@contextlib.contextmanager
def no_unpickling() -> Iterator[None]:
    """For the duration: ``torch.load`` is weights-only (a ``weights_only=False`` request raises
    :class:`UnpicklingRefused`), ``pickle.load``/``pickle.loads``/``pickle.Unpickler`` and torch's
    ``_pickle_load_obj`` raise; torch's loggers are muted and its warnings hidden."""
    import torch
    import torch.export.pt2_archive._package  # noqa: F401  (imported before anything is patched)
    import torch._export.serde.serialize  # noqa: F401

    original = torch.load

    def weights_only_load(f, *args: Any, weights_only: Any = None, **kwargs: Any):
        if weights_only is False:
            raise UnpicklingRefused("torch.load(weights_only=False) refused: the payload is not plain tensors")
        kwargs.pop("pickle_module", None)
        return original(f, *args, weights_only=True, **kwargs)

    saved: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, name: str, value: Any) -> None:
        if hasattr(obj, name):
            saved.append((obj, name, getattr(obj, name)))
            setattr(obj, name, value)

    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export", "torch.export.pt2_archive",
                                               "torch.export.pt2_archive._package", "torch._export.serde",
                                               "torch._export.serde.serialize", "torch.serialization")]
    levels = [(lg, lg.level, lg.propagate) for lg in loggers]
    patch(torch, "load", weights_only_load)
    patch(pickle, "load", _refused("pickle.load"))
    patch(pickle, "loads", _refused("pickle.loads"))
    patch(pickle, "Unpickler", _RefusedUnpickler)
    patch(torch._C, "_pickle_load_obj", _refused("torch object unpickling"))
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL + 1)
            lg.propagate = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)
        for lg, level, propagate in levels:
            lg.setLevel(level)
            lg.propagate = propagate


def _zip_entries(path: str, what: str) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    if not zipfile.is_zipfile(path):
        raise BadInput(f"{what} {path!r} is not a torch.export archive (not a zip file; a pickled model is never "
                       "loaded: save it with torch.export.save)")
    try:
        zf = zipfile.ZipFile(path)
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BadInput(f"{what} {path!r} is not a readable zip archive ({exc})") from None
    return zf, infos


def check_pt2_archive(path: str | os.PathLike) -> list[str]:
    """Refuse (BadInput naming the entry) a ``.pt2`` archive holding anything that could run code or that a
    plain exported program does not have; returns the archive's entry names (without the root folder)."""
    spath = str(path)
    what = "exported program"
    zf, infos = _zip_entries(spath, what)
    with zf:
        roots = {i.filename.split("/", 1)[0] for i in infos}
        if len(roots) != 1 or any("/" not in i.filename for i in infos):
            raise BadInput(f"{what} {spath!r}: not a torch.export archive (entries must share one root folder; "
                           f"found {sorted(roots)[:4]})")
        total = 0
        names: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            rel = info.filename.split("/", 1)[1]
            if info.is_dir() or rel == "":
                continue
            if ".." in rel.split("/") or rel.startswith("/"):
                raise BadInput(f"{what} {spath!r}: entry {info.filename!r} has an unsafe path")
            if rel not in _FIXED and not any(p.fullmatch(rel) for p in _PATTERNS):
                raise BadInput(f"{what} {spath!r}: entry {info.filename!r} is not part of a plain exported program "
                               "(compiled code, legacy pickled state or custom objects are refused)")
            total += info.file_size
            if info.compress_size and info.file_size > _MAX_RATIO * max(info.compress_size, 1024):
                raise BadInput(f"{what} {spath!r}: entry {info.filename!r} expands {info.file_size} bytes from "
                               f"{info.compress_size} (refused)")
            names[rel] = info
        if total > MAX_ARCHIVE_BYTES:
            raise BadInput(f"{what} {spath!r}: entries total {total} bytes (more than {MAX_ARCHIVE_BYTES})")
        for required in ("archive_format", "models/model.json"):
            if required not in names:
                raise BadInput(f"{what} {spath!r}: missing entry {required!r} (not a torch.export.save archive of "
                               "this torch version; legacy formats are refused)")
        for rel, info in names.items():
            if not rel.endswith("_config.json"):
                continue
            if info.file_size > 64 << 20:
                raise BadInput(f"{what} {spath!r}: entry {info.filename!r} is implausibly large")
            try:
                config = json.loads(zf.read(info).decode("utf-8"))
                entries = config["config"]
                if not isinstance(entries, dict):
                    raise TypeError("config is not an object")
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise BadInput(f"{what} {spath!r}: entry {info.filename!r} is not a payload config ({exc})") from None
            for key, meta in entries.items():
                if not isinstance(meta, dict):
                    raise BadInput(f"{what} {spath!r}: entry {info.filename!r}, item {key!r} is not an object")
                if meta.get("use_pickle") is not False:
                    raise BadInput(f"{what} {spath!r}: entry {info.filename!r}, item {key!r} is stored pickled "
                                   "(use_pickle); pickled payloads can run code and are refused")
                name = str(meta.get("path_name", ""))
                if not re.fullmatch(r"(weight|tensor)_\d+", name):
                    raise BadInput(f"{what} {spath!r}: entry {info.filename!r}, item {key!r} has payload "
                                   f"{name!r} (only plain tensor payloads are accepted)")
        return sorted(names)


def load_exported(path: str | os.PathLike):
    """The ``ExportedProgram`` of a ``.pt2`` archive, loaded without unpickling (module docstring)."""
    import torch

    spath = str(path)
    if not Path(spath).is_file():
        raise BadInput(f"exported program {spath!r} does not exist")
    check_pt2_archive(spath)
    try:
        with no_unpickling():
            return torch.export.load(spath)
    except UnpicklingRefused as exc:
        raise BadInput(f"exported program {spath!r}: {exc}") from None
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [""])[0][:300]
        raise BadInput(f"cannot load exported program {spath!r}: {type(exc).__name__}: {text}") from None


def load_weights(path: str | os.PathLike):
    """``torch.load(path, weights_only=True)`` on the CPU — never with pickling allowed."""
    import torch

    spath = str(path)
    if not Path(spath).is_file():
        raise BadInput(f"weights file {spath!r} does not exist")
    if zipfile.is_zipfile(spath):
        with zipfile.ZipFile(spath) as zf:
            total = sum(i.file_size for i in zf.infolist())
        if total > MAX_ARCHIVE_BYTES:
            raise BadInput(f"weights file {spath!r}: entries total {total} bytes (more than {MAX_ARCHIVE_BYTES})")
    try:
        with no_unpickling():
            return torch.load(spath, map_location="cpu", weights_only=True)
    except UnpicklingRefused as exc:
        raise BadInput(f"weights file {spath!r}: {exc}") from None
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [""])[0][:300]
        raise BadInput(f"cannot load weights {spath!r} without unpickling (only tensors and plain containers are "
                       f"accepted): {type(exc).__name__}: {text}") from None
