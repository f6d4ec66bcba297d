"""Atomic writes: the one place that turns "write a file" into "temporary file, then rename", and "write a folder"
into "temporary sibling folder, then rename" (a folder published whole).

A crash or a kill in the middle of a write leaves the previous file or folder (or none) in place, never half of one.
A folder is replaced only if this project wrote it (:data:`MANIFEST`): never a file the project did not write.
A folder one process writes for a long time (a training run) is locked with :func:`folder_lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


PARTIAL = ".partial-"
"""Marks the temporary sibling of a folder being built: ``.<name>.partial-<pid>-<random>``."""

WORK = ".work"
"""Marks a scratch folder beside an output (:func:`work_folder`): ``.<name>.work.partial-<pid>-<random>``."""

MANIFEST = ".conditioned-sep.json"
"""The file inside a folder that :func:`atomic_folder` published with ``replace=True``: it lists the files the
project wrote there, and only such a folder (holding nothing else) is ever replaced."""


class ForeignFolderError(ValueError):
    """A folder that this project may not replace: it holds files the project did not write, or it is the current,
    home or root folder, or it holds an input."""


def _dead(partial: Path) -> bool:
    """True when the process id in ``partial``'s name (``...partial-<pid>-...``) no longer runs."""
    try:
        pid = int(partial.name.rsplit(PARTIAL, 1)[1].split("-")[0])
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # a live process of another user
    return False


def _remove_dead(pattern: str, folder: Path) -> None:
    for partial in folder.glob(pattern):
        if _dead(partial):
            shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)


def remove_stale_partials(path: str | os.PathLike) -> None:
    """Remove the temporary siblings of ``path`` left by killed writers (their process id no longer runs)."""
    path = Path(path)
    _remove_dead(f".{glob.escape(path.name)}{PARTIAL}*", path.parent)  # "song [live]" is a name, not a pattern


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


def _protected(path: Path) -> str | None:
    """What ``path`` is when it is a folder never to be replaced: the root, the home or the current folder (or one
    above the current folder); None otherwise."""
    real = Path(os.path.realpath(path))
    cwd = Path.cwd()
    if real.parent == real:
        return "the file-system root"
    if real == Path(os.path.realpath(Path.home())):
        return "your home folder"
    if real == cwd:
        return "the current folder"
    if cwd.is_relative_to(real):
        return "a folder above the current one"
    return None


def check_replaceable(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (),
                      suggest: str | os.PathLike | None = None) -> None:
    """Raise :class:`ForeignFolderError` unless ``atomic_folder(path, replace=True)`` may write ``path``.

    Allowed: a missing or empty folder, or one this project wrote (its :data:`MANIFEST` lists everything else in
    it). Refused whatever they hold: the file-system root, the home folder, the current folder or one above it, and
    a folder that holds one of ``inputs``. ``suggest`` is the new folder the message proposes instead.
    """
    path = Path(path)
    way_out = f"pass a new folder, such as {suggest}" if suggest else "pass a new folder"
    what = _protected(path)
    if what:
        raise ForeignFolderError(f"output folder {str(path)!r} is {what}: it is never replaced; {way_out}")
    real = Path(os.path.realpath(path))
    for item in inputs:
        if Path(os.path.realpath(item)).is_relative_to(real):
            raise ForeignFolderError(f"output folder {path} holds the input {item}: replacing the folder would "
                                     f"delete it; {way_out}")
    if not path.exists():
        return
    if not path.is_dir():
        raise ForeignFolderError(f"output folder {path} is a file; {way_out}")
    entries = {p.name for p in path.iterdir()}
    ours = _manifest_files(path / MANIFEST) if MANIFEST in entries else set()
    foreign = sorted(entries - ours - {MANIFEST})
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ForeignFolderError(f"output folder {path} holds files conditioned-sep did not write ({shown}); it is "
                                 f"left as it is: {way_out}, or move those files elsewhere")


def _manifest_files(manifest: Path) -> set[str]:
    """The names a :data:`MANIFEST` lists (none when it is not ours or cannot be read)."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(data, dict) or data.get("written_by") != "conditioned-sep":
        return set()
    return {name for name in data.get("files", ()) if isinstance(name, str)}


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it becomes ``path`` in one rename.

    Without ``replace`` an existing non-empty ``path`` is left alone and :class:`FileExistsError` is raised. With
    ``replace`` the published folder gets a :data:`MANIFEST` listing its files, and an existing ``path`` is swapped
    out (renamed aside, then deleted) after the new folder is complete, only if it is such a folder of ours
    (:func:`check_replaceable`, checked on entry and again before the swap: :class:`ForeignFolderError`). An empty
    folder is filled either way; the root, home and current folders never are. On any exception the temporary
    folder is removed and ``path`` is untouched. Stale partial folders of killed processes are removed first.
    """
    path = Path(os.path.abspath(path))
    what = _protected(path)
    if what:
        raise ForeignFolderError(f"cannot publish a folder as {path}: it is {what}; pass a new folder")
    if not path.parent.exists():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    if replace:
        check_replaceable(path)
    remove_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{PARTIAL}{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
        if replace:
            files = sorted(p.name for p in tmp.iterdir())
            (tmp / MANIFEST).write_text(json.dumps({"written_by": "conditioned-sep", "files": files}, indent=1) + "\n",
                                        encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists() and not (path.is_dir() and not any(path.iterdir())):
            if not replace:
                raise FileExistsError(f"{path} exists; remove it or choose another folder")
            check_replaceable(path)  # again: a file put there meanwhile is not ours to delete
            _swap(tmp, path)
        else:
            if path.exists():
                path.rmdir()
            os.rename(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap(new: Path, path: Path) -> None:
    """Put folder ``new`` in place of folder ``path`` and delete the earlier one; on failure ``path`` stays."""
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}{PARTIAL}{os.getpid()}-old-", dir=path.parent))
    try:
        os.replace(path, old / path.name)
        try:
            os.rename(new, path)
        except BaseException:
            os.replace(old / path.name, path)  # the earlier folder back in place
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        with contextlib.suppress(OSError):
            old.rmdir()  # left only when the earlier folder could not be put back


@contextlib.contextmanager
def work_folder(beside: str | os.PathLike) -> Iterator[Path]:
    """A scratch folder beside ``beside`` (``.<name>.work.partial-<pid>-<random>``), removed on exit.

    It lives on the output's disk, not in the system's temporary folder (often a small RAM disk), since it may hold
    a decoded copy of a whole song. Scratch folders of killed processes in the same parent folder are removed first.
    """
    beside = Path(os.path.abspath(beside))
    _remove_dead(f".*{WORK}{PARTIAL}*", beside.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}{WORK}{PARTIAL}{os.getpid()}-", dir=beside.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


LOCK_NAME = ".lock"
"""The lock file :func:`folder_lock` holds inside a folder (it holds the process id of its holder)."""


class FolderLockedError(ValueError):
    """A folder that another live process is writing (see :func:`folder_lock`)."""


_HELD_LOCKS: set[int] = set()
"""File descriptors of the locks :func:`folder_lock` holds in this process."""


def _drop_inherited_locks() -> None:
    # a forked child (a DataLoader worker) shares the parent's open lock file: it must not keep the lock alive
    # after the parent dies, so it closes its copies (the parent's lock is untouched: it holds its own descriptor)
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, what: str = "folder") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) while the block runs: a second holder, in this
    process or another, gets :class:`FolderLockedError` naming the folder and the process holding it.

    The lock is ``flock`` on ``<folder>/.lock`` (POSIX), which the system releases when its process ends: a lock
    file left by a killed process (its id no longer runs) does not block. Forked children (loader workers) close
    their copy of the lock file at once, so they never hold the lock past their parent. The file is removed on
    release.
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
    owner = os.getpid()
    _HELD_LOCKS.add(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{owner}\n".encode(), 0)
        yield path
    finally:
        if os.getpid() == owner:  # never in a forked child that unwinds: the lock and its file are the parent's
            _HELD_LOCKS.discard(fd)
            path.unlink(missing_ok=True)  # while still locked: a waiter that opened it sees another inode, retries
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


class FolderNotWritableError(OSError):
    """A folder in which no file can be created (read-only disk, no permission, a file in its place)."""


def check_writable(folder: str | os.PathLike) -> None:
    """Create ``folder`` if missing and create (then remove) a hidden file in it, so that a command that will write
    there fails before its work, not after. Raises :class:`FolderNotWritableError` naming the folder and the cause
    (callers add the option to change)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".write-test{PARTIAL}{os.getpid()}-", dir=folder)
    except OSError as err:
        raise FolderNotWritableError(f"cannot write to the folder {folder} ({err.strerror or err})") from err
    os.close(fd)
    os.unlink(name)

