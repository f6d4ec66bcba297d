"""Atomic writes: the one place that turns "write a file" into "temporary file, then rename", and "write a folder"
into "temporary sibling folder, then rename" (a folder published whole).

A crash or a kill in the middle of a write leaves the previous file or folder (or none) in place, never half of one.
A folder one process writes for a long time (a training run) is locked with :func:`folder_lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


PARTIAL = ".partial-"
"""Marks the temporary sibling of a folder being built: ``.<name>.partial-<pid>-<random>``."""


def remove_stale_partials(path: str | os.PathLike) -> None:
    """Remove the temporary siblings of ``path`` left by killed writers (their process id no longer runs)."""
    path = Path(path)
    for partial in path.parent.glob(f".{path.name}{PARTIAL}*"):
        try:
            pid = int(partial.name.rsplit(PARTIAL, 1)[1].split("-")[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
        except PermissionError:
            pass  # a live process of another user


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The temporary file keeps the target's suffix so that writers which infer the format from it work.
    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    remove_stale_partials(path)  # what killed writers of this path left behind
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}{PARTIAL}{os.getpid()}-", suffix=f".tmp{path.suffix}",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes owner-only files; give the result the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it becomes ``path`` in one rename.

    With ``replace`` an existing ``path`` is swapped out (renamed aside, then deleted) only after the new folder is
    complete; without it an existing non-empty ``path`` is left alone and :class:`FileExistsError` is raised. On any
    exception the temporary folder is removed and ``path`` is untouched. Stale partial folders of killed
    processes are removed first.
    """
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    remove_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{PARTIAL}{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists() and not (path.is_dir() and not any(path.iterdir())):
            if not replace:
                raise FileExistsError(f"{path} exists; remove it or choose another folder")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}{PARTIAL}{os.getpid()}-old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if path.exists():
                path.rmdir()
            os.rename(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


LOCK_NAME = ".lock"
"""The lock file :func:`folder_lock` holds inside a folder (it holds the process id of its holder)."""


class FolderLockedError(ValueError):
    """A folder that another live process is writing (see :func:`folder_lock`)."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, what: str = "folder") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) while the block runs: a second holder, in this
    process or another, gets :class:`FolderLockedError` naming the folder and the process holding it.

    The lock is ``flock`` on ``<folder>/.lock`` (POSIX), which the system releases when its process ends: a lock
    file left by a killed process (its id no longer runs) does not block. The file is removed on release.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderLockedError(locked_message(folder, holder, what=what)) from None
        try:  # the previous holder removes the file on release: lock the file that is there, not a removed one
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still locked: a waiter that opened it sees another inode and retries
        os.close(fd)


def locked_message(folder: str | os.PathLike, holder: str, *, what: str = "folder") -> str:
    """What :class:`FolderLockedError` says: the folder, the process holding it, what to do."""
    return f"{what} {folder} is in use by process {holder} (its {LOCK_NAME}); wait for it to finish or stop it"


def lock_holder(folder: str | os.PathLike) -> str | None:
    """The process id (as written) of the live process that holds ``folder``'s :func:`folder_lock`, else None.
    Takes nothing: for messages about a folder that is not this process's to write."""
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(fd)


def check_writable(folder: str | os.PathLike) -> None:
    """Create ``folder`` if missing and write (then remove) a hidden file in it, so that a run that will write
    there fails before its work, not after. Raises the :class:`OSError` (callers add their way out)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
        pass

