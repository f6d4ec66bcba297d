"""BSS Eval v4 exactly as museval computes it: :class:`ReferenceSet` (a track's references prepared once),
:func:`bss_eval`, :func:`bss_eval_many`, :func:`framewise_sdr`, and the frame pass (projections and energies in the
compiled loop of :mod:`.kernels`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..audio import AudioError
from ..stems import SAMPLE_RATE
from .inputs import (_CHUNK_ELEMENTS, _as_sources, _check_same_layout, _db, _fft_size, _frame_bounds, _rfft, _Rows,
                     _scan, _window_hop)
from .kernels import projection_energies
from .sdr import METRICS
from .threads import _map_threads, _n_threads, _split
from .toeplitz import _HAS_EXTENDED, _GramSystem, _lag_correlations, _symmetrised


FILTERS_LEN = 512
UNSTABLE_DB = 0.1
"""A frame counts as numerically unstable when a plain double-precision solve moves its ISR, SIR or SAR by more
than this many dB (see :attr:`BSSEvalResult.unstable`)."""
# frames with filters go one or two at a time: their buffers stay small (fewer page faults) and the product that
# needs several frames at once is gone (measured 0.26 s against 0.31 s for 60 one-second frames of eight rows)
_FRAME_CHUNK_ELEMENTS = 250_000
_PROJECTION_ENERGIES = ("e_spat", "s_filt", "e_int", "s_all", "e_art")  # kernels.projection_energies' order


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


class ReferenceSet:
    """The reference side of BSS Eval v4 for one track: built once, scored against any number of estimate sets.

    ``references`` ``(sources, channels, samples)`` (an array, or a sequence of ``(channels, samples)`` arrays) is
    kept, not copied: do not modify it while this object is in use. Cheap to build (input checks only); the
    correlations, the solver for museval's Gram matrices and the condition figure are computed at the first
    :meth:`evaluate` with filters and reused by every later one. ``extended_precision=False`` keeps
    double-precision filters on ill-conditioned references (museval's accuracy, faster; ``sensitivity`` is then NaN
    there). Other arguments as :func:`bss_eval`.
    """

    def __init__(self, references, sample_rate: int = SAMPLE_RATE, *, window: int | None = None, hop: int | None = None,
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
    sample_rate: int = SAMPLE_RATE,
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


def bss_eval_many(references, estimate_sets: Sequence, sample_rate: int = SAMPLE_RATE, *, window: int | None = None,
                  hop: int | None = None, compute_filters: bool = True, filters_len: int = FILTERS_LEN,
                  extended_precision: bool = True) -> list[BSSEvalResult]:
    """:func:`bss_eval` of several estimate sets against one reference set, the references prepared once."""
    refs = ReferenceSet(references, sample_rate, window=window, hop=hop, filters_len=filters_len,
                        extended_precision=extended_precision)
    return [refs.evaluate(ests, compute_filters=compute_filters) for ests in estimate_sets]


def framewise_sdr(references, estimates, sample_rate: int = SAMPLE_RATE, *, window: int | None = None,
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
