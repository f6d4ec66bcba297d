"""The singing voices and how often each sings, so that no one voice dominates the vocals.

Festival's three diphone voices sing in its singing mode; espeak-ng voices speak each syllable, retuned to the
note (:mod:`.psola`); the formant singer is :func:`conditioned_sep.data.oscillators.render_vocals`; the soundfonts'
voice programs (choir aahs, voice oohs, synth voice) sing the melody as instruments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .instruments import GM_FONTS

FESTIVAL_MAX_PITCH = 71
"""Festival 2.5's diphone voices crash (segmentation fault) on notes from C5 (MIDI 72, 523 Hz) up: B4 is the top."""


@dataclass(frozen=True)
class Singer:
    """``engine`` (festival, espeak, formant, soundfont), its ``voice`` name, the ``language`` of its lyrics, its
    ``sex`` and its share ``weight`` of the sung songs."""

    engine: str
    voice: str
    language: str
    sex: str
    weight: float

    @property
    def range(self) -> tuple[int, int]:
        """Lowest and highest MIDI pitch this voice is given."""
        low, high = (50, 67) if self.sex == "male" else (58, 76)
        return (low, min(high, FESTIVAL_MAX_PITCH)) if self.engine == "festival" else (low, high)

    @property
    def name(self) -> str:
        return f"{self.engine}:{self.voice}"


SINGERS: tuple[Singer, ...] = (
    Singer("festival", "ked_diphone", "en", "male", 0.10),
    Singer("festival", "pc_diphone", "it", "male", 0.10),
    Singer("festival", "lp_diphone", "it", "female", 0.10),
    Singer("espeak", "en-us", "en", "male", 0.06),
    Singer("espeak", "en-gb+m3", "en", "male", 0.06),
    Singer("espeak", "en-us+f3", "en", "female", 0.06),
    Singer("espeak", "it+f2", "it", "female", 0.06),
    Singer("espeak", "es+f4", "it", "female", 0.06),
    Singer("formant", "oscillators", "en", "female", 0.12),
    *(Singer("soundfont", f"{font}/{program}", "en", sex, 0.28 / 6)
      for font in GM_FONTS for program, sex in ((52, "female"), (53, "male"), (54, "female"))),
)
"""Every voice; the weights sum to one (at most 12 % each)."""


def draw_singer(rng: np.random.Generator) -> Singer:
    weights = np.array([s.weight for s in SINGERS])
    return SINGERS[int(rng.choice(len(SINGERS), p=weights / weights.sum()))]
