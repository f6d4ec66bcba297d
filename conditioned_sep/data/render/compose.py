"""Composing one song: the oscillator generator's song model (one tempo, key, chord progression) grown into
sections, MMA's idiomatic drums, bass and comping, a sung melody with lyrics (or an instrumental one), pads and
counter-melodies, each part articulated like a player would.

    score = compose(np.random.default_rng(0), seconds=12.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..oscillators import NOTE_NAMES, PROGRESSIONS, SCALES
from . import articulation as art
from .drumkits import draw_hydrogen_kit, kit_of
from .instruments import (AVL_KITS, AVL_NOTES, DRUM_CHANNEL, FAMILIES, FAMILY_OF_PROGRAM, ROLE_FAMILIES, Preset,
                          draw_drum_kit, draw_preset, percussion_kit)
from .lyrics import lyric_pool, lyrics_for
from .mma import STYLES, MmaTrack, Style, accompaniment, mma_script
from .score import Note, Part, Score, Section, section_at
from .singers import Singer, draw_singer
from .tools import OPL3_FONT

JAZZY = ("Jazz", "Swing", "Bossa", "Blues", "R&B", "Soul", "BigBand", "Son", "Salsa", "Mambo", "Fusion")
MELODY_CELLS = (  # one bar of a melody's rhythm: (start beat, length in beats)
    ((0, 1), (1, 1), (2, 2)),
    ((0, 0.5), (0.5, 0.5), (1, 1), (2, 1), (3, 1)),
    ((0, 1.5), (1.5, 0.5), (2, 2)),
    ((0.5, 0.5), (1, 0.5), (1.5, 0.5), (2, 1), (3, 0.5)),
    ((0, 1), (1, 0.5), (1.5, 0.5), (2, 1.5)),
    ((0, 2), (2, 1), (3, 1)),
    ((0, 0.5), (0.5, 1), (1.5, 0.5), (2, 2)),
    ((1, 1), (2, 0.5), (2.5, 0.5), (3, 1)),
)
MAX_COMPS = 3
REVOICE = 0.4


@dataclass(frozen=True)
class ComposeConfig:
    """How often a song has each kind of part (probabilities per song)."""

    vocals: float = 0.85
    bass: float = 0.9
    pad: float = 0.5
    counter_melody: float = 0.4
    hydrogen_kits: float = 0.0
    """Share of songs whose drum kit is a real Hydrogen kit (:mod:`.drumkits`) instead of an AVL or GM kit. Drawn
    from a spawned generator, so the composition stays as it was: with 0 the whole song, with more its chords, parts and
    pitches (humanised timing, velocities and mix levels are drawn anew when the kit moves notes between the drum
    and percussion parts)."""
    opl3: float = 0.0
    """Share of the pitched instrument parts (not drums, not vocals) played by the OPL3 FM soundfont
    (``opl3-soundfont``) on their own GM program instead of a sampled one: more timbres. Drawn from a spawned
    generator after the song is composed, so only those parts' sound changes."""


def chord_symbol(tonic: int, mode: str, degree: int, *, seventh: bool) -> str:
    """MMA's name of the triad (or seventh chord) on scale ``degree`` of the key, e.g. ``Am``, ``G7``, ``Bmb5``."""
    scale = SCALES[mode]
    root = (tonic + scale[degree % 7]) % 12
    third = (scale[(degree + 2) % 7] - scale[degree % 7]) % 12
    fifth = (scale[(degree + 4) % 7] - scale[degree % 7]) % 12
    seventh_iv = (scale[(degree + 6) % 7] - scale[degree % 7]) % 12
    if fifth == 6:
        quality = "m7b5" if seventh else "mb5"
    elif third == 3:
        quality = "m7" if seventh else "m"
    else:
        quality = ("maj7" if seventh_iv == 11 else "7") if seventh else ""
    return NOTE_NAMES[root] + quality


def chord_pitches(tonic: int, mode: str, degree: int) -> list[int]:
    """Pitch classes of the triad on ``degree``."""
    scale = SCALES[mode]
    return [(tonic + scale[(degree + k) % 7]) % 12 for k in (0, 2, 4)]


def draw_sections(rng: np.random.Generator, bars: int) -> list[Section]:
    """An intro of 0..2 bars, then verses and choruses of 2 or 4 bars (a bridge now and then)."""
    intro = int(rng.choice([0, 1, 1, 2]))
    sections = [Section("intro", 0, intro)] if intro else []
    bar, kind = intro, "verse" if rng.random() < 0.7 else "chorus"
    while bar < bars:
        length = int(rng.choice([2, 4, 4]))
        sections.append(Section(kind, bar, min(length, bars - bar)))
        bar += length
        kind = {"verse": "chorus", "chorus": "bridge" if rng.random() < 0.2 else "verse", "bridge": "chorus"}[kind]
    return sections


def compose(rng: np.random.Generator, *, seconds: float, config: ComposeConfig | None = None) -> Score:
    """A whole song of about ``seconds`` (the score is a bar longer; the renderer cuts it)."""
    config = config or ComposeConfig()
    style = STYLES[int(rng.integers(len(STYLES)))]
    bpm = float(rng.uniform(*style.tempo))
    mode = "maj" if rng.random() < 0.55 else "min"
    tonic = int(rng.integers(12))
    progs = PROGRESSIONS[mode]
    verse_prog = progs[int(rng.integers(len(progs)))]
    chorus_prog = progs[int(rng.integers(len(progs)))]
    bars = int(np.ceil(seconds / (4 * 60.0 / bpm))) + 1
    sections = draw_sections(rng, bars)
    sevenths = any(word in style.main for word in JAZZY)
    degrees, chords = [], []
    for bar in range(bars):
        section = section_at(sections, bar)
        prog = chorus_prog if section.name == "chorus" else verse_prog
        degree = int(prog[(bar - section.start) % len(prog)])
        degrees.append(degree)
        chords.append(chord_symbol(tonic, mode, degree, seventh=sevenths and rng.random() < 0.7))
    score = Score(title=f"{NOTE_NAMES[tonic]}{mode}-{int(round(bpm))}bpm-{style.main}", bpm=bpm, tonic=tonic,
                  mode=mode, chords=chords, sections=sections, parts=[], seconds=seconds, degrees=degrees,
                  style=style.main)

    grooves = [_groove(style, section_at(sections, bar).name) for bar in range(bars)]
    tracks = accompaniment(mma_script(chords, bpm=bpm, grooves=grooves, seed=int(rng.integers(1, 2**31 - 1))))
    channels = iter(c for c in range(16) if c != DRUM_CHANNEL)
    score.parts += _drum_parts(tracks, rng, hydrogen=config.hydrogen_kits)
    with_bass = rng.random() < config.bass
    score.parts += _pitched_parts(tracks, rng, channels, with_bass=with_bass)
    if with_bass and not any(p.role == "bass" for p in score.parts):
        score.parts.append(_bass_line(score, degrees, rng, next(channels)))

    singer = draw_singer(rng) if rng.random() < config.vocals else None
    score.parts.append(_melody_part(score, degrees, rng, next(channels), singer))
    if rng.random() < config.pad:
        score.parts.append(_pad_part(score, degrees, rng, next(channels)))
    if rng.random() < config.counter_melody:
        score.parts.append(_counter_melody(score, degrees, rng, next(channels)))
    _arrange(score, rng)
    for part in score.parts:
        _articulate(part, score, rng)
    if config.opl3 > 0:
        own = rng.spawn(1)[0]
        for part in score.parts:
            if part.stem not in ("drums", "vocals") and own.random() < config.opl3:
                part.preset = Preset(OPL3_FONT, 0, part.preset.program, part.preset.program)
    _trim(score)
    return score


def _trim(score: Score) -> None:
    """Drop what starts after the rendered length (the score runs a bar longer), and parts left without a note."""
    end_beats = (score.seconds - 0.05) / score.beat_seconds
    for part in score.parts:
        part.notes = [n for n in part.notes if n.start < end_beats]
        part.bars = [b for b in part.bars if 4 * b < end_beats]
    score.parts = [p for p in score.parts if p.notes or (p.singer.startswith("formant") and p.bars)]


def _groove(style: Style, section: str) -> str:
    if section == "intro":
        return style.intro or style.main
    return style.chorus if section == "chorus" else style.main


def _drum_parts(tracks: list[MmaTrack], rng: np.random.Generator, *, hydrogen: float = 0.0) -> list[Part]:
    notes = [n for t in tracks if t.channel == DRUM_CHANNEL for n in t.notes]
    if not notes:
        return []
    kit = draw_drum_kit(rng)
    kit_notes, perc_notes = _kit_notes(notes, kit)
    perc = percussion_kit(rng) if perc_notes else None
    if hydrogen > 0:
        # drawn from a spawned generator after rng's own draws, so rng's stream goes on as without Hydrogen kits
        own = rng.spawn(1)[0]
        if own.random() < hydrogen:
            kit = draw_hydrogen_kit(own)
            kit_notes, perc_notes = _kit_notes(notes, kit)
            perc = percussion_kit(own) if perc_notes else None
    parts = [Part("drums", "drums", "drums", "drum_kit", kit, DRUM_CHANNEL, kit_notes)]
    if perc is not None:
        # the percussion shares the drum channel's number on its own synthesiser; MIDI keeps it as its own track
        parts.append(Part("percussion", "drums", "percussion", "drum_kit", perc, DRUM_CHANNEL, perc_notes))
    return parts


def _kit_notes(notes: list[tuple[float, float, int, int]], kit: Preset) -> tuple[list[Note], list[Note]]:
    """MMA's drum notes split into those ``kit`` plays and those a GM percussion kit plays instead."""
    hydrogen_kit = kit_of(kit)
    kit_notes, perc_notes = [], []
    for start, _, pitch, velocity in notes:
        pitch = 36 if pitch == 35 and kit.soundfont in AVL_KITS else pitch
        answered = (pitch in hydrogen_kit.notes if hydrogen_kit is not None
                    else kit.soundfont not in AVL_KITS or pitch in AVL_NOTES)
        # drum hits ring for a beat whatever MMA wrote: a 1-tick note-off would choke some kits' samples
        (kit_notes if answered else perc_notes).append(Note(start, 1.0, pitch, velocity))
    return kit_notes, perc_notes


def _pitched_parts(tracks: list[MmaTrack], rng: np.random.Generator, channels, *, with_bass: bool) -> list[Part]:
    parts: list[Part] = []
    comps = [t for t in tracks if t.channel != DRUM_CHANNEL and FAMILY_OF_PROGRAM.get(t.program) != "bass"]
    basses = [t for t in tracks if t.channel != DRUM_CHANNEL and FAMILY_OF_PROGRAM.get(t.program) == "bass"]
    if len(comps) > MAX_COMPS:
        keep = sorted(rng.choice(len(comps), size=MAX_COMPS, replace=False))
        comps = [comps[int(i)] for i in keep]
    for track in basses[:1] if with_bass else []:
        preset = draw_preset(rng, "bass")
        parts.append(Part("bass", "bass", "bass", "bass", preset, next(channels), _notes(track)))
    for k, track in enumerate(comps):
        family = FAMILY_OF_PROGRAM.get(track.program)
        # MMA's own choice is mostly piano or guitar: re-voice some parts (and any we do not render, such as voices)
        # so that keys, strings, winds and synths comp too
        if family is None or family not in ROLE_FAMILIES["comp"] or rng.random() < REVOICE:
            family = _draw_family(rng, "comp")
        preset = draw_preset(rng, family)
        stem = FAMILIES[family].stem
        parts.append(Part(f"{stem}-comp{k + 1}", stem, "comp", family, preset, next(channels), _notes(track)))
    return parts


def _notes(track: MmaTrack) -> list[Note]:
    return [Note(s, d, p, v) for s, d, p, v in track.notes]


def _draw_family(rng: np.random.Generator, role: str) -> str:
    options = ROLE_FAMILIES[role]
    return options[int(rng.integers(len(options)))]


def _bass_line(score: Score, degrees: list[int], rng: np.random.Generator, channel: int) -> Part:
    """Roots (and fifths) on a rhythm pattern, for grooves that have no bass track."""
    pattern = ((0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0)) if rng.random() < 0.5 else ((0, 1.5), (1.5, 0.5), (2, 1.0),
                                                                                  (3, 1.0))
    notes = []
    for bar, degree in enumerate(degrees):
        root = 28 + (chord_pitches(score.tonic, score.mode, degree)[0] - 4) % 12
        for k, (start, length) in enumerate(pattern):
            pitch = root + (7 if k == 2 and rng.random() < 0.4 else 0)
            notes.append(Note(bar * 4 + start, length * 0.9, pitch, 96))
    return Part("bass", "bass", "bass", "bass", draw_preset(rng, "bass"), channel, notes)


def melody_notes(score: Score, degrees: list[int], rng: np.random.Generator, *, low: int, high: int,
                 density: float = 1.0) -> list[Note]:
    """A melody in key over every bar: two-bar phrases from rhythm cells (a motif repeats now and then), chord tones
    on strong beats, steps in between, a held note and a breath at the end of each phrase. ``density`` < 1 drops
    notes (a sparser counter-melody)."""
    scale = SCALES[score.mode]
    in_range = [p for p in range(low, high + 1) if (p - score.tonic) % 12 in scale]
    notes: list[Note] = []
    current = in_range[len(in_range) // 2]
    motif = None
    for bar in range(score.bars):
        if bar % 2 == 0 and (motif is None or rng.random() < 0.6):
            motif = MELODY_CELLS[int(rng.integers(len(MELODY_CELLS)))]
        cell = motif if bar % 2 == 0 else ((0, 1), (1, 1), (2, 1.5))  # the phrase ends held, then a breath
        chord = chord_pitches(score.tonic, score.mode, degrees[bar])
        for start, length in cell:
            if rng.random() > density:
                continue
            if start in (0, 2):
                candidates = [p for p in in_range if p % 12 in chord]
            else:
                i = in_range.index(current) if current in in_range else len(in_range) // 2
                step = int(rng.choice([-2, -1, -1, 1, 1, 2, 0]))
                candidates = [in_range[int(np.clip(i + step, 0, len(in_range) - 1))]]
            current = min(candidates, key=lambda p: abs(p - current) + rng.uniform(0, 3))
            notes.append(Note(bar * 4 + start, length * 0.95, int(current), 90))
    return notes


def _melody_part(score: Score, degrees: list[int], rng: np.random.Generator, channel: int,
                 singer: Singer | None) -> Part:
    if singer is None:  # an instrumental: a lead instrument plays the tune
        family = _draw_family(rng, "lead")
        low = 60 if family != "solo_strings" else 55
        notes = melody_notes(score, degrees, rng, low=low, high=low + 19)
        stem = FAMILIES[family].stem
        return Part(f"{stem}-melody", stem, "melody", family, draw_preset(rng, family), channel, notes)
    low, high = singer.range
    notes = melody_notes(score, degrees, rng, low=low, high=high)
    for note, syllable in zip(notes, lyrics_for(rng, len(notes), lyric_pool(rng, singer.language))):
        note.lyric = syllable
    if singer.engine == "soundfont":
        font, program = singer.voice.split("/")
        preset = Preset(font, 0, int(program), int(program))
    else:
        preset = Preset("", 0, 0, 53)  # sung outside the synthesiser; the MIDI file says "voice"
    if singer.engine == "formant":
        notes = []  # the formant singer draws its own tune in the vocal bars (see voices.formant_vocals)
    return Part("vocals", "vocals", "melody", "voice", preset, channel, notes, singer=singer.name)


def _pad_part(score: Score, degrees: list[int], rng: np.random.Generator, channel: int) -> Part:
    family = _draw_family(rng, "pad")
    notes = []
    for bar, degree in enumerate(degrees):
        pcs = chord_pitches(score.tonic, score.mode, degree)
        voicing = sorted(55 + (pc - 55) % 12 for pc in pcs)
        notes += [Note(bar * 4, 4.0, p, 80) for p in voicing]
    stem = FAMILIES[family].stem
    return Part(f"{stem}-pad", stem, "pad", family, draw_preset(rng, family), channel, notes)


def _counter_melody(score: Score, degrees: list[int], rng: np.random.Generator, channel: int) -> Part:
    family = _draw_family(rng, "lead")
    low = int(rng.choice([62, 67, 72]))
    notes = melody_notes(score, degrees, rng, low=low, high=low + 14, density=0.6)
    stem = FAMILIES[family].stem
    return Part(f"{stem}-lead", stem, "lead", family, draw_preset(rng, family), channel, notes)


def _arrange(score: Score, rng: np.random.Generator) -> None:
    """Which parts play in which section: the singer rests in the intro and some bars, pads and counter-melodies
    mostly join in choruses, a comp sits out a section now and then, drums may wait for the first verse."""
    names = {s.name for s in score.sections}
    for part in score.parts:
        active = np.ones(score.bars, dtype=bool)
        for bar in range(score.bars):
            kind = score.section_at(bar).name
            if kind == "intro" and part.role in ("melody", "lead", "pad"):
                active[bar] = False
            if part.role in ("pad", "lead") and kind == "verse" and "chorus" in names:
                active[bar] = rng.random() < 0.3
        if part.role == "comp" and len(score.sections) > 1 and rng.random() < 0.3:
            section = score.sections[int(rng.integers(len(score.sections)))]
            active[section.start: section.start + section.bars] = False
        if part.role == "melody" and part.stem == "vocals":
            active &= rng.random(score.bars) > 0.12
        if part.role in ("drums", "percussion", "bass") and score.sections[0].name == "intro" and rng.random() < 0.4:
            active[: score.sections[0].bars] = False
        if not active.any():
            active[-1] = True
        part.notes = [n for n in part.notes if active[min(int(n.start // 4), score.bars - 1)]]
        played = {int(n.start // 4) for n in part.notes} if part.notes else set(np.flatnonzero(active).tolist())
        part.bars = sorted(b for b in played if b < score.bars)
    # a part that lost every note (MMA wrote it for bars it now sits out) is no part; names are made unique
    score.parts = [p for p in score.parts if p.notes or p.singer.startswith("formant")]
    seen: dict[str, int] = {}
    for part in score.parts:
        seen[part.name] = seen.get(part.name, 0) + 1
        if seen[part.name] > 1:
            part.name = f"{part.name}{seen[part.name]}"


def _articulate(part: Part, score: Score, rng: np.random.Generator) -> None:
    bpm = score.bpm
    if part.role in ("drums", "percussion"):
        if part.role == "drums":
            art.drum_fills(part, score, rng)
        art.velocity_curve(part, score, rng, base=100, spread=6)
        art.humanise(part, rng, bpm=bpm, seconds=0.004)
        art.no_overlaps(part.notes)
        return
    guitarish = part.family in ("acoustic_guitar", "electric_guitar", "distorted_guitar", "plucked")
    sustained = part.family in ("string_ensemble", "synth_pad", "organ") or part.role == "pad"
    base = {"comp": 78, "pad": 70, "bass": 92, "melody": 92, "lead": 84}[part.role]
    art.velocity_curve(part, score, rng, base=base, spread=7)
    if sustained:
        art.set_lengths(part, factor=1.05, legato=True)
    elif part.role in ("comp", "bass") and rng.random() < 0.3:
        art.set_lengths(part, factor=float(rng.uniform(0.35, 0.6)))  # staccato
    elif part.role in ("melody", "lead") and rng.random() < 0.5:
        art.set_lengths(part, factor=1.02, legato=True)
    if guitarish and part.role == "comp":
        art.strum(part, rng, bpm=bpm)
    if part.family in ("acoustic_piano", "electric_piano") and part.role in ("comp", "melody") and rng.random() < 0.7:
        art.sustain_pedal(part, score)
    if part.role == "bass":
        art.scoops(part, rng, probability=0.08, depth=1.0)
    elif part.role in ("melody", "lead") and part.stem != "vocals" and part.family not in ("acoustic_piano", "mallets"):
        art.scoops(part, rng, probability=0.25, depth=2.0 if guitarish else 1.0)
    art.humanise(part, rng, bpm=bpm, seconds=0.006 if part.role != "melody" else 0.012)
    art.no_overlaps(part.notes)
