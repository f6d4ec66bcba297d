"""Compiled inner loops (numba) of :mod:`conditioned_sep.metrics`.

numba compiles them on first use in each process (about half a second). Nothing is cached on disk on purpose: a
cache would write beside the installed package or in the home folder, and a read-only install or a full disk would
then make scoring fail. They release the GIL, so the metrics' own worker threads run them in parallel.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, fastmath={"reassoc", "contract"})
def projection_energies(r_spec: np.ndarray, d_spec: np.ndarray, interf: np.ndarray, own: np.ndarray,
                        out: np.ndarray) -> None:
    """Adds the energies of museval's decomposition of each frame, per estimate row, to ``out``.

    Dimensions: a reference = estimate rows (source, channel), t frames, f frequencies, c one source's channels.
    ``r_spec`` ``(a, t, f)`` the framed references' spectra; ``d_spec`` ``(a, t, f)`` those of estimate minus
    reference; ``interf`` ``(f, a, a)``: row ``e``'s interference filters on every reference row; ``own``
    ``(f, a, c)``: row ``e``'s own-source filters on the channels of its source. ``out`` ``(5, a, t)`` float64
    accumulates, summed over frequencies, ``|e_spat|^2``, ``|s_true + e_spat|^2``, ``|e_interf|^2``,
    ``|s_true + e_spat + e_interf|^2`` and ``|e_artif|^2``, with ``e_artif`` taken as
    ``(estimate - reference) - e_spat - e_interf`` (no cancellation of two large terms).

    One pass over the spectra instead of the product and the dozen array passes the same sums take with numpy
    (measured 2.4 ms against 3.5-4.8 ms per one-second frame of eight rows; results equal to 2e-14).
    """
    a, n_t, n_f = r_spec.shape
    n_c = own.shape[2]
    r = np.empty(a, dtype=np.complex128)
    for f in range(n_f):
        for t in range(n_t):
            for b in range(a):
                r[b] = r_spec[b, t, f]
            for e in range(a):
                e_int = 0j
                for b in range(a):
                    e_int += interf[f, e, b] * r[b]
                first = (e // n_c) * n_c
                spat = 0j
                for c in range(n_c):
                    spat += own[f, e, c] * r[first + c]
                s_filt = r[e] + spat
                s_all = s_filt + e_int
                e_art = d_spec[e, t, f] - spat - e_int
                out[0, e, t] += spat.real * spat.real + spat.imag * spat.imag
                out[1, e, t] += s_filt.real * s_filt.real + s_filt.imag * s_filt.imag
                out[2, e, t] += e_int.real * e_int.real + e_int.imag * e_int.imag
                out[3, e, t] += s_all.real * s_all.real + s_all.imag * s_all.imag
                out[4, e, t] += e_art.real * e_art.real + e_art.imag * e_art.imag
