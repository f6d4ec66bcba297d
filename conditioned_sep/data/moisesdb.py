"""MoisesDB read in place: ``<root>/[<provider>/]<track id>/data.json`` and ``<track id>/<stem>/<source id>.wav``.

``data.json`` lists the stems (``stemName``: vocals, drums, bass, percussion, guitar, piano, other_keys,
bowed_strings, wind, other_plucked, other) and, for each, its source files (``id``, ``extension``, ``trackType``
such as ``lead_female_singer`` or ``synth_pad``). The sources are summed into this project's stems
(:data:`~conditioned_sep.stems.FINE_STEMS`):

====================  ===================================================================================
vocals, drums, bass   MoisesDB's stems of the same name
drums                 also MoisesDB's a-tonal ``percussion`` (MUSDB18 counts percussion as drums; the ``moisesdb``
                      package's own 4-stem mix puts it in other)
piano, guitar         piano; guitar and ``other_plucked`` (banjo, mandolin, ukulele, harp)
keys, synth           ``other_keys``: synth pads and leads are synth, the rest (organs, ...) keys; pitched
                      percussion (mallets) is keys too
strings, winds        ``bowed_strings``, ``wind``
other                 every source but vocals, drums, bass: the six parts above plus MoisesDB's own ``other``
                      stem (effects), which belongs to no part
====================  ===================================================================================

Tracks get a fixed split from their id (a CRC32 of it: 1 in 10 test, 1 in 10 valid): MoisesDB has no official one.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import AudioError, resample
from ..stems import COARSE_OF, FINE_STEMS, STEMS
from .folder import DatasetError, SongLength, env_root, read_stem

ENV_VAR = "MOISESDB_PATH"
STEM_PARTS: dict[str, str | None] = {
    "vocals": "vocals", "drums": "drums", "bass": "bass", "percussion": "drums", "piano": "piano",
    "guitar": "guitar", "other_plucked": "guitar", "other_keys": "keys", "bowed_strings": "strings",
    "wind": "winds", "other": None,
}
"""MoisesDB stem -> this project's fine stem (None: MoisesDB's effects stem, in ``other`` but in no part)."""
SOURCE_PARTS: dict[tuple[str, str], str] = {
    ("other_keys", "synth_pad"): "synth",
    ("other_keys", "synth_lead"): "synth",
    ("percussion", "pitched_percussion_(mallets,_glockenspiel,_...)"): "keys",
}
"""Sources that leave their stem's part, by ``(stemName, trackType)``."""


def split_of(track_id: str) -> str:
    """The split a track belongs to, fixed by its id: ``test`` (1 in 10), ``valid`` (1 in 10) or ``train``."""
    bucket = zlib.crc32(track_id.encode()) % 10
    return "test" if bucket == 0 else "valid" if bucket == 1 else "train"


@dataclass
class MoisesTrack(SongLength):
    """One MoisesDB song with the interface of :class:`conditioned_sep.data.folder.Track`: its sources grouped by
    fine stem (``"other"`` holds the effects sources that belong to no part)."""

    name: str
    split: str
    sources: dict[str, list[Path]]
    sample_rate: int
    num_samples: int
    channels: int = 2
    title: str = ""
    folder: Path | None = field(default=None, compare=False)

    @property
    def stems(self) -> tuple[str, ...]:
        """The stems :meth:`load` answers (silence where the song has none): every fine stem."""
        return FINE_STEMS

    def files(self, stem: str) -> list[Path]:
        """The source files that sum to ``stem`` (a coarse stem gathers those of its parts)."""
        if stem not in COARSE_OF and stem != "mixture":
            raise DatasetError(f"unknown stem {stem!r}; MoisesDB tracks answer {', '.join(FINE_STEMS)}, mixture")
        if stem == "mixture":
            return [p for paths in self.sources.values() for p in paths]
        if stem == "other":
            return [p for part, paths in self.sources.items() if COARSE_OF[part] == "other" for p in paths]
        return list(self.sources.get(stem, []))

    def has(self, stem: str) -> bool:
        return bool(self.files(stem))

    def load(self, *, stems: Sequence[str] = STEMS, sample_rate: int | None = None, start: int = 0,
             length: int | None = None) -> np.ndarray:
        """Stems as float32 ``(n_stems, channels, samples)``, each the sum of its sources; silence for a stem the
        track lacks. ``start`` / ``length`` select an excerpt in samples at the files' rate (zero-padded past the
        end); ``sample_rate`` resamples the result."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        length = self.num_samples - start if length is None else length
        if length <= 0:
            raise ValueError(f"excerpt of {self.name} starting at sample {start} is empty (track has "
                             f"{self.num_samples})")
        out = np.zeros((len(stems), self.channels, length), dtype=np.float32)
        cache: dict[Path, np.ndarray] = {}
        for i, stem in enumerate(stems):
            for path in self.files(stem):
                if path not in cache:
                    cache[path] = read_stem(path, start=start, length=length, channels=self.channels)
                data = cache[path]
                out[i, :, : data.shape[1]] += data
        if sample_rate is not None and sample_rate != self.sample_rate:
            out = resample(out, orig_rate=self.sample_rate, target_rate=sample_rate)
        return out


def read_moisesdb_track(folder: str | os.PathLike) -> MoisesTrack:
    """The track in ``folder`` (which holds ``data.json``). Raises :class:`DatasetError` naming what is wrong."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "data.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"cannot read {folder / 'data.json'}: {err}") from err
    sources: dict[str, list[Path]] = {}
    for stem in meta.get("stems", []):
        stem_name = stem.get("stemName", "")
        if stem_name not in STEM_PARTS:
            raise DatasetError(f"{folder / 'data.json'} names stem {stem_name!r}, not one of MoisesDB's "
                               f"{', '.join(STEM_PARTS)}")
        for source in stem.get("tracks", []):
            path = folder / stem_name / f"{source['id']}.{source.get('extension', 'wav')}"
            if not path.is_file():
                raise DatasetError(f"{folder / 'data.json'} lists {path}, which is missing; download the track again")
            part = SOURCE_PARTS.get((stem_name, source.get("trackType", "")), STEM_PARTS[stem_name]) or "other"
            sources.setdefault(part, []).append(path)
    if not sources:
        raise DatasetError(f"{folder / 'data.json'} lists no source file")
    infos = {}
    for paths in sources.values():
        for path in paths:
            try:
                infos[path] = sf.info(str(path))
            except (RuntimeError, sf.LibsndfileError) as err:
                raise AudioError(f"cannot read audio file {path}: {err}") from err
    rates = {info.samplerate for info in infos.values()}
    if len(rates) > 1:
        raise DatasetError(f"sources of {folder} have different sample rates {sorted(rates)}")
    title = " - ".join(x for x in (meta.get("artist", ""), meta.get("song", "")) if x)
    return MoisesTrack(name=folder.name, split=split_of(folder.name), sources=sources, sample_rate=rates.pop(),
                       num_samples=max(info.frames for info in infos.values()),
                       channels=min(2, max(info.channels for info in infos.values())), title=title, folder=folder)


def moisesdb_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` or ``$MOISESDB_PATH``; :class:`DatasetError` when neither names a folder."""
    return env_root(root, env_var=ENV_VAR, what="MoisesDB", option="--moisesdb PATH",
                    expected="the folder that holds moisesdb_v0.1/, or the track folders with their data.json")


def moisesdb_tracks(root: str | os.PathLike | None = None, split: str | None = None) -> list[MoisesTrack]:
    """Every track under ``root`` (track folders hold ``data.json``, one or two levels down), sorted by id; only
    those of ``split`` when given."""
    root = moisesdb_root(root)
    folders = sorted({p.parent for pattern in ("*/data.json", "*/*/data.json") for p in root.glob(pattern)},
                     key=lambda p: p.name)
    if not folders:
        raise DatasetError(f"{root} holds no MoisesDB track: expected <track id>/data.json with "
                           "<track id>/<stem>/<source id>.wav beside it (directly or under moisesdb_v0.1/)")
    tracks = [read_moisesdb_track(f) for f in folders]
    return [t for t in tracks if split is None or t.split == split]
