"""The renderer's pieces: singers on pitch and on time, PSOLA retuning, every MMA groove we draw, articulation,
exact 16-bit sums of the mixer, and clear errors when a tool is missing."""

from __future__ import annotations

import numpy as np
import pytest

from conditioned_sep.data.render import tools
from conditioned_sep.data.render.articulation import strum, sustain_pedal
from conditioned_sep.data.render.compose import chord_symbol, compose
from conditioned_sep.data.render.instruments import Preset
from conditioned_sep.data.render.mixing import CEILING, mix, quantize_stems
from conditioned_sep.data.render.mma import STYLES, accompaniment, mma_script
from conditioned_sep.data.render.psola import f0_track, sing
from conditioned_sep.data.render.score import Note, Part
from conditioned_sep.data.render.singers import SINGERS
from conditioned_sep.data.render.voices import espeak_vocals, festival_vocals

RATE = 44100
LINE = [(0.3, 0.8, 57, 100, "love"), (0.8, 1.3, 60, 100, "la"), (1.3, 2.2, 55, 90, "day"),
        (2.7, 3.2, 59, 100, "mo"), (3.2, 4.0, 57, 100, "no")]  # (start s, end s, pitch, velocity, lyric)
WORDS_IT = ("amo", "la", "sol", "mo", "no")  # Italian voices sing Italian spelling (lyrics.py gives them that)
REST = (2.25, 2.65)


def line_for(singer_voice: str, *, transpose: int = 0) -> list:
    singer = next(s for s in SINGERS if s.voice == singer_voice)
    words = WORDS_IT if singer.language == "it" else [w for *_, w in LINE]
    return [(a, b, p + transpose, v, w) for (a, b, p, v, _), w in zip(LINE, words)]


def semitones(hz: np.ndarray) -> np.ndarray:
    return 12 * np.log2(hz / 440.0) + 69


def assert_sings(voice: np.ndarray, line: list, *, tolerance: float = 0.7) -> None:
    """Voiced on each note with the note's median pitch, near-silent in the rest."""
    f0, voiced = f0_track(voice[0], RATE)
    t = np.arange(len(f0)) * 0.005
    for start, end, pitch, _, lyric in line:
        inside = (t >= start + 0.05) & (t < end - 0.03)
        assert voiced[inside].mean() > 0.5, f"{lyric!r} at {start} s is not sung"
        assert abs(np.median(semitones(f0[inside & voiced])) - pitch) < tolerance, f"{lyric!r} off pitch"
    rest = voice[:, int(REST[0] * RATE): int(REST[1] * RATE)]
    assert np.sqrt(np.mean(rest**2)) < 0.05 * np.sqrt(np.mean(voice**2))


@pytest.mark.parametrize("voice", ["ked_diphone", "pc_diphone", "lp_diphone"])
def test_festival_voices_sing_the_notes(voice):
    line = line_for(voice, transpose=7 if voice == "lp_diphone" else 0)  # a female range for lp
    assert_sings(festival_vocals(line, voice, num_samples=int(4.5 * RATE), sample_rate=RATE), line)


def test_festival_is_never_given_a_note_it_cannot_sing():
    with pytest.raises(ValueError, match="above MIDI 71"):
        festival_vocals([(0.0, 0.5, 72, 100, "la")], "lp_diphone", num_samples=RATE, sample_rate=RATE)
    for singer in SINGERS:
        low, high = singer.range
        assert low < high and (singer.engine != "festival" or high <= 71)
    score = compose(np.random.default_rng(0), seconds=30.0)
    melody = next(p for p in score.parts if p.role == "melody")
    singer = next((s for s in SINGERS if s.name == melody.singer), None)
    if singer is not None and singer.engine != "formant":
        low, high = singer.range
        assert all(low <= n.pitch <= high for n in melody.notes)


@pytest.mark.parametrize("voice", sorted({s.voice for s in SINGERS if s.engine == "espeak"}))
def test_espeak_voices_sing_the_notes(voice):
    line = line_for(voice)
    out = espeak_vocals(line, voice, num_samples=int(4.5 * RATE), sample_rate=RATE, rng=np.random.default_rng(0))
    assert_sings(out, line)


def test_psola_moves_pitch_and_keeps_length():
    rate = 22050
    t = np.arange(int(0.5 * rate)) / rate
    syllable = sum(np.sin(2 * np.pi * 100 * k * t) / k for k in range(1, 25)).astype(np.float32) * 0.3
    for target in (80.0, 150.0, 260.0):
        out = sing(syllable, rate, f0=np.full(int(0.9 * rate), target))
        assert len(out) == int(0.9 * rate)
        f0, voiced = f0_track(out, rate)
        assert voiced.mean() > 0.8 and abs(np.median(semitones(f0[voiced])) - semitones(np.array(target))) < 0.3


def test_every_mma_groove_plays():
    grooves = [g for s in STYLES for g in (s.main, s.chorus, s.intro) if g]
    tracks = accompaniment(mma_script(["C"] * len(grooves), bpm=120.0, grooves=grooves, seed=1))
    drums = [n for t in tracks if t.channel == 9 for n in t.notes]
    bars_with_drums = {int(n[0] // 4) for n in drums}
    assert len(bars_with_drums) > 0.9 * len(grooves)  # an unknown groove would have stopped MMA with an error
    with pytest.raises(tools.RenderToolError, match="MMA failed"):
        accompaniment(mma_script(["C"], bpm=120.0, grooves=["NoSuchGroove"], seed=1))


def test_chord_symbols_follow_the_key():
    assert [chord_symbol(0, "maj", d, seventh=False) for d in range(7)] == ["C", "Dm", "Em", "F", "G", "Am", "Bmb5"]
    assert chord_symbol(9, "min", 4, seventh=True) == "Em7" and chord_symbol(0, "maj", 4, seventh=True) == "G7"


def test_strum_spreads_chords_and_pedal_follows_chord_changes():
    score = compose(np.random.default_rng(0), seconds=6.0)
    part = Part("g", "guitar", "comp", "acoustic_guitar", Preset("timgm6mb", 0, 25, 25), 0,
                [Note(0.0, 1.0, p, 90) for p in (52, 55, 59, 64)] + [Note(1.5, 0.5, p, 90) for p in (52, 55, 59)])
    strum(part, np.random.default_rng(1), bpm=120.0)
    down = sorted(part.notes[:4], key=lambda n: n.start)
    assert [n.pitch for n in down] == [52, 55, 59, 64] and down[-1].start - down[0].start > 0.01
    up = sorted(part.notes[4:], key=lambda n: n.start)
    assert [n.pitch for n in up] == [59, 55, 52]  # off the beat: an upstroke
    piano = Part("p", "piano", "comp", "acoustic_piano", Preset("timgm6mb", 0, 0, 0), 1)
    sustain_pedal(piano, score)
    downs = [b for b, c, v in piano.controls if c == 64 and v == 127]
    changes = [bar for bar in range(score.bars) if bar == 0 or score.chords[bar] != score.chords[bar - 1]]
    assert [round(b) for b in downs] == [4 * bar for bar in changes]


def test_mixer_keeps_sums_and_headroom():
    rng = np.random.default_rng(0)
    n = RATE
    t = np.arange(n) / RATE
    dry = {"v": np.stack([np.sin(2 * np.pi * 220 * t)] * 2), "d": rng.normal(0, 0.3, (2, n)),
           "b": np.stack([np.sin(2 * np.pi * 55 * t)] * 2), "p": rng.normal(0, 0.1, (2, n)),
           "g": np.stack([np.sin(2 * np.pi * 330 * t), np.sin(2 * np.pi * 331 * t)])}
    stem_of = {"v": "vocals", "d": "drums", "b": "bass", "p": "piano", "g": "guitar"}
    parts = mix({k: v.astype(np.float32) for k, v in dry.items()}, stem_of, rng, sample_rate=RATE)
    assert max(np.abs(sum(parts.values())).max(), *(np.abs(p).max() for p in parts.values())) <= CEILING + 1e-6
    stems = {k: v.astype(np.int64) for k, v in quantize_stems(parts, stem_of).items()}
    assert set(stems) == {"vocals", "drums", "bass", "other", "mixture", "piano", "guitar"}
    assert np.array_equal(stems["piano"] + stems["guitar"], stems["other"])
    assert np.array_equal(stems["vocals"] + stems["drums"] + stems["bass"] + stems["other"], stems["mixture"])


def test_missing_tools_name_the_install_line(monkeypatch):
    tools.soundfont_path.cache_clear()
    tools.program_path.cache_clear()
    monkeypatch.setattr(tools, "SOUNDFONT_DIRS", ())
    with pytest.raises(tools.RenderToolError, match="apt-get install timgm6mb-soundfont"):
        tools.soundfont_path("timgm6mb")
    monkeypatch.setattr(tools.shutil, "which", lambda name: None)
    with pytest.raises(tools.RenderToolError, match="apt-get install espeak-ng"):
        tools.program_path("espeak-ng")
    monkeypatch.setattr(tools, "FESTIVAL_VOICE_DIR", tools.Path("/nonexistent"))
    with pytest.raises(tools.RenderToolError, match="apt-get install festival"):
        tools.festival_voice_ok("lp_diphone")
    monkeypatch.undo()
    tools.soundfont_path.cache_clear()
    tools.program_path.cache_clear()
    tools.check_all()  # everything is installed again
