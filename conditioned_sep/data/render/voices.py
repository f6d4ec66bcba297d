"""Singing: a vocal part's notes and lyrics (read from the MIDI file) sung by one of the voices of :mod:`.singers`.

- festival: Festival's singing mode with a diphone voice (recorded speech), fed an XML score of notes and rests
  in seconds. Two quirks of its ``singing-mode.scm`` are undone here: a note name's octave is one lower than
  MIDI's (its C4 is MIDI 48), and beats are 50/BPM seconds (durations are given in seconds instead).
- espeak: espeak-ng speaks each syllable once; :func:`.psola.sing` puts it on each note's pitch and length, with
  a scoop into the note and vibrato.
- formant: today's oscillator singer (:func:`conditioned_sep.data.oscillators.render_vocals`), which draws its own
  tune in the part's bars.
- soundfont voice programs are instruments: :mod:`.synth` plays them.

Every engine returns float32 ``(2, samples)`` (a mono voice on both channels; the mixer places it).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from ...audio import resample
from ..oscillators import OTHER_TIMBRES, Song, render_vocals
from .psola import sing
from .score import Score
from .singers import FESTIVAL_MAX_PITCH
from .tools import RenderToolError, festival_voice_ok, program_path

NOTE_NAMES_SHARP = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
ESPEAK_RATE = 22050  # espeak-ng's output rate
FADE_SECONDS = 0.008
Span = tuple[float, float, int, int, str]  # (start s, end s, pitch, velocity, lyric)


def _clean(word: str) -> str:
    word = re.sub(r"[^a-z]", "", word.lower())
    return word or "la"


def _note_gains(spans: list[Span], num_samples: int, sample_rate: int) -> np.ndarray:
    """A gain curve that follows each note's velocity (a voice has no velocity of its own); 0 between notes is
    left to the voice."""
    gains = np.ones(num_samples, dtype=np.float32)
    for start, end, _, velocity, _ in spans:
        a, b = int(start * sample_rate), min(num_samples, int(end * sample_rate))
        gains[a:b] = (velocity / 100.0) ** 1.5
    return gains


def festival_script(spans: list[Span]) -> str:
    """The SINGING XML of a vocal line: rests and notes with durations in seconds (the line starts at its first
    note)."""
    body, now = [], spans[0][0]
    for start, end, pitch, _, lyric in spans:
        if start - now > 0.01:
            body.append(f'<REST SECONDS="{start - now:.4f}"></REST>')
        # festival's octave numbers run one below MIDI's (its C4 is MIDI note 48)
        name = f"{NOTE_NAMES_SHARP[pitch % 12]}{pitch // 12}"
        body.append(f'<PITCH NOTE="{name}"><DURATION SECONDS="{end - start:.4f}">{_clean(lyric)}</DURATION></PITCH>')
        now = end
    return ('<?xml version="1.0"?>\n<!DOCTYPE SINGING PUBLIC "-//SINGING//DTD SINGING mark up//EN" '
            '"Singing.v0_1.dtd" []>\n<SINGING BPM="60">\n' + "\n".join(body) + "\n</SINGING>\n")


def festival_vocals(spans: list[Span], voice: str, *, num_samples: int, sample_rate: int) -> np.ndarray:
    """The line sung by Festival voice ``voice`` (``ked_diphone``, ``pc_diphone``, ``lp_diphone``)."""
    festival_voice_ok(voice)
    out = np.zeros(num_samples, dtype=np.float32)
    spans = [span for span in spans if span[0] * sample_rate < num_samples - 1]  # the score runs past the end
    too_high = [span[2] for span in spans if span[2] > FESTIVAL_MAX_PITCH]
    if too_high:
        raise ValueError(f"Festival's diphone voices crash on notes above MIDI {FESTIVAL_MAX_PITCH} (B4), got "
                         f"{max(too_high)}: keep the melody in the singer's range (singers.Singer.range)")
    if not spans:
        return np.stack([out, out])
    with tempfile.TemporaryDirectory(prefix="conditioned-sep-festival-") as tmp:
        xml, wav = Path(tmp) / "line.xml", Path(tmp) / "line.wav"
        xml.write_text(festival_script(spans))
        # -scale 0.5: at full scale the diphone voices clip on loud vowels
        command = [program_path("text2wave"), "-mode", "singing", "-scale", "0.5", "-eval", f"(voice_{voice})",
                   str(xml), "-o", str(wav)]
        run = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if run.returncode != 0 or not wav.is_file():
            raise RenderToolError(f"Festival could not sing with voice {voice} (exit status {run.returncode}): "
                                  f"{run.stderr.strip()[-300:]}; check it with: festival --version")
        sung, rate = sf.read(str(wav), dtype="float32")
    sung = resample(sung, orig_rate=rate, target_rate=sample_rate)
    start = int(round(spans[0][0] * sample_rate))
    n = min(len(sung), num_samples - start)
    out[start: start + n] = sung[:n]
    out *= _note_gains(spans, num_samples, sample_rate)
    return np.stack([out, out])


def _espeak(text: str, voice: str, tmp: Path) -> np.ndarray:
    wav = tmp / f"{text}.wav"
    run = subprocess.run([program_path("espeak-ng"), "-v", voice, "-s", "120", "-w", str(wav), text],
                         capture_output=True, text=True, timeout=60)
    if run.returncode != 0 or not wav.is_file():
        raise RenderToolError(f"espeak-ng could not speak {text!r} with voice {voice}: {run.stderr.strip()}")
    audio, _ = sf.read(str(wav), dtype="float32")
    return audio


def pitch_contour(hz: float, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A sung note's f0 (Hz per sample): a scoop up into the note, then vibrato that grows after ~150 ms."""
    t = np.arange(n) / rate
    scoop = -rng.uniform(0.3, 0.9) * np.exp(-t / rng.uniform(0.02, 0.05))
    depth = rng.uniform(0.15, 0.45) * np.clip((t - 0.15) / 0.2, 0.0, 1.0)
    vibrato = depth * np.sin(2 * np.pi * rng.uniform(4.8, 6.3) * t + rng.uniform(0, 2 * np.pi))
    return hz * 2.0 ** ((scoop + vibrato) / 12.0)


def espeak_vocals(spans: list[Span], voice: str, *, num_samples: int, sample_rate: int,
                  rng: np.random.Generator) -> np.ndarray:
    """The line spoken syllable by syllable by espeak-ng voice ``voice`` and retuned to its notes."""
    line = np.zeros(int(np.ceil(num_samples * ESPEAK_RATE / sample_rate)) + 1, dtype=np.float32)
    spoken: dict[str, np.ndarray] = {}
    fade = int(FADE_SECONDS * ESPEAK_RATE)
    with tempfile.TemporaryDirectory(prefix="conditioned-sep-espeak-") as tmp:
        for start, end, pitch, velocity, lyric in spans:
            word = _clean(lyric)
            if word not in spoken:
                spoken[word] = _espeak(word, voice, Path(tmp))
            a, b = int(start * ESPEAK_RATE), min(len(line), int(end * ESPEAK_RATE))
            if b - a < 2 * fade + 4:
                continue
            hz = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
            note = sing(spoken[word], ESPEAK_RATE, f0=pitch_contour(hz, b - a, ESPEAK_RATE, rng))
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            note[:fade] *= ramp
            note[-fade:] *= ramp[::-1]
            line[a:b] += note * (velocity / 100.0) ** 1.5
    out = resample(line, orig_rate=ESPEAK_RATE, target_rate=sample_rate)[:num_samples]
    out = np.pad(out, (0, num_samples - len(out)))
    return np.stack([out, out]).astype(np.float32)


def formant_vocals(score: Score, bars: list[int], *, num_samples: int, sample_rate: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Today's oscillator singer in ``bars`` of the song (same tempo, key and chords; its own tune)."""
    active = np.zeros((4, score.bars), dtype=bool)
    active[0, [b for b in bars if b < score.bars]] = True
    progression = tuple(score.degrees) if score.degrees else (0,)
    song = Song(rate=sample_rate, seconds=num_samples / sample_rate, bpm=score.bpm, tonic=score.tonic,
                mode=score.mode, progression=progression, bars=score.bars, active=active,
                other_timbre=OTHER_TIMBRES[0], bass_timbre="sine")
    voice = render_vocals(song, rng)
    out = np.zeros((2, num_samples), dtype=np.float32)
    out[:, : min(num_samples, voice.shape[1])] = voice[:, :num_samples]
    return out
