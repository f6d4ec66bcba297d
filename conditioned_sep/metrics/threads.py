"""Thread and memory plumbing of the metrics: a kept thread pool, torch's batched products as BLAS, and numpy's
huge-page advice switched off while scoring.

The metrics' passes over the samples run on the threads torch is given (``torch.set_num_threads`` governs them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch

try:  # numpy's switch for its huge-page advice (private, numpy >= 1.20); without it no_huge_pages does nothing
    from numpy._core.multiarray import _set_madvise_hugepage
except ImportError:  # numpy < 2
    try:
        from numpy.core.multiarray import _set_madvise_hugepage
    except ImportError:
        _set_madvise_hugepage = None


@contextmanager
def no_huge_pages() -> Iterator[None]:
    """Within the block numpy does not advise the kernel to back new large arrays with transparent huge pages
    (restored after). Where the kernel's huge-page defragmentation is ``madvise`` (the default of many
    distributions), such page faults wait for memory compaction once memory is fragmented, as it is after minutes
    of evaluation: one 3.5-minute song with five rows and three scoring sets took 42.4 s with numpy's advice and
    28.5 s without (system time 28.8 s against 9.4 s). Evaluation scores every track inside it."""
    previous = None if _set_madvise_hugepage is None else _set_madvise_hugepage(False)
    try:
        yield
    finally:
        if previous is not None:
            _set_madvise_hugepage(previous)


def _n_threads() -> int:
    """Threads for the block loops: torch's setting, so ``torch.set_num_threads`` governs this module too."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def _map_threads(fn: Callable, groups: list) -> list:
    """``[fn(g) for g in groups]`` on a small thread pool (FFTs, ufuncs, :func:`_matmul_add` and the compiled loop
    release the GIL).

    torch's own threads are set to one meanwhile (and restored): each worker's products then run on its own core
    instead of four threads fighting over two (measured 14x slower per product here)."""
    if len(groups) <= 1:
        return [fn(g) for g in groups]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return list(_pool(len(groups)).map(fn, groups))
    finally:
        torch.set_num_threads(threads)


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool kept for the process (starting threads for every pass cost ~20 ms of a 0.8 s evaluation)."""
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bss_eval")
    return _POOLS[workers]


def _matmul_add(a: np.ndarray, b: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """``acc += a @ b`` for stacks of small complex128 matrices, ``(batch, m, k) @ (batch, k, n)``, through torch:
    numpy's batched product of small matrices is 1.4x slower on one thread and does not run in parallel from two
    threads (measured: 8193 products of 8x5 by 5x16, 3.1 ms alone, 4.3 ms each from two threads; torch 2.2 and
    1.1 ms), and torch adds into ``acc`` within the product (no pass over a temporary). Other dtypes (long
    double) stay with numpy."""
    if not (a.dtype == b.dtype == acc.dtype == np.complex128 and acc.flags.c_contiguous and a.ndim == 3):
        acc += np.matmul(a, b)
        return acc
    torch.from_numpy(acc).baddbmm_(torch.from_numpy(a), torch.from_numpy(b))
    return acc


def _split(items: list, parts: int) -> list[list]:
    parts = max(1, min(parts, len(items)))
    return [items[i::parts] for i in range(parts)]
