"""Pack the rendered training songs for a GPU machine, whose transfer limit is 64 MiB: the four stems of every
``train`` and ``valid`` song as Ogg Vorbis at quality 0 (about 41 kbit/s a stem; 16-bit FLAC would be ten times
larger), laid out ``<out>/<split>/<song>/<stem>.ogg``. ``unpack_data.py`` turns them back into a stem folder.

    python scripts/gpu/pack_data.py [--root RENDERED] [--out .gpu/data]

Lossy, so what a GPU run learns from is close to, not exactly, the rendered songs; its tests are the lossless ones.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf

from conditioned_sep.data.sources import DatasetSpec, prepare
from conditioned_sep.stems import STEMS

VORBIS_LEVEL = 1.0  # libsndfile's compression level: 1.0 is Vorbis quality 0


def pack_song(song: Path, dest: Path) -> int:
    """Encode the four stems of ``song`` into ``dest``; returns the bytes written."""
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    for stem in STEMS:
        audio, rate = sf.read(song / f"{stem}.flac", dtype="float32", always_2d=True)
        target = dest / f"{stem}.ogg"
        sf.write(target, audio, rate, format="OGG", subtype="VORBIS", compression_level=VORBIS_LEVEL)
        total += target.stat().st_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="the rendered dataset (default: its cache)")
    parser.add_argument("--out", type=Path, default=Path(".gpu/data"))
    args = parser.parse_args()
    root = prepare(DatasetSpec("default", args.root)).root
    songs = [(song, args.out / split / song.name) for split in ("train", "valid")
             for song in sorted((root / split).iterdir()) if song.is_dir()]
    with ProcessPoolExecutor() as pool:
        total = sum(pool.map(pack_song, *zip(*songs)))
    print(f"{len(songs)} songs, {total / 2**20:.1f} MiB in {args.out}")


if __name__ == "__main__":
    main()
