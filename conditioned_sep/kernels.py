"""Compiled inner loops (numba) of :mod:`conditioned_sep.metrics`.

numba compiles them on first use (about half a second) and caches the machine code beside this file, so later
processes load it. They release the GIL, so the metrics' own worker threads run them in parallel.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True, fastmath={"contract"})
def projection_energies(r: np.ndarray, interf: np.ndarray, d_spec: np.ndarray, own: np.ndarray, lo: int,
                        out: np.ndarray) -> None:
    """Adds one frequency slice's energies of museval's decomposition to ``out``, per estimate row and frame.

    Dimensions: f a slice's frequencies, a reference = estimate rows (source, channel), t frames, F all
    frequencies, c one source's channels. ``r`` ``(f, a, t)`` the framed references' spectra of the slice;
    ``interf`` ``(f, a, t)`` their interference projections (``e_interf``, from the BLAS product);
    ``d_spec`` ``(a, t, F)`` the spectra of estimate minus reference (the slice is ``lo : lo + f``);
    ``own`` ``(F, a, c)``: row ``e``'s own-source filters on the channels of its source. ``out`` ``(5, a, t)``
    float64 accumulates ``|e_spat|^2``, ``|s_true + e_spat|^2``, ``|e_interf|^2``,
    ``|s_true + e_spat + e_interf|^2`` and ``|e_artif|^2`` summed over the slice, where ``e_artif`` is taken as
    ``(estimate - reference) - e_spat - e_interf`` (no cancellation of two large terms).

    One pass over the data instead of the dozen array passes the same sums take in numpy: the frame pass was
    bound by those passes (measured 24 ms against 16 ms for a chunk of five 1-s frames of eight rows, bytes
    alike to 1e-13).
    """
    n_f, a, n_t = r.shape
    n_c = own.shape[2]
    for i in range(n_f):
        f = lo + i
        for e in range(a):
            first = (e // n_c) * n_c
            for t in range(n_t):
                spat = 0j
                for c in range(n_c):
                    spat += own[f, e, c] * r[i, first + c, t]
                s_filt = r[i, e, t] + spat
                e_int = interf[i, e, t]
                s_all = s_filt + e_int
                e_art = d_spec[e, t, f] - spat - e_int
                out[0, e, t] += spat.real * spat.real + spat.imag * spat.imag
                out[1, e, t] += s_filt.real * s_filt.real + s_filt.imag * s_filt.imag
                out[2, e, t] += e_int.real * e_int.real + e_int.imag * e_int.imag
                out[3, e, t] += s_all.real * s_all.real + s_all.imag * s_all.imag
                out[4, e, t] += e_art.real * e_art.real + e_art.imag * e_art.imag
