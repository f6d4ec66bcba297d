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
energies through one compiled loop (:mod:`.kernels`, numba), since in numpy they took a product and a
dozen passes over memory.

Memory is bounded by the window and the filter length, not the track: inputs are read block by block (float32
input is never copied whole into float64); the solver keeps ``O(A^2 L)`` numbers (the dense fallback ``(A L)^2``).

Layout: one module per job. :mod:`.sdr` (whole-track SDRs and aggregation: what training needs), :mod:`.threads`
(thread pool, BLAS plumbing, huge pages), :mod:`.inputs` (input checks, block reading), :mod:`.toeplitz` (the
structured solver), :mod:`.decomposition` (BSS Eval v4 and its frame pass), :mod:`.kernels` (the compiled loop).
The names of :mod:`.decomposition` load on first use (PEP 562), so importing this package, or training, which
uses :func:`new_sdr` only, does not load numba and the compiled loop.
"""

from __future__ import annotations

import importlib
from typing import Any

from .inputs import FRAME_SECONDS, to_museval_layout
from .sdr import METRICS, Aggregate, aggregate, new_sdr, si_sdr
from .threads import no_huge_pages

_DECOMPOSITION = ("BSSEvalResult", "FILTERS_LEN", "ReferenceSet", "UNSTABLE_DB", "bss_eval", "bss_eval_many",
                  "framewise_sdr")

__all__ = ["FRAME_SECONDS", "METRICS", "Aggregate", "aggregate", "new_sdr", "si_sdr", "no_huge_pages", "to_museval_layout",
           *_DECOMPOSITION]


def __getattr__(name: str) -> Any:
    if name in _DECOMPOSITION:
        return getattr(importlib.import_module(".decomposition", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
