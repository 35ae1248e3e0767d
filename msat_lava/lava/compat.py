"""Python 3.11 compatibility for lava-nc 0.10.0 / lava-dl 0.6.0, applied at import time.

Two fixes, both in memory (site-packages is never edited):

1. ``lava.magma.compiler.var_model`` declares dataclass fields with the default
   ``ByteEncoder()``; Python >= 3.11 rejects mutable (unhashable) defaults. A
   :class:`importlib.abc.MetaPathFinder` matches only that module and compiles its
   source with ``field(default_factory=ByteEncoder)`` instead (LAVA_NOTES §1.4).
   Where the pattern is absent (an upstream fix, or Python 3.10) the module loads
   unchanged, so the fix is a no-op there.
2. ``lava.lib.dl.slayer.object_detection`` imports torchvision, which has no working
   CPU build here; netx never uses it. A placeholder module is registered for that
   name only if the real one cannot be imported.

3. Lava's ``lava.magma.runtime.message_infrastructure.multiprocessing`` calls
   ``multiprocessing.set_start_method('fork')`` when it is imported, which raises
   ``RuntimeError: context has already been set`` if anything touched the default context
   first — tqdm does, by creating its multiprocessing lock. The same hook resets the context
   (``set_start_method(None, force=True)``, public API) right before that module executes, so
   Lava's own call succeeds whatever was imported or run before it.

Installing the fixes never imports Lava and never sets the start method itself.
"""
from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import types

__all__ = ["install", "var_model_fix_active", "VAR_MODEL"]

VAR_MODEL = "lava.magma.compiler.var_model"
_OBJECT_DETECTION = "lava.lib.dl.slayer.object_detection"
LAVA_MP = "lava.magma.runtime.message_infrastructure.multiprocessing"
_PATTERN = re.compile(r"(:\s*ByteEncoder\s*=\s*)ByteEncoder\(\)")
_FIELD_NAME = "_msat_lava_field"

_state = {"installed": False, "patched": False}


class _PatchedVarModelLoader(importlib.machinery.SourceFileLoader):
    """Compiles var_model from source with the 3.11 default_factory substitution."""

    def exec_module(self, module: types.ModuleType) -> None:
        module.__dict__[_FIELD_NAME] = dataclasses.field
        super().exec_module(module)

    def get_code(self, fullname: str):  # bypasses any cached .pyc on purpose
        source = self.get_source(fullname)
        patched, count = _PATTERN.subn(rf"\1{_FIELD_NAME}(default_factory=ByteEncoder)", source)
        _state["patched"] = count > 0
        return compile(patched, self.path, "exec", dont_inherit=True)


class _ForkContextLoader(importlib.machinery.SourceFileLoader):
    """Loads Lava's multiprocessing module with a fresh default context, so its set_start_method('fork') works."""

    def exec_module(self, module: types.ModuleType) -> None:
        import multiprocessing

        if multiprocessing.get_start_method(allow_none=True) is not None:
            multiprocessing.set_start_method(None, force=True)
        super().exec_module(module)


class _VarModelFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == VAR_MODEL and _needs_var_model_fix():
            loader_cls = _PatchedVarModelLoader
        elif fullname == LAVA_MP:
            loader_cls = _ForkContextLoader
        else:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            spec.loader = loader_cls(fullname, spec.origin)
        return spec


def _needs_var_model_fix() -> bool:
    return sys.version_info >= (3, 11)


def install() -> None:
    """Install the fixes (module docstring). Idempotent; safe to call before or without lava installed."""
    if _state["installed"]:
        return
    if not any(isinstance(f, _VarModelFinder) for f in sys.meta_path):
        # Modules imported before this call keep their state (if var_model loaded, it needed no fix).
        sys.meta_path.insert(0, _VarModelFinder())
    if _OBJECT_DETECTION not in sys.modules and importlib.util.find_spec("torchvision") is None:
        stub = types.ModuleType(_OBJECT_DETECTION)
        stub.__doc__ = "msat-lava placeholder: torchvision is unavailable; netx does not use this package."
        stub.__path__ = []  # a package, so submodule imports fail cleanly with ImportError
        sys.modules[_OBJECT_DETECTION] = stub
    _state["installed"] = True


def var_model_fix_active() -> bool:
    """True when var_model was compiled through the fix with at least one substitution."""
    return bool(_state["patched"])
