"""Overlap-add of any function over a long signal, chunk by chunk: memory is bounded by the chunk, not the signal.

Used by the Separator (model inference) and the evaluation's oracle rows (ideal masks) alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor


def overlap_add(
    fn: Callable[[Tensor], Tensor],
    signal: Tensor,
    *,
    chunk: int,
    overlap: int = 0,
    grid: int = 1,
    context: int = 0,
) -> Tensor:
    """Apply ``fn`` to ``signal (..., n)`` chunk by chunk and cross-fade the results -> ``(*lead, n)``.

    ``fn`` maps a stretch ``(..., m)`` of ``signal`` to ``(*lead, m)`` (same number of samples; ``lead`` the same
    for every chunk, e.g. ``(queries, channels)``). All sizes are in samples:

    - ``chunk``: output samples each call contributes (a signal no longer than that is one call).
    - ``overlap``: samples shared by neighbouring chunks, cross-faded with linear ramps whose weights are
      strictly positive (so they never sum to zero). ``chunk - overlap`` is the stride.
    - ``grid``: chunks (and their context) start on multiples of ``grid``, e.g. ``hop`` so that a chunk's STFT
      frames are frames of the whole signal's STFT; the stride must be a multiple of it.
    - ``context``: extra samples given to ``fn`` on each side of a chunk (fewer at the signal's edges), rounded
      up to a multiple of ``grid``; its output there is discarded. Context wide enough for ``fn``'s receptive
      field makes the result equal to ``fn(signal)``.

    The in-memory use of :func:`overlap_add_blocks` (which streams: see there).
    """
    n = signal.shape[-1]
    out: Tensor | None = None
    for start, block in overlap_add_blocks(fn, lambda lo, hi: signal[..., lo:hi], n, chunk=chunk, overlap=overlap,
                                           grid=grid, context=context):
        if out is None:
            # plain torch.empty: a normal tensor even when fn runs under inference mode
            out = torch.empty(*block.shape[:-1], n, dtype=block.dtype, device=block.device)
        out[..., start: start + block.shape[-1]] = block
    assert out is not None  # n >= 1 gives at least one block
    return out


def overlap_add_blocks(
    fn: Callable[[Tensor], Tensor],
    read: Callable[[int, int], Tensor],
    n: int,
    *,
    chunk: int,
    overlap: int = 0,
    grid: int = 1,
    context: int = 0,
) -> Iterator[tuple[int, Tensor]]:
    """:func:`overlap_add` as a stream: yields ``(start, block (*lead, m))``, consecutive finished stretches of the
    output in order, as soon as no later chunk reaches them. ``read(lo, hi)`` returns the input samples
    ``[lo, hi)`` of a signal of ``n`` samples (a tensor slice, or a file read), so neither the input nor the output
    is ever held whole: memory is bounded by the chunk.

    The blend is a running weighted mean, so where the chunks agree (an identity ``fn``) the output equals them
    exactly.
    """
    # n: samples, k: samples shared with the previous chunk
    stride = chunk - overlap
    problems = []
    if n < 1:
        problems.append("the signal is empty")
    if grid < 1 or context < 0:
        problems.append(f"need grid >= 1 and context >= 0, got grid={grid}, context={context}")
    elif n > chunk and (not 0 <= overlap < chunk or stride % grid):  # one chunk: no stride to check
        problems.append(f"need 0 <= overlap < chunk with chunk - overlap a multiple of grid={grid}, got "
                        f"chunk={chunk}, overlap={overlap}")
    if problems:
        raise ValueError("overlap_add: " + "; ".join(problems))
    if n <= chunk:
        yield 0, _checked(fn(read(0, n)), n, None)
        return
    context = -(-context // grid) * grid
    lead: torch.Size | None = None
    pending = torch.zeros(0)  # the blended output on [start, start + k), still to be joined by this chunk
    carry = torch.zeros(0)  # summed weights of earlier chunks on the same stretch
    start = 0
    while True:
        end = min(start + chunk, n)
        lo, hi = max(0, start - context), min(n, end + context)
        y = _checked(fn(read(lo, hi)), hi - lo, lead)[..., start - lo: end - lo]
        lead = y.shape[:-1]
        weight = _fade(end - start, overlap).to(y.device)
        k = len(carry)
        total = weight.clone()
        total[:k] += carry.to(y.device)
        if not bool((total > 0).all()):
            raise RuntimeError("overlap-add weights sum to zero; this is a bug in conditioned_sep.chunking")
        block = y.clone()
        if k:
            # running weighted mean: shared + (y - shared) * w / (W + w) equals (W shared + w y) / (W + w), and is
            # exactly ``shared`` where y == shared
            shared = pending.to(y.device)
            block[..., :k] = shared + (y[..., :k] - shared) * (weight[:k] / total[:k])
        if end >= n:
            yield start, block
            return
        yield start, block[..., :stride]
        pending, carry = block[..., stride:], total[stride:].cpu()
        start += stride


def _fade(length: int, overlap: int) -> Tensor:
    """Weights ``(length,)`` of one chunk: linear ramps over ``min(overlap, length // 2)`` samples at both ends,
    ``1 / (ramp + 1) ... ramp / (ramp + 1)``, so strictly positive; 1 in between."""
    weight = torch.ones(length)
    ramp = min(overlap, length // 2)
    if ramp > 0:
        fade = torch.arange(1, ramp + 1, dtype=torch.float32) / (ramp + 1)
        weight[:ramp] = fade
        weight[length - ramp:] = torch.minimum(weight[length - ramp:], fade.flip(0))
    return weight


def _checked(y: Tensor, samples: int, lead: torch.Size | None) -> Tensor:
    """``y`` unless ``fn`` broke its contract (same number of samples, the same leading shape every chunk)."""
    if not isinstance(y, Tensor) or y.ndim < 1 or y.shape[-1] != samples:
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"overlap_add: fn must return a tensor (..., {samples}) for a stretch of {samples} "
                         f"samples, got {got}")
    if lead is not None and y.shape[:-1] != lead:
        raise ValueError(f"overlap_add: fn returned leading shape {tuple(y.shape[:-1])} after {tuple(lead)}; "
                         "it must be the same for every chunk")
    return y
