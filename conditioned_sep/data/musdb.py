"""MUSDB18 (``.stem.mp4``, decoded through the ``musdb`` / ``stempeg`` packages and ffmpeg) and MUSDB18-HQ
(wav folders, read directly with soundfile: faster and exact).

Splits: ``train`` (the training folder minus musdb's validation tracks), ``valid`` (the validation list that
the ``musdb`` package defines) and ``test``. The root is an argument or the ``MUSDB_PATH`` variable.
Decoding mp4 on every training step starves training: decode once to wav with

    python -m conditioned_sep.data.musdb decode MUSDB18_ROOT OUT_ROOT

and train on ``OUT_ROOT`` (it is then MUSDB18-HQ-like and read with soundfile).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..audio import resample, write_audio
from ..stems import STEMS
from .folder import DatasetError, Track, env_root, list_tracks

SPLITS = ("train", "valid", "test")
ENV_VAR = "MUSDB_PATH"
STEM_IDS: dict[str, int] = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
"""Stream of each stem in a MUSDB18 ``.stem.mp4`` (as musdb's ``mus.yaml`` lists them)."""


def musdb_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, or ``$MUSDB_PATH``; a :class:`DatasetError` naming the way out when neither is usable."""
    return env_root(root, env_var=ENV_VAR, what="MUSDB18", option="--musdb PATH", expected="the folder that holds train/ and test/")


def _musdb_setup() -> dict[str, Any]:
    """musdb's own configuration (``musdb/configs/mus.yaml``), read without importing musdb (needs ffmpeg)."""
    spec = importlib.util.find_spec("musdb")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the musdb package is needed for MUSDB18's splits: pip install 'conditioned-sep[musdb]'")
    import yaml  # a dependency of musdb

    path = Path(list(spec.submodule_search_locations)[0]) / "configs" / "mus.yaml"
    with open(path) as f:
        return yaml.safe_load(f)


def validation_track_names() -> list[str]:
    """The validation tracks of MUSDB18's training folder, as the musdb package defines them."""
    return list(_musdb_setup()["validation_tracks"])


def detect_is_wav(root: Path) -> bool:
    """True for MUSDB18-HQ (track folders of wav), False for MUSDB18 (``.stem.mp4`` files)."""
    for sub in ("train", "test"):
        folder = root / sub
        if folder.is_dir():
            if any(folder.glob("*.stem.mp4")):
                return False
            if any(p.is_dir() for p in folder.iterdir()):
                return True
    raise DatasetError(f"{root} holds neither MUSDB18 (train/*.stem.mp4) nor MUSDB18-HQ (train/<track>/*.wav); "
                       "pass the folder that holds train/ and test/")


@dataclass
class StemTrack:
    """One MUSDB18 ``.stem.mp4`` track with the same interface as :class:`~conditioned_sep.data.folder.Track`.

    Every :meth:`load` decodes with ffmpeg (slow): for training, decode once with :func:`decode_musdb_to_wav`.
    """

    name: str
    split: str
    path: Path
    sample_rate: int
    num_samples: int
    stem_ids: dict[str, int]
    channels: int = 2
    info: Any = field(default=None, repr=False, compare=False)

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def stems(self) -> tuple[str, ...]:
        """The stems :meth:`load` answers: MUSDB18's four."""
        return tuple(s for s in self.stem_ids if s != "mixture")

    @property
    def stem_paths(self) -> dict[str, Path]:
        return {stem: self.path for stem in self.stem_ids if stem != "mixture"}

    def has(self, stem: str) -> bool:
        return stem in self.stem_ids

    def load(self, *, stems: Sequence[str] = STEMS, sample_rate: int | None = None, start: int = 0,
             length: int | None = None) -> np.ndarray:
        """Stems as float32 ``(n_stems, channels, samples)`` (excerpt: ``start`` / ``length`` in samples)."""
        import stempeg

        unknown = [s for s in stems if s not in self.stem_ids]
        if unknown:
            raise DatasetError(f"MUSDB18 has no stem {unknown}; its stems are {sorted(self.stem_ids)}")
        length = self.num_samples - start if length is None else length
        if start < 0 or length <= 0:
            raise ValueError(f"bad excerpt start={start}, length={length} of {self.name} ({self.num_samples} samples)")
        audio, _ = stempeg.read_stems(
            str(self.path), start=start / self.sample_rate, duration=length / self.sample_rate,
            dtype=np.float32, always_3d=True, info=self.info,
        )  # (streams, samples, channels)
        out = np.zeros((len(stems), self.channels, length), dtype=np.float32)
        for i, stem in enumerate(stems):
            data = audio[self.stem_ids[stem]].T[:, :length]
            out[i, :, : data.shape[1]] = data
        if sample_rate is not None and sample_rate != self.sample_rate:
            out = resample(out, orig_rate=self.sample_rate, target_rate=sample_rate)
        return out


def musdb_tracks(root: str | os.PathLike | None = None, split: str = "train", *,
                 is_wav: bool | None = None) -> list[Track] | list[StemTrack]:
    """The tracks of one MUSDB18 split (``train`` / ``valid`` / ``test``), sorted by name.

    ``is_wav=None`` detects MUSDB18-HQ (wav, read with soundfile) or MUSDB18 (``.stem.mp4``, through musdb).
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown MUSDB18 split {split!r}; choose one of {SPLITS}")
    root = musdb_root(root)
    is_wav = detect_is_wav(root) if is_wav is None else is_wav
    folder_split = "test" if split == "test" else "train"
    if is_wav:
        tracks = list_tracks(root, folder_split)
        if split != "test":  # only train / valid need musdb's validation list (and so the musdb package)
            valid_names = set(validation_track_names())
            tracks = [t for t in tracks if (t.name in valid_names) == (split == "valid")]
        for t in tracks:
            t.split = split
    else:
        tracks = _stem_tracks(root, folder_split, split)
    if not tracks:
        raise DatasetError(f"MUSDB18 folder {root} holds no track of the {split} split "
                           f"(looked in {root / folder_split}; the valid split is musdb's validation list)")
    return tracks


def example_track() -> StemTrack:
    """The 4-stem MUSDB18 excerpt that the ``stempeg`` package ships (The Easton Ellises - Falcon 69, about 7 s),
    as a ``test`` track. Raises :class:`DatasetError` naming the way out when stempeg or ffmpeg is missing."""
    try:
        import stempeg
    except (ImportError, RuntimeError, OSError) as err:
        raise DatasetError(f"dataset 'stempeg' needs the stempeg package and ffmpeg ({err}): "
                           "pip install 'conditioned-sep[musdb]' and install ffmpeg") from err
    path = Path(stempeg.example_stem_path())
    try:
        info = stempeg.Info(str(path))
    except Exception as err:  # ffprobe missing or failing: stempeg raises ffmpeg's own error types
        raise DatasetError(f"cannot probe {path} with ffprobe ({err}); install ffmpeg") from err
    stream = STEM_IDS["mixture"]
    return StemTrack(name=path.name.removesuffix(".stem.mp4"), split="test", path=path,
                     sample_rate=int(info.sample_rate(stream)), num_samples=int(info.samples(stream)),
                     stem_ids=dict(STEM_IDS), channels=min(2, int(info.channels(stream))), info=info)


def _stem_tracks(root: Path, folder_split: str, split: str) -> list[StemTrack]:
    import musdb  # lazily: needs ffmpeg

    db = musdb.DB(root=str(root), subsets=folder_split, split=None if split == "test" else split, is_wav=False)
    stem_ids = {k: int(v) for k, v in db.setup["stem_ids"].items()}
    tracks = []
    for t in db.tracks:
        channels = int(t.info.channels(stem_ids["mixture"])) if hasattr(t.info, "channels") else 2
        tracks.append(StemTrack(name=t.name, split=split, path=Path(t.path), sample_rate=int(t.rate),
                                num_samples=int(t.samples), stem_ids=stem_ids, channels=channels, info=t.info))
    return sorted(tracks, key=lambda t: t.name)


def decode_musdb_to_wav(root: str | os.PathLike | None, out_root: str | os.PathLike, *,
                        progress: bool = True) -> Path:
    """Decode MUSDB18 ``.stem.mp4`` once into MUSDB18-HQ's layout ``<out>/<train|test>/<track>/<stem>.wav``.

    Tracks already decoded (all five files present) are skipped, so an interrupted run can be restarted.
    Returns ``out_root``.
    """
    root = musdb_root(root)
    out_root = Path(out_root).expanduser()
    tracks = [t for split in ("train", "valid", "test") for t in musdb_tracks(root, split, is_wav=False)]
    iterator = tracks
    if progress:
        iterator = tqdm(tracks, desc=f"decoding MUSDB18 to {out_root}", unit="track")
    for track in iterator:
        folder = out_root / ("test" if track.split == "test" else "train") / track.name
        names = [*STEMS, "mixture"]
        if all((folder / f"{n}.wav").is_file() for n in names):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        audio = track.load(stems=[*STEMS, "mixture"])
        for name, data in zip(names, audio):
            write_audio(folder / f"{name}.wav", data, track.sample_rate, subtype="FLOAT")
    return out_root


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conditioned_sep.data.musdb", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dec = sub.add_parser("decode", help="decode MUSDB18 .stem.mp4 to MUSDB18-HQ-like wav folders (once)")
    dec.add_argument("root", nargs="?", default=None, help=f"MUSDB18 folder (default: ${ENV_VAR})")
    dec.add_argument("out", help="output folder")
    args = parser.parse_args(argv)
    print(decode_musdb_to_wav(args.root, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
