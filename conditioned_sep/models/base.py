"""What the Separator and the Trainer need from any separation model, written down once.

A model maps a complex mixture spectrogram and a condition ``z`` over its stems to complex estimates of the
stems ``z`` names; it owns the STFT / ISTFT pair that defines that spectrogram. Its config is a dataclass
stored in checkpoints as a plain dict (``to_dict`` / strict ``from_dict``) whose ``arch`` field names the
architecture (see :mod:`conditioned_sep.models`).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from ..spectral import ISTFT, STFT
from ..stems import SAMPLE_RATE, STEMS, UnknownStemError, check_vocabulary

C = TypeVar("C", bound="SeparationConfig")


@dataclass
class SeparationConfig:
    """The fields every architecture has. Units: ``sample_rate`` in Hz, ``n_fft`` / ``hop_length`` in samples,
    ``segment_frames`` in STFT frames (the training patch length).

    ``arch`` is fixed by the config class (not an argument): it names the architecture in checkpoints.
    ``stems`` is the model's vocabulary (:func:`~conditioned_sep.stems.check_vocabulary`), the order of ``z``.
    ``conditioned=False`` with a ``target`` stem makes the dedicated twin of the conditioned model.
    """

    arch: str = field(default="", init=False)
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 2048
    hop_length: int = 512
    audio_channels: int = 2
    stems: tuple[str, ...] = STEMS
    conditioned: bool = True
    target: str | None = None
    segment_frames: int = 128

    def __post_init__(self) -> None:
        self.stems = tuple(self.stems)
        problems = self.problems()
        if problems:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Everything wrong with the field values (empty when valid); subclasses add their own."""
        problems = []
        if self.sample_rate <= 0:
            problems.append(f"sample_rate must be a positive number of Hz, got {self.sample_rate}")
        if self.n_fft <= 0 or self.n_fft % 2:
            problems.append(f"n_fft must be a positive even number of samples, got {self.n_fft}")
        # hop <= n_fft / 2 puts every sample under at least two Hann windows: the ISTFT then inverts the STFT
        # stably (and the windows overlap-add to a constant for hop = n_fft / k)
        if not 0 < self.hop_length <= self.n_fft // 2:
            problems.append(f"hop_length must be in 1..n_fft // 2 ({self.n_fft // 2}) for a Hann STFT the ISTFT "
                            f"can invert, got {self.hop_length}")
        if self.audio_channels not in (1, 2):
            problems.append(f"audio_channels must be 1 or 2, got {self.audio_channels}")
        try:
            check_vocabulary(self.stems)
        except UnknownStemError as err:
            problems.append(f"stems: {err}")
        if self.conditioned and self.target is not None:
            problems.append(f"a conditioned model has no target (got target={self.target!r}); set conditioned=False")
        if not self.conditioned and self.target not in self.stems:
            problems.append(f"a dedicated model (conditioned=False) needs target in {self.stems}, got {self.target!r}")
        if self.segment_frames <= 0:
            problems.append(f"segment_frames must be a positive number of frames, got {self.segment_frames}")
        return problems

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, not tuples) for checkpoints and JSON, ``arch`` included."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Inverse of :meth:`to_dict`. Unknown keys, or another architecture's ``arch``, are an error; missing
        keys take their defaults."""
        data = dict(data)
        arch = data.pop("arch", cls.arch)
        if arch != cls.arch:
            raise ValueError(f"{cls.__name__} is the config of arch {cls.arch!r}, got arch={arch!r}; "
                             "use conditioned_sep.models.config_from_dict to pick the class by arch")
        known = cls.field_names()
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def field_names(cls) -> set[str]:
        """The fields a constructor accepts (``arch`` is not one of them)."""
        return {f.name for f in dataclasses.fields(cls) if f.init}


class SeparationModel(nn.Module, ABC):
    """Base of every separation model: ``forward(spec, z)`` -> complex estimates, plus what callers rely on.

    Subclasses set ``config_class``, build their layers after ``super().__init__(config)``, and implement
    :meth:`forward` (abstract); they override :attr:`frame_multiple` / :attr:`context_frames` when they have such
    needs.
    """

    config_class: ClassVar[type[SeparationConfig]] = SeparationConfig
    complex_mask: ClassVar[bool] = False
    """Whether the model sets the phase of its estimates (a complex mask): training then scores the complex
    spectrogram, not only its magnitude."""
    bf16_pays: ClassVar[bool] = False
    """Whether its training step is measured faster under bf16 autocast on a CPU with bf16 matrix units
    (``benchmarks/bench_train.py``): ``--precision auto`` uses bf16 there only then."""
    compile_pays: ClassVar[bool] = False
    """Whether its training step is measured faster under ``torch.compile`` on a CPU: ``--compile auto`` compiles
    there only then (always on a GPU)."""

    def __init__(self, config: SeparationConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.stft = STFT(n_fft=config.n_fft, hop_length=config.hop_length)
        self.istft = ISTFT(n_fft=config.n_fft, hop_length=config.hop_length)

    @property
    def stems(self) -> tuple[str, ...]:
        """The stem vocabulary ``z`` is a vector over, in order."""
        return self.config.stems

    @property
    def is_conditioned(self) -> bool:
        return self.config.conditioned

    @property
    def target(self) -> str | None:
        """The stem a dedicated model extracts; None for a conditioned model."""
        return self.config.target

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def frame_multiple(self) -> int:
        """Chunks hold a multiple of this many STFT frames and start on this grid (in frames) so that chunked
        output matches whole-signal output; 1 when the model has no such constraint."""
        return 1

    @property
    def context_frames(self) -> int:
        """STFT frames of context the model needs on each side of a chunk (0: cross-fading hides the seams)."""
        return 0

    def check_z(self, z: Tensor | None, batch: int) -> int:
        """Raise ValueError unless ``z`` fits this model and a spectrogram batch of ``batch``; return the number
        of outputs ``q`` (``z``'s batch, or ``batch`` for a dedicated model)."""
        if not self.is_conditioned:
            if z is not None:
                raise ValueError(f"this is a dedicated {self.target!r} model: call it with z=None")
            return batch
        if z is None:
            raise ValueError(f"this conditioned model needs z of shape (batch, {len(self.stems)}) over {self.stems}")
        if z.ndim != 2 or z.shape[1] != len(self.stems):
            raise ValueError(f"z must be (batch, {len(self.stems)}) over {self.stems}, got shape {tuple(z.shape)}")
        if z.shape[0] != batch and batch != 1:
            raise ValueError(f"z has batch {z.shape[0]} but the spectrogram has batch {batch} (use equal batches, "
                             "or a spectrogram of batch 1)")
        return z.shape[0]

    def compile_network(self) -> None:
        """``torch.compile`` the real-valued network in place (inductor generates no code for complex tensors, so
        the STFT and the complex products around it stay eager); the weights and the state dict are unchanged.
        Models override it to name their real-valued part; this default compiles the whole forward (inductor then
        runs the complex operators eagerly)."""
        self.forward = torch.compile(self.forward)  # type: ignore[method-assign]  # an instance attribute

    @abstractmethod
    def forward(self, spec: Tensor, z: Tensor | None = None) -> Tensor:
        """Complex mixture ``spec (b, c, f, t)`` with ``f = n_fft // 2 + 1``, and ``z (q, n_stems)`` (None for a
        dedicated model) -> complex estimates ``(q, c, f, t)``; a ``spec`` of batch 1 serves q conditions.
        The training loss compares ``|estimate|`` with the target's ``|STFT|``."""
