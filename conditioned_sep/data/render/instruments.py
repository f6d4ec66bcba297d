"""The sampled instruments: General MIDI programs grouped by family, each family's stem, and the drum kits.

Programs are drawn per family from both GM soundfonts (``timgm6mb``, ``gmbank``; ``gmbank`` adds a few bank-8
variations); drum kits are the two acoustic AVL kits or a GM kit of either font.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GM_FONTS = ("timgm6mb", "gmbank")
DRUM_CHANNEL = 9


@dataclass(frozen=True)
class Family:
    """A group of GM programs that share a fine stem (:data:`~conditioned_sep.stems.FINE_STEMS`)."""

    stem: str
    programs: tuple[int, ...]


FAMILIES: dict[str, Family] = {
    "acoustic_piano": Family("piano", (0, 1, 2, 3)),
    "electric_piano": Family("piano", (4, 5)),
    "organ": Family("keys", (16, 17, 18, 19, 20, 21, 23)),
    "clavinet": Family("keys", (6, 7)),
    "mallets": Family("keys", (8, 9, 10, 11, 12, 13)),
    "acoustic_guitar": Family("guitar", (24, 25)),
    "electric_guitar": Family("guitar", (26, 27, 28)),
    "distorted_guitar": Family("guitar", (29, 30)),
    "plucked": Family("guitar", (46, 104, 105, 106, 107)),
    "bass": Family("bass", (32, 33, 34, 35, 36, 37, 38, 39)),
    "solo_strings": Family("strings", (40, 41, 42, 110)),
    "string_ensemble": Family("strings", (44, 45, 48, 49)),
    "brass": Family("winds", (56, 57, 58, 59, 60, 61)),
    "reeds": Family("winds", (64, 65, 66, 67, 68, 69, 70, 71, 22)),
    "pipes": Family("winds", (72, 73, 74, 75, 77, 79)),
    "synth_lead": Family("synth", (80, 81, 82, 83, 84, 86, 87)),
    "synth_pad": Family("synth", (50, 51, 62, 63, 88, 89, 90, 92, 93, 94, 95)),
    "voice": Family("vocals", (52, 53, 54, 85, 91)),
}
"""Families by name. Programs outside every family (sound effects, orchestra hit, timpani, pitched percussion of
bank 0's 112-119) are never drawn: a part MMA writes with one of them is re-voiced within its role."""

FAMILY_OF_PROGRAM: dict[int, str] = {p: name for name, fam in FAMILIES.items() for p in fam.programs}

ROLE_FAMILIES: dict[str, tuple[str, ...]] = {
    "comp": ("acoustic_piano", "electric_piano", "organ", "clavinet", "acoustic_guitar", "electric_guitar",
             "distorted_guitar", "plucked", "string_ensemble", "synth_pad", "brass", "mallets"),
    "pad": ("string_ensemble", "synth_pad", "organ", "brass", "electric_piano"),
    "lead": ("reeds", "pipes", "brass", "synth_lead", "solo_strings", "distorted_guitar", "electric_guitar",
             "mallets", "acoustic_piano"),
    "bass": ("bass",),
}
"""The families that may play each role: MMA's chord and arpeggio tracks are ``comp``; sustained chords are ``pad``;
counter-melodies and instrumental melodies are ``lead``."""

GM_DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)  # Standard, Room, Power, Electronic, TR 808, Jazz, Brush (bank 128)
AVL_KITS = ("blackpearl", "redzeppelin")
AVL_NOTES = range(36, 62)
"""Notes the AVL kits answer (measured): kick 36 .. 61; GM percussion outside it plays on a GM kit instead."""
VARIATIONS = {  # gmbank bank-8 and bank-16 variations of a GM program: (bank, program)
    4: (8, 4), 5: (8, 5), 6: (8, 6), 16: (8, 16), 17: (8, 17), 24: (8, 24), 25: (8, 25), 27: (8, 27), 28: (8, 28),
    38: (8, 38), 39: (8, 39), 40: (8, 40), 48: (8, 48), 50: (8, 50), 61: (8, 61), 62: (8, 62), 63: (8, 63),
    80: (8, 80),
}


@dataclass(frozen=True)
class Preset:
    """One sampled sound: soundfont short name (:data:`~conditioned_sep.data.render.tools.SOUNDFONTS`), bank and
    preset number, and the GM program it stands for (the program change written to the MIDI file)."""

    soundfont: str
    bank: int
    preset: int
    program: int


def draw_preset(rng: np.random.Generator, family: str) -> Preset:
    """A program of ``family`` in one of the GM fonts (sometimes a gmbank variation)."""
    programs = FAMILIES[family].programs
    program = int(programs[rng.integers(len(programs))])
    font = GM_FONTS[int(rng.integers(len(GM_FONTS)))]
    if font == "gmbank" and program in VARIATIONS and rng.random() < 0.35:
        bank, preset = VARIATIONS[program]
        return Preset(font, bank, preset, program)
    return Preset(font, 0, program, program)


def draw_drum_kit(rng: np.random.Generator) -> Preset:
    """An acoustic AVL kit half the time, else a GM kit of either font."""
    if rng.random() < 0.5:
        return Preset(AVL_KITS[int(rng.integers(len(AVL_KITS)))], 0, 0, 0)
    kit = int(GM_DRUM_KITS[rng.integers(len(GM_DRUM_KITS))])
    return Preset(GM_FONTS[int(rng.integers(len(GM_FONTS)))], 128, kit, kit)


def percussion_kit(rng: np.random.Generator) -> Preset:
    """The GM kit that plays the percussion an AVL kit lacks (congas, shakers, ...)."""
    return Preset(GM_FONTS[int(rng.integers(len(GM_FONTS)))], 128, 0, 0)
