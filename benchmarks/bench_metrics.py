"""Speed and parity of conditioned_sep.metrics against museval on 4 stereo sources of 60 s at 44.1 kHz.

References: the 4 stems of the MUSDB18 excerpt that stempeg ships, looped to 60 s, with -80 dB white dither (the
excerpt is band-limited by its lossy codec, which makes museval's equations ill-conditioned; the dither makes them
well posed, which is where a 0.01 dB parity target means something). Estimates: each stem filtered, mixed with the
others, soft-clipped and noisy. Prints both times (museval: one run, first; ours: median of --repeats runs after
it), the wall-clock and CPU-time speed-ups against the 50x target, the largest absolute difference per metric, the
solver path and condition figures, our peak numpy working memory, and the SDR-only speed.

``--undithered`` scores the same 60 s without dither too (ours only, against museval's numbers on it): the
ill-conditioned path that real MUSDB18 tracks take (extended-precision refinement), with its time and the
sensitivity figure. Takes about a minute and a half, mostly museval. Timings on a shared machine vary 1.5-3x with
load: compare only figures printed by one run.

    python benchmarks/bench_metrics.py [--seconds 60] [--repeats 3] [--undithered]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import scipy.signal

TARGET_SPEEDUP = 50.0


def make_signals(seconds: float, seed: int = 0, *, dither: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """Real music references and realistic estimates, ``(sources, channels, samples)`` float64."""
    import stempeg  # lazy: needs ffmpeg

    stems, rate = stempeg.read_stems(stempeg.example_stem_path())
    refs = np.transpose(stems[1:], (0, 2, 1)).astype(np.float64)  # (s, c, n): drums, bass, other, vocals
    n = int(seconds * rate)
    refs = np.tile(refs, (1, 1, -(-n // refs.shape[-1])))[..., :n]
    rng = np.random.default_rng(seed)
    if dither:
        refs = refs + 1e-4 * rng.standard_normal(refs.shape)
    b, a = scipy.signal.butter(4, 8000, fs=rate)
    filtered = scipy.signal.lfilter(b, a, refs, axis=-1)
    leak = np.roll(refs, 1, axis=0)
    ests = 0.8 * filtered + 0.15 * leak + 0.02 * np.tanh(4 * refs) + 0.01 * rng.standard_normal(refs.shape)
    return refs, ests, rate


def timed(fn, repeats: int) -> tuple[object, float, float]:
    """``fn()``'s last result, median wall seconds and median CPU seconds (all threads) over ``repeats`` runs."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return out, float(np.median(walls)), float(np.median(cpus))


def peak_numpy_bytes(fn) -> int:
    """Peak bytes of numpy (and Python) allocations during ``fn()`` (tracemalloc; the inputs are not counted)."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def report_parity(ours, theirs) -> None:
    for name, a, b in zip(("SDR", "ISR", "SIR", "SAR"), (ours.sdr, ours.isr, ours.sir, ours.sar), theirs):
        same_nan = bool(np.array_equal(np.isnan(a), np.isnan(b)))
        print(f"max |ours - museval| {name}: {np.nanmax(np.abs(a - b)):.2e} dB  (NaN pattern equal: {same_nan})")
    print(f"solver: {ours.solver}; Gram matrix smallest/largest eigenvalue ~{ours.gram_rcond:.1e}; "
          f"largest ISR/SIR/SAR sensitivity {np.nanmax(ours.sensitivity):.2e} dB "
          f"(NaN: unknown); stable to 0.1 dB: {ours.stable}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours; the median is reported")
    parser.add_argument("--undithered", action="store_true", help="also score the undithered (ill-conditioned) music")
    args = parser.parse_args()

    import museval
    import torch

    from conditioned_sep.metrics import bss_eval, framewise_sdr, to_museval_layout

    refs, ests, rate = make_signals(args.seconds)
    print(f"signals: {refs.shape[0]} sources x {refs.shape[1]} channels x {refs.shape[2] / rate:.0f} s at {rate} Hz, "
          f"torch threads: {torch.get_num_threads()}")

    bss_eval(refs[..., : rate * 2], ests[..., : rate * 2], rate)  # warm-up (FFT plans, BLAS threads, compiled loop)
    # museval first: run after ours it measured 13% slower (47.4 s against 42.0 s alone), which would flatter us
    theirs, t_museval, cpu_museval = timed(
        lambda: museval.evaluate(to_museval_layout(refs), to_museval_layout(ests), win=rate, hop=rate, mode="v4"), 1)
    ours, t_ours, cpu_ours = timed(lambda: bss_eval(refs, ests, rate), args.repeats)
    _, t_sdr, _ = timed(lambda: framewise_sdr(refs, ests, rate), args.repeats)
    peak = peak_numpy_bytes(lambda: bss_eval(refs, ests, rate))

    speedup, cpu_ratio = t_museval / t_ours, cpu_museval / cpu_ours
    print(f"museval.evaluate v4     : {t_museval:8.2f} s   (CPU {cpu_museval:.1f} s)")
    print(f"bss_eval (all metrics)  : {t_ours:8.2f} s   (CPU {cpu_ours:.2f} s, median of {args.repeats})")
    print(f"speed-up wall clock     : {speedup:8.1f}x  target {TARGET_SPEEDUP:.0f}x: "
          f"{'met' if speedup >= TARGET_SPEEDUP else 'MISSED'}   CPU-time ratio {cpu_ratio:.1f}x")
    print(f"framewise_sdr (SDR only): {t_sdr:8.3f} s   speed-up {t_museval / t_sdr:6.0f}x")
    print(f"peak numpy working memory of bss_eval: {peak / 2**20:.0f} MB (inputs {2 * refs.nbytes / 2**20:.0f} MB "
          "not counted)")
    report_parity(ours, theirs)
    print(f"median SDR per source   : {np.round(np.nanmedian(ours.sdr, axis=1), 2).tolist()}")

    if args.undithered:
        refs, ests, rate = make_signals(args.seconds, dither=False)
        theirs, t_museval, _ = timed(
            lambda: museval.evaluate(to_museval_layout(refs), to_museval_layout(ests), win=rate, hop=rate, mode="v4"),
            1)
        ours, t_ours, cpu_ours = timed(lambda: bss_eval(refs, ests, rate), args.repeats)
        print("\nundithered (ill-conditioned, as MUSDB18 tracks are):")
        print(f"museval {t_museval:.2f} s, ours {t_ours:.2f} s (CPU {cpu_ours:.2f} s): {t_museval / t_ours:.1f}x")
        report_parity(ours, theirs)


if __name__ == "__main__":
    main()
