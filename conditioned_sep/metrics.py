"""Separation metrics: BSS Eval v4 exactly as museval computes it, but vectorised; SI-SDR; MDX "new SDR".

All inputs are channels-first ``(sources, channels, samples)`` numpy arrays or torch tensors (mono: one channel),
at any sample rate; everything is computed in float64 on the CPU and returned as numpy float64.

Public API
----------
- :func:`bss_eval` ``(references, estimates, sample_rate=44100, *, window=None, hop=None, compute_filters=True,
  filters_len=512) -> BSSEvalResult``: per-source, per-frame SDR, ISR, SIR, SAR in dB, each ``(sources, frames)``,
  as ``museval.evaluate(refs, ests, win=window, hop=hop, mode="v4")`` gives them (window and hop default to one
  second, i.e. ``sample_rate`` samples). museval's behaviour is kept on purpose:

  * 512-tap distortion filters fitted once on the whole track (v4), the trailing partial window dropped
    (a track shorter than one window gives one frame over the whole track);
  * estimates zero-padded or cut to the reference length;
  * a frame is NaN for *every* source when any reference or any estimate is "silent" in it, where silent means
    museval's test: the sum over channels is zero at every sample (so ``left == -right`` counts as silent);
  * SDR is the image SDR: frame energy of the reference over that of ``estimate - reference``; the filters only
    change ISR, SIR and SAR (museval issue #101). A zero denominator gives ``+inf`` as in museval.

  Unlike museval, a reference that is silent over the whole track (museval raises, issue #94) gives NaN for that
  source with a warning, and the other sources are scored as museval scores them without it.
  ``compute_filters=False`` is the fast SDR-only path (``isr``, ``sir``, ``sar`` are then ``None``).
- :func:`framewise_sdr` ``(references, estimates, sample_rate=44100, *, window=None, hop=None)``: the SDR-only
  path as a bare ``(sources, frames)`` array.
- :func:`si_sdr` ``(references, estimates, *, zero_mean=True)``: scale-invariant SDR per source over the whole
  track, channels pooled, ``(sources,)``.
- :func:`new_sdr` ``(references, estimates)``: the Music Demixing Challenge's SDR per source over the whole track,
  ``10 log10((sum s^2 + 1e-7) / (sum (s - s_hat)^2 + 1e-7))``, channels pooled, ``(sources,)``.
- :func:`aggregate` ``(tracks) -> Aggregate``: SiSEC aggregation of framewise scores: nanmedian over the frames of
  each track, then the median over tracks (the published figure) and the mean over tracks beside it.

Implementation: the Gram matrix of the delayed references and their correlations with the estimates come from
block FFT correlations (only 2*512-1 lags are needed), one Cholesky factorisation of the Gram matrix (float64,
torch) serves all estimates, and all frames' energies come from batched frame FFTs via Parseval. The block loops
run on ``torch.get_num_threads()`` threads. Inputs are converted to float64 (museval, given float32 arrays,
computes partly in float32: give it float64 when comparing).

Accuracy: on well-posed inputs the four metrics agree with museval to ~1e-9 dB. Lossy-coded music (MUSDB18's
``.stem.mp4``) is band-limited, which makes the Gram matrix numerically singular (condition ~1e15); there SIR
and SAR of estimates with energy above the codec's cut-off are not determined to 0.01 dB by either
implementation (museval itself moves by ~0.1 dB when its input moves by 1e-14); SDR and ISR stay exact.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .audio import AudioError, to_numpy

METRICS: tuple[str, ...] = ("SDR", "ISR", "SIR", "SAR")
"""BSS Eval v4's four framewise metrics, in museval's order (``museval.evaluate`` returns them so); the one list
of metric names of the package (report tables and files use it too)."""
FILTERS_LEN = 512
_MDX_EPS = 1e-7
# Work in chunks of about this many complex values (16 MB): fresh large arrays are slow on small machines.
_CHUNK_ELEMENTS = 1_000_000
_RFFT_OUT = np.lib.NumpyVersion(np.__version__) >= "2.0.0"


@dataclass(frozen=True)
class BSSEvalResult:
    """Framewise BSS Eval v4 scores in dB, each ``(sources, frames)`` float64; NaN where museval gives NaN.

    ``isr``, ``sir`` and ``sar`` are ``None`` when computed with ``compute_filters=False``.
    """

    sdr: np.ndarray
    isr: np.ndarray | None
    sir: np.ndarray | None
    sar: np.ndarray | None
    sample_rate: int
    window_samples: int
    hop_samples: int

    @property
    def frame_times(self) -> np.ndarray:
        """Start time of each frame in seconds, ``(frames,)``."""
        return np.arange(self.sdr.shape[1]) * self.hop_samples / self.sample_rate

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


# ----------------------------------------------------------------------------------------------- input checks


def _as_sources(x, *, name: str) -> np.ndarray:
    """float64 ``(sources, channels, samples)`` with clear errors for bad shapes and values."""
    arr = to_numpy(x)
    if arr.dtype.kind not in "fiu":
        raise AudioError(f"{name} must hold real samples, got dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 3:
        raise AudioError(
            f"{name} must be (sources, channels, samples), got shape {arr.shape}; "
            "for mono pass (sources, 1, samples)"
        )
    if arr.size == 0:
        raise AudioError(f"{name} is empty (shape {arr.shape}); pass at least one source, channel and sample")
    finite = np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite).tolist()
        raise AudioError(
            f"{name} contains NaN or Inf samples in source(s) {bad}; clean the signal (e.g. nan_to_num) first"
        )
    return arr


def _checked_pair(references, estimates) -> tuple[np.ndarray, np.ndarray]:
    """References and estimates as float64 with matching shapes; estimates padded or cut like museval."""
    refs = _as_sources(references, name="references")
    ests = _as_sources(estimates, name="estimates")
    if refs.shape[:2] != ests.shape[:2]:
        raise AudioError(
            f"references and estimates differ in sources or channels: references {refs.shape}, "
            f"estimates {ests.shape} (both (sources, channels, samples)); give one estimate per reference "
            "with the same channels"
        )
    return refs, _fit_length(ests, refs.shape[-1])


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.pad(x, [(0, 0), (0, 0), (0, n - x.shape[-1])])


def to_museval_layout(x) -> np.ndarray:
    """Channels-first ``(sources, channels, samples)`` -> museval's time-first ``(sources, samples, channels)``.

    The one conversion between the two layouts (used by tests and benchmarks that call museval).
    """
    return np.ascontiguousarray(np.swapaxes(to_numpy(x), -1, -2))


# ----------------------------------------------------------------------------------------------- framing


def _frame_bounds(n: int, window: int, hop: int) -> tuple[np.ndarray, int]:
    """Frame starts and the frame length, as museval's ``Framing``: the trailing partial window is dropped."""
    if window < n:
        n_frames = (n - window + hop) // hop
        return np.arange(n_frames) * hop, window
    return np.zeros(1, dtype=np.int64), n


def _silent_tracks(x: np.ndarray) -> np.ndarray:
    """``(sources,)`` bool: museval's silent test over the whole track (channel sum zero at every sample)."""
    return ~np.any(x.sum(axis=1) != 0, axis=-1)


def _db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``10 log10(num / den)`` with museval's ``_safe_db`` rule: a zero denominator gives ``+inf``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10.0 * np.log10(num / den)
    return np.where(den == 0, np.inf, out)


# ----------------------------------------------------------------------------------------------- correlations


def _rfft(x: np.ndarray, n: int, out: np.ndarray) -> np.ndarray:
    """``rfft`` along the last axis into a reused buffer (numpy >= 2 writes in place; older numpy copies)."""
    if _RFFT_OUT:
        return np.fft.rfft(x, n=n, axis=-1, out=out)
    out[...] = np.fft.rfft(x, n=n, axis=-1)
    return out


def _fft_size(n: int) -> int:
    """Smallest ``m * 2**k >= n`` with a small odd ``m``: measured faster here than 5- and 7-smooth sizes."""
    return min(m << max(0, int(np.ceil(np.log2(n / m)))) for m in (1, 3, 5, 9, 15, 45))


def _n_threads() -> int:
    """Threads for the block loops: torch's setting, so ``torch.set_num_threads`` governs this module too."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def _map_threads(fn: Callable, groups: list) -> list:
    """``[fn(g) for g in groups]`` on a small thread pool (numpy releases the GIL in FFTs, matmul and ufuncs)."""
    if len(groups) <= 1:
        return [fn(g) for g in groups]
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        return list(pool.map(fn, groups))


def _split(items: list, parts: int) -> list[list]:
    parts = max(1, min(parts, len(items)))
    return [items[i::parts] for i in range(parts)]


def _lag_correlations(x: np.ndarray, ys: Sequence[np.ndarray], max_lag: int) -> np.ndarray:
    """``r[a, b, m] = sum_u x[a, u] * y[b, u + m - max_lag]`` for ``m in 0..2*max_lag``: ``(A, B, 2*max_lag+1)``.

    ``y`` is the rows of ``ys`` stacked (passed apart to spare a copy of whole tracks). Block FFT correlation:
    each block of ``x`` is correlated with the matching block of ``y`` extended by ``max_lag`` samples on both
    sides, so no circular wrap reaches the lags we keep; block spectra are summed before one inverse FFT per
    pair. Blocks go through small reused buffers: fresh large arrays cost more than the FFTs on small machines.
    """
    n = x.shape[-1]
    n_fft = max(16384, 1 << int(np.ceil(np.log2(8 * (max_lag + 1)))))
    block = n_fft - 2 * max_lag
    n_blocks = -(-n // block)
    n_freq = n_fft // 2 + 1
    n_x, n_y = x.shape[0], sum(y.shape[0] for y in ys)
    chunk = max(1, min(n_blocks, _CHUNK_ELEMENTS // (n_freq * (n_x + n_y))))
    chunks = [list(range(k, min(k + chunk, n_blocks))) for k in range(0, n_blocks, chunk)]

    def work(group: list[list[int]]) -> np.ndarray:
        # all buffers are reused from chunk to chunk: fresh large arrays cost more than the FFTs here
        x_buf, y_buf = np.zeros((n_x, chunk, n_fft)), np.zeros((n_y, chunk, n_fft))
        x_spec = np.empty((n_x, chunk, n_freq), dtype=np.complex128)
        y_spec = np.empty((n_y, chunk, n_freq), dtype=np.complex128)
        x_t = np.empty((n_freq, n_x, chunk), dtype=np.complex128)  # f: freq, a: x rows, k: blocks
        y_t = np.empty((n_freq, chunk, n_y), dtype=np.complex128)  # b: y rows
        prod = np.empty((n_freq, n_x, n_y), dtype=np.complex128)
        acc = np.zeros((n_freq, n_x, n_y), dtype=np.complex128)
        for blocks in group:
            if len(blocks) < chunk:  # the last, short chunk: zero blocks add nothing
                x_buf[:] = 0.0
                y_buf[:] = 0.0
            for i, k in enumerate(blocks):
                start = k * block
                stop = min(start + block, n)
                x_buf[:, i, : stop - start] = x[:, start:stop]
                x_buf[:, i, stop - start :] = 0.0
                lo, hi = max(start - max_lag, 0), min(start + block + max_lag, n)
                offset = lo - (start - max_lag)
                y_buf[:, i, :offset] = 0.0
                row = 0
                for y in ys:
                    y_buf[row : row + y.shape[0], i, offset : offset + hi - lo] = y[:, lo:hi]
                    row += y.shape[0]
                y_buf[:, i, offset + hi - lo :] = 0.0
            _rfft(x_buf, n_fft, x_spec)
            _rfft(y_buf, n_fft, y_spec)
            np.conjugate(x_spec.transpose(2, 0, 1), out=x_t)
            np.copyto(y_t, y_spec.transpose(2, 1, 0))
            acc += np.matmul(x_t, y_t, out=prod)
        return acc

    acc = sum(_map_threads(work, _split(chunks, _n_threads())))
    r = np.fft.irfft(acc.transpose(1, 2, 0), n=n_fft, axis=-1)
    return r[..., : 2 * max_lag + 1]


def _solve_spd(build: Callable[[], np.ndarray], rhs: np.ndarray) -> np.ndarray:
    """Solve ``(G + eps I) x = rhs`` by Cholesky, as museval's ``G + eps I`` solve; more ridge if not PD.

    ``build()`` returns the Gram matrix ``G`` afresh; it is factorised in place (it is large). ``G`` is symmetric
    positive semi-definite; when rounding makes it indefinite (e.g. identical channels), a ridge growing from
    1e-12 of its mean diagonal makes it definite. The projections, which are all the metrics use, hardly move:
    the ridge only damps directions the references do not span. Cholesky, not LU: torch's LU solve fails inside
    MKL on some machines, and Cholesky is half the work.
    """
    ridge = np.finfo(np.float64).eps
    info = torch.zeros((), dtype=torch.int32)
    for _ in range(8):
        g = torch.from_numpy(build())
        diag = g.diagonal()
        scale = float(diag.mean())
        diag += ridge
        factor, info = torch.linalg.cholesky_ex(g, out=(g, info))
        if int(info) == 0:
            half = torch.linalg.solve_triangular(factor, torch.from_numpy(np.ascontiguousarray(rhs)), upper=False)
            return torch.linalg.solve_triangular(factor.mT, half, upper=True).numpy()
        ridge = max(ridge * 100.0, 1e-12 * scale)
    raise np.linalg.LinAlgError("the reference Gram matrix is not positive definite even with a ridge")


def _gram(r: np.ndarray, filters_len: int) -> np.ndarray:
    """Gram matrix of the delayed references from their lag correlations ``r`` ``(A, >=A, 2L-1)``: ``(A*L, A*L)``.

    ``gram[(a, k), (b, l)] = <x_a delayed k, x_b delayed l> = r_ab(k - l)``: one Toeplitz block per pair, rows
    ordered (source, channel, lag) as in museval. Only the lower triangle is filled (the rest stays zero): the
    Cholesky factorisation reads nothing else, and the matrix is large.
    """
    a, L = r.shape[0], filters_len
    gram = np.zeros((a * L, a * L))
    for i in range(a):
        for j in range(i + 1):
            sym = 0.5 * (r[i, j] + r[j, i, ::-1])  # r_ij(tau) = r_ji(-tau); average the two roundings
            gram[i * L : (i + 1) * L, j * L : (j + 1) * L] = np.lib.stride_tricks.sliding_window_view(
                sym[::-1], L
            )[::-1]
    return gram


def _distortion_filters(refs: np.ndarray, ests: np.ndarray, filters_len: int) -> tuple[np.ndarray, np.ndarray]:
    """museval v4's filters, fitted on the whole track.

    Returns ``interf`` ``(A, L, E)`` (all references -> each estimate channel, minus the own-source part) and
    ``spat`` ``(S, C, L, C)`` (own source -> its estimate channels, minus the identity), with ``A = E = S*C``.
    """
    n_src, n_ch, _ = refs.shape
    a = n_src * n_ch
    L = filters_len
    x = refs.reshape(a, -1)
    r = _lag_correlations(x, [x, ests.reshape(a, -1)], L - 1)  # (a, 2a, 2L-1), lag index m <-> lag m - (L-1)
    gram = _gram(r, L)
    # cross[(a, k), e] = <x_a delayed k, est_e> = r_{a,e}(k)
    cross = r[:, a:, L - 1 :].transpose(0, 2, 1).reshape(a * L, a)
    size = n_ch * L
    own = np.empty((n_src, n_ch, L, n_ch))
    for j in range(n_src):  # museval's Cj: each estimate projected on its own reference only
        rows = slice(j * size, (j + 1) * size)
        rhs = cross[rows, j * n_ch : (j + 1) * n_ch]
        own[j] = _solve_spd(lambda rows=rows: gram[rows, rows].copy(), rhs).reshape(n_ch, L, n_ch)
    if n_src == 1:
        full = own.reshape(1, n_ch, L, 1, n_ch)  # one source: museval's two solves coincide
    else:
        first = [gram]  # factorise the assembled matrix in place; rebuild it only for a retry

        def build() -> np.ndarray:
            return first.pop() if first else _gram(r, L)

        full = _solve_spd(build, cross)
        full = full.reshape(n_src, n_ch, L, n_src, n_ch)  # (j, cj, k, jest, c)
    interf = full.copy()
    for j in range(n_src):
        interf[j, :, :, j, :] -= own[j]
    spat = own.copy()
    spat[:, np.arange(n_ch), 0, np.arange(n_ch)] -= 1.0
    return interf.reshape(a, L, a), spat


# ----------------------------------------------------------------------------------------------- BSS Eval v4


def _window_hop(sample_rate: int, window: int | None, hop: int | None) -> tuple[int, int]:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    window = int(sample_rate if window is None else window)
    hop = int(sample_rate if hop is None else hop)
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive sample counts, got window={window}, hop={hop}")
    return window, hop


def _active_sources(refs: np.ndarray, ests: np.ndarray) -> np.ndarray:
    """Indices of sources whose reference is not silent over the whole track; warn about the others."""
    silent = _silent_tracks(refs)
    if silent.any():
        warnings.warn(
            f"reference source(s) {np.flatnonzero(silent).tolist()} are silent over the whole track (all zeros, "
            "or channels that cancel out); their scores are NaN and the other sources are scored without them",
            stacklevel=3,
        )
    active = np.flatnonzero(~silent)
    silent_est = _silent_tracks(ests)[active]
    if silent_est.any():
        warnings.warn(
            f"estimate(s) for source(s) {active[silent_est].tolist()} are silent over the whole track; as in "
            "museval, every frame with a silent estimate is NaN for all sources",
            stacklevel=3,
        )
    return active


def bss_eval(
    references,
    estimates,
    sample_rate: int = 44100,
    *,
    window: int | None = None,
    hop: int | None = None,
    compute_filters: bool = True,
    filters_len: int = FILTERS_LEN,
) -> BSSEvalResult:
    """BSS Eval v4 (images) per source and frame, as ``museval.evaluate(..., mode="v4")``.

    ``references``, ``estimates``: ``(sources, channels, samples)``; estimates are padded or cut to the reference
    length. ``window`` and ``hop`` are in samples (default: one second). Returns :class:`BSSEvalResult` with
    ``(sources, frames)`` arrays in dB. See the module docstring for NaN and silence rules.
    """
    window, hop = _window_hop(sample_rate, window, hop)
    refs, ests = _checked_pair(references, estimates)
    n_src, n_ch, n = refs.shape
    starts, length = _frame_bounds(n, window, hop)
    out = {m: np.full((n_src, len(starts)), np.nan) for m in METRICS}
    active = _active_sources(refs, ests)
    if len(active):
        if len(active) < n_src:
            refs, ests = refs[active], ests[active]
        scores = _bss_eval_active(refs, ests, starts, length, compute_filters, filters_len)
        for m, v in scores.items():
            out[m][active] = v
    filt = {m: (out[m] if compute_filters else None) for m in ("ISR", "SIR", "SAR")}
    return BSSEvalResult(
        sdr=out["SDR"], isr=filt["ISR"], sir=filt["SIR"], sar=filt["SAR"], sample_rate=int(sample_rate),
        window_samples=window, hop_samples=hop,
    )


def framewise_sdr(references, estimates, sample_rate: int = 44100, *, window: int | None = None,
                  hop: int | None = None) -> np.ndarray:
    """Only the framewise SDR of :func:`bss_eval` (no distortion filters needed): ``(sources, frames)`` dB."""
    return bss_eval(references, estimates, sample_rate, window=window, hop=hop, compute_filters=False).sdr


def _bss_eval_active(refs, ests, starts, length, compute_filters, filters_len) -> dict[str, np.ndarray]:
    """All metrics for sources whose references are not silent: ``{metric: (sources, frames)}``.

    museval projects each frame separately (the frame zero-padded by ``filters_len - 1``), so each frame's
    projection is the full linear convolution of the framed references with the whole-track filters; its
    energies are taken in the frequency domain (Parseval). Frames go in small chunks to bound memory.
    """
    n_src, n_ch, _ = refs.shape
    a = n_src * n_ch
    n_frames = len(starts)
    names = ("ref", "diff") + (("e_spat", "s_filt", "e_int", "s_all", "e_art") if compute_filters else ())
    energy = {k: np.empty((n_src, n_frames)) for k in names}
    silent = np.zeros(n_frames, dtype=bool)
    if compute_filters:
        interf, spat = _distortion_filters(refs, ests, filters_len)
        n_fft = _fft_size(length + filters_len - 1)
        n_freq = n_fft // 2 + 1
        weight = np.full(n_freq, 2.0 / n_fft)  # Parseval for a real signal's half spectrum
        weight[0] = 1.0 / n_fft
        if n_fft % 2 == 0:
            weight[-1] = 1.0 / n_fft
        root_weight = np.sqrt(weight)
        h_int = np.fft.rfft(interf, n=n_fft, axis=1).transpose(1, 2, 0)  # (f, e, a)
        h_spat = np.fft.rfft(spat, n=n_fft, axis=2).transpose(2, 0, 3, 1)  # (f, s, c_out, c_in)
        chunk = max(1, _CHUNK_ELEMENTS // (a * n_freq))
    else:
        chunk = max(1, _CHUNK_ELEMENTS // (a * length))
    ref_flat, est_flat = refs.reshape(a, -1), ests.reshape(a, -1)

    def power(x):  # (a, t, n) -> (s, t): energy over channels and samples
        return np.einsum("atn,atn->at", x, x).reshape(n_src, n_ch, -1).sum(axis=1)

    def buffers(t: int) -> dict[str, np.ndarray]:
        out = {k: np.empty((a, t, length)) for k in ("ref", "est", "diff")}
        if compute_filters:
            for k in ("r_spec", "d_spec"):
                out[k] = np.empty((a, t, n_freq), dtype=np.complex128)
            for k in ("r", "e_art", "e_int", "e_spat"):  # (f, s, c, t) contiguous, f: freq
                out[k] = np.empty((n_freq, n_src, n_ch, t), dtype=np.complex128)
            out["sq"] = np.empty((n_freq, a * t * 2))
        return out

    def spec_power(x, sq):  # (f, s, c, t) -> (s, t), Parseval (the weights are already in the spectra)
        re_im = x.reshape(n_freq, -1).view(np.float64)
        np.multiply(re_im, re_im, out=sq)
        return np.add.reduce(sq, axis=0).reshape(n_src, n_ch, -1, 2).sum(axis=(1, 3))

    def work(group: list[np.ndarray]) -> None:
        pool: dict[int, dict[str, np.ndarray]] = {}
        for cols in group:  # frame indices of one chunk; each chunk writes its own columns
            b = pool.setdefault(len(cols), buffers(len(cols)))
            # a: (source, channel), t: frames, n: samples
            for i, start in enumerate(starts[cols]):
                b["ref"][:, i] = ref_flat[:, start : start + length]
                b["est"][:, i] = est_flat[:, start : start + length]
            silent[cols] = _silent(b["ref"], n_src) | _silent(b["est"], n_src)
            diff = np.subtract(b["est"], b["ref"], out=b["diff"])
            energy["ref"][:, cols] = power(b["ref"])
            energy["diff"][:, cols] = power(diff)
            if not compute_filters:
                continue
            # f: freq, s: sources, c: channels; sqrt(Parseval weight) folded in, so energies are plain sums
            r, e_int, e_spat, e_art, sq = b["r"], b["e_int"], b["e_spat"], b["e_art"], b["sq"]
            spec = _rfft(b["ref"], n_fft, b["r_spec"])
            spec *= root_weight
            np.copyto(r, spec.transpose(2, 0, 1).reshape(r.shape))
            np.matmul(h_int, r.reshape(n_freq, a, -1), out=e_int.reshape(n_freq, a, -1))
            np.matmul(h_spat, r, out=e_spat)
            energy["e_spat"][:, cols] = spec_power(e_spat, sq)
            energy["e_int"][:, cols] = spec_power(e_int, sq)
            # the artefacts from (estimate - reference), not estimate - projection: no cancellation of large terms
            spec = _rfft(diff, n_fft, b["d_spec"])
            spec *= root_weight
            np.copyto(e_art, spec.transpose(2, 0, 1).reshape(e_art.shape))
            e_art -= e_spat
            e_art -= e_int
            energy["e_art"][:, cols] = spec_power(e_art, sq)
            e_spat += r  # now s_true + e_spat
            energy["s_filt"][:, cols] = spec_power(e_spat, sq)
            e_spat += e_int  # now s_true + e_spat + e_interf
            energy["s_all"][:, cols] = spec_power(e_spat, sq)

    chunks = [np.arange(t0, min(t0 + chunk, n_frames)) for t0 in range(0, n_frames, chunk)]
    _map_threads(work, _split(chunks, _n_threads()))
    scores = {"SDR": _db(energy["ref"], energy["diff"])}
    if compute_filters:
        scores["ISR"] = _db(energy["ref"], energy["e_spat"])
        scores["SIR"] = _db(energy["s_filt"], energy["e_int"])
        scores["SAR"] = _db(energy["s_all"], energy["e_art"])
    for v in scores.values():
        v[:, silent] = np.nan
    return scores


def _silent(frames: np.ndarray, n_src: int) -> np.ndarray:
    """``(frames,)``: museval's test per frame, any source whose channel sum is zero at every sample."""
    per_source = frames.reshape(n_src, -1, *frames.shape[1:]).sum(axis=1)  # (s, t, n)
    return (~np.any(per_source != 0, axis=-1)).any(axis=0)


# ----------------------------------------------------------------------------------------------- whole-track SDRs


def new_sdr(references, estimates) -> np.ndarray:
    """MDX "new SDR" per source: ``10 log10((sum s^2 + 1e-7) / (sum (s - s_hat)^2 + 1e-7))``, ``(sources,)`` dB.

    Sums run over channels and samples of the whole track; estimates are padded or cut to the reference length.
    """
    refs, ests = _checked_pair(references, estimates)
    num = np.sum(refs**2, axis=(1, 2)) + _MDX_EPS
    den = np.sum((refs - ests) ** 2, axis=(1, 2)) + _MDX_EPS
    return 10.0 * np.log10(num / den)


def si_sdr(references, estimates, *, zero_mean: bool = True) -> np.ndarray:
    """Scale-invariant SDR per source (Le Roux et al. 2019) over the whole track, channels pooled: ``(sources,)`` dB.

    The reference is scaled by ``alpha = <s_hat, s> / <s, s>``; ``zero_mean`` removes each channel's mean first.
    A silent reference gives NaN; a perfect estimate gives ``+inf``.
    """
    refs, ests = _checked_pair(references, estimates)
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
