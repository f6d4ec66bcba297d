"""The conditioned-sep command: separate on real files (wav, flac, mp3, mp4, a broken one), errors, dispatch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conditioned_sep import cli
from conditioned_sep.audio import read_audio, write_audio

RATE = 44100


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    import torch

    from conditioned_sep.checkpoint import save_checkpoint
    from conditioned_sep.models import ConditionedUNet

    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    paths = {"conditioned": root / "run" / "conditioned" / "best.ckpt"}
    for stem in ("vocals", "drums"):
        paths[stem] = root / "run" / f"dedicated-{stem}" / "best.ckpt"
    for name, path in paths.items():
        path.parent.mkdir(parents=True)
        model = (ConditionedUNet.from_preset("tiny") if name == "conditioned"
                 else ConditionedUNet.from_preset("tiny", conditioned=False, target=name))
        save_checkpoint(path, model.eval())
    return paths


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("songs")
    t = np.arange(int(1.5 * RATE)) / RATE
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    out = {"wav": write_audio(root / "song.wav", stereo, RATE),
           "flac": write_audio(root / "mono song.flac", stereo[:1], 22050)}
    out["mp3"] = write_audio(root / "song.mp3", stereo, RATE, subtype="MPEG_LAYER_III")
    if shutil.which("ffmpeg"):
        out["mp4"] = root / "song 4.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(out["wav"]), "-c:a", "aac", str(out["mp4"])],
                       check=True)
    broken = root / "broken.wav"
    broken.write_bytes(b"RIFF this is not audio at all" * 10)
    out["broken"] = broken
    return out


def test_separate_real_files_with_a_broken_one(tmp_path, checkpoints, songs, capsys):
    files = [str(songs[k]) for k in ("wav", "broken", "flac", "mp3", "mp4") if k in songs]
    code = cli.main(["separate", *files, "--stems", "vocals,drums+bass", "-o", str(tmp_path),
                     "--checkpoint", str(checkpoints["conditioned"]), "--no-progress"])
    assert code == 1  # something failed, and the exit code says so
    err = capsys.readouterr().err
    assert "broken.wav" in err and "1 song(s) failed" in err
    # song.wav and song.mp3 share a name: the second one keeps its full file name
    folders = {"wav": "song", "flac": "mono song", "mp3": "song.mp3", "mp4": "song 4"}
    for key in ("wav", "flac", "mp3", "mp4"):
        if key not in songs:
            continue
        source, source_rate = read_audio(songs[key])
        name = folders[key]
        for query in ("vocals", "drums+bass"):
            audio, rate = read_audio(tmp_path / name / f"{query}.wav")
            assert rate == source_rate and audio.shape[0] == source.shape[0], (key, query)
            assert audio.shape[1] == source.shape[1], (key, query)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(folders[k] for k in folders if k in songs)


def test_separate_run_folder_and_dedicated_set(tmp_path, checkpoints, songs):
    run = checkpoints["conditioned"].parent.parent
    assert cli.main(["separate", str(songs["wav"]), "-o", str(tmp_path / "a"), "-c", str(run), "--no-progress",
                     "-s", "accompaniment"]) == 0
    assert (tmp_path / "a" / "song" / "accompaniment.wav").is_file()
    pair = ["-c", str(checkpoints["vocals"]), "-c", str(checkpoints["drums"].parent)]
    assert cli.main(["separate", *pair, str(songs["wav"]), "-o", str(tmp_path / "b"), "--no-progress",
                     "-s", "vocals,vocals+drums"]) == 0
    assert sorted(p.name for p in (tmp_path / "b" / "song").glob("*.wav")) == ["vocals+drums.wav", "vocals.wav"]
    # without --stems: every stem the checkpoints separate
    pair = ["-c", f"{checkpoints['vocals']},{checkpoints['drums']}"]
    assert cli.main(["separate", str(songs["wav"]), "-o", str(tmp_path / "c"), *pair, "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "c" / "song").glob("*.wav")) == ["drums.wav", "vocals.wav"]


@pytest.mark.parametrize("args, message", [
    (["--stems", "vocals,guitar"], "unknown stem 'guitar'"),
    (["--checkpoint", "/nonexistent/model.ckpt"], "checkpoint not found"),
])
def test_separate_usage_errors_before_any_song(tmp_path, checkpoints, songs, capsys, args, message):
    argv = ["separate", str(songs["wav"]), "-o", str(tmp_path), "--no-progress"]
    if "--checkpoint" not in args:
        argv += ["--checkpoint", str(checkpoints["conditioned"])]
    assert cli.main(argv + args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "song").exists()


def test_dedicated_set_refuses_a_stem_it_has_no_model_for(tmp_path, checkpoints, songs, capsys):
    argv = ["separate", str(songs["wav"]), "-o", str(tmp_path), "--no-progress", "-s", "bass",
            "-c", str(checkpoints["vocals"]), "-c", str(checkpoints["drums"])]
    assert cli.main(argv) == 2
    assert "no model for bass" in capsys.readouterr().err


def test_missing_song_is_an_error_not_a_crash(tmp_path, checkpoints, songs, capsys):
    code = cli.main(["separate", str(tmp_path / "nope.wav"), str(songs["wav"]), "-o", str(tmp_path / "o"),
                     "-c", str(checkpoints["conditioned"]), "--no-progress"])
    assert code == 1
    assert "audio file not found" in capsys.readouterr().err
    assert len(list((tmp_path / "o" / "song").glob("*.wav"))) == 4


def test_dispatch_help_and_unknown_command(capsys):
    assert cli.main(["--help"]) == 0
    assert "separate" in capsys.readouterr().out
    assert cli.main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert cli.main(["--version"]) == 0 and capsys.readouterr().out.startswith("conditioned-sep ")
    # train and evaluate are the parsers of train.py and evaluate.py, under the command's name
    assert cli.main(["evaluate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "conditioned-sep evaluate" in out and "CHECKPOINT_OR_SET" in out
    assert cli.run("evaluate", ["--help"], prog="evaluate.py") == 0
    assert capsys.readouterr().out.startswith("usage: evaluate.py")
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "conditioned-sep train" in out and "--dedicated" in out
    what = out[out.index("what to train:"):out.index("budget and optimisation:")]
    assert all(option in what for option in ("--arch {unet,bandsplit}", "--seeds N", "--preset"))
    assert "--budget {equal-compute,equal-steps}" in out


def test_console_script_smoke(tmp_path, checkpoints, songs):
    """One real process, as a user runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "conditioned_sep.cli", "separate", str(songs["wav"]), "-s", "bass", "-o", str(tmp_path),
         "-c", str(checkpoints["conditioned"])],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "song" / "bass.wav").is_file()


def test_train_and_evaluate_reach_every_dataset_kind():
    from conditioned_sep.data.sources import DATASET_KINDS, ROOTED_KINDS

    for command in ("train", "evaluate"):
        parser = cli.argparse.ArgumentParser()
        cli.COMMANDS[command][1](parser)
        reached = {}
        for kind in DATASET_KINDS:
            argv = [f"--{kind}", "/data/x"] if kind in ROOTED_KINDS else ["--dataset", kind]
            reached[kind] = cli._dataset(parser.parse_args(argv)).kind
        assert reached == {kind: kind for kind in DATASET_KINDS}, command
