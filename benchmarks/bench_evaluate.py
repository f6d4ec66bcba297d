"""Scoring a MUSDB18-shaped test set: minutes with conditioned_sep.metrics against hours with museval.

The test set: ``--tracks`` songs (default 50) of ``--minutes`` each (default 3.5), four stereo stems at 44.1 kHz in
float32, as evaluation reads them, simulated from the MUSDB18 excerpt that stempeg ships (each song's stems looped
from their own random offsets, the joins crossfaded: real, lossy-coded, band-limited music, so every track takes the
ill-conditioned path that real MUSDB18 tracks take). Five rows per track, as ``evaluate.py`` scores them: three
separator-like rows (each stem leaked, low-passed and noisy at a row's own levels), the IRM2 oracle
(``evaluation._OracleRow``) and the mixture; every row is scored on the four stems and on the sums
``accompaniment`` and ``drums+bass`` in their own scoring sets, by ``evaluation._score``.

Ours: ``--measure`` songs (default 2) are scored in full, the five rows sharing each scoring set's reference side
(one preparation per track and set, as ``_score``'s ``prepared`` cache allows); the set's time is that per-song
time times ``--tracks``. museval: one row's three scoring sets are timed at ``--museval-seconds`` (default 20 40)
of the first song, each in a child process (its peak memory recorded), extrapolated linearly in length to one song
and multiplied by rows and songs. Rows are made one at a time, as ``evaluate.py`` makes them, outside the timings.
Timings on a shared machine vary 1.5-3x with load: compare only figures printed by one run.

    python benchmarks/bench_evaluate.py [--tracks 50] [--minutes 3.5] [--measure 2] [--museval-seconds 20 40]
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import resource
import time
import warnings
from types import SimpleNamespace

import numpy as np
import scipy.signal

SETS = ("stems", "accompaniment", "drums+bass")


def excerpt() -> tuple[np.ndarray, int]:
    """The stempeg excerpt's four stems in evaluation's order (vocals, drums, bass, other), ``(4, 2, n)`` float32."""
    import stempeg  # lazy: needs ffmpeg

    stems, rate = stempeg.read_stems(stempeg.example_stem_path())  # mixture, drums, bass, other, vocals
    return np.transpose(stems[[4, 1, 2, 3]], (0, 2, 1)).astype(np.float32), int(rate)


def looped(stem: np.ndarray, start: int, n: int, fade: int = 8192) -> np.ndarray:
    """``n`` samples from ``start`` of ``stem`` ``(channels, samples)`` looped end to start, the joins crossfaded
    (raised cosine over ``fade`` samples) so that no click adds broadband content the codec removed."""
    m = stem.shape[-1]
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
    piece = stem.astype(np.float64)
    piece[:, :fade] *= ramp
    piece[:, -fade:] *= ramp[::-1]
    out = np.zeros((stem.shape[0], start + n + m))
    for k in range(0, start + n, m - fade):
        out[:, k : k + m] += piece
    return out[:, start : start + n]


def simulated_song(stems: np.ndarray, index: int, seconds: float) -> np.ndarray:
    """Song ``index``: each stem looped from its own random offset, ``(4, 2, samples)`` float32 (no gains: their
    rounding would add a noise floor above the codec's band limit)."""
    rng = np.random.default_rng(index)
    n = int(seconds * 44100)
    return np.stack([looped(stem, int(rng.integers(stem.shape[-1])), n) for stem in stems]).astype(np.float32)


def separator_estimates(references: np.ndarray, row: int, rate: int) -> dict[str, np.ndarray]:
    """A separator-like row: each stem leaked into by the others, low-passed, noisy (levels depend on ``row``)."""
    from conditioned_sep.stems import STEMS

    rng = np.random.default_rng(100 + row)
    leak, cutoff, noise = (0.1, 0.15, 0.2)[row], (6000, 9000, 12000)[row], (0.01, 0.02, 0.005)[row]
    b, a = scipy.signal.butter(2, cutoff, fs=rate)
    total = references.sum(0)
    out = {}
    for j, stem in enumerate(STEMS):
        est = scipy.signal.lfilter(b, a, 0.9 * references[j] + leak * (total - references[j]), axis=-1)
        out[stem] = (est + noise * rng.standard_normal(est.shape)).astype(np.float32)
    out["accompaniment"] = out["drums"] + out["bass"] + out["other"]
    out["drums+bass"] = out["drums"] + out["bass"]
    return out


ROWS = ("separator-0", "separator-1", "separator-2", "oracle-irm2", "mixture")


def row_estimates(row: str, references: np.ndarray, rate: int) -> dict[str, np.ndarray]:
    """One row's estimates of one song: ``{condition: (channels, samples)}``."""
    from conditioned_sep.evaluation import DEFAULT_SUMS, _OracleRow, parse_sums
    from conditioned_sep.stems import STEMS, StemQuery

    queries = [StemQuery(s, (s,)) for s in STEMS] + parse_sums(DEFAULT_SUMS)
    mixture = references.sum(0)
    if row == "oracle-irm2":
        return _OracleRow("irm2", n_fft=4096, hop_length=1024).estimate(mixture, references, queries, rate)[0]
    if row == "mixture":
        return {q.name: mixture for q in queries}
    return separator_estimates(references, int(row.split("-")[1]), rate)


def score_song(references: np.ndarray, rate: int, *, shared: bool) -> tuple[float, float, int]:
    """Wall and CPU seconds to score every row of one song (``shared``: one reference preparation per set), and
    the largest bytes of estimates held at once. Rows are made one at a time, as ``evaluate.py`` makes them, and
    their making is not timed."""
    from conditioned_sep.evaluation import DEFAULT_SUMS, _score, parse_sums
    from conditioned_sep.metrics import no_huge_pages
    from conditioned_sep.stems import STEMS, StemQuery

    queries = [StemQuery(s, (s,)) for s in STEMS] + parse_sums(DEFAULT_SUMS)
    mixture = references.sum(0)
    prepared: dict = {}
    wall = cpu = 0.0
    held = 0
    for row in ROWS:
        estimates = row_estimates(row, references, rate)
        held = max(held, sum(v.nbytes for v in estimates.values()))
        t0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings(), no_huge_pages():  # as evaluate.py scores a track
            warnings.simplefilter("ignore", UserWarning)
            _score(SimpleNamespace(model=row, seed=None), "song", references, mixture, estimates, queries, rate,
                   prepared=prepared if shared else None)  # the scores name the row's model and seed only
        wall, cpu = wall + time.perf_counter() - t0, cpu + time.process_time() - c0
        del estimates
    return wall, cpu, held


def _museval_child(references: np.ndarray, estimates: dict, rate: int, queue) -> None:
    """One row's three scoring sets with museval; puts ``({set: seconds}, peak RSS bytes)`` on ``queue``."""
    import museval

    from conditioned_sep.metrics import to_museval_layout

    refs = {"vocals": references[0], "drums": references[1], "bass": references[2], "other": references[3]}
    sets = {
        "stems": (list(refs.values()), [estimates[s] for s in refs]),
        "accompaniment": ([refs["drums"] + refs["bass"] + refs["other"], refs["vocals"]],
                          [estimates["accompaniment"], estimates["vocals"]]),
        "drums+bass": ([refs["drums"] + refs["bass"], refs["vocals"], refs["other"]],
                       [estimates["drums+bass"], estimates["vocals"], estimates["other"]]),
    }
    seconds = {}
    for name, (ref, est) in sets.items():
        ref64, est64 = (to_museval_layout(np.stack(x).astype(np.float64)) for x in (ref, est))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            museval.evaluate(ref64, est64, win=rate, hop=rate, mode="v4")
        seconds[name] = time.perf_counter() - t0
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


def museval_row_seconds(references: np.ndarray, estimates: dict, rate: int) -> tuple[dict, int]:
    """museval's seconds per scoring set for one row, and its peak RSS, measured in a child process."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_museval_child, args=(references, estimates, rate, queue))
    child.start()
    out = queue.get()
    child.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=50, help="songs in the test set")
    parser.add_argument("--minutes", type=float, default=3.5, help="length of each song")
    parser.add_argument("--measure", type=int, default=2, help="songs scored in full (ours)")
    parser.add_argument("--museval-seconds", type=float, nargs="+", default=[20.0, 40.0],
                        help="excerpt lengths at which museval is timed (two or more, for the extrapolation)")
    parser.add_argument("--skip-museval", action="store_true")
    parser.add_argument("--unshared", action="store_true",
                        help="also score the first song preparing the references again for every row")
    args = parser.parse_args()

    import torch

    importlib.import_module("conditioned_sep.evaluation")  # its imports count in the baseline memory

    stems, rate = excerpt()
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    seconds = args.minutes * 60
    print(f"test set: {args.tracks} songs x {args.minutes} min, 4 stereo stems at {rate} Hz, 5 rows, sets {SETS}; "
          f"torch threads {torch.get_num_threads()}")

    walls, cpus = [], []
    for index in range(args.measure):
        references = simulated_song(stems, index, seconds)
        wall, cpu, held = score_song(references, rate, shared=True)
        walls.append(wall)
        cpus.append(cpu)
        print(f"song {index}: ours {wall:.1f} s wall, {cpu:.1f} s CPU for 5 rows x 3 sets")
        if index == 0 and args.unshared:
            wall_u, cpu_u, _ = score_song(references, rate, shared=False)
            print(f"song 0 preparing the references again for every row: {wall_u:.1f} s wall, {cpu_u:.1f} s CPU")
        data_mb = (references.nbytes + held) / 2**20
        del references
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    per_song = float(np.mean(walls))
    print(f"ours: {per_song:.1f} s per song -> {per_song * args.tracks / 60:.1f} min for {args.tracks} songs "
          f"(CPU {np.mean(cpus) * args.tracks / 60:.1f} min); peak RSS {peak_rss:.0f} MB (after imports "
          f"{baseline_rss:.0f} MB), of which the song and one row's estimates {data_mb:.0f} MB")

    if args.skip_museval:
        return
    references = simulated_song(stems, 0, max(args.museval_seconds))
    estimates = row_estimates("separator-0", references, rate)
    lengths, per_set, peaks = [], {name: [] for name in SETS}, []
    for length in args.museval_seconds:
        n = int(length * rate)
        cut = {k: v[..., :n] for k, v in estimates.items()}
        times, peak = museval_row_seconds(references[..., :n], cut, rate)
        lengths.append(length)
        peaks.append(peak)
        for name in SETS:
            per_set[name].append(times[name])
        print(f"museval at {length:.0f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
              + f"; peak RSS {peak / 2**30:.2f} GB")
    row = sum(np.polyval(np.polyfit(lengths, per_set[name], 1), seconds) for name in SETS)
    hours = row * 5 * args.tracks / 3600
    growth = np.polyfit(lengths, peaks, 1)[0] * seconds + np.polyfit(lengths, peaks, 1)[1]
    print(f"museval (extrapolated): {row:.0f} s per row and song -> {hours:.1f} h for {args.tracks} songs x 5 rows; "
          f"peak RSS at {seconds:.0f} s ~{growth / 2**30:.1f} GB")
    print(f"ratio: {row * 5 / per_song:.0f}x")


if __name__ == "__main__":
    main()
