"""Atomic writes: a file or a folder appears whole or not at all."""

import os

import pytest

from conditioned_sep.fileio import atomic_folder, atomic_path, atomic_write_text


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
    with atomic_folder(target) as tmp:
        (tmp / "vocals.wav").write_text("v")
        assert not target.exists()  # nothing visible before the folder is complete
    assert sorted(p.name for p in target.iterdir()) == ["vocals.wav"]
    # a failure half way keeps the old folder as it was and leaves no temporary folder
    with pytest.raises(RuntimeError):
        with atomic_folder(target, replace=True) as tmp:
            (tmp / "drums.wav").write_text("d")
            raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["vocals.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song"]
    # replace swaps the whole folder: no mix of old and new files
    with atomic_folder(target, replace=True) as tmp:
        (tmp / "bass.wav").write_text("b")
    assert sorted(p.name for p in target.iterdir()) == ["bass.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song"]
    # without replace an existing folder is left alone
    with pytest.raises(FileExistsError, match="exists"):
        with atomic_folder(target) as tmp:
            (tmp / "x").write_text("x")
    assert sorted(p.name for p in target.iterdir()) == ["bass.wav"]
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
