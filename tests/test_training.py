import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conditioned_sep.checkpoint import load_checkpoint
from conditioned_sep.data.folder import DatasetError
from conditioned_sep.data.folder import list_tracks
from conditioned_sep.data.sampling import SamplingConfig, StemBank, TrainingExamples
from conditioned_sep.stems import STEMS, UnknownStemError
from conditioned_sep import training
from conditioned_sep.training import (TrainConfig, TrainingError, build_model, build_parser, configs_from_args,
                                      lr_at, main, spectral_loss, train)

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path, data, **kwargs):
    base = dict(out=tmp_path / "runs", preset="tiny", dataset="folder", data_root=data, steps=20, steps_per_epoch=10,
                batch_size=4, checkpoint_every=5, valid_seconds=1.0, progress=False)
    return TrainConfig(**{**base, **kwargs})


def _log(run_dir):
    with open(run_dir / "log.csv") as f:
        return list(csv.DictReader(f))


def _fixed_batch_loss(model, data, target=None):
    bank = StemBank(list_tracks(data, "train"))
    seg = (model.config.segment_frames - 1) * model.config.hop_length
    examples = TrainingExamples(bank, SamplingConfig(segment=seg, target=target), seed=123)
    batch = examples.batch(range(16))
    model.eval()
    with torch.no_grad():
        z = batch["z"] if model.is_conditioned else None
        return float(spectral_loss(model, model, batch["mixture"], batch["target"], z))


def test_training_lowers_the_loss_and_writes_a_loadable_run(tmp_path, tiny_synthetic):
    config = _config(tmp_path, tiny_synthetic, steps=60, steps_per_epoch=20, lr=3e-3)
    before = _fixed_batch_loss(build_model(config), tiny_synthetic)
    best = train(config)
    assert best == tmp_path / "runs" / "conditioned" / "best.ckpt"
    model, meta = load_checkpoint(best)
    assert model.is_conditioned and meta["training"]["kind"] == "conditioned"
    after = _fixed_batch_loss(model, tiny_synthetic)
    assert after < 0.85 * before, (before, after)
    rows = _log(best.parent)
    assert [int(r["step"]) for r in rows] == [20, 40, 60]
    assert {f"valid_sdr_{s}" for s in STEMS} | {f"valid_mixture_sdr_{s}" for s in STEMS} <= set(rows[0])
    # the mixture-as-estimate baseline per stem: mean over stems = the overall mixture_sdr
    mix = [float(rows[0][f"valid_mixture_sdr_{s}"]) for s in STEMS]
    assert np.nanmean(mix) == pytest.approx(float(rows[0]["valid_mixture_sdr"]), rel=1e-9)
    last, last_meta = load_checkpoint(best.parent / "last.ckpt")
    assert last_meta["extra"]["state"]["step"] == 60 and "optimizer" in last_meta["extra"]
    from conditioned_sep import Separator

    out = Separator(model).separate(np.zeros((2, 4000), dtype=np.float32), stems="drums+bass", sample_rate=44100)
    assert out["drums+bass"].shape == (2, 4000)


def test_same_seed_same_losses_other_seed_other_losses(tmp_path, tiny_synthetic):
    runs = [train(_config(tmp_path, tiny_synthetic, name=f"r{i}", seed=s)) for i, s in enumerate((5, 5, 6))]
    logs = [[(r["train_loss"], r["valid_loss"]) for r in _log(p.parent)] for p in runs]
    assert logs[0] == logs[1]
    assert logs[0] != logs[2]


def test_dedicated_model_and_the_lr_schedule(tmp_path, tiny_synthetic):
    config = _config(tmp_path, tiny_synthetic, target="bass", steps=10)
    best = train(config)
    assert best.parent.name == "dedicated-bass"
    model, meta = load_checkpoint(best)
    assert not model.is_conditioned and model.config.target == "bass"
    assert set(_log(best.parent)[0]) >= {"valid_sdr_bass"} and "valid_sdr_vocals" not in _log(best.parent)[0]
    lrs = [lr_at(s, TrainConfig(steps=1000, warmup_steps=50, lr=1e-3, lr_final=0.05)) for s in (0, 49, 50, 999)]
    assert lrs[0] == pytest.approx(2e-5) and lrs[1] == pytest.approx(1e-3) and lrs[2] == pytest.approx(1e-3)
    assert lrs[3] == pytest.approx(5e-5, rel=1e-3)


def test_bad_input_is_a_clear_error_before_training(tmp_path, tiny_synthetic, hq_folder, capsys):
    with pytest.raises(DatasetError, match="does not exist"):
        train(_config(tmp_path, tmp_path / "missing"))
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no track"):
        train(_config(tmp_path, empty))
    lacks_bass = tmp_path / "lacks_bass"
    for split in ("train", "valid"):
        (lacks_bass / split).mkdir(parents=True)
        os.symlink(hq_folder / "train" / "b", lacks_bass / split / "b")
    with pytest.raises(DatasetError, match="no training track holds the stem 'bass'"):
        train(_config(tmp_path, lacks_bass, target="bass"))
    with pytest.raises(UnknownStemError, match="piano"):
        _config(tmp_path, tiny_synthetic, target="piano")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TrainingError, match="cannot write to the output folder .*--out"):
        train(_config(tmp_path, tiny_synthetic, out=blocker / "runs"))
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(_config(tmp_path, tiny_synthetic, resume=True))
    assert not (tmp_path / "runs" / "conditioned" / "last.ckpt").exists()
    # the command line turns them into a message on stderr and exit status 2 (returned, not raised)
    assert main(["--folder", str(tmp_path / "missing"), "--preset", "tiny", "--out", str(tmp_path / "runs")]) == 2
    assert "error: dataset folder" in capsys.readouterr().err
    assert main(["--dedicated", "piano", "--preset", "tiny"]) == 2
    assert "unknown stem 'piano'" in capsys.readouterr().err


def test_existing_run_needs_resume_or_overwrite(tmp_path, tiny_synthetic):
    train(_config(tmp_path, tiny_synthetic, steps=5, steps_per_epoch=5))
    with pytest.raises(TrainingError, match="already holds a run.*--resume"):
        train(_config(tmp_path, tiny_synthetic, steps=5, steps_per_epoch=5))
    train(_config(tmp_path, tiny_synthetic, steps=5, steps_per_epoch=5, overwrite=True))


def test_overwrite_removes_the_old_run_before_training(tmp_path, tiny_synthetic, monkeypatch):
    run = train(_config(tmp_path, tiny_synthetic, steps=5, steps_per_epoch=5)).parent
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out").write_text("old")
    assert {"best.ckpt", "last.ckpt", "log.csv"} <= {p.name for p in run.iterdir()}

    def killed(*args, **kwargs):  # the new run dies before its first validation
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "validate", killed)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, tiny_synthetic, steps=5, steps_per_epoch=5, overwrite=True))
    assert sorted(p.name for p in run.iterdir()) == []  # no old best.ckpt left for evaluate.py to score


def test_command_line_builds_same_budget_configs_for_all_models():
    parser = build_parser()
    configs = configs_from_args(parser.parse_args(["--all", "--steps", "50", "--preset", "tiny", "--out", "o"]))
    assert [c.run_name for c in configs] == ["conditioned"] + [f"dedicated-{s}" for s in STEMS]
    assert {c.total_steps for c in configs} == {50} and {c.dataset for c in configs} == {"default"}
    configs = configs_from_args(parser.parse_args(["--dedicated", "all", "--with-conditioned", "--musdb", "/m"]))
    assert [c.target for c in configs] == [None, *STEMS] and configs[0].dataset == "musdb"
    assert [c.target for c in configs_from_args(parser.parse_args(["--dedicated", "drums"]))] == ["drums"]
    assert configs_from_args(parser.parse_args([]))[0].total_steps == 2000  # the small preset's default budget
    with pytest.raises(TrainingError, match="--name"):
        configs_from_args(parser.parse_args(["--all", "--name", "x"]))


def test_conditioning_options_reach_the_conditioned_model_only():
    parser = build_parser()
    configs = configs_from_args(parser.parse_args(["--all", "--film-where", "encoder", "--z-input", "embedding",
                                                   "--preset", "tiny"]))
    assert configs[0].model_overrides == {"film_where": "encoder", "z_input": "embedding"}
    assert all(c.model_overrides == {} for c in configs[1:])
    model = build_model(configs[0])
    assert model.config.film_where == "encoder" and model.config.z_input == "embedding"
    with pytest.raises(TrainingError, match="dedicated model has none"):
        configs_from_args(parser.parse_args(["--dedicated", "bass", "--film", "simple"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--film-where", "middle"])


def _train_cmd(data, out, *extra):
    return [sys.executable, str(REPO / "train.py"), "--folder", str(data), "--preset", "tiny", "--out", str(out),
            "--batch-size", "4", "--steps-per-epoch", "10", "--checkpoint-every", "3", "--no-progress", *extra]


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return env


def test_kill_then_resume_gives_the_uninterrupted_run(tmp_path, tiny_synthetic):
    steps = ["--steps", "40"]
    proc = subprocess.Popen(_train_cmd(tiny_synthetic, tmp_path / "killed", *steps), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "killed" / "conditioned" / "last.ckpt"
    deadline = time.time() + 120
    step = 0
    while time.time() < deadline and proc.poll() is None:
        if last.exists():
            step = load_checkpoint(last)[1]["extra"]["state"]["step"]
            if step >= 12:
                break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(last)[1]["extra"]["state"]["step"]  # never corrupt, whenever the kill came
    assert 12 <= saved < 40
    resumed = subprocess.run(_train_cmd(tiny_synthetic, tmp_path / "killed", *steps, "--resume"), env=_env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = subprocess.run(_train_cmd(tiny_synthetic, tmp_path / "straight", *steps), env=_env(),
                               capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-2000:]
    a, b = _log(tmp_path / "killed" / "conditioned"), _log(tmp_path / "straight" / "conditioned")
    assert [r["step"] for r in a] == ["10", "20", "30", "40"]
    for ra, rb in zip(a, b):
        for key in ("train_loss", "valid_loss", "valid_sdr"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-5, abs=1e-6), (key, ra, rb)


def test_two_process_distributed_training(tmp_path, tiny_synthetic):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           *_train_cmd(tiny_synthetic, tmp_path / "ddp", "--steps", "6", "--steps-per-epoch", "3")[1:]]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "ddp" / "conditioned"
    model, meta = load_checkpoint(run / "best.ckpt")
    assert model.is_conditioned
    rows = _log(run)
    assert [int(r["examples"]) for r in rows] == [3 * 2 * 4, 6 * 2 * 4]  # two processes x batch 4 per step
    assert load_checkpoint(run / "last.ckpt")[1]["extra"]["state"]["step"] == 6


def test_distributed_run_refused_by_rank_0_stops_every_rank(tmp_path, hq_folder):
    # only rank 0 loads the validation excerpts: their missing bass must stop rank 1 too, not leave it in a
    # barrier. Two plain processes (no torchrun agent, which would kill the survivor and hide a hang).
    data = tmp_path / "no_valid_bass"
    for split, track in (("train", "a"), ("valid", "b")):
        (data / split).mkdir(parents=True)
        os.symlink(hq_folder / "train" / track, data / split / track)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = _train_cmd(data, tmp_path / "ddp", "--dedicated", "bass", "--steps", "2")
    procs = [subprocess.Popen(cmd, env=dict(_env(), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                                            LOCAL_RANK=str(r), WORLD_SIZE="2"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        errors = [proc.communicate(timeout=180)[1] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.returncode for proc in procs] == [2, 2], errors
    assert "no validation track holds the stem 'bass'" in errors[0]
    assert "rank 0 stopped the run" in errors[1]
