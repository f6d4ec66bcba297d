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
import warnings
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


class AudioWriteError(OSError):
    """A file that could not be written (disk full, no permission, ...); nothing half-written is left."""


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _soundfile_formats() -> set[str]:
    return {ext.lower() for ext in sf.available_formats()}


class TruncatedAudioWarning(UserWarning):
    """A file holds fewer samples than its header promises (cut short by a failed copy or download)."""


def read_audio(path: str | os.PathLike, *, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a file as float32 ``(channels, samples)``; resample to ``sample_rate`` when given.

    Returns ``(audio, rate)``. Raises ``FileNotFoundError`` for a missing file and :class:`AudioError` for a folder
    or a file that cannot be decoded. A file shorter than its header says is read as far as it goes, with a
    :class:`TruncatedAudioWarning`.
    """
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path} is a folder, not an audio file; pass the audio files inside it (e.g. {path}/*.wav)")
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    ext = path.suffix.lower().lstrip(".")
    if ext in _soundfile_formats():
        try:
            declared = sf.info(str(path)).frames
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as err:
            # libsndfile says "File does not exist" of files it cannot parse: never repeat that to the user
            reason = "" if "does not exist" in str(err) else f" ({str(err).rstrip('. ')})"
            raise AudioError(f"cannot read audio file {path} ({path.stat().st_size} bytes): not a readable {ext} file, "
                             f"corrupt or truncated{reason}; re-export it or convert it to wav") from err
        audio = np.ascontiguousarray(data.T)
        if ext == "wav":
            declared = _wav_declared_frames(path) or declared
    else:
        audio, rate, declared = _read_with_ffmpeg(path)
    if audio.shape[-1] == 0:
        raise AudioError(f"audio file {path} holds no samples")
    if declared and audio.shape[-1] < declared - max(1, declared // 1000):
        warnings.warn(f"{path} looks truncated: its header promises {declared} samples, the file holds "
                      f"{audio.shape[-1]}; using the {audio.shape[-1]} samples there are", TruncatedAudioWarning,
                      stacklevel=2)
    validate_audio(audio, name=str(path))
    if sample_rate is not None and sample_rate != rate:
        audio, rate = resample(audio, orig_rate=rate, target_rate=sample_rate), sample_rate
    return audio, rate


def _wav_declared_frames(path: Path) -> int | None:
    """Frames that a plain RIFF/WAVE header's ``data`` chunk declares (None for other layouts, e.g. RF64)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block_align = 12, None
    while pos + 8 <= len(head):
        chunk, size = head[pos: pos + 4], int.from_bytes(head[pos + 4: pos + 8], "little")
        if chunk == b"fmt " and pos + 22 <= len(head):
            block_align = int.from_bytes(head[pos + 20: pos + 22], "little")
        if chunk == b"data":
            # 0 and 0xFFFFFFFF mark streamed files whose writer never knew the length
            return size // block_align if block_align and 0 < size < 0xFFFFFFFF else None
        pos += 8 + size + (size & 1)
    return None


def _read_with_ffmpeg(path: Path) -> tuple[np.ndarray, int, int | None]:
    """``(audio, rate, frames the container declares or None)`` decoded by the ffmpeg program."""
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise AudioError(
            f"cannot read {path}: the {path.suffix} format needs ffmpeg (apt-get install ffmpeg), "
            "or convert the file to wav or flac first"
        )
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate,channels,duration",
         "-of", "json", str(path)],
        capture_output=True, text=True,
    )
    try:
        stream = json.loads(probe.stdout)["streams"][0]
        rate, channels = int(stream["sample_rate"]), int(stream["channels"])
    except (json.JSONDecodeError, KeyError, IndexError, ValueError) as err:
        raise AudioError(f"cannot read audio file {path} ({path.stat().st_size} bytes): ffprobe finds no audio stream "
                         f"(corrupt, truncated or not audio: {probe.stderr.strip()})") from err
    try:
        declared = int(float(stream["duration"]) * rate)
    except (KeyError, ValueError):
        declared = None
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le",
         "-"],
        capture_output=True,
    )
    if decoded.returncode != 0:
        raise AudioError(f"cannot decode audio file {path}: {decoded.stderr.decode(errors='replace').strip()}")
    flat = np.frombuffer(decoded.stdout, dtype="<f4")
    audio = np.ascontiguousarray(flat[: flat.size - flat.size % channels].reshape(-1, channels).T)
    return audio, rate, declared


def write_audio(path: str | os.PathLike, audio: Array, sample_rate: int, *, subtype: str = "PCM_16") -> Path:
    """Write ``(channels, samples)`` (or ``(samples,)``) audio atomically; the format follows the suffix.

    ``subtype`` is soundfile's (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``). Samples beyond [-1, 1] are clipped by
    integer subtypes; use ``"FLOAT"`` to keep them. NaN or Inf samples are refused (:class:`AudioError`): they would
    be written as full-scale garbage. A failed write (disk full, ...) raises :class:`AudioWriteError` and leaves
    any previous file in place.
    """
    path = Path(path)
    data = to_numpy(audio)
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2:
        raise AudioError(f"write_audio expects (channels, samples), got shape {tuple(data.shape)}")
    validate_audio(data, name=f"audio for {path}")
    try:
        with atomic_path(path) as tmp:
            sf.write(str(tmp), data.T, sample_rate, subtype=subtype)
    except (RuntimeError, sf.LibsndfileError, OSError) as err:
        if isinstance(err, (FileNotFoundError, AudioError)):
            raise
        free = shutil.disk_usage(path.parent).free
        raise AudioWriteError(f"cannot write {path} ({err}); {free / 1e6:.0f} MB free on its disk: free some space "
                              "or choose another output folder") from err
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
    # contiguous: torch cannot wrap arrays with negative strides (x[:, ::-1])
    audio = np.ascontiguousarray(audio)
    if audio.dtype.kind == "f":
        return audio
    if audio.dtype.kind == "u" and audio.dtype.itemsize == 1:
        return (audio.astype(np.float32) - 128.0) / 128.0
    if audio.dtype.kind == "i" and audio.dtype.itemsize <= 4:
        return audio.astype(np.float32) / float(2 ** (8 * audio.dtype.itemsize - 1))
    if audio.dtype.kind == "i":
        # np.array(list_of_ints) is int64 whatever the PCM width was: scaling by 2**63 would give silence
        raise AudioError(f"{name}: int64 samples do not say their PCM width; convert them first, e.g. "
                         "x.astype(np.int16) for 16-bit PCM, x.astype(np.int32) for 32-bit, or to float in [-1, 1]")
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
    peak = float(audio.abs().max()) if isinstance(audio, torch.Tensor) else float(np.abs(audio).max())
    if peak > _FLOAT32_MAX:  # finite in float64, infinite once the model computes in float32
        raise AudioError(f"{name} has samples of magnitude {peak:.3g}, beyond float32's range; audio is nominally in "
                         "[-1, 1]: rescale it (e.g. x / abs(x).max())")


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
