"""The stem vocabulary: names, aliases, queries and the condition vector ``z``.

A *vocabulary* is an ordered tuple of known stem names (:data:`KNOWN_STEMS`): MUSDB18's four (:data:`STEMS`) by
default, or a finer one such as ``("vocals", "drums", "bass", "piano", "guitar", "other")`` when the data has the
parts ``other`` is made of (:data:`OTHER_PARTS`, as htdemucs_6s does). In a vocabulary that lists ``other`` with
some of its parts, ``other`` means the *remainder*: ``other`` minus the listed parts.

A *query* names what a user wants back: one stem (``"vocals"``), a sum of stems (``"drums+bass"``) or an
alias (``"accompaniment"`` = drums + bass + other). Coarse names expand through the vocabulary: ``other`` is
the remainder plus every listed part, so a 6-stem model still answers MUSDB18's four stems. Its condition vector
``z`` is a float vector over the vocabulary, in vocabulary order, with a one for every entry in the sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

STEMS: tuple[str, ...] = ("vocals", "drums", "bass", "other")
"""MUSDB18's stems, in the order every ``z`` and every stacked tensor of sources uses; the default vocabulary."""
SAMPLE_RATE = 44100
"""MUSDB18's sample rate in Hz: the models' default rate, the generated data sets', the metrics' default."""

OTHER_PARTS: tuple[str, ...] = ("piano", "guitar", "keys", "strings", "winds", "synth")
"""The parts of ``other``: piano (acoustic and electric pianos), guitar (and other plucked strings), keys (organs,
clavinet, harpsichord, mallets), strings (bowed, solo and ensembles), winds (brass, reeds, flutes), synth (leads,
pads)."""

FINE_STEMS: tuple[str, ...] = STEMS + OTHER_PARTS
"""Every known stem name: the four coarse stems, then the parts of ``other``."""

KNOWN_STEMS = FINE_STEMS
"""The names a vocabulary may hold (the same tuple as :data:`FINE_STEMS`)."""

COARSE_OF: dict[str, str] = {**{stem: stem for stem in STEMS}, **{part: "other" for part in OTHER_PARTS}}
"""The coarse stem each fine stem belongs to (a coarse stem belongs to itself)."""

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
"""Friendly names that expand to coarse stems of :data:`STEMS` (each then expanded through the vocabulary)."""


class UnknownStemError(ValueError):
    """A query names a stem that the vocabulary (or a model) does not have."""


def check_vocabulary(stems: Sequence[str]) -> tuple[str, ...]:
    """``stems`` as a tuple after checking it is a vocabulary: known names (:data:`KNOWN_STEMS`), each once, at
    least one. Raises :class:`UnknownStemError` naming the bad name and listing the known ones."""
    if isinstance(stems, str):
        raise UnknownStemError(f"a vocabulary is a sequence of stem names, got the string {stems!r}; "
                               f"e.g. {STEMS}")
    vocabulary = tuple(stems)
    if not vocabulary:
        raise UnknownStemError(f"a vocabulary needs at least one stem; known: {', '.join(KNOWN_STEMS)}")
    for name in vocabulary:
        if name not in KNOWN_STEMS:
            raise UnknownStemError(f"unknown stem {name!r} in vocabulary {vocabulary}; known: "
                                   f"{', '.join(KNOWN_STEMS)}")
    repeated = sorted({s for s in vocabulary if vocabulary.count(s) > 1})
    if repeated:
        raise UnknownStemError(f"stem(s) {', '.join(map(repr, repeated))} listed twice in vocabulary {vocabulary}; "
                               "name each stem once")
    return vocabulary


def expand(stem: str, vocabulary: Sequence[str]) -> tuple[str, ...]:
    """The vocabulary entries whose sum is the known stem ``stem``, in vocabulary order; empty when the vocabulary
    cannot build it.

    A listed stem is itself, except ``other`` in a vocabulary that also lists parts of it: then ``other`` is the
    remainder plus those parts. A vocabulary that lists parts of ``other`` but not ``other`` itself builds
    ``other`` as the sum of the listed parts (whatever else ``other`` held is not modelled). A part is never
    built from ``other``.
    """
    if stem == "other":
        return tuple(s for s in vocabulary if COARSE_OF.get(s) == "other")
    return (stem,) if stem in vocabulary else ()


@dataclass(frozen=True)
class StemQuery:
    """One requested output: ``name`` as the caller wrote it, ``stems`` the vocabulary entries it sums, in
    vocabulary order."""

    name: str
    stems: tuple[str, ...]

    @property
    def is_single(self) -> bool:
        return len(self.stems) == 1


def _alias_stems(alias: str, vocabulary: Sequence[str]) -> tuple[str, ...]:
    """The vocabulary entries an alias sums; empty when the vocabulary cannot build one of its coarse stems."""
    built = [expand(stem, vocabulary) for stem in ALIASES[alias]]
    if not all(built):
        return ()
    wanted = {s for entries in built for s in entries}
    return tuple(s for s in vocabulary if s in wanted)


def _valid_names(vocabulary: Sequence[str]) -> str:
    aliases = [a for a in ALIASES if _alias_stems(a, vocabulary)]
    names = f"stems {', '.join(vocabulary)}"
    if "other" not in vocabulary and expand("other", vocabulary):
        names += " (and other: the sum of the listed parts of other)"
    if aliases:
        names += f"; aliases {', '.join(aliases)}"
    if len(vocabulary) > 1:  # an example built from what this vocabulary has, never a stem it lacks
        names += f"; or a sum such as '{vocabulary[-2]}+{vocabulary[-1]}'"
    return names


def parse_query(query: str, *, vocabulary: Sequence[str] = STEMS) -> StemQuery:
    """Parse one query such as ``"vocals"``, ``"Drums + Bass"`` or ``"accompaniment"`` against ``vocabulary``.

    Names are case-insensitive; a stem repeated in a sum counts once. Names expand through the vocabulary
    (:func:`expand`): ``other`` is the remainder plus every listed part of other (or, when the vocabulary lists
    parts but not ``other``, the sum of the listed parts); aliases (``accompaniment`` = drums + bass + other,
    ``all``, ...) are sums of such expansions. Raises :class:`UnknownStemError` listing the valid names when a part
    is unknown, or known but not in the vocabulary (``piano`` for a 4-stem model).
    """
    if not isinstance(query, str):
        raise TypeError(f"a stem query must be a string, got {type(query).__name__}")
    vocabulary = check_vocabulary(vocabulary)
    parts = [p.strip().lower() for p in query.split("+")]
    if not query.strip() or any(not p for p in parts):
        raise UnknownStemError(f"empty stem name in query {query!r}; valid: {_valid_names(vocabulary)}")
    wanted: set[str] = set()
    for part in parts:
        entries = expand(part, vocabulary) if part in KNOWN_STEMS else \
            _alias_stems(part, vocabulary) if part in ALIASES else ()
        if not entries:
            why = " (a known stem this vocabulary does not have)" if part in KNOWN_STEMS else ""
            raise UnknownStemError(f"unknown stem {part!r}{why} in query {query!r}; valid: "
                                   f"{_valid_names(vocabulary)}")
        wanted.update(entries)
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
