"""A generated dataset cached on disk: found by its manifest, built once in a temporary sibling folder and published
whole (:func:`conditioned_sep.fileio.atomic_folder`), with the manifest written last.

A manifest is a JSON object whose *header* (format name, version, seed, config) says what was made, plus
``"tracks": {split: [track folder names]}``; a root whose header differs is refused, one whose files are missing
is rebuilt, a folder that is not such a dataset is never touched.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..fileio import atomic_folder, atomic_write_text
from ..stems import SAMPLE_RATE
from .folder import DatasetError

MANIFEST = "manifest.json"
ENV_VAR = "CONDITIONED_SEP_DATA"


def cache_root(name: str) -> Path:
    """``$CONDITIONED_SEP_DATA/<name>`` if that variable is set, else ``$XDG_CACHE_HOME/conditioned-sep/<name>``
    (``~/.cache/...``): one parent folder, so the generated datasets (rendered, synthetic) never share a root."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser() / name
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "conditioned-sep" / name


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The manifest of ``root`` as a dict, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def cache_state(root: Path, header: dict, required: Sequence[str]) -> bool | None:
    """True: a complete dataset with this ``header``; False: a complete one with another; None: not a dataset (or
    one with files missing). ``required`` are the file names every track folder must hold."""
    data = read_manifest(root)
    if data is None:
        return None
    if any(data.get(k) != v for k, v in header.items()):
        return False
    for split, names in data.get("tracks", {}).items():
        for name in names:
            if not all((root / split / name / f).is_file() for f in required):
                return None
    return True


def ensure_cached(root: Path, *, header: dict, required: Sequence[str], build: Callable[[Path], dict],
                  what: str) -> Path:
    """Return ``root`` holding the dataset ``header`` describes, calling ``build(tmp_folder)`` first if needed.

    ``build`` fills the folder and returns the manifest's body (at least ``{"tracks": {split: [names]}}``); the
    manifest (header + body) is written last, then the folder is renamed into place. Raises :class:`DatasetError`
    when ``root`` holds another dataset or foreign files. ``what`` names the dataset in messages.
    """
    state = cache_state(root, header, required)
    if state is True:
        return root
    if state is False:
        raise DatasetError(f"{root} holds a {what} made with another seed, size or version than {header}; "
                           "delete that folder or pass another root")
    if root.exists() and any(root.iterdir()):
        if (root / MANIFEST).exists():
            shutil.rmtree(root)  # our own dataset with missing files: make it again
        else:
            raise DatasetError(f"{root} exists and is not a {what} made by conditioned-sep (no {MANIFEST}); "
                               "delete it or pass another root")
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_folder(root) as tmp:
            body = build(tmp)
            atomic_write_text(tmp / MANIFEST, json.dumps({**header, **body}, indent=1))
    except FileExistsError:
        # another process finished first: use its copy if it is complete
        if cache_state(root, header, required) is not True:
            raise
    return root


@dataclass(frozen=True)
class SongSetConfig:
    """Size of a generated song set: songs per split and their length in seconds (the rendered default's sizes;
    :class:`~conditioned_sep.data.synthetic.SyntheticConfig` changes some)."""

    train_songs: int = 160
    valid_songs: int = 12
    test_songs: int = 14
    train_seconds: float = 12.0
    valid_seconds: float = 12.0
    test_seconds: float = 15.0
    sample_rate: int = SAMPLE_RATE

    def split_sizes(self) -> dict[str, tuple[int, float]]:
        """``{split: (songs, seconds)}`` in the order train, valid, test."""
        return {"train": (self.train_songs, self.train_seconds), "valid": (self.valid_songs, self.valid_seconds),
                "test": (self.test_songs, self.test_seconds)}


SongJob = tuple[str, int, int, int, float, int]
"""One song to make: ``(split folder, seed, split index, song index, seconds, sample rate)``."""


def make_songs(out: Path, *, seed: int, config: SongSetConfig, job: Callable[[SongJob], tuple[str, str]],
               workers: int | None, progress: bool, desc: str) -> dict[str, list[str]]:
    """Make every song of ``config`` under ``out/<split>/`` with ``job`` (which writes one song and returns
    ``(split folder, song folder name)``), on ``workers`` processes (default: up to 2); ``{split: [names]}``.

    Song ``i`` of split ``k`` draws from ``default_rng([seed, k, i])`` in ``job``, so the set does not depend on the
    number of workers."""
    jobs: list[SongJob] = []
    for split_index, (split, (n_songs, seconds)) in enumerate(config.split_sizes().items()):
        (out / split).mkdir(parents=True, exist_ok=True)
        jobs += [(str(out / split), seed, split_index, i, seconds, config.sample_rate) for i in range(n_songs)]
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    names: list[tuple[str, str]] = []
    with tqdm(total=len(jobs), desc=desc, unit="song", disable=not progress) as bar:
        if workers > 1 and len(jobs) > 1:
            # fork where there is one (spawn would re-run an unguarded __main__ script); no threads run before it
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            with mp.get_context(method).Pool(workers) as pool:
                for result in pool.imap(job, jobs, chunksize=1):
                    names.append(result)
                    bar.update()
        else:
            for one in jobs:
                names.append(job(one))
                bar.update()
    tracks: dict[str, list[str]] = {split: [] for split in config.split_sizes()}
    for split_dir, name in names:
        tracks[Path(split_dir).name].append(name)
    return tracks
