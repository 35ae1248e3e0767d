"""Atomic file creation, shared by every writer of the project (network files, reports, predictions).

``with atomic_target(path, overwrite=...) as tmp:`` yields a temporary path in the destination's directory; the
caller writes ``tmp`` completely; on a clean exit the file is flushed to disk, given the permissions a plain
``open(path, 'w')`` would give (0o666 minus the umask; ``mkstemp`` would leave 0o600) and moved into place with
``os.replace`` — or hard-linked when ``overwrite`` is False, so a file that appeared meanwhile is never clobbered.
On any error the temporary file is removed and ``path`` is left as it was: readers never see a partial file.

Temporary names are ``.<name>.<host>.<pid>-<random><suffix>``. A process killed while writing leaves its
temporary behind; the next write to the same destination removes such leftovers of *our* pattern whose process
is gone (same host) or that are older than a day (:func:`clean_stale`). ``atomic_directory`` does the same for a
whole directory of results: written under a temporary sibling, then renamed into place, so it appears whole.
Errors name the destination, never the temporary (:class:`DestinationError`).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

from netx_export.errors import FileExistsRefusedError, NetxExportError

__all__ = ["atomic_target", "atomic_directory", "clean_stale", "DestinationError", "STALE_AGE_S"]

#: A leftover temporary of our pattern older than this is removed whatever its process.
STALE_AGE_S = 24 * 3600


class DestinationError(NetxExportError, OSError):
    """An output destination cannot be written (names the destination, not the temporary file)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _refuse(path: Path) -> FileExistsRefusedError:
    return FileExistsRefusedError(f"{str(path)!r} exists; pass overwrite=True to replace it")


def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:32] or "host"


def _prefix(name: str) -> str:
    return f".{name}.{_host()}.{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(path: str | os.PathLike, suffix: str = ".tmp") -> list[str]:
    """Remove leftover temporaries of ``path`` (our naming pattern only): those of a dead process of this host,
    and any older than :data:`STALE_AGE_S`. Returns the removed names. Never raises."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    head = f".{path.name}."
    host = _host()
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        if not (name.startswith(head) and name.endswith(suffix)) or ".probe." in name:
            continue
        middle = name[len(head):len(name) - len(suffix)]
        parts = middle.rsplit(".", 1)
        stale = False
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if len(parts) == 2 and "-" in parts[1]:
            owner_host, rest = parts
            pid_text = rest.split("-", 1)[0]
            if owner_host == host and pid_text.isdigit() and not _alive(int(pid_text)):
                stale = True
        if age > STALE_AGE_S:
            stale = True
        if not stale:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(name)
        except OSError:
            pass
    return removed


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
    try:
        if make_parents:
            directory.mkdir(parents=True, exist_ok=True)
        clean_stale(path, suffix)
        fd, tmp = tempfile.mkstemp(prefix=_prefix(path.name), suffix=suffix, dir=directory)
    except OSError as exc:
        raise DestinationError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        yield tmp
        try:
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
        except OSError as exc:
            if isinstance(exc, NetxExportError):
                raise
            raise DestinationError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; on success it replaces ``path`` (an existing
    directory there is moved aside and removed), so readers see the old results or the new ones, never a mix.
    On error the temporary directory is removed and ``path`` is untouched."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsRefusedError(f"{str(path)!r} exists and is not a directory")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        clean_stale(path, ".tmpdir")
        tmp = Path(tempfile.mkdtemp(prefix=_prefix(path.name), suffix=".tmpdir", dir=parent))
    except OSError as exc:
        raise DestinationError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    old: Path | None = None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=_prefix(path.name), suffix=".tmpdir", dir=parent))
                os.rmdir(old)
                os.rename(path, old)
            os.rename(tmp, path)
        except OSError as exc:
            if old is not None and old.exists() and not path.exists():
                os.rename(old, path)
                old = None
            raise DestinationError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
