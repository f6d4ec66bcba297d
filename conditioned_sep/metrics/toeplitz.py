"""The structured solver of museval's distortion-filter equations ``(G + eps I) c = D``: lag correlations by block
FFTs, the block Levinson-Whittle recursion with the Gohberg-Semencul inverse applied by FFT, refinement in double
and extended precision, and the dense Cholesky factor as reference path and fallback (see the package docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.fft
import torch

from .inputs import _CHUNK_ELEMENTS, _rfft, _Rows
from .threads import _map_threads, _matmul_add, _n_threads, _split


_MUSEVAL_EPS = float(np.finfo(np.float64).eps)  # museval solves (G + eps I) c = D, eps absolute
_REFINE_TOL = 1e-8  # refinement stops when a step changes the filters by less than this fraction
_SETTLED = 1e-6  # ... or when it stops converging: extended-precision filters count as settled below this change
_DOUBLE_FLOOR = 1e-3  # double-precision refinement that stalls above this shows an inverse too rough to refine with
_MAX_STEPS = 8
_HAS_EXTENDED = bool(np.finfo(np.longdouble).eps < 1e-18)  # 80-bit (x86) or 128-bit long double


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
