import csv
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conditioned_sep import Separator, cli, training
from conditioned_sep.checkpoint import load_checkpoint, save_checkpoint
from conditioned_sep.data.folder import DatasetError, list_tracks
from conditioned_sep.hardware import DeviceError, apply_threads, resolve_device
from conditioned_sep.data.sampling import SamplingConfig, StemBank, TrainingExamples, validation_excerpts
from conditioned_sep.runs import discover_models
from conditioned_sep.stems import STEMS, UnknownStemError
from conditioned_sep.cli import train_configs as configs_from_args
from conditioned_sep.training import (TrainConfig, TrainingError, build_model, lr_at,
                                      separation_loss, train, validate)


def main(argv: list[str]) -> int:
    """``python train.py ARGV`` in process: the command line lives in conditioned_sep.cli."""
    return cli.run("train", argv, prog="train.py")


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(prog="train.py")
    cli.add_train_arguments(parser)
    return parser

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path, data, **kwargs):
    base = dict(out=tmp_path / "runs", preset="tiny", dataset="folder", data_root=data, steps=20, steps_per_epoch=10,
                batch_size=4, checkpoint_every=5, valid_seconds=1.0, progress=False, device="cpu", workers=0)
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
        return float(separation_loss(model, batch["mixture"], batch["target"], z)[0])


def _files(run_dir):
    """``{file name: bytes}`` of a run folder: what a refused run must leave untouched."""
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


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
    out = Separator(model).separate(np.zeros((2, 4000), dtype=np.float32), stems="drums+bass", sample_rate=44100)
    assert out["drums+bass"].shape == (2, 4000)


def test_same_seed_same_losses_whatever_the_loader_workers_other_seed_other_losses(tmp_path, tiny_synthetic):
    # one thread each: thread counts change float reductions, and auto gives each worker count its own
    runs = [train(_config(tmp_path, tiny_synthetic, name=f"r{i}", seed=s, workers=w, threads=1))
            for i, (s, w) in enumerate(((5, 0), (5, 2), (6, 0)))]
    logs = [[(r["train_loss"], r["valid_loss"]) for r in _log(p.parent)] for p in runs]
    assert logs[0] == logs[1]  # examples drawn in two worker processes are those of the main thread
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
    with pytest.raises(TrainingError, match="cannot write to the folder .*--out"):
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


def test_overwrite_deletes_nothing_until_every_check_passed(tmp_path, tiny_synthetic, hq_folder, capsys):
    run = train(_config(tmp_path, tiny_synthetic, steps=5, steps_per_epoch=5)).parent
    before = _files(run)
    assert {"best.ckpt", "last.ckpt", "log.csv"} <= set(before)
    # a typo in the data folder, a stem the data lacks, a bad number: each refused, the old run kept whole
    with pytest.raises(DatasetError, match="does not exist"):
        train(_config(tmp_path, tmp_path / "typo", overwrite=True))
    lacks_bass = tmp_path / "lacks_bass"
    for split in ("train", "valid"):
        (lacks_bass / split).mkdir(parents=True)
        os.symlink(hq_folder / "train" / "b", lacks_bass / split / "b")
    with pytest.raises(DatasetError, match="no training track holds the stem 'bass'"):
        train(_config(tmp_path, lacks_bass, target="bass", name="conditioned", overwrite=True))
    args = ["--folder", str(tiny_synthetic), "--preset", "tiny", "--out", str(tmp_path / "runs"), "--overwrite"]
    assert main([*args, "--lr", "-1"]) == 2
    assert "lr must be a positive number (--lr), got -1" in capsys.readouterr().err
    assert main([*args[:1], str(tmp_path / "typo"), *args[2:]]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _files(run) == before


@pytest.mark.parametrize("settings, message", [
    (dict(lr=-1), "lr must be a positive number"),
    (dict(lr=float("nan")), "lr must be a positive number"),
    (dict(patience=0), r"patience must be a positive number \(--patience\)"),
    (dict(time_limit=-1), r"time_limit must be a positive number of minutes \(--time-limit\), got -1"),
    (dict(accumulate=0), "accumulate must be a positive number"),
    (dict(warmup_steps=-1), "warmup_steps must be >= 0"),
    (dict(workers=-1), "workers must be >= 0"),
    (dict(ema_decay=1.0), r"ema_decay must be in \[0, 1\)"),
    (dict(lr_final=2.0), "lr_final must be in"),
    (dict(precision="fp8"), "precision must be one of"),
    (dict(device="cpu", precision="fp16"), "fp16 needs a CUDA device.*bf16"),
    (dict(device="gpu"), "device must be auto, cpu, cuda or cuda:N"),
    (dict(threads=0), "threads must be auto or a positive number"),
    (dict(threads="many"), "threads must be auto or a positive number"),
    (dict(resume=True, overwrite=True), "pass one of them"),
    (dict(arch="transformer"), "unknown arch 'transformer'; choose one of"),
    (dict(arch="bandsplit", model_overrides={"film": "simple"}), r"\['film'\] are not fields of the bandsplit"),
    (dict(budget_scale=0), "budget_scale must be a whole number >= 1"),
    (dict(stems=("vocals", "drums", "bass", "piano", "guitar")),
     r"list parts of other \(piano, guitar\) but not 'other': add 'other' as the remainder \(--stems "
     r"vocals,drums,bass,piano,guitar,other\)"),
    (dict(name="../../escaped"), r"name must be a plain folder name, without / or .. \(--name\), got '../../escaped'"),
    (dict(name="a/b"), "name must be a plain folder name"),
    (dict(name=".."), "name must be a plain folder name"),
])
def test_bad_settings_are_refused_with_the_option_to_fix(settings, message):
    with pytest.raises(TrainingError, match=message):
        TrainConfig(**settings)


def test_devices_threads_and_precision_resolve_or_refuse(tmp_path, tiny_synthetic):
    assert TrainConfig(threads="3").threads == 3  # as the command line passes it
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available.*--device cpu"):
            resolve_device("cuda:1")
        # auto resolves to the CPU here: fp16 is refused before anything is written
        with pytest.raises(TrainingError, match="fp16 needs a CUDA device"):
            train(_config(tmp_path, tiny_synthetic, device="auto", precision="fp16"))
        assert not (tmp_path / "runs" / "conditioned" / "last.ckpt").exists()
    threads = torch.get_num_threads()
    try:
        apply_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    train(_config(tmp_path, tiny_synthetic, steps=2, steps_per_epoch=2, threads=1, name="threads"))
    assert torch.get_num_threads() == threads  # train() leaves the caller's setting as it found it


def test_one_loss_for_training_and_validation(tiny_synthetic):
    model = build_model(TrainConfig(preset="tiny")).eval()
    excerpts = validation_excerpts(list_tracks(tiny_synthetic, "valid")[:1], seconds=0.5)
    _, sources = excerpts[0]
    mixture, refs = torch.from_numpy(sources.sum(0))[None], torch.from_numpy(sources)
    z = torch.eye(len(STEMS))
    with torch.no_grad():
        spec_loss, est = separation_loss(model, mixture, refs, z)
        both, _ = separation_loss(model, mixture, refs, z, wave_weight=2.0)
        wave = (model.istft(est, length=mixture.shape[-1]) - refs).abs().mean()
    assert float(both) == pytest.approx(float(spec_loss + 2.0 * wave), rel=1e-5)
    assert float(wave) > 0
    assert validate(model, excerpts)["loss"] == pytest.approx(float(spec_loss), rel=1e-6)
    assert validate(model, excerpts, wave_weight=2.0)["loss"] == pytest.approx(float(both), rel=1e-6)


class _FixedEstimate(torch.nn.Module):
    """Stands in for a network: returns the target's spectrogram times a fixed complex factor."""

    def __init__(self, model, factor: complex) -> None:
        super().__init__()
        self.model, self.factor = model, factor
        self.stft, self.istft, self.complex_mask = model.stft, model.istft, model.complex_mask

    def forward(self, spec, z):
        return self.reference * self.factor


@pytest.mark.parametrize("arch", ["unet", "bandsplit"])
def test_a_complex_mask_is_scored_on_the_phase_too(arch):
    # a rotated estimate has the right magnitude: free for the U-Net's magnitude mask, wrong for a complex mask
    model = build_model(TrainConfig(arch=arch, preset="tiny")).eval()
    gen = torch.Generator().manual_seed(0)
    mixture, target = torch.randn(1, 2, 4096, generator=gen), torch.randn(1, 2, 4096, generator=gen)
    losses = {}
    for name, factor in (("exact", 1.0), ("rotated", 1j)):
        net = _FixedEstimate(model, factor)
        net.reference = model.stft(target)
        with torch.no_grad():
            losses[name] = float(separation_loss(net, mixture, target, None)[0])
    assert losses["exact"] == pytest.approx(0.0, abs=1e-6)
    if model.complex_mask:
        assert losses["rotated"] > 0.1
    else:
        assert losses["rotated"] == pytest.approx(0.0, abs=1e-6)


def test_bf16_autocast_and_weight_average_train_on_cpu(tmp_path, tiny_synthetic):
    config = _config(tmp_path, tiny_synthetic, steps=60, steps_per_epoch=20, lr=3e-3, precision="bf16", ema_decay=0.9)
    before = _fixed_batch_loss(build_model(config), tiny_synthetic)
    best = train(config)
    averaged, meta = load_checkpoint(best)  # auto: the averaged weights
    raw, raw_meta = load_checkpoint(best, weights="raw")
    assert meta["weights"] == "ema" and raw_meta["weights"] == "raw"
    assert any(not torch.equal(a, b) for a, b in zip(averaged.state_dict().values(), raw.state_dict().values()))
    after = _fixed_batch_loss(averaged, tiny_synthetic)
    assert after < 0.9 * before, (before, after)
    # the averaged weights are what was validated and selected best.ckpt
    best_row = max(_log(best.parent), key=lambda r: float(r["valid_sdr"]))
    excerpts = validation_excerpts(list_tracks(tiny_synthetic, "valid"), seconds=1.0)
    assert validate(averaged, excerpts)["sdr"] == pytest.approx(float(best_row["valid_sdr"]), rel=1e-5, abs=1e-5)
    assert validate(raw, excerpts)["sdr"] != pytest.approx(float(best_row["valid_sdr"]), rel=1e-5, abs=1e-5)
    # the Separator loads the averaged weights
    (separating,) = Separator.load(best).models.values()
    assert all(torch.equal(a, b) for a, b in zip(separating.state_dict().values(), averaged.state_dict().values()))
    assert load_checkpoint(best.parent / "last.ckpt")[1]["weights"] == "ema"


def test_gradient_accumulation_counts_micro_batches(tmp_path, tiny_synthetic):
    best = train(_config(tmp_path, tiny_synthetic, steps=4, steps_per_epoch=2, batch_size=2, accumulate=3))
    assert [int(r["examples"]) for r in _log(best.parent)] == [2 * 3 * 2, 4 * 3 * 2]


def test_diverged_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_synthetic):
    # lr 1e6 blows the batch-norm statistics up to inf while the loss stays finite (masks saturate)
    with pytest.raises(TrainingError, match=r"diverged at step \d+: non-finite values in the weight .*lower --lr "
                                            r"\(now 1e\+06\).*no checkpoint was written"):
        train(_config(tmp_path, tiny_synthetic, lr=1e6, name="wild"))
    assert not (tmp_path / "runs" / "wild" / "last.ckpt").exists()
    assert not (tmp_path / "runs" / "wild" / "best.ckpt").exists()
    # a run that trained well and then diverges keeps its last good checkpoint, and says so
    good = train(_config(tmp_path, tiny_synthetic, steps=10, name="good")).parent
    kept = _files(good)
    with pytest.raises(TrainingError, match=r"diverged .*last good checkpoint .*step 10\) is kept"):
        train(_config(tmp_path, tiny_synthetic, steps=20, name="good", lr=1e6, resume=True))
    assert _files(good) == kept
    model, meta = load_checkpoint(good / "last.ckpt")  # loads: every weight finite
    assert meta["extra"]["state"]["step"] == 10


def test_disk_full_stops_with_a_way_out_and_resume_finishes(tmp_path, tiny_synthetic, monkeypatch):
    real_fsync, calls = os.fsync, []

    def disk_full_after_one_write(fd):
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_full_after_one_write)
    config = _config(tmp_path, tiny_synthetic)
    with pytest.raises(TrainingError, match=r"cannot write .*best.ckpt at step 10 \(No space left on device\): "
                                            r"free space .*--resume continues from the last checkpoint \(step 5\)"):
        train(config)
    monkeypatch.setattr(os, "fsync", real_fsync)
    run = config.run_dir
    assert sorted(p.name for p in run.iterdir()) == ["last.ckpt"]  # no temporary file left behind
    assert load_checkpoint(run / "last.ckpt")[1]["extra"]["state"]["step"] == 5
    train(_config(tmp_path, tiny_synthetic, resume=True))
    assert [int(r["step"]) for r in _log(run)] == [10, 20]


def test_resume_reproduces_the_run_and_reads_old_last_checkpoints(tmp_path, tiny_synthetic, monkeypatch):
    straight = train(_config(tmp_path, tiny_synthetic, name="straight", ema_decay=0.5)).parent
    real_step = training.Trainer.train_step

    def killed_at_step_13(self, batch):
        if self.state.step == 13:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(training.Trainer, "train_step", killed_at_step_13)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, tiny_synthetic, name="killed", ema_decay=0.5))
    monkeypatch.undo()
    last = tmp_path / "runs" / "killed" / "last.ckpt"
    model, meta = load_checkpoint(last, weights="raw")
    averaged, _ = load_checkpoint(last, weights="ema")
    extra = meta["extra"]
    assert extra["state"]["step"] == 10
    # rewrite it as runs before this version did: early stopping inside the state, an RNG entry (now ignored)
    early = extra.pop("early_stopping")
    extra["state"].update(best_sdr=early["best"], best_epoch=early["best_epoch"], bad_epochs=early["bad_epochs"])
    extra["rng"] = {"torch": torch.get_rng_state()}
    save_checkpoint(last, model, training=meta["training"], extra=extra, ema_state=averaged.state_dict())
    train(_config(tmp_path, tiny_synthetic, name="killed", ema_decay=0.5, resume=True))
    a, b = _log(straight), _log(last.parent)
    assert [r["step"] for r in b] == ["10", "20"]
    for ra, rb in zip(a, b):
        for key in ("train_loss", "valid_loss", "valid_sdr", "best"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-6, abs=1e-7), (key, ra, rb)
    final = [load_checkpoint(run / "best.ckpt")[0].state_dict() for run in (straight, last.parent)]
    assert all(torch.allclose(final[0][k], final[1][k], rtol=1e-5, atol=1e-6) for k in final[0])


def test_command_line_builds_same_budget_configs_for_all_models():
    parser = build_parser()
    argv = ["--all", "--steps", "50", "--preset", "tiny", "--out", "o", "--budget", "equal-steps"]
    configs = configs_from_args(parser.parse_args(argv))
    assert [c.run_name for c in configs] == ["conditioned"] + [f"dedicated-{s}" for s in STEMS]
    assert {c.total_steps for c in configs} == {50} and {c.dataset for c in configs} == {"default"}
    assert {c.arch for c in configs} == {"unet"} and {c.budget_scale for c in configs} == {1}
    configs = configs_from_args(parser.parse_args(["--dedicated", "all", "--with-conditioned", "--musdb", "/m"]))
    assert [c.target for c in configs] == [None, *STEMS] and configs[0].dataset == "musdb"
    assert [c.target for c in configs_from_args(parser.parse_args(["--dedicated", "drums"]))] == ["drums"]
    assert configs_from_args(parser.parse_args(["--budget", "equal-steps"]))[0].total_steps == 2000  # small's
    with pytest.raises(TrainingError, match="--name"):
        configs_from_args(parser.parse_args(["--all", "--name", "x"]))


def test_equal_compute_gives_the_conditioned_model_the_dedicated_models_sum():
    parser = build_parser()

    def budgets(*argv, **kwargs):
        return [(c.target, c.total_steps, c.epochs, c.time_limit, c.budget_scale)
                for c in configs_from_args(parser.parse_args(list(argv)), **kwargs)]

    n = len(STEMS)
    assert budgets("--all", "--steps", "50") == [(None, 50 * n, None, None, n)] + [(s, 50, None, None, 1)
                                                                                     for s in STEMS]
    # epochs and time limits scale too (the step budget follows the epochs)
    got = budgets("--dedicated", "all", "--with-conditioned", "--epochs", "2", "--steps-per-epoch", "10",
                  "--time-limit", "1.5")
    assert got[0] == (None, 2 * n * 10, 2 * n, 1.5 * n, n) and got[1] == ("vocals", 20, 2, 1.5, 1)
    # one dedicated model beside it: the same budget; the conditioned model alone: the budget x the stems
    assert budgets("--dedicated", "bass", "--with-conditioned", "--steps", "7") == [(None, 7, None, None, 1),
                                                                                  ("bass", 7, None, None, 1)]
    assert budgets("--preset", "tiny") == [(None, 200 * n, None, None, n)]  # the preset's default, scaled
    assert budgets("--dedicated", "drums", "--steps", "7") == [("drums", 7, None, None, 1)]
    assert budgets("--steps", "7", "--budget", "equal-steps") == [(None, 7, None, None, 1)]
    # the vocabulary comes from one place: train_configs' stems
    assert budgets("--all", "--steps", "5", stems=("vocals", "drums")) == [
        (None, 10, None, None, 2), ("vocals", 5, None, None, 1), ("drums", 5, None, None, 1)]
    assert budgets("--steps", "5", stems=("vocals", "drums")) == [(None, 10, None, None, 2)]
    with pytest.raises(UnknownStemError, match="'bass'"):
        budgets("--dedicated", "bass", stems=("vocals", "drums"))
    with pytest.raises(TrainingError, match="budget must be one of"):
        TrainConfig(budget="fair")


def test_seeds_train_every_model_in_its_own_seed_folder():
    parser = build_parser()
    configs = configs_from_args(parser.parse_args(["--dedicated", "bass", "--with-conditioned", "--seeds", "3",
                                                   "--seed", "5", "--out", "o"]))
    assert [(str(c.run_dir), c.seed) for c in configs] == [
        (f"o/seed-{k}/{name}", k) for k in (5, 6, 7) for name in ("conditioned", "dedicated-bass")]
    one = configs_from_args(parser.parse_args(["--seed", "5", "--out", "o"]))
    assert [(str(c.run_dir), c.seed) for c in one] == [("o/conditioned", 5)]  # one seed: the layout of old
    with pytest.raises(TrainingError, match="--seeds must be a positive"):
        configs_from_args(parser.parse_args(["--seeds", "0"]))


def test_band_split_trains_from_the_command_line_with_its_dedicated_twin(tmp_path, tiny_synthetic, capsys):
    out = tmp_path / "bs"
    args = ["--folder", str(tiny_synthetic), "--arch", "bandsplit", "--preset", "tiny", "--steps", "3",
            "--steps-per-epoch", "3", "--batch-size", "2", "--valid-seconds", "1", "--workers", "0", "--threads", "1",
            "--no-progress", "--device", "cpu", "--out", str(out)]
    assert main([*args, "--dedicated", "bass", "--with-conditioned"]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"{out / 'conditioned'}: bandsplit tiny, seed 0, 3 steps" in err  # one dedicated model: same budget
    conditioned = Separator.load(str(out / "conditioned" / "best.ckpt"))
    assert conditioned.is_conditioned and conditioned.config.arch == "bandsplit"
    out_audio = conditioned.separate(np.zeros((2, 4000), dtype=np.float32), stems="vocals", sample_rate=44100)
    assert out_audio["vocals"].shape == (2, 4000)
    dedicated = Separator.load(str(out / "dedicated-bass" / "best.ckpt"))
    assert not dedicated.is_conditioned and list(dedicated.stems) == ["bass"]
    _, meta = load_checkpoint(out / "dedicated-bass" / "best.ckpt")
    assert meta["config"]["arch"] == "bandsplit" and meta["config"]["target"] == "bass"
    assert meta["training"]["arch"] == "bandsplit" and meta["training"]["budget"] == {
        "kind": "equal-compute", "scale": 1, "steps": 3, "epochs": None, "time_limit": None}
    # every seed of every model checked before the first starts: a run left in seed 1 stops seed 0 from starting
    seeded = tmp_path / "seeded"
    (seeded / "seed-1" / "dedicated-bass").mkdir(parents=True)
    shutil.copy(out / "dedicated-bass" / "last.ckpt", seeded / "seed-1" / "dedicated-bass" / "last.ckpt")
    seed_args = [*args[:-1], str(seeded), "--dedicated", "bass", "--seeds", "2", "--steps", "2"]
    assert main(seed_args) == 2
    assert "seed-1/dedicated-bass already holds a run" in capsys.readouterr().err
    assert not (seeded / "seed-0").exists()
    assert main([*seed_args, "--overwrite"]) == 0
    models = discover_models([str(seeded)])
    assert [(m.name, m.seed) for m in models] == [("dedicated", 0), ("dedicated", 1)]
    assert [load_checkpoint(m.paths[0])[1]["training"]["seed"] for m in models] == [0, 1]


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


def test_stem_weights_option_reaches_the_conditioned_model_only(capsys):
    parser = build_parser()
    configs = configs_from_args(parser.parse_args(["--all", "--stem-weights", "bass=2, other=0.5", "--preset", "tiny"]))
    assert configs[0].sampling == {"stem_weights": {"bass": 2.0, "other": 0.5}}
    assert all(c.sampling == {} for c in configs[1:])
    with pytest.raises(TrainingError, match="a dedicated model draws no z"):
        configs_from_args(parser.parse_args(["--dedicated", "bass", "--stem-weights", "bass=2"]))
    for bad in ("bass", "bass=two", "=2", ","):
        with pytest.raises(SystemExit):
            parser.parse_args(["--stem-weights", bad])
        assert "STEM=W" in capsys.readouterr().err


def _train_cmd(data, out, *extra):
    return [sys.executable, str(REPO / "train.py"), "--folder", str(data), "--preset", "tiny", "--out", str(out),
            "--batch-size", "4", "--steps-per-epoch", "10", "--checkpoint-every", "3", "--no-progress",
            "--budget", "equal-steps", *extra]


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return env


def _same_losses(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for key in ("train_loss", "valid_loss", "valid_sdr"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-5, abs=1e-6), (key, ra, rb)


def test_kill_then_resume_gives_the_uninterrupted_run(tmp_path, tiny_synthetic):
    steps = ["--steps", "40"]
    proc = subprocess.Popen(_train_cmd(tiny_synthetic, tmp_path / "killed", *steps, "--workers", "2"), env=_env(),
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
    resumed = subprocess.run(_train_cmd(tiny_synthetic, tmp_path / "killed", *steps, "--resume", "--workers", "1"),
                             env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = subprocess.run(_train_cmd(tiny_synthetic, tmp_path / "straight", *steps, "--workers", "0"), env=_env(),
                               capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-2000:]
    a, b = _log(tmp_path / "killed" / "conditioned"), _log(tmp_path / "straight" / "conditioned")
    assert [r["step"] for r in a] == ["10", "20", "30", "40"]
    _same_losses(a, b)


def test_two_process_distributed_training_resumes_exactly(tmp_path, tiny_synthetic):
    def torchrun(out, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               *_train_cmd(tiny_synthetic, out, "--steps-per-epoch", "3", *extra)[1:]]
        result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return out / "conditioned"

    run = torchrun(tmp_path / "ddp", "--steps", "6", "--workers", "0")
    model, meta = load_checkpoint(run / "best.ckpt")
    assert model.is_conditioned
    rows = _log(run)
    assert [int(r["examples"]) for r in rows] == [3 * 2 * 4, 6 * 2 * 4]  # two processes x batch 4 per step
    assert load_checkpoint(run / "last.ckpt")[1]["extra"]["state"]["step"] == 6
    # stopped at step 3, resumed to step 6 by new processes, examples drawn by loader workers: the same run
    # (within the 50 warm-up steps the learning rate does not depend on the budget)
    torchrun(tmp_path / "split", "--steps", "3", "--workers", "1")
    split = torchrun(tmp_path / "split", "--steps", "6", "--workers", "1", "--resume")
    _same_losses(rows, _log(split))


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


def _moisesdb_with_a_valid_track(root):
    """The MoisesDB fixture plus a copy of a track under an id that :func:`split_of` puts in ``valid``."""
    from conditioned_sep.data.moisesdb import split_of

    fixture = REPO / "tests" / "fixtures" / "moisesdb" / "moisesdb_v0.1"
    shutil.copytree(fixture, root)
    valid_id = next(f"valid-{i}" for i in range(100) if split_of(f"valid-{i}") == "valid")
    shutil.copytree(fixture / "0b5c1a2e-6f1d-4a53-9e3a-1c2f3d4e5f60", root / valid_id)
    return root


def test_every_dataset_kind_with_a_training_split_trains_from_the_command_line(
        tmp_path, tiny_synthetic, hq_folder, musdb_stem_folder, monkeypatch, capsys):
    from conditioned_sep.data import sources

    # the generated kinds take minutes to make: their resolver returns the fixtures instead
    monkeypatch.setattr(sources, "ensure_rendered_dataset", lambda root, *, progress: hq_folder)
    monkeypatch.setattr(sources, "ensure_synthetic_dataset", lambda root, *, progress: tiny_synthetic)
    six = "vocals,drums,bass,piano,guitar,other"
    options = {"default": ["--dataset", "default"], "synthetic": ["--dataset", "synthetic"],
               "folder": ["--folder", str(tiny_synthetic)], "musdb": ["--musdb", str(musdb_stem_folder)],
               "moisesdb": ["--moisesdb", str(_moisesdb_with_a_valid_track(tmp_path / "moisesdb")), "--stems", six]}
    common = ["--preset", "tiny", "--steps", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--valid-seconds",
              "0.5", "--workers", "0", "--threads", "1", "--device", "cpu", "--no-progress", "--budget", "equal-steps"]
    for kind, option in options.items():
        assert main([*option, *common, "--out", str(tmp_path / kind)]) == 0, (kind, capsys.readouterr().err)
        model, meta = load_checkpoint(tmp_path / kind / "conditioned" / "best.ckpt")
        assert meta["training"]["data"].startswith(f"{kind}:"), kind
    assert model.stems == tuple(six.split(","))  # MoisesDB with the six-stem vocabulary
    assert main(["--dataset", "stempeg", *common, "--out", str(tmp_path / "stempeg")]) == 2
    assert "dataset 'stempeg' is a test excerpt only" in capsys.readouterr().err
    assert not (tmp_path / "stempeg").exists()
    assert tuple(options) == sources.TRAINING_KINDS  # a new kind must be trained here too


def test_a_run_folder_is_locked_while_a_run_writes_it_and_a_stale_lock_does_not_block(tmp_path, tiny_synthetic):
    from conditioned_sep.fileio import LOCK_NAME, folder_lock

    config = _config(tmp_path, tiny_synthetic, steps=2, steps_per_epoch=2)
    with folder_lock(config.run_dir):  # another run writing the folder (here: this process)
        with pytest.raises(TrainingError, match=f"run folder {config.run_dir} is in use by process {os.getpid()}.*"
                                                 "another --out / --name"):
            train(config)
    assert sorted(p.name for p in config.run_dir.iterdir()) == []  # the refused run wrote nothing
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (config.run_dir / LOCK_NAME).write_text(f"{dead.pid}\n")  # what a killed run leaves
    assert train(config).is_file()
    assert not (config.run_dir / LOCK_NAME).exists()  # released with the run


def _summary_step(stderr, signame):
    """The step of ``train.py``'s one-line summary after a signal (and that it is the only thing said)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"train.py: interrupted by {signame} at step ") and "--resume to continue" in line, line
    return int(line.split(" at step ")[1].split()[0])


def test_sigint_and_sigterm_save_the_step_reached_and_a_second_run_is_refused_meanwhile(tmp_path, tiny_synthetic):
    out = tmp_path / "run"
    cmd = _train_cmd(tiny_synthetic, out, "--steps", "2000", "--steps-per-epoch", "1000", "--valid-seconds", "1",
                     "--workers", "1")
    run, last = out / "conditioned", out / "conditioned" / "last.ckpt"

    def started(proc, *, past=0):  # a periodic checkpoint beyond ``past``: the loop is running
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if last.exists() and load_checkpoint(last)[1]["extra"]["state"]["step"] > past:
                return
            time.sleep(0.05)
        raise AssertionError(proc.communicate()[1][-3000:])

    # a new session, as a terminal's: Ctrl-C reaches the loader worker too
    first = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (run / ".lock").exists() and time.time() < deadline:
            time.sleep(0.05)
        second = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and f"is in use by process {first.pid}" in second.stderr, second.stderr
        started(first)
        os.killpg(first.pid, signal.SIGINT)
        stderr = first.communicate(timeout=120)[1]
    finally:
        first.kill()
    assert first.returncode == 130
    step = _summary_step(stderr, "SIGINT")
    assert load_checkpoint(last)[1]["extra"]["state"]["step"] == step >= 1
    assert not (run / ".lock").exists()
    resumed = subprocess.Popen([*cmd, "--resume"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    try:
        started(resumed, past=step)
        resumed.send_signal(signal.SIGTERM)
        stderr = resumed.communicate(timeout=120)[1]
    finally:
        resumed.kill()
    assert resumed.returncode == 143
    assert load_checkpoint(last)[1]["extra"]["state"]["step"] == _summary_step(stderr, "SIGTERM") > step


def test_command_line_speaks_in_its_own_units_and_keeps_runs_inside_out(tmp_path, tiny_synthetic, capsys):
    args = ["--folder", str(tiny_synthetic), "--preset", "tiny", "--out", str(tmp_path / "runs")]
    assert main([*args, "--time-limit", "-1"]) == 2
    assert "time_limit must be a positive number of minutes (--time-limit), got -1" in capsys.readouterr().err
    assert main([*args, "--time-limit", "nan"]) == 2
    assert "minutes (--time-limit), got nan" in capsys.readouterr().err
    assert main([*args, "--name", "../../escaped"]) == 2
    assert "name must be a plain folder name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, inside --out or outside it


def test_resume_refuses_changed_settings_and_takes_what_may_change(tmp_path, tiny_synthetic, hq_folder, capsys):
    same = dict(steps=10, steps_per_epoch=5, warmup_steps=2)
    run = train(_config(tmp_path, tiny_synthetic, **same)).parent
    before = _files(run)
    for changed, listed in [(dict(data_root=hq_folder, seed=3), f"data folder {tiny_synthetic} -> {hq_folder}, "
                                                                "--seed 0 -> 3"),
                            (dict(batch_size=8, lr=1e-2), "--batch-size 4 -> 8; ")]:  # only the refused ones listed
        with pytest.raises(TrainingError, match=f"was trained with other settings than this --resume: {listed}"
                                                 ".*drop those options .*--overwrite"):
            train(_config(tmp_path, tiny_synthetic, **{**same, "resume": True, **changed}))
        assert _files(run) == before
    # where and how it runs may change: threads, workers, time limit, checkpoints, patience
    capsys.readouterr()
    train(_config(tmp_path, tiny_synthetic, **same, resume=True, threads=1, workers=1, time_limit=600.0,
                  checkpoint_every=7, patience=3))
    assert "note: resuming" not in capsys.readouterr().out
    # the learning rate and the budget are applied from the resumed step, and said, with the rate's jump
    train(_config(tmp_path, tiny_synthetic, **{**same, "steps": 15, "lr": 1e-2}, resume=True))
    assert (f"note: resuming {run} at step 10 with --lr 0.001 -> 0.01, --steps 10 -> 15, applied from this step "
            f"(learning rate {training.lr_at(10, _config(tmp_path, tiny_synthetic, **same)):.3g} -> "
            f"{training.lr_at(10, _config(tmp_path, tiny_synthetic, **{**same, 'steps': 15, 'lr': 1e-2})):.3g})"
            ) in capsys.readouterr().out
    assert [int(r["step"]) for r in _log(run)] == [5, 10, 15]


def test_non_finite_samples_in_a_stem_are_named_before_training(tmp_path, hq_folder):
    import soundfile as sf

    data = tmp_path / "data"
    shutil.copytree(hq_folder, data)
    bad = data / "train" / "a" / "vocals.wav"
    audio, rate = sf.read(bad, dtype="float32")
    audio[1000:] = np.nan  # most of the file: today a "diverged" run and a stem that looks silent
    sf.write(bad, audio, rate, subtype="FLOAT")
    with pytest.raises(DatasetError, match=f"{bad} holds {audio[1000:].size} non-finite sample\\(s\\) \\(NaN or Inf\\), "
                                           "the first at sample 1000; repair or replace the file"):
        train(_config(tmp_path, data, steps=2, steps_per_epoch=2))
    assert not (tmp_path / "runs" / "conditioned" / "last.ckpt").exists()


def test_a_signal_before_the_loop_stops_at_once_and_gives_the_handlers_back(tmp_path, tiny_synthetic):
    trainer = training.Trainer(_config(tmp_path, tiny_synthetic))
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(training.TrainingInterrupted, match="interrupted by SIGTERM before the first training step; "
                                                           "nothing was saved") as stop:
        with trainer.held:  # as fit() holds them; setup (e.g. rendering the data) is under way
            trainer._catch_signals()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
    assert stop.value.exit_code == 143
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_segment_frames_option_sets_the_training_excerpts_of_every_model(tmp_path, tiny_synthetic, monkeypatch,
                                                                         capsys):
    seen = []

    class Spy(training.TrainingExamples):
        def __init__(self, bank, sampling, **kwargs):
            seen.append(sampling.segment)
            super().__init__(bank, sampling, **kwargs)

    monkeypatch.setattr(training, "TrainingExamples", Spy)
    args = ["--folder", str(tiny_synthetic), "--preset", "tiny", "--out", str(tmp_path / "runs"), "--steps", "2",
            "--steps-per-epoch", "2", "--valid-seconds", "1", "--workers", "0", "--segment-frames", "48"]
    assert main([*args, "--dedicated", "bass", "--with-conditioned"]) == 0
    hop = 128  # the tiny preset's
    assert seen == [47 * hop, 47 * hop]  # (frames - 1) hops of samples, for the conditioned model and the twin
    for name in ("conditioned", "dedicated-bass"):
        model, _ = load_checkpoint(tmp_path / "runs" / name / "best.ckpt")
        assert model.config.segment_frames == 48  # saved, so --resume refuses another length
    before = _files(tmp_path / "runs" / "conditioned")
    capsys.readouterr()
    for bad in ("1", "-5"):
        assert main([*args[:-1], bad, "--overwrite"]) == 2
        assert f"--segment-frames is a number of STFT frames, at least 2, got {bad}" in capsys.readouterr().err
    assert _files(tmp_path / "runs" / "conditioned") == before  # the refused runs (with --overwrite) kept it whole
