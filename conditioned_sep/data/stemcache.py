"""Training stems decoded once into int16 memory maps: drawing an example is then a slice of a mapped file, not a
FLAC decode, and every process on the machine (loader workers, the next model of the main job) shares the pages.

One cache per list of tracks seen through one stem vocabulary: ``<root>/<key>/tracks/<i>/stems.npy``, int16
``(n_stems, channels, samples)``, with ``manifest.json`` (written last, :func:`~conditioned_sep.data.cache.ensure_cached`)
holding each stem's scale and whether it sounds. ``key`` hashes the tracks' names, lengths and their files' sizes
and modification times, the vocabulary and the channel count: a changed file gets a new cache, never a stale one.

A stem whose samples fit 16-bit PCM (every rendered or MUSDB18-HQ stem: ``k / 32768``) is stored exactly, so the
examples are bit-identical to reading the files; louder or finer (float) stems are scaled to their peak and
rounded (error below 2^-15 of the peak).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .cache import cache_root, ensure_cached, read_manifest
from .folder import fit_channels

FORMAT = "conditioned-sep stem cache"
FORMAT_VERSION = 1
PCM16_SCALE = 1.0 / 32768
"""The scale of a stem that 16-bit PCM holds exactly (soundfile reads PCM_16 as ``k / 32768``)."""


def default_stem_cache_root() -> Path:
    """``stems-v<version>`` under ``$CONDITIONED_SEP_DATA`` (else ``~/.cache/conditioned-sep``)."""
    return cache_root(f"stems-v{FORMAT_VERSION}")


def _track_files(track) -> list[Path]:
    """The files a track reads (a stem folder's stems, MoisesDB's sources, a .stem.mp4), whatever its kind."""
    inner = getattr(track, "track", track)  # a vocabulary view wraps the track
    files: list[Path] = []
    for paths in (getattr(inner, "stem_paths", {}) or {}).values():
        files += [paths] if paths is not None else []
    for paths in (getattr(inner, "sources", {}) or {}).values():
        files += list(paths)
    if getattr(inner, "path", None) is not None:
        files.append(inner.path)
    return [Path(f) for f in files]


def cache_key(tracks: Sequence, *, stems: Sequence[str], channels: int) -> str:
    """A hash of what the cached stems depend on: tracks, their files (size, mtime), vocabulary, channels."""
    parts: list = [list(stems), channels]
    for t in tracks:
        files = []
        for f in _track_files(t):
            st = f.stat()
            files.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
        parts.append([t.name, t.num_samples, t.sample_rate, files])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _encode(audio: np.ndarray) -> tuple[np.ndarray, float]:
    """float32 ``(channels, samples)`` -> int16 and its scale (exact for 16-bit PCM data)."""
    peak = float(np.abs(audio).max(initial=0.0))
    if peak <= 32767 * PCM16_SCALE:
        pcm = np.round(audio * np.float32(32768)).astype(np.int16)
        if np.array_equal(pcm * np.float32(PCM16_SCALE), audio):  # 16-bit data: stored exactly
            return pcm, PCM16_SCALE
    scale = peak / 32767
    return np.round(audio / np.float32(scale)).astype(np.int16), scale


class StemCache:
    """int16 memory maps of ``tracks`` (as the vocabulary ``stems`` sees them), built under ``root`` on first use.

    ``excerpt(track, stem, start, length)`` -> float32 ``(channels, length)`` zero-padded past the end;
    ``present[track, stem]``: whether that stem sounds anywhere in the track. A file holding NaN or Inf is a
    :class:`~conditioned_sep.data.folder.DatasetError` naming it (from reading), and no cache is left.
    """

    def __init__(self, tracks: Sequence, *, stems: Sequence[str], channels: int, root: Path | None = None,
                 progress: bool = False) -> None:
        self.stems, self.channels = tuple(stems), channels
        base = Path(root) if root is not None else default_stem_cache_root()
        self.root = base / cache_key(tracks, stems=self.stems, channels=channels)
        header = {"format": FORMAT, "version": FORMAT_VERSION}

        def build(tmp: Path) -> dict:
            names, scales, present = [], [], []
            for i, track in enumerate(tqdm(tracks, desc=f"decoding stems once into {self.root}", unit="song",
                                           disable=not progress)):
                # reading refuses a file holding NaN or Inf (naming it): nothing non-finite reaches the cache
                audio = fit_channels(track.load(stems=self.stems), channels)  # (n, c, s) float32
                encoded = [_encode(a) for a in audio]
                folder = tmp / "tracks" / str(i)
                folder.mkdir(parents=True)
                np.save(folder / "stems.npy", np.stack([e for e, _ in encoded]))
                names.append(str(i))
                scales.append([s for _, s in encoded])
                present.append([bool(np.any(e)) for e, _ in encoded])
            return {"tracks": {"tracks": names}, "stems": list(self.stems), "channels": channels,
                    "scales": scales, "present": present}

        self.root.parent.mkdir(parents=True, exist_ok=True)
        ensure_cached(self.root, header=header, required=["stems.npy"], build=build, what="stem cache")
        manifest = read_manifest(self.root)
        self.scales = np.asarray(manifest["scales"], dtype=np.float32)  # (tracks, stems)
        self.present = np.asarray(manifest["present"], dtype=bool)  # (tracks, stems)
        self._maps: list[np.ndarray | None] = [None] * len(manifest["tracks"]["tracks"])

    def _map(self, track: int) -> np.ndarray:
        # opened lazily in each process: a DataLoader worker maps the file itself (nothing large is pickled)
        if self._maps[track] is None:
            self._maps[track] = np.load(self.root / "tracks" / str(track) / "stems.npy", mmap_mode="r")
        return self._maps[track]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": [None] * len(self._maps)}

    def num_samples(self, track: int) -> int:
        return int(self._map(track).shape[-1])

    def excerpt(self, track: int, stem: int, start: int, length: int) -> np.ndarray:
        """``(channels, length)`` float32, zero-padded past the end of the track (a fresh array)."""
        data = self._map(track)[stem, :, start: start + length]
        out = np.zeros((self.channels, length), dtype=np.float32)
        np.multiply(data, self.scales[track, stem], out=out[:, : data.shape[1]], casting="unsafe")
        return out

