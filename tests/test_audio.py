import os
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import torch

from conditioned_sep.audio import (
    AudioError,
    SeekableAudio,
    TruncatedAudioWarning,
    as_float,
    read_audio,
    resample,
    validate_audio,
    write_audio,
)


def _tone(rate=8000, seconds=0.5, channels=2):
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * 440 * (c + 1) * t) for c in range(channels)]).astype(np.float32)


def test_write_read_round_trip(tmp_path):
    audio = _tone()
    path = write_audio(tmp_path / "a.wav", audio, 8000, subtype="FLOAT")
    back, rate = read_audio(path)
    assert rate == 8000 and back.shape == (2, 4000) and back.dtype == np.float32
    np.testing.assert_array_equal(back, audio)
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]  # no temporary left behind


def test_wav_and_flac_do_not_need_ffmpeg(tmp_path, monkeypatch):
    write_audio(tmp_path / "a.flac", _tone(), 8000)
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg on PATH
    back, rate = read_audio(tmp_path / "a.flac")
    assert rate == 8000 and back.shape == (2, 4000)


def test_pcm16_round_trip_within_quantisation(tmp_path):
    audio = _tone(channels=1)
    back, _ = read_audio(write_audio(tmp_path / "m.flac", torch.from_numpy(audio[0]), 8000))
    assert back.shape == (1, 4000)
    assert np.abs(back - audio).max() < 1.0 / 2**14


def test_read_resamples(tmp_path):
    write_audio(tmp_path / "a.wav", _tone(rate=8000, seconds=1.0), 8000)
    back, rate = read_audio(tmp_path / "a.wav", sample_rate=16000)
    assert rate == 16000 and back.shape == (2, 16000)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="audio file not found"):
        read_audio(tmp_path / "nope.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(AudioError, match=r"cannot read audio file .*bad\.wav"):
        read_audio(bad)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_ffmpeg_formats(tmp_path):
    import stempeg

    audio, rate = read_audio(stempeg.example_stem_path())  # first stream of a real MUSDB18 .stem.mp4: the mixture
    assert rate == 44100 and audio.shape[0] == 2 and audio.shape[1] > 44100
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(os.urandom(2000))
    with pytest.raises(AudioError, match="broken.mp3"):
        read_audio(broken)


def test_validate_audio_errors():
    with pytest.raises(AudioError, match="is empty"):
        validate_audio(np.zeros((2, 0)))
    with pytest.raises(AudioError, match="1 NaN or Inf"):
        validate_audio(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(AudioError, match="3 channels"):
        validate_audio(np.zeros((3, 10)), max_channels=2)
    validate_audio(np.full((2, 10), 3.0))  # clipping input is allowed


def test_as_float_scales_integer_pcm_and_keeps_input():
    pcm = np.array([[-32768, 0, 16384]], dtype=np.int16)
    out = as_float(pcm)
    np.testing.assert_allclose(out, [[-1.0, 0.0, 0.5]])
    assert pcm[0, 2] == 16384
    assert torch.allclose(as_float(torch.from_numpy(pcm)), torch.tensor([[-1.0, 0.0, 0.5]]))
    with pytest.raises(AudioError, match="unsupported sample type"):
        as_float(np.array(["a"]))


def test_resample_keeps_type_and_tone():
    audio = torch.from_numpy(_tone(rate=8000, seconds=1.0))
    up = resample(audio, orig_rate=8000, target_rate=12000)
    assert isinstance(up, torch.Tensor) and up.shape == (2, 12000) and up.dtype == torch.float32
    spectrum = np.abs(np.fft.rfft(up[0].numpy()))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 s long: bin index is Hz
    with pytest.raises(AudioError, match="positive"):
        resample(audio, orig_rate=0, target_rate=8000)


def _noise(rate=44100, seconds=3.0):
    return (0.1 * np.random.default_rng(0).standard_normal((2, int(rate * seconds)))).astype(np.float32)


def test_a_truncated_flac_is_an_audio_error_naming_the_file(tmp_path):
    """``flac decoder lost sync`` came out of the streaming reader as a raw LibsndfileError."""
    whole = write_audio(tmp_path / "whole.flac", _noise(), 44100).read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole[: len(whole) // 2])
    for rate in (44100, 22050):  # read in place, and resampled into the work folder
        with pytest.raises(AudioError, match=r"cannot read audio file .*cut\.flac .* after sample \d+: not a readable "
                                             r"flac file, corrupt or truncated \(.*lost sync\)"):
            with SeekableAudio(cut, sample_rate=rate, workdir=tmp_path) as song:
                song.read(0, song.frames)


def test_a_truncated_mp3_warns_and_keeps_the_length_it_holds(tmp_path):
    """A truncated mp3 was read with no warning, and its stems padded with silence to the header's length."""
    whole = write_audio(tmp_path / "whole.mp3", _noise(), 44100, subtype="MPEG_LAYER_III").read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole[: len(whole) // 2])
    held, _ = read_audio(tmp_path / "whole.mp3")
    with pytest.warns(TruncatedAudioWarning, match=r"cut\.mp3 looks truncated: its header promises 132300"):
        with SeekableAudio(cut, sample_rate=44100, workdir=tmp_path) as song:
            assert song.source_frames == song.frames < held.shape[1] // 2 + 2000


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg program")
def test_a_valid_opus_file_is_not_called_truncated(tmp_path):
    """Opus pre-skip (312 samples) counted in the declared length made every .opus file 'truncated'."""
    wav = write_audio(tmp_path / "a.wav", _noise(48000), 48000)
    opus = tmp_path / "a.opus"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(wav), "-c:a", "libopus", str(opus)], check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedAudioWarning)
        audio, rate = read_audio(opus)
        with SeekableAudio(opus, sample_rate=44100, workdir=tmp_path) as song:
            assert song.source_frames == audio.shape[1] == 144000 and rate == song.source_rate == 48000

