"""Devices: the one check of a device name that separation and training share (and, later, threads and precision).

Imports torch only, so that any module may ask it.
"""

from __future__ import annotations

import re

import torch

_DEVICE = re.compile(r"(auto|cpu|cuda|mps)(:(\d+))?")


def device_from_name(device: str | torch.device) -> torch.device:
    """The :class:`torch.device` of a name such as ``cpu``, ``cuda``, ``cuda:1``, ``mps`` or ``auto`` (CUDA when
    available, else CPU).

    Raises ``ValueError`` naming the way out for a name torch does not know and for a device this machine lacks
    (CUDA on a CPU-only torch, ``cuda:3`` on a machine with one GPU), instead of torch's traceback at first use.
    """
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise TypeError(f"device must be a name such as 'cpu' or 'cuda:0', or a torch.device; got "
                        f"{type(device).__name__}")
    match = _DEVICE.fullmatch(name)
    if match is None:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N (N: the GPU's index) or auto")
    kind, index = match.group(1), match.group(3)
    if kind == "auto":
        if index is not None:
            raise ValueError(f"unknown device {device!r}; auto takes no index (use cuda:{index})")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available (torch {torch.__version__}); "
                             "use cpu or auto")
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            raise ValueError(f"device {device!r} asked for, but this machine has {count} CUDA device(s): "
                             f"cuda:0 to cuda:{count - 1}")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but MPS (Apple GPU) is not available; use cpu or auto")
    return torch.device(name)
