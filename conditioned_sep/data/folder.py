"""Any folder of stems laid out like MUSDB18-HQ: ``<root>/<split>/<track>/<stem>.wav``.

A stem missing from a track is silence. A ``mixture.wav`` is not needed (the mixture is the sum of the
stems). Files are read with soundfile, whole or as an excerpt (``start``, ``length`` in samples).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import AudioError, resample
from ..stems import STEMS

AUDIO_SUFFIXES = (".wav", ".flac")


class DatasetError(ValueError):
    """A dataset that cannot be used: missing root, empty split, unknown stem, inconsistent files."""


def fit_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """``audio`` ``(..., c, samples)`` with ``channels`` channels: mono is spread to every channel, more
    channels than wanted are averaged (to mono) or cut to the first ``channels``. Returned as is when it fits."""
    have = audio.shape[-2]
    if have == channels:
        return audio
    if have == 1:
        return np.repeat(audio, channels, axis=-2)
    return audio.mean(-2, keepdims=True) if channels == 1 else audio[..., :channels, :]


def env_root(root: str | os.PathLike | None, *, env_var: str, what: str, option: str, expected: str) -> Path:
    """``root``, else the folder ``$env_var`` names: a :class:`DatasetError` naming both ways (the command line's
    ``option`` and the variable) when neither is given, and what the folder should hold (``expected``) when it is
    not a folder. ``what``: the dataset's name."""
    if root is None:
        if not os.environ.get(env_var):
            raise DatasetError(f"no {what} folder given: pass its root ({option}) or set ${env_var} ({expected})")
        root = os.environ[env_var]
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{what} folder {path} does not exist; pass its root ({option}, or set ${env_var}): "
                           f"{expected}")
    return path


class SongLength:
    """``duration`` from ``num_samples`` and ``sample_rate``: what every kind of track shares."""

    sample_rate: int
    num_samples: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / self.sample_rate


def read_stem(path: Path, *, start: int, length: int, channels: int) -> np.ndarray:
    """``(channels, samples)`` float32 of the stem file ``path``: at most ``length`` samples from ``start``.

    Raises :class:`DatasetError` naming the file when it holds NaN or Inf (a float file a broken tool wrote): they
    would make training diverge far from their cause, and make the stem look silent."""
    data, _ = sf.read(str(path), start=start, frames=length, dtype="float32", always_2d=True)
    finite = np.isfinite(data)
    if not finite.all():
        raise DatasetError(f"{path} holds {data.size - int(np.count_nonzero(finite))} non-finite sample(s) (NaN or "
                           f"Inf), the first at sample {start + int(np.argmin(finite.all(axis=1)))}; repair or "
                           "replace the file, or move its track out of the dataset")
    return fit_channels(data.T, channels)


@dataclass
class Track(SongLength):
    """One song: where its stems are (``None`` = silent or missing), its rate (Hz) and length (samples)."""

    name: str
    split: str
    stem_paths: dict[str, Path | None]
    sample_rate: int
    num_samples: int
    channels: int = 2
    folder: Path | None = field(default=None, compare=False)

    @property
    def stems(self) -> tuple[str, ...]:
        """The stems :meth:`load` answers: those the track was listed with (a missing file is silence)."""
        return tuple(self.stem_paths)

    def has(self, stem: str) -> bool:
        return self.stem_paths.get(stem) is not None

    def load(self, *, stems: Sequence[str] = STEMS, sample_rate: int | None = None, start: int = 0,
             length: int | None = None) -> np.ndarray:
        """Stems as float32 ``(n_stems, channels, samples)``; silence for a stem the track lacks.

        ``start`` / ``length`` select an excerpt in samples at the file's rate (read from disk, not sliced
        after loading); an excerpt past the end is zero-padded. ``sample_rate`` resamples the result.
        """
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        length = self.num_samples - start if length is None else length
        if length <= 0:
            raise ValueError(f"excerpt of {self.name} starting at sample {start} is empty (track has {self.num_samples})")
        out = np.zeros((len(stems), self.channels, length), dtype=np.float32)
        for i, stem in enumerate(stems):
            if stem not in self.stem_paths:
                raise DatasetError(f"track {self.name} was listed without stem {stem!r}; list it with stems=...")
            path = self.stem_paths[stem]
            if path is None or start >= self.num_samples:
                continue
            data = read_stem(path, start=start, length=length, channels=self.channels)
            out[i, :, : data.shape[1]] = data
        if sample_rate is not None and sample_rate != self.sample_rate:
            out = resample(out, orig_rate=self.sample_rate, target_rate=sample_rate)
        return out


def _stem_file(folder: Path, stem: str) -> Path | None:
    for suffix in AUDIO_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def read_track(folder: str | os.PathLike, *, split: str = "", stems: Sequence[str] = STEMS) -> Track | None:
    """The :class:`Track` in ``folder`` (``<stem>.wav`` or ``.flac`` files), or None when it holds no stem."""
    folder = Path(folder)
    paths = {stem: _stem_file(folder, stem) for stem in stems}
    present = [p for p in paths.values() if p is not None]
    if not present:
        return None
    infos = []
    for path in present:
        try:
            infos.append(sf.info(str(path)))
        except (RuntimeError, sf.LibsndfileError) as err:
            raise AudioError(f"cannot read audio file {path}: {err}") from err
    rates = {info.samplerate for info in infos}
    if len(rates) > 1:
        raise DatasetError(f"stems of {folder} have different sample rates {sorted(rates)}; resample them to one rate")
    lengths = {p.stem: info.frames for p, info in zip(present, infos)}
    if len(set(lengths.values())) > 1:
        warnings.warn(f"stems of {folder} have different lengths in samples ({lengths}); the shorter ones are padded "
                      "with silence to the longest", stacklevel=2)
    channels = max(info.channels for info in infos)
    if channels > 2:
        raise DatasetError(f"a stem of {folder} has {channels} channels; only mono and stereo stems are supported")
    return Track(name=folder.name, split=split, stem_paths=paths, sample_rate=rates.pop(),
                 num_samples=max(info.frames for info in infos), channels=channels, folder=folder)


def list_tracks(root: str | os.PathLike, split: str, *, stems: Sequence[str] = STEMS) -> list[Track]:
    """Every track of ``<root>/<split>/`` (sorted by name). Tracks without any stem file are skipped.

    Raises :class:`DatasetError` naming the folder when the root or the split is missing or holds no track.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"dataset folder {root} does not exist; pass a folder laid out <split>/<track>/<stem>.wav, "
            "or train on the default data (python train.py without --folder / --musdb)"
        )
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(f"no split folder {split_dir} (found {found or 'no folder'}); "
                           f"the layout is <root>/{split}/<track>/<stem>.wav")
    tracks = []
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        track = read_track(folder, split=split, stems=stems)
        if track is not None:
            tracks.append(track)
    if not tracks:
        raise DatasetError(
            f"split folder {split_dir} holds no track: expected sub-folders with any of "
            f"{', '.join(s + '.wav' for s in stems)}"
        )
    return tracks
