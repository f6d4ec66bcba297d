"""Decode what ``pack_data.py`` packed into a stem folder (``<out>/<split>/<song>/<stem>.wav``, 16-bit, the stems
of a song cut to one length) that ``train.py --folder`` reads.

    python scripts/gpu/unpack_data.py .gpu/data /tmp/stems
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf


def unpack_song(song: Path, dest: Path) -> float:
    """Decode the stems of ``song`` into ``dest``; returns the song's seconds."""
    dest.mkdir(parents=True, exist_ok=True)
    stems = {path.stem: sf.read(path, dtype="float32", always_2d=True) for path in sorted(song.glob("*.ogg"))}
    length = min(len(audio) for audio, _ in stems.values())
    rate = next(iter(stems.values()))[1]
    for name, (audio, _) in stems.items():
        sf.write(dest / f"{name}.wav", audio[:length].clip(-1, 1), rate, subtype="PCM_16")
    return length / rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("packed", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    songs = [(song, args.out / song.parent.name / song.name) for song in sorted(args.packed.glob("*/*"))]
    with ProcessPoolExecutor() as pool:
        seconds = sum(pool.map(unpack_song, *zip(*songs)))
    print(f"{len(songs)} songs, {seconds / 60:.1f} min of audio in {args.out}", flush=True)


if __name__ == "__main__":
    main()
