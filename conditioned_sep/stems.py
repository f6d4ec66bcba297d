"""The stem vocabulary: names, aliases, queries and the condition vector ``z``.

A *query* names what a user wants back: one stem (``"vocals"``), a sum of stems (``"drums+bass"``) or an
alias (``"accompaniment"`` = drums + bass + other). Its condition vector ``z`` is a float vector over the
vocabulary, in vocabulary order, with a one for every stem in the sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

STEMS: tuple[str, ...] = ("vocals", "drums", "bass", "other")
"""MUSDB18's stems, in the order every ``z`` and every stacked tensor of sources uses."""

ALIASES: dict[str, tuple[str, ...]] = {
    "voice": ("vocals",),
    "vocal": ("vocals",),
    "singing": ("vocals",),
    "drum": ("drums",),
    "percussion": ("drums",),
    "accompaniment": ("drums", "bass", "other"),
    "instrumental": ("drums", "bass", "other"),
    "karaoke": ("drums", "bass", "other"),
    "rhythm": ("drums", "bass"),
    "all": ("vocals", "drums", "bass", "other"),
    "mixture": ("vocals", "drums", "bass", "other"),
}
"""Friendly names that expand to one or more stems of :data:`STEMS`."""


class UnknownStemError(ValueError):
    """A query names a stem that the vocabulary (or a model) does not have."""


@dataclass(frozen=True)
class StemQuery:
    """One requested output: ``name`` as the caller wrote it, ``stems`` the stems it sums, in vocabulary order."""

    name: str
    stems: tuple[str, ...]

    @property
    def is_single(self) -> bool:
        return len(self.stems) == 1


def _valid_names(vocabulary: Sequence[str]) -> str:
    aliases = [a for a, parts in ALIASES.items() if set(parts) <= set(vocabulary)]
    names = f"stems {', '.join(vocabulary)}"
    if aliases:
        names += f"; aliases {', '.join(aliases)}"
    if len(vocabulary) > 1:  # an example built from what this vocabulary has, never a stem it lacks
        names += f"; or a sum such as '{vocabulary[-2]}+{vocabulary[-1]}'"
    return names


def parse_query(query: str, *, vocabulary: Sequence[str] = STEMS) -> StemQuery:
    """Parse one query such as ``"vocals"``, ``"Drums + Bass"`` or ``"accompaniment"``.

    Names are case-insensitive; a stem repeated in a sum counts once. Raises :class:`UnknownStemError`
    listing the valid names when a part is unknown.
    """
    if not isinstance(query, str):
        raise TypeError(f"a stem query must be a string, got {type(query).__name__}")
    parts = [p.strip().lower() for p in query.split("+")]
    if not query.strip() or any(not p for p in parts):
        raise UnknownStemError(f"empty stem name in query {query!r}; valid: {_valid_names(vocabulary)}")
    wanted: set[str] = set()
    for part in parts:
        if part in vocabulary:
            wanted.add(part)
        elif part in ALIASES and set(ALIASES[part]) <= set(vocabulary):
            wanted.update(ALIASES[part])
        else:
            raise UnknownStemError(f"unknown stem {part!r} in query {query!r}; valid: {_valid_names(vocabulary)}")
    return StemQuery(name=query.strip(), stems=tuple(s for s in vocabulary if s in wanted))


def parse_queries(stems: str | Sequence[str], *, vocabulary: Sequence[str] = STEMS) -> list[StemQuery]:
    """Parse a query list: a string (comma-separated, ``"vocals,drums+bass"``) or a sequence of strings.

    Duplicate names are dropped, keeping the first. Raises :class:`UnknownStemError` on an empty request.
    """
    if not isinstance(stems, (str, Sequence)):
        raise UnknownStemError(f"stems must be a name such as 'vocals', a comma-separated string or a list of names, "
                               f"got {type(stems).__name__} {stems!r}; valid: {_valid_names(vocabulary)}")
    items = stems.split(",") if isinstance(stems, str) else list(stems)
    queries: dict[str, StemQuery] = {}
    for item in items:
        q = parse_query(item, vocabulary=vocabulary)
        queries.setdefault(q.name, q)
    if not queries:
        raise UnknownStemError(f"no stem requested; valid: {_valid_names(vocabulary)}")
    return list(queries.values())


def query_to_z(query: StemQuery | str, *, vocabulary: Sequence[str] = STEMS) -> torch.Tensor:
    """Condition vector of one query: float32 ``(n_stems,)`` with a one for each stem in the sum."""
    q = parse_query(query, vocabulary=vocabulary) if isinstance(query, str) else query
    return torch.tensor([1.0 if s in q.stems else 0.0 for s in vocabulary], dtype=torch.float32)


def queries_to_z(queries: Sequence[StemQuery | str], *, vocabulary: Sequence[str] = STEMS) -> torch.Tensor:
    """Stacked condition vectors: float32 ``(n_queries, n_stems)``."""
    return torch.stack([query_to_z(q, vocabulary=vocabulary) for q in queries])
