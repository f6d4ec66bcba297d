"""Lyrics: one syllable per sung note, spelled so that the singer's language pronounces it (English or Italian
spelling; Spanish voices read the Italian one). A song reuses a small pool of syllables and words, as a chorus
repeats its words."""

from __future__ import annotations

import numpy as np

ONSETS = {
    "en": ("", "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "w", "y", "sh", "ch", "th", "br",
           "st", "fl", "gr", "tr"),
    "it": ("", "b", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "c", "ch", "gl", "tr", "pr", "st"),
}
NUCLEI = {
    "en": ("a", "ee", "i", "o", "oo", "ay", "ie", "oh", "ow", "ay"),
    "it": ("a", "e", "i", "o", "u", "ia", "io", "ie", "uo"),
}
CODAS = {"en": ("", "", "", "n", "t", "s", "l", "m", "nd", "ght", "ve"), "it": ("", "", "", "", "n", "r", "l")}
WORDS = {
    "en": ("love", "night", "day", "heart", "rain", "home", "light", "time", "dream", "sky", "sun", "way",
           "road", "blue", "gold", "hold", "free", "stay", "run", "fly", "tears", "stars", "soul", "down", "high",
           "yeah", "oh", "no", "you", "me", "we", "my", "go", "now", "mind", "life", "song", "cold", "true"),
    "it": ("a", "mo", "re", "cuo", "re", "sol", "lu", "na", "not", "te", "ma", "re", "vi", "ta", "sei", "tu", "io",
           "mai", "piu", "ciel", "mar", "ca", "sa", "ve", "ro", "no", "si", "la", "per", "te"),
}


def syllable(rng: np.random.Generator, language: str) -> str:
    """One made-up syllable (onset, vowel, sometimes a coda) in ``language``'s spelling."""
    lang = "en" if language == "en" else "it"
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    return pick(ONSETS[lang]) + pick(NUCLEI[lang]) + pick(CODAS[lang])


def lyric_pool(rng: np.random.Generator, language: str, *, size: int = 12) -> list[str]:
    """The syllables and short words one song sings, about half real words."""
    lang = "en" if language == "en" else "it"
    words = WORDS[lang]
    return [words[int(rng.integers(len(words)))] if rng.random() < 0.5 else syllable(rng, lang) for _ in range(size)]


def lyrics_for(rng: np.random.Generator, n_notes: int, pool: list[str]) -> list[str]:
    """``n_notes`` syllables drawn from ``pool``, with runs repeated the way a refrain repeats."""
    out: list[str] = []
    while len(out) < n_notes:
        if out and rng.random() < 0.3:
            k = int(rng.integers(1, min(4, len(out)) + 1))
            out += out[-k:]
        else:
            out.append(pool[int(rng.integers(len(pool)))])
    return out[:n_notes]
