"""The training loop: conditioned or dedicated models of any architecture on identical data and loop.

One run writes ``<out>/<name>/{best.ckpt, last.ckpt, log.csv}`` (``name`` = ``conditioned`` or
``dedicated-<stem>``). The conditioned model's budget is a dedicated model's (``equal-steps``) or the dedicated
models' sum (``equal-compute``, :func:`apply_budget`); the run summary in each checkpoint records it. Loss
(:func:`separation_loss`, the one used by training and :func:`validate`): L1 between the estimated and the target
magnitude on the model's STFT (Conditioned-U-Net's), plus an optional waveform L1 term. Adam with a warm-up +
cosine learning rate (a pure function of the step), validation every epoch with a validation SDR (MDX "new SDR"
on fixed excerpts of the validation songs), early stopping, atomic checkpoints every ``checkpoint_every`` steps
and at every epoch end. Optional: gradient accumulation, mixed precision
(bf16 / fp16 autocast of the network), an exponential moving average (EMA) of the weights, whose validation
SDR then selects ``best.ckpt`` and which is saved beside the raw weights.

Nothing is lost: ``resume=True`` continues from ``last.ckpt`` (weights, EMA, optimizer, step, early stopping),
so a kill at any moment loses at most the steps since the last checkpoint; SIGINT and SIGTERM lose none (the step
under way ends, ``last.ckpt`` is written, :class:`TrainingInterrupted` says where). A resume that changes what the
run computes is refused (:data:`RESUME_APPLIES` are applied and said). A run holds its folder's lock
(:func:`~conditioned_sep.fileio.folder_lock`): a second run into it is refused. Every check that can refuse a run
(settings, dataset, stems, output folder) comes before ``overwrite=True`` deletes the old run. A diverged run
(non-finite weights or loss) and a failed write (disk full) stop with a :class:`TrainingError` that keeps the
last good checkpoint and says what to do.

Examples are a pure function of ``(seed, example index)``, and the indices of optimizer step ``s`` on rank
``r`` a pure function of ``(s, r)`` (:class:`~conditioned_sep.data.sampling.StepSampler`), drawn by ``DataLoader``
worker processes; the dropout noise of step ``s`` on rank ``r`` is seeded from ``(seed, r, s)``. So the same seed
gives the same losses whatever the number of workers, and a resumed run draws the examples and the noise an
uninterrupted one would (given the same number of processes). Under ``torchrun`` (``WORLD_SIZE > 1``) it trains
with DistributedDataParallel (gloo on CPU, nccl on GPU); rank 0 validates and writes checkpoints, and its
refusals stop every rank (:mod:`conditioned_sep.distributed`).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import importlib.util
import io
import math
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed
from .audio import is_silent
from .checkpoint import load_checkpoint, save_checkpoint
from .data.folder import DatasetError
from .data.musdb import StemTrack
from .data.sampling import SamplingConfig, StemBank, StepSampler, TrainingExamples, collate, validation_excerpts
from .data.stemcache import default_stem_cache_root
from .data.sources import has_own_valid_split, prepare, split_tracks
from .fileio import (FolderLockedError, atomic_write_text, check_writable, folder_lock, lock_holder,
                     locked_message)
from .hardware import (DeviceError, apply_threads, auto_threads, autocast, choose_compile, choose_precision,
                       resolve_device)
from .metrics import new_sdr
from .recipe import TrainConfig, TrainingError, build_model, lr_at
from .models import SeparationModel

EMA_WARMUP = 10
"""The EMA decay of step ``s`` is ``min(ema_decay, (1 + s) / (EMA_WARMUP + s))``: early averages are not
dominated by the initial weights (TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``)."""


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT (Ctrl-C) or SIGTERM: in the loop, after the step under way and a ``last.ckpt`` of
    it; before the loop, at once. The message is the one-line summary; ``exit_code`` is the shell's (128 +
    signal). A KeyboardInterrupt, so that no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int, *, step: int, total: int, last: Path, saved_step: int | None) -> None:
        self.signum, self.step, self.saved_step = signum, step, saved_step
        self.exit_code = 128 + signum
        where = f"at step {step} of {total}" if step else "before the first training step"
        kept = (f"{last} holds step {saved_step}: run the same command with --resume to continue"
                if saved_step is not None else "nothing was saved: run the same command to start again")
        super().__init__(f"interrupted by {signal.Signals(signum).name} {where}; {kept}")


# --------------------------------------------------------------------------------------------------------------
# Model, loss, validation
# --------------------------------------------------------------------------------------------------------------


def separation_loss(net: nn.Module, mixture: Tensor, target: Tensor, z: Tensor | None, *, wave_weight: float = 0.0,
                    precision: str = "fp32") -> tuple[Tensor, Tensor]:
    """``(loss, estimates)``: the training loss and the complex estimates ``(q, c, f, t)`` it scored.

    Audio ``mixture (b, c, samples)`` and ``target (q, c, samples)``, ``z (q, n_stems)`` or None (dedicated model;
    ``b = 1`` serves q conditions). Loss: L1 between ``|estimate|`` and ``|target|`` on the model's STFT (between
    their real and imaginary parts for a model with a complex mask, :attr:`SeparationModel.complex_mask`), plus
    ``wave_weight`` x L1 between the estimate's ISTFT and ``target``. ``net`` may be a DistributedDataParallel
    wrapper: the forward goes through it (so gradients synchronise), the STFT / ISTFT come from the model inside.
    Only the network's forward is autocast to ``precision``: STFT, ISTFT, complex products and the loss are fp32.
    """
    # b: batch, q: conditions, c: channels, f: freq, t: frames
    model = distributed.unwrap(net)
    spec = model.stft(mixture)  # (b, c, f, t) complex64
    with autocast(mixture.device, precision):
        est = net(spec, z)  # (q, c, f, t)
    est = est.to(spec.dtype)
    reference = model.stft(target)
    if model.complex_mask:  # the model sets the phase: a magnitude loss would leave it free to be wrong
        loss = (torch.view_as_real(est) - torch.view_as_real(reference)).abs().mean()
    else:
        loss = (est.abs() - reference.abs()).abs().mean()
    if wave_weight > 0:
        loss = loss + wave_weight * (model.istft(est, length=mixture.shape[-1]) - target).abs().mean()
    return loss, est


@torch.no_grad()
def validate(model: SeparationModel, excerpts: Sequence[tuple[str, np.ndarray]], *, device: str | torch.device = "cpu",
             wave_weight: float = 0.0) -> dict[str, float]:
    """Validation loss (:func:`separation_loss`) and SDR (dB) per stem the model answers, on ``(name, (n_stems, c,
    samples))`` excerpts.

    SDR per stem (``sdr_<stem>``): mean over excerpts whose reference is not silent
    (:func:`~conditioned_sep.audio.is_silent`). ``sdr`` is the mean over stems; ``mixture_sdr`` and
    ``mixture_sdr_<stem>`` the same scores for the mixture used as the estimate (the baseline to beat, per stem).
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
        loss, est = separation_loss(model, mixture, torch.from_numpy(refs).to(device), z, wave_weight=wave_weight)
        losses.append(float(loss))
        estimates = model.istft(est, length=mixture.shape[-1]).cpu().numpy()
        sdr = new_sdr(refs, estimates)
        mix_sdr = new_sdr(refs, np.broadcast_to(sources.sum(0), refs.shape))
        for k, stem in enumerate(stems):
            if not is_silent(refs[k]):
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
# Pieces of a run: early stopping, weight average, state, devices, files
# --------------------------------------------------------------------------------------------------------------


@dataclass
class EarlyStopping:
    """Stop after ``patience`` validations in a row without a higher score (open-unmix's ``utils.EarlyStopping``).
    Plain data: saved in ``last.ckpt`` as ``dataclasses.asdict``."""

    patience: int
    best: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, score: float, *, epoch: int) -> bool:
        """Record one validation score; True when it is the best so far (NaN never is)."""
        if score > self.best:
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


class WeightAverage:
    """Exponential moving average of a model's weights (parameters and floating-point buffers such as batch-norm
    statistics; integer buffers are copied), kept in ``module``, a copy of the model in eval mode.

    ``update(model, step=s)`` after optimizer step ``s`` (0-based) moves it by ``1 - decay_s`` with ``decay_s =
    min(decay, (1 + s) / (EMA_WARMUP + s))``: a pure function of the step, so a resumed run averages as an
    uninterrupted one.
    """

    def __init__(self, model: nn.Module, *, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, *, step: int) -> None:
        weight = 1 - min(self.decay, (1 + step) / (EMA_WARMUP + step))
        # state_dict() tensors share storage with the module: updating them in place updates the average
        for avg, new in zip(self.module.state_dict().values(), model.state_dict().values()):
            if avg.is_floating_point():
                avg.lerp_(new, weight)
            else:
                avg.copy_(new)


@dataclass
class _State:
    """What a resumed run needs besides weights, average, optimizer and early stopping (plain data)."""

    step: int = 0
    epoch: int = 0
    examples: int = 0
    seconds: float = 0.0
    stopped: str = ""
    run_loss: float = 0.0  # sum and count of training losses since the last validation
    run_n: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


def _restore(extra: dict[str, Any], *, patience: int) -> tuple[_State, EarlyStopping]:
    """State and early stopping from a ``last.ckpt``'s extra. Runs saved before early stopping had its own entry
    kept its fields in the state; their ``rng`` entry is ignored (examples and noise are seeded per step)."""
    state = dict(extra["state"])
    legacy = {"best": state.pop("best_sdr", -math.inf), "best_epoch": state.pop("best_epoch", 0),
              "bad_epochs": state.pop("bad_epochs", 0)}
    early = dict(extra.get("early_stopping", legacy))
    early["patience"] = patience  # this run's patience, which may differ from the interrupted one's
    return _State(**state), EarlyStopping(**early)


def _step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed (dropout noise) of optimizer step ``step`` on ``rank``: independent streams per rank."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0])


def _device(config: TrainConfig) -> torch.device:
    """This process's device (:func:`~conditioned_sep.hardware.resolve_device`), refusals as TrainingError."""
    try:
        return resolve_device(config.device, precision=config.precision)
    except DeviceError as err:
        raise TrainingError(str(err)) from err


def _worker_init(worker_id: int) -> None:
    """DataLoader workers draw examples with numpy: torch threads of their own would compete with training's. A
    Ctrl-C reaches the whole process group: the workers leave it to the training process, which stops them."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _first_non_finite(module: nn.Module) -> str | None:
    """The name of the first parameter or buffer holding NaN or Inf, else None."""
    for name, value in module.state_dict().items():
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            return name
    return None


def _check_writable(folder: Path) -> None:
    try:
        check_writable(folder)
    except OSError as err:
        raise TrainingError(f"{err}; pass --out DIR with a folder you can write to") from err


def _clear_run(run_dir: Path) -> None:
    """Delete what an old run left in ``run_dir`` (checkpoints, log, tensorboard): a new run killed before its
    first validation must not leave the old model looking like its result."""
    for name in ("last.ckpt", "best.ckpt", "log.csv"):
        (run_dir / name).unlink(missing_ok=True)
    if (run_dir / "tensorboard").is_dir():
        shutil.rmtree(run_dir / "tensorboard")


_RUN_FOLDER = "run folder"
_IN_USE_WAY_OUT = " (two runs must not write one folder), or train into another --out / --name"


def existing_run_error(config: TrainConfig, *, probe_lock: bool = True) -> TrainingError:
    """Why a new run (no ``resume``, no ``overwrite``) may not start in a folder that holds ``last.ckpt``: another
    process is writing it (``probe_lock``: asked of the folder's lock), or it holds a finished or stopped run."""
    holder = lock_holder(config.run_dir) if probe_lock else None
    if holder is not None:
        return TrainingError(locked_message(config.run_dir, holder, what=_RUN_FOLDER) + _IN_USE_WAY_OUT)
    return TrainingError(f"{config.run_dir} already holds a run (last.ckpt); pass --resume to continue it, "
                         "--overwrite to start again, or another --out / --name")


RESUME_MAY_CHANGE = ("out", "name", "resume", "overwrite", "tensorboard", "progress", "device", "precision",
                     "compile", "threads", "workers", "stem_cache", "time_limit", "checkpoint_every", "patience")
"""Settings a resumed run may change silently: where and how it runs, not what it computes."""
RESUME_APPLIES = ("steps", "epochs", "lr", "lr_final", "warmup_steps", "weight_decay", "grad_clip", "wave_loss",
                  "ema_decay")
"""Settings a resumed run applies from its step on, and says so (e.g. a lower ``--lr`` after a divergence, more
``--steps``). Any other change (model, data, seed, batch, sampling, validation) is refused
(:meth:`Trainer._check_resumed_settings`)."""


def _plain(value: Any) -> Any:
    """``value`` comparable across a checkpoint: tuples as lists, paths resolved to strings."""
    if isinstance(value, Path):
        return str(value.expanduser().resolve())
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _changes(changed: dict[str, tuple[Any, Any]]) -> str:
    """``--lr 0.001 -> 0.01, data folder a -> b``: TrainConfig fields by their command-line names."""
    return ", ".join(f"{'data folder' if k == 'data_root' else '--' + k.replace('_', '-')} {a} -> {b}"
                     for k, (a, b) in changed.items())


def _log_text(rows: list[dict[str, Any]]) -> str:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _dataset_tracks(config: TrainConfig, *, rank: int) -> tuple[list, list, str]:
    """(train tracks, validation tracks, description). Raises DatasetError before any training."""
    spec = distributed.rank0_first(
        lambda: prepare(config.data_spec, progress=config.progress))
    train, valid = split_tracks(spec, "train"), split_tracks(spec, "valid")
    if rank == 0 and not has_own_valid_split(spec):
        print(f"note: {spec.root} has no valid/ split; holding out {len(valid)} training track(s) for validation")
    if rank == 0 and isinstance(train[0], StemTrack):
        print("warning: training on MUSDB18 .stem.mp4 decodes audio with ffmpeg on every example, which is "
              "slow; decode once with `python -m conditioned_sep.data.musdb decode ROOT OUT` and train on OUT")
    return train, valid, spec.describe()


def _check_rates(tracks: Sequence, rate: int) -> None:
    bad = [t.name for t in tracks if t.sample_rate != rate]
    if bad:
        raise DatasetError(f"{len(bad)} track(s) are not at the model's {rate} Hz (e.g. {bad[0]!r}); "
                           f"resample the stems to {rate} Hz first")


# --------------------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------------------


class Trainer:
    """One training run as ``config`` says (demucs' ``Solver``): ``Trainer(config).fit()`` -> best checkpoint.

    :meth:`setup` checks everything that can refuse the run, then (``overwrite``) deletes the old one, builds the
    model, optimizer, weight average and data loader, and (``resume``) restores ``last.ckpt``; :meth:`fit` runs
    :meth:`train_step` per optimizer step, :meth:`end_epoch` (validation, log, best checkpoint, early stopping)
    at every epoch end and :meth:`save_last` every ``checkpoint_every`` steps. Under torchrun every rank runs it;
    rank 0 validates and writes files.
    """

    # built by setup()
    device: torch.device
    model: SeparationModel
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    precision: str  # the network's precision (config.precision, "auto" resolved)
    compiled: bool  # whether the training step runs compiled
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: DataLoader
    excerpts: list[tuple[str, np.ndarray]]
    data_desc: str
    t_start: float

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.rank, self.world = distributed.world()
        run = config.run_dir
        self.last_path, self.best_path, self.log_path = run / "last.ckpt", run / "best.ckpt", run / "log.csv"
        self.state = _State()
        self.stopper = EarlyStopping(patience=config.patience)
        self.saved_step: int | None = None  # the step of the last good last.ckpt (None: none yet)
        self.bar: tqdm | None = None
        self.writer: Any = None
        self.ema: WeightAverage | None = None
        self.resumed: tuple[SeparationModel, dict[str, Any]] | None = None  # (model, meta) of last.ckpt (resume)
        self.held = ExitStack()  # the run folder's lock and the signal handlers, released when fit() ends
        self.in_loop = False  # a signal in the loop waits for the step under way; before it, it stops at once
        self.stop_signal: int | None = None

    # ---- setup ------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Checks, then the old run cleared (``overwrite``), model, optimizer, average, data; resume."""
        config = self.config
        self.device = _device(config)
        auto = config.threads == "auto"
        threads = auto_threads(device=self.device, workers=config.workers, light_loader=config.stem_cache)
        apply_threads(threads if auto else config.threads, warn=not auto)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # nccl collectives run on the current device: this rank's
        self._check_run_folder()
        self.model = build_model(config)
        self.precision = choose_precision(config.precision, device=self.device, bf16_pays=type(self.model).bf16_pays)
        self.compiled = choose_compile(config.compile, device=self.device, compile_pays=type(self.model).compile_pays)
        data_desc, examples = self._load_data()
        # every check that can refuse the run has passed: only now may an old run be deleted
        if config.overwrite:
            distributed.on_rank0(lambda: _clear_run(config.run_dir))
        self.data_desc = data_desc
        self._build(examples)
        if self.rank == 0:
            self._open_outputs()

    def _build(self, examples: TrainingExamples) -> None:
        """Optimizer, loss scaler, resumed state, weight average, DDP wrapper and the data loader."""
        config = self.config
        self.model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        if config.resume:
            self.resume()
        if config.ema_decay > 0 and self.rank == 0:  # only rank 0 validates and saves it
            self.ema = WeightAverage(self.model, decay=config.ema_decay)
            if config.resume:
                self._resume_average()
        if self.compiled:  # after the average's copy, which stays eager
            self.model.compile_network()
        self.net = nn.parallel.DistributedDataParallel(self.model) if self.world > 1 else self.model
        sampler = StepSampler(per_step=config.batch_size * config.accumulate, start=self.state.step,
                              stop=config.total_steps, rank=self.rank, world=self.world)
        self.loader = DataLoader(examples, batch_sampler=sampler, collate_fn=collate, num_workers=config.workers,
                                 worker_init_fn=_worker_init if config.workers else None,
                                 pin_memory=self.device.type == "cuda")

    def _check_run_folder(self) -> None:
        # on every rank, before any collective: one rank refusing alone would leave the others in a barrier
        config = self.config
        _check_writable(config.run_dir)
        distributed.on_rank0(self._lock_run_folder)  # first: another run may be writing last.ckpt right now
        if not config.resume and self.last_path.exists() and not config.overwrite:
            raise existing_run_error(config, probe_lock=False)  # rank 0 holds it; another rank would find it held
        if config.resume and not self.last_path.exists():
            raise TrainingError(f"nothing to resume: {self.last_path} does not exist; drop --resume to start a new "
                                "run")
        if config.resume:  # read once, here, so that changed settings are refused before the data is loaded
            self.resumed = load_checkpoint(self.last_path, map_location=self.device, weights="raw")
            self._check_resumed_settings(self.resumed[1])
        if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise TrainingError("--tensorboard needs the tensorboard package: pip install tensorboard")

    def _lock_run_folder(self) -> None:
        try:
            self.held.enter_context(folder_lock(self.config.run_dir, what=_RUN_FOLDER))
        except FolderLockedError as err:
            raise TrainingError(f"{err}{_IN_USE_WAY_OUT}") from None

    def _catch_signals(self) -> None:
        """SIGINT and SIGTERM call :meth:`_on_signal` until the run ends (only the main thread may set handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for signum, handler in previous.items():  # None: a handler set outside Python, taken as the default
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)

        self.restore_signals = restore
        self.held.callback(restore)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_signal = signum
        self.restore_signals()  # a second Ctrl-C stops at once
        if not self.in_loop:  # setup (data rendering, loading) has no step to finish
            raise self._interrupted(signum)

    def _interrupted(self, signum: int) -> TrainingInterrupted:
        return TrainingInterrupted(signum, step=self.state.step, total=self.config.total_steps, last=self.last_path,
                                   saved_step=self.saved_step)

    def _load_data(self) -> tuple[str, TrainingExamples]:
        """Tracks, stem bank, examples and (rank 0) validation excerpts; raises DatasetError for unusable data."""
        config, cfg = self.config, self.model.config
        train_tracks, valid_tracks, data_desc = _dataset_tracks(config, rank=self.rank)
        _check_rates(train_tracks + valid_tracks, cfg.sample_rate)
        segment = (cfg.segment_frames - 1) * cfg.hop_length
        sampling = SamplingConfig(segment=segment, stems=cfg.stems, target=config.target, **config.sampling)
        # the stems decoded once into int16 memory maps (rank 0 first, the others then find them): a FLAC decode per
        # example took half of the small U-Net's step
        cache = default_stem_cache_root() if config.stem_cache else None
        bank = distributed.rank0_first(lambda: StemBank(train_tracks, stems=cfg.stems, channels=cfg.audio_channels,
                                                        cache_root=cache, progress=config.progress and self.rank == 0))
        examples = TrainingExamples(bank, sampling, seed=config.seed,
                                    epoch_size=config.steps_per_epoch * config.batch_size * config.accumulate)

        def load_excerpts() -> list[tuple[str, np.ndarray]]:
            out = validation_excerpts(valid_tracks, stems=cfg.stems, seconds=config.valid_seconds,
                                      channels=cfg.audio_channels)
            if config.target is not None and all(is_silent(x[cfg.stems.index(config.target)]) for _, x in out):
                raise DatasetError(f"no validation track holds the stem {config.target!r}; add one to the "
                                   "validation split or train another stem")
            return out

        self.excerpts = distributed.on_rank0(load_excerpts) or []  # only rank 0 validates
        return data_desc, examples

    def _check_resumed_settings(self, meta: dict[str, Any]) -> None:
        """Compare this resume's settings with the saved run's: those of :data:`RESUME_MAY_CHANGE` may change
        silently, those of :data:`RESUME_APPLIES` are applied from the resumed step and said (with the learning
        rate's jump), any other change is refused, each listed old -> new."""
        saved = meta.get("training", {}).get("config")
        if saved is None:  # written before runs recorded their settings
            return
        names = {f.name for f in dataclasses.fields(TrainConfig)} - set(RESUME_MAY_CHANGE)
        try:
            old = dataclasses.replace(self.config, **{k: v for k, v in saved.items() if k in names})
        except (TypeError, ValueError):  # settings of another version: the model config check in resume() holds
            return
        changed = {k: (getattr(old, k), getattr(self.config, k)) for k in sorted(names)
                   if _plain(getattr(old, k)) != _plain(getattr(self.config, k))}
        refused = {k: v for k, v in changed.items() if k not in RESUME_APPLIES}
        if refused:
            raise TrainingError(f"{self.last_path} was trained with other settings than this --resume: "
                                f"{_changes(refused)}; drop those options to continue with the saved settings, or "
                                "start a new run with them (--overwrite, or another --out / --name)")
        if changed and self.rank == 0:
            step = int(meta["extra"]["state"]["step"])
            print(f"note: resuming {self.config.run_dir} at step {step} with {_changes(changed)}, applied from this "
                  f"step (learning rate {lr_at(step, old):.3g} -> {lr_at(step, self.config):.3g})")

    def resume(self) -> None:
        """Weights, optimizer, loss scale, step, log and early stopping from ``last.ckpt``."""
        (saved, meta), self.resumed = self.resumed, None
        if saved.config.to_dict() != self.model.config.to_dict():
            raise TrainingError(f"{self.last_path} was trained with another model config (preset / target / "
                                "overrides); resume with the same arguments, or start a new run with another --out")
        self.model.load_state_dict(saved.state_dict())
        extra = meta["extra"]
        self.optimizer.load_state_dict(extra["optimizer"])
        if self.scaler.is_enabled() and extra.get("scaler"):
            self.scaler.load_state_dict(extra["scaler"])
        self.state, self.stopper = _restore(extra, patience=self.config.patience)
        self.saved_step = self.state.step

    def _resume_average(self) -> None:
        # a run that had no average starts it at the resumed weights (WeightAverage's copy)
        averaged, meta = load_checkpoint(self.last_path, map_location=self.device, weights="auto")
        if meta["weights"] == "ema":
            self.ema.module.load_state_dict(averaged.state_dict())

    def _open_outputs(self) -> None:
        config = self.config
        if config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(config.run_dir / "tensorboard"), purge_step=self.state.step or None)
        if config.progress:
            self.bar = tqdm(total=config.total_steps, initial=self.state.step, desc=config.run_name, unit="step",
                            dynamic_ncols=True)

    # ---- steps ------------------------------------------------------------------------------------------------

    def train_step(self, batch: dict[str, Tensor]) -> float:
        """One optimizer step on this rank's ``batch`` (``accumulate x batch_size`` examples, split into
        micro-batches); returns its loss (mean over micro-batches; this rank's)."""
        config, step = self.config, self.state.step
        self.net.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        torch.manual_seed(_step_seed(config.seed, self.rank, step))  # resumable dropout noise, per rank
        self.optimizer.zero_grad(set_to_none=True)
        micro = {key: value.split(config.batch_size) for key, value in batch.items()}
        total = 0.0
        for m in range(config.accumulate):
            last = m == config.accumulate - 1
            # DDP averages gradients over the ranks once per optimizer step, at the last micro-batch
            with self.net.no_sync() if self.world > 1 and not last else nullcontext():
                mixture = micro["mixture"][m].to(self.device, non_blocking=True)
                target = micro["target"][m].to(self.device, non_blocking=True)
                z = micro["z"][m].to(self.device, non_blocking=True) if self.model.is_conditioned else None
                loss, _ = separation_loss(self.net, mixture, target, z, wave_weight=config.wave_loss,
                                          precision=self.precision)
                self.scaler.scale(loss / config.accumulate).backward()
            total += float(loss.detach())
        if config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, step=step)
        self.state.step += 1
        self.state.examples += config.batch_size * config.accumulate * self.world
        return total / config.accumulate

    def _diverged(self, what: str) -> TrainingError:
        kept = (f"the last good checkpoint ({self.last_path}, step {self.saved_step}) is kept: --resume with a "
                "lower --lr continues from it" if self.saved_step is not None else "no checkpoint was written")
        return TrainingError(f"diverged at step {self.state.step}: {what}; lower --lr (now {self.config.lr:g}) and "
                             f"start again with --overwrite; {kept}")

    def _write_failed(self, path: Path, err: OSError) -> TrainingError:
        resume = (f"then --resume continues from the last checkpoint (step {self.saved_step})"
                  if self.saved_step is not None else "then start again (no checkpoint was written yet)")
        return TrainingError(f"cannot write {path} at step {self.state.step} ({err.strerror or err}): free space on "
                             f"the disk of {path.parent} (or pass another --out); {resume}")

    # ---- files ------------------------------------------------------------------------------------------------

    def _summary(self) -> dict[str, Any]:
        config, state, stopper = self.config, self.state, self.stopper
        return {"kind": "conditioned" if config.target is None else "dedicated", "target": config.target,
                "run": config.run_name, "arch": config.arch, "preset": config.preset, "data": self.data_desc,
                "seed": config.seed, "budget": config.budget_record(), "precision": self.precision,
                "compiled": self.compiled, "step": state.step, "epoch": state.epoch, "total_steps": config.total_steps,
                "examples": state.examples, "seconds": round(state.seconds, 1),
                "best_valid_sdr": stopper.best if math.isfinite(stopper.best) else None,
                "best_epoch": stopper.best_epoch, "stopped": state.stopped,
                "weights_validated": "ema" if self.ema is not None else "raw",
                "valid": dict(state.rows[-1] if state.rows else {}), "config": config.to_dict()}

    def save(self, path: Path, *, extra: dict[str, Any] | None = None) -> None:
        """Write a checkpoint of the model (and its average) to ``path``, refusing non-finite weights."""
        checked = {"weight": self.model, **({"averaged weight": self.ema.module} if self.ema is not None else {})}
        for kind, module in checked.items():
            bad = _first_non_finite(module)
            if bad is not None:
                raise self._diverged(f"non-finite values in the {kind} {bad!r}")
        try:
            save_checkpoint(path, self.model, training=self._summary(), extra=extra,
                            ema_state=self.ema.module.state_dict() if self.ema is not None else None)
        except OSError as err:
            raise self._write_failed(path, err) from err

    def save_last(self) -> None:
        """``last.ckpt``: everything :meth:`resume` needs (rank 0)."""
        self.state.seconds = time.perf_counter() - self.t_start
        extra = {"optimizer": self.optimizer.state_dict(), "state": dataclasses.asdict(self.state),
                 "early_stopping": dataclasses.asdict(self.stopper), "scaler": self.scaler.state_dict()}
        self.save(self.last_path, extra=extra)
        self.saved_step = self.state.step

    def _write_log(self) -> None:
        try:
            atomic_write_text(self.log_path, _log_text(self.state.rows))
        except OSError as err:
            raise self._write_failed(self.log_path, err) from err

    # ---- epochs -----------------------------------------------------------------------------------------------

    def end_epoch(self, *, timed_out: bool) -> None:
        """Validate (rank 0), log, save ``best.ckpt`` on a better SDR, and decide whether to stop (every rank)."""
        state = self.state
        stopped = distributed.on_rank0(lambda: self._validate_and_log(timed_out=timed_out))
        if distributed.broadcast_flag(bool(stopped)):
            state.stopped = stopped or "stopped by rank 0"

    def _validate_and_log(self, *, timed_out: bool) -> str:
        config, state = self.config, self.state
        model = self.ema.module if self.ema is not None else self.model
        result = validate(model, self.excerpts, device=self.device, wave_weight=config.wave_loss)
        elapsed = time.perf_counter() - self.t_start
        row = {"epoch": state.epoch, "step": state.step, "examples": state.examples, "seconds": round(elapsed, 1),
               "lr": lr_at(state.step - 1, config), "train_loss": state.run_loss / max(1, state.run_n),
               **{f"valid_{k}": v for k, v in result.items()}}
        state.run_loss, state.run_n = 0.0, 0
        improved = self.stopper.update(result["sdr"], epoch=state.epoch)
        row["best"] = int(improved)
        state.rows.append(row)
        if self.writer is not None:
            for key, value in row.items():
                if key.startswith("valid_") or key == "lr":
                    self.writer.add_scalar(key.replace("valid_", "valid/"), value, state.step)
            self.writer.flush()
        if self.bar is not None:
            self.bar.write(f"epoch {state.epoch} step {state.step}: train loss {row['train_loss']:.4f}, valid loss "
                           f"{result['loss']:.4f}, valid SDR {result['sdr']:.2f} dB (mixture "
                           f"{result['mixture_sdr']:.2f} dB){' *' if improved else ''}")
        if improved:
            state.seconds = elapsed
            self.save(self.best_path)
        self._write_log()
        if self.stopper.should_stop:
            return f"early stop: no better validation SDR for {config.patience} epochs"
        return f"time limit of {config.time_limit:g} min reached" if timed_out else ""

    # ---- the loop ---------------------------------------------------------------------------------------------

    def fit(self) -> Path:
        """Set up, train to the budget (or early stop / time limit), return the best checkpoint's path.

        SIGINT and SIGTERM (when called from the main thread) stop the run cleanly: during setup at once, in the
        loop after the step under way, with a ``last.ckpt`` of it; either way :class:`TrainingInterrupted` is
        raised. A second signal acts at once (the caller's handlers are back by then)."""
        threads = torch.get_num_threads()
        try:
            with self.held:  # the run folder's lock and the signal handlers, released whatever happens
                self._catch_signals()
                self.setup()
                return self._loop()
        finally:
            if self.bar is not None:
                self.bar.close()
            if self.writer is not None:
                self.writer.close()
            torch.set_num_threads(threads)  # train() leaves the caller's thread count as it found it

    def _loop(self) -> Path:
        config, state = self.config, self.state
        total = config.total_steps
        self.t_start = time.perf_counter() - state.seconds
        window_t, window_ex = time.perf_counter(), 0
        batches = self.loader if state.step < total and not state.stopped else []  # a finished run starts no worker
        self.in_loop = True
        for batch in batches:
            loss = self.train_step(batch)
            timed_out = config.time_limit is not None and time.perf_counter() - self.t_start > 60 * config.time_limit
            # one collective per step: the mean loss over the ranks, whether any rank ran out of time or was signalled
            loss_sum, n_timed_out, n_signalled = distributed.all_reduce_sum(
                [loss, float(timed_out), float(self.stop_signal is not None)])
            loss, timed_out, signalled = loss_sum / self.world, n_timed_out > 0, n_signalled > 0
            if not math.isfinite(loss):
                raise self._diverged(f"the training loss is {loss}")
            state.run_loss, state.run_n = state.run_loss + loss, state.run_n + 1
            if self.bar is not None:
                window_ex += config.batch_size * config.accumulate * self.world
                now = time.perf_counter()
                self.bar.update(1)
                if now - window_t > 1.0:
                    self.bar.set_postfix(loss=f"{state.run_loss / state.run_n:.4f}",
                                         ex_s=f"{window_ex / (now - window_t):.0f}")
                    window_t, window_ex = now, 0
            if self.writer is not None:
                self.writer.add_scalar("train/loss", loss, state.step)
            epoch_end = state.step % config.steps_per_epoch == 0 or state.step == total
            if epoch_end or timed_out:
                state.epoch += int(epoch_end)
                self.end_epoch(timed_out=timed_out)
            if epoch_end or state.step % config.checkpoint_every == 0 or state.stopped or state.step >= total or \
                    signalled:
                distributed.on_rank0(self.save_last)
            if signalled:
                raise self._interrupted(self.stop_signal or signal.SIGTERM)  # on other ranks: their peer's signal
            if state.stopped:
                break
        distributed.on_rank0(self._ensure_best)
        distributed.barrier()
        if self.stop_signal is not None:  # came with the last step: the run is whole, but the caller was asked to stop
            raise self._interrupted(self.stop_signal)
        return self.best_path

    def _ensure_best(self) -> None:
        # e.g. a resumed run that had already finished: keep the contract of returning a checkpoint
        if not self.best_path.exists():
            self.save(self.best_path)


def train(config: TrainConfig) -> Path:
    """Train one model as ``config`` says and return the path of its best checkpoint.

    Raises :class:`~conditioned_sep.data.folder.DatasetError` or :class:`TrainingError` (both ValueError)
    before any training step, and before ``overwrite`` deletes anything, for bad settings, a missing or empty
    dataset, a stem the data lacks, an output folder that cannot be written, an existing run without ``resume``
    / ``overwrite``, or nothing to resume; and :class:`TrainingError` during training when it diverges or a
    checkpoint cannot be written (the last good checkpoint is kept).
    """
    started = distributed.init(_device(config).type)
    try:
        best = Trainer(config).fit()
        # gloo aborts a rank whose peer tears the group down while it is still connected ("terminate called
        # without an active exception", seen once in the test suite): leave together
        distributed.barrier()
        return best
    finally:
        if started:
            distributed.destroy()


def train_many(configs: Sequence[TrainConfig]) -> dict[Path, Path]:
    """Train several models one after another (e.g. the conditioned one and four dedicated ones, for one seed or
    several); returns ``{run folder: best checkpoint}``."""
    folders = [c.run_dir for c in configs]
    if len(set(folders)) != len(folders):
        raise TrainingError(f"two runs share a folder in {[str(f) for f in folders]}; give each its own --name")
    return {c.run_dir: train(c) for c in configs}
