"""Audio in and out: read, write, resample and validate. The one place for audio I/O.

Audio is channels-first everywhere: ``(channels, samples)`` for one signal, float32 in [-1, 1] nominally
(louder is allowed: clipping input is separated, not refused). Sample rates are in Hz.

wav, flac, ogg and aiff are read with soundfile; other formats (mp3, mp4, m4a, ...) are decoded with the
``ffmpeg`` program when it is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from .fileio import atomic_path

Array = np.ndarray | torch.Tensor


SILENCE_DB = -50.0
"""Where the project decides what is silent (a training target, a validation stem): mean power below this many dB
re full scale. BSS Eval's own rule (any exactly-zero source) stays in :mod:`conditioned_sep.metrics`, where it
must match museval."""


def power_db(audio: np.ndarray) -> float:
    """Mean power of ``audio`` (any shape) in dB re full scale; -inf for digital silence."""
    power = float(np.mean(np.square(audio, dtype=np.float64)))
    return 10.0 * np.log10(power) if power > 0 else -np.inf


def is_silent(audio: np.ndarray, *, threshold_db: float = SILENCE_DB) -> bool:
    """True when the mean power of ``audio`` is below ``threshold_db`` (:data:`SILENCE_DB`)."""
    return power_db(audio) < threshold_db


class AudioError(ValueError):
    """Audio that cannot be used: unreadable file, NaN or Inf samples, empty or badly shaped input."""


def _soundfile_formats() -> set[str]:
    return {ext.lower() for ext in sf.available_formats()}


def read_audio(path: str | os.PathLike, *, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a file as float32 ``(channels, samples)``; resample to ``sample_rate`` when given.

    Returns ``(audio, rate)``. Raises ``FileNotFoundError`` for a missing file and :class:`AudioError`
    for a file that cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    ext = path.suffix.lower().lstrip(".")
    if ext in _soundfile_formats():
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as err:
            reason = str(err).rstrip(". ")
            raise AudioError(f"cannot read audio file {path}: {reason}. Is it a valid {ext} file?") from err
        audio = np.ascontiguousarray(data.T)
    else:
        audio, rate = _read_with_ffmpeg(path)
    if audio.shape[-1] == 0:
        raise AudioError(f"audio file {path} holds no samples")
    validate_audio(audio, name=str(path))
    if sample_rate is not None and sample_rate != rate:
        audio, rate = resample(audio, orig_rate=rate, target_rate=sample_rate), sample_rate
    return audio, rate


def _read_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise AudioError(
            f"cannot read {path}: the {path.suffix} format needs ffmpeg (apt-get install ffmpeg), "
            "or convert the file to wav or flac first"
        )
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate,channels",
         "-of", "json", str(path)],
        capture_output=True, text=True,
    )
    try:
        stream = json.loads(probe.stdout)["streams"][0]
        rate, channels = int(stream["sample_rate"]), int(stream["channels"])
    except (json.JSONDecodeError, KeyError, IndexError, ValueError) as err:
        raise AudioError(f"cannot read audio file {path}: ffprobe finds no audio stream ({probe.stderr.strip()})") from err
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le",
         "-"],
        capture_output=True,
    )
    if decoded.returncode != 0:
        raise AudioError(f"cannot decode audio file {path}: {decoded.stderr.decode(errors='replace').strip()}")
    flat = np.frombuffer(decoded.stdout, dtype="<f4")
    audio = np.ascontiguousarray(flat[: flat.size - flat.size % channels].reshape(-1, channels).T)
    return audio, rate


def write_audio(path: str | os.PathLike, audio: Array, sample_rate: int, *, subtype: str = "PCM_16") -> Path:
    """Write ``(channels, samples)`` (or ``(samples,)``) audio atomically; the format follows the suffix.

    ``subtype`` is soundfile's (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``). Samples beyond [-1, 1] are clipped by
    integer subtypes; use ``"FLOAT"`` to keep them.
    """
    path = Path(path)
    data = to_numpy(audio)
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2:
        raise AudioError(f"write_audio expects (channels, samples), got shape {tuple(data.shape)}")
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data.T, sample_rate, subtype=subtype)
    return path


def to_numpy(audio: Array) -> np.ndarray:
    """A numpy view (or copy) of ``audio``, detached from autograd and moved to the CPU."""
    if isinstance(audio, torch.Tensor):
        return audio.detach().cpu().numpy()
    return np.asarray(audio)


def as_float(audio: Array, *, name: str = "audio") -> Array:
    """Float audio from float or integer PCM: int16 / int32 / uint8 are scaled to [-1, 1]; the input is never modified.

    Keeps the container type (numpy stays numpy, torch stays torch); float64 stays float64.
    """
    dtype = audio.dtype
    if isinstance(audio, torch.Tensor):
        if dtype == torch.bool or dtype.is_complex:
            raise AudioError(f"{name}: expected real audio samples, got dtype {dtype}")
        if dtype.is_floating_point:
            return audio
        scale = {torch.int16: 2**15, torch.int32: 2**31, torch.int8: 2**7}.get(dtype)
        if dtype == torch.uint8:
            return (audio.float() - 128.0) / 128.0
        if scale is None:
            raise AudioError(f"{name}: unsupported sample type {dtype}; use float, int16 or int32")
        return audio.float() / scale
    audio = np.asarray(audio)
    if audio.dtype.kind == "f":
        return audio
    if audio.dtype.kind == "u" and audio.dtype.itemsize == 1:
        return (audio.astype(np.float32) - 128.0) / 128.0
    if audio.dtype.kind == "i":
        return audio.astype(np.float32) / float(2 ** (8 * audio.dtype.itemsize - 1))
    raise AudioError(f"{name}: unsupported sample type {audio.dtype}; use float, int16 or int32")


def validate_audio(audio: Array, *, name: str = "audio", max_channels: int | None = None) -> None:
    """Raise :class:`AudioError` for empty audio, NaN or Inf samples, or too many channels.

    ``audio`` is ``(samples,)`` or ``(channels, samples)`` (or with leading batch dimensions).
    """
    shape = tuple(audio.shape)
    if len(shape) == 0 or shape[-1] == 0 or 0 in shape:
        raise AudioError(f"{name} is empty (shape {shape}); pass at least one sample per channel")
    if max_channels is not None and len(shape) >= 2 and shape[-2] > max_channels:
        raise AudioError(
            f"{name} has {shape[-2]} channels (shape {shape}); at most {max_channels} are supported: "
            "pass (channels, samples) with channels first, mono or stereo"
        )
    finite = torch.isfinite(audio) if isinstance(audio, torch.Tensor) else np.isfinite(audio)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise AudioError(f"{name} contains {bad} NaN or Inf sample(s); clean the signal (e.g. nan_to_num) first")


def resample(audio: Array, *, orig_rate: int, target_rate: int) -> Array:
    """Resample ``(..., samples)`` audio with soxr (high quality); keeps numpy / torch and the dtype.

    Not differentiable: it is for input and output, not for training losses.
    """
    if orig_rate <= 0 or target_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    if orig_rate == target_rate:
        return audio
    data = to_numpy(audio)
    lead = data.shape[:-1]
    flat = data.reshape(-1, data.shape[-1]).astype(np.float64 if data.dtype == np.float64 else np.float32)
    out = soxr.resample(flat.T, orig_rate, target_rate, quality="HQ").T
    out = np.ascontiguousarray(out.reshape(*lead, out.shape[-1]))
    if isinstance(audio, torch.Tensor):
        return torch.from_numpy(out).to(device=audio.device, dtype=audio.dtype)
    return out.astype(data.dtype, copy=False)
