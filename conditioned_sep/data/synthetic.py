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
import multiprocessing as mp
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio import write_audio
from ..stems import STEMS
from .cache import cache_root, ensure_cached
from .oscillators import Song, render_song

FORMAT_VERSION = 1
SAMPLE_RATE = 44100


@dataclass(frozen=True)
class SyntheticConfig:
    """Size of the generated dataset: songs per split and song length in seconds.

    The default (64 x 12 s train, 8 x 10 s valid, 10 x 15 s test) is about 0.85 GB of 16-bit wav and takes
    about a minute to generate on 2 cores.
    """

    train_songs: int = 64
    valid_songs: int = 8
    test_songs: int = 10
    train_seconds: float = 12.0
    valid_seconds: float = 10.0
    test_seconds: float = 15.0
    sample_rate: int = SAMPLE_RATE

    def split_sizes(self) -> dict[str, tuple[int, float]]:
        return {
            "train": (self.train_songs, self.train_seconds),
            "valid": (self.valid_songs, self.valid_seconds),
            "test": (self.test_songs, self.test_seconds),
        }


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
        return {"tracks": _generate_into(tmp, seed=seed, config=config, workers=workers, progress=progress)}

    return ensure_cached(root, header=header, required=[f"{stem}.wav" for stem in STEMS], build=build,
                         what="synthetic dataset")


ensure_default_dataset = ensure_synthetic_dataset
"""The name this function had while the synthetic songs were the default dataset (the default is now the rendered
one, :func:`conditioned_sep.data.render.ensure_rendered_dataset`)."""


def _generate_into(out: Path, *, seed: int, config: SyntheticConfig, workers: int | None,
                   progress: bool) -> dict[str, list[str]]:
    jobs = []
    for split_index, (split, (n_songs, seconds)) in enumerate(config.split_sizes().items()):
        (out / split).mkdir(parents=True, exist_ok=True)
        jobs += [(str(out / split), seed, split_index, i, seconds, config.sample_rate) for i in range(n_songs)]
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    bar = None
    if progress:
        bar = tqdm(total=len(jobs), desc=f"generating synthetic songs in {out.parent}", unit="song")
    names: list[tuple[str, str]] = []
    if workers > 1 and len(jobs) > 1:
        # fork where there is one: spawn would re-run an unguarded __main__ script; the workers use only numpy
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers) as pool:
            for result in pool.imap(_write_song_job, jobs, chunksize=1):
                names.append(result)
                if bar is not None:
                    bar.update()
    else:
        for job in jobs:
            names.append(_write_song_job(job))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    tracks: dict[str, list[str]] = {split: [] for split in config.split_sizes()}
    for split_dir, name in names:
        tracks[Path(split_dir).name].append(name)
    return tracks


def _write_song_job(job: tuple) -> tuple[str, str]:
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
