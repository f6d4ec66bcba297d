"""One song from seed to stems: compose the score, write its MIDI file, play every part (FluidSynth or a singer),
mix, and round to 16-bit stems whose sums are exact.

    song = render_song(np.random.default_rng(0), seconds=12.0)
    song.stems["mixture"]      # int16 (2, samples); also vocals, drums, bass, other and the fine stems present
    song.parts["guitar-comp1"] # float32 (2, samples): one mixed part
"""

from __future__ import annotations

from dataclasses import dataclass

import mido
import numpy as np

from ...stems import SAMPLE_RATE
from .compose import ComposeConfig, compose
from .drumkits import kit_of, render_kit
from .mixing import MixConfig, mix, quantize_stems
from .score import Part, Score, note_spans, to_midi, track_events
from .synth import render_track
from .voices import espeak_vocals, festival_vocals, formant_vocals


@dataclass
class RenderedSong:
    """A rendered song: its ``score`` and ``midi`` file, its mixed ``parts`` (float32 ``(2, n)`` by part name) and
    its ``stems`` (int16 ``(2, n)``: coarse, fine and ``mixture``), at ``sample_rate`` Hz."""

    score: Score
    midi: mido.MidiFile
    parts: dict[str, np.ndarray]
    stems: dict[str, np.ndarray]
    sample_rate: int

    @property
    def num_samples(self) -> int:
        return self.stems["mixture"].shape[-1]


def play_part(part: Part, score: Score, midi: mido.MidiFile, rng: np.random.Generator, *, num_samples: int,
              sample_rate: int) -> np.ndarray:
    """The dry sound of one part, float32 ``(2, num_samples)``, from its MIDI track."""
    events = track_events(midi, part.name)
    engine, _, voice = part.singer.partition(":")
    if engine == "festival":
        return festival_vocals(note_spans(events), voice, num_samples=num_samples, sample_rate=sample_rate)
    if engine == "espeak":
        return espeak_vocals(note_spans(events), voice, num_samples=num_samples, sample_rate=sample_rate, rng=rng)
    if engine == "formant":
        return formant_vocals(score, part.bars, num_samples=num_samples, sample_rate=sample_rate, rng=rng)
    kit = kit_of(part.preset)
    if kit is not None:
        return render_kit(events, kit, num_samples=num_samples, sample_rate=sample_rate)
    return render_track(events, part.preset, channel=part.channel, num_samples=num_samples, sample_rate=sample_rate)


def render_song(rng: np.random.Generator, *, seconds: float, sample_rate: int = SAMPLE_RATE,
                compose_config: ComposeConfig | None = None, mix_config: MixConfig | None = None) -> RenderedSong:
    """Compose, play, mix and quantise one song of ``seconds`` seconds."""
    score = compose(rng, seconds=seconds, config=compose_config)
    midi = to_midi(score)
    num_samples = int(round(seconds * sample_rate))
    dry = {p.name: play_part(p, score, midi, rng, num_samples=num_samples, sample_rate=sample_rate)
           for p in score.parts}
    stem_of = {p.name: p.stem for p in score.parts}
    parts = mix(dry, stem_of, rng, sample_rate=sample_rate, config=mix_config)
    return RenderedSong(score=score, midi=midi, parts=parts, stems=quantize_stems(parts, stem_of),
                        sample_rate=sample_rate)
