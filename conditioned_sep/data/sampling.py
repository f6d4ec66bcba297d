"""Training examples: random excerpts, augmentation, remixing across songs, and the condition ``z``.

Each example is a pure function of ``(seed, index)``: the same index always gives the same example, so a
resumed or distributed run draws exactly the examples an uninterrupted one would, with no sampler state.

Recipe (Open-Unmix / Demucs for the augmentation, Conditioned-U-Net for the conditions):
  - each stem comes from the anchor song, or (``remix_prob``) from another random song at its own offset;
  - a random gain per stem and a random left/right swap per stem; the mixture is the sum of the stems;
  - in ``silent_target_rate`` of the examples with a non-zero condition the target stems are silenced (left
    out of the mixture, which is then the sum of the other stems, and the target is silence); in the others a
    silent target excerpt is redrawn (up to ``max_redraws`` times), so their targets sound;
  - conditioned models draw ``z``: one-hot (one stem), a subset of stems (target = their sum), all-zero
    (target = silence); and in ``scale_prob`` of them the target and its ``z`` are scaled by ``p ~ U[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ..stems import STEMS, UnknownStemError
from .folder import DatasetError, fit_channels


@dataclass
class SamplingConfig:
    """How examples are drawn. ``segment`` in samples; probabilities in [0, 1]; gains linear.

    ``target=None`` draws conditions for a conditioned model; a stem name draws examples for a dedicated one.
    The condition probabilities (one-hot, subset, zero) are normalised to sum to one.
    ``silent_target_rate``: share of the examples with a non-zero ``z`` whose target is silence (its stems
    zeroed, so the mixture holds only the other stems); the all-zero condition (``zero_prob``) adds its own
    silent targets on top. A target excerpt quieter than ``silence_db`` (dB re full scale, before the gain)
    counts as silent.
    """

    segment: int
    stems: tuple[str, ...] = STEMS
    target: str | None = None
    remix_prob: float = 0.5
    gain_range: tuple[float, float] = (0.25, 1.25)
    channel_swap_prob: float = 0.5
    silent_target_rate: float = 0.05
    silence_db: float = -50.0
    max_redraws: int = 20
    onehot_prob: float = 0.75
    subset_prob: float = 0.2
    zero_prob: float = 0.05
    scale_prob: float = 0.2

    def __post_init__(self) -> None:
        self.stems = tuple(self.stems)
        if self.segment <= 0:
            raise ValueError(f"segment must be a positive number of samples, got {self.segment}")
        if self.target is not None and self.target not in self.stems:
            raise UnknownStemError(f"target stem {self.target!r} is not one of {self.stems}")
        if min(self.onehot_prob, self.subset_prob, self.zero_prob) < 0 or \
                self.onehot_prob + self.subset_prob + self.zero_prob <= 0:
            raise ValueError("condition probabilities must be >= 0 with a positive sum")
        if not 0 <= self.silent_target_rate <= 1:
            raise ValueError(f"silent_target_rate must be in [0, 1], got {self.silent_target_rate}")


class StemBank:
    """Excerpts of the stems of a list of tracks: from memory when the tracks fit in ``preload_bytes``
    (loaded once, float32), else read from disk at an offset on every call.

    Tracks are :class:`~conditioned_sep.data.folder.Track`-like: ``name``, ``num_samples``, ``channels``,
    ``load(stems=, start=, length=)``.
    """

    def __init__(self, tracks: Sequence, *, stems: Sequence[str] = STEMS, preload_bytes: float = 2e9,
                 channels: int = 2) -> None:
        if not tracks:
            raise DatasetError("no track to draw training examples from")
        self.tracks = list(tracks)
        self.stems = tuple(stems)
        self.channels = channels
        total = sum(t.num_samples for t in self.tracks) * len(self.stems) * channels * 4
        self.audio: list[np.ndarray] | None = None
        if total <= preload_bytes:
            self.audio = [fit_channels(t.load(stems=self.stems), self.channels) for t in self.tracks]
        # which tracks hold which stem (a silent file counts as absent); lets a dedicated target be required
        self.has_stem = np.array([[self._present(i, s) for s in range(len(self.stems))]
                                  for i in range(len(self.tracks))], dtype=bool)

    def _present(self, track: int, stem: int) -> bool:
        if self.audio is not None:
            return bool(np.abs(self.audio[track][stem]).max() > 0)
        t = self.tracks[track]
        return t.has(self.stems[stem]) if hasattr(t, "has") else True

    def __len__(self) -> int:
        return len(self.tracks)

    def num_samples(self, track: int) -> int:
        return self.tracks[track].num_samples

    def excerpt(self, track: int, stem: int, start: int, length: int) -> np.ndarray:
        """``(channels, length)`` float32, zero-padded past the end of the track (a fresh array)."""
        if self.audio is not None:
            data = self.audio[track][stem, :, start: start + length]
            out = np.zeros((self.channels, length), dtype=np.float32)
            out[:, : data.shape[1]] = data
            return out
        return fit_channels(self.tracks[track].load(stems=[self.stems[stem]], start=start, length=length),
                            self.channels)[0]


def _silent(x: np.ndarray, threshold_db: float) -> bool:
    return float(np.mean(x.astype(np.float64) ** 2)) < 10 ** (threshold_db / 10)


class TrainingExamples(Dataset):
    """``dataset[i]`` -> dict of float32 tensors: ``mixture (c, segment)``, ``target (c, segment)``,
    ``z (n_stems,)`` (for a dedicated model the one-hot of its target, unused by it) and ``sources
    (n_stems, c, segment)`` (the augmented stems; ``mixture`` is their sum).

    Any index ``>= 0`` is valid (``len`` is the nominal epoch size); example ``i`` depends only on
    ``(seed, i)``.
    """

    def __init__(self, bank: StemBank, config: SamplingConfig, *, seed: int = 0, epoch_size: int = 1000) -> None:
        if tuple(bank.stems) != tuple(config.stems):
            raise ValueError(f"bank stems {bank.stems} differ from sampling stems {config.stems}")
        self.bank, self.config, self.seed, self.epoch_size = bank, config, seed, epoch_size
        if config.target is not None:
            k = config.stems.index(config.target)
            if not bank.has_stem[:, k].any():
                raise DatasetError(f"no training track holds the stem {config.target!r}: a dedicated "
                                   f"{config.target} model cannot be trained on this data")
            self._target_tracks = np.flatnonzero(bank.has_stem[:, k])
        self._tracks_with = [np.flatnonzero(bank.has_stem[:, k]) for k in range(len(config.stems))]

    def __len__(self) -> int:
        return self.epoch_size

    def draw_condition(self, rng: np.random.Generator) -> np.ndarray:
        """``z`` float32 ``(n_stems,)`` before scaling: one-hot, a subset (2..n ones) or all-zero."""
        cfg, n = self.config, len(self.config.stems)
        z = np.zeros(n, dtype=np.float32)
        if cfg.target is not None:
            z[cfg.stems.index(cfg.target)] = 1
            return z
        p = np.array([cfg.onehot_prob, cfg.subset_prob, cfg.zero_prob])
        kind = rng.choice(3, p=p / p.sum())
        if kind == 0:
            z[rng.integers(n)] = 1
        elif kind == 1 and n > 1:
            z[rng.choice(n, size=int(rng.integers(2, n + 1)), replace=False)] = 1
        return z

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index < 0:
            raise IndexError(f"example index must be >= 0, got {index}")
        cfg, bank = self.config, self.bank
        rng = np.random.default_rng([self.seed, int(index)])
        z = self.draw_condition(rng)
        seg, n_stems = cfg.segment, len(cfg.stems)
        anchor = int(rng.integers(len(bank)))
        if cfg.target is not None and anchor not in self._target_tracks:
            anchor = int(rng.choice(self._target_tracks))
        silent_target = bool(z.any()) and rng.random() < cfg.silent_target_rate
        sources = np.zeros((n_stems, bank.channels, seg), dtype=np.float32)
        for k in range(n_stems):
            is_target = z[k] > 0
            if is_target and silent_target:
                continue  # a silent target: this stem stays out of the mixture
            for attempt in range(cfg.max_redraws if is_target else 1):
                track = anchor if (attempt == 0 and rng.random() >= cfg.remix_prob) else int(rng.integers(len(bank)))
                if is_target and len(self._tracks_with[k]) and track not in self._tracks_with[k]:
                    track = int(rng.choice(self._tracks_with[k]))
                start = int(rng.integers(0, max(1, bank.num_samples(track) - seg + 1)))
                x = bank.excerpt(track, k, start, seg)
                if not (is_target and _silent(x, cfg.silence_db)):
                    break
            gain = rng.uniform(*cfg.gain_range)
            if rng.random() < cfg.channel_swap_prob:
                x = x[::-1]
            sources[k] = x * gain
        scale = float(rng.uniform()) if (z.any() and rng.random() < cfg.scale_prob) else 1.0
        z = z * scale
        mixture = sources.sum(0)
        target = np.einsum("s,sct->ct", z, sources).astype(np.float32)
        return {"mixture": torch.from_numpy(mixture), "target": torch.from_numpy(target),
                "z": torch.from_numpy(z.astype(np.float32)), "sources": torch.from_numpy(sources)}

    def batch(self, indices: Sequence[int], *, keys: Sequence[str] = ("mixture", "target", "z")
              ) -> dict[str, torch.Tensor]:
        """The examples at ``indices`` stacked along a new first (batch) dimension (only ``keys``: stacking the
        four ``sources`` costs more than drawing the examples)."""
        items = [self[i] for i in indices]
        return {key: torch.stack([it[key] for it in items]) for key in keys}


def validation_excerpts(tracks: Sequence, *, stems: Sequence[str] = STEMS, seconds: float = 10.0,
                        channels: int = 2) -> list[tuple[str, np.ndarray]]:
    """Fixed excerpts for validation: the middle ``seconds`` of every track, ``(name, (n_stems, c, samples))``."""
    out = []
    for t in tracks:
        length = min(t.num_samples, int(seconds * t.sample_rate))
        start = (t.num_samples - length) // 2
        out.append((t.name, fit_channels(t.load(stems=stems, start=start, length=length), channels)))
    return out
