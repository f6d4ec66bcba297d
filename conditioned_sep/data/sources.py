"""One resolver for every dataset: a kind and a root -> the tracks of a split. Training and evaluation both use it.

Kinds: ``default`` (the embedded synthetic songs, generated once into a cache), ``folder`` (any
``<split>/<track>/<stem>.wav`` folder) and ``musdb`` (MUSDB18 or MUSDB18-HQ, root or ``$MUSDB_PATH``).
Splits: ``train``, ``valid``, ``test``. A folder without ``valid/`` holds out every tenth training track.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .folder import DatasetError, Track, list_tracks
from .musdb import musdb_root, musdb_tracks
from .synthetic import ensure_default_dataset

DATASET_KINDS = ("default", "folder", "musdb")
SPLITS = ("train", "valid", "test")
HOLD_OUT_EVERY = 10
"""A folder without ``valid/`` validates on every tenth training track (and trains on the others)."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where the tracks are: ``kind`` in :data:`DATASET_KINDS`; ``root`` a folder (None: the default cache for
    ``default``, ``$MUSDB_PATH`` for ``musdb``; required for ``folder``)."""

    kind: str = "default"
    root: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in DATASET_KINDS:
            raise DatasetError(f"unknown dataset kind {self.kind!r}; choose one of {', '.join(DATASET_KINDS)}")
        if self.root is not None:
            object.__setattr__(self, "root", Path(self.root).expanduser())
        if self.kind == "folder" and self.root is None:
            raise DatasetError("dataset 'folder' needs a root: pass --folder PATH")

    def describe(self) -> str:
        """A short human name, e.g. ``folder:/data/stems``."""
        root = self.root or {"default": "the embedded default dataset", "musdb": "$MUSDB_PATH"}.get(self.kind)
        return f"{self.kind}:{root}"


def prepare(spec: DatasetSpec, *, progress: bool = True) -> DatasetSpec:
    """Make the data usable and return the spec with its root resolved: generates the embedded default the first
    time (cached on disk); checks that a folder root exists. Raises :class:`DatasetError` naming the way out."""
    if spec.kind == "default":
        return DatasetSpec("default", ensure_default_dataset(spec.root, progress=progress))
    if spec.kind == "musdb":
        return DatasetSpec("musdb", musdb_root(spec.root))
    if spec.root.is_file():
        raise DatasetError(f"{spec.root} is a file; pass the folder that holds <split>/<track>/<stem>.wav (e.g. the "
                           "folder with train/ and valid/), or separate a song with conditioned-sep separate")
    if not spec.root.is_dir():
        raise DatasetError(
            f"dataset folder {spec.root} does not exist; pass a folder laid out <split>/<track>/<stem>.wav, "
            "or train on the default data (python train.py without --folder / --musdb)")
    return spec


def split_tracks(spec: DatasetSpec, split: str) -> list[Track]:
    """The tracks of ``split`` (sorted by name) of a prepared ``spec``.

    MUSDB18's ``valid`` is musdb's own validation list; a folder (or the default data) without ``valid/`` holds out
    every :data:`HOLD_OUT_EVERY`-th training track as ``valid`` and trains on the rest.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if spec.kind == "musdb":
        return sorted(musdb_tracks(spec.root, split), key=lambda t: t.name)
    root = Path(spec.root if spec.root is not None else prepare(spec, progress=False).root)
    if split == "test" or (root / "valid").is_dir():
        return list_tracks(root, split)
    train = list_tracks(root, "train")
    if len(train) < 2:
        raise DatasetError(f"{root} has no valid/ split and too few training tracks to hold one out; "
                           "add <root>/valid/<track>/<stem>.wav")
    if split == "valid":
        return train[::HOLD_OUT_EVERY]
    return [t for i, t in enumerate(train) if i % HOLD_OUT_EVERY]


def has_own_valid_split(spec: DatasetSpec) -> bool:
    """False when ``valid`` is held out of the training tracks (a folder without ``valid/``)."""
    return spec.kind == "musdb" or spec.root is None or (Path(spec.root) / "valid").is_dir()

