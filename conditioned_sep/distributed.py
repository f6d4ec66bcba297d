"""DistributedDataParallel helpers: who am I, start and stop the process group, and collectives that keep every
rank in step when one of them has to refuse (after demucs' ``distrib.py``).

Every function works unchanged in a single process (world of one): then it is a plain call, no collective.
A collective must be reached by every rank, so a rank that raises alone would leave the others waiting until
the process group times out; :func:`on_rank0` turns a refusal of rank 0 into an error on every rank.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


class RankZeroError(ValueError):
    """Raised on ranks > 0 when rank 0 refused (its own error is raised and printed on rank 0)."""


def world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``; 0 outside torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init(device_type: str) -> bool:
    """Start the process group under torchrun (``WORLD_SIZE > 1``): nccl for ``device_type`` "cuda", else gloo.
    Returns True when this call started it (then call :func:`destroy` when done)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return True


def destroy() -> None:
    """Stop the process group (no-op outside one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> str:
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if world()[1] > 1:
        dist.barrier()


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (a collective: every rank must call it)."""
    if world()[1] == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=_collective_device())
    dist.broadcast(t, src=0)
    return bool(t.item())


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (float64; a collective)."""
    if world()[1] == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.tolist()


def on_rank0(fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 only (None on the others). When it raises, every rank raises: rank 0 its error, the
    others a :class:`RankZeroError` pointing to it, so no process is left waiting in a later collective.
    A collective: every rank must call it."""
    rank, size = world()
    if size == 1:
        return fn()
    result, error = None, None
    if rank == 0:
        try:
            result = fn()
        except Exception as err:  # re-raised below, once the other ranks have learnt of it
            error = err
    if broadcast_flag(error is not None):
        if error is not None:
            raise error
        raise RankZeroError("rank 0 stopped the run (its error is printed above)")
    return result


def rank0_first(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 first (e.g. generating data into a shared cache), then on the other ranks; a refusal
    of rank 0 stops every rank as in :func:`on_rank0`."""
    result = on_rank0(fn)
    return result if world()[0] == 0 else fn()  # type: ignore[return-value]


def unwrap(net: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (``net`` itself when not wrapped)."""
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
