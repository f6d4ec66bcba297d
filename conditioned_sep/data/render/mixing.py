"""Mixing like a record: each part is levelled, equalised, sometimes compressed or saturated, placed in the stereo
field and sent to the song's room; stems are balanced like MUSDB18's (vocals usually on top); a master limiter
tames the peaks. Bus and master dynamics are one gain curve applied to every part under them, so a stem is still
the exact sum of its parts and the mixture the exact sum of the stems.

    mixed = mix(parts, stems_of, rng, sample_rate=44100)     # {part: float32 (2, samples)}
    stems = quantize_stems(mixed, stems_of)                   # {stem: int16 (2, samples)}, sums exact
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from ...stems import COARSE_OF, STEMS
from ..oscillators import compress, reverb_ir, saturate

PCM_SCALE = 32768.0
CEILING = 10 ** (-1.0 / 20)  # peak of the loudest stem or mixture after the master (dBFS -1)


@dataclass(frozen=True)
class MixConfig:
    """Levels in dB. A stem's level is its active RMS relative to the vocals (drawn uniformly in the range);
    ``mixture_rms_db`` is the mixture's RMS in dBFS before the peak ceiling."""

    drums_db: tuple[float, float] = (-5.0, -1.0)
    bass_db: tuple[float, float] = (-7.0, -2.0)
    other_db: tuple[float, float] = (-5.0, 0.0)
    mixture_rms_db: tuple[float, float] = (-17.0, -13.0)


SENDS = {"vocals": (0.08, 0.3), "drums": (0.02, 0.12), "bass": (0.0, 0.04), "other": (0.06, 0.3)}
HIGHPASS_HZ = {"vocals": (80, 140), "drums": (25, 45), "bass": (25, 40), "other": (60, 200)}


ACTIVE_BLOCK = 1024  # samples per block when judging where a part plays
ACTIVE_DB = -60.0  # a block quieter than this relative to the loudest block is a rest


def active_rms(x: np.ndarray) -> float:
    """RMS over the blocks of ~23 ms where ``x`` ``(channels, n)`` plays (within 60 dB of its loudest block), so a
    part that rests half the song is not judged quieter for it; 0.0 for silence."""
    n = x.shape[-1] // ACTIVE_BLOCK * ACTIVE_BLOCK
    blocks = x[:, :n].reshape(x.shape[0], -1, ACTIVE_BLOCK) if n else x[:, None, :]
    power = np.square(blocks, dtype=np.float64).mean(axis=(0, 2))
    if power.max() <= 0.0:
        return 0.0
    return float(np.sqrt(power[power > power.max() * 10 ** (ACTIVE_DB / 10)].mean()))


def _biquad(kind: str, f0: float, gain_db: float, q: float, rate: int) -> np.ndarray:
    """One RBJ-cookbook biquad as an sos row: ``peak``, ``lowshelf``, ``highshelf``."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / rate
    alpha = np.sin(w0) / (2 * q)
    cos = np.cos(w0)
    if kind == "peak":
        b = [1 + alpha * a, -2 * cos, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cos, 1 - alpha / a]
    else:
        sq = 2 * np.sqrt(a) * alpha
        sign = 1 if kind == "lowshelf" else -1
        b = [a * ((a + 1) - sign * (a - 1) * cos + sq), sign * 2 * a * ((a - 1) - sign * (a + 1) * cos),
             a * ((a + 1) - sign * (a - 1) * cos - sq)]
        den = [(a + 1) + sign * (a - 1) * cos + sq, -sign * 2 * ((a - 1) + sign * (a + 1) * cos),
               (a + 1) + sign * (a - 1) * cos - sq]
    return np.concatenate([np.array(b) / den[0], np.array(den) / den[0]])


def equalise(x: np.ndarray, rng: np.random.Generator, *, rate: int, highpass_hz: float) -> np.ndarray:
    """A high-pass, a low shelf, one bell and a high shelf, each drawn per part. ``(2, n)`` -> ``(2, n)``."""
    sos = [signal.butter(2, highpass_hz, btype="highpass", fs=rate, output="sos")[0],
           _biquad("lowshelf", rng.uniform(120, 300), rng.uniform(-4, 3), 0.7, rate),
           _biquad("peak", float(np.exp(rng.uniform(np.log(300), np.log(5000)))), rng.uniform(-5, 4),
                   rng.uniform(0.7, 2.0), rate),
           _biquad("highshelf", rng.uniform(5000, 10000), rng.uniform(-5, 4), 0.7, rate)]
    return signal.sosfilt(np.stack(sos), x, axis=-1).astype(np.float32)


def place_stereo(x: np.ndarray, *, position: float, width: float) -> np.ndarray:
    """Narrow or widen (``width`` 0..1.5 scales the side signal) and pan (``position`` -1..1, constant power)."""
    mid, side = (x[0] + x[1]) / 2, (x[0] - x[1]) / 2 * width
    theta = (position + 1) * np.pi / 4
    return np.stack([(mid + side) * np.cos(theta) * np.sqrt(2), (mid - side) * np.sin(theta) * np.sqrt(2)]
                    ).astype(np.float32)


def gain_curve(x: np.ndarray, rate: int, *, threshold_db: float, ratio: float, attack: float = 0.005,
               release: float = 0.12) -> np.ndarray:
    """A compressor's gain ``(n,)`` driven by ``x`` ``(2, n)`` (threshold in dB re ``x``'s peak): the same curve
    multiplies every part of a bus, so the bus stays their sum."""
    level = np.abs(x).max(0).astype(np.float64)
    att, rel = np.exp(-1 / (attack * rate)), np.exp(-1 / (release * rate))
    # peak follower: fast up (attack), slow down (release); two one-pole passes approximate it without a loop
    env = signal.lfilter([1 - rel], [1, -rel], level)
    env = np.maximum(env, signal.lfilter([1 - att], [1, -att], level))
    thr = 10 ** (threshold_db / 20) * (level.max() + 1e-12)
    return np.minimum(1.0, (np.maximum(env, 1e-12) / thr) ** (1.0 / ratio - 1.0)).astype(np.float32)


def mix(parts: dict[str, np.ndarray], stem_of: dict[str, str], rng: np.random.Generator, *, sample_rate: int,
        config: MixConfig | None = None) -> dict[str, np.ndarray]:
    """Mix the dry ``parts`` (float32 ``(2, n)`` each, keyed by part name; ``stem_of`` gives each part's fine stem).

    Returns the processed parts (same keys), scaled so that no stem and no mixture peaks above :data:`CEILING`.
    """
    config = config or MixConfig()
    ir = reverb_ir(rng, sample_rate)
    out: dict[str, np.ndarray] = {}
    for name, dry in parts.items():
        coarse = COARSE_OF[stem_of[name]]
        rms = active_rms(dry)
        if rms == 0.0:
            out[name] = np.zeros_like(dry)
            continue
        x = dry / rms * 0.1
        x = equalise(x, rng, rate=sample_rate, highpass_hz=rng.uniform(*HIGHPASS_HZ[coarse]))
        if rng.random() < (0.6 if coarse in ("vocals", "bass", "drums") else 0.35):
            x = compress(x, sample_rate, threshold_db=rng.uniform(-22, -8), ratio=rng.uniform(2, 6))
        if rng.random() < {"drums": 0.3, "bass": 0.3, "vocals": 0.1}.get(coarse, 0.12):
            x = saturate(x, rng.uniform(1.2, 3.0))
        position = rng.uniform(-0.12, 0.12) if coarse in ("vocals", "bass") else rng.uniform(-0.7, 0.7)
        width = rng.uniform(0.0, 0.4) if coarse in ("vocals", "bass") else rng.uniform(0.5, 1.3)
        if coarse == "drums":
            position, width = rng.uniform(-0.1, 0.1), rng.uniform(0.8, 1.2)  # the kit keeps its own panning
        x = place_stereo(x, position=position, width=width)
        send = rng.uniform(*SENDS[coarse])
        wet = np.stack([signal.oaconvolve(x.mean(0), ir[c])[: x.shape[1]] for c in range(2)])
        x = x + send * np.sqrt(2) * wet.astype(np.float32)
        level = active_rms(x)
        within_db = 0.0 if len([p for p in parts if COARSE_OF[stem_of[p]] == coarse]) == 1 else rng.uniform(-6, 0)
        out[name] = (x / max(level, 1e-12) * 10 ** (within_db / 20)).astype(np.float32)
    _balance(out, stem_of, rng, config, sample_rate=sample_rate)
    _master(out, stem_of, rng, sample_rate=sample_rate, config=config)
    return out


def _stem_sum(parts: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    return np.sum([parts[n] for n in names], axis=0)


def _groups(stem_of: dict[str, str], names) -> dict[str, list[str]]:
    """Part names of every coarse and fine stem that has parts (a coarse stem lists all of its parts)."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(stem_of[n], []).append(n)
        if COARSE_OF[stem_of[n]] != stem_of[n]:
            groups.setdefault(COARSE_OF[stem_of[n]], []).append(n)
    return groups


def _balance(parts: dict[str, np.ndarray], stem_of: dict[str, str], rng: np.random.Generator, config: MixConfig,
             *, sample_rate: int) -> None:
    """Each coarse stem to its level relative to the vocals; drum and other buses glued by a gentle compressor."""
    targets = {"vocals": 0.0, "drums": rng.uniform(*config.drums_db), "bass": rng.uniform(*config.bass_db),
               "other": rng.uniform(*config.other_db)}
    groups = _groups(stem_of, parts)
    for stem in STEMS:
        names = groups.get(stem, [])
        if not names:
            continue
        bus = _stem_sum(parts, names)
        level = active_rms(bus)
        if level == 0.0:
            continue
        gain = 10 ** ((targets[stem] - 20) / 20) / level
        glue = stem in ("drums", "other") and rng.random() < 0.5
        curve = gain_curve(bus, sample_rate, threshold_db=rng.uniform(-12, -4), ratio=rng.uniform(1.5, 3)) \
            if glue else np.float32(1.0)
        for n in names:
            parts[n] = (parts[n] * gain * curve).astype(np.float32)


def _master(parts: dict[str, np.ndarray], stem_of: dict[str, str], rng: np.random.Generator, *, sample_rate: int,
            config: MixConfig) -> None:
    """Mixture to its loudness, a limiter's gain curve on every part, then one scale so that no part, stem or
    mixture peaks above the ceiling (a stem can peak higher than the mixture where stems cancel)."""
    names = list(parts)
    mixture = _stem_sum(parts, names)
    rms = float(np.sqrt(np.mean(mixture**2)))
    if rms == 0.0:
        return
    gain = 10 ** (rng.uniform(*config.mixture_rms_db) / 20) / rms
    limiter = gain_curve(mixture * gain, sample_rate, threshold_db=-1.5, ratio=20.0, attack=0.001, release=0.08)
    for n in names:
        parts[n] = (parts[n] * gain * limiter).astype(np.float32)
    groups = [names, *_groups(stem_of, names).values(), *([n] for n in names)]
    peak = max(float(np.abs(_stem_sum(parts, g)).max()) for g in groups)
    if peak > CEILING:
        for n in names:
            parts[n] = (parts[n] * (CEILING / peak)).astype(np.float32)


def quantize_stems(parts: dict[str, np.ndarray], stem_of: dict[str, str]) -> dict[str, np.ndarray]:
    """16-bit stems whose sums are exact: every part is rounded to the 16-bit grid first, then each fine stem is the
    integer sum of its parts, ``other`` the sum of its fine stems, ``mixture`` the sum of the four coarse stems.

    Returns int16 ``(2, n)`` arrays for the four coarse stems (silence when a stem has no part), the mixture and
    every fine stem that has a part.
    """
    n = next(iter(parts.values())).shape[-1]
    q = {name: np.round(x * PCM_SCALE).astype(np.int32) for name, x in parts.items()}
    out: dict[str, np.ndarray] = {}
    for stem, names in _groups(stem_of, parts).items():
        out[stem] = np.sum([q[name] for name in names], axis=0)
    for stem in STEMS:
        out.setdefault(stem, np.zeros((2, n), dtype=np.int32))
    out["mixture"] = np.sum([out[s] for s in STEMS], axis=0)
    for stem, x in out.items():
        if np.abs(x).max() > 32767:
            raise ValueError(f"stem {stem} exceeds 16 bits after mixing; lower MixConfig levels")
    return {stem: x.astype(np.int16) for stem, x in out.items()}
