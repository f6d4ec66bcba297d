"""Any dataset track seen through a stem vocabulary (:mod:`conditioned_sep.stems`).

A track stores some stems (its ``stems``: a folder track those it was listed with, a MUSDB18 track its four, a
MoisesDB track every fine stem). :func:`with_vocabulary` wraps it so that ``load(stems=vocabulary)`` returns the
vocabulary's entries:

- a stem of the vocabulary the track stores is read as is;
- ``other`` in a vocabulary that also lists parts of other is the *remainder*: the track's ``other`` minus the
  listed parts (rendered songs and MoisesDB store ``other`` as the exact sum of its parts), or, for a track that
  stores parts but no ``other``, the sum of its unlisted parts;
- a part the track does not store (MUSDB18 has no piano) is a :class:`DatasetError` naming the track, the stem and
  the datasets that have instrument stems.

So the vocabulary's entries sum to the track's ``vocals + drums + bass + other`` whenever the vocabulary covers
all four coarse stems.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..stems import COARSE_OF, OTHER_PARTS, check_vocabulary
from .folder import DatasetError

WAY_OUT = ("use a dataset with instrument stems: the rendered default (dataset kind 'default') or MoisesDB "
           "(kind 'moisesdb'), or drop the parts of other from the stems")
"""What a user can do about a track that lacks a part of other."""


def stored_stems(track: Any) -> tuple[str, ...]:
    """The stems ``track.load`` answers (its ``stems`` attribute; MUSDB18's four for a track without one)."""
    return tuple(getattr(track, "stems", ("vocals", "drums", "bass", "other")))


class VocabularyTrack:
    """``track`` answering the stems of ``vocabulary`` (see the module docstring); every other attribute (``name``,
    ``split``, ``sample_rate``, ``num_samples``, ``channels``, ``duration``, ...) is the track's own.

    Raises :class:`DatasetError` at construction when the track cannot give a vocabulary entry.
    """

    def __init__(self, track: Any, vocabulary: Sequence[str]) -> None:
        self.track = track
        self.vocabulary = check_vocabulary(vocabulary)
        stored = stored_stems(track)
        self._listed_parts = tuple(s for s in self.vocabulary if COARSE_OF[s] == "other" and s != "other")
        # the raw stems each vocabulary entry is built from: (added, subtracted)
        self._recipe: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        for stem in self.vocabulary:
            if stem in stored and (stem != "other" or not self._listed_parts):
                self._recipe[stem] = ((stem,), ())
            elif stem == "other" and "other" in stored:
                self._recipe[stem] = (("other",), self._listed_parts)
            elif stem == "other" and any(p in stored for p in OTHER_PARTS):
                self._recipe[stem] = (tuple(p for p in OTHER_PARTS if p in stored and p not in self._listed_parts),
                                      ())
            else:
                raise DatasetError(f"track {track.name!r} has no stem {stem!r} (it stores {', '.join(stored)}); "
                                   f"{WAY_OUT if COARSE_OF[stem] == 'other' else 'add its ' + stem + ' stem'}")

    @property
    def stems(self) -> tuple[str, ...]:
        return self.vocabulary

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "track":  # not yet set (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.track, name)

    def __repr__(self) -> str:
        return f"VocabularyTrack({self.track!r}, vocabulary={self.vocabulary})"

    def has(self, stem: str) -> bool:
        """Whether the track holds audio for ``stem`` (for the remainder ``other``: whether it has an ``other``,
        which may still be only the listed parts)."""
        if stem not in self._recipe:
            return False
        added, _ = self._recipe[stem]
        return any(self.track.has(s) for s in added) if hasattr(self.track, "has") else True

    def load(self, *, stems: Sequence[str] | None = None, sample_rate: int | None = None, start: int = 0,
             length: int | None = None) -> np.ndarray:
        """Vocabulary entries (default: all of them, in order) as float32 ``(n_stems, channels, samples)``;
        ``start`` / ``length`` in samples at the track's rate; ``sample_rate`` resamples (as the track's load)."""
        stems = self.vocabulary if stems is None else tuple(stems)
        unknown = [s for s in stems if s not in self._recipe]
        if unknown:
            raise DatasetError(f"{', '.join(map(repr, unknown))} not in this track's vocabulary {self.vocabulary}")
        raw = tuple(dict.fromkeys(s for stem in stems for group in self._recipe[stem] for s in group))
        # a remainder of nothing (every stored part listed) still needs one read for the shape
        raw = raw or stored_stems(self.track)[:1]
        audio = dict(zip(raw, self.track.load(stems=raw, sample_rate=sample_rate, start=start, length=length)))
        shape = next(iter(audio.values())).shape
        out = np.zeros((len(stems), *shape), dtype=np.float32)
        for i, stem in enumerate(stems):
            added, subtracted = self._recipe[stem]
            for s in added:
                out[i] += audio[s]
            for s in subtracted:
                out[i] -= audio[s]
        return out


def with_vocabulary(track: Any, vocabulary: Sequence[str]) -> VocabularyTrack:
    """``track`` as a :class:`VocabularyTrack` of ``vocabulary`` (a wrapped track is unwrapped first)."""
    if isinstance(track, VocabularyTrack):
        track = track.track
    return VocabularyTrack(track, vocabulary)


def load_references(track: Any, vocabulary: Sequence[str], *, sample_rate: int | None = None, start: int = 0,
                    length: int | None = None) -> np.ndarray:
    """The reference sources of ``track`` for a model of ``vocabulary``: float32 ``(n_stems, channels, samples)``
    in vocabulary order (``other`` the remainder when parts are listed). A query's reference is the sum of the
    rows its :class:`~conditioned_sep.stems.StemQuery` names."""
    return with_vocabulary(track, vocabulary).load(sample_rate=sample_rate, start=start, length=length)
