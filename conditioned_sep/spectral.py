"""STFT / ISTFT modules on native complex tensors, and a multichannel Wiener filter across sources.

Spectrograms are channels-first: ``(batch, channels, freq, frames)`` with ``freq = n_fft // 2 + 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import pack, rearrange, unpack
from torch import Tensor, nn


class STFT(nn.Module):
    """Short-time Fourier transform with a Hann window (a buffer) and ``center=True``.

    Zero padding at the edges (not reflection) so that any length, even shorter than ``n_fft``, works. The end
    is zero-padded to a multiple of the hop first, so the last frame is centred at or past the last sample:
    ``frames = ceil(samples / hop) + 1``. Without it, a signal one sample short of a multiple of the hop ended
    under the very edge of a single window when ``hop = n_fft / 2``, where the ISTFT divides by a window sum
    of ~1e-7 and any mask came out amplified thousands of times.
    """

    def __init__(self, *, n_fft: int, hop_length: int) -> None:
        super().__init__()
        if n_fft <= 0 or hop_length <= 0 or hop_length > n_fft:
            raise ValueError(f"need 0 < hop_length <= n_fft, got n_fft={n_fft}, hop_length={hop_length}")
        self.n_fft, self.hop_length = n_fft, hop_length
        # not persistent: derived from n_fft, so checkpoints need not carry it
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        """``audio`` real ``(b, c, samples)`` -> complex ``(b, c, n_fft // 2 + 1, frames)``,
        ``frames = ceil(samples / hop) + 1``."""
        # b: batch, c: channels, n: samples, f: freq, t: frames
        flat, ps = pack([audio], "* n")
        flat = F.pad(flat, (0, (-flat.shape[-1]) % self.hop_length))  # (b c, hop * ceil(n / hop))
        spec = torch.stft(
            flat, n_fft=self.n_fft, hop_length=self.hop_length, window=self.window.to(flat.dtype),
            center=True, pad_mode="constant", return_complex=True,
        )
        (spec,) = unpack(spec, ps, "* f t")
        return spec


class ISTFT(nn.Module):
    """Inverse of :class:`STFT` (least-squares overlap-add with the same window), cropped to ``length``."""

    def __init__(self, *, n_fft: int, hop_length: int) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, spec: Tensor, *, length: int) -> Tensor:
        """complex ``(b, c, f, t)`` -> real ``(b, c, length)``."""
        # b: batch, c: channels, f: freq, t: frames, n: samples
        flat, ps = pack([spec], "* f t")
        audio = torch.istft(
            flat, n_fft=self.n_fft, hop_length=self.hop_length, window=self.window.to(flat.real.dtype),
            center=True, length=length,
        )
        (audio,) = unpack(audio, ps, "* n")
        return audio


def _solve_hermitian(cov: Tensor, rhs: Tensor) -> Tensor:
    """Solve ``cov @ x = rhs`` for Hermitian positive definite ``cov (..., c, c)``, ``rhs (..., c, k)``.

    Closed form for 1 or 2 channels (the usual case, and much faster than a batched factorisation);
    Cholesky otherwise (batched ``linalg.solve`` is unreliable in MKL here).
    """
    c = cov.shape[-1]
    if c == 1:
        return rhs / cov
    if c == 2:
        a, b = cov[..., 0, 0], cov[..., 0, 1]
        cc, d = cov[..., 1, 0], cov[..., 1, 1]
        det = (a * d - b * cc)[..., None, None]
        inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-cc, a], -1)], -2) / det
        return inv @ rhs
    return torch.cholesky_solve(rhs, torch.linalg.cholesky(cov))


def wiener(estimates: Tensor, mixture: Tensor, *, niter: int = 1, eps: float = 1e-10) -> Tensor:
    """Multichannel Wiener filter (expectation-maximisation) across sources.

    ``estimates`` complex ``(s, c, f, t)``: initial per-source estimates (e.g. mask * mixture), s sources that
    together should explain the mixture. ``mixture`` complex ``(c, f, t)``. Returns complex ``(s, c, f, t)``.
    ``niter = 0`` returns the estimates unchanged. Each iteration fits per source a power spectrogram
    ``v (f, t)`` (mean over channels) and a spatial covariance ``R (f, c, c)``, then sets
    ``y_j = (v_j R_j + d I) C^-1 x`` with ``C = sum_j (v_j R_j + d I)``: every source gets the same small
    diagonal load ``d``, so the outputs sum exactly to the mixture.
    """
    if niter < 0:
        raise ValueError(f"niter must be >= 0, got {niter}")
    if estimates.ndim != 4 or mixture.shape != estimates.shape[1:]:
        raise ValueError(f"wiener needs estimates (s, c, f, t) and mixture (c, f, t), got "
                         f"{tuple(estimates.shape)} and {tuple(mixture.shape)}")
    if niter == 0:
        return estimates
    # scale-invariant regularisation: a tiny fraction of the mixture power
    load = eps + 1e-8 * float(mixture.abs().square().mean())
    if estimates.shape[1] == 2:
        return _wiener_stereo(estimates, mixture, niter=niter, load=load)
    return _wiener_generic(estimates, mixture, niter=niter, load=load)


def _wiener_generic(estimates: Tensor, mixture: Tensor, *, niter: int, load: float) -> Tensor:
    """:func:`wiener` for any number of channels, on full c x c matrices."""
    # s: sources, c: channels, f: freq, t: frames
    s, c, f, t = estimates.shape
    x = rearrange(mixture, "c f t -> f t c")
    y = rearrange(estimates, "s c f t -> s f t c")
    eye = torch.eye(c, dtype=x.dtype, device=x.device)
    for _ in range(niter):
        v = y.abs().square().mean(-1)  # (s, f, t)
        # einsum contracts t without materialising the (s, f, t, c, c) outer products
        r = torch.einsum("sftc,sftd->sfcd", y, y.conj()) / (v.sum(2)[..., None, None] + load)  # (s, f, c, c)
        cov = torch.einsum("sft,sfcd->ftcd", v.to(r.dtype), r) + s * load * eye  # (f, t, c, c)
        gain = _solve_hermitian(cov, x[..., None])[..., 0]  # (f, t, c): C^-1 x
        y = v[..., None] * torch.einsum("sfcd,ftd->sftc", r, gain) + load * gain  # (s, f, t, c)
    return rearrange(y, "s f t c -> s c f t")


def _wiener_stereo(estimates: Tensor, mixture: Tensor, *, niter: int, load: float) -> Tensor:
    """:func:`wiener` for two channels, in closed form on the entries of the 2 x 2 Hermitian matrices and in
    real arithmetic (same result as the generic path, several times faster and lighter)."""
    # s: sources, f: freq, t: frames. Channel k of source j: yr[k] + i yi[k], each (s, f, t)
    yr, yi = [estimates[:, 0].real, estimates[:, 1].real], [estimates[:, 0].imag, estimates[:, 1].imag]
    xr0, xr1, xi0, xi1 = mixture[0].real, mixture[1].real, mixture[0].imag, mixture[1].imag  # (f, t)
    n_src = estimates.shape[0]
    for _ in range(niter):
        p0 = yr[0].square() + yi[0].square()
        p1 = yr[1].square() + yi[1].square()
        v = 0.5 * (p0 + p1)  # (s, f, t)
        norm = v.sum(-1) + load  # (s, f)
        # spatial covariance R_j = [[r00, r01], [conj(r01), r11]], each (s, f, 1)
        r00 = (p0.sum(-1) / norm)[..., None]
        r11 = (p1.sum(-1) / norm)[..., None]
        r01r = ((yr[0] * yr[1] + yi[0] * yi[1]).sum(-1) / norm)[..., None]
        r01i = ((yi[0] * yr[1] - yr[0] * yi[1]).sum(-1) / norm)[..., None]
        # mixture covariance C = sum_j v_j R_j + n_src * load * I, entries (f, t)
        c00 = (v * r00).sum(0) + n_src * load
        c11 = (v * r11).sum(0) + n_src * load
        c01r, c01i = (v * r01r).sum(0), (v * r01i).sum(0)
        inv_det = 1.0 / (c00 * c11 - c01r.square() - c01i.square())
        # g = C^-1 x
        g0r = (c11 * xr0 - c01r * xr1 + c01i * xi1) * inv_det
        g0i = (c11 * xi0 - c01r * xi1 - c01i * xr1) * inv_det
        g1r = (c00 * xr1 - c01r * xr0 - c01i * xi0) * inv_det
        g1i = (c00 * xi1 - c01r * xi0 + c01i * xr0) * inv_det
        # y_j = v_j R_j g + load g
        yr = [v * (r00 * g0r + r01r * g1r - r01i * g1i) + load * g0r,
              v * (r01r * g0r + r01i * g0i + r11 * g1r) + load * g1r]
        yi = [v * (r00 * g0i + r01r * g1i + r01i * g1r) + load * g0i,
              v * (r01r * g0i - r01i * g0r + r11 * g1i) + load * g1i]
    return torch.complex(torch.stack(yr, dim=1), torch.stack(yi, dim=1))
