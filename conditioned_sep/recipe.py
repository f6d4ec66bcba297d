"""What a training run is asked to do: :class:`TrainConfig` (every training setting, each default written once;
the command line derives its options from its fields), the budget of a conditioned model beside its dedicated
twins (:func:`apply_budget`), the learning-rate schedule (:func:`lr_at`) and the untrained model a config names
(:func:`build_model`). :mod:`conditioned_sep.training` runs it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data.sources import DatasetSpec
from .hardware import COMPILE_CHOICES, PRECISION_CHOICES, device_problem
from .models import ARCHITECTURES, PRESETS_BY_ARCH, SeparationModel, from_preset
from .runs import DEFAULT_RUN
from .stems import OTHER_PARTS, STEMS, UnknownStemError, check_vocabulary


DEFAULT_STEPS = {"tiny": 200, "small": 2000, "full": 100_000}
"""Step budget per model when neither ``steps`` nor ``epochs`` is given (small: a few minutes on 2 cores)."""


PRESET_NAMES = tuple(dict.fromkeys(name for presets in PRESETS_BY_ARCH.values() for name in presets))
"""The preset names of every architecture (each has its own tiny / small / full)."""


BUDGETS = ("equal-compute", "equal-steps")
"""How the conditioned model's budget compares with a dedicated model's (:func:`apply_budget`)."""


@dataclass(frozen=True)
class Recipe:
    """A named set of training settings (``python train.py --recipe NAME``): ``options`` are :class:`TrainConfig`
    fields as the command line sets them (an option given beside ``--recipe`` wins), ``model_overrides`` fields of
    the architecture's config for every model it trains (the dedicated twins too, so they share the backbone)."""

    summary: str
    options: dict[str, Any]
    model_overrides: dict[str, Any] = field(default_factory=dict)


RECIPES = {
    "shipped": Recipe(
        summary="the shipped model (conditioned_sep/pretrained/): U-Net of 6 blocks of 12..384 channels on the small "
                "preset's STFT (5.6 M weights, 11 MB as fp16), batch 16, EMA 0.999; 3000 steps or 25 min per "
                "dedicated model, so the conditioned model trained alone gets 12000 steps or 100 min (the shipped "
                "weights: a second leg, --resume --steps 5600 --time-limit 50, to 22400 steps)",
        options=dict(arch="unet", preset="small", batch_size=16, lr=1e-3, lr_final=0.05, warmup_steps=200,
                     ema_decay=0.999, steps=3000, steps_per_epoch=500, patience=100, checkpoint_every=250,
                     time_limit=25.0, valid_seconds=10.0),
        # the small preset's five blocks of 8..128 channels (0.65 M weights) widened and deepened: 1.6 x the step
        # time for 8.6 x the weights; at equal steps it learnt as fast in a 12-minute comparison (README)
        model_overrides=dict(channels=(12, 24, 48, 96, 192, 384))),
}
"""Named recipes; ``shipped`` trains the weights in ``conditioned_sep/pretrained/``."""


class TrainingError(ValueError):
    """A training run that cannot start or go on: bad settings or output folder, nothing to resume, a mismatching
    resume, divergence, a failed write."""


@dataclass
class TrainConfig:
    """One training run. ``target=None`` trains the conditioned model, a stem name a dedicated one.

    Budget: ``steps`` optimizer steps (default :data:`DEFAULT_STEPS` of the preset), or ``epochs`` epochs of
    ``steps_per_epoch`` steps; training also stops early after ``patience`` epochs without a better
    validation SDR, or after ``time_limit`` minutes. One optimizer step takes ``accumulate`` micro-batches of
    ``batch_size`` examples on each process. ``budget`` and ``budget_scale`` record how the budget was set: the
    step, epoch and time budgets of an equal-compute conditioned model are ``budget_scale`` times the dedicated
    models' (:func:`apply_budget` multiplies them). ``model_overrides`` are fields of the ``arch``'s config
    (e.g. :class:`~conditioned_sep.models.UNetConfig`), ``sampling``
    :class:`~conditioned_sep.data.sampling.SamplingConfig` fields.
    """

    out: Path = field(default=DEFAULT_RUN, metadata={"help": "output folder; each run goes to <out>/<name>"})
    name: str | None = field(default=None, metadata={"help": "run name (default: conditioned / dedicated-<stem>)"})
    arch: str = field(default="unet", metadata={"help": "model architecture (the dedicated models share it)",
                                                 "choices": tuple(ARCHITECTURES)})
    preset: str = field(default="small", metadata={"help": "model size (each --arch has its own)",
                                                    "choices": PRESET_NAMES})
    stems: tuple[str, ...] = field(default=STEMS, metadata={
        "help": "the stem vocabulary z names, comma-separated (e.g. vocals,drums,bass,piano,guitar,other: 'other' "
                "is then the rest of other; --dedicated all trains one model per stem)"})
    model_overrides: dict[str, Any] = field(default_factory=dict)
    target: str | None = None
    dataset: str = "default"  # a kind of conditioned_sep.data.sources.DATASET_KINDS
    data_root: Path | None = None
    budget: str = field(default="equal-compute", metadata={
        "help": "equal-steps: every model gets --steps (--epochs, --time-limit); equal-compute: the conditioned "
                "model gets the sum of the dedicated models' budgets (trained alone: the budget x the number of "
                "stems)", "choices": BUDGETS})
    budget_scale: int = 1
    steps: int | None = field(default=None, metadata={
        "help": f"optimizer steps per model, scaled for the conditioned one by --budget (default per preset: "
                f"{DEFAULT_STEPS})"})
    epochs: int | None = field(default=None, metadata={"help": "epochs per model (of --steps-per-epoch steps)"})
    steps_per_epoch: int = field(default=250, metadata={"help": "optimizer steps between validations"})
    batch_size: int = field(default=16, metadata={"help": "examples per micro-batch and process"})
    accumulate: int = field(default=1, metadata={
        "help": "micro-batches per optimizer step (gradient accumulation: batch_size x accumulate examples per "
                "step and process, at the memory of one micro-batch)"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate of Adam"})
    lr_final: float = field(default=0.05, metadata={"help": "the cosine decay ends at lr x lr_final"})
    warmup_steps: int = field(default=50, metadata={"help": "steps of linear learning-rate warm-up"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay"})
    grad_clip: float = field(default=5.0, metadata={"help": "clip the gradient norm to this (0: no clipping)"})
    wave_loss: float = field(default=0.0, metadata={"help": "weight of a waveform L1 term in the loss"})
    ema_decay: float = field(default=0.0, metadata={
        "help": "decay of an exponential moving average of the weights, e.g. 0.999 (0: off); when on, the "
                "average is validated, selects best.ckpt and is what separation loads"})
    patience: int = field(default=10, metadata={"help": "early stop after this many epochs without a better "
                                                        "validation SDR"})
    checkpoint_every: int = field(default=100, metadata={"help": "steps between last.ckpt saves"})
    valid_seconds: float = field(default=10.0, metadata={"help": "seconds of each validation song scored"})
    seed: int = field(default=0, metadata={"help": "seed of the weights, the examples and the dropout noise"})
    resume: bool = field(default=False, metadata={"help": "continue from <out>/<name>/last.ckpt"})
    overwrite: bool = field(default=False, metadata={
        "help": "start again over an existing run (deleted once every check has passed)"})
    tensorboard: bool = field(default=False, metadata={"help": "also log to <run>/tensorboard"})
    progress: bool = field(default=True, metadata={"help": "progress bar"})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available, else cpu), cpu or cuda[:N]"})
    precision: str = field(default="auto", metadata={
        "help": "the network's forward in fp32, or autocast to bf16 (CPU or GPU) or fp16 (CUDA only, with loss "
                "scaling); STFT, ISTFT and the loss stay fp32; auto: bf16 on a GPU, and on a CPU with bf16 matrix "
                "units where the architecture is measured faster in it, else fp32", "choices": PRECISION_CHOICES})
    compile: str = field(default="auto", metadata={
        "help": "torch.compile the network's training step (inductor: the first compile of a graph takes a minute "
                "or more, then comes from the on-disk cache); auto: on a GPU, and on a CPU where the architecture "
                "is measured faster compiled", "choices": COMPILE_CHOICES})
    threads: str | int = field(default="auto", metadata={
        "help": "torch threads of each process: a number, or auto (on the CPU every core with the stem cache, whose "
                "loader is light; without it the cores minus the loader workers; $OMP_NUM_THREADS when set)"})
    workers: int = field(default=1, metadata={
        "help": "DataLoader worker processes drawing the examples (0: in the training process); the examples "
                "are the same whatever the number"})
    time_limit: float | None = field(default=None, metadata={
        "help": "stop each model after this many minutes (validates and checkpoints first; an equal-compute "
                "conditioned model gets the sum of the dedicated models' limits, see --budget)", "metavar": "MINUTES"})
    stem_cache: bool = field(default=True, metadata={
        "help": "draw examples from the training stems decoded once into int16 memory maps under the data folder "
                "($CONDITIONED_SEP_DATA/stems-v1; exact for 16-bit stems); --no-stem-cache reads the files"})
    sampling: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out).expanduser()
        self.data_root = Path(self.data_root).expanduser() if self.data_root is not None else None
        if isinstance(self.threads, str) and self.threads.isdigit():
            self.threads = int(self.threads)  # from the command line
        self.data_spec.check_trainable()  # also refuses an unknown kind or a folder without a root
        self.stems = check_vocabulary(self.stems)
        if self.target is not None and self.target not in self.stems:
            raise UnknownStemError(f"unknown stem {self.target!r} for a dedicated model; choose one of "
                                   f"{', '.join(self.stems)} (the vocabulary: --stems)")
        problems = self.problems()
        if problems:
            raise TrainingError("invalid training settings: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Everything wrong with the settings (empty when valid), each naming its option."""
        out = []
        if self.arch not in ARCHITECTURES:
            out.append(f"unknown arch {self.arch!r}; choose one of {tuple(ARCHITECTURES)}")
        else:
            if self.preset not in PRESETS_BY_ARCH[self.arch]:
                out.append(f"unknown {self.arch} preset {self.preset!r}; choose one of "
                           f"{tuple(PRESETS_BY_ARCH[self.arch])}")
            known = ARCHITECTURES[self.arch][0].field_names()
            unknown = sorted(set(self.model_overrides) - known)
            if unknown:
                out.append(f"model setting(s) {unknown} are not fields of the {self.arch} model (--film and "
                           "--z-input are U-Net options); drop them or pick another --arch")
        if self.budget not in BUDGETS:
            out.append(f"budget must be one of {BUDGETS} (--budget), got {self.budget!r}")
        if not (isinstance(self.budget_scale, int) and self.budget_scale >= 1):
            out.append(f"budget_scale must be a whole number >= 1 (apply_budget sets it), got {self.budget_scale!r}")
        positive = {"steps": self.steps, "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch,
                    "batch_size": self.batch_size, "accumulate": self.accumulate, "lr": self.lr,
                    "patience": self.patience, "checkpoint_every": self.checkpoint_every,
                    "valid_seconds": self.valid_seconds, "time_limit": self.time_limit}
        for key, value in positive.items():
            # `not value > 0` also refuses NaN; None means "not set" for the optional ones
            if value is not None and not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                unit = " of minutes" if key == "time_limit" else ""
                shown = f"{value:g}" if isinstance(value, (int, float)) else repr(value)
                out.append(f"{key} must be a positive number{unit} (--{key.replace('_', '-')}), got {shown}")
        for key in ("warmup_steps", "weight_decay", "grad_clip", "wave_loss", "seed", "workers"):
            value = getattr(self, key)
            if not (value >= 0 and math.isfinite(value)):
                out.append(f"{key} must be >= 0 (--{key.replace('_', '-')}), got {value}")
        if not 0 <= self.lr_final <= 1:
            out.append(f"lr_final must be in [0, 1] (a fraction of --lr), got {self.lr_final}")
        if not 0 <= self.ema_decay < 1:
            out.append(f"ema_decay must be in [0, 1) (0: no moving average; e.g. 0.999), got {self.ema_decay}")
        if self.precision not in PRECISION_CHOICES:
            out.append(f"precision must be one of {PRECISION_CHOICES}, got {self.precision!r}")
        if self.compile not in COMPILE_CHOICES:
            out.append(f"compile must be one of {COMPILE_CHOICES}, got {self.compile!r}")
        elif self.precision == "fp16" and self.device == "cpu":
            out.append("precision fp16 needs a CUDA device (its loss scaling is CUDA's); use --precision bf16 on CPU")
        if device_problem(self.device):
            out.append(device_problem(self.device))
        if not (self.threads == "auto" or (isinstance(self.threads, int) and self.threads > 0)):
            out.append(f"threads must be auto or a positive number (--threads), got {self.threads!r}")
        if self.resume and self.overwrite:
            out.append("--resume continues a run and --overwrite deletes it: pass one of them")
        parts = [s for s in self.stems if s in OTHER_PARTS]
        if parts and "other" not in self.stems:
            # the mixture is the sum of the vocabulary's stems: without the remainder it would not be a song's
            out.append(f"stems {','.join(self.stems)} list parts of other ({', '.join(parts)}) but not 'other': "
                       f"add 'other' as the remainder (--stems {','.join(self.stems)},other), or the stems no "
                       "longer sum to the mixture")
        if self.name and (self.name in (".", "..") or Path(self.name).name != self.name or "\\" in self.name):
            out.append(f"name must be a plain folder name, without / or .. (--name), got {self.name!r}: the run goes "
                       "to <out>/<name>; pass --out for another folder")
        return out

    @property
    def run_name(self) -> str:
        return self.name or ("conditioned" if self.target is None else f"dedicated-{self.target}")

    @property
    def data_spec(self) -> DatasetSpec:
        """Where the training data is (``dataset`` and ``data_root``)."""
        return DatasetSpec(self.dataset, self.data_root)

    @property
    def run_dir(self) -> Path:
        return self.out / self.run_name

    @property
    def total_steps(self) -> int:
        budgets = [b for b in (self.steps, self.epochs and self.epochs * self.steps_per_epoch) if b]
        return min(budgets) if budgets else DEFAULT_STEPS[self.preset]

    def budget_record(self) -> dict[str, Any]:
        """What this model was given, for the run summary: ``{"kind", "scale", "steps", "epochs", "time_limit"}``
        (steps: the step budget; time_limit in minutes; epochs and time_limit None when not set)."""
        return {"kind": self.budget, "scale": self.budget_scale, "steps": self.total_steps, "epochs": self.epochs,
                "time_limit": self.time_limit}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (paths as strings) for checkpoints."""
        data = dataclasses.asdict(self)
        data["out"] = str(self.out)
        data["data_root"] = str(self.data_root) if self.data_root is not None else None
        return data


def build_model(config: TrainConfig) -> SeparationModel:
    """The untrained model of ``config``: its ``arch`` at its ``preset`` (seeded by ``config.seed``); a ``target``
    makes the dedicated twin of the same architecture."""
    torch.manual_seed(config.seed)
    overrides = dict(config.model_overrides, stems=config.stems)
    if config.target is not None:
        overrides.update(conditioned=False, target=config.target)
    return from_preset(config.arch, config.preset, **overrides)


def apply_budget(configs: Sequence[TrainConfig], *, n_stems: int = len(STEMS)) -> list[TrainConfig]:
    """The models trained together (one seed), with the conditioned model's budget set by its ``budget``.

    ``equal-steps``: unchanged. ``equal-compute``: the conditioned model's steps (its preset's default when neither
    steps nor epochs is set), epochs and time limit are multiplied by the number of dedicated models in
    ``configs``, or by ``n_stems`` (the stems it answers) when it is trained alone; so it gets the compute that the
    dedicated models get together. Dedicated models are unchanged.
    """
    n_dedicated = sum(c.target is not None for c in configs)
    scale = n_dedicated or n_stems
    out = []
    for c in configs:
        if c.target is None and c.budget == "equal-compute" and c.budget_scale == 1 and scale > 1:
            steps = c.steps * scale if c.steps else (None if c.epochs else DEFAULT_STEPS[c.preset] * scale)
            c = dataclasses.replace(c, steps=steps, epochs=c.epochs and c.epochs * scale,
                                    time_limit=c.time_limit and c.time_limit * scale, budget_scale=scale)
        out.append(c)
    return out


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then cosine to ``lr * lr_final``."""
    total = config.total_steps
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total - config.warmup_steps))
    return config.lr * (config.lr_final + (1 - config.lr_final) * 0.5 * (1 + math.cos(math.pi * progress)))
