"""The Conditioned-U-Net: a spectrogram U-Net whose blocks are FiLM-modulated by a condition vector ``z``.

The same backbone with ``conditioned=False`` (and a ``target`` stem) is the dedicated baseline: one model per
stem, identical in everything but the conditioner, so the comparison is fair by construction.

Frequency range: the network sees only the lowest ``n_bins`` bins (log-compressed magnitude). Above them the
mask is the mean mask of the top eighth of the modelled bins, frame by frame: high partials follow the band
just below (cymbals stay drums, sibilants stay vocals) at no compute cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn

from ..film import FILM_KINDS, Z_INPUTS, Conditioner, film
from .base import SeparationConfig, SeparationModel

FILM_PLACES = ("encoder", "decoder", "both")

FilmParams = tuple[Tensor, Tensor]
"""``(gamma, beta)`` of one block, each ``(b, channels)`` or ``(b, 1)``."""


@dataclass
class UNetConfig(SeparationConfig):
    """Everything that defines a U-Net; stored as a plain dict in checkpoints. ``ModelConfig`` is this class.

    Units as in :class:`SeparationConfig`; ``n_bins`` in STFT bins (the lowest ones, a multiple of
    ``2 ** len(channels)``).

    FiLM defaults (``film="complex"``, ``film_where="decoder"``, ``z_input="onehot"``): decoder-side
    conditioning is what LaSAFT's authors found consistently better, and it lets one encoder pass (and the skip
    halves of the decoder convolutions) serve every requested stem. Measured here (small preset, 2000 steps,
    synthetic test split; README "Model"): complex one-hot FiLM beats simple or embedded z by 0.7-1.9 dB, and
    decoder, encoder and both are within 0.4 dB on single stems, but encoder-only fails the accompaniment sum.
    """

    arch: str = field(default="unet", init=False)
    n_bins: int = 512
    channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    kernel_size: int = 5
    dropout: float = 0.5
    dropout_blocks: int = 3
    leaky_slope: float = 0.2
    film: str = "complex"
    film_where: str = "decoder"
    z_input: str = "onehot"
    film_hidden: tuple[int, ...] = (16, 64, 256)
    embedding_dim: int = 16
    film_dropout: float = 0.0

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.film_hidden = tuple(int(h) for h in self.film_hidden)
        super().__post_init__()

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.film not in FILM_KINDS:
            problems.append(f"film must be one of {FILM_KINDS}, got {self.film!r}")
        if self.film_where not in FILM_PLACES:
            problems.append(f"film_where must be one of {FILM_PLACES}, got {self.film_where!r}")
        if self.z_input not in Z_INPUTS:
            problems.append(f"z_input must be one of {Z_INPUTS}, got {self.z_input!r}")
        if not self.channels:
            problems.append("channels must name at least one block")
        if self.kernel_size % 2 == 0:
            problems.append(f"kernel_size must be odd, got {self.kernel_size}")
        n_freq = self.n_fft // 2 + 1
        if not 0 < self.n_bins <= n_freq or self.n_bins % self.multiple:
            problems.append(
                f"n_bins must be in 1..{n_freq} (n_fft // 2 + 1) and a multiple of {self.multiple} "
                f"(2 ** number of blocks), got {self.n_bins}"
            )
        return problems

    @property
    def depth(self) -> int:
        return len(self.channels)

    @property
    def multiple(self) -> int:
        """Frequency and frame counts inside the U-Net are multiples of this (each block halves both)."""
        return 2 ** len(self.channels)


ModelConfig = UNetConfig
"""The name users know: the U-Net's config (the first architecture)."""

PRESETS: dict[str, dict[str, Any]] = {
    # tests: forward + backward in milliseconds
    "tiny": dict(n_fft=256, hop_length=128, n_bins=64, channels=(4, 8, 16), film_hidden=(16, 32),
                 segment_frames=32),
    # trains on 2 CPU cores in minutes: 256 of 513 bins (0-11 kHz), 5 blocks
    "small": dict(n_fft=1024, hop_length=256, n_bins=256, channels=(8, 16, 32, 64, 128),
                  film_hidden=(16, 64, 128), segment_frames=128),
    # the C-U-Net sizes (16..512, 6 blocks, 5x5 stride 2); 512 of 1025 bins (0-11 kHz), hop 512
    "full": dict(n_fft=2048, hop_length=512, n_bins=512, channels=(16, 32, 64, 128, 256, 512),
                 film_hidden=(16, 64, 256), segment_frames=128),
}


class SkipConvTranspose2d(nn.ConvTranspose2d):
    """A stride-2 transposed convolution of ``cat([x, skip], channels)``. A shared-encoder skip of batch 1 goes
    through its half of the (linear) convolution once and is broadcast-added, instead of being copied q times."""

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """``x (q, cx, f, t)``, ``skip (q or 1, cs, f, t)`` or None -> ``(q, out, 2 f, 2 t)``."""
        # q: batch (conditions), c: channels, f: freq, t: frames
        if skip is None:
            return super().forward(x)
        if skip.shape[0] == x.shape[0]:
            return super().forward(torch.cat([x, skip], dim=1))
        cx = x.shape[1]
        own = F.conv_transpose2d(x, self.weight[:cx], self.bias, stride=self.stride, padding=self.padding,
                                 output_padding=self.output_padding)
        shared = F.conv_transpose2d(skip, self.weight[cx:], None, stride=self.stride, padding=self.padding,
                                    output_padding=self.output_padding)
        return own.add_(shared)


class DownBlock(nn.Module):
    """Encoder block: strided ``k x k`` conv (halves freq and frames), batch norm, FiLM, leaky ReLU."""

    def __init__(self, *, c_in: int, c_out: int, kernel_size: int, leaky_slope: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride=2, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(c_out)
        self.leaky_slope = leaky_slope

    def forward(self, x: Tensor, film_params: FilmParams | None = None) -> Tensor:
        """``x (b, c_in, f, t)`` -> ``(b, c_out, f / 2, t / 2)``; ``film_params`` as :data:`FilmParams` or None."""
        # b: batch, c: channels, f: freq, t: frames
        x = self.norm(self.conv(x))
        if film_params is not None:
            x = film(x, *film_params)
        return F.leaky_relu(x, self.leaky_slope)


class UpBlock(nn.Module):
    """Decoder block: transposed conv of ``[x, skip]`` (doubles freq and frames), batch norm, FiLM, ReLU,
    dropout (``dropout=0`` for none)."""

    def __init__(self, *, c_in: int, c_out: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.conv = SkipConvTranspose2d(c_in, c_out, kernel_size, stride=2, padding=kernel_size // 2,
                                        output_padding=1)
        self.norm = nn.BatchNorm2d(c_out)
        # Identity rather than Dropout(0): no random draws, so seeded training runs keep their random stream
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, skip: Tensor | None = None, film_params: FilmParams | None = None) -> Tensor:
        """``x (q, cx, f, t)``, ``skip (q or 1, cs, f, t)`` or None -> ``(q, c_out, 2 f, 2 t)``."""
        # q: batch (conditions), c: channels, f: freq, t: frames
        x = self.norm(self.conv(x, skip))
        if film_params is not None:
            x = film(x, *film_params)
        return self.dropout(F.relu(x))


class ConditionedUNet(SeparationModel):
    """U-Net on magnitude spectrograms -> soft mask in [0, 1]; FiLM-conditioned by ``z`` unless dedicated.

    ``encoder``: :class:`DownBlock` per entry of ``channels``. ``decoder``: :class:`UpBlock` per block but the
    last, with dropout on the first ``dropout_blocks``, each taking the mirrored encoder block's output as skip;
    ``output``: the last transposed conv (to audio channels) before the sigmoid.
    """

    config_class = UNetConfig

    # measured (benchmarks/bench_train.py, small preset, batch 16, 2 threads, AMD EPYC with AVX512-BF16, quiet,
    # 2026-12-04): eager fp32 239 ms a step, bf16 171 ms (1.40x); compiled fp32 203 ms but compiled bf16 229 ms,
    # and the first compile costs 16-18 s: bf16 eager is the fast path
    bf16_pays = True
    compile_pays = False

    def __init__(self, config: UNetConfig) -> None:
        super().__init__(config)
        cfg = config
        # per-bin affine on the log magnitude: a learned input normalisation
        self.input_scale = nn.Parameter(torch.ones(cfg.n_bins))
        self.input_shift = nn.Parameter(torch.zeros(cfg.n_bins))
        ch = cfg.channels
        self.encoder = nn.ModuleList(
            DownBlock(c_in=c_in, c_out=c_out, kernel_size=cfg.kernel_size, leaky_slope=cfg.leaky_slope)
            for c_in, c_out in zip((cfg.audio_channels, *ch[:-1]), ch)
        )
        dec_out = ch[-2::-1]  # mirrors the encoder
        dec_in = (ch[-1], *(2 * c for c in dec_out))  # every block after the first also takes a skip
        self.decoder = nn.ModuleList(
            UpBlock(c_in=c_in, c_out=c_out, kernel_size=cfg.kernel_size,
                    dropout=cfg.dropout if i < cfg.dropout_blocks else 0.0)
            for i, (c_in, c_out) in enumerate(zip(dec_in, dec_out))
        )
        self.output = SkipConvTranspose2d(dec_in[-1], cfg.audio_channels, cfg.kernel_size, stride=2,
                                          padding=cfg.kernel_size // 2, output_padding=1)
        self.film_encoder = cfg.conditioned and cfg.film_where in ("encoder", "both")
        self.film_decoder = cfg.conditioned and cfg.film_where in ("decoder", "both")
        film_channels = (list(ch) if self.film_encoder else []) + (list(dec_out) if self.film_decoder else [])
        self.conditioner = (
            Conditioner(
                n_stems=len(cfg.stems), block_channels=film_channels, kind=cfg.film, z_input=cfg.z_input,
                hidden=cfg.film_hidden, embedding_dim=cfg.embedding_dim, dropout=cfg.film_dropout,
            )
            if cfg.conditioned
            else None
        )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ConditionedUNet:
        """Build from a named preset (``tiny``, ``small``, ``full``) with field overrides,
        e.g. ``from_preset("small", conditioned=False, target="vocals")``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        known = UNetConfig.field_names()
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown UNetConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(UNetConfig(**{**PRESETS[name], **overrides}))

    @property
    def frame_multiple(self) -> int:
        """Each block halves the frames: chunks of a multiple of ``2 ** depth`` frames starting on that grid
        see the very strided-convolution phases that whole-signal processing sees."""
        return self.config.multiple

    def _film_params(self, z: Tensor | None) -> tuple[list[FilmParams | None], list[FilmParams | None]]:
        """(encoder, decoder) FiLM parameters, one entry per block (None: that block is not conditioned)."""
        cfg = self.config
        enc: list[FilmParams | None] = [None] * cfg.depth
        dec: list[FilmParams | None] = [None] * (cfg.depth - 1)
        if self.conditioner is None:
            return enc, dec
        params = self.conditioner(z)
        if self.film_encoder:
            enc, params = params[: cfg.depth], params[cfg.depth:]
        if self.film_decoder:
            dec = params
        return enc, dec

    def band_masks(self, mag: Tensor, z: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The mask in two parts: ``(q, c, n_bins, t)`` for the modelled bins and ``(q, c, 1, t)`` for every bin
        above them (see the module docstring). Arguments as in :meth:`masks`."""
        # b: batch, q: conditions, c: audio channels (then features), f: freq, t: frames
        cfg = self.config
        b, c, f, t = mag.shape
        if c != cfg.audio_channels or f != cfg.n_fft // 2 + 1:
            raise ValueError(
                f"mag must be (batch, {cfg.audio_channels}, {cfg.n_fft // 2 + 1}, frames), got {tuple(mag.shape)}"
            )
        q = self.check_z(z, b)
        enc_film, dec_film = self._film_params(z)
        if b == 1 and q > 1 and self.film_encoder:
            mag = mag.expand(q, -1, -1, -1)
        x = torch.log1p(mag[:, :, : cfg.n_bins])  # (b, c, n_bins, t)
        x = x * self.input_scale[:, None] + self.input_shift[:, None]
        # measured on CPU: channels_last makes inference ~2x faster (oneDNN transposed convolutions) but the
        # backward pass ~2.5x slower, so the layout follows whether gradients are being recorded
        layout = torch.contiguous_format if torch.is_grad_enabled() else torch.channels_last
        x = F.pad(x, (0, (-t) % cfg.multiple)).contiguous(memory_format=layout)  # frames to the U-Net's grid
        skips = []
        for block, params in zip(self.encoder, enc_film):
            x = block(x, params)  # (b or q, channels of block i, f / 2^(i+1), t / 2^(i+1))
            skips.append(x)
        if x.shape[0] != q:  # shared encoder: broadcast its features to the q conditions
            x = x.expand(q, -1, -1, -1)
        # decoder block i (then the output) takes the mirrored encoder block's output; the first takes none,
        # as the deepest encoder output is x itself
        skips = [None, *reversed(skips[:-1])]
        for block, skip, params in zip(self.decoder, skips, dec_film):
            x = block(x, skip, params)  # (q, c, 2 f, 2 t)
        x = self.output(x, skips[-1])  # (q, c, n_bins, t padded)
        low = torch.sigmoid(x[..., :t])  # (q, c, n_bins, t)
        high = low[:, :, -max(1, cfg.n_bins // 8):].mean(2, keepdim=True)  # (q, c, 1, t)
        return low, high

    def compile_network(self) -> None:
        self.band_masks = torch.compile(self.band_masks)  # type: ignore[method-assign]  # an instance attribute

    def masks(self, mag: Tensor, z: Tensor | None = None) -> Tensor:
        """``mag (b, c, n_fft // 2 + 1, t)`` magnitude, ``z (q, n_stems)`` or None -> mask ``(q, c, f, t)`` in
        [0, 1] (q = b for a dedicated model).

        Any number of frames (padded internally to a multiple of ``config.multiple`` and cropped back).
        A ``mag`` of batch 1 with a ``z`` of batch q gives q masks; the encoder then runs once when it is
        not conditioned (``film_where="decoder"``).
        """
        # q: batch (conditions), c: audio channels, f: freq, t: frames
        low, high = self.band_masks(mag, z)
        n_high = mag.shape[2] - low.shape[2]
        if n_high == 0:
            return low
        return torch.cat([low, repeat(high, "q c 1 t -> q c f t", f=n_high)], dim=2)

    def forward(self, spec: Tensor, z: Tensor | None = None) -> Tensor:
        """The estimates ``masks(|spec|, z) * spec``: complex ``spec (b, c, f, t)`` of the mixture and
        ``z (q, n_stems)`` (or None for a dedicated model) -> complex ``(q, c, f, t)`` (``spec`` of batch 1
        serves q conditions), without materialising the full-band mask when no gradient is recorded."""
        # q: conditions, c: channels, f: freq, t: frames, r: real / imaginary part
        low, high = self.band_masks(spec.abs(), z)
        nb = low.shape[2]
        if torch.is_grad_enabled() and (low.requires_grad or spec.requires_grad):
            return torch.cat([low * spec[:, :, :nb], high * spec[:, :, nb:]], dim=2)
        # real arithmetic into one preallocated buffer: no complex promotion of the masks, no concatenation
        q, c, _, t = low.shape
        est = torch.empty(q, c, spec.shape[2], t, 2, dtype=low.dtype, device=low.device)  # (q, c, f, t, r)
        torch.mul(torch.view_as_real(spec[:, :, :nb]), low[..., None], out=est[:, :, :nb])
        torch.mul(torch.view_as_real(spec[:, :, nb:]), high[..., None], out=est[:, :, nb:])
        return torch.view_as_complex(est)
