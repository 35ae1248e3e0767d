"""Atomic file creation, shared by every writer of the project (network files, reports, predictions).

``with atomic_target(path, overwrite=...) as tmp:`` yields a temporary path in the destination's directory; the
caller writes ``tmp`` completely; on a clean exit the file is flushed to disk, given the permissions a plain
``open(path, 'w')`` would give (0o666 minus the umask; ``mkstemp`` would leave 0o600) and moved into place with
``os.replace`` — or hard-linked when ``overwrite`` is False, so a file that appeared meanwhile is never clobbered.
On any error the temporary file is removed and ``path`` is left as it was: readers never see a partial file.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from netx_export.errors import FileExistsRefusedError

__all__ = ["atomic_target"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _refuse(path: Path) -> FileExistsRefusedError:
    return FileExistsRefusedError(f"{str(path)!r} exists; pass overwrite=True to replace it")


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike, *, overwrite: bool = True, suffix: str = ".tmp",
                  make_parents: bool = False) -> Iterator[str]:
    """Yield a temporary path to write; publish it at ``path`` atomically on success (module docstring)."""
    path = Path(path)
    if path.is_dir():
        raise FileExistsRefusedError(f"{str(path)!r} is a directory")
    if path.exists() and not overwrite:
        raise _refuse(path)
    directory = path.parent if str(path.parent) else Path(".")
    if make_parents:
        directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise _refuse(path) from None
            except OSError:  # no hard links on this file system
                if path.exists():
                    raise _refuse(path) from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
