"""Writers of on-disk data layouts that several test modules share (plain helpers, not fixtures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conditioned_sep.audio import write_audio

RATE = 8000


def noise(rng: np.random.Generator, seconds: float, scale: float = 0.1) -> np.ndarray:
    return (scale * rng.standard_normal((2, int(seconds * RATE)))).astype(np.float32)


def write_rendered_like(root: Path, *, tracks: dict[str, int], seconds: float = 1.0, seed: int = 0) -> Path:
    """Rendered layout: vocals, drums, bass, other (= its parts + an effect), mixture, and each song's parts
    (``tracks``: name -> how many of piano, guitar, synth it has, in that order). Float wav: sums are exact."""
    rng = np.random.default_rng(seed)
    for name, n_parts in tracks.items():
        folder = root / "train" / name
        folder.mkdir(parents=True)
        stems = {s: noise(rng, seconds) for s in ("vocals", "drums", "bass")}
        parts = {p: noise(rng, seconds) for p in ("piano", "guitar", "synth")[:n_parts]}
        stems["other"] = sum(parts.values(), start=0.02 * noise(rng, seconds))  # an effect in no part
        for stem, audio in {**stems, **parts, "mixture": sum(stems.values())}.items():
            write_audio(folder / f"{stem}.wav", audio, RATE, subtype="FLOAT")
    return root
