"""Speed and parity of conditioned_sep.metrics against museval on 4 stereo sources of 60 s at 44.1 kHz.

References: the 4 stems of the MUSDB18 excerpt that stempeg ships, looped to 60 s, with -80 dB white dither
(the excerpt is band-limited by its lossy codec, which leaves museval's own SIR/SAR at the mercy of rounding;
see tests/test_metrics.py). Estimates: each stem filtered, mixed with the others, soft-clipped and noisy.
Prints both times (ours: median of --repeats runs; museval: one run), the speed-up, the largest absolute
difference per metric and the SDR-only speed. Takes about a minute, mostly museval.

    python benchmarks/bench_metrics.py [--seconds 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.signal


def make_signals(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Real music references and realistic estimates, ``(sources, channels, samples)`` float64."""
    import stempeg  # lazy: needs ffmpeg

    stems, rate = stempeg.read_stems(stempeg.example_stem_path())
    refs = np.transpose(stems[1:], (0, 2, 1)).astype(np.float64)  # (s, c, n): drums, bass, other, vocals
    n = int(seconds * rate)
    refs = np.tile(refs, (1, 1, -(-n // refs.shape[-1])))[..., :n]
    rng = np.random.default_rng(seed)
    refs = refs + 1e-4 * rng.standard_normal(refs.shape)
    b, a = scipy.signal.butter(4, 8000, fs=rate)
    filtered = scipy.signal.lfilter(b, a, refs, axis=-1)
    leak = np.roll(refs, 1, axis=0)
    ests = 0.8 * filtered + 0.15 * leak + 0.02 * np.tanh(4 * refs) + 0.01 * rng.standard_normal(refs.shape)
    return refs, ests, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours; the median is reported")
    args = parser.parse_args()

    import museval
    import torch

    from conditioned_sep.metrics import bss_eval, framewise_sdr, to_museval_layout

    refs, ests, rate = make_signals(args.seconds)
    print(f"signals: {refs.shape[0]} sources x {refs.shape[1]} channels x {refs.shape[2] / rate:.0f} s at {rate} Hz")

    bss_eval(refs[..., : rate * 2], ests[..., : rate * 2], rate)  # warm-up (FFT plans, BLAS threads)
    times, cpu_times, sdr_times = [], [], []
    for _ in range(args.repeats):  # the median of a few runs: the machine may be shared
        t0, c0 = time.perf_counter(), time.process_time()
        ours = bss_eval(refs, ests, rate)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        t0 = time.perf_counter()
        sdr_only = framewise_sdr(refs, ests, rate)
        sdr_times.append(time.perf_counter() - t0)
    t_ours, t_sdr = float(np.median(times)), float(np.median(sdr_times))
    t0, c0 = time.perf_counter(), time.process_time()
    theirs = museval.evaluate(to_museval_layout(refs), to_museval_layout(ests), win=rate, hop=rate, mode="v4")
    t_museval, cpu_museval = time.perf_counter() - t0, time.process_time() - c0
    cpu_ours = float(np.median(cpu_times))

    print(f"museval.evaluate v4     : {t_museval:8.2f} s")
    print(f"bss_eval (all metrics)  : {t_ours:8.2f} s   speed-up {t_museval / t_ours:6.1f}x"
          f"   (median of {len(times)}; min {min(times):.2f} s)")
    print(f"CPU time (all threads)  : museval {cpu_museval:.1f} s, ours {cpu_ours:.2f} s, "
          f"ratio {cpu_museval / cpu_ours:.1f}x (less sensitive to other load than wall time)")
    print(f"framewise_sdr (SDR only): {t_sdr:8.3f} s   speed-up {t_museval / t_sdr:6.0f}x")
    print(f"torch threads: {torch.get_num_threads()}")
    for name, a, b in zip(("SDR", "ISR", "SIR", "SAR"), (ours.sdr, ours.isr, ours.sir, ours.sar), theirs):
        same_nan = bool(np.array_equal(np.isnan(a), np.isnan(b)))
        print(f"max |ours - museval| {name}: {np.nanmax(np.abs(a - b)):.2e} dB  (NaN pattern equal: {same_nan})")
    print(f"max |SDR-only - SDR|    : {np.nanmax(np.abs(sdr_only - ours.sdr)):.2e} dB")
    print(f"median SDR per source   : {np.round(np.nanmedian(ours.sdr, axis=1), 2).tolist()}")


if __name__ == "__main__":
    main()
