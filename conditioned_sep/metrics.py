"""Separation metrics: BSS Eval v4 exactly as museval defines it, fast; SI-SDR; MDX "new SDR".

All inputs are channels-first ``(sources, channels, samples)`` numpy arrays or torch tensors (mono: one channel),
at any sample rate; everything is computed in float64 (or wider) on the CPU and returned as numpy float64.

Public API
----------
- :func:`bss_eval` ``(references, estimates, sample_rate=44100, *, window=None, hop=None, compute_filters=True,
  filters_len=512, extended_precision=True) -> BSSEvalResult``: per-source, per-frame SDR, ISR, SIR, SAR in dB,
  each ``(sources, frames)``, as ``museval.evaluate(refs, ests, win=window, hop=hop, mode="v4")`` defines them
  (window and hop default to one second, i.e. ``sample_rate`` samples). museval's behaviour is kept on purpose:

  * 512-tap distortion filters fitted once on the whole track (v4), from museval's equations
    ``(G + eps I) c = D`` (``G`` the Gram matrix of the delayed references, ``eps`` float64's machine epsilon);
    the trailing partial window dropped (a track shorter than one window gives one frame over the whole track);
  * estimates zero-padded or cut to the reference length;
  * a frame is NaN for *every* source when any reference or any estimate is "silent" in it, where silent means
    museval's test: the sum over channels is zero at every sample (so ``left == -right`` counts as silent);
  * SDR is the image SDR: frame energy of the reference over that of ``estimate - reference``; the filters only
    change ISR, SIR and SAR (museval issue #101). A zero denominator gives ``+inf`` as in museval.

  Unlike museval, a reference that is silent over the whole track (museval raises, issue #94) gives NaN for that
  source with a warning, and the other sources are scored as museval scores them without it.
  ``compute_filters=False`` is the fast SDR-only path (``isr``, ``sir``, ``sar`` are then ``None``);
  ``extended_precision=False`` keeps double-precision filters (see below).
- :class:`ReferenceSet` ``(references, sample_rate=44100, *, window=None, hop=None, filters_len=512,
  extended_precision=True)`` with ``.evaluate(estimates, *, compute_filters=True) -> BSSEvalResult``: the
  reference side (correlations, the solver, the condition figure) computed once and reused for any number of
  estimate sets; :func:`bss_eval` is ``ReferenceSet(...).evaluate(estimates)``.
- :func:`bss_eval_many` ``(references, estimate_sets, sample_rate=44100, **options) -> list[BSSEvalResult]``: one
  result per estimate set, the references prepared once.
- :func:`framewise_sdr` ``(references, estimates, sample_rate=44100, *, window=None, hop=None)``: the SDR-only
  path as a bare ``(sources, frames)`` array.
- :func:`si_sdr` ``(references, estimates, *, zero_mean=True)``: scale-invariant SDR per source over the whole
  track, channels pooled, ``(sources,)``.
- :func:`new_sdr` ``(references, estimates)``: the Music Demixing Challenge's SDR per source over the whole track,
  ``10 log10((sum s^2 + 1e-7) / (sum (s - s_hat)^2 + 1e-7))``, channels pooled, ``(sources,)``.
- :func:`aggregate` ``(tracks) -> Aggregate``: SiSEC aggregation of framewise scores: nanmedian over the frames of
  each track, then the median over tracks (the published figure) and the mean over tracks beside it.

Algorithm. ``G`` is block Toeplitz: ordered by lag, its ``(k, l)`` block is the matrix of channel correlations at
lag ``k - l``. The lag correlations (``2 * 512 - 1`` lags) come from block FFTs. Once per reference set, the block
Levinson (Whittle) recursion gives the forward and backward predictors of the references (``3 A^3 L^2`` flops for
``A`` reference channels and ``L`` taps, on arrays that stay in cache; a dense Cholesky factorisation takes
``(A L)^3 / 3``: 57x more for four stereo sources, and ``(A L)^2`` doubles of memory); the Gohberg-Semencul formula
turns them into an approximate inverse of ``G`` applied by FFT. The filters of every estimate set are solved with it
and refined against ``G`` itself, applied by FFT:

1. residuals in double precision: the filters are kept when a step changes them by less than ``1e-8`` of
   themselves (well-posed references: the metrics are then exact to about 1e-5 dB or better);
2. otherwise (ill-conditioned references, such as lossy-coded music whose band limit makes ``G`` numerically
   singular) residuals against ``G`` computed from extended-precision correlations (``numpy.longdouble``, 80-bit on
   x86), which settles the filters on the exact solution of museval's equations far closer than any
   double-precision solve does;
3. the dense Cholesky factor replaces Levinson's inverse where the recursion breaks down (a Gram matrix that is not
   numerically positive definite, e.g. identical channels) or where refinement with it stops converging;
4. where not even extended-precision residuals settle the filters (museval's equations conditioned beyond what
   long double resolves, e.g. an estimate that is exactly a sum of the references, as the mixture is: its SAR is a
   ratio of rounding errors), the filters are the dense double-precision solve, as arbitrary as museval's, and the
   frames are flagged (``sensitivity`` NaN).

Honesty. Each result carries ``gram_rcond`` (an estimate of the smallest over the largest eigenvalue of ``G``) and
``sensitivity`` ``(sources, frames)``: the largest change of ISR, SIR or SAR between the filters of a plain
double-precision solve (what museval computes, up to its own rounding) and ours; ``unstable`` marks the frames
where it exceeds :data:`UNSTABLE_DB`. On such frames museval's published numbers are not determined to that
precision, whichever implementation computed them.

Speed. Both passes over the samples (the lag correlations; the frames' projections) run on the threads torch is
given; the correlations' small per-frequency products go through torch's BLAS, and the frames' projections and
energies through one compiled loop (:mod:`conditioned_sep.kernels`, numba), since in numpy they took a product and
a dozen passes over memory.

Memory is bounded by the window and the filter length, not the track: inputs are read block by block (float32
input is never copied whole into float64); the solver keeps ``O(A^2 L)`` numbers (the dense fallback ``(A L)^2``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.fft
import torch

from .audio import AudioError, to_numpy

try:  # numpy's switch for its huge-page advice (private, numpy >= 1.20); without it no_huge_pages does nothing
    from numpy._core.multiarray import _set_madvise_hugepage
except ImportError:  # numpy < 2
    try:
        from numpy.core.multiarray import _set_madvise_hugepage
    except ImportError:
        _set_madvise_hugepage = None
from .kernels import projection_energies

METRICS: tuple[str, ...] = ("SDR", "ISR", "SIR", "SAR")
"""BSS Eval v4's four framewise metrics, in museval's order (``museval.evaluate`` returns them so); the one list
of metric names of the package (report tables and files use it too)."""
FILTERS_LEN = 512
UNSTABLE_DB = 0.1
"""A frame counts as numerically unstable when a plain double-precision solve moves its ISR, SIR or SAR by more
than this many dB (see :attr:`BSSEvalResult.unstable`)."""
_MDX_EPS = 1e-7
# Work in chunks of about this many complex values (16 MB): fresh large arrays are slow on small machines.
_CHUNK_ELEMENTS = 1_000_000
# frames with filters go one or two at a time: their buffers stay small (fewer page faults) and the product that
# needs several frames at once is gone (measured 0.26 s against 0.31 s for 60 one-second frames of eight rows)
_FRAME_CHUNK_ELEMENTS = 250_000
_RFFT_OUT = np.lib.NumpyVersion(np.__version__) >= "2.0.0"
_MUSEVAL_EPS = float(np.finfo(np.float64).eps)  # museval solves (G + eps I) c = D, eps absolute
_REFINE_TOL = 1e-8  # refinement stops when a step changes the filters by less than this fraction
_SETTLED = 1e-6  # ... or when it stops converging: extended-precision filters count as settled below this change
_DOUBLE_FLOOR = 1e-3  # double-precision refinement that stalls above this shows an inverse too rough to refine with
_MAX_STEPS = 8
_PROJECTION_ENERGIES = ("e_spat", "s_filt", "e_int", "s_all", "e_art")  # kernels.projection_energies' order
_HAS_EXTENDED = bool(np.finfo(np.longdouble).eps < 1e-18)  # 80-bit (x86) or 128-bit long double


@dataclass(frozen=True)
class BSSEvalResult:
    """Framewise BSS Eval v4 scores in dB, each ``(sources, frames)`` float64; NaN where museval gives NaN.

    ``isr``, ``sir`` and ``sar`` are ``None`` when computed with ``compute_filters=False``. With filters:
    ``gram_rcond`` estimates the smallest over the largest eigenvalue of the reference Gram matrix (values near
    1e-16 mean numerically singular in double precision); ``sensitivity`` ``(sources, frames)`` is the largest
    change (dB) of ISR, SIR or SAR between a plain double-precision solve and the filters used here: 0 where the
    double-precision filters were already exact to 1e-8, NaN where it is unknown (no extended precision, or not even
    extended precision settles the filters) or the frame is NaN; ``solver`` names the path: ``"levinson"`` or
    ``"dense"``, then ``"+double"``, ``"+extended"``, ``"+unrefined"`` (no extended precision available or asked
    for) or ``"+unconverged"``.
    """

    sdr: np.ndarray
    isr: np.ndarray | None
    sir: np.ndarray | None
    sar: np.ndarray | None
    sample_rate: int
    window_samples: int
    hop_samples: int
    gram_rcond: float = float("nan")
    sensitivity: np.ndarray | None = None
    solver: str = ""

    @property
    def frame_times(self) -> np.ndarray:
        """Start time of each frame in seconds, ``(frames,)``."""
        return np.arange(self.sdr.shape[1]) * self.hop_samples / self.sample_rate

    @property
    def unstable(self) -> np.ndarray:
        """``(sources, frames)`` bool: frames with numbers whose ISR, SIR or SAR is not shown stable to
        :data:`UNSTABLE_DB` (all ``False`` for the SDR-only path: SDR needs no filters)."""
        if self.sensitivity is None or self.sir is None:
            return np.zeros(self.sdr.shape, dtype=bool)
        scored = np.isfinite(self.sir) | np.isfinite(self.sar) | np.isfinite(self.isr)
        return scored & ~(self.sensitivity <= UNSTABLE_DB)

    @property
    def stable(self) -> bool:
        """Whether every scored frame's ISR, SIR and SAR are stable to :data:`UNSTABLE_DB` (the per-track flag)."""
        return not self.unstable.any()

    def frames(self, targets: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
        """``{target: {"SDR": (frames,), "ISR": ..., "SIR": ..., "SAR": ...}}`` with one name per source, in order.

        This is the shape :func:`conditioned_sep.museval_io.write_museval_json` takes.
        """
        if len(targets) != self.sdr.shape[0]:
            raise ValueError(f"got {len(targets)} target names for {self.sdr.shape[0]} sources; give one per source")
        out = {}
        for i, name in enumerate(targets):
            out[name] = {
                m: (v[i] if v is not None else np.full(self.sdr.shape[1], np.nan))
                for m, v in zip(METRICS, (self.sdr, self.isr, self.sir, self.sar))
            }
        return out


@dataclass(frozen=True)
class Aggregate:
    """Track-level aggregate of one metric: ``median`` is SiSEC's figure, ``mean`` is beside it.

    ``per_track`` holds each track's nanmedian over frames (``(tracks,)`` or ``(tracks, sources)``).
    """

    median: np.ndarray
    mean: np.ndarray
    per_track: np.ndarray


@contextmanager
def no_huge_pages() -> Iterator[None]:
    """Within the block numpy does not advise the kernel to back new large arrays with transparent huge pages
    (restored after). Where the kernel's huge-page defragmentation is ``madvise`` (the default of many
    distributions), such page faults wait for memory compaction once memory is fragmented, as it is after minutes
    of evaluation: one 3.5-minute song with five rows and three scoring sets took 42.4 s with numpy's advice and
    28.5 s without (system time 28.8 s against 9.4 s). Evaluation scores every track inside it."""
    previous = None if _set_madvise_hugepage is None else _set_madvise_hugepage(False)
    try:
        yield
    finally:
        if previous is not None:
            _set_madvise_hugepage(previous)


# ----------------------------------------------------------------------------------------------- input checks


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


# ----------------------------------------------------------------------------------------------- framing


def _window_hop(sample_rate: int, window: int | None, hop: int | None) -> tuple[int, int]:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    window = int(sample_rate if window is None else window)
    hop = int(sample_rate if hop is None else hop)
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


# ----------------------------------------------------------------------------------------------- threads, FFTs


def _fft_size(n: int) -> int:
    """Smallest ``m * 2**k >= n`` with a small odd ``m``: measured faster here than 5- and 7-smooth sizes."""
    return min(m << max(0, int(np.ceil(np.log2(n / m)))) for m in (1, 3, 5, 9, 15, 45))


def _rfft(x: np.ndarray, n: int, out: np.ndarray) -> np.ndarray:
    """``rfft`` along the last axis into a reused buffer; long double through scipy (numpy < 2 would round it)."""
    if out.dtype == np.complex128 and _RFFT_OUT:
        return np.fft.rfft(x, n=n, axis=-1, out=out)
    out[...] = scipy.fft.rfft(x, n=n, axis=-1)
    return out


def _n_threads() -> int:
    """Threads for the block loops: torch's setting, so ``torch.set_num_threads`` governs this module too."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def _map_threads(fn: Callable, groups: list) -> list:
    """``[fn(g) for g in groups]`` on a small thread pool (FFTs, ufuncs, :func:`_matmul_add` and the compiled loop
    release the GIL).

    torch's own threads are set to one meanwhile (and restored): each worker's products then run on its own core
    instead of four threads fighting over two (measured 14x slower per product here)."""
    if len(groups) <= 1:
        return [fn(g) for g in groups]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return list(_pool(len(groups)).map(fn, groups))
    finally:
        torch.set_num_threads(threads)


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool kept for the process (starting threads for every pass cost ~20 ms of a 0.8 s evaluation)."""
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bss_eval")
    return _POOLS[workers]


def _matmul_add(a: np.ndarray, b: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """``acc += a @ b`` for stacks of small complex128 matrices, ``(batch, m, k) @ (batch, k, n)``, through torch:
    numpy's batched product of small matrices is 1.4x slower on one thread and does not run in parallel from two
    threads (measured: 8193 products of 8x5 by 5x16, 3.1 ms alone, 4.3 ms each from two threads; torch 2.2 and
    1.1 ms), and torch adds into ``acc`` within the product (no pass over a temporary). Other dtypes (long
    double) stay with numpy."""
    if not (a.dtype == b.dtype == acc.dtype == np.complex128 and acc.flags.c_contiguous and a.ndim == 3):
        acc += np.matmul(a, b)
        return acc
    torch.from_numpy(acc).baddbmm_(torch.from_numpy(a), torch.from_numpy(b))
    return acc


def _split(items: list, parts: int) -> list[list]:
    parts = max(1, min(parts, len(items)))
    return [items[i::parts] for i in range(parts)]


# ----------------------------------------------------------------------------------------------- correlations


def _lag_correlations(x: _Rows, ys: Sequence[_Rows], max_lag: int, dtype=np.float64) -> np.ndarray:
    """``r[a, b, m] = sum_u x[a, u] * y[b, u + m - max_lag]`` for ``m in 0..2*max_lag``: ``(A, B, 2*max_lag+1)``.

    ``y`` is the rows of ``ys`` stacked. Block FFT correlation in ``dtype`` (float64 or long double): each block
    of ``x`` is correlated with the matching block of ``y`` extended by ``max_lag`` samples on both sides, so no
    circular wrap reaches the lags we keep; block spectra are summed before one inverse FFT per pair. Where ``x``
    itself is one of ``ys``, its own zero-padded blocks stand in for the extended ones (a third fewer FFTs), and the
    pairs of samples that straddle a block boundary are added from short FFTs of the ``max_lag`` samples on either
    side of each boundary. Blocks go through small reused buffers: fresh large arrays cost more than the FFTs on
    small machines.
    """
    n, lag = x.length, max_lag
    n_fft = max(16384, 1 << int(np.ceil(np.log2(8 * (lag + 1)))))
    block = n_fft - 2 * lag
    n_blocks = -(-n // block)
    n_freq, n_edge = n_fft // 2 + 1, 1 << int(np.ceil(np.log2(max(2 * lag, 1))))  # edges: lags 1 .. 2 lag - 1
    cdtype = np.result_type(dtype, np.complex64)
    others = [y for y in ys if y is not x]
    n_x, n_o, n_y = x.count, sum(y.count for y in others), sum(y.count for y in ys)
    with_self = n_o < n_y and lag > 0
    cols = np.cumsum([0] + [y.count for y in ys])  # each y's first column of the stacked y rows
    # each y's first row in the extended blocks' buffer (x's own rows are not there)
    o_rows = dict(zip(map(id, others), np.cumsum([0] + [y.count for y in others])))
    chunk = max(1, min(n_blocks, _CHUNK_ELEMENTS // (n_freq * (n_x + n_y))))
    chunks = [list(range(k, min(k + chunk, n_blocks))) for k in range(0, n_blocks, chunk)]

    def work(group: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        x_buf, o_buf = np.zeros((n_x, chunk, n_fft), dtype), np.zeros((n_o, chunk, n_fft), dtype)
        x_spec = np.empty((n_x, chunk, n_freq), dtype=cdtype)
        o_spec = np.empty((n_o, chunk, n_freq), dtype=cdtype)
        x_t = np.empty((n_freq, n_x, chunk), dtype=cdtype)  # f: freq, a: x rows, k: blocks
        y_t = np.empty((n_freq, chunk, n_y), dtype=cdtype)  # b: y rows
        acc = np.zeros((n_freq, n_x, n_y), dtype=cdtype)
        # the samples just before (tail) and after (head) each block's end, in (>= 2 lag)-point buffers
        tail, head = np.zeros((2, n_x, chunk, n_edge), dtype)
        acc_edge = np.zeros((n_edge // 2 + 1, n_x, n_x), dtype=cdtype)
        for blocks in group:
            if len(blocks) < chunk:  # the last, short chunk: zero blocks add nothing
                for buf in (x_buf, o_buf, tail, head):
                    buf[:] = 0.0
            for i, k in enumerate(blocks):
                start = k * block
                # x at offset lag, the others from start - lag: lag tau lands at index tau mod n_fft, unwrapped
                x.read(start, start + block, x_buf[:, i, lag : lag + block])
                for y in others:
                    y.read(start - lag, start + block + lag, o_buf[o_rows[id(y)] : o_rows[id(y)] + y.count, i])
                if with_self:
                    x.read(start + block - lag, start + block, tail[:, i, :lag])
                    x.read(start + block, start + block + lag, head[:, i, lag : 2 * lag])
            _rfft(x_buf, n_fft, x_spec)
            _rfft(o_buf, n_fft, o_spec)
            np.conjugate(x_spec.transpose(2, 0, 1), out=x_t)
            for y, col in zip(ys, cols):  # x's own spectra, or the extended blocks'
                source = x_spec if y is x else o_spec[o_rows[id(y)] : o_rows[id(y)] + y.count]
                y_t[:, :, col : col + y.count] = source.transpose(2, 1, 0)
            _matmul_add(x_t, y_t, acc)  # the sum over blocks
            if with_self:  # pairs (tail of block k, head of block k + 1), at lags 1 .. lag
                t_spec = scipy.fft.rfft(tail, axis=-1).transpose(2, 0, 1)
                h_spec = scipy.fft.rfft(head, axis=-1).transpose(2, 1, 0)
                acc_edge += np.matmul(np.conjugate(t_spec), h_spec)
        return acc, acc_edge

    results = _map_threads(work, _split(chunks, _n_threads()))
    r = scipy.fft.irfft(sum(a for a, _ in results).transpose(1, 2, 0), n=n_fft, axis=-1)
    r = np.concatenate([r[..., n_fft - lag :], r[..., : lag + 1]], axis=-1)  # lags -lag .. lag
    if with_self:
        edge = scipy.fft.irfft(sum(e for _, e in results).transpose(1, 2, 0), n=n_edge, axis=-1)[..., 1 : lag + 1]
        col = cols[next(i for i, y in enumerate(ys) if y is x)]
        own = r[:, col : col + n_x]
        own[..., lag + 1 :] += edge  # x_a in a tail, x_b in the next head: lags 1 .. lag
        own[..., :lag] += edge.transpose(1, 0, 2)[..., ::-1]  # x_a in a head, x_b in the previous tail: -lag .. -1
    return r


def _symmetrised(r: np.ndarray) -> np.ndarray:
    """Reference correlations with ``r_ab(tau) = r_ba(-tau)`` exactly (the average of the two roundings)."""
    return 0.5 * (r + r.transpose(1, 0, 2)[:, :, ::-1])


# ----------------------------------------------------------------------------------------------- block Toeplitz


def _toeplitz_blocks(corr: np.ndarray) -> np.ndarray:
    """First block column of the lag-ordered Gram matrix: ``(B, a, a, 2L-1)`` correlations -> ``(B, L, a, a)``.

    The Gram matrix of channels delayed by ``0..L-1`` samples, rows ordered (lag, channel), has the ``(k, l)`` block
    ``T_{k-l}`` with ``T_m[a, b] = r_ab(m)`` and ``T_{-m} = T_m^T``.
    """
    L = (corr.shape[-1] + 1) // 2
    return np.ascontiguousarray(corr[..., L - 1 :].transpose(0, 3, 1, 2))


def _dense_gram(corr: np.ndarray) -> np.ndarray:
    """The lag-ordered Gram matrices themselves, ``(B, L*a, L*a)`` (the dense fallback only: they are large)."""
    b, a, _, m = corr.shape
    L = (m + 1) // 2
    dense = np.empty((b, L, a, L, a), dtype=corr.dtype)  # (B, k, a, l, b), filled one block row at a time
    for k in range(L):
        dense[:, k] = corr[:, :, :, k + L - 1 : k - 1 if k else None : -1].transpose(0, 1, 3, 2)  # lags k - l
    return dense.reshape(b, L * a, L * a)


class _Levinson:
    """Approximate inverses of ``B`` symmetric positive definite block-Toeplitz matrices ``T + ridge I`` (first block
    columns ``(B, L, a, a)``), from the block Levinson (Whittle) recursion and the Gohberg-Semencul formula.

    The recursion finds the forward and backward predictors ``A_j``, ``B_j`` (``A_0 = B_0 = I``) of orders up to
    ``L - 1`` and their error covariances ``Pf``, ``Pb`` in ``3 a^3 L^2`` flops on arrays of ``a L`` columns (they
    stay in cache); then ``T^-1 = L(A') (I x Pf^-1) L(A')^T - L(B') (I x Pb^-1) L(B')^T``, with ``L(.)`` the
    lower block-triangular Toeplitz matrix of the blocks ``A'_j = A_j^T`` and ``B' = [0, B_{L-1}^T, ..., B_1^T]``,
    is applied by FFT in ``O(a^2 L log L)`` per right-hand side. No ``(a L)^2`` matrix is ever formed.
    ``build`` returns ``None`` when the recursion breaks down (a matrix that is not numerically positive definite).
    """

    def __init__(self, fwd: np.ndarray, bwd: np.ndarray, pf: np.ndarray, pb: np.ndarray) -> None:
        b, a, n = fwd.shape
        L = n // a
        self.length = L
        # lag-ordered blocks (B, L, a, a) of A' and B', and their 2L-point spectra (B, f, a, a)
        a_blocks = fwd.reshape(b, a, L, a).transpose(0, 2, 3, 1)  # A_j^T
        b_blocks = np.zeros_like(a_blocks)
        b_blocks[:, 1:] = bwd.reshape(b, a, L, a)[:, :, :-1].transpose(0, 2, 3, 1)  # bwd holds B_{L-1} .. B_0
        self._spec_a = np.fft.rfft(a_blocks, n=2 * L, axis=1)
        self._spec_b = np.fft.rfft(b_blocks, n=2 * L, axis=1)
        self._pf, self._pb = pf, pb

    @classmethod
    def build(cls, blocks: np.ndarray, ridge: float) -> _Levinson | None:
        b, L, a, _ = blocks.shape
        eye = np.eye(a)
        r0 = blocks[:, 0] + ridge * eye
        # stacked[:, i] = R(L-1-i)^T, so that R(p+1)^T .. R(1)^T is one contiguous slab at step p
        stacked = blocks[:, :0:-1].transpose(0, 1, 3, 2).reshape(b, (L - 1) * a, a)
        fwd = np.zeros((b, a, L * a))  # A_0 .. A_{L-1} side by side
        bwd = np.zeros((b, a, L * a))  # B_{L-1} .. B_0 side by side (B_j at block L-1-j)
        fwd[:, :, :a] = eye
        bwd[:, :, (L - 1) * a :] = eye
        pf, pb = r0.copy(), r0.copy()
        try:
            for p in range(L - 1):
                delta = fwd[:, :, : (p + 1) * a] @ stacked[:, (L - 2 - p) * a : (L - 1) * a]  # sum A_j R(p+1-j)^T
                delta_t = delta.transpose(0, 2, 1)
                # [delta Pb^-1, delta^T Pf^-1] in one batched solve: (Pb^T \ delta^T)^T and (Pf^T \ delta)^T
                gains = np.linalg.solve(np.concatenate([pb, pf]).transpose(0, 2, 1), np.concatenate([delta_t, delta]))
                gain_f, gain_b = gains[:b].transpose(0, 2, 1), gains[b:].transpose(0, 2, 1)
                step_f = gain_f @ bwd[:, :, (L - 1 - p) * a :]  # against B_p .. B_0
                step_b = gain_b @ fwd[:, :, : (p + 1) * a]  # against A_0 .. A_p
                fwd[:, :, a : (p + 2) * a] -= step_f
                bwd[:, :, (L - 2 - p) * a : (L - 1) * a] -= step_b
                pf = pf - gain_f @ delta_t
                pb = pb - gain_b @ delta
            np.linalg.cholesky(pf)  # both must stay positive definite
            np.linalg.cholesky(pb)
        except np.linalg.LinAlgError:
            return None
        if not (np.isfinite(fwd).all() and np.isfinite(bwd).all()):
            return None
        return cls(fwd, bwd, pf, pb)

    def apply(self, rhs: np.ndarray) -> np.ndarray:
        """``T^-1 rhs`` for ``rhs`` ``(B, a, L, m)`` ordered (channel, lag)."""
        L = self.length
        y = rhs.transpose(0, 2, 1, 3)  # (B, L, a, m), lag-ordered

        def lower(spec: np.ndarray, v: np.ndarray) -> np.ndarray:  # block lower-triangular Toeplitz times v
            prod = spec @ np.fft.rfft(v, n=2 * L, axis=1)
            return np.fft.irfft(prod, n=2 * L, axis=1)[:, :L]

        def lower_t(spec: np.ndarray, v: np.ndarray) -> np.ndarray:  # its transpose times v
            return lower(spec.transpose(0, 1, 3, 2), v[:, ::-1])[:, ::-1]

        first = lower(self._spec_a, np.linalg.solve(self._pf[:, None], lower_t(self._spec_a, y)))
        second = lower(self._spec_b, np.linalg.solve(self._pb[:, None], lower_t(self._spec_b, y)))
        return (first - second).transpose(0, 2, 1, 3)


class _DenseCholesky:
    """The fallback: dense Cholesky factors of the lag-ordered Gram matrices (``(a L)^2`` doubles each)."""

    def __init__(self, corr: np.ndarray, ridge: float) -> None:
        self._factor = torch.from_numpy(_dense_factor(corr, ridge)[0])

    def apply(self, rhs: np.ndarray) -> np.ndarray:
        b, a, L, m = rhs.shape
        lagged = torch.from_numpy(np.ascontiguousarray(rhs.transpose(0, 2, 1, 3), dtype=np.float64))
        half = torch.linalg.solve_triangular(self._factor, lagged.reshape(b, L * a, m), upper=False)
        out = torch.linalg.solve_triangular(self._factor.mT, half, upper=True)
        return out.numpy().reshape(b, L, a, m).transpose(0, 2, 1, 3)


def _dense_factor(corr: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """Dense Cholesky factors of the lag-ordered Gram matrices plus ``ridge I`` and the ridge used: where rounding
    makes a matrix indefinite (e.g. identical channels), a ridge growing from 1e-12 of its mean diagonal makes it
    definite. The projections, which are all the metrics use, hardly move: the ridge only damps directions the
    references do not span. Cholesky, not LU: torch's LU solve fails inside MKL on some machines."""
    info = torch.zeros(corr.shape[0], dtype=torch.int32)
    for _ in range(8):
        g = torch.from_numpy(_dense_gram(corr))
        diag = g.diagonal(dim1=-2, dim2=-1)
        scale = float(diag.mean())
        diag += ridge
        factor, info = torch.linalg.cholesky_ex(g, out=(g, info))
        if int(info.abs().max()) == 0:
            return factor.numpy(), ridge
        ridge = max(ridge * 100.0, 1e-12 * scale)
    raise np.linalg.LinAlgError("the reference Gram matrix is not positive definite even with a ridge")


def _gram_times(spectrum: np.ndarray, c: np.ndarray, ridge: float) -> np.ndarray:
    """``(G + ridge I) c`` for block-Toeplitz ``G`` given by :func:`_gram_spectrum`; ``c`` ``(B, a, L, m)`` ordered
    (channel, lag) like museval's filters, in the spectrum's precision (float64 or long double).

    ``(G c)[a, k] = sum_b (r_ab * c_b)[k + L - 1]``: one FFT convolution per pair; with ``2L`` points the circular
    wrap lands on indices below ``L - 1``, which are not kept.
    """
    L = c.shape[2]
    spec_c = scipy.fft.rfft(c.astype(spectrum.real.dtype, copy=False), n=2 * L, axis=2)  # (B, b, f, m)
    prod = np.einsum("zabf,zbfm->zafm", spectrum, spec_c)
    return scipy.fft.irfft(prod, n=2 * L, axis=2)[:, :, L - 1 : 2 * L - 1] + ridge * c


def _gram_spectrum(corr: np.ndarray) -> np.ndarray:
    """``(B, a, a, L + 1)``: the ``2L``-point spectra of the lag correlations ``(B, a, a, 2L-1)``, for
    :func:`_gram_times`."""
    return scipy.fft.rfft(corr, n=corr.shape[-1] + 1, axis=-1)


class _GramSystem:
    """``B`` systems ``(G_b + eps I) c = rhs``, museval's equations for the distortion filters, with ``G_b`` the
    block-Toeplitz Gram matrices given by their lag correlations ``(B, a, a, 2L-1)``.

    Prepared once, solved for any number of right-hand sides: with Levinson's inverse, refined as the module
    docstring describes; where the recursion breaks down or refinement with its inverse does not settle, again with
    the dense Cholesky factor. ``extended`` builds the same correlations in long double when first needed
    (``None``: no extended precision).
    """

    def __init__(self, corr: np.ndarray, extended: Callable[[], np.ndarray] | None) -> None:
        self.corr = corr
        self._spectrum = _gram_spectrum(corr)
        self._extended = extended
        self._spectrum_ext: np.ndarray | None = None
        self._inverses: dict[str, _Levinson | _DenseCholesky | None] = {}
        self.method = ""  # the inverse of the last solve: "levinson" or "dense"

    def _inverse(self, method: str) -> _Levinson | _DenseCholesky | None:
        if method not in self._inverses:
            if method == "levinson":
                self._inverses[method] = _Levinson.build(_toeplitz_blocks(self.corr), _MUSEVAL_EPS)
            else:
                self._inverses[method] = _DenseCholesky(self.corr, _MUSEVAL_EPS)
        return self._inverses[method]

    def apply_inverse(self, rhs: np.ndarray) -> np.ndarray:
        """``rhs`` ``(B, a, L, m)`` through the inverse of the last solve (Levinson's before any solve)."""
        inverse = self._inverse(self.method or "levinson") or self._inverse("dense")
        return inverse.apply(np.asarray(rhs, dtype=np.float64))

    def solve(self, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """Filters ``(B, a, L, m)``: the refined solution, the double-precision one, and the precision reached:
        ``"double"``, ``"extended"``, ``"unrefined"`` (extended precision unavailable) or ``"unconverged"`` (not
        even extended-precision residuals settle the filters: both are then the dense double-precision solve, as
        museval's, and not determined by the data to double precision)."""
        for method in ("levinson", "dense"):
            inverse = self._inverse(method)
            if inverse is None:  # the Levinson recursion broke down
                continue
            self.method = method
            solved = self._attempt(inverse, rhs, last=method == "dense")
            if solved is not None:
                return solved
        raise AssertionError("unreachable: the dense attempt always returns")

    def _attempt(self, inverse: _Levinson | _DenseCholesky, rhs: np.ndarray, *, last: bool
                 ) -> tuple[np.ndarray, np.ndarray, str] | None:
        c, change = self._refined(inverse, inverse.apply(rhs), rhs, self._spectrum, steps=3)
        if change <= _REFINE_TOL:
            return c, c, "double"
        if self._extended is None:  # as good as double precision gets, if the inverse made refinement converge
            return (c, c, "unrefined") if change <= _DOUBLE_FLOOR or last else None
        if self._spectrum_ext is None:
            self._spectrum_ext = _gram_spectrum(self._extended())
        refined, change = self._refined(inverse, c.astype(np.longdouble), rhs, self._spectrum_ext, steps=_MAX_STEPS)
        if change <= _SETTLED:
            return refined.astype(np.float64), c, "extended"
        return (c, c, "unconverged") if last else None

    @staticmethod
    def _refined(inverse: _Levinson | _DenseCholesky, c: np.ndarray, rhs: np.ndarray, spectrum: np.ndarray, *,
                 steps: int) -> tuple[np.ndarray, float]:
        """Refinement with residuals in ``spectrum``'s precision, until a step changes ``c`` by less than
        ``_REFINE_TOL`` of itself or stops shrinking the change (that step is then not taken): ``c`` and the last
        relative change applied to it."""
        last = np.inf
        for _ in range(steps):
            residual = rhs - _gram_times(spectrum, c, _MUSEVAL_EPS)
            step = inverse.apply(residual.astype(np.float64))
            change = float(np.linalg.norm(step) / max(np.linalg.norm(c.astype(np.float64)), np.finfo(float).tiny))
            if not np.isfinite(change) or change > 0.5 * last:
                break  # no longer converging: keep the current iterate
            c, last = c + step, change
            if change <= _REFINE_TOL:
                break
        return c, last

    def rcond(self) -> float:
        """Smallest over largest eigenvalue of ``G`` (worst of the batch), estimated: the largest by the bound
        ``max_w lambda_max(sum_tau r(tau) e^{-i w tau})`` (the Toeplitz symbol), the smallest by two steps of
        inverse iteration with the approximate inverse from a fixed random start (an order of magnitude)."""
        b, a, _, m = self.corr.shape
        L = (m + 1) // 2
        symbol = np.fft.fft(np.roll(self.corr, -(L - 1), axis=-1), n=4 * L, axis=-1).transpose(0, 3, 1, 2)
        largest = np.linalg.eigvalsh(0.5 * (symbol + symbol.conj().transpose(0, 1, 3, 2))).max(axis=(1, 2))
        z = self.apply_inverse(np.random.default_rng(0).standard_normal((b, a, L, 2)))
        z /= np.linalg.norm(z, axis=(1, 2), keepdims=True)
        smallest = 1.0 / np.linalg.norm(self.apply_inverse(z), axis=(1, 2)).max(axis=-1)
        return float(np.min(smallest / largest))


# ----------------------------------------------------------------------------------------------- BSS Eval v4


class ReferenceSet:
    """The reference side of BSS Eval v4 for one track: built once, scored against any number of estimate sets.

    ``references`` ``(sources, channels, samples)`` (an array, or a sequence of ``(channels, samples)`` arrays) is
    kept, not copied: do not modify it while this object is in use. Cheap to build (input checks only); the
    correlations, the solver for museval's Gram matrices and the condition figure are computed at the first
    :meth:`evaluate` with filters and reused by every later one. ``extended_precision=False`` keeps
    double-precision filters on ill-conditioned references (museval's accuracy, faster; ``sensitivity`` is then NaN
    there). Other arguments as :func:`bss_eval`.
    """

    def __init__(self, references, sample_rate: int = 44100, *, window: int | None = None, hop: int | None = None,
                 filters_len: int = FILTERS_LEN, extended_precision: bool = True) -> None:
        self.window, self.hop = _window_hop(sample_rate, window, hop)
        if int(filters_len) < 1:
            raise ValueError(f"filters_len must be at least 1, got {filters_len}")
        self.sample_rate, self.filters_len = int(sample_rate), int(filters_len)
        sources = _as_sources(references, name="references")
        if len({p.shape[-1] for p in sources.parts}) > 1:
            raise AudioError(f"references differ in length: {[p.shape for p in sources.parts]}; give them one length")
        self.shape = sources.shape
        silent = _scan(sources, name="references", length=self.shape[-1])
        if silent.any():
            warnings.warn(
                f"reference source(s) {np.flatnonzero(silent).tolist()} are silent over the whole track (all zeros, "
                "or channels that cancel out); their scores are NaN and the other sources are scored without them",
                stacklevel=2,
            )
        self.active = np.flatnonzero(~silent)
        self._refs = _Rows(sources, self.active, self.shape[-1])
        self.starts, self.length = _frame_bounds(self.shape[-1], self.window, self.hop)
        self.extended_precision = bool(extended_precision) and _HAS_EXTENDED
        self._corr: np.ndarray | None = None
        self._corr_ext: np.ndarray | None = None
        self._systems: dict[str, _GramSystem] = {}
        self._rcond: float | None = None
        self._combination: tuple[ReferenceSet, np.ndarray] | None = None  # (parent, weights): see combine()

    def combine(self, weights, references) -> ReferenceSet:
        """A reference set of sums of this set's sources, for the same track: ``references[i]`` (as for the
        constructor) must be ``sum_k weights[i, k] * source_k`` to double precision (build float32 stems' sums in
        float64). Its reference correlations, double and long double, are derived from this set's (correlations
        are bilinear) instead of passes over the samples; evaluation scores the sums ``accompaniment`` and
        ``drums+bass`` so. The sums are checked at a few thousand samples (``ValueError`` when they do not hold)."""
        weights = np.asarray(weights, dtype=np.float64)
        new = ReferenceSet(references, self.sample_rate, window=self.window, hop=self.hop,
                           filters_len=self.filters_len, extended_precision=self.extended_precision)
        if weights.shape != (new.shape[0], self.shape[0]) or new.shape[1:] != self.shape[1:]:
            raise ValueError(f"combine: weights {weights.shape} and references {new.shape} do not fit this set's "
                             f"{self.shape} (sources, channels, samples); give one weight row per new source and one "
                             "column per source of this set, and references of the same channels and length")
        parent_parts, parts = self._refs.sources.parts, new._refs.sources.parts
        at = np.unique(np.linspace(0, self.shape[-1] - 1, 4096).astype(np.int64))
        for i, part in enumerate(parts):
            expected = sum(w * np.asarray(parent_parts[k][:, at], dtype=np.float64) for k, w in enumerate(weights[i]))
            scale = max(float(np.abs(expected).max(initial=0.0)), np.finfo(np.float64).tiny)
            error = float(np.abs(np.asarray(part[:, at], dtype=np.float64) - expected).max(initial=0.0))
            if error > 1e-12 * scale:
                raise ValueError(f"combine: reference {i} is not the weighted sum of this set's sources (off by "
                                 f"{error / scale:.1e} of its peak at sampled points); pass the sums themselves, "
                                 "in float64 when the sources are float32")
        new._combination = (self, weights)
        return new

    def evaluate(self, estimates, *, compute_filters: bool = True) -> BSSEvalResult:
        """BSS Eval v4 of one estimate set ``(sources, channels, samples)`` (padded or cut to the references)."""
        ests = _as_sources(estimates, name="estimates")
        _check_same_layout(self.shape, ests.shape)
        silent_est = _scan(ests, name="estimates", length=self.shape[-1])[self.active]
        n_src = self.shape[0]
        out = {m: np.full((n_src, len(self.starts)), np.nan) for m in METRICS}
        sensitivity = np.full((n_src, len(self.starts)), np.nan) if compute_filters else None
        rcond, solver = float("nan"), ""
        if len(self.active):
            est_rows = _Rows(ests, self.active, self.shape[-1])
            if silent_est.any():
                warnings.warn(
                    f"estimate(s) for source(s) {self.active[silent_est].tolist()} are silent over the whole "
                    "track; as in museval, every frame with a silent estimate is NaN for all sources",
                    stacklevel=2,
                )
            filter_sets, precision = [], ""
            if compute_filters:
                filter_sets, precision = self._filters(est_rows)
                rcond, solver = self._condition(), f"{self._systems['full'].method}+{precision}"
            energies = _frame_energies(self._refs, est_rows, self.starts, self.length, filter_sets,
                                       self.shape[1])
            scores = [_scores(energies, k) for k in range(max(1, len(filter_sets)))]
            for m, v in scores[0].items():
                out[m][self.active] = v
            if compute_filters:
                sensitivity[self.active] = _sensitivity(scores, precision)
        filt = {m: (out[m] if compute_filters else None) for m in ("ISR", "SIR", "SAR")}
        return BSSEvalResult(
            sdr=out["SDR"], isr=filt["ISR"], sir=filt["SIR"], sar=filt["SAR"], sample_rate=self.sample_rate,
            window_samples=self.window, hop_samples=self.hop, gram_rcond=rcond, sensitivity=sensitivity,
            solver=solver,
        )

    def _filters(self, ests: _Rows) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
        """``[(interf, spat)]`` for the refined filters, then for the double-precision ones when they differ."""
        L, n_ch = self.filters_len, self.shape[1]
        a = self._refs.count
        if self._corr is None and self._combination is None:  # the first estimate set: one pass for both
            r = _lag_correlations(self._refs, [self._refs, ests], L - 1)
            self._corr, cross = _symmetrised(r[:, :a]), r[:, a:]
        else:
            self._reference_corr()
            cross = _lag_correlations(self._refs, [ests], L - 1)
        # rhs[(a, k), e] = <reference row a delayed k, estimate row e> = r_ae(k)
        rhs = cross[:, :, L - 1 :].transpose(0, 2, 1)  # (a, L, e)
        full, full_double, precision = self._system("full").solve(rhs[None])
        n_src = len(self.active)
        if n_src == 1:  # one source: museval's two solves coincide
            own, own_double = full, full_double
        else:
            own_rhs = np.stack([rhs[j * n_ch : (j + 1) * n_ch, :, j * n_ch : (j + 1) * n_ch] for j in range(n_src)])
            own, own_double, own_precision = self._system("own").solve(own_rhs)
            precision = _worse(precision, own_precision)
        sets = [_filter_pair(full[0], own, n_src, n_ch)]
        if precision == "extended":
            sets.append(_filter_pair(full_double[0], own_double, n_src, n_ch))
        return sets, precision

    def _system(self, kind: str) -> _GramSystem:
        """The cached Gram system: ``"full"`` (all references) or ``"own"`` (each source alone, batched)."""
        if kind not in self._systems:
            extended = self._extended_loader(kind) if self.extended_precision else None
            self._systems[kind] = _GramSystem(self._system_corr(self._corr, kind), extended)
        return self._systems[kind]

    def _extended_loader(self, kind: str) -> Callable[[], np.ndarray]:
        """The ``kind`` system's correlations in long double, from one long-double pass shared by both systems."""
        return lambda: self._system_corr(self._reference_corr(extended=True), kind)

    def _reference_corr(self, *, extended: bool = False) -> np.ndarray:
        """The references' lag correlations ``(A, A, 2L-1)`` (active rows), symmetrised, in double or long double:
        from a pass over the samples, or, for a set made by :meth:`combine`, from its parent's."""
        cached = self._corr_ext if extended else self._corr
        if cached is None:
            if self._combination is not None:
                parent, weights = self._combination
                n_ch = self.shape[1]
                w = weights[np.ix_(self.active, parent.active)]  # silent sources add nothing
                p = parent._reference_corr(extended=extended)
                p = p.reshape(len(parent.active), n_ch, len(parent.active), n_ch, -1)
                combined = np.einsum("ik,jl,kalbm->iajbm", w, w, p)
                cached = _symmetrised(combined.reshape(len(self.active) * n_ch, len(self.active) * n_ch, -1))
            else:
                dtype = np.longdouble if extended else np.float64
                cached = _symmetrised(_lag_correlations(self._refs, [self._refs], self.filters_len - 1, dtype=dtype))
            if extended:
                self._corr_ext = cached
            else:
                self._corr = cached
        return cached

    def _system_corr(self, corr: np.ndarray, kind: str) -> np.ndarray:
        """``(B, a, a, 2L-1)``: all references (``B = 1``) or each source's channels alone (``B = sources``)."""
        if kind == "full":
            return corr[None]
        n_ch = self.shape[1]
        return np.stack([corr[j * n_ch : (j + 1) * n_ch, j * n_ch : (j + 1) * n_ch] for j in range(len(self.active))])

    def _condition(self) -> float:
        if self._rcond is None:
            self._rcond = self._system("full").rcond()
        return self._rcond


def _worse(first: str, second: str) -> str:
    order = ("double", "extended", "unrefined", "unconverged")
    return max(first, second, key=order.index)


def _filter_pair(full: np.ndarray, own: np.ndarray, n_src: int, n_ch: int) -> tuple[np.ndarray, np.ndarray]:
    """museval v4's filters from the solutions ``full`` ``(A, L, E)`` (all references -> each estimate channel) and
    ``own`` ``(S, C, L, C)`` (each source's references -> its estimate channels): ``interf`` ``(A, L, A)``, the
    full filters minus the own-source part, and ``spat`` ``(S, C, L, C)``, the own filters minus the identity."""
    L = full.shape[1]
    interf = full.reshape(n_src, n_ch, L, n_src, n_ch).copy()  # (j, cj, k, jest, c)
    for j in range(n_src):
        interf[j, :, :, j, :] -= own[j]
    spat = own.copy()
    spat[:, np.arange(n_ch), 0, np.arange(n_ch)] -= 1.0
    return interf.reshape(n_src * n_ch, L, n_src * n_ch), spat


def bss_eval(
    references,
    estimates,
    sample_rate: int = 44100,
    *,
    window: int | None = None,
    hop: int | None = None,
    compute_filters: bool = True,
    filters_len: int = FILTERS_LEN,
    extended_precision: bool = True,
) -> BSSEvalResult:
    """BSS Eval v4 (images) per source and frame, as ``museval.evaluate(..., mode="v4")``.

    ``references``, ``estimates``: ``(sources, channels, samples)``; estimates are padded or cut to the reference
    length. ``window`` and ``hop`` are in samples (default: one second). Returns :class:`BSSEvalResult` with
    ``(sources, frames)`` arrays in dB. See the module docstring for NaN and silence rules and the solver.
    """
    refs = ReferenceSet(references, sample_rate, window=window, hop=hop, filters_len=filters_len,
                        extended_precision=extended_precision)
    return refs.evaluate(estimates, compute_filters=compute_filters)


def bss_eval_many(references, estimate_sets: Sequence, sample_rate: int = 44100, *, window: int | None = None,
                  hop: int | None = None, compute_filters: bool = True, filters_len: int = FILTERS_LEN,
                  extended_precision: bool = True) -> list[BSSEvalResult]:
    """:func:`bss_eval` of several estimate sets against one reference set, the references prepared once."""
    refs = ReferenceSet(references, sample_rate, window=window, hop=hop, filters_len=filters_len,
                        extended_precision=extended_precision)
    return [refs.evaluate(ests, compute_filters=compute_filters) for ests in estimate_sets]


def framewise_sdr(references, estimates, sample_rate: int = 44100, *, window: int | None = None,
                  hop: int | None = None) -> np.ndarray:
    """Only the framewise SDR of :func:`bss_eval` (no distortion filters needed): ``(sources, frames)`` dB."""
    return bss_eval(references, estimates, sample_rate, window=window, hop=hop, compute_filters=False).sdr


def _frame_energies(refs: _Rows, ests: _Rows, starts: np.ndarray, length: int,
                    filter_sets: list[tuple[np.ndarray, np.ndarray]], n_ch: int) -> dict[str, np.ndarray]:
    """Per-frame energies ``{name: (sources, frames)}`` and ``"silent"`` ``(frames,)``: ``ref`` and ``diff``, and for
    each filter set ``k`` ``e_spat{k}``, ``s_filt{k}``, ``e_int{k}``, ``s_all{k}``, ``e_art{k}``.

    museval projects each frame separately (the frame zero-padded by ``filters_len - 1``), so each frame's
    projection is the full linear convolution of the framed references with the whole-track filters; its
    energies are taken in the frequency domain (Parseval). Frames go in small chunks to bound memory.
    """
    n_src = len(refs.index)
    a = n_src * n_ch
    n_frames = len(starts)
    names = ["ref", "diff"] + [f"{e}{k}" for k in range(len(filter_sets)) for e in _PROJECTION_ENERGIES]
    energy = {k: np.empty((n_src, n_frames)) for k in names}
    silent = np.zeros(n_frames, dtype=bool)
    if filter_sets:
        filters_len = filter_sets[0][0].shape[1]
        n_fft = _fft_size(length + filters_len - 1)
        n_freq = n_fft // 2 + 1
        # Parseval for a real signal's half spectrum: weight 2/n, but 1/n at 0 and n/2 (bins scaled by sqrt(1/2))
        edges = [0, n_freq - 1] if n_fft % 2 == 0 else [0]
        # per filter set: the interference filters' spectra (f, e, a) and the own-source ones (f, e, c) on the
        # channels of row e's source, for the compiled loop
        spectra = []
        for interf, spat in filter_sets:
            interf_spec = np.empty((n_freq, a, a), dtype=np.complex128)
            own_spec = np.empty((n_freq, a, n_ch), dtype=np.complex128)

            def fill(rows: list[int], interf_spec=interf_spec, own_spec=own_spec, interf=interf, spat=spat) -> None:
                for e in rows:  # estimate rows: (a, L) -> (f, a) and (c, L) -> (f, c)
                    interf_spec[:, e] = np.fft.rfft(interf[:, :, e], n=n_fft, axis=-1).T
                    j, c = divmod(e, n_ch)
                    own_spec[:, e] = np.fft.rfft(spat[j, :, :, c], n=n_fft, axis=-1).T

            _map_threads(fill, _split(list(range(a)), _n_threads()))
            spectra.append((interf_spec, own_spec))
        chunk = max(1, _FRAME_CHUNK_ELEMENTS // (a * n_freq))
    else:
        chunk = max(1, _CHUNK_ELEMENTS // (a * length))

    def power(x):  # (a, t, n) -> (s, t): energy over channels and samples
        return np.einsum("atn,atn->at", x, x).reshape(n_src, n_ch, -1).sum(axis=1)

    def buffers(t: int) -> dict[str, np.ndarray]:
        # with filters, frames sit in FFT-sized zero-padded buffers: the FFT then needs no padded copy
        out = {k: np.zeros((a, t, n_fft if filter_sets else length)) for k in ("ref", "est")}
        if filter_sets:
            for k in ("r_spec", "d_spec"):
                out[k] = np.empty((a, t, n_freq), dtype=np.complex128)
        return out

    def filtered(b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The filter energies of one chunk of frames ``{name: (s, t)}``."""
        for x, key in ((b["ref"], "r_spec"), (b["est"], "d_spec")):  # est holds est - ref
            spec = _rfft(x, n_fft, b[key])
            spec[..., edges] *= np.sqrt(0.5)  # the projections are linear: their edge bins follow
        sums = np.zeros((len(spectra), len(_PROJECTION_ENERGIES), a, b["r_spec"].shape[1]))
        for k, (interf_spec, own_spec) in enumerate(spectra):
            projection_energies(b["r_spec"], b["d_spec"], interf_spec, own_spec, sums[k])
        per_source = sums.reshape(*sums.shape[:2], n_src, n_ch, -1).sum(axis=3)  # (sets, energies, s, t)
        return {f"{name}{k}": per_source[k, i] for k in range(len(spectra))
                for i, name in enumerate(_PROJECTION_ENERGIES)}

    def work(group: list[np.ndarray]) -> None:
        pool: dict[int, dict[str, np.ndarray]] = {}
        for cols in group:  # frame indices of one chunk; each chunk writes its own columns
            b = pool.setdefault(len(cols), buffers(len(cols)))
            # a: (source, channel), t: frames, n: samples
            ref, est = b["ref"][..., :length], b["est"][..., :length]
            for i, start in enumerate(starts[cols]):
                refs.read(start, start + length, ref[:, i])
                ests.read(start, start + length, est[:, i])
            silent[cols] = _silent(ref, n_src) | _silent(est, n_src)
            diff = np.subtract(est, ref, out=est)
            energy["ref"][:, cols] = power(ref)
            energy["diff"][:, cols] = power(diff)
            if filter_sets:
                for name, v in filtered(b).items():
                    energy[name][:, cols] = v * (2.0 / n_fft)

    chunks = [np.arange(t0, min(t0 + chunk, n_frames)) for t0 in range(0, n_frames, chunk)]
    _map_threads(work, _split(chunks, _n_threads()))
    energy["silent"] = silent
    return energy


def _scores(energy: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """``{metric: (sources, frames)}`` from :func:`_frame_energies` for filter set ``k`` (SDR only without one)."""
    scores = {"SDR": _db(energy["ref"], energy["diff"])}
    if f"e_spat{k}" in energy:
        scores["ISR"] = _db(energy["ref"], energy[f"e_spat{k}"])
        scores["SIR"] = _db(energy[f"s_filt{k}"], energy[f"e_int{k}"])
        scores["SAR"] = _db(energy[f"s_all{k}"], energy[f"e_art{k}"])
    for v in scores.values():
        v[:, energy["silent"]] = np.nan
    return scores


def _sensitivity(scores: list[dict[str, np.ndarray]], precision: str) -> np.ndarray:
    """``(sources, frames)``: the largest change of ISR, SIR or SAR between the double-precision filters and the
    refined ones (0 when they are the same, NaN when the refined ones are unknown or the frame is NaN)."""
    shape = scores[0]["SDR"].shape
    if precision in ("unrefined", "unconverged"):
        return np.full(shape, np.nan)
    if len(scores) == 1:
        return np.where(np.isnan(scores[0]["SIR"]), np.nan, 0.0)
    change = np.zeros(shape)
    for m in ("ISR", "SIR", "SAR"):
        a, b = scores[0][m], scores[1][m]
        with np.errstate(invalid="ignore"):
            change = np.maximum(change, np.where(a == b, 0.0, np.abs(a - b)))  # inf == inf: no change
    return change


def _silent(frames: np.ndarray, n_src: int) -> np.ndarray:
    """``(frames,)``: museval's test per frame, any source whose channel sum is zero at every sample.

    ``frames`` ``(a, t, n)``, ``a = n_src * channels``. A cheap look at every 64th sample first settles almost every
    (source, frame) as loud; only the rest are checked at every sample."""
    channels = frames.reshape(n_src, -1, *frames.shape[1:])  # (s, c, t, n)
    loud = np.any(channels[..., ::64].sum(axis=1) != 0, axis=-1)  # (s, t)
    for j, i in zip(*np.nonzero(~loud)):
        loud[j, i] = np.any(channels[j, :, i].sum(axis=0) != 0)
    return (~loud).any(axis=0)


# ----------------------------------------------------------------------------------------------- whole-track SDRs


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


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """``(channels, samples)`` cut or zero-padded to ``n`` samples."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.pad(x, [(0, 0), (0, n - x.shape[-1])])


# ----------------------------------------------------------------------------------------------- aggregation


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
