"""The training loop: conditioned or dedicated models on identical data, budget and loop.

One run writes ``<out>/<name>/{best.ckpt, last.ckpt, log.csv}`` (``name`` = ``conditioned`` or
``dedicated-<stem>``). Loss: L1 between the masked mixture magnitude and the target magnitude on the
model's STFT (Conditioned-U-Net's), plus an optional waveform L1 term. Adam with a warm-up + cosine learning
rate (a pure function of the step), validation every epoch with a validation SDR (MDX "new SDR" on fixed
excerpts of the validation songs), early stopping, atomic checkpoints every ``checkpoint_every`` steps and
at every epoch end. ``resume=True`` continues from ``last.ckpt`` with optimizer, RNG, step and epoch state:
a kill at any moment loses at most the steps since the last checkpoint. ``overwrite=True`` first deletes the
old run's checkpoints, log and tensorboard folder, so nothing of it can be mistaken for the new run.

Examples are a pure function of ``(seed, example index)`` (see :mod:`conditioned_sep.data.sampling`), so the
same seed gives the same losses, and a resumed run draws the examples an uninterrupted one would. The
dropout noise of step ``s`` on rank ``r`` is seeded from ``(seed, r, s)``, so a resumed run, on every rank,
also draws the noise an uninterrupted one would (given the same number of processes).
Under ``torchrun`` (``WORLD_SIZE > 1``) it trains with DistributedDataParallel (gloo on CPU, nccl on GPU);
rank 0 validates and writes checkpoints. Every check that can refuse a run happens before the first
collective operation or reaches every rank, so a bad run stops all processes with its error instead of
leaving them waiting in a barrier.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .checkpoint import load_checkpoint, save_checkpoint
from .runs import DEFAULT_RUN
from .data.folder import DatasetError
from .data.musdb import StemTrack
from .data.sources import DatasetSpec, has_own_valid_split, prepare, split_tracks
from .data.sampling import SamplingConfig, StemBank, TrainingExamples, validation_excerpts
from .fileio import atomic_write_text
from .metrics import new_sdr
from .film import FILM_KINDS, Z_INPUTS
from .model import FILM_PLACES, PRESETS, ConditionedUNet
from .stems import STEMS, UnknownStemError

DATASETS = ("default", "folder", "musdb")
DEFAULT_STEPS = {"tiny": 200, "small": 2000, "full": 100_000}
"""Step budget per model when neither ``steps`` nor ``epochs`` is given (small: a few minutes on 2 cores)."""


class TrainingError(ValueError):
    """A training run that cannot start: bad output folder, nothing to resume, mismatching resume."""


@dataclass
class TrainConfig:
    """One training run. ``target=None`` trains the conditioned model, a stem name a dedicated one.

    Budget: ``steps`` optimizer steps (default :data:`DEFAULT_STEPS` of the preset), or ``epochs`` epochs of
    ``steps_per_epoch`` steps; training also stops early after ``patience`` epochs without a better
    validation SDR, or after ``time_limit`` seconds. ``batch_size`` is per process.
    """

    out: Path = Path("runs")
    name: str | None = None
    preset: str = "small"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    target: str | None = None
    dataset: str = "default"
    data_root: Path | None = None
    steps: int | None = None
    epochs: int | None = None
    steps_per_epoch: int = 250
    batch_size: int = 16
    lr: float = 1e-3
    lr_final: float = 0.05  # the cosine ends at lr * lr_final
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    wave_loss: float = 0.0
    patience: int = 10
    checkpoint_every: int = 100
    valid_seconds: float = 10.0
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    tensorboard: bool = False
    progress: bool = True
    device: str = "cpu"
    time_limit: float | None = None
    sampling: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out).expanduser()
        self.data_root = Path(self.data_root).expanduser() if self.data_root is not None else None
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset kind {self.dataset!r}; choose one of {DATASETS}")
        if self.dataset == "folder" and self.data_root is None:
            raise DatasetError("dataset 'folder' needs a root: pass --folder PATH")
        if self.target is not None:
            if self.target not in STEMS:
                raise UnknownStemError(f"unknown stem {self.target!r} for a dedicated model; choose one of {STEMS}")
        for key in ("steps", "epochs"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"{key} must be positive, got {value}")
        if self.batch_size <= 0 or self.steps_per_epoch <= 0 or self.checkpoint_every <= 0:
            raise ValueError("batch_size, steps_per_epoch and checkpoint_every must be positive")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @property
    def run_name(self) -> str:
        return self.name or ("conditioned" if self.target is None else f"dedicated-{self.target}")

    @property
    def run_dir(self) -> Path:
        return self.out / self.run_name

    @property
    def total_steps(self) -> int:
        budgets = [b for b in (self.steps, self.epochs and self.epochs * self.steps_per_epoch) if b]
        return min(budgets) if budgets else DEFAULT_STEPS[self.preset]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (paths as strings) for checkpoints."""
        data = dataclasses.asdict(self)
        data["out"] = str(self.out)
        data["data_root"] = str(self.data_root) if self.data_root is not None else None
        return data


# --------------------------------------------------------------------------------------------------------------
# Data and model
# --------------------------------------------------------------------------------------------------------------


def _dataset_tracks(config: TrainConfig) -> tuple[list, list, str]:
    """(train tracks, validation tracks, description). Raises DatasetError before any training."""
    spec = _rank0_first(lambda: prepare(DatasetSpec(config.dataset, config.data_root), progress=config.progress))
    train, valid = split_tracks(spec, "train"), split_tracks(spec, "valid")
    if not has_own_valid_split(spec):
        print(f"note: {spec.root} has no valid/ split; holding out {len(valid)} training track(s) for validation")
    if isinstance(train[0], StemTrack):
        print("warning: training on MUSDB18 .stem.mp4 decodes audio with ffmpeg on every example, which is "
              "slow; decode once with `python -m conditioned_sep.data.musdb decode ROOT OUT` and train on OUT")
    return train, valid, spec.describe()


def _check_rates(tracks: Sequence, rate: int) -> None:
    bad = [t.name for t in tracks if t.sample_rate != rate]
    if bad:
        raise DatasetError(f"{len(bad)} track(s) are not at the model's {rate} Hz (e.g. {bad[0]!r}); "
                           f"resample the stems to {rate} Hz first")


def build_model(config: TrainConfig) -> ConditionedUNet:
    """The untrained model of ``config`` (seeded by ``config.seed``)."""
    torch.manual_seed(config.seed)
    overrides = dict(config.model_overrides)
    if config.target is not None:
        overrides.update(conditioned=False, target=config.target)
    return ConditionedUNet.from_preset(config.preset, **overrides)


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then cosine to ``lr * lr_final``."""
    total = config.total_steps
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total - config.warmup_steps))
    return config.lr * (config.lr_final + (1 - config.lr_final) * 0.5 * (1 + math.cos(math.pi * progress)))


def spectral_loss(model: nn.Module, core: ConditionedUNet, mixture: Tensor, target: Tensor, z: Tensor | None,
                  *, wave_weight: float = 0.0) -> Tensor:
    """L1 between ``mask * |X|`` and ``|S|`` (+ ``wave_weight`` x waveform L1). Audio ``(b, c, samples)``."""
    # b: batch, c: channels, f: freq, t: frames
    spec_mix = core.stft(mixture)
    spec_tgt = core.stft(target)
    est = model(spec_mix, z)
    loss = (est.abs() - spec_tgt.abs()).abs().mean()
    if wave_weight > 0:
        estimate = core.istft(est, length=mixture.shape[-1])
        loss = loss + wave_weight * (estimate - target).abs().mean()
    return loss


@torch.no_grad()
def validate(model: ConditionedUNet, excerpts: Sequence[tuple[str, np.ndarray]], *, device: str = "cpu",
             silence_db: float = -50.0) -> dict[str, float]:
    """Validation loss and SDR (dB) per stem the model answers, on ``(name, (n_stems, c, samples))`` excerpts.

    SDR per stem (``sdr_<stem>``): mean over excerpts whose reference is not silent. ``sdr`` is the mean over
    stems; ``mixture_sdr`` and ``mixture_sdr_<stem>`` the same scores for the mixture used as the estimate (the
    baseline to beat, per stem).
    """
    model.eval()
    stems = model.stems if model.is_conditioned else (model.config.target,)
    idx = [model.stems.index(s) for s in stems]
    z = torch.eye(len(model.stems), device=device)[idx] if model.is_conditioned else None
    scores: dict[str, list[float]] = {s: [] for s in stems}
    base: dict[str, list[float]] = {s: [] for s in stems}
    losses = []
    for _, sources in excerpts:
        refs = sources[idx]  # (k, c, n)
        mixture = torch.from_numpy(sources.sum(0))[None].to(device)  # (1, c, n)
        spec = model.stft(mixture)  # (1, c, f, t)
        est = model(spec, z)  # (k, c, f, t)
        target_mag = model.stft(torch.from_numpy(refs).to(device)).abs()
        losses.append(float((est.abs() - target_mag).abs().mean()))
        estimates = model.istft(est, length=mixture.shape[-1]).cpu().numpy()
        sdr = new_sdr(refs, estimates)
        mix_sdr = new_sdr(refs, np.broadcast_to(sources.sum(0), refs.shape))
        for k, stem in enumerate(stems):
            if 10 * np.log10(np.mean(refs[k].astype(np.float64) ** 2) + 1e-20) > silence_db:
                scores[stem].append(float(sdr[k]))
                base[stem].append(float(mix_sdr[k]))
    per_stem = {s: float(np.mean(v)) if v else float("nan") for s, v in scores.items()}
    mix_per_stem = {s: float(np.mean(v)) if v else float("nan") for s, v in base.items()}
    result = {"loss": float(np.mean(losses)), "sdr": float(np.nanmean(list(per_stem.values()))),
              "mixture_sdr": float(np.nanmean(list(mix_per_stem.values())))}
    result.update({f"sdr_{s}": v for s, v in per_stem.items()})
    result.update({f"mixture_sdr_{s}": v for s, v in mix_per_stem.items()})
    return result


# --------------------------------------------------------------------------------------------------------------
# Distributed helpers
# --------------------------------------------------------------------------------------------------------------


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _init_distributed(device: str) -> bool:
    """Start the process group under torchrun (``WORLD_SIZE > 1``); True when this call started it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    return True


def _broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (a collective: every rank must call it)."""
    rank, world = _world()
    if world == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item())


def _on_rank0(fn):
    """``fn()`` on rank 0 only (None on the others). When it raises, every rank raises: rank 0 its error, the
    others a :class:`TrainingError` pointing to it, so no process is left waiting in a later collective."""
    rank, world = _world()
    if world == 1:
        return fn()
    result, error = None, None
    if rank == 0:
        try:
            result = fn()
        except Exception as err:  # re-raised below, after the other ranks learnt of it
            error = err
    if _broadcast_flag(error is not None):
        if error is not None:
            raise error
        raise TrainingError("rank 0 stopped the run before training (its error is printed above)")
    return result


def _rank0_first(fn):
    """Run ``fn`` on rank 0 first (e.g. generating data), then on the other ranks."""
    rank, _ = _world()
    result = _on_rank0(fn)
    return result if rank == 0 else fn()


def _step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed (dropout noise) of optimizer step ``step`` on ``rank``: independent streams per rank."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0])


# --------------------------------------------------------------------------------------------------------------
# State: RNG, checkpoints, log
# --------------------------------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": int(version), "state": list(py_state), "gauss": gauss}}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise TrainingError(f"cannot write to the output folder {folder} ({err.strerror or err}); "
                            "pass --out DIR with a folder you can write to") from err


def _clear_run(run_dir: Path) -> None:
    """Delete what an old run left in ``run_dir`` (checkpoints, log, tensorboard): a new run killed before its
    first validation must not leave the old model looking like its result."""
    for name in ("last.ckpt", "best.ckpt", "log.csv"):
        (run_dir / name).unlink(missing_ok=True)
    if (run_dir / "tensorboard").is_dir():
        shutil.rmtree(run_dir / "tensorboard")


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    best_sdr: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    examples: int = 0
    seconds: float = 0.0
    stopped: str = ""
    run_loss: float = 0.0  # sum and count of training losses since the last validation
    run_n: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


def _summary(config: TrainConfig, state: _State, data: str, last_valid: dict[str, float] | None) -> dict[str, Any]:
    return {"kind": "conditioned" if config.target is None else "dedicated", "target": config.target,
            "run": config.run_name, "preset": config.preset, "data": data, "seed": config.seed,
            "step": state.step, "epoch": state.epoch, "total_steps": config.total_steps,
            "examples": state.examples, "seconds": round(state.seconds, 1),
            "best_valid_sdr": state.best_sdr if math.isfinite(state.best_sdr) else None,
            "best_epoch": state.best_epoch, "stopped": state.stopped,
            "valid": dict(last_valid or {}), "config": config.to_dict()}


# --------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------


def train(config: TrainConfig) -> Path:
    """Train one model as ``config`` says and return the path of its best checkpoint.

    Raises :class:`~conditioned_sep.data.folder.DatasetError` or :class:`TrainingError` (both ValueError)
    before any training step for a missing or empty dataset, a stem the data lacks, an output folder that
    cannot be written, an existing run without ``resume`` / ``overwrite``, or nothing to resume.
    """
    started_dist = _init_distributed(config.device)
    try:
        return _train(config)
    finally:
        if started_dist:
            dist.destroy_process_group()


def _train(config: TrainConfig) -> Path:
    rank, world = _world()
    run_dir = config.run_dir
    last_path, best_path, log_path = run_dir / "last.ckpt", run_dir / "best.ckpt", run_dir / "log.csv"
    device = config.device
    # these checks run on every rank before any collective: one rank refusing alone would leave the others
    # waiting in a barrier until the process group times out
    _check_writable(run_dir)
    if not config.resume and last_path.exists() and not config.overwrite:
        raise TrainingError(f"{run_dir} already holds a run (last.ckpt); pass --resume to continue it, "
                            "--overwrite to start again, or another --out / --name")
    if config.resume and not last_path.exists():
        raise TrainingError(f"nothing to resume: {last_path} does not exist; drop --resume to start a new run")
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise TrainingError("--tensorboard needs the tensorboard package: pip install tensorboard")
    if config.overwrite and not config.resume:
        _on_rank0(lambda: _clear_run(run_dir))

    model = build_model(config)
    cfg = model.config
    train_tracks, valid_tracks, data_desc = _dataset_tracks(config)
    _check_rates(train_tracks + valid_tracks, cfg.sample_rate)
    segment = (cfg.segment_frames - 1) * cfg.hop_length
    sampling = SamplingConfig(segment=segment, stems=cfg.stems, target=config.target, **config.sampling)
    bank = StemBank(train_tracks, stems=cfg.stems, channels=cfg.audio_channels)
    examples = TrainingExamples(bank, sampling, seed=config.seed, epoch_size=config.steps_per_epoch * config.batch_size)

    def load_excerpts() -> list[tuple[str, np.ndarray]]:
        out = validation_excerpts(valid_tracks, stems=cfg.stems, seconds=config.valid_seconds,
                                  channels=cfg.audio_channels)
        if config.target is not None and not any(np.abs(x[cfg.stems.index(config.target)]).max() > 0
                                                 for _, x in out):
            raise DatasetError(f"no validation track holds the stem {config.target!r}; add one to the "
                               "validation split or train another stem")
        return out

    excerpts = _on_rank0(load_excerpts) or []  # only rank 0 validates

    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = _State()
    if config.resume:
        saved, meta = load_checkpoint(last_path, map_location=device)
        if saved.config.to_dict() != cfg.to_dict():
            raise TrainingError(f"{last_path} was trained with another model config (preset / target / overrides); "
                                "resume with the same arguments, or start a new run with another --out")
        model.load_state_dict(saved.state_dict())
        extra = meta["extra"]
        optimizer.load_state_dict(extra["optimizer"])
        state = _State(**extra["state"])
        _set_rng_state(extra["rng"])
    ddp = world > 1
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if ddp else model

    writer = None
    if config.tensorboard and rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise TrainingError("--tensorboard needs the tensorboard package: pip install tensorboard") from err
        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=state.step or None)

    total = config.total_steps
    bar = None
    if config.progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=state.step, desc=config.run_name, unit="step", dynamic_ncols=True)
    last_valid: dict[str, float] | None = state.rows[-1] if state.rows else None
    t_start = time.perf_counter() - state.seconds
    window_t, window_ex = time.perf_counter(), 0

    def save_last() -> None:
        state.seconds = time.perf_counter() - t_start
        extra = {"optimizer": optimizer.state_dict(), "rng": _rng_state(), "state": dataclasses.asdict(state)}
        save_checkpoint(last_path, model, training=_summary(config, state, data_desc, last_valid), extra=extra)

    while state.step < total and not state.stopped:
        model.train()
        per_step = config.batch_size * world
        first = state.step * per_step + rank * config.batch_size
        batch = examples.batch(range(first, first + config.batch_size))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(state.step, config)
        torch.manual_seed(_step_seed(config.seed, rank, state.step))  # resumable dropout noise, per rank
        mixture, target = batch["mixture"].to(device), batch["target"].to(device)
        z = batch["z"].to(device) if model.is_conditioned else None
        loss = spectral_loss(net, model, mixture, target, z, wave_weight=config.wave_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        state.step += 1
        state.examples += per_step
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss became {loss_value} at step {state.step}; lower --lr")
        state.run_loss, state.run_n = state.run_loss + loss_value, state.run_n + 1
        window_ex += per_step
        if bar is not None:
            now = time.perf_counter()
            bar.update(1)
            if now - window_t > 1.0:
                bar.set_postfix(loss=f"{state.run_loss / max(1, state.run_n):.4f}", ex_s=f"{window_ex / (now - window_t):.0f}")
                window_t, window_ex = now, 0
        if writer is not None:
            writer.add_scalar("train/loss", loss_value, state.step)

        epoch_end = state.step % config.steps_per_epoch == 0 or state.step == total
        timed_out = config.time_limit is not None and time.perf_counter() - t_start > config.time_limit
        timed_out = _broadcast_flag(timed_out)
        if epoch_end or timed_out:
            state.epoch += 1 if epoch_end else 0
            stop = False
            if rank == 0:
                result = validate(model, excerpts, device=device)
                elapsed = time.perf_counter() - t_start
                row = {"epoch": state.epoch, "step": state.step, "examples": state.examples,
                       "seconds": round(elapsed, 1), "lr": lr_at(state.step - 1, config),
                       "train_loss": state.run_loss / max(1, state.run_n),
                       **{f"valid_{k}": v for k, v in result.items()}}
                state.run_loss, state.run_n = 0.0, 0
                improved = result["sdr"] > state.best_sdr
                if improved:
                    state.best_sdr, state.best_epoch, state.bad_epochs = result["sdr"], state.epoch, 0
                else:
                    state.bad_epochs += 1
                row["best"] = int(improved)
                state.rows.append(row)
                last_valid = row
                if writer is not None:
                    for key, value in row.items():
                        if key.startswith("valid_") or key == "lr":
                            writer.add_scalar(key.replace("valid_", "valid/"), value, state.step)
                    writer.flush()
                if bar is not None:
                    bar.write(f"epoch {state.epoch} step {state.step}: train loss {row['train_loss']:.4f}, valid "
                              f"loss {result['loss']:.4f}, valid SDR {result['sdr']:.2f} dB (mixture "
                              f"{result['mixture_sdr']:.2f} dB){' *' if improved else ''}")
                if improved:
                    state.seconds = elapsed
                    save_checkpoint(best_path, model, training=_summary(config, state, data_desc, row))
                if state.bad_epochs >= config.patience:
                    state.stopped = f"early stop: no better validation SDR for {config.patience} epochs"
                elif timed_out:
                    state.stopped = f"time limit of {config.time_limit} s reached"
                stop = bool(state.stopped)
                _write_log(log_path, state.rows)
            if _broadcast_flag(stop) and rank > 0:
                state.stopped = "stopped by rank 0"
        if rank == 0 and (epoch_end or state.step % config.checkpoint_every == 0 or state.stopped
                          or state.step >= total):
            save_last()
    if bar is not None:
        bar.close()
    if rank == 0:
        if not best_path.exists():  # e.g. resumed a finished run: keep the contract of returning a checkpoint
            save_checkpoint(best_path, model, training=_summary(config, state, data_desc, last_valid))
    if writer is not None:
        writer.close()
    if world > 1:
        dist.barrier()
    return best_path


def train_many(configs: Sequence[TrainConfig]) -> dict[str, Path]:
    """Train several models one after another (e.g. the conditioned one and four dedicated ones with the same
    budget); returns ``{run name: best checkpoint}``."""
    names = [c.run_name for c in configs]
    if len(set(names)) != len(names):
        raise TrainingError(f"two runs share a name in {names}; give each its own --name")
    return {c.run_name: train(c) for c in configs}


# --------------------------------------------------------------------------------------------------------------
# Command line (train.py and `conditioned-sep train`)
# --------------------------------------------------------------------------------------------------------------

DEFAULT_OUT = DEFAULT_RUN  # one definition of the default run folder: conditioned_sep.checkpoint.DEFAULT_RUN


def add_arguments(parser):
    """The options of ``python train.py`` / ``conditioned-sep train``."""
    what = parser.add_argument_group("what to train")
    what.add_argument("--dedicated", metavar="STEM", default=None,
                      help=f"train a dedicated baseline for STEM ({', '.join(STEMS)}) or 'all' four, "
                           "instead of the conditioned model")
    what.add_argument("--with-conditioned", action="store_true",
                      help="with --dedicated: train the conditioned model too (first), same budget")
    what.add_argument("--all", action="store_true",
                      help="conditioned model and the four dedicated ones, same data and budget each")
    what.add_argument("--preset", default="small", choices=sorted(PRESETS), help="model size (default: small)")
    conditioning = parser.add_argument_group("conditioning (default: the preset's)")
    conditioning.add_argument("--film", choices=FILM_KINDS, default=None,
                              help="FiLM kind: one gamma/beta per block (simple) or per channel (complex)")
    conditioning.add_argument("--film-where", choices=FILM_PLACES, default=None,
                              help="which blocks FiLM modulates: encoder, decoder or both")
    conditioning.add_argument("--z-input", choices=Z_INPUTS, default=None,
                              help="feed z to the conditioner as is (onehot) or through a learned embedding")
    data = parser.add_argument_group("data (default: the synthetic songs, generated once)")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--musdb", metavar="PATH", nargs="?", const="", default=None,
                        help="MUSDB18 or MUSDB18-HQ folder (without PATH: $MUSDB_PATH)")
    source.add_argument("--folder", metavar="PATH", help="a folder laid out <split>/<track>/<stem>.wav")
    source.add_argument("--synthetic-root", metavar="PATH",
                        help="where the synthetic default lives (default: $CONDITIONED_SEP_DATA or ~/.cache)")
    budget = parser.add_argument_group("budget and optimisation")
    budget.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps per model (default per preset: {DEFAULT_STEPS})")
    budget.add_argument("--epochs", type=int, default=None, help="epochs per model (of --steps-per-epoch steps)")
    budget.add_argument("--steps-per-epoch", type=int, default=250, help="steps between validations (250)")
    budget.add_argument("--batch-size", type=int, default=16, help="examples per step and process (16)")
    budget.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of Adam (1e-3)")
    budget.add_argument("--wave-loss", type=float, default=0.0, help="weight of a waveform L1 term (0)")
    budget.add_argument("--patience", type=int, default=10, help="early stop after N epochs without progress")
    budget.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                        help="stop each model after this many minutes (validates and checkpoints first)")
    budget.add_argument("--seed", type=int, default=0)
    run = parser.add_argument_group("output")
    run.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default: {DEFAULT_OUT})")
    run.add_argument("--name", default=None, help="run name (default: conditioned / dedicated-<stem>)")
    run.add_argument("--resume", action="store_true", help="continue from <out>/<name>/last.ckpt")
    run.add_argument("--overwrite", action="store_true", help="start again over an existing run")
    run.add_argument("--checkpoint-every", type=int, default=100, help="steps between last.ckpt saves (100)")
    run.add_argument("--tensorboard", action="store_true", help="also log to <run>/tensorboard")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    return parser


def build_parser(prog: str | None = None):
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description="Train a conditioned separator or dedicated baselines.")
    return add_arguments(parser)


def configs_from_args(args) -> list[TrainConfig]:
    """One :class:`TrainConfig` per model the arguments ask for (same budget and data for each)."""
    if args.dedicated is None and (args.with_conditioned and not args.all):
        raise TrainingError("--with-conditioned goes with --dedicated STEM|all")
    if args.all and args.dedicated not in (None, "all"):
        raise TrainingError("--all already trains every model; drop --dedicated")
    if args.dedicated is not None and args.dedicated != "all" and args.dedicated not in STEMS:
        raise UnknownStemError(f"unknown stem {args.dedicated!r} for --dedicated; choose one of {STEMS} or 'all'")
    if args.name and (args.all or args.dedicated == "all" or args.with_conditioned):
        raise TrainingError("--name names one run; it cannot be used when training several models")
    targets: list[str | None]
    if args.all:
        targets = [None, *STEMS]
    elif args.dedicated == "all":
        targets = ([None] if args.with_conditioned else []) + list(STEMS)
    elif args.dedicated is not None:
        targets = ([None] if args.with_conditioned else []) + [args.dedicated]
    else:
        targets = [None]
    if args.musdb is not None:
        dataset, root = "musdb", (args.musdb or None)
    elif args.folder is not None:
        dataset, root = "folder", args.folder
    else:
        dataset, root = "default", args.synthetic_root
    overrides = {key: value for key, value in (("film", args.film), ("film_where", args.film_where),
                                               ("z_input", args.z_input)) if value is not None}
    if overrides and args.dedicated is not None and not (args.with_conditioned or args.all):
        raise TrainingError("--film, --film-where and --z-input shape the conditioner: a dedicated model has none")
    return [TrainConfig(out=Path(args.out), name=args.name, preset=args.preset, target=t, dataset=dataset,
                        model_overrides=overrides if t is None else {},
                        data_root=root, steps=args.steps, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                        batch_size=args.batch_size, lr=args.lr, wave_loss=args.wave_loss, patience=args.patience,
                        checkpoint_every=args.checkpoint_every, seed=args.seed, resume=args.resume,
                        overwrite=args.overwrite, tensorboard=args.tensorboard, progress=not args.no_progress,
                        device=args.device, time_limit=None if args.time_limit is None else 60 * args.time_limit)
            for t in targets]


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """``python train.py ...``: returns the exit code (2 for a user error, printed to stderr)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        configs = configs_from_args(args)
        if not any(c.resume or c.overwrite for c in configs):
            for c in configs:  # every run checked before the first one starts
                if (c.run_dir / "last.ckpt").exists():
                    raise TrainingError(f"{c.run_dir} already holds a run (last.ckpt); pass --resume to continue "
                                        "it, --overwrite to start again, or another --out / --name")
        results = train_many(configs)
    except ValueError as err:  # user errors (DatasetError, TrainingError, UnknownStemError...): a clear message
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    rank, _ = _world()
    if rank == 0:
        for name, path in results.items():
            print(f"{name}: {path}")
    return 0
