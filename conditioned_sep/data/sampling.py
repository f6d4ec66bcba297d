"""Training examples: random excerpts, augmentation, remixing across songs, and the condition ``z``.

Each example is a pure function of ``(seed, index)``: the same index always gives the same example, so a
resumed or distributed run draws exactly the examples an uninterrupted one would, with no sampler state.
:class:`StepSampler` says which indices optimizer step ``s`` of rank ``r`` takes, so a ``DataLoader`` with
worker processes feeds training with the same examples as the main thread would.

Recipe (Open-Unmix / Demucs for the augmentation, Conditioned-U-Net for the conditions):
  - each stem comes from the anchor song, or (``remix_prob``) from another random song at its own offset;
  - a random gain per stem and a random left/right swap per stem; the mixture is the sum of the stems;
  - in ``silent_target_rate`` of the examples with a non-zero condition the target stems are silenced (left
    out of the mixture, which is then the sum of the other stems, and the target is silence); in the others a
    silent target excerpt is redrawn (up to ``max_redraws`` times), so their targets sound;
  - conditioned models draw ``z``: one-hot (one stem), a subset of stems (target = their sum), all-zero
    (target = silence); and in ``scale_prob`` of them the target and its ``z`` are scaled by ``p ~ U[0, 1]``.
    ``z`` names only stems that some training track holds (a warning names the others).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..audio import SILENCE_DB, is_silent
from ..stems import STEMS, UnknownStemError, check_vocabulary
from .folder import DatasetError, fit_channels
from .stemcache import StemCache
from .vocabulary import with_vocabulary


@dataclass
class SamplingConfig:
    """How examples are drawn. ``segment`` in samples; probabilities in [0, 1]; gains linear.

    ``stems`` is the model's vocabulary (:func:`~conditioned_sep.stems.check_vocabulary`); with parts of other in
    it, ``other`` is the remainder (:mod:`conditioned_sep.data.vocabulary`).
    ``target=None`` draws conditions for a conditioned model; a stem name draws examples for a dedicated one.
    The condition probabilities (one-hot, subset, zero) are normalised to sum to one.
    ``stem_weights``: relative weights of the stems a one-hot ``z`` names (a stem left out weighs 1; empty: every
    stem alike, drawn exactly as before the option existed), e.g. ``{"bass": 2}`` asks for bass twice as often.
    ``silent_target_rate``: share of the examples with a non-zero ``z`` whose target is silence (its stems
    zeroed, so the mixture holds only the other stems); the all-zero condition (``zero_prob``) adds its own
    silent targets on top. A target excerpt quieter than ``silence_db`` (dB re full scale, before the gain;
    the project's :data:`~conditioned_sep.audio.SILENCE_DB`) counts as silent.
    """

    segment: int
    stems: tuple[str, ...] = STEMS
    target: str | None = None
    remix_prob: float = 0.5
    gain_range: tuple[float, float] = (0.25, 1.25)
    channel_swap_prob: float = 0.5
    silent_target_rate: float = 0.05
    silence_db: float = SILENCE_DB
    max_redraws: int = 20
    onehot_prob: float = 0.75
    subset_prob: float = 0.2
    zero_prob: float = 0.05
    scale_prob: float = 0.2
    stem_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stems = check_vocabulary(self.stems)
        if self.segment <= 0:
            raise ValueError(f"segment must be a positive number of samples, got {self.segment}")
        if self.target is not None and self.target not in self.stems:
            raise UnknownStemError(f"target stem {self.target!r} is not one of {self.stems}")
        if min(self.onehot_prob, self.subset_prob, self.zero_prob) < 0 or \
                self.onehot_prob + self.subset_prob + self.zero_prob <= 0:
            raise ValueError("condition probabilities must be >= 0 with a positive sum")
        if not 0 <= self.silent_target_rate <= 1:
            raise ValueError(f"silent_target_rate must be in [0, 1], got {self.silent_target_rate}")
        self.stem_weights = {str(k): float(v) for k, v in dict(self.stem_weights).items()}
        unknown = [s for s in self.stem_weights if s not in self.stems]
        if unknown:
            raise UnknownStemError(f"stem weight(s) for {', '.join(map(repr, unknown))}: not in the vocabulary "
                                   f"{self.stems}")
        if any(not np.isfinite(w) or w < 0 for w in self.stem_weights.values()) or \
                (self.stem_weights and not any(self.stem_weight(s) > 0 for s in self.stems)):
            raise ValueError(f"stem weights must be finite and >= 0 with one stem above 0, got {self.stem_weights}")

    def stem_weight(self, stem: str) -> float:
        """The relative weight of ``stem`` in one-hot draws (1 unless ``stem_weights`` says otherwise)."""
        return self.stem_weights.get(stem, 1.0)


class StemBank:
    """Excerpts of the stems of a list of tracks: with ``cache_root``, from int16 memory maps decoded once under it
    (:class:`~conditioned_sep.data.stemcache.StemCache`: what training uses); else from memory when the tracks fit
    in ``preload_bytes`` (loaded once, float32), else read from disk at an offset on every call.

    Tracks are :class:`~conditioned_sep.data.folder.Track`-like: ``name``, ``num_samples``, ``channels``,
    ``load(stems=, start=, length=)``; they are seen through the vocabulary ``stems``
    (:func:`~conditioned_sep.data.vocabulary.with_vocabulary`), which raises :class:`DatasetError` for a track that
    lacks a part of other the vocabulary lists.
    """

    def __init__(self, tracks: Sequence, *, stems: Sequence[str] = STEMS, preload_bytes: float = 2e9,
                 channels: int = 2, cache_root: Path | None = None, progress: bool = False) -> None:
        if not tracks:
            raise DatasetError("no track to draw training examples from")
        self.stems = check_vocabulary(stems)
        self.tracks = [with_vocabulary(t, self.stems) for t in tracks]
        self.channels = channels
        self.cache: StemCache | None = None
        self.audio: list[np.ndarray] | None = None
        if cache_root is not None:
            self.cache = StemCache(self.tracks, stems=self.stems, channels=channels, root=cache_root,
                                   progress=progress)
            self.has_stem = self.cache.present
            return
        total = sum(t.num_samples for t in self.tracks) * len(self.stems) * channels * 4
        if total <= preload_bytes:
            self.audio = [fit_channels(t.load(stems=self.stems), self.channels) for t in self.tracks]
        # which tracks hold which stem (a silent file counts as absent); lets a dedicated target be required
        self.has_stem = np.array([[self._present(i, s) for s in range(len(self.stems))]
                                  for i in range(len(self.tracks))], dtype=bool)

    def _present(self, track: int, stem: int) -> bool:
        if self.audio is not None:
            return bool(np.abs(self.audio[track][stem]).max() > 0)
        return self.tracks[track].has(self.stems[stem])

    def __len__(self) -> int:
        return len(self.tracks)

    def num_samples(self, track: int) -> int:
        return self.tracks[track].num_samples

    def excerpt(self, track: int, stem: int, start: int, length: int) -> np.ndarray:
        """``(channels, length)`` float32, zero-padded past the end of the track (a fresh array)."""
        if self.cache is not None:
            return self.cache.excerpt(track, stem, start, length)
        if self.audio is not None:
            data = self.audio[track][stem, :, start: start + length]
            out = np.zeros((self.channels, length), dtype=np.float32)
            out[:, : data.shape[1]] = data
            return out
        return fit_channels(self.tracks[track].load(stems=[self.stems[stem]], start=start, length=length),
                            self.channels)[0]


BATCH_KEYS = ("mixture", "target", "z")
"""What training batches hold: stacking the four ``sources`` too would cost more than drawing the examples."""


def collate(items: Sequence[dict[str, torch.Tensor]], *, keys: Sequence[str] = BATCH_KEYS) -> dict[str, torch.Tensor]:
    """Examples -> ``{key: (batch, ...)}`` for ``keys`` only (a ``DataLoader``'s ``collate_fn``)."""
    return {key: torch.stack([it[key] for it in items]) for key in keys}


class TrainingExamples(Dataset):
    """``dataset[i]`` -> dict of float32 tensors: ``mixture (c, segment)``, ``target (c, segment)``,
    ``z (n_stems,)`` (for a dedicated model the one-hot of its target, unused by it) and ``sources
    (n_stems, c, segment)`` (the augmented stems; ``mixture`` is their sum).

    Any index ``>= 0`` is valid (``len`` is the nominal epoch size); example ``i`` depends only on
    ``(seed, i)``. A conditioned model's ``z`` never names a stem that no training track holds (its target
    would always be silence, teaching the model that the stem is silent); such stems are named in a warning.
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
        held = bank.has_stem.any(0)
        self._conditionable = np.flatnonzero(held)  # the stems z may name
        missing = [s for s, h in zip(config.stems, held) if not h]
        if config.target is None and missing:
            warnings.warn(f"no training track holds the stem(s) {', '.join(map(repr, missing))}: the conditioned "
                          f"model is never asked for them (z never names them), so its output for them is "
                          f"untrained; add tracks with those stems to train them", UserWarning, stacklevel=2)
        weights = np.array([config.stem_weight(config.stems[k]) for k in self._conditionable])
        if config.target is None and config.stem_weights and not weights.sum() > 0:
            raise DatasetError(f"every stem the training tracks hold weighs 0 in the stem weights "
                               f"{config.stem_weights}: give one of {[config.stems[k] for k in self._conditionable]} "
                               f"a weight above 0")
        self._onehot_p = weights / weights.sum() if config.stem_weights and weights.sum() > 0 else None

    def __len__(self) -> int:
        return self.epoch_size

    def draw_condition(self, rng: np.random.Generator) -> np.ndarray:
        """``z`` float32 ``(n_stems,)`` before scaling: one-hot, a subset (2..n ones) or all-zero."""
        cfg = self.config
        z = np.zeros(len(cfg.stems), dtype=np.float32)
        if cfg.target is not None:
            z[cfg.stems.index(cfg.target)] = 1
            return z
        stems = self._conditionable  # all stems when the data holds every one: then the draws are unchanged
        n = len(stems)
        p = np.array([cfg.onehot_prob, cfg.subset_prob, cfg.zero_prob])
        kind = rng.choice(3, p=p / p.sum())
        if kind == 0 and n > 0 and self._onehot_p is not None:
            z[stems[rng.choice(n, p=self._onehot_p)]] = 1
        elif kind == 0 and n > 0:
            z[stems[rng.integers(n)]] = 1
        elif kind == 1 and n > 1:
            z[stems[rng.choice(n, size=int(rng.integers(2, n + 1)), replace=False)]] = 1
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
                if not (is_target and is_silent(x, threshold_db=cfg.silence_db)):
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

    def batch(self, indices: Sequence[int], *, keys: Sequence[str] = BATCH_KEYS) -> dict[str, torch.Tensor]:
        """The examples at ``indices`` stacked along a new first (batch) dimension, as :func:`collate` does."""
        return collate([self[i] for i in indices], keys=keys)


class StepSampler(Sampler[list[int]]):
    """The example indices of optimizer steps ``start .. stop - 1`` on ``rank`` of ``world``, one list per step.

    Step ``s`` of rank ``r`` takes the ``per_step`` consecutive indices from ``(s * world + r) * per_step``
    (``per_step`` = batch size x accumulated micro-batches of one process): a pure function of ``(step, rank)``,
    so a resumed run (``start`` = its step) or a run with another number of loader workers draws the examples an
    uninterrupted one would. Use as a ``DataLoader``'s ``batch_sampler``.
    """

    def __init__(self, *, per_step: int, start: int, stop: int, rank: int = 0, world: int = 1) -> None:
        if per_step <= 0 or world <= 0 or not 0 <= rank < world or not 0 <= start:
            raise ValueError(f"need per_step > 0, 0 <= rank < world and start >= 0; got per_step={per_step}, "
                             f"rank={rank}, world={world}, start={start}")
        self.per_step, self.start, self.stop, self.rank, self.world = per_step, start, stop, rank, world

    def indices(self, step: int) -> list[int]:
        """The example indices of optimizer step ``step`` on this sampler's rank."""
        first = (step * self.world + self.rank) * self.per_step
        return list(range(first, first + self.per_step))

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def validation_excerpts(tracks: Sequence, *, stems: Sequence[str] = STEMS, seconds: float,
                        channels: int = 2) -> list[tuple[str, np.ndarray]]:
    """Fixed excerpts for validation: the middle ``seconds`` of every track, ``(name, (n_stems, c, samples))``, its
    stems those of the vocabulary ``stems`` (:func:`~conditioned_sep.data.vocabulary.with_vocabulary`)."""
    out = []
    for t in (with_vocabulary(t, stems) for t in tracks):
        length = min(t.num_samples, int(seconds * t.sample_rate))
        start = (t.num_samples - length) // 2
        out.append((t.name, fit_channels(t.load(stems=stems, start=start, length=length), channels)))
    return out
