"""Idiomatic accompaniment from MMA (Musical MIDI Accompaniment): drum, bass and comping patterns of its style
library played over a song's chords, read back as plain note lists.

    script = mma_script(chords, bpm=100.0, grooves=["8BeatIntro", "8Beat", "8BeatPlus"], seed=3)
    tracks = accompaniment(script)      # [MmaTrack(name, channel, program, notes), ...]
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mido

from .tools import RenderToolError, program_path


@dataclass(frozen=True)
class Style:
    """A 4/4 MMA groove: ``main`` for verses, ``chorus`` (its fuller variant), ``intro`` (or empty), and the
    tempo range (bpm) it suits."""

    main: str
    chorus: str
    intro: str
    tempo: tuple[float, float] = (92.0, 138.0)


SLOW = (66.0, 92.0)
STYLES: tuple[Style, ...] = (
    Style("50sRock", "50sRockPlus", "50sRockIntro"), Style("60sRock", "60sRockPlus", "60sRockIntro"),
    Style("8Beat", "8BeatPlus", "8BeatIntro"), Style("Ballad", "BalladPlus", "BalladIntro", SLOW),
    Style("BasicRock", "BasicRock4", "BasicRockIntro"), Style("BigBand", "BigBandPlus", "BigBandIntro"),
    Style("Blues", "BluesTriple", "BluesIntro", SLOW), Style("BossaNova", "BossaNovaPlus", "BossaNovaIntro"),
    Style("BubbleRock", "BubbleRockPlus", "BubbleRockIntro"), Style("BVFunk", "BVFunkHorns", "BVFunkIntro"),
    Style("Calypso", "CalypsoPlus", "CalypsoIntro"), Style("CountrySwing", "CountrySwing1", "CountrySwingIntro"),
    Style("DSoul", "DSoulPlus", "DSoulIntro"), Style("EasySwing", "EasySwing1", ""),
    Style("FolkBallad", "FolkBalladPlus", "FolkBalladIntro", SLOW), Style("FolkRock", "FolkRockPlus", "FolkRockIntro"),
    Style("GuitarBallad", "GuitarBallad1", "GuitarBalladIntro", SLOW),
    Style("HillCountry", "HillCountryPlus", "HillCountryIntro"), Style("JazzCombo", "JazzComboPlus", "JazzComboIntro"),
    Style("JazzRock", "JazzRockPlus", "JazzRockIntro"), Style("Jive", "JivePlus", "JiveIntro"),
    Style("LFusion", "LFusion1", "LFusionIntro"), Style("MellowJazz", "MellowJazzPlus", "MellowJazzIntro", SLOW),
    Style("ModernJazz", "ModernJazz1", "ModernJazzIntro"),
    Style("PianoBallad", "PianoBallad1", "PianoBalladIntro", SLOW),
    Style("PopBallad", "PopBalladPlus", "PopBalladIntro", SLOW), Style("R&B", "R&BPlus", "R&BIntro"),
    Style("R&B-Ballad", "R&B-BalladPlus", "R&B-BalladIntro", SLOW),
    Style("Rock128", "Rock128Plus", "Rock128Intro", SLOW),
    Style("RockBallad", "RockBallad1", "RockBalladIntro", SLOW), Style("Salsa", "SalsaPlus", "SalsaIntro"),
    Style("Samba", "SambaPlus", "SambaIntro"), Style("ShuffleBoggie", "ShuffleBoggie1", "ShuffleBoggieIntro"),
    Style("Ska", "Ska1", ""), Style("SlowBlues", "SlowBluesWalk8", "SlowBluesIntro", SLOW),
    Style("SlowCountry", "SlowCountryPlus", "", SLOW), Style("SoftRock", "SoftRock1", "SoftRockIntro"),
    Style("Son", "SonPlus", "SonIntro"), Style("StringBallad", "StringBalladPlus", "StringBalladIntro", SLOW),
    Style("Strut", "Strut2", "StrutIntro"), Style("Swing", "SwingPlus", ""), Style("Trance", "Trance1", "TranceIntro"),
    Style("Twist", "Twist4", "TwistIntro"), Style("WesternSwing", "WesternSwingPlus", "WesternSwingIntro"),
    Style("Zydeco", "ZydecoPlus", "ZydecoIntro"), Style("Merengue", "Merengue1", "MerengueIntro"),
    Style("Mambo", "Mambo1", "MamboIntro"), Style("Rhumba", "Rhumba1", "RhumbaIntro"),
    Style("Folk", "FolkWalk", "FolkIntro"), Style("Strut", "StrutSus", "StrutSusIntro"),
)
"""Grooves of MMA's standard library (Debian ``mma`` 21.09), all in 4/4; waltzes and 6/8 styles are left out."""


@dataclass
class MmaTrack:
    """One track MMA wrote: its name (``Drum``, ``Bass-7``, ``Chord-Guitar``, ...), channel, GM program and notes
    ``(start beat, duration beats, pitch, velocity)``."""

    name: str
    channel: int
    program: int
    notes: list[tuple[float, float, int, int]]


def mma_script(chords: Sequence[str], *, bpm: float, grooves: Sequence[str], seed: int) -> str:
    """An MMA song: ``grooves[bar]`` and ``chords[bar]`` (MMA chord names such as ``Am``, ``G7``, ``Bmb5``) per bar."""
    lines = [f"Tempo {bpm:.3f}", f"RndSeed {seed}"]
    current = None
    for bar, (chord, groove) in enumerate(zip(chords, grooves, strict=True)):
        if groove != current:
            lines.append(f"Groove {groove}")
            current = groove
        lines.append(f"{bar + 1} {chord}")
    return "\n".join(lines) + "\n"


def accompaniment(script: str) -> list[MmaTrack]:
    """Run MMA on ``script`` and read back its note tracks (empty tracks dropped)."""
    mma = program_path("mma")
    with tempfile.TemporaryDirectory(prefix="conditioned-sep-mma-") as tmp:
        src, out = Path(tmp) / "song.mma", Path(tmp) / "song.mid"
        src.write_text(script)
        run = subprocess.run([mma, "-f", str(out), str(src)], capture_output=True, text=True, timeout=120)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
        if run.returncode != 0 or errors or not out.is_file():
            raise RenderToolError(f"MMA failed on a generated song ({'; '.join(errors) or run.returncode}); "
                                  "check the mma installation (apt-get install --reinstall mma)")
        midi = mido.MidiFile(str(out))
    tracks = []
    for track in midi.tracks:
        notes, open_notes, tick, channel, program = [], {}, 0, None, 0
        for msg in track:
            tick += msg.time
            if msg.type == "program_change":
                program = msg.program
            if msg.type == "note_on" and msg.velocity > 0:
                open_notes.setdefault(msg.note, []).append((tick, msg.velocity))
                channel = msg.channel
            elif msg.type in ("note_on", "note_off") and open_notes.get(msg.note):
                on, velocity = open_notes[msg.note].pop(0)
                notes.append((on / midi.ticks_per_beat, max(tick - on, 1) / midi.ticks_per_beat, msg.note, velocity))
        if notes:
            tracks.append(MmaTrack(track.name, channel, program, sorted(notes)))
    return tracks
