"""How a part is played: velocity curves, legato or staccato, guitar strums, piano sustain pedal, pitch bends,
drum fills and crashes, and humanised timing. Each function changes a :class:`~.score.Part` in place; times are
in beats."""

from __future__ import annotations

import numpy as np

from .score import Note, Part, Score

SUSTAIN = 64  # MIDI controller of the sustain pedal
BEND_RANGE = 2.0  # semitones of a full pitch-wheel throw (the GM default)
CRASHES = (49, 57)
FILL_DRUMS = (38, 50, 48, 47, 45, 43, 41)  # snare, then toms from high to low


def velocity_curve(part: Part, score: Score, rng: np.random.Generator, *, base: float, spread: float) -> None:
    """Velocities from a base level, beat accents, a louder chorus and a swell across each section, plus noise."""
    for note in part.notes:
        bar = int(note.start // 4)
        section = score.section_at(bar)
        pos = note.start % 1.0
        accent = 1.0 if pos < 0.05 else (0.0 if abs(pos - 0.5) < 0.05 else -1.0)
        swell = (bar - section.start + (note.start % 4) / 4) / max(section.bars, 1)
        level = (base + 6 * accent + (8 if section.name == "chorus" else 0) + 6 * swell
                 + 0.3 * (note.velocity - 90) + rng.normal(0, spread))
        note.velocity = int(np.clip(round(level), 20, 127))


def set_lengths(part: Part, *, factor: float, legato: bool = False) -> None:
    """Staccato (``factor`` < 1 shortens each note) or legato (each note held to the next onset, overlapping it by
    ``factor - 1`` beats when ``factor`` > 1). Never overlaps a later note of the same pitch."""
    notes = sorted(part.notes, key=lambda n: n.start)
    onsets = sorted({n.start for n in notes})
    for note in notes:
        if legato:
            later = [t for t in onsets if t > note.start + 1e-6]
            if later:
                note.duration = later[0] - note.start + max(0.0, factor - 1.0)
        else:
            note.duration = max(0.06, note.duration * factor)
    no_overlaps(notes)


def no_overlaps(notes: list[Note]) -> None:
    """Shorten notes that would overlap a later note of the same pitch (a note-on would cut a ringing note)."""
    by_pitch: dict[int, list[Note]] = {}
    for note in sorted(notes, key=lambda n: n.start):
        by_pitch.setdefault(note.pitch, []).append(note)
    for same in by_pitch.values():
        for a, b in zip(same, same[1:]):
            if a.end > b.start - 0.02:
                a.duration = max(0.03, b.start - a.start - 0.02)


def strum(part: Part, rng: np.random.Generator, *, bpm: float) -> None:
    """Chords as strums: notes struck together are spread 6..18 ms apart, downstrokes low to high on the beat,
    upstrokes high to low off it."""
    gap = rng.uniform(0.006, 0.018) * bpm / 60.0  # in beats
    groups: dict[float, list[Note]] = {}
    for note in part.notes:
        groups.setdefault(round(note.start, 3), []).append(note)
    for start, chord in groups.items():
        if len(chord) < 3:
            continue
        down = start % 1.0 < 0.25 or rng.random() < 0.3
        for k, note in enumerate(sorted(chord, key=lambda n: n.pitch, reverse=not down)):
            note.start += k * gap
            note.duration = max(0.05, note.duration - k * gap)
            note.velocity = int(max(20, note.velocity - 2 * k))


def sustain_pedal(part: Part, score: Score) -> None:
    """Pedal down just after each chord change and lifted just before the next (legato pedalling)."""
    for bar in range(score.bars):
        if bar and score.chords[bar] == score.chords[bar - 1]:
            continue
        part.controls.append((bar * 4 + 0.05, SUSTAIN, 127))
        nxt = next((b for b in range(bar + 1, score.bars) if score.chords[b] != score.chords[bar]), score.bars)
        part.controls.append((nxt * 4 - 0.04, SUSTAIN, 0))


def bend_value(semitones: float) -> int:
    return int(np.clip(round(semitones / BEND_RANGE * 8192), -8192, 8191))


def scoops(part: Part, rng: np.random.Generator, *, probability: float, depth: float) -> None:
    """Pitch bends into some notes: the note starts ``depth`` semitones flat (or a whole tone, for a guitar bend)
    and glides up within its first 60..150 ms-ish tenth of a beat. The wheel is back at zero after each bend."""
    notes = sorted(part.notes, key=lambda n: n.start)
    for i, note in enumerate(notes):
        if rng.random() >= probability or note.duration < 0.5:
            continue
        if any(abs(o.start - note.start) < 1e-3 for o in notes if o is not note):
            continue  # a bend moves the whole channel: only on single notes
        glide = min(0.35 * note.duration, rng.uniform(0.12, 0.3))
        steps = 6
        for k in range(steps + 1):
            part.bends.append((note.start + glide * k / steps, bend_value(-depth * (1 - k / steps))))
        part.bends.append((note.end + 0.01, 0))


def humanise(part: Part, rng: np.random.Generator, *, bpm: float, seconds: float) -> None:
    """Onsets moved by a normal jitter of ``seconds`` (ends keep the note's length); never before the song's start."""
    jitter = rng.normal(0.0, seconds * bpm / 60.0, len(part.notes))
    for note, dt in zip(part.notes, jitter):
        note.start = max(0.0, note.start + float(dt))


def drum_fills(part: Part, score: Score, rng: np.random.Generator) -> None:
    """A fill in the last beat or two before each new section and a crash (with a kick) on its downbeat."""
    for section in score.sections[1:]:
        bar = section.start
        if bar <= 0 or bar >= score.bars:
            continue
        beats = 2 if rng.random() < 0.35 else 1
        fill_start = bar * 4 - beats
        part.notes = [n for n in part.notes if not fill_start - 1e-3 <= n.start < bar * 4 - 1e-3]
        steps = int(beats * 4)
        drums = FILL_DRUMS if rng.random() < 0.7 else (38,)
        for k in range(steps):
            if rng.random() < 0.15:
                continue
            pitch = drums[min(len(drums) - 1, k * len(drums) // steps)]
            part.notes.append(Note(fill_start + k / 4, 0.25, pitch, int(70 + 50 * (k + 1) / steps)))
        crash = CRASHES[int(rng.integers(len(CRASHES)))]
        part.notes += [Note(bar * 4, 2.0, crash, 118), Note(bar * 4, 0.5, 36, 115)]
    part.notes.sort(key=lambda n: n.start)
