"""Atomic writes: a file or a folder appears whole or not at all."""

import json
import os
from pathlib import Path

import pytest

from conditioned_sep import fileio
from conditioned_sep.fileio import (
    MANIFEST,
    ForeignFolderError,
    FolderNotWritableError,
    atomic_folder,
    atomic_path,
    atomic_write_text,
    check_replaceable,
    check_writable,
    work_folder,
)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_text(tmp_path / "missing" / "f.txt", "x")


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644


def test_atomic_folder_publishes_whole_or_not_at_all(tmp_path):
    target = tmp_path / "song"
    with atomic_folder(target, replace=True) as tmp:
        (tmp / "vocals.wav").write_text("v")
        assert not target.exists()  # nothing visible before the folder is complete
    assert _names(target) == [MANIFEST, "vocals.wav"]  # the manifest says which files are ours
    # a failure half way keeps the old folder as it was and leaves no temporary folder
    with pytest.raises(RuntimeError):
        with atomic_folder(target, replace=True) as tmp:
            (tmp / "drums.wav").write_text("d")
            raise RuntimeError("killed")
    assert _names(target) == [MANIFEST, "vocals.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song"]
    # replace swaps the whole folder: no mix of old and new files
    with atomic_folder(target, replace=True) as tmp:
        (tmp / "bass.wav").write_text("b")
    assert _names(target) == [MANIFEST, "bass.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song"]
    # without replace an existing folder is left alone
    with pytest.raises(FileExistsError, match="exists"):
        with atomic_folder(target) as tmp:
            (tmp / "x").write_text("x")
    assert _names(target) == [MANIFEST, "bass.wav"]
    # an empty folder in the way is fine
    (tmp_path / "empty").mkdir()
    with atomic_folder(tmp_path / "empty") as tmp:
        (tmp / "y").write_text("y")
    assert (tmp_path / "empty" / "y").read_text() == "y"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_folder(tmp_path / "missing" / "song"):
            pass


def test_atomic_folder_removes_partials_of_dead_processes_only(tmp_path):
    dead = tmp_path / ".song.partial-999999999-abc"
    alive = tmp_path / f".song.partial-{os.getpid()}-abc"
    dead.mkdir()
    alive.mkdir()
    with atomic_folder(tmp_path / "song"):
        pass
    assert not dead.exists() and alive.exists()


def test_atomic_write_cleans_temporary_files_that_killed_writers_left(tmp_path):
    dead = tmp_path / ".best.ckpt.partial-999999999-abc.tmp.ckpt"  # what a SIGKILL during a save leaves
    alive = tmp_path / f".best.ckpt.partial-{os.getpid()}-abc.tmp.ckpt"
    dead.write_bytes(b"x" * 100)
    alive.write_bytes(b"y")
    atomic_write_text(tmp_path / "best.ckpt", "new")
    assert not dead.exists() and alive.exists() and (tmp_path / "best.ckpt").read_text() == "new"


def test_a_folder_is_replaced_only_if_this_project_wrote_all_of_it(tmp_path):
    """The reported data loss: a song's own folder (song.wav, notes.txt) was replaced whole by its stems."""
    album = tmp_path / "album"
    album.mkdir()
    (album / "song.wav").write_text("the user's song")
    (album / "notes.txt").write_text("the user's notes")
    with pytest.raises(ForeignFolderError, match=r"album holds files conditioned-sep did not write \(notes\.txt, "
                                                 r"song\.wav\); it is left as it is: pass a new folder"):
        with atomic_folder(album, replace=True) as tmp:
            (tmp / "vocals.wav").write_text("v")
    assert _names(album) == ["notes.txt", "song.wav"] and _names(tmp_path) == ["album"]
    # a folder of ours with a file the user put there since: refused too, checked again just before the swap
    ours = tmp_path / "ours"
    with atomic_folder(ours, replace=True) as tmp:
        (tmp / "vocals.wav").write_text("v")
    with pytest.raises(ForeignFolderError, match=r"mine\.txt"):
        with atomic_folder(ours, replace=True) as tmp:
            (tmp / "drums.wav").write_text("d")
            (ours / "mine.txt").write_text("added while the new folder was being written")
    assert _names(ours) == [MANIFEST, "mine.txt", "vocals.wav"]
    # a manifest that is not ours (or not JSON) owns nothing
    (album / MANIFEST).write_text(json.dumps({"written_by": "someone else", "files": ["notes.txt", "song.wav"]}))
    with pytest.raises(ForeignFolderError):
        check_replaceable(album)
    (album / MANIFEST).write_text("{not json")
    with pytest.raises(ForeignFolderError):
        check_replaceable(album)
    # a folder holding an input is refused whatever it holds
    with pytest.raises(ForeignFolderError, match=r"holds the input .*song\.wav.*such as .*album/song"):
        check_replaceable(tmp_path, inputs=[album / "song.wav"], suggest=album / "song")


@pytest.mark.parametrize("where", [".", "", "/", "~", ".."])
def test_the_current_home_and_root_folders_are_never_replaced(tmp_path, monkeypatch, where):
    """``separate_file(song, ".")`` left an empty ``..partial-PID-old-*`` folder in the current folder, and
    ``separate_file(song, "/")`` made one in the file-system root."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    root_before = _names(Path("/"))
    target = os.path.expanduser(where)
    with pytest.raises(ForeignFolderError, match=r"is (the file-system root|your home folder|the current folder|"
                                                 r"a folder above the current one): it is never replaced"):
        check_replaceable(target)
    with pytest.raises(ForeignFolderError, match="never|cannot publish"):
        with atomic_folder(target, replace=True) as tmp:
            (tmp / "vocals.wav").write_text("v")
    assert _names(cwd) == [] and _names(tmp_path) == ["cwd", "home"] and _names(tmp_path / "home") == []
    assert _names(Path("/")) == root_before


def test_a_failed_swap_puts_the_earlier_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "song"
    with atomic_folder(target, replace=True) as tmp:
        (tmp / "vocals.wav").write_text("old")

    def no_rename(src, dst):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "rename", no_rename)
    with pytest.raises(OSError, match="I/O error"):
        with atomic_folder(target, replace=True) as tmp:
            (tmp / "vocals.wav").write_text("new")
    assert (target / "vocals.wav").read_text() == "old"
    assert _names(tmp_path) == ["song"]  # no ``.song.partial-PID-old-*`` left beside it


def test_work_folders_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    """A killed run left ``.<song>.work-*/resampled.wav``, a float32 copy of the song, for good."""
    dead = tmp_path / ".other song.work.partial-999999999-abc"  # any song's: they are all ours
    alive = tmp_path / f".song.work.partial-{os.getpid()}-abc"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "resampled.wav").write_bytes(b"x" * 1000)
    (tmp_path / ".song.work-abc").mkdir()  # no process id: cannot tell whether it is in use, kept
    with work_folder(tmp_path / "song") as work:
        assert work.parent == tmp_path and work.name.startswith(f".song.work.partial-{os.getpid()}-")
        (work / "decoded.wav").write_bytes(b"y")
    assert _names(tmp_path) == [".song.work-abc", alive.name]


def test_a_folder_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    check_writable(tmp_path)
    assert _names(tmp_path) == []

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    with pytest.raises(FolderNotWritableError, match=rf"cannot write to the folder {tmp_path} \(Permission denied\)"):
        check_writable(tmp_path)


def test_stale_partials_of_a_name_with_brackets_are_found(tmp_path):
    dead = tmp_path / ".song [live].partial-999999999-abc"
    dead.mkdir()
    with atomic_folder(tmp_path / "song [live]"):
        pass
    assert _names(tmp_path) == ["song [live]"]


def test_a_forked_child_does_not_keep_a_folder_lock_alive(tmp_path):
    """A loader worker forked while a run holds its folder closes its copy of the lock: once the holder is gone,
    the folder is free even while the child still runs."""
    import signal
    import time

    from conditioned_sep.fileio import FolderLockedError, folder_lock

    read, write = os.pipe()
    holder = os.fork()
    if holder == 0:  # the run: takes the lock, forks a long-lived worker, tells its pid, then waits to be killed
        try:
            with folder_lock(tmp_path / "run"):
                worker = os.fork()
                if worker == 0:
                    time.sleep(30)
                    os._exit(0)
                os.write(write, f"{worker}\n".encode())
                time.sleep(30)
        finally:
            os._exit(0)
    worker = int(os.read(read, 32).decode())
    try:
        with pytest.raises(FolderLockedError, match=f"in use by process {holder}"):
            with folder_lock(tmp_path / "run"):
                pass
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
        assert os.kill(worker, 0) is None  # the worker still runs
        with folder_lock(tmp_path / "run"):  # and the folder is free
            pass
    finally:
        os.kill(worker, signal.SIGKILL)
