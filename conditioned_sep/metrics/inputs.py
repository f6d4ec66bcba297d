"""Input checks and block reading for the metrics: channels-first ``(sources, channels, samples)`` arrays or
tensors checked once and read in float64 blocks (float32 input is never copied whole), frame bounds, museval's
layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from ..audio import AudioError, to_numpy
from .threads import _map_threads, _n_threads, _split


FRAME_SECONDS = 1.0
"""museval's window and hop in seconds (``win=hop=sample_rate``): the frames of every framewise score."""
# Work in chunks of about this many complex values (16 MB): fresh large arrays are slow on small machines.
_CHUNK_ELEMENTS = 1_000_000
_RFFT_OUT = np.lib.NumpyVersion(np.__version__) >= "2.0.0"


@dataclass(frozen=True)
class _Sources:
    """One input as per-source ``(channels, samples)`` arrays: views of the caller's data, never copies."""

    parts: tuple[np.ndarray, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(sources, channels, samples)`` (samples of the longest source)."""
        return len(self.parts), self.parts[0].shape[0], max(p.shape[-1] for p in self.parts)


def _as_sources(x, *, name: str) -> _Sources:
    """``(sources, channels, samples)`` input (an array or tensor, or a sequence of ``(channels, samples)`` arrays
    with the same channels) as :class:`_Sources` of real samples, with clear errors for bad input."""
    if isinstance(x, (list, tuple)):
        parts = tuple(to_numpy(p) for p in x)
        shape = (len(parts), *parts[0].shape) if parts else (0,)
        if any(p.ndim != 2 or p.shape[0] != parts[0].shape[0] for p in parts):
            shape = tuple(p.shape for p in parts)
    else:
        arr = to_numpy(x)
        parts, shape = (tuple(arr) if arr.ndim == 3 else ()), arr.shape
        if arr.dtype.kind not in "fiu":
            raise AudioError(f"{name} must hold real samples, got dtype {arr.dtype}")
    if len(shape) != 3 or not all(isinstance(d, int) for d in shape):
        raise AudioError(
            f"{name} must be (sources, channels, samples), got shape {shape}; for mono pass (sources, 1, samples)"
        )
    if not parts or 0 in shape:
        raise AudioError(f"{name} is empty (shape {shape}); pass at least one source, channel and sample")
    for part in parts:
        if part.dtype.kind not in "fiu":
            raise AudioError(f"{name} must hold real samples, got dtype {part.dtype}")
    return _Sources(parts)


def _scan(sources: _Sources, *, name: str, length: int) -> np.ndarray:
    """One threaded pass over the samples: raise for NaN or Inf; return ``(sources,)`` bool, museval's silent test
    over ``0:length`` (the sum over channels is zero at every sample)."""
    n_src = len(sources.parts)

    def work(spans: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        bad, loud = np.zeros(n_src, dtype=bool), np.zeros(n_src, dtype=bool)
        for lo, hi in spans:
            for i, part in enumerate(sources.parts):
                block = part[:, lo:hi]
                if part.dtype.kind == "f" and block.size and not np.isfinite(block).all():
                    bad[i] = True
                if lo < length and block.size:
                    loud[i] |= bool(np.any(block[:, : length - lo].sum(axis=0, dtype=np.float64) != 0))
        return bad, loud

    spans = _spans(sources.shape[-1], sources.shape[0] * sources.shape[1])
    results = _map_threads(work, _split(spans, _n_threads()))
    bad = np.any([r[0] for r in results], axis=0)
    if bad.any():
        raise AudioError(
            f"{name} contains NaN or Inf samples in source(s) {np.flatnonzero(bad).tolist()}; clean the signal "
            "(e.g. nan_to_num) first"
        )
    return ~np.any([r[1] for r in results], axis=0)


def _spans(n: int, rows: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` sample ranges of about ``_CHUNK_ELEMENTS`` values over ``rows`` rows."""
    step = max(1, _CHUNK_ELEMENTS // max(1, rows))
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def _checked_pair(references, estimates) -> tuple[_Sources, _Sources]:
    """References and estimates with matching sources and channels (for the whole-track SDRs)."""
    refs = _as_sources(references, name="references")
    ests = _as_sources(estimates, name="estimates")
    _check_same_layout(refs.shape, ests.shape)
    _scan(refs, name="references", length=refs.shape[-1])
    _scan(ests, name="estimates", length=refs.shape[-1])
    return refs, ests


def _check_same_layout(ref_shape: tuple[int, ...], est_shape: tuple[int, ...]) -> None:
    if ref_shape[:2] != est_shape[:2]:
        raise AudioError(
            f"references and estimates differ in sources or channels: references {ref_shape}, "
            f"estimates {est_shape} (both (sources, channels, samples)); give one estimate per reference "
            "with the same channels"
        )


def to_museval_layout(x) -> np.ndarray:
    """Channels-first ``(sources, channels, samples)`` -> museval's time-first ``(sources, samples, channels)``.

    The one conversion between the two layouts (used by tests and benchmarks that call museval).
    """
    return np.ascontiguousarray(np.swapaxes(to_numpy(x), -1, -2))


@dataclass(frozen=True)
class _Rows:
    """The ``(source, channel)`` rows of the sources ``index`` of an input, read in float64 (or wider) blocks of a
    track of ``length`` samples: zeros beyond a source's end (museval pads short estimates), nothing past
    ``length`` (museval cuts long ones). Nothing is ever copied whole."""

    sources: _Sources
    index: np.ndarray
    length: int

    @property
    def channels(self) -> int:
        return self.sources.parts[0].shape[0]

    @property
    def count(self) -> int:
        return len(self.index) * self.channels

    def read(self, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
        """Samples ``lo:hi`` (``lo`` may be negative) of every row into ``out`` ``(count, hi - lo)``, zero outside."""
        n_ch = self.channels
        for k, j in enumerate(self.index):
            part, rows = self.sources.parts[j], out[k * n_ch : (k + 1) * n_ch]
            a, b = max(lo, 0), min(hi, self.length, part.shape[-1])
            if b <= a:
                rows[...] = 0.0
                continue
            rows[:, : a - lo] = 0.0
            rows[:, a - lo : b - lo] = part[:, a:b]  # one strided copy, with the conversion to out's dtype
            rows[:, b - lo :] = 0.0
        return out


def _window_hop(sample_rate: int, window: int | None, hop: int | None) -> tuple[int, int]:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    window = int(round(FRAME_SECONDS * sample_rate) if window is None else window)
    hop = int(round(FRAME_SECONDS * sample_rate) if hop is None else hop)
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive sample counts, got window={window}, hop={hop}")
    return window, hop


def _frame_bounds(n: int, window: int, hop: int) -> tuple[np.ndarray, int]:
    """Frame starts and the frame length, as museval's ``Framing``: the trailing partial window is dropped."""
    if window < n:
        n_frames = (n - window + hop) // hop
        return np.arange(n_frames) * hop, window
    return np.zeros(1, dtype=np.int64), n


def _db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``10 log10(num / den)`` with museval's ``_safe_db`` rule: a zero denominator gives ``+inf``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10.0 * np.log10(num / den)
    return np.where(den == 0, np.inf, out)


def _fft_size(n: int) -> int:
    """Smallest ``m * 2**k >= n`` with a small odd ``m``: measured faster here than 5- and 7-smooth sizes."""
    return min(m << max(0, int(np.ceil(np.log2(n / m)))) for m in (1, 3, 5, 9, 15, 45))


def _rfft(x: np.ndarray, n: int, out: np.ndarray) -> np.ndarray:
    """``rfft`` along the last axis into a reused buffer; long double through scipy (numpy < 2 would round it)."""
    if out.dtype == np.complex128 and _RFFT_OUT:
        return np.fft.rfft(x, n=n, axis=-1, out=out)
    out[...] = scipy.fft.rfft(x, n=n, axis=-1)
    return out


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """``(channels, samples)`` cut or zero-padded to ``n`` samples."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.pad(x, [(0, 0), (0, n - x.shape[-1])])
