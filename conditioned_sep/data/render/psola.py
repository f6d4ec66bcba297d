"""Pitch-synchronous overlap-add (TD-PSOLA): a spoken syllable sung on a note.

The syllable's periods are cut out as two-period grains around pitch marks and laid down again at the note's
period, so the pitch follows the note while the formants (the vowel and the speaker) stay; the voiced middle is
stretched to the note's length by reusing grains, the consonants before and after keep their own speed.
"""

from __future__ import annotations

import numpy as np

FRAME_SECONDS = 0.04
HOP_SECONDS = 0.005
F0_RANGE = (60.0, 500.0)
VOICING = 0.45  # normalised autocorrelation peak above which a frame is voiced


def f0_track(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame-wise f0 (Hz, 0 where unvoiced) and voicing of mono ``x``, one frame per :data:`HOP_SECONDS`.

    Returns ``(f0, voiced)``, both ``(frames,)``; frame ``k`` is centred at sample ``k * hop``.
    """
    win, hop = int(FRAME_SECONDS * sample_rate), int(HOP_SECONDS * sample_rate)
    padded = np.pad(x.astype(np.float64), (win // 2, win))
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[::hop][: len(x) // hop + 1]
    window = np.hanning(win)
    frames = (frames - frames.mean(1, keepdims=True)) * window
    acf = np.fft.irfft(np.abs(np.fft.rfft(frames, n=2 * win)) ** 2)[:, :win]
    # divided by the window's own autocorrelation, a periodic frame peaks near 1 at its period (Boersma 1993)
    acf_window = np.fft.irfft(np.abs(np.fft.rfft(window, n=2 * win)) ** 2)[:win]
    acf = acf / np.maximum(acf_window / acf_window[0], 1e-3)
    lo, hi = int(sample_rate / F0_RANGE[1]), int(sample_rate / F0_RANGE[0])
    hi = min(hi, win // 2)  # beyond half a frame the corrected autocorrelation is too noisy to trust
    acf = acf[:, lo:hi] / np.maximum(acf[:, :1], 1e-12)
    # the peak of the first lobe within 10 % of the best: a periodic frame peaks as high at two or three periods
    first = np.argmax(acf >= 0.9 * acf.max(axis=1, keepdims=True), axis=1)
    lobe = np.minimum(first[:, None] + np.arange(max(lo, 2)), acf.shape[1] - 1)
    lag_in = np.take_along_axis(lobe, np.argmax(np.take_along_axis(acf, lobe, axis=1), axis=1)[:, None], axis=1)[:, 0]
    lag = lo + lag_in
    peak = acf[np.arange(len(acf)), lag_in]
    energy = np.sqrt(np.mean(frames**2, axis=1))
    voiced = (peak > VOICING) & (energy > 0.02 * max(energy.max(), 1e-9))
    return np.where(voiced, sample_rate / lag, 0.0), voiced


def pitch_marks(x: np.ndarray, sample_rate: int, f0: np.ndarray, voiced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Analysis marks (sample positions) and the period (samples) each stands for: one mark per period in voiced
    stretches, snapped to the strongest peak near where the period predicts, one every hop in unvoiced ones."""
    hop = int(HOP_SECONDS * sample_rate)
    marks, periods = [], []
    t = 0.0
    while t < len(x):
        k = min(int(t // hop), len(f0) - 1)
        if voiced[k]:
            period = sample_rate / f0[k]
            lo, hi = int(max(0, t - period / 3)), int(min(len(x), t + period / 3))
            if hi > lo:
                t = lo + float(np.argmax(x[lo:hi]))
            marks.append(int(t))
            periods.append(period)
            t += period
        else:
            marks.append(int(t))
            periods.append(float(hop))
            t += hop
    return np.array(marks), np.array(periods)


def sing(x: np.ndarray, sample_rate: int, *, f0: np.ndarray, onset: float = 0.3, coda: float = 0.2) -> np.ndarray:
    """The syllable ``x`` (mono) sung along the pitch contour ``f0`` (Hz per output sample; its length is the note's).

    The unvoiced onset takes at most ``onset`` of the note and the tail after the voiced part at most ``coda``; the
    voiced part fills the rest. Returns float32 ``(len(f0),)`` at the same level as ``x``.
    """
    n = len(f0)
    src_f0, voiced = f0_track(x, sample_rate)
    hop = int(HOP_SECONDS * sample_rate)
    if not voiced.any() or n < 4:
        out = np.zeros(n, dtype=np.float32)
        out[: min(n, len(x))] = x[:n]
        return out
    v0 = int(np.flatnonzero(voiced)[0] * hop)
    v1 = int(min(len(x), (np.flatnonzero(voiced)[-1] + 1) * hop))
    a = min(v0, int(onset * n))
    c = min(len(x) - v1, int(coda * n))
    # output sample -> source position: onset, stretched voiced middle, coda
    time_map = np.concatenate([
        np.linspace(0, v0, a, endpoint=False),
        np.linspace(v0, v1, n - a - c, endpoint=False),
        np.linspace(v1, len(x) - 1, c, endpoint=False),
    ])
    marks, periods = pitch_marks(x, sample_rate, src_f0, voiced)
    out = np.zeros(n + 2 * int(sample_rate / F0_RANGE[0]) + 2, dtype=np.float64)
    norm = np.zeros_like(out)
    offset = int(sample_rate / F0_RANGE[0]) + 1
    s = 0.0
    while s < n:
        i = int(s)
        src = time_map[i]
        j = int(np.argmin(np.abs(marks - src)))
        m = marks[j]
        mark_voiced = voiced[min(m // hop, len(voiced) - 1)]
        half = int(round(periods[j])) if mark_voiced else hop
        lo, hi = max(0, m - half), min(len(x), m + half)
        window = np.hanning(2 * half + 1)[half - (m - lo): half + (hi - m)]
        grain = x[lo:hi] * window
        start = offset + i - (m - lo)
        out[start: start + len(grain)] += grain
        norm[start: start + len(grain)] += window
        step = sample_rate / f0[i] if (mark_voiced and f0[i] > 0) else hop
        s += max(step, 1.0)
    y = out / np.maximum(norm, 0.5)
    return y[offset: offset + n].astype(np.float32)
