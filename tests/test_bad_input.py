"""The gallery of bad inputs a hostile or careless user tried, grouped by surface: each answer is a clear error
that names the problem and the way out (or, where the input is usable, a notice), and nothing already written is
lost or half-written. Tiny models (untrained, tiny preset) and short audio."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conditioned_sep import Separator, cli
from conditioned_sep.audio import AudioError, AudioWriteError, TruncatedAudioWarning, read_audio, write_audio
from conditioned_sep.checkpoint import CheckpointError
from conditioned_sep.data.folder import DatasetError, read_track
from conditioned_sep.data.sources import DatasetSpec, prepare
from conditioned_sep.stems import UnknownStemError

RATE = 44100


def _stereo(seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((2, int(seconds * RATE)))).astype(np.float32)


@pytest.fixture(scope="module")
def separator(run_folder) -> Separator:
    return Separator.load(run_folder / "conditioned")


# ---- Python API -------------------------------------------------------------------------------------------------


def test_int64_numpy_input_is_refused_not_silenced(separator):
    pcm = np.array([[1000, -2000, 3000] * 200] * 2)  # what np.array(list_of_ints) gives: int64
    assert pcm.dtype == np.int64
    with pytest.raises(AudioError, match=r"int64 samples do not say their PCM width; convert them first, e\.g\. "
                                         r"x\.astype\(np\.int16\)"):
        separator.separate(pcm, "vocals", sample_rate=RATE)
    out = separator.separate(pcm.astype(np.int16), "vocals", sample_rate=RATE)["vocals"]
    assert out.shape == (2, 600) and float(out.abs().max()) > 0


def test_float64_beyond_float32_range_is_refused(separator):
    x = _stereo().astype(np.float64)
    x[0, 10] = 1e39  # finite in float64, inf in float32: used to come back as NaN stems
    with pytest.raises(AudioError, match=r"beyond float32's range.*rescale it"):
        separator.separate(x, "vocals", sample_rate=RATE)


def test_negative_stride_array_is_separated_like_its_copy(separator):
    x = _stereo()
    flipped = x[:, ::-1]
    assert flipped.strides[1] < 0
    a = separator.separate(flipped, "drums", sample_rate=RATE)["drums"]
    b = separator.separate(flipped.copy(), "drums", sample_rate=RATE)["drums"]
    assert np.array_equal(a.numpy(), b.numpy())


def test_stems_of_the_wrong_type_name_the_valid_forms(separator):
    with pytest.raises(UnknownStemError, match=r"stems must be a name such as 'vocals'.*got int 3"):
        separator.separate(_stereo(), 3, sample_rate=RATE)


def test_a_folder_given_as_a_song(separator, tmp_path):
    with pytest.raises(AudioError, match=r"is a folder, not an audio file; pass the audio files inside it"):
        separator.separate(tmp_path)


def test_a_100_byte_mp3_does_not_claim_it_does_not_exist(tmp_path):
    good = write_audio(tmp_path / "song.mp3", _stereo(1.0), RATE, subtype="MPEG_LAYER_III")
    bad = tmp_path / "tiny.mp3"
    bad.write_bytes(good.read_bytes()[:100])
    with pytest.raises(AudioError) as err:
        read_audio(bad)
    message = str(err.value)
    assert "does not exist" not in message
    assert "100 bytes" in message and "corrupt or truncated" in message


def test_truncated_wav_is_read_with_a_notice(tmp_path):
    path = write_audio(tmp_path / "song.wav", _stereo(1.0), RATE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(TruncatedAudioWarning, match=r"looks truncated: its header promises 44100 samples"):
        audio, rate = read_audio(path)
    assert 0 < audio.shape[1] < RATE
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a whole file: no notice
        read_audio(write_audio(tmp_path / "whole.wav", _stereo(1.0), RATE))


def test_missing_checkpoint_is_a_checkpoint_error_and_a_model_folder_loads(run_folder, tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*missing\.ckpt"):
        Separator.load(tmp_path / "missing.ckpt")
    assert Separator.load(run_folder / "conditioned").is_conditioned  # the folder holds best.ckpt


def test_non_finite_audio_is_never_written(tmp_path):
    x = _stereo()
    x[1, 5] = np.nan
    with pytest.raises(AudioError, match="NaN or Inf"):
        write_audio(tmp_path / "nan.wav", x, RATE)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_old_file_and_says_what_to_do(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "song.wav", _stereo(), RATE)
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise sf.LibsndfileError(2, prefix="Error writing: ")

    monkeypatch.setattr(sf, "write", full_disk)
    with pytest.raises(AudioWriteError, match=r"cannot write .*song\.wav.*MB free on its disk: free some space"):
        write_audio(path, _stereo(seed=1), RATE)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav"]  # no temporary file left


# ---- conditioned-sep separate -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_songs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("two")
    return [write_audio(root / f"{name}.wav", _stereo(0.5, i), RATE) for i, name in enumerate(("one", "two"))]


def test_separate_into_an_existing_file(tmp_path, run_folder, two_songs, capsys):
    target = tmp_path / "out.txt"
    target.write_text("mine")
    code = cli.main(["separate", str(two_songs[0]), "-o", str(target), "-c", str(run_folder), "--no-progress"])
    assert code == 2
    assert "output folder" in capsys.readouterr().err and target.read_text() == "mine"


def test_disk_full_fails_one_song_and_goes_on(tmp_path, run_folder, two_songs, capsys, monkeypatch):
    real = sf.SoundFile.write

    def full_for_song_one(self, data):
        if "/.one.partial-" in self.name:  # the folder of song one, before it is published
            raise sf.LibsndfileError(2, prefix="Error writing: ")
        return real(self, data)

    monkeypatch.setattr(sf.SoundFile, "write", full_for_song_one)
    code = cli.main(["separate", *map(str, two_songs), "-s", "vocals", "-o", str(tmp_path), "-c", str(run_folder),
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "free some space" in err and "1 song(s) failed" in err
    assert (tmp_path / "two" / "vocals.wav").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]  # nothing half-written of song one


def test_non_finite_stems_are_refused_and_the_exit_code_says_so(tmp_path, run_folder, two_songs, capsys,
                                                                  monkeypatch):
    import torch

    def broken(self, x, queries):  # a diverged model: NaN estimates
        return torch.full((len(queries), *x.shape), float("nan"))

    monkeypatch.setattr(Separator, "_run", broken)
    code = cli.main(["separate", str(two_songs[0]), "-s", "vocals", "-o", str(tmp_path), "-c", str(run_folder),
                     "--no-progress"])
    assert code == 1 and "NaN or Inf" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.wav")) and not list(tmp_path.iterdir())


def _separate(*args: str) -> list[str]:
    return ["separate", *args, "--no-progress"]


def test_a_truncated_flac_fails_its_song_and_the_batch_goes_on(tmp_path, run_folder, two_songs, capsys):
    """``flac decoder lost sync`` raised a raw LibsndfileError and stopped the batch."""
    whole = write_audio(tmp_path / "whole.flac", _stereo(3.0), RATE).read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    code = cli.main(_separate(str(two_songs[0]), str(cut), str(two_songs[1]), "-s", "vocals", "-o", str(out),
                              "-c", str(run_folder)))
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert re.search(r"error: .*cut\.flac: cannot read audio file .*cut\.flac .*corrupt or truncated", err)
    assert "1 song(s) failed" in err and "for 2 of 3 song(s)" in err
    assert sorted(p.name for p in out.iterdir()) == ["one", "two"]  # the song after it was separated


def test_a_full_disk_while_resampling_fails_its_song_and_the_batch_goes_on(tmp_path, run_folder, two_songs, capsys,
                                                                            monkeypatch):
    """A 48 kHz song on a full disk: ``LibsndfileError: System error.`` stopped the batch."""
    high = write_audio(tmp_path / "high.wav", _stereo(1.0), 48000)
    real = sf.SoundFile.write

    def full(self, data):
        if self.name.endswith("resampled.wav"):
            raise sf.LibsndfileError(2, prefix="System error: ")
        return real(self, data)

    monkeypatch.setattr(sf.SoundFile, "write", full)
    out = tmp_path / "out"
    code = cli.main(_separate(str(high), str(two_songs[0]), "-s", "vocals", "-o", str(out), "-c", str(run_folder)))
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert re.search(r"high\.wav: cannot write a resampled copy of high\.wav in .*; \d+ MB free on its disk", err)
    assert sorted(p.name for p in out.iterdir()) == ["one"]  # no scratch folder left, the next song done


@pytest.mark.parametrize("args, message", [
    (["-f", "flac", "--subtype", "FLOAT"], "flac takes the sample formats PCM_16, PCM_24, got 'FLOAT'"),
    (["-f", "mp3", "--subtype", "PCM_16"], "mp3 takes the sample formats MPEG_LAYER_III, got 'PCM_16'"),
    (["--device", "bogus"], "device must be auto, cpu, cuda or cuda:N, got 'bogus'"),
    (["--device", "cuda:99"], "device 'cuda:99' asked for, but"),
])
def test_separate_options_that_cannot_work_are_usage_errors(tmp_path, run_folder, capsys, args, message):
    """Refused per song with exit 1 (the format / subtype mismatch), or a traceback (the device): now a usage error
    before any song is read (the song does not even exist)."""
    code = cli.main(_separate(str(tmp_path / "not read.wav"), "-o", str(tmp_path / "out"), "-c", str(run_folder),
                              *args))
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and "not read" not in err
    assert not (tmp_path / "out").exists()


def test_a_read_only_output_folder_is_a_usage_error_naming_it(tmp_path, run_folder, two_songs, capsys, monkeypatch):
    """A read-only -o named an internal temporary folder (``.pcm16.work-*``) once per song."""
    from conditioned_sep import fileio

    out = tmp_path / "read-only"
    out.mkdir()
    real = fileio.tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):  # the tests run as root, whom chmod does not stop
        if dir is not None and Path(dir) == out:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    code = cli.main(_separate(*map(str, two_songs), "-o", str(out), "-c", str(run_folder)))
    err = capsys.readouterr().err
    assert code == 2 and f"cannot write to the folder {out} (Permission denied)" in err and ".work" not in err


def test_separate_into_a_folder_the_user_filled_is_refused_per_song(tmp_path, run_folder, two_songs, capsys):
    """Re-separating replaces our own earlier output; a song folder holding the user's files is left alone."""
    out = tmp_path / "out"
    argv = _separate(*map(str, two_songs), "-o", str(out), "-c", str(run_folder))
    assert cli.main(argv + ["-s", "vocals"]) == 0
    (out / "one" / "notes.txt").write_text("mine")
    assert cli.main(argv + ["-s", "drums"]) == 1
    err = capsys.readouterr().err
    assert "one holds files conditioned-sep did not write (notes.txt)" in err and "pass another -o" in err
    assert sorted(p.name for p in (out / "one").glob("*.*")) == [".conditioned-sep.json", "notes.txt", "vocals.wav"]
    assert sorted(p.name for p in (out / "two").glob("*.wav")) == ["drums.wav"]  # our own folder: replaced


_SLOW_SEPARATE = """
import sys, time
from conditioned_sep import cli
from conditioned_sep.separator import Separator
run, calls = Separator._run, []
def stuck(self, x, queries):  # the first chunk is separated and written, then the song never ends
    calls.append(1)
    while len(calls) > 1:
        time.sleep(0.05)
    return run(self, x, queries)
Separator._run = stuck
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_separate_cleans_up_keeps_the_old_folder_and_says_so(tmp_path, run_folder, signum, code):
    """SIGTERM left the hidden partial folder and the work folder (78 MB for a 5-minute song); Ctrl-C cleaned up
    but ended in a KeyboardInterrupt traceback with no summary."""
    from conditioned_sep.fileio import atomic_folder

    song = write_audio(tmp_path / "long.wav", _stereo(25.0), 48000)  # 48 kHz: resampled in a work folder
    out = tmp_path / "out"
    out.mkdir()
    with atomic_folder(out / "long", replace=True) as tmp:  # an earlier separation of the song
        (tmp / "vocals.wav").write_bytes(b"earlier")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SEPARATE, *_separate(str(song), str(song), "-s", "vocals",
                                                                               "-o", str(out), "-c", str(run_folder))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    deadline = time.monotonic() + 120
    partial = []
    while time.monotonic() < deadline and not partial and proc.poll() is None:
        time.sleep(0.02)
        partial = [p for p in out.glob(".long.partial-*/vocals.wav") if p.stat().st_size > 44]  # stems half written
    assert partial and list(out.glob(".long.work*")), "never got half way"
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert (f"interrupted ({signal.Signals(signum).name}) during {song}: its folder was not written (an earlier "
            f"one is kept); 0 of 2 song(s) done (0 file(s) in {out}), 0 failed, 1 not started") in err
    assert sorted(p.name for p in out.iterdir()) == ["long"]  # no partial folder, no work folder
    assert (out / "long" / "vocals.wav").read_bytes() == b"earlier"


# ---- train.py ---------------------------------------------------------------------------------------------------


def test_a_song_given_as_the_training_folder(tmp_path):
    song = write_audio(tmp_path / "song.wav", _stereo(), RATE)
    with pytest.raises(DatasetError, match=r"song\.wav is a file; pass the folder that holds"):
        prepare(DatasetSpec("folder", song))


# ---- evaluate.py ------------------------------------------------------------------------------------------------


def test_stems_of_different_lengths_are_padded_with_a_notice(tmp_path):
    write_audio(tmp_path / "vocals.wav", _stereo(1.0), RATE)
    write_audio(tmp_path / "drums.wav", _stereo(0.5), RATE)
    with pytest.warns(UserWarning, match=r"different lengths in samples.*padded with silence"):
        track = read_track(tmp_path)
    assert track.num_samples == RATE and track.load().shape == (4, 2, RATE)


def test_a_whole_track_silent_stem_has_no_new_sdr(tmp_path, run_folder):
    from conditioned_sep.evaluation import EvalConfig, evaluate
    from conditioned_sep.runs import discover_models

    folder = tmp_path / "data" / "test" / "song"
    folder.mkdir(parents=True)
    for i, stem in enumerate(("vocals", "drums", "other")):  # no bass file: a silent bass reference
        write_audio(folder / f"{stem}.wav", _stereo(2.0, seed=i), RATE)
    result = evaluate(EvalConfig(models=discover_models([str(run_folder / "conditioned")]), out=tmp_path / "out",
                                 dataset=DatasetSpec("folder", tmp_path / "data"), sums=(), progress=False))
    bass = [s for s in result.scores if s.condition == "bass"]
    assert bass and all(np.isnan(s.new_sdr) for s in bass)  # MDX's formula would say -100 dB
    vocals = [s for s in result.scores if s.condition == "vocals"]
    assert all(np.isfinite(s.new_sdr) for s in vocals)
    assert "new SDR is left out too" in result.markdown


def test_a_killed_parallel_evaluation_leaves_no_worker_behind(tmp_path, run_folder, hq_folder):
    """SIGKILL the evaluation while its two worker processes run: the workers must end on their own."""
    script = (f"import sys; sys.argv = ['evaluate.py', {str(run_folder)!r}, '--folder', {str(hq_folder)!r}, "
              f"'--split', 'train', '--out', {str(tmp_path / 'out')!r}, '--jobs', '2', '--no-progress', '--restart']\n"
              "from conditioned_sep.cli import run\nrun('evaluate', sys.argv[1:])\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(children) < 2:
        time.sleep(0.2)
        out = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
        children = [int(p) for p in out]
    assert len(children) >= 2, "the evaluation did not start its workers"
    time.sleep(1.0)  # let the workers reach their initialiser
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    alive = children
    while alive and time.monotonic() < deadline:
        time.sleep(0.3)
        alive = [p for p in alive if _running(p)]
    assert not alive, f"worker processes {alive} outlived the killed evaluation"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its new parent) is gone for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


# ---- checkpoints and model sets ---------------------------------------------------------------------------------


def test_a_dedicated_set_suggests_only_what_it_can_answer(run_folder):
    pair = Separator.load([run_folder / "dedicated-vocals", run_folder / "dedicated-drums"])
    with pytest.raises(UnknownStemError) as err:
        pair.separate(_stereo(), "bass", sample_rate=RATE)
    message = str(err.value)
    assert "stems vocals, drums" in message and "'vocals+drums'" in message
    assert "bass" not in message.split("valid:")[1] and "accompaniment" not in message


def test_a_bad_sample_rate_in_a_checkpoint_is_refused_at_load_naming_the_file(tmp_path):
    import torch

    from conditioned_sep.checkpoint import save_checkpoint
    from conditioned_sep.models import ConditionedUNet

    torch.manual_seed(0)
    model = ConditionedUNet.from_preset("tiny")
    model.config.sample_rate = -44100  # what a hand-edited or foreign file can hold
    path = save_checkpoint(tmp_path / "odd.ckpt", model)
    with pytest.raises(CheckpointError, match=r"odd\.ckpt.*sample_rate must be a positive number of Hz"):
        Separator.load(path)
