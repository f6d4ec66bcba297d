"""Hardware policy, asked by training, separation and evaluation alike: which device, how many threads, which
precision the network runs in, and what the processor can do.

- :func:`resolve_device`: ``auto`` / ``cpu`` / ``cuda[:N]`` to a :class:`torch.device`, refusing what this machine
  lacks with a :class:`DeviceError` that says what to pass instead (under torchrun a plain ``cuda`` is this
  process's GPU).
- :func:`auto_threads` / :func:`apply_threads`: the ``--threads auto`` policy (one core per data-loader worker, the
  rest for torch) and setting it.
- :data:`PRECISIONS`, :func:`autocast`: the network's forward in fp32 or autocast to bf16 / fp16 (STFT, ISTFT and
  losses stay fp32: torch's FFT has no half-precision CPU path).
- :func:`cpu_flags`, :func:`has_bf16_matmul`: whether the processor has bf16 matrix units (AMX-BF16 or
  AVX512-BF16 on x86; any CUDA GPU torch calls bf16-capable), read at run time: bf16 only pays where they exist.
"""

from __future__ import annotations

import os
import re
import warnings
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from pathlib import Path

import torch

from . import distributed

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
"""The device names every command takes."""
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``precision`` -> the dtype the network's forward is autocast to (None: no autocast)."""
PRECISION_CHOICES = ("auto", *PRECISIONS)
"""What ``--precision`` takes: ``auto`` is :func:`choose_precision`'s choice."""
COMPILE_CHOICES = ("auto", "on", "off")
"""What ``--compile`` takes: ``auto`` is :func:`choose_compile`'s choice."""
BF16_MATMUL_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of x86 bf16 matrix units: with neither, bf16 is emulated and slower than fp32."""


class DeviceError(ValueError):
    """A device or precision this machine (or this torch) cannot give; the message says what to pass instead."""


def device_problem(name: str) -> str | None:
    """What is wrong with the device name ``name`` (None when it is well-formed): for settings checks."""
    if isinstance(name, str) and DEVICE_PATTERN.fullmatch(name):
        return None
    return f"device must be auto, cpu, cuda or cuda:N, got {name!r}"


def resolve_device(name: str | torch.device, *, precision: str = "fp32") -> torch.device:
    """The device of this process for the device name ``name``: ``auto`` is CUDA when available, else the CPU;
    under torchrun a plain ``cuda`` (or ``auto``) is ``cuda:<LOCAL_RANK>``. Raises :class:`DeviceError` for a
    malformed name, a CUDA device this torch or machine lacks (naming how many GPUs it has), or a ``precision``
    the device cannot run."""
    name = str(name) if isinstance(name, torch.device) else name
    problem = device_problem(name)
    if problem:
        raise DeviceError(problem)
    resolved = name
    if resolved == "auto":
        resolved = "cuda" if torch.cuda.is_available() else "cpu"
    if resolved.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} asked for, but CUDA is not available (torch {torch.__version__}); "
                              "use --device cpu or auto")
        index = int(resolved.split(":")[1]) if ":" in resolved else None
        if index is not None and index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} "
                              "GPU(s), numbered from 0; use --device cuda or auto")
        if resolved == "cuda" and distributed.world()[1] > 1:
            resolved = f"cuda:{distributed.local_rank()}"
    device = torch.device(resolved)
    if precision not in PRECISION_CHOICES:
        raise DeviceError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError(f"precision fp16 needs a CUDA device (device {name!r} is {device}); use "
                          "--precision bf16 on CPU, or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"this GPU ({torch.cuda.get_device_name(device)}) has no bf16; use --precision fp16")
    return device


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The context the network's forward runs in: autocast to ``precision``'s dtype, or nothing for fp32."""
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The processor's feature flags as Linux lists them in /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def has_bf16_matmul(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware: a CUDA GPU that supports bf16, or a CPU with
    AMX-BF16 or AVX512-BF16 (elsewhere bf16 autocast on the CPU is emulated and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & set(BF16_MATMUL_FLAGS))


def choose_precision(precision: str, *, device: torch.device, bf16_pays: bool) -> str:
    """``precision``, or for ``auto``: bf16 on a CUDA GPU that has it; on a CPU bf16 where it has bf16 matrix units
    (:func:`has_bf16_matmul`) and the architecture is measured faster in bf16 there (``bf16_pays``: the model
    class's :attr:`~conditioned_sep.models.SeparationModel.bf16_pays`); else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if bf16_pays and has_bf16_matmul(device) else "fp32"


def choose_compile(compile: str, *, device: torch.device, compile_pays: bool) -> bool:
    """Whether to ``torch.compile`` the network: ``on`` / ``off``, or for ``auto`` on a GPU, and on a CPU where
    the architecture is measured faster compiled (``compile_pays``, the model class's
    :attr:`~conditioned_sep.models.SeparationModel.compile_pays`)."""
    if compile not in COMPILE_CHOICES:
        raise DeviceError(f"compile must be one of {COMPILE_CHOICES}, got {compile!r}")
    if compile != "auto":
        return compile == "on"
    return device.type == "cuda" or compile_pays


def auto_threads(*, device: torch.device, workers: int, light_loader: bool = False) -> int | None:
    """The ``threads="auto"`` policy on the CPU: every core for torch when the loader is light (``light_loader``:
    examples sliced from memory-mapped int16 stems, a few percent of a core), else one core per data-loader worker
    and the rest for torch (``cores - workers``, at least 1), so that no two busy threads share a core; None
    (torch's own choice) on a GPU or when ``$OMP_NUM_THREADS`` says otherwise.

    Measured on 2 cores (U-Net small, batch 16, train.py's step with data, 2026-12-04): with the stem cache, 1
    worker and 2 threads 201 ms a step against 266 ms with 1 thread; decoding FLAC per example (no cache), 2
    threads and 1 worker trained at 57 examples/s alone but 26 beside one busy process, 1 thread at 48 and 46."""
    if device.type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if light_loader else max(1, cores - workers)


def apply_threads(threads: str | int | None, *, warn: bool = True) -> None:
    """Set this process's torch threads (intra- and inter-op); None or ``auto`` leave torch's own choice. ``warn``:
    say so when the inter-op threads cannot follow (torch fixes them once per process)."""
    if threads is None or threads == "auto":
        return
    torch.set_num_threads(int(threads))
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(int(threads))
        except RuntimeError:  # torch fixes them at the first inter-op work of a process; training barely uses them
            if warn:
                warnings.warn(f"inter-op threads stay at {torch.get_num_interop_threads()} (torch fixes them once "
                              "per process)", RuntimeWarning, stacklevel=2)
