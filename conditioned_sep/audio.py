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
from collections.abc import Callable, Iterator
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
            raise _unreadable(path, err) from err
        audio = np.ascontiguousarray(data.T)
        if ext == "wav":
            declared = _wav_declared_frames(path) or declared
    else:
        audio, rate, declared = _read_with_ffmpeg(path)
    if audio.shape[-1] == 0:
        raise AudioError(f"audio file {path} holds no samples")
    _warn_truncated(path, declared, audio.shape[-1])
    validate_audio(audio, name=str(path))
    if sample_rate is not None and sample_rate != rate:
        audio, rate = resample(audio, orig_rate=rate, target_rate=sample_rate), sample_rate
    return audio, rate


def _unreadable(path: Path, err: Exception, *, at: int | None = None) -> AudioError:
    """The error for a file that does not decode (``at``: the sample where decoding stopped, when it began)."""
    # libsndfile says "File does not exist" of files it cannot parse: never repeat that to the user
    reason = "" if "does not exist" in str(err) else f" ({str(err).rstrip('. ')})"
    ext = path.suffix.lower().lstrip(".")
    where = "" if at is None else f" after sample {at}"
    return AudioError(f"cannot read audio file {path} ({path.stat().st_size} bytes){where}: not a readable {ext} "
                      f"file, corrupt or truncated{reason}; re-export it or convert it to wav")


def _warn_truncated(path: Path, declared: int | None, frames: int) -> None:
    if declared and frames < declared - max(1, declared // 1000):
        warnings.warn(f"{path} looks truncated: its header promises {declared} samples, the file holds {frames}; "
                      f"using the {frames} samples there are", TruncatedAudioWarning, stacklevel=3)


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


def _probe(path: Path) -> tuple[int, int, int | None]:
    """``(rate, channels, frames the container declares or None)`` of a file the ffmpeg program decodes.

    The declared length leaves out an Opus stream's pre-skip (the encoder's priming samples, 312 at 48 kHz by
    default), which ffmpeg drops when decoding: counting it made every valid ``.opus`` file look truncated.
    """
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise AudioError(
            f"cannot read {path}: the {path.suffix} format needs ffmpeg (apt-get install ffmpeg), "
            "or convert the file to wav or flac first"
        )
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=codec_name,sample_rate,channels,duration", "-of", "json", str(path)],
        capture_output=True, text=True,
    )
    try:
        stream = json.loads(probe.stdout)["streams"][0]
        rate, channels = int(stream["sample_rate"]), int(stream["channels"])
    except (json.JSONDecodeError, KeyError, IndexError, ValueError) as err:
        raise AudioError(f"cannot read audio file {path} ({path.stat().st_size} bytes): ffprobe finds no audio stream "
                         f"(corrupt, truncated or not audio: {probe.stderr.strip()})") from err
    try:
        declared = round(float(stream["duration"]) * rate)
    except (KeyError, ValueError):
        return rate, channels, None
    if stream.get("codec_name") == "opus":
        declared -= _opus_pre_skip(path)
    return rate, channels, declared


def _opus_pre_skip(path: Path) -> int:
    """The pre-skip of an Opus stream (RFC 7845: ``OpusHead``, version, channels, then pre-skip as 16-bit little
    endian), read from the file's first 64 kB; 0 when the header is not found there."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    at = head.find(b"OpusHead")
    if at < 0 or at + 12 > len(head):
        return 0
    return int.from_bytes(head[at + 10: at + 12], "little")


def _read_with_ffmpeg(path: Path) -> tuple[np.ndarray, int, int | None]:
    """``(audio, rate, frames the container declares or None)`` decoded by the ffmpeg program."""
    rate, channels, declared = _probe(path)
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
        raise _write_failed(path, err) from err
    return path


def _write_failed(path: Path, err: Exception, *, what: str | None = None) -> AudioWriteError:
    """The error of a failed write of ``path`` (``what`` names a temporary file by its role), with the free space
    on its disk."""
    free = shutil.disk_usage(path.parent).free
    target = f"{what} in {path.parent}" if what else str(path)
    return AudioWriteError(f"cannot write {target} ({str(err).strip() or type(err).__name__}); {free / 1e6:.0f} MB "
                           "free on its disk: free some space or choose another output folder")


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


# --------------------------------------------------------------------------------------------------------------
# Streaming: a song read and its stems written block by block, never held whole
# --------------------------------------------------------------------------------------------------------------

STREAM_BLOCK = 1 << 18
"""Samples per block when a file is decoded or resampled on its way in or out (~6 s at 44.1 kHz)."""

OUTPUT_FORMATS: dict[str, tuple[str, ...]] = {
    "wav": ("PCM_16", "PCM_24", "FLOAT"),
    "flac": ("PCM_16", "PCM_24"),
    "mp3": ("MPEG_LAYER_III",),
}
"""Output format -> the soundfile subtypes it takes (the first is the default)."""

OUTPUT_RATES: dict[str, tuple[int, ...]] = {
    "mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
}
"""Output format -> the only sample rates it takes (MPEG-1, 2 and 2.5 layer III); formats not listed take any."""


def output_subtype(format: str, subtype: str | None = None) -> str:
    """The soundfile subtype to write ``format`` with: ``subtype``, or the format's default when None. Raises
    ``ValueError`` for an unknown format or a subtype the format does not take."""
    if format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    takes = OUTPUT_FORMATS[format]
    subtype = subtype or takes[0]
    if subtype not in takes:
        raise ValueError(f"{format} takes the sample formats {', '.join(takes)}, got {subtype!r}; pick one of those "
                         f"(or leave it out: {takes[0]}), or another format (wav takes "
                         f"{', '.join(OUTPUT_FORMATS['wav'])})")
    return subtype


def check_output_rate(format: str, rate: int, *, name: str) -> None:
    """Raise :class:`AudioError` when ``format`` cannot hold audio at ``rate`` Hz (``name``: the song)."""
    rates = OUTPUT_RATES.get(format)
    if rates is not None and rate not in rates:
        nearest = min((r for r in rates if r >= rate), default=rates[-1])
        raise AudioError(f"{name} is at {rate} Hz, and {format} takes only {', '.join(map(str, rates))} Hz: write "
                         f"wav or flac for this song, or resample it to {nearest} Hz first (e.g. ffmpeg -i in -ar "
                         f"{nearest} out.wav)")


class SeekableAudio:
    """A song on disk, readable at any offset at ``sample_rate``: ``read(lo, hi) -> float32 (channels, hi - lo)``.

    Formats soundfile reads are read in place when already at ``sample_rate``; anything else is first decoded
    (ffmpeg) and / or resampled (soxr, streaming) block by block into float wav files in ``workdir``, so memory
    stays bounded by a block whatever the song's length. ``frames`` is the length at ``sample_rate``;
    ``source_rate`` and ``source_frames`` those of the file. Use as a context manager (closes the file).
    """

    def __init__(self, path: str | os.PathLike, *, sample_rate: int, workdir: str | os.PathLike,
                 check_rate: Callable[[int], None] | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            raise AudioError(f"{path} is a folder, not an audio file; pass the audio files inside it "
                             f"(e.g. {path}/*.wav)")
        if not path.is_file():
            raise FileNotFoundError(f"audio file not found: {path}")
        self.path, workdir = path, Path(workdir)
        declared = None
        if path.suffix.lower().lstrip(".") in _soundfile_formats():
            source = path
            if path.suffix.lower() == ".wav":
                declared = _wav_declared_frames(path)
        else:
            source, declared = workdir / "decoded.wav", _decode_to_wav(path, workdir / "decoded.wav")
        try:
            self._file = sf.SoundFile(str(source))
        except (RuntimeError, sf.LibsndfileError) as err:
            raise _unreadable(path, err) from err
        try:
            self.source_rate, self.channels = int(self._file.samplerate), int(self._file.channels)
            if self.channels > 2:
                raise AudioError(f"{path} has {self.channels} channels; at most 2 are supported: mix it down to "
                                 "stereo first (e.g. ffmpeg -i in -ac 2 out.wav)")
            if check_rate is not None:
                check_rate(self.source_rate)  # before a long resampling, not after it
            declared = declared or self._file.frames
            self.source_frames = self._count_frames()
            _warn_truncated(path, declared, self.source_frames)
            if self.source_rate != sample_rate:
                self._file = _resampled_copy(self._file, path, sample_rate, workdir / "resampled.wav")
            self.sample_rate = sample_rate
            self.frames = self._count_frames()
            if self.frames == 0:
                raise AudioError(f"audio file {path} holds no samples")
        except BaseException:
            self.close()
            raise

    def _count_frames(self) -> int:
        """Frames that really decode: a truncated mp3 promises more than it holds (libsndfile names the format
        MPEG or MP3, by version)."""
        if self._file.format not in ("MPEG", "MP3"):
            return int(self._file.frames)
        return sum(len(block) for block in _blocks(self._file, self.path))

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Samples ``[lo, hi)`` at :attr:`sample_rate`, float32 ``(channels, hi - lo)``; :class:`AudioError` for
        NaN or Inf samples and for a file that stops decoding (corrupt or truncated)."""
        try:
            self._file.seek(lo)
            data = self._file.read(hi - lo, dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as err:
            raise _unreadable(self.path, err, at=lo) from err
        out = np.zeros((self.channels, hi - lo), dtype=np.float32)
        out[:, : len(data)] = data.T
        validate_audio(out, name=f"{self.path} (samples {lo}..{hi})")
        return out

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SeekableAudio:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _decode_to_wav(path: Path, out: Path) -> int | None:
    """Decode ``path`` with the ffmpeg program into a float wav ``out`` (streamed to disk, not memory); returns the
    frames the container declares (None when it does not say)."""
    _, _, declared = _probe(path)
    done = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(path), "-map", "0:a:0",
                           "-acodec", "pcm_f32le", str(out)], capture_output=True)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        if "No space left" in message:
            raise _write_failed(out, OSError(message), what=f"a decoded copy of {path}")
        raise AudioError(f"cannot decode audio file {path}: {message}")
    return declared


def _blocks(file: sf.SoundFile, path: Path) -> Iterator[np.ndarray]:
    """``file`` from its start, block by block as float32 ``(m, channels)``; a block that does not decode is an
    :class:`AudioError` naming ``path``."""
    file.seek(0)
    done = 0
    while True:
        try:
            block = file.read(STREAM_BLOCK, dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as err:
            raise _unreadable(path, err, at=done) from err
        if not len(block):
            return
        done += len(block)
        yield block


def _resampled_copy(file: sf.SoundFile, path: Path, rate: int, out: Path) -> sf.SoundFile:
    """``file`` resampled to ``rate`` (soxr HQ, streaming) into a float wav ``out``, opened for reading. A write
    that fails (a full disk) is an :class:`AudioWriteError` with the free space."""
    stream = soxr.ResampleStream(file.samplerate, rate, file.channels, dtype="float32", quality="HQ")
    what = f"a resampled copy of {path.name}"
    try:
        dst = sf.SoundFile(str(out), "w", samplerate=rate, channels=file.channels, subtype="FLOAT")
    except (RuntimeError, OSError) as err:
        raise _write_failed(out, err, what=what) from err
    with file, dst:
        for block in _blocks(file, path):
            validate_audio(block, name=str(path))
            _write_block(dst, stream.resample_chunk(block), what=what)
        _write_block(dst, stream.resample_chunk(np.zeros((0, file.channels), np.float32), last=True), what=what)
    return sf.SoundFile(str(out))


def _write_block(dst: sf.SoundFile, data: np.ndarray, *, what: str | None = None) -> None:
    try:
        dst.write(data)
    except (RuntimeError, OSError) as err:  # libsndfile's "System error." is a full disk, among others
        raise _write_failed(Path(dst.name), err, what=what) from err


class StemWriter:
    """Writes one output file block by block, resampling from ``from_rate`` to ``to_rate`` on the way (soxr,
    streaming) and ending with exactly ``frames`` samples. Refuses NaN or Inf samples (:class:`AudioError`);
    a failed write is an :class:`AudioWriteError`."""

    def __init__(self, path: str | os.PathLike, *, channels: int, from_rate: int, to_rate: int, frames: int,
                 subtype: str) -> None:
        self.path, self.frames, self.written = Path(path), frames, 0
        self._stream = (soxr.ResampleStream(from_rate, to_rate, channels, dtype="float32", quality="HQ")
                        if from_rate != to_rate else None)
        self.channels = channels
        try:
            self._file = sf.SoundFile(str(self.path), "w", samplerate=to_rate, channels=channels, subtype=subtype)
        except (RuntimeError, sf.LibsndfileError) as err:
            raise AudioWriteError(f"cannot write {self.path.name} as {subtype} at {to_rate} Hz, {channels} "
                                  f"channel(s) ({err})") from err

    def write(self, block: np.ndarray, *, last: bool = False) -> None:
        """Append ``block (channels, m)`` at ``from_rate``; ``last`` flushes the resampler and fixes the length."""
        if block.shape[-1]:
            validate_audio(block, name=f"audio for {self.path}")
        data = np.ascontiguousarray(block.T, dtype=np.float32)
        if self._stream is not None:
            data = self._stream.resample_chunk(data, last=last)
        data = data[: self.frames - self.written]
        if last and self.written + len(data) < self.frames:
            data = np.concatenate([data, np.zeros((self.frames - self.written - len(data), self.channels), np.float32)])
        _write_block(self._file, data)
        self.written += len(data)

    def close(self) -> None:
        self._file.close()
