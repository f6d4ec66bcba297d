"""Band-split RoFormer with FiLM conditioning: complex masks over the full band, after BS-RoFormer (Lu et al. 2023).

The complex STFT of every channel is split into subbands (narrow at low frequencies, wide at high ones); each band
is normalised and mapped to a ``dim``-dimensional feature; ``depth`` blocks alternate a transformer along time
(within each band) and one across bands (within each frame), both with rotary positions; a mask estimator per band
turns the features back into a complex mask per channel and bin. FiLM from ``z`` (``gamma * x + beta`` per feature)
conditions the features: once, before the mask estimators (``film_where="once"``, Banquet's place: the trunk then
runs once for every requested stem), or after every block (``"blocks"``), or both. The dedicated twin is the same
network without the conditioner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..film import Conditioner
from .base import SeparationConfig, SeparationModel

BANDSPLIT_FILM_PLACES = ("once", "blocks", "both")

# BS-RoFormer's split of a 2048-point STFT (1025 bins at 44.1 kHz): (bins per band, bands), low to high frequency
_REFERENCE_SPLIT = ((2, 24), (4, 12), (12, 8), (24, 8), (48, 8), (128, 2))
_REFERENCE_N_FFT = 2048


def band_widths_for(n_fft: int) -> tuple[int, ...]:
    """Bins per band for ``n_fft``: BS-RoFormer's split scaled to this STFT size, the remainder as one top band."""
    n_freq = n_fft // 2 + 1
    scale = n_fft / _REFERENCE_N_FFT
    widths: list[int] = []
    for width, count in _REFERENCE_SPLIT:
        w = max(1, round(width * scale))
        for _ in range(count):
            if sum(widths) + w >= n_freq:
                break
            widths.append(w)
    widths.append(n_freq - sum(widths))
    return tuple(widths)


@dataclass
class BandSplitConfig(SeparationConfig):
    """A band-split model; units as in :class:`SeparationConfig`. ``band_widths``: STFT bins per band, low to high,
    summing to ``n_fft // 2 + 1`` (empty: :func:`band_widths_for`). ``context_frames``: frames of context a chunk
    needs on each side at inference (attention sees the whole chunk). ``film_where``: ``"once"`` (before the mask
    estimators, Banquet's place; the trunk runs once for all requested stems), ``"blocks"`` (after every block)
    or ``"both"``."""

    arch: str = field(default="bandsplit", init=False)
    dim: int = 64
    depth: int = 4
    heads: int = 4
    ff_mult: int = 4
    mask_mult: int = 4
    dropout: float = 0.0
    band_widths: tuple[int, ...] = ()
    film_where: str = "once"
    film_hidden: tuple[int, ...] = (64,)
    segment_frames: int = 256
    context_frames: int = 32

    def __post_init__(self) -> None:
        self.band_widths = tuple(int(w) for w in self.band_widths) or band_widths_for(self.n_fft)
        self.film_hidden = tuple(int(h) for h in self.film_hidden)
        super().__post_init__()

    def problems(self) -> list[str]:
        problems = super().problems()
        n_freq = self.n_fft // 2 + 1
        if sum(self.band_widths) != n_freq or min(self.band_widths, default=0) < 1:
            problems.append(f"band_widths must be positive and sum to n_fft // 2 + 1 = {n_freq}, got "
                            f"{sum(self.band_widths)} over {len(self.band_widths)} bands")
        if self.film_where not in BANDSPLIT_FILM_PLACES:
            problems.append(f"film_where must be one of {BANDSPLIT_FILM_PLACES}, got {self.film_where!r}")
        if self.dim <= 0 or self.depth <= 0 or self.heads <= 0 or self.dim % self.heads:
            problems.append(f"dim, depth and heads must be positive with dim a multiple of heads, got dim={self.dim}, "
                            f"depth={self.depth}, heads={self.heads}")
        if self.context_frames < 0:
            problems.append(f"context_frames must be >= 0, got {self.context_frames}")
        return problems


BANDSPLIT_PRESETS: dict[str, dict[str, Any]] = {
    # tests: forward + backward in milliseconds
    "tiny": dict(n_fft=256, hop_length=128, dim=16, depth=1, heads=2, ff_mult=2, mask_mult=2, film_hidden=(16,),
                 segment_frames=32, context_frames=8),
    # CPU-trainable but slow: about 5.5 s per step of 16 x 0.74 s on 2 cores here, 9x the U-Net small preset
    "small": dict(n_fft=2048, hop_length=512, dim=48, depth=2, heads=4, segment_frames=64),
    # BS-RoFormer's small published sizes are dim 128-256, depth 6-12: trainable on one GPU
    "full": dict(n_fft=2048, hop_length=512, dim=128, depth=6, heads=8, segment_frames=256, context_frames=64),
}


class FeedForward(nn.Module):
    """Pre-norm MLP on the last dimension: ``(..., dim) -> (..., dim)``."""

    def __init__(self, *, dim: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.RMSNorm(dim), nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(dim * mult, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Rotary(nn.Module):
    """Rotary positions (RoFormer's) on interleaved feature pairs: pair ``i`` of token ``s`` is turned by
    ``s * freqs[i]`` radians, one complex product. The same function and state (``freqs``) as rotary-embedding-torch's
    ``RotaryEmbedding.rotate_queries_or_keys``, which this replaces: that one recomputes cosines and sines and
    rotates through stack and cat on every call, 5x the time of this product (measured on the band-split small
    preset's attention)."""

    def __init__(self, dim: int, *, theta: float = 10000.0) -> None:
        super().__init__()
        # a parameter that never learns, as in rotary-embedding-torch, so its checkpoints' keys load unchanged
        self.freqs = nn.Parameter(1.0 / theta ** (torch.arange(0, dim, 2).float() / dim), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        """``x (..., s, e)`` -> the same shape and dtype, rotated in fp32."""
        # s: tokens, p: feature pairs
        angles = torch.outer(torch.arange(x.shape[-2], device=x.device, dtype=torch.float32), self.freqs)  # (s, p)
        turn = torch.polar(torch.ones_like(angles), angles)
        pairs = torch.view_as_complex(rearrange(x.float(), "... (p two) -> ... p two", two=2).contiguous())
        return rearrange(torch.view_as_real(pairs * turn), "... p two -> ... (p two)").to(x.dtype)


class Attention(nn.Module):
    """Pre-norm multi-head self-attention with rotary positions: ``(n, s, dim) -> (n, s, dim)`` over s tokens."""

    def __init__(self, *, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.norm = nn.RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.rotary = Rotary(dim // heads)

    def forward(self, x: Tensor) -> Tensor:
        # n: sequences, s: tokens, h: heads, e: features per head
        q, k, v = rearrange(self.qkv(self.norm(x)), "n s (three h e) -> three n h s e", three=3, h=self.heads)
        q, k = self.rotary(q), self.rotary(k)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(rearrange(y, "n h s e -> n s (h e)"))


class AxialBlock(nn.Module):
    """One transformer layer along time within each band, then one across bands within each frame."""

    def __init__(self, *, dim: int, heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.time_attn, self.time_ff = Attention(dim=dim, heads=heads, dropout=dropout), FeedForward(
            dim=dim, mult=ff_mult, dropout=dropout)
        self.band_attn, self.band_ff = Attention(dim=dim, heads=heads, dropout=dropout), FeedForward(
            dim=dim, mult=ff_mult, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        # b: batch, t: frames, k: bands, d: features
        b = x.shape[0]
        x = rearrange(x, "b t k d -> (b k) t d")
        x = x + self.time_attn(x)
        x = x + self.time_ff(x)
        x = rearrange(x, "(b k) t d -> (b t) k d", b=b)
        x = x + self.band_attn(x)
        x = x + self.band_ff(x)
        return rearrange(x, "(b t) k d -> b t k d", b=b)


def _groups(band_widths: tuple[int, ...]) -> list[tuple[int, int]]:
    """Runs of equal-width bands, low to high: ``[(width, count), ...]`` (a handful, so the per-band maps run as a
    few batched matrix products instead of one small product per band)."""
    groups: list[tuple[int, int]] = []
    for w in band_widths:
        if groups and groups[-1][0] == w:
            groups[-1] = (w, groups[-1][1] + 1)
        else:
            groups.append((w, 1))
    return groups


class GroupedLinear(nn.Module):
    """``g`` independent linear maps applied to ``g`` bands at once: ``(..., g, d_in) -> (..., g, d_out)``."""

    def __init__(self, *, groups: int, d_in: int, d_out: int) -> None:
        super().__init__()
        bound = d_in ** -0.5  # nn.Linear's default initialisation, per band
        self.weight = nn.Parameter(torch.empty(groups, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, d_out).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        # g: bands of the group, i: input features, o: output features
        return torch.einsum("...gi,gio->...go", x, self.weight) + self.bias


class GroupedRMSNorm(nn.Module):
    """RMS norm of each band's features with a gain per band and feature: ``(..., g, d) -> (..., g, d)``."""

    def __init__(self, *, groups: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(groups, dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, x.shape[-1:]) * self.weight


class BandSplit(nn.Module):
    """Complex spectrogram -> one feature per band and frame: per band, norm and linear map of its bins (real and
    imaginary parts of every channel)."""

    def __init__(self, *, band_widths: tuple[int, ...], channels: int, dim: int) -> None:
        super().__init__()
        self.groups = _groups(band_widths)
        self.norms = nn.ModuleList(GroupedRMSNorm(groups=g, dim=w * channels * 2) for w, g in self.groups)
        self.projs = nn.ModuleList(GroupedLinear(groups=g, d_in=w * channels * 2, d_out=dim) for w, g in self.groups)

    def forward(self, spec: Tensor) -> Tensor:
        """``(b, c, f, t, r)``: the spectrogram's real and imaginary parts -> ``(b, t, k, d)`` for k bands."""
        # b: batch, c: channels, f: freq, t: frames, r: real / imaginary, g: bands of a group, w: bins of a band
        x = rearrange(spec, "b c f t r -> b t f (c r)")
        parts = x.split([w * g for w, g in self.groups], dim=2)
        out = [proj(norm(rearrange(part, "b t (g w) cr -> b t g (w cr)", g=g)))
               for (w, g), part, norm, proj in zip(self.groups, parts, self.norms, self.projs)]
        return torch.cat(out, dim=2)


class MaskEstimator(nn.Module):
    """Features -> complex mask: per band an MLP (norm, linear, tanh, linear, GLU) gives the real and imaginary
    mask of each of its bins and channels."""

    def __init__(self, *, band_widths: tuple[int, ...], channels: int, dim: int, mult: int) -> None:
        super().__init__()
        self.channels = channels
        self.groups = _groups(band_widths)
        self.norms = nn.ModuleList(GroupedRMSNorm(groups=g, dim=dim) for _, g in self.groups)
        self.hidden = nn.ModuleList(GroupedLinear(groups=g, d_in=dim, d_out=dim * mult) for _, g in self.groups)
        self.out = nn.ModuleList(GroupedLinear(groups=g, d_in=dim * mult, d_out=w * channels * 2 * 2)
                                 for w, g in self.groups)

    def forward(self, x: Tensor) -> Tensor:
        """``(q, t, k, d)`` -> the mask's real and imaginary parts ``(q, c, f, t, r)``."""
        # q: conditions, t: frames, k: bands, g: bands of a group, w: bins of a band, c: channels, r: re / im
        feats = x.split([g for _, g in self.groups], dim=2)
        parts = []
        for (w, g), feat, norm, hidden, out in zip(self.groups, feats, self.norms, self.hidden, self.out):
            y = F.glu(out(torch.tanh(hidden(norm(feat)))), dim=-1)  # (q, t, g, w * c * r)
            parts.append(rearrange(y, "q t g (w c r) -> q t (g w) c r", c=self.channels, r=2))  # a view
        # one copy (the cat) and a view: the complex product reads the mask in this layout, no second copy
        return rearrange(torch.cat(parts, dim=2), "q t f c r -> q c f t r")


def _film(x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """``x (q, t, k, d)``, ``gamma, beta (q, d)`` -> ``gamma * x + beta`` broadcast over frames and bands."""
    return torch.addcmul(beta[:, None, None], gamma[:, None, None], x)


class BandSplitRoFormer(SeparationModel):
    """Band split, ``depth`` axial transformer blocks, per-band complex mask estimators; FiLM-conditioned by ``z``
    unless dedicated (see the module docstring)."""

    config_class = BandSplitConfig
    complex_mask = True

    # measured (benchmarks/bench_train.py, small preset, batch 16, 2 threads, AMD EPYC with AVX512-BF16, quiet,
    # 2026-12-04): eager fp32 1670 ms a step, bf16 2601 ms (its elementwise work converts to and from bf16);
    # compiled fp32 1469 ms (1.14x) after a first compile of 117 s: compile only for long runs (--compile on)
    bf16_pays = False
    compile_pays = False

    def __init__(self, config: BandSplitConfig) -> None:
        super().__init__(config)
        cfg = config
        self.band_split = BandSplit(band_widths=cfg.band_widths, channels=cfg.audio_channels, dim=cfg.dim)
        self.blocks = nn.ModuleList(AxialBlock(dim=cfg.dim, heads=cfg.heads, ff_mult=cfg.ff_mult, dropout=cfg.dropout)
                                    for _ in range(cfg.depth))
        self.mask_estimator = MaskEstimator(band_widths=cfg.band_widths, channels=cfg.audio_channels, dim=cfg.dim,
                                            mult=cfg.mask_mult)
        self.film_blocks = cfg.conditioned and cfg.film_where in ("blocks", "both")
        self.film_once = cfg.conditioned and cfg.film_where in ("once", "both")
        n_film = (cfg.depth if self.film_blocks else 0) + (1 if self.film_once else 0)
        self.conditioner = (Conditioner(n_stems=len(cfg.stems), block_channels=[cfg.dim] * n_film, kind="complex",
                                        z_input="onehot", hidden=cfg.film_hidden) if cfg.conditioned else None)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> BandSplitRoFormer:
        """Build from a named preset (``tiny``, ``small``, ``full``) with field overrides."""
        if name not in BANDSPLIT_PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(BANDSPLIT_PRESETS)}")
        unknown = sorted(set(overrides) - BandSplitConfig.field_names())
        if unknown:
            raise ValueError(f"unknown BandSplitConfig field(s) {unknown}; known: {sorted(BandSplitConfig.field_names())}")
        return cls(BandSplitConfig(**{**BANDSPLIT_PRESETS[name], **overrides}))

    @property
    def context_frames(self) -> int:
        return self.config.context_frames

    def forward(self, spec: Tensor, z: Tensor | None = None) -> Tensor:
        """Complex ``spec (b, c, f, t)``, ``z (q, n_stems)`` or None -> complex estimates ``(q, c, f, t)``."""
        # q: conditions (batch), c: channels, f: freq, t: frames, r: real / imaginary
        cfg = self.config
        b, c, f, _ = spec.shape
        if c != cfg.audio_channels or f != cfg.n_fft // 2 + 1:
            raise ValueError(f"spec must be (batch, {cfg.audio_channels}, {cfg.n_fft // 2 + 1}, frames), "
                             f"got {tuple(spec.shape)}")
        self.check_z(z, b)
        mask = self.masks(torch.view_as_real(spec), z)  # (q, c, f, t, r)
        return torch.view_as_complex(mask.float()) * spec  # the mask's strides are even: a view, no copy

    def compile_network(self) -> None:
        self.masks = torch.compile(self.masks)  # type: ignore[method-assign]  # an instance attribute

    def masks(self, spec: Tensor, z: Tensor | None = None) -> Tensor:
        """The real-valued network: the mixture's real and imaginary parts ``(b, c, f, t, r)`` and ``z (q, n_stems)``
        (None: dedicated) -> the complex mask's real and imaginary parts ``(q, c, f, t, r)``."""
        # q: conditions (batch), c: channels, f: freq, t: frames, r: real / imaginary, k: bands, d: features
        q = z.shape[0] if z is not None else spec.shape[0]
        film = self.conditioner(z) if self.conditioner is not None else []
        x = self.band_split(spec)  # (b, t, k, d)
        if self.film_blocks and x.shape[0] != q:
            x = x.expand(q, -1, -1, -1)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.film_blocks:
                x = _film(x, *film[i])
        if self.film_once:
            x = _film(x.expand(q, -1, -1, -1) if x.shape[0] != q else x, *film[-1])
        return self.mask_estimator(x)  # (q, c, f, t, r)
