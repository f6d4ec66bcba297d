"""One resolver for every dataset: a kind and a root -> the tracks of a split. Training and evaluation both use it.

Kinds (:data:`DATASET_KINDS`):

- ``default``: the rendered songs (:mod:`conditioned_sep.data.render`), rendered once into a cache; they store the
  parts of other (piano, guitar, ...) besides MUSDB18's four stems;
- ``synthetic``: the oscillator songs (:mod:`conditioned_sep.data.synthetic`), generated once; four stems;
- ``folder``: any ``<split>/<track>/<stem>.wav`` folder (parts of other are read when the folder has them);
- ``musdb``: MUSDB18 or MUSDB18-HQ (root or ``$MUSDB_PATH``); four stems;
- ``moisesdb``: MoisesDB read in place (root or ``$MOISESDB_PATH``); every fine stem;
- ``stempeg``: the 4-stem MUSDB18 excerpt the ``stempeg`` package ships, as a one-track ``test`` split.

Splits: ``train``, ``valid``, ``test``. A folder without ``valid/`` holds out every tenth training track.
Tracks are read through a stem vocabulary with :func:`conditioned_sep.data.vocabulary.with_vocabulary`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..stems import FINE_STEMS, OTHER_PARTS, STEMS
from .cache import read_manifest
from .folder import AUDIO_SUFFIXES, DatasetError, Track, list_tracks
from .moisesdb import MoisesTrack, moisesdb_root, moisesdb_tracks
from .musdb import StemTrack, example_track, musdb_root, musdb_tracks
from .render.dataset import ensure_rendered_dataset
from .synthetic import ensure_synthetic_dataset

DATASET_KINDS = ("default", "synthetic", "folder", "musdb", "moisesdb", "stempeg")
"""Every dataset kind: the one list that training, evaluation and the command line derive theirs from."""
ROOTED_KINDS = ("folder", "musdb", "moisesdb")
"""Kinds named by their root: the command line gives each its own option (``--folder PATH``, ``--musdb [PATH]``,
``--moisesdb [PATH]``); the others are chosen by name (``--dataset``)."""
TEST_ONLY_KINDS = {"stempeg": "a test excerpt only (one 4-stem MUSDB18 track shipped with stempeg)"}
"""Kinds with a ``test`` split only, and what they are."""
TRAINING_KINDS = tuple(kind for kind in DATASET_KINDS if kind not in TEST_ONLY_KINDS)
"""Kinds with ``train`` and ``valid`` splits."""
SPLITS = ("train", "valid", "test")
HOLD_OUT_EVERY = 10
"""A folder without ``valid/`` validates on every tenth training track (and trains on the others)."""

_ROOT_NAMES = {"default": "the rendered default dataset", "synthetic": "the synthetic dataset",
               "musdb": "$MUSDB_PATH", "moisesdb": "$MOISESDB_PATH", "stempeg": "stempeg's example track"}


@dataclass(frozen=True)
class DatasetSpec:
    """Where the tracks are: ``kind`` in :data:`DATASET_KINDS`; ``root`` a folder (None: the cache for
    ``default`` and ``synthetic``, ``$MUSDB_PATH`` for ``musdb``, ``$MOISESDB_PATH`` for ``moisesdb``; required
    for ``folder``; none for ``stempeg``)."""

    kind: str = "default"
    root: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in DATASET_KINDS:
            raise DatasetError(f"unknown dataset kind {self.kind!r}; choose one of {', '.join(DATASET_KINDS)}")
        if self.root is not None:
            object.__setattr__(self, "root", Path(self.root).expanduser())
        if self.kind == "folder" and self.root is None:
            raise DatasetError("dataset 'folder' needs a root: pass --folder PATH")
        if self.kind == "stempeg" and self.root is not None:
            raise DatasetError(f"dataset 'stempeg' is the example track inside the stempeg package and takes no "
                               f"root (got {self.root}); for a folder of MUSDB18 use dataset 'musdb'")

    def check_trainable(self) -> None:
        """Raise :class:`DatasetError` when the kind has no training split (``stempeg``), naming those that do."""
        if self.kind in TEST_ONLY_KINDS:
            raise _no_split(self.kind, "train")

    def describe(self) -> str:
        """A short human name, e.g. ``folder:/data/stems``."""
        return f"{self.kind}:{self.root or _ROOT_NAMES.get(self.kind)}"


def prepare(spec: DatasetSpec, *, progress: bool = True) -> DatasetSpec:
    """Make the data usable and return the spec with its root resolved: renders (``default``) or generates
    (``synthetic``) the data the first time (cached on disk); finds MUSDB18 / MoisesDB; checks that a folder root
    exists. Raises :class:`DatasetError` naming the way out."""
    if spec.kind == "default":
        return DatasetSpec("default", ensure_rendered_dataset(spec.root, progress=progress))
    if spec.kind == "synthetic":
        return DatasetSpec("synthetic", ensure_synthetic_dataset(spec.root, progress=progress))
    if spec.kind == "musdb":
        return DatasetSpec("musdb", musdb_root(spec.root))
    if spec.kind == "moisesdb":
        return DatasetSpec("moisesdb", moisesdb_root(spec.root))
    if spec.kind == "stempeg":
        example_track()  # fails early, with the way out, when stempeg or ffmpeg is missing
        return spec
    if spec.root.is_file():
        raise DatasetError(f"{spec.root} is a file; pass the folder that holds <split>/<track>/<stem>.wav (e.g. the "
                           "folder with train/ and valid/), or separate a song with conditioned-sep separate")
    if not spec.root.is_dir():
        raise DatasetError(
            f"dataset folder {spec.root} does not exist; pass a folder laid out <split>/<track>/<stem>.wav, "
            "or train on the default data (python train.py without --folder / --musdb)")
    return spec


def folder_stems(root: str | os.PathLike) -> tuple[str, ...]:
    """The stems a stem folder stores: :data:`~conditioned_sep.stems.FINE_STEMS` when its manifest lists parts of
    other or any track holds a part file (a part missing from a track is then silence), else MUSDB18's four."""
    root = Path(root)
    listed = (read_manifest(root) or {}).get("stems", ())
    if any(s in OTHER_PARTS for s in listed):
        return FINE_STEMS
    if any(next(root.glob(f"*/*/{part}{suffix}"), None) for part in OTHER_PARTS for suffix in AUDIO_SUFFIXES):
        return FINE_STEMS
    return STEMS


def split_tracks(spec: DatasetSpec, split: str) -> list[Track] | list[StemTrack] | list[MoisesTrack]:
    """The tracks of ``split`` (sorted by name) of a prepared ``spec``.

    MUSDB18's ``valid`` is musdb's own validation list; a folder (or generated data) without ``valid/`` holds out
    every :data:`HOLD_OUT_EVERY`-th training track as ``valid`` and trains on the rest. MoisesDB's split is fixed
    by the track id; ``stempeg`` has only ``test``.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if spec.kind == "musdb":
        return sorted(musdb_tracks(spec.root, split), key=lambda t: t.name)
    if spec.kind == "moisesdb":
        tracks = moisesdb_tracks(spec.root, split)
        if not tracks:
            raise DatasetError(f"MoisesDB at {spec.describe()} has no track of the {split} split (the split is fixed "
                               "by a hash of the track id, 1 in 10 valid and 1 in 10 test); add more tracks")
        return tracks
    if spec.kind == "stempeg":
        if split != "test":
            raise _no_split(spec.kind, split)
        return [example_track()]
    root = Path(spec.root if spec.root is not None else prepare(spec, progress=False).root)
    stems = folder_stems(root)
    if split == "test" or (root / "valid").is_dir():
        return list_tracks(root, split, stems=stems)
    train = list_tracks(root, "train", stems=stems)
    if len(train) < 2:
        raise DatasetError(f"{root} has no valid/ split and too few training tracks to hold one out; "
                           "add <root>/valid/<track>/<stem>.wav")
    if split == "valid":
        return train[::HOLD_OUT_EVERY]
    return [t for i, t in enumerate(train) if i % HOLD_OUT_EVERY]


def _no_split(kind: str, split: str) -> DatasetError:
    return DatasetError(f"dataset {kind!r} is {TEST_ONLY_KINDS[kind]} and has no {split} split: evaluate on it; "
                        f"train on one of {', '.join(TRAINING_KINDS)}")


def has_own_valid_split(spec: DatasetSpec) -> bool:
    """False when ``valid`` is held out of the training tracks (a folder without ``valid/``)."""
    if spec.kind in ("musdb", "moisesdb", "stempeg") or spec.root is None:
        return True
    return (Path(spec.root) / "valid").is_dir()
