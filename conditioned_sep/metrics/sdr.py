"""Whole-track SDRs (MDX "new SDR", scale-invariant SDR) and SiSEC aggregation: all that training and the reports
need, without the BSS Eval decomposition (no numba, no solver).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..audio import to_numpy
from .inputs import _checked_pair, _fit_length, _Rows, _spans


METRICS: tuple[str, ...] = ("SDR", "ISR", "SIR", "SAR")
"""BSS Eval v4's four framewise metrics, in museval's order (``museval.evaluate`` returns them so); the one list
of metric names of the package (report tables and files use it too)."""
_MDX_EPS = 1e-7


@dataclass(frozen=True)
class Aggregate:
    """Track-level aggregate of one metric: ``median`` is SiSEC's figure, ``mean`` is beside it.

    ``per_track`` holds each track's nanmedian over frames (``(tracks,)`` or ``(tracks, sources)``).
    """

    median: np.ndarray
    mean: np.ndarray
    per_track: np.ndarray


def new_sdr(references, estimates) -> np.ndarray:
    """MDX "new SDR" per source: ``10 log10((sum s^2 + 1e-7) / (sum (s - s_hat)^2 + 1e-7))``, ``(sources,)`` dB.

    Sums run over channels and samples of the whole track; estimates are padded or cut to the reference length.
    """
    refs, ests = _checked_pair(references, estimates)
    n_src, _, n = refs.shape
    rows_r, rows_e = _Rows(refs, np.arange(n_src), n), _Rows(ests, np.arange(n_src), n)
    num = np.full(n_src, _MDX_EPS)
    den = np.full(n_src, _MDX_EPS)
    for lo, hi in _spans(n, 2 * rows_r.count):
        r = rows_r.read(lo, hi, np.empty((rows_r.count, hi - lo))).reshape(n_src, -1)
        e = rows_e.read(lo, hi, np.empty((rows_e.count, hi - lo))).reshape(n_src, -1)
        num += np.einsum("sn,sn->s", r, r)
        e -= r
        den += np.einsum("sn,sn->s", e, e)
    return 10.0 * np.log10(num / den)


def si_sdr(references, estimates, *, zero_mean: bool = True) -> np.ndarray:
    """Scale-invariant SDR per source (Le Roux et al. 2019) over the whole track, channels pooled: ``(sources,)`` dB.

    The reference is scaled by ``alpha = <s_hat, s> / <s, s>``; ``zero_mean`` removes each channel's mean first.
    A silent reference gives NaN; a perfect estimate gives ``+inf``.
    """
    refs, ests = _checked_pair(references, estimates)
    n = refs.shape[-1]
    refs = np.stack([np.asarray(p, dtype=np.float64) for p in refs.parts])
    ests = np.stack([_fit_length(np.asarray(p, dtype=np.float64), n) for p in ests.parts])
    if zero_mean:
        refs = refs - refs.mean(axis=-1, keepdims=True)
        ests = ests - ests.mean(axis=-1, keepdims=True)
    power = np.sum(refs**2, axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.sum(refs * ests, axis=(1, 2)) / power
        target = alpha[:, None, None] * refs
        num = np.sum(target**2, axis=(1, 2))
        den = np.sum((target - ests) ** 2, axis=(1, 2))
        out = 10.0 * np.log10(num / den)
    out = np.where(den == 0, np.inf, out)
    return np.where(power == 0, np.nan, out)


def aggregate(tracks: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> Aggregate:
    """SiSEC aggregation of one metric over tracks.

    ``tracks``: one framewise array per track, ``(frames,)`` or ``(sources, frames)`` (frame counts may differ
    between tracks; source counts may not). Each track is reduced by nanmedian over frames; then ``median`` is
    the median over tracks (museval / SiSEC) and ``mean`` the mean over tracks. As museval stores scores, infinite
    frames count as NaN, and tracks that are NaN throughout are skipped (pandas' median skips NaN).

    Always numpy float64 arrays: ``median`` and ``mean`` are ``()`` for ``(frames,)`` tracks (``float(...)``
    gives the number) and ``(sources,)`` for ``(sources, frames)`` tracks; ``per_track`` is ``(tracks,)`` or
    ``(tracks, sources)``.
    """
    values = list(tracks.values()) if isinstance(tracks, Mapping) else list(tracks)
    if not values:
        raise ValueError("aggregate needs at least one track")
    per_track = []
    for i, v in enumerate(values):
        arr = np.asarray(to_numpy(v), dtype=np.float64)
        if arr.ndim not in (1, 2):
            raise ValueError(f"track {i}: expected (frames,) or (sources, frames), got shape {arr.shape}")
        arr = np.where(np.isinf(arr), np.nan, arr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN tracks give NaN, skipped below
            per_track.append(np.nanmedian(arr, axis=-1))
    shapes = {p.shape for p in per_track}
    if len(shapes) > 1:
        raise ValueError(f"tracks differ in the number of sources: {sorted(shapes)}; aggregate one stem set at a time")
    stacked = np.stack(per_track)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(stacked, axis=0)
        mean = np.nanmean(stacked, axis=0)
    return Aggregate(median=np.asarray(median, dtype=np.float64), mean=np.asarray(mean, dtype=np.float64),
                     per_track=stacked)
