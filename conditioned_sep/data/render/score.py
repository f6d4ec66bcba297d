"""A song's score: its parts as notes, controllers and pitch bends in beats, and its multitrack MIDI file.

The MIDI file is the truth the renderer plays: every part is one track (named after the part, on its own channel,
lyrics as MIDI lyric events before the notes they belong to), and :func:`track_events` reads a track back as
timed events for the synthesiser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mido

from .instruments import DRUM_CHANNEL, Preset

TICKS_PER_BEAT = 960


@dataclass
class Note:
    """One note: ``start`` and ``duration`` in beats, MIDI ``pitch`` and ``velocity`` (1..127), a sung syllable."""

    start: float
    duration: float
    pitch: int
    velocity: int
    lyric: str = ""

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass
class Part:
    """One instrument or voice of a song.

    ``stem`` is its fine stem (:data:`~conditioned_sep.stems.FINE_STEMS`), ``role`` what it plays (drums,
    percussion, bass, comp, pad, lead, melody), ``family`` its instrument family, ``singer`` the voice that sings a
    vocal part (``engine:voice``, empty otherwise). ``controls`` are ``(beat, controller, value)`` and ``bends``
    ``(beat, value in -8192..8191)``.
    """

    name: str
    stem: str
    role: str
    family: str
    preset: Preset
    channel: int
    notes: list[Note] = field(default_factory=list)
    controls: list[tuple[float, int, int]] = field(default_factory=list)
    bends: list[tuple[float, int]] = field(default_factory=list)
    singer: str = ""
    bars: list[int] = field(default_factory=list)

    def describe(self) -> dict:
        """What the manifest and song.json record of this part."""
        p = self.preset
        return {"name": self.name, "stem": self.stem, "role": self.role, "family": self.family,
                "soundfont": p.soundfont, "bank": p.bank, "preset": p.preset, "program": p.program,
                "channel": self.channel, "singer": self.singer, "notes": len(self.notes), "bars": self.bars}


@dataclass
class Section:
    """``name`` (intro, verse, chorus, bridge) spanning ``bars`` bars from bar ``start``."""

    name: str
    start: int
    bars: int


@dataclass
class Score:
    """A whole song: tempo (``bpm``), key (``tonic`` 0..11, ``mode``), one chord symbol (and its scale degree) per
    bar, sections, parts. ``seconds`` is the length rendered (the score runs a little longer and is cut)."""

    title: str
    bpm: float
    tonic: int
    mode: str
    chords: list[str]
    sections: list[Section]
    parts: list[Part]
    seconds: float
    degrees: list[int] = field(default_factory=list)
    style: str = ""

    @property
    def bars(self) -> int:
        return len(self.chords)

    @property
    def beat_seconds(self) -> float:
        return 60.0 / self.bpm

    def section_at(self, bar: int) -> Section:
        return section_at(self.sections, bar)


def section_at(sections: list[Section], bar: int) -> Section:
    """The section that holds ``bar`` (the last one for bars past the end)."""
    return next((s for s in sections if s.start <= bar < s.start + s.bars), sections[-1])


def _ticks(beats: float) -> int:
    return max(0, int(round(beats * TICKS_PER_BEAT)))


def to_midi(score: Score) -> mido.MidiFile:
    """The score as a type-1 MIDI file: a conductor track (tempo, 4/4, section markers), then one track per part."""
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    conductor = mido.MidiTrack([mido.MetaMessage("track_name", name=score.title, time=0),
                                mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(score.bpm), time=0),
                                mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0)])
    events = [(_ticks(s.start * 4), 0, mido.MetaMessage("marker", text=s.name)) for s in score.sections]
    conductor.extend(_delta(events))
    midi.tracks.append(conductor)
    for part in score.parts:
        midi.tracks.append(_part_track(part))
    return midi


def _part_track(part: Part) -> mido.MidiTrack:
    ch = part.channel
    head = [mido.MetaMessage("track_name", name=part.name, time=0)]
    if ch != DRUM_CHANNEL:
        head.append(mido.Message("program_change", channel=ch, program=part.preset.program, time=0))
    # priority orders simultaneous events: controllers and bends first, note-offs before note-ons
    events = [(_ticks(b), 0, mido.Message("control_change", channel=ch, control=c, value=v))
              for b, c, v in part.controls]
    events += [(_ticks(b), 0, mido.Message("pitchwheel", channel=ch, pitch=int(v))) for b, v in part.bends]
    for note in part.notes:
        on, off = _ticks(note.start), max(_ticks(note.end), _ticks(note.start) + 1)
        if note.lyric:
            events.append((on, 2, mido.MetaMessage("lyrics", text=note.lyric)))
        events.append((on, 3, mido.Message("note_on", channel=ch, note=note.pitch, velocity=note.velocity)))
        events.append((off, 1, mido.Message("note_off", channel=ch, note=note.pitch, velocity=0)))
    return mido.MidiTrack(head + _delta(events))


def _delta(events: list[tuple[int, int, mido.Message]]) -> list:
    out, now = [], 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        out.append(msg.copy(time=tick - now))
        now = tick
    return out


@dataclass(frozen=True)
class TimedEvent:
    """A MIDI event at ``seconds`` from the song's start: ``kind`` note_on / note_off / cc / bend, with its values
    (``a``: pitch or controller, ``b``: velocity or value); ``lyric`` for a note_on that has one."""

    seconds: float
    kind: str
    a: int
    b: int = 0
    lyric: str = ""


def tempo_of(midi: mido.MidiFile) -> float:
    """Beats per minute of a file with one tempo (120 when it sets none)."""
    for msg in midi.tracks[0]:
        if msg.type == "set_tempo":
            return mido.tempo2bpm(msg.tempo)
    return 120.0


def track_events(midi: mido.MidiFile, name: str) -> list[TimedEvent]:
    """The events of the track named ``name``, in order, with times in seconds (the file has one tempo)."""
    tracks = [t for t in midi.tracks if t.name == name]
    if len(tracks) != 1:
        raise KeyError(f"MIDI file has {len(tracks)} tracks named {name!r}")
    seconds_per_tick = 60.0 / tempo_of(midi) / midi.ticks_per_beat
    out, tick, lyric = [], 0, ""
    for msg in tracks[0]:
        tick += msg.time
        t = tick * seconds_per_tick
        if msg.type == "lyrics":
            lyric = msg.text
        elif msg.type == "note_on" and msg.velocity > 0:
            out.append(TimedEvent(t, "note_on", msg.note, msg.velocity, lyric))
            lyric = ""
        elif msg.type in ("note_off", "note_on"):
            out.append(TimedEvent(t, "note_off", msg.note))
        elif msg.type == "control_change":
            out.append(TimedEvent(t, "cc", msg.control, msg.value))
        elif msg.type == "pitchwheel":
            out.append(TimedEvent(t, "bend", msg.pitch))
    return out


def note_spans(events: list[TimedEvent]) -> list[tuple[float, float, int, int, str]]:
    """Notes of a track as ``(start s, end s, pitch, velocity, lyric)``, sorted by start."""
    open_notes: dict[int, list[TimedEvent]] = {}
    spans = []
    for ev in events:
        if ev.kind == "note_on":
            open_notes.setdefault(ev.a, []).append(ev)
        elif ev.kind == "note_off" and open_notes.get(ev.a):
            on = open_notes[ev.a].pop(0)
            spans.append((on.seconds, ev.seconds, on.a, on.b, on.lyric))
    return sorted(spans)
