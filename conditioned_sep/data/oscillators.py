"""The oscillator song generator of the synthetic default dataset: one song's score and its four stems.

Every song has one tempo, key and chord progression shared by its four stems, so the sources are correlated
and overlap in frequency the way real ones do: drums on the beat grid, bass on the chord roots, "other"
playing the chords (piano-, organ-, pad- or guitar-like), and a sung-like "vocals" melody in key (glottal
source, vowel formants, vibrato, syllables with consonant onsets, rests). Each stem is panned, sent to a
shared reverb and compressed or saturated; the mixture is the sum of the stems.

    song = Song.draw(rng, seconds=12.0, rate=44100)
    stems = render_song(song, rng)      # float32 (4, 2, samples) in the order of STEMS
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import signal

from ..stems import STEMS


# --------------------------------------------------------------------------------------------------------------
# Music: one tempo, key and progression per song
# --------------------------------------------------------------------------------------------------------------

NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
SCALES = {"maj": (0, 2, 4, 5, 7, 9, 11), "min": (0, 2, 3, 5, 7, 8, 10)}
PROGRESSIONS = {  # scale degrees (0 = tonic), one chord per bar
    "maj": ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 0), (5, 3, 0, 4), (0, 3, 0, 4), (1, 4, 0, 0)),
    "min": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (5, 6, 0, 0)),
}
VOWELS = np.array([  # formant frequencies F1, F2, F3 (Hz) of a, e, i, o, u
    [800, 1200, 2500], [400, 2000, 2600], [300, 2300, 3000], [450, 800, 2600], [325, 700, 2500]], dtype=np.float64)
OTHER_TIMBRES = ("piano", "organ", "pad", "guitar")
BASS_TIMBRES = ("pluck", "saw", "sine")


def midi_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


@dataclass
class Song:
    """The score of one song: tempo, key, progression, arrangement (which stems play in which bar), timbres."""

    rate: int
    seconds: float
    bpm: float
    tonic: int  # pitch class 0..11
    mode: str
    progression: tuple[int, ...]
    bars: int
    active: np.ndarray  # bool (4, bars): does stem s play in bar b (order of STEMS)
    other_timbre: str
    bass_timbre: str

    @property
    def beat(self) -> float:
        return 60.0 / self.bpm

    @property
    def n(self) -> int:
        return int(round(self.seconds * self.rate))

    @property
    def title(self) -> str:
        return f"{NOTE_NAMES[self.tonic]}{self.mode}-{int(round(self.bpm))}bpm"

    @classmethod
    def draw(cls, rng: np.random.Generator, *, seconds: float, rate: int) -> Song:
        bpm = float(rng.uniform(84, 140))
        mode = "maj" if rng.random() < 0.55 else "min"
        progs = PROGRESSIONS[mode]
        bars = int(np.ceil(seconds / (4 * 60.0 / bpm))) + 1
        active = np.ones((4, bars), dtype=bool)
        # arrangement: vocals enter after an intro and rest for some bars; drums drop out in breakdowns
        intro = int(rng.integers(0, 3))
        active[0, :intro] = False
        active[0] &= rng.random(bars) > 0.15
        if active[0, : bars - 1].sum() < (bars - 1) / 2:  # keep the singer in at least half of the song
            active[0, intro:] = True
        active[1] &= rng.random(bars) > 0.12
        active[2] &= rng.random(bars) > 0.08
        active[3] &= rng.random(bars) > 0.08
        return cls(rate=rate, seconds=seconds, bpm=bpm, tonic=int(rng.integers(12)), mode=mode,
                   progression=progs[int(rng.integers(len(progs)))], bars=bars, active=active,
                   other_timbre=OTHER_TIMBRES[int(rng.integers(len(OTHER_TIMBRES)))],
                   bass_timbre=BASS_TIMBRES[int(rng.integers(len(BASS_TIMBRES)))])

    def scale_pitch(self, degree: np.ndarray | int, octave_base: int) -> np.ndarray:
        """MIDI pitch of scale ``degree`` (any integer, wraps into octaves) above C of ``octave_base``."""
        degree = np.asarray(degree)
        scale = np.array(SCALES[self.mode])
        return octave_base + self.tonic + 12 * (degree // 7) + scale[degree % 7]

    def chord_degrees(self, bar: int) -> np.ndarray:
        root = self.progression[bar % len(self.progression)]
        return root + np.array([0, 2, 4])


# --------------------------------------------------------------------------------------------------------------
# Sound: additive synthesis, vectorised over partials and samples
# --------------------------------------------------------------------------------------------------------------


def partials(freqs: np.ndarray, amps: np.ndarray, decays: np.ndarray, n: int, rate: int,
             rng: np.random.Generator) -> np.ndarray:
    """Sum of exponentially decaying sines: ``freqs, amps, decays (k,)`` (Hz, linear, 1/s) -> ``(n,)`` float32.

    Partials at or above 0.45 * rate are dropped (no aliasing).
    """
    keep = (freqs < 0.45 * rate) & (amps > 1e-4)
    freqs, amps, decays = freqs[keep], amps[keep], decays[keep]
    t = np.arange(n, dtype=np.float32) / rate
    phase0 = rng.uniform(0, 2 * np.pi, size=len(freqs)).astype(np.float32)
    out = np.zeros(n, dtype=np.float32)
    for start in range(0, len(freqs), 16):  # chunks of partials keep the (k, n) matrix small
        sl = slice(start, start + 16)
        f = freqs[sl, None].astype(np.float32)
        env = amps[sl, None].astype(np.float32) * np.exp(-decays[sl, None].astype(np.float32) * t)
        out += (env * np.sin(2 * np.pi * f * t + phase0[sl, None])).sum(0)
    return out


def adsr(n: int, rate: int, *, attack: float, release: float, sustain_decay: float = 0.0) -> np.ndarray:
    """Amplitude envelope ``(n,)``: linear attack, exponential sustain decay (1/s), linear release at the end."""
    t = np.arange(n) / rate
    env = np.minimum(1.0, t / max(attack, 1e-4)) * np.exp(-sustain_decay * t)
    rel = max(1, min(n, int(release * rate)))
    env[n - rel:] *= np.linspace(1.0, 0.0, rel)
    return env.astype(np.float32)


def filtered_noise(rng: np.random.Generator, n: int, rate: int, *, low: float | None = None,
                   high: float | None = None, order: int = 2) -> np.ndarray:
    noise = rng.standard_normal(n)
    if low is not None and high is not None:
        sos = signal.butter(order, [low, high], btype="bandpass", fs=rate, output="sos")
    elif low is not None:
        sos = signal.butter(order, low, btype="highpass", fs=rate, output="sos")
    elif high is not None:
        sos = signal.butter(order, high, btype="lowpass", fs=rate, output="sos")
    else:
        return noise.astype(np.float32)
    return signal.sosfilt(sos, noise).astype(np.float32)


def place(out: np.ndarray, start: int, sound: np.ndarray) -> None:
    """Add ``sound`` into ``out`` at sample ``start``, cropped at the end."""
    if start >= len(out):
        return
    end = min(len(out), start + len(sound))
    out[start:end] += sound[: end - start]


def pan(mono: np.ndarray, position: float) -> np.ndarray:
    """Constant-power pan: ``position`` in [-1, 1] -> ``(2, n)``."""
    theta = (position + 1.0) * np.pi / 4
    return np.stack([np.cos(theta) * mono, np.sin(theta) * mono]).astype(np.float32)


def trigger_track(times: Sequence[float], velocities: Sequence[float], sample: np.ndarray, n: int,
                  rate: int) -> np.ndarray:
    """A drum part: ``sample`` fired at ``times`` (s) with ``velocities``, as one FFT convolution."""
    impulses = np.zeros(n, dtype=np.float32)
    idx = np.round(np.asarray(times) * rate).astype(int)
    ok = (idx >= 0) & (idx < n)
    np.add.at(impulses, idx[ok], np.asarray(velocities, dtype=np.float32)[ok])
    return signal.oaconvolve(impulses, sample)[:n].astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# The four stems
# --------------------------------------------------------------------------------------------------------------


def render_drums(song: Song, rng: np.random.Generator) -> np.ndarray:
    rate, n, beat = song.rate, song.n, song.beat
    t = np.arange(int(0.5 * rate)) / rate
    # kick: a sine falling in pitch, plus a click
    f_kick = rng.uniform(40, 60) + rng.uniform(60, 130) * np.exp(-t / rng.uniform(0.02, 0.05))
    kick = np.sin(2 * np.pi * np.cumsum(f_kick) / rate) * np.exp(-t / rng.uniform(0.12, 0.3))
    kick[:200] += filtered_noise(rng, 200, rate, high=4000) * np.linspace(1, 0, 200) * 0.5
    # snare: a tonal body and a band of noise
    t_s = t[: int(0.35 * rate)]
    snare = (0.6 * np.sin(2 * np.pi * rng.uniform(170, 250) * t_s) * np.exp(-t_s / rng.uniform(0.04, 0.08))
             + filtered_noise(rng, len(t_s), rate, low=1200, high=9000) * np.exp(-t_s / rng.uniform(0.08, 0.2)))
    # hats and a cymbal: high noise plus inharmonic metallic partials
    t_h = t[: int(0.3 * rate)]
    hat_decay = rng.uniform(0.02, 0.06)
    hat = filtered_noise(rng, len(t_h), rate, low=rng.uniform(6000, 9000)) * np.exp(-t_h / hat_decay)
    t_c = np.arange(int(1.8 * rate)) / rate
    metal = partials(rng.uniform(300, 900) * np.array([1.0, 1.48, 1.93, 2.61, 3.37, 4.11]),
                     np.full(6, 0.15), np.full(6, 3.0), len(t_c), rate, rng)
    cymbal = (filtered_noise(rng, len(t_c), rate, low=4000) + metal) * np.exp(-t_c / rng.uniform(0.6, 1.2))
    tom = np.sin(2 * np.pi * np.cumsum(rng.uniform(90, 160) * (1 + 0.5 * np.exp(-t / 0.03))) / rate) * np.exp(-t / 0.2)

    kick_t, snare_t, hat_t, hat_v, cym_t, tom_t = [], [], [], [], [], []
    subdiv = 4 if rng.random() < 0.4 else 2  # hats on 16ths or 8ths
    kick_extra = rng.random(8) < 0.3  # syncopated kicks on 8th positions, one pattern per song
    for bar in range(song.bars):
        if not song.active[1, bar]:
            continue
        b0 = bar * 4 * beat
        fill = bar % 4 == 3 and rng.random() < 0.35
        kick_t += [b0, b0 + 2 * beat] + [b0 + k * beat / 2 for k in range(8) if kick_extra[k] and k % 4]
        snare_t += [b0 + beat, b0 + 3 * beat]
        if fill:
            tom_t += [b0 + 3 * beat + k * beat / 4 for k in range(4)]
        steps = 4 * subdiv - (subdiv if fill else 0)
        hat_t += [b0 + k * beat / subdiv for k in range(steps)]
        hat_v += [1.0 if k % subdiv == 0 else 0.6 for k in range(steps)]
        if bar % 4 == 0 or not song.active[1, bar - 1]:
            cym_t.append(b0)
    jitter = lambda times: np.asarray(times) + rng.normal(0, 0.004, len(times))  # noqa: E731 (humanised timing)
    vel = lambda times: rng.uniform(0.75, 1.0, len(times))  # noqa: E731
    hat_v = np.asarray(hat_v) * rng.uniform(0.8, 1.0, len(hat_v))
    parts = [
        (trigger_track(jitter(kick_t), vel(kick_t), kick, n, rate), 0.0, 1.0),
        (trigger_track(jitter(snare_t), vel(snare_t), snare, n, rate), rng.uniform(-0.15, 0.15), 0.7),
        (trigger_track(jitter(hat_t), hat_v, hat, n, rate), rng.uniform(-0.5, 0.5), 0.25),
        (trigger_track(jitter(cym_t), vel(cym_t), cymbal, n, rate), rng.uniform(-0.6, 0.6), 0.2),
        (trigger_track(jitter(tom_t), vel(tom_t), tom, n, rate), rng.uniform(-0.4, 0.4), 0.6),
    ]
    return sum(pan(mono * gain, position) for mono, position, gain in parts)


def render_bass(song: Song, rng: np.random.Generator) -> np.ndarray:
    rate, n, beat = song.rate, song.n, song.beat
    out = np.zeros(n, dtype=np.float32)
    pattern = int(rng.integers(4))  # 0: roots on quarters, 1: 8ths, 2: root-fifth, 3: syncopated
    octave = 24 if rng.random() < 0.7 else 36
    timbre = song.bass_timbre
    for bar in range(song.bars):
        if not song.active[2, bar]:
            continue
        root = int(song.scale_pitch(song.chord_degrees(bar)[0], octave))
        while root < 28:
            root += 12
        while root > 50:
            root -= 12
        if pattern == 0:
            notes = [(k, 1.0, root) for k in range(4)]
        elif pattern == 1:
            notes = [(k / 2, 0.5, root + (12 if k % 4 == 3 else 0)) for k in range(8)]
        elif pattern == 2:
            notes = [(0, 1.5, root), (1.5, 0.5, root), (2, 1.0, root + 7), (3, 1.0, root + 12 * (rng.random() < 0.3))]
        else:
            notes = [(0, 0.75, root), (0.75, 0.75, root), (1.5, 1.0, root + 7), (2.5, 1.5, root)]
        for start, length, pitch in notes:
            dur = length * beat * rng.uniform(0.7, 0.95)
            m = int(dur * rate)
            f0 = float(midi_to_hz(pitch))
            k = np.arange(1, 40)
            if timbre == "pluck":
                sound = partials(k * f0, 1.0 / k**1.1, 3.0 + 2.0 * k, m, rate, rng)
            elif timbre == "saw":
                cutoff = rng.uniform(400, 1200)
                sound = partials(k * f0, 1.0 / k / (1 + (k * f0 / cutoff) ** 2), 1.0 + 1.5 * k, m, rate, rng)
            else:
                sound = partials(f0 * np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.25, 0.08]),
                                 np.array([0.5, 1.0, 2.0]), m, rate, rng)
            sound *= adsr(m, rate, attack=0.005 if timbre != "sine" else 0.02, release=0.03)
            place(out, int((bar * 4 + start) * beat * rate), sound * rng.uniform(0.8, 1.0))
    return pan(out, rng.uniform(-0.1, 0.1))


def render_other(song: Song, rng: np.random.Generator) -> np.ndarray:
    rate, n, beat, timbre = song.rate, song.n, song.beat, song.other_timbre
    left, right = np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.float32)
    if timbre in ("piano", "guitar"):
        rhythm = [(0, 2), (2, 2)] if rng.random() < 0.4 else [(0, 1.5), (1.5, 1), (2.5, 1.5)]
        if timbre == "guitar" and rng.random() < 0.5:
            rhythm = [(k, 1) for k in range(4)]
    else:
        rhythm = [(0, 4)]
    detune = rng.uniform(0.002, 0.006)
    for bar in range(song.bars):
        if not song.active[3, bar]:
            continue
        degrees = song.chord_degrees(bar)
        if rng.random() < 0.3:
            degrees = np.append(degrees, degrees[0] + 6)  # a seventh
        pitches = song.scale_pitch(degrees, 48 if timbre != "pad" else 48 + 12 * int(rng.random() < 0.3))
        pitches = np.where(pitches < 52, pitches + 12, pitches)
        for start, length in rhythm:
            dur = length * beat
            m = int((dur + (1.0 if timbre == "pad" else 0.3)) * rate)
            t0 = int((bar * 4 + start) * beat * rate)
            for v, pitch in enumerate(pitches):
                f0 = float(midi_to_hz(pitch))
                k = np.arange(1, 30, dtype=np.float64)
                if timbre == "piano":
                    freqs = k * f0 * np.sqrt(1 + 4e-4 * k**2)  # string inharmonicity
                    sound = partials(freqs, 1.0 / k**1.5, 1.5 + 0.8 * k, m, rate, rng)
                    sound *= adsr(m, rate, attack=0.003, release=0.25)
                    offset = 0
                elif timbre == "guitar":
                    sound = partials(k * f0, 1.0 / k**1.2 * np.abs(np.sin(np.pi * k * 0.2)) + 1e-3,
                                     2.5 + 1.5 * k, m, rate, rng)
                    sound *= adsr(m, rate, attack=0.002, release=0.1)
                    offset = int(v * rng.uniform(0.008, 0.02) * rate)  # strum
                elif timbre == "organ":
                    h = np.array([1, 2, 3, 4, 6, 8], dtype=np.float64)
                    sound = partials(h * f0, np.array([1.0, 0.7, 0.5, 0.3, 0.2, 0.15]), np.zeros(6), m, rate, rng)
                    tremolo = 1 + 0.15 * np.sin(2 * np.pi * 6.0 * np.arange(m) / rate)
                    sound *= adsr(m, rate, attack=0.01, release=0.05) * tremolo.astype(np.float32)
                    offset = 0
                else:  # pad: detuned saws, slow attack, low-passed
                    cutoff = rng.uniform(1200, 2500)
                    amps = 1.0 / k / (1 + (k * f0 / cutoff) ** 4)
                    sound = sum(partials(k * f0 * (1 + d), amps, np.zeros_like(k), m, rate, rng)
                                for d in (-detune, 0.0, detune))
                    sound *= adsr(m, rate, attack=rng.uniform(0.2, 0.5), release=0.8)
                    offset = 0
                position = (v / max(1, len(pitches) - 1) - 0.5) * rng.uniform(0.4, 1.2)
                stereo = pan(sound * 0.5, position)
                place(left, t0 + offset, stereo[0])
                place(right, t0 + offset, stereo[1])
    return np.stack([left, right])


def render_vocals(song: Song, rng: np.random.Generator) -> np.ndarray:
    """A sung melody in key: glottal source (harmonics with spectral tilt), vowel formants per syllable,
    vibrato, smooth pitch transitions, consonant noise at syllable onsets, breath noise and rests."""
    rate, n, beat = song.rate, song.n, song.beat
    low = 48 + (12 if song.tonic < 5 else 0)  # the tonic sits in 53..64 (F3..E4); the melody spans 1.5 octaves
    f0 = np.zeros(n)
    amp = np.zeros(n, dtype=np.float32)
    vowel_at = np.zeros(n, dtype=np.int64)
    consonant = np.zeros(n, dtype=np.float32)
    degree = int(rng.integers(0, 5))
    last_pitch = float(song.scale_pitch(degree, low))
    durations = np.array([0.5, 1.0, 1.0, 1.5, 2.0])
    vib_rate, vib_depth = rng.uniform(4.8, 6.5), rng.uniform(0.2, 0.6)
    for bar in range(song.bars):
        if not song.active[0, bar]:
            continue
        pos = 0.0
        chord = song.chord_degrees(bar)
        while pos < 4.0:
            length = min(float(durations[rng.integers(len(durations))]), 4.0 - pos)
            if rng.random() < 0.18:  # a rest
                pos += length
                continue
            if pos in (0.0, 2.0):  # strong beats: a chord tone
                degree = int(chord[rng.integers(3)])
                degree = degree + 7 if degree < 3 and rng.random() < 0.5 else degree
            else:
                degree = int(np.clip(degree + rng.integers(-2, 3), 0, 9))
            pitch = float(song.scale_pitch(degree, low))
            a = int((bar * 4 + pos) * beat * rate)
            b = min(n, int((bar * 4 + pos + length) * beat * rate * 0.98))
            if b > a:
                f0[a:b] = midi_to_hz(pitch)
                m = b - a
                amp[a:b] = adsr(m, rate, attack=0.03, release=min(0.08, m / rate / 3), sustain_decay=0.3)
                amp[a:b] *= rng.uniform(0.7, 1.0)
                vowel_at[a:b] = rng.integers(len(VOWELS))
                if rng.random() < 0.6:  # a consonant onset
                    c = min(m, int(rng.uniform(0.02, 0.06) * rate))
                    consonant[a:a + c] = np.linspace(1.0, 0.0, c) * rng.uniform(0.3, 0.8)
                last_pitch = pitch
            pos += length
    # hold pitch through rests, then glide between notes (smoothing log-f0 over ~40 ms)
    f0[f0 == 0] = np.nan
    idx = np.where(~np.isnan(f0), np.arange(n), 0)
    np.maximum.accumulate(idx, out=idx)
    f0 = np.where(np.isnan(f0[idx]), midi_to_hz(last_pitch), f0[idx])
    win = int(0.04 * rate)
    log_f0 = signal.oaconvolve(np.log(f0), np.ones(win) / win, mode="same")
    log_f0[: win // 2] = np.log(f0[: win // 2])
    log_f0[-win // 2:] = np.log(f0[-win // 2:])
    t = np.arange(n) / rate
    vibrato = vib_depth / 12 * np.log(2) * np.sin(2 * np.pi * vib_rate * t) * np.minimum(1, amp / 0.5)
    freq = np.exp(log_f0 + vibrato)
    phase = (2 * np.pi * np.cumsum(freq) / rate) % (2 * np.pi * 64)
    # formants move smoothly between vowels; gains are computed at a control rate of rate / 64
    hop = 64
    ctrl = slice(0, n, hop)
    shift = rng.uniform(0.92, 1.15)  # the singer's vocal tract length
    formants = VOWELS[vowel_at[ctrl]] * shift  # (m, 3)
    formants = signal.oaconvolve(formants, np.ones((12, 1)) / 12, mode="same", axes=0)
    bandwidths = np.array([80.0, 100.0, 140.0])
    out = np.zeros(n, dtype=np.float32)
    f_ctrl = freq[ctrl]
    t_ctrl = np.arange(0, n, hop)
    for k in range(1, 60):
        fk = k * f_ctrl
        if fk.min() > 8000:
            break
        gain = (0.01 + (1.0 / (1 + ((fk[:, None] - formants) / bandwidths) ** 2)) @ np.array([1.0, 0.7, 0.35]))
        gain = gain * (fk < 0.45 * rate) / k**1.2  # glottal source tilt
        out += (np.interp(np.arange(n), t_ctrl, gain) * np.sin(k * phase)).astype(np.float32)
    breath = filtered_noise(rng, n, rate, low=1500, high=6000) * 0.02
    fricative = filtered_noise(rng, n, rate, low=3000, high=10000) * consonant * 0.5
    voice = out * amp + breath * amp + fricative
    return pan(voice.astype(np.float32), rng.uniform(-0.15, 0.15))


# --------------------------------------------------------------------------------------------------------------
# Production: compression or saturation, reverb, levels
# --------------------------------------------------------------------------------------------------------------


def compress(x: np.ndarray, rate: int, *, threshold_db: float, ratio: float, smoothing: float = 0.01) -> np.ndarray:
    """Feed-forward compressor on ``(2, n)``: a smoothed level (one-pole, ``smoothing`` s) drives the gain."""
    alpha = np.exp(-1.0 / (smoothing * rate))
    level = signal.lfilter([1 - alpha], [1, -alpha], np.abs(x).max(0))
    thr = 10 ** (threshold_db / 20) * (np.abs(x).max() + 1e-9)
    gain = np.minimum(1.0, (np.maximum(level, 1e-9) / thr) ** (1.0 / ratio - 1.0))
    return (x * gain).astype(np.float32)


def saturate(x: np.ndarray, drive: float) -> np.ndarray:
    peak = np.abs(x).max() + 1e-9
    return (np.tanh(drive * x / peak) / np.tanh(drive) * peak).astype(np.float32)


def reverb_ir(rng: np.random.Generator, rate: int) -> np.ndarray:
    """A stereo room: decorrelated decaying noise, darker as it decays, after a short pre-delay. ``(2, m)``."""
    rt60 = rng.uniform(0.4, 1.8)
    m = int(rt60 * rate)
    t = np.arange(m) / rate
    noise = np.stack([filtered_noise(rng, m, rate, high=rng.uniform(3000, 8000)) for _ in range(2)])
    ir = noise * np.exp(-6.9 * t / rt60)
    ir = np.concatenate([np.zeros((2, int(rng.uniform(0.01, 0.03) * rate))), ir], axis=1)
    return (ir / np.sqrt((ir**2).sum(1, keepdims=True))).astype(np.float32)


def render_song(song: Song, rng: np.random.Generator) -> np.ndarray:
    """All four stems of ``song`` as float32 ``(4, 2, samples)`` in the order of :data:`STEMS`."""
    rate = song.rate
    stems = [render_vocals(song, rng), render_drums(song, rng), render_bass(song, rng), render_other(song, rng)]
    ir = reverb_ir(rng, rate)
    sends = [rng.uniform(0.1, 0.35), rng.uniform(0.03, 0.15), rng.uniform(0.0, 0.05), rng.uniform(0.1, 0.4)]
    levels_db = [rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(-4, 2), rng.uniform(-4, 2)]
    out = []
    for i, x in enumerate(stems):
        if rng.random() < 0.5:
            x = compress(x, rate, threshold_db=rng.uniform(-20, -8), ratio=rng.uniform(2, 6))
        if rng.random() < (0.5 if STEMS[i] in ("bass", "drums") else 0.2):
            x = saturate(x, rng.uniform(1.2, 3.0))
        wet = np.stack([signal.oaconvolve(x.mean(0), ir[c])[: x.shape[1]] for c in range(2)])
        x = x + sends[i] * wet * np.sqrt(2)
        rms = np.sqrt(np.mean(x[:, np.abs(x).max(0) > 1e-4] ** 2) + 1e-12) if np.abs(x).max() > 1e-4 else 1.0
        out.append(x / rms * 10 ** ((levels_db[i] - 20) / 20))
    stems_arr = np.stack(out).astype(np.float32)
    peak = np.abs(stems_arr.sum(0)).max()
    # one gain for all stems keeps mixture = sum of stems; leave room so no stem clips either
    gain = min(10 ** (-1 / 20) / max(peak, 1e-9), 10 ** (-1 / 20) / max(np.abs(stems_arr).max(), 1e-9),
               10 ** (-14 / 20) / np.sqrt(np.mean(stems_arr.sum(0) ** 2) + 1e-12))
    return (stems_arr * gain).astype(np.float32)
