"""The synthetic dataset (dataset kind ``synthetic``): deterministic oscillator songs (:mod:`conditioned_sep.data.oscillators`) written
once in MUSDB18-HQ's layout and cached.

Layout: ``<root>/<split>/<song>/{vocals,drums,bass,other,mixture}.wav`` (44.1 kHz stereo, 16-bit), plus
``<root>/manifest.json`` written last. A generation is built in a temporary sibling folder and renamed into
place only when complete, so a killed generation is regenerated rather than half-used.

    python -m conditioned_sep.data.synthetic [ROOT]     # generate (or find) the synthetic dataset
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import write_audio
from ..stems import STEMS
from .cache import SongJob, SongSetConfig, cache_root, ensure_cached, make_songs
from .oscillators import Song, render_song

FORMAT_VERSION = 1


@dataclass(frozen=True)
class SyntheticConfig(SongSetConfig):
    """Size of the generated dataset: songs per split and song length in seconds.

    The default (64 x 12 s train, 8 x 10 s valid, 10 x 15 s test) is about 0.85 GB of 16-bit wav and takes
    about a minute to generate on 2 cores.
    """

    train_songs: int = 64
    valid_songs: int = 8
    test_songs: int = 10
    valid_seconds: float = 10.0


def default_data_root() -> Path:
    """Cache folder of the synthetic dataset: ``synthetic-v<version>`` under ``$CONDITIONED_SEP_DATA`` if set,
    else under ``$XDG_CACHE_HOME/conditioned-sep`` (``~/.cache/...``)."""
    return cache_root(f"synthetic-v{FORMAT_VERSION}")


def ensure_synthetic_dataset(
    root: str | os.PathLike | None = None, *, seed: int = 0, config: SyntheticConfig | None = None,
    workers: int | None = None, progress: bool = True,
) -> Path:
    """Return the root of the synthetic dataset, generating it first if needed (once; cached on disk).

    ``root`` defaults to :func:`default_data_root`. ``workers`` processes synthesise songs in parallel
    (default: up to 2). Raises :class:`~conditioned_sep.data.folder.DatasetError` when ``root`` holds something else (another seed or size,
    or foreign files).
    """
    config = config or SyntheticConfig()
    root = Path(root).expanduser() if root is not None else default_data_root()
    header = {"format": "conditioned-sep synthetic", "version": FORMAT_VERSION, "seed": int(seed),
              "config": dataclasses.asdict(config)}

    def build(tmp: Path) -> dict:
        return {"tracks": make_songs(tmp, seed=seed, config=config, job=_write_song_job, workers=workers,
                                      progress=progress, desc=f"generating synthetic songs in {root}")}

    return ensure_cached(root, header=header, required=[f"{stem}.wav" for stem in STEMS], build=build,
                         what="synthetic dataset")


def _write_song_job(job: SongJob) -> tuple[str, str]:
    split_dir, seed, split_index, index, seconds, rate = job
    rng = np.random.default_rng([seed, split_index, index])
    song = Song.draw(rng, seconds=seconds, rate=rate)
    stems = render_song(song, rng)
    name = f"song{index:03d}-{song.title}"
    folder = Path(split_dir) / name
    folder.mkdir()
    for stem, audio in zip(STEMS, stems):
        write_audio(folder / f"{stem}.wav", audio, rate)
    write_audio(folder / "mixture.wav", stems.sum(0), rate)
    return split_dir, name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conditioned_sep.data.synthetic",
                                     description="Generate (once) the synthetic dataset.")
    parser.add_argument("root", nargs="?", default=None, help=f"output folder (default: {default_data_root()})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    print(ensure_synthetic_dataset(args.root, seed=args.seed, workers=args.workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
