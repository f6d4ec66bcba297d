"""Peak memory of `conditioned-sep separate` streaming from disk to disk, for songs of several lengths.

    python benchmarks/bench_stream.py                       # full preset, four stems, 1, 10 and 60 minutes
    python benchmarks/bench_stream.py --minutes 1 5 --preset tiny --arch unet

Writes a seeded-noise stereo 44.1 kHz 16-bit wav per length (written in blocks: the benchmark itself never holds
a long song either) and a random-weights checkpoint, then runs the real command line in its own process per song
and reads that process's peak resident memory (ru_maxrss of the child: Python, torch and all). Target: the
60-minute song under 1 GB and within 10% of the 1-minute song's peak.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from conditioned_sep.checkpoint import save_checkpoint
from conditioned_sep.models import ARCHITECTURES

RATE = 44100


def write_noise(path: Path, minutes: float) -> Path:
    rng = np.random.default_rng(0)
    total = int(minutes * 60 * RATE)
    with sf.SoundFile(str(path), "w", samplerate=RATE, channels=2, subtype="PCM_16") as f:
        for start in range(0, total, RATE * 30):
            f.write((0.1 * rng.standard_normal((min(RATE * 30, total - start), 2))).astype(np.float32))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--arch", default="unet", choices=sorted(ARCHITECTURES))
    parser.add_argument("--preset", default="full")
    args = parser.parse_args()
    _, model_class = ARCHITECTURES[args.arch]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.arch} {args.preset}, four stems")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        ckpt = save_checkpoint(root / "model.ckpt", model_class.from_preset(args.preset).eval())
        peaks = {}
        for minutes in args.minutes:
            song = write_noise(root / f"song-{minutes:g}min.wav", minutes)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "conditioned_sep.cli", "separate", str(song), "-c", str(ckpt),
                            "-s", "vocals,drums,bass,other", "-o", str(root / "out"), "--no-progress"], check=True)
            seconds = time.perf_counter() - t0
            # ru_maxrss of children is the largest child so far: runs go from short to long songs
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            peaks[minutes] = peak
            note = "" if peak > before / 1024 else " (not above an earlier, shorter run: order runs short to long)"
            print(f"{minutes:5g} min: {seconds:7.1f} s ({minutes * 60 / seconds:.1f}x real time), peak RSS "
                  f"{peak:7.0f} MB{note}")
            song.unlink()
            for f in (root / "out").rglob("*.wav"):
                f.unlink()
        first, last = min(peaks), max(peaks)
        print(f"longest / shortest peak: {peaks[last] / peaks[first]:.3f} (target <= 1.10); longest under 1 GB: "
              f"{peaks[last] < 1024}")


if __name__ == "__main__":
    main()
