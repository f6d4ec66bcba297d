import pytest
import torch

from conditioned_sep.chunking import overlap_add
from conditioned_sep.spectral import ISTFT, STFT

# (chunk, overlap, grid, context) in samples
SETTINGS = [
    (64, 0, 1, 0),
    (64, 16, 1, 0),
    (64, 32, 16, 0),
    (100, 40, 20, 7),  # context rounded up to the grid
    (96, 48, 16, 32),
    (7, 3, 2, 5),
]


def _lengths(chunk: int, overlap: int) -> list[int]:
    """1 sample, shorter than a chunk, and every length around the first chunk boundaries."""
    stride = chunk - overlap
    around = {k * stride + chunk + d for k in range(4) for d in (-2, -1, 0, 1, 2)}
    return sorted({1, 2, chunk // 2, chunk - 1, chunk, chunk + 1} | around)


@pytest.mark.parametrize("chunk,overlap,grid,context", SETTINGS)
def test_identity_is_reproduced_exactly(chunk, overlap, grid, context):
    gen = torch.Generator().manual_seed(0)
    for n in _lengths(chunk, overlap):
        x = torch.randn(2, 3, n, generator=gen)
        out = overlap_add(lambda part: part, x, chunk=chunk, overlap=overlap, grid=grid, context=context)
        assert torch.equal(out, x), n
        # a leading dimension of outputs, e.g. one per query; doubling is exact in floating point
        two = overlap_add(lambda part: torch.stack([part, 2 * part]), x, chunk=chunk, overlap=overlap, grid=grid,
                          context=context)
        assert two.shape == (2, 2, 3, n) and torch.equal(two[0], x) and torch.equal(two[1], 2 * x), n


def test_chunks_start_on_the_grid_and_see_at_most_chunk_plus_context():
    seen = []

    def record(part):
        seen.append(part.clone())
        return part

    x = torch.arange(1000, dtype=torch.float32)
    overlap_add(record, x, chunk=96, overlap=48, grid=16, context=20)  # context rounds up to 32
    starts = [int(p[0]) for p in seen]
    assert starts == [0] + [s - 32 for s in range(48, 1000 - 48, 48)]
    assert all(s % 16 == 0 for s in starts)
    assert max(len(p) for p in seen) == 96 + 2 * 32
    assert int(seen[-1][-1]) == 999


def test_cross_fade_is_linear_and_only_in_the_overlap():
    calls = []

    def constant(part):
        calls.append(len(calls))
        return torch.full_like(part, float(calls[-1]))

    out = overlap_add(constant, torch.zeros(200), chunk=100, overlap=20)  # chunks at 0, 80, 160
    assert len(calls) == 3
    assert torch.equal(out[:80], torch.zeros(80)) and torch.equal(out[100:160], torch.ones(60))
    ramp = out[80:100]
    # weights j / 21 (fade in) against (21 - j) / 21 (fade out): chunk 1's share is j / 21
    expected = torch.arange(1, 21, dtype=torch.float32) / 21
    assert torch.allclose(ramp, expected, atol=1e-6)
    assert torch.all(ramp[1:] > ramp[:-1])


def _soft_mask_filter(n_fft: int, hop: int):
    """A time-varying, signal-dependent STFT filter with a receptive field of n_fft samples."""
    stft, istft = STFT(n_fft=n_fft, hop_length=hop), ISTFT(n_fft=n_fft, hop_length=hop)

    def fn(part):
        spec = stft(part[None])
        mag = spec.abs()
        return istft(spec * mag / (mag + 0.5), length=part.shape[-1])[0]

    return fn


def test_context_and_grid_give_the_whole_signal_result():
    """With n_fft of context and starts on the hop grid, every STFT frame that touches a chunk's output is a frame
    of the whole-signal STFT. Stated tolerance: 1e-5 of the peak (float32 round-off of the FFTs). Without context
    the chunk edges see zero padding and the error is of the order of the signal."""
    n_fft, hop = 256, 64
    fn = _soft_mask_filter(n_fft, hop)
    x = torch.randn(2, 5000, generator=torch.Generator().manual_seed(1))
    whole = fn(x)
    peak = whole.abs().max()
    for overlap in (0, 320):
        chunked = overlap_add(fn, x, chunk=1024, overlap=overlap, grid=hop, context=n_fft)
        assert (chunked - whole).abs().max() < 1e-5 * peak
    no_context = overlap_add(fn, x, chunk=1024, overlap=0, grid=hop, context=0)
    assert (no_context - whole).abs().max() > 1e-2 * peak


def test_bad_arguments_are_clear_errors():
    x = torch.zeros(2, 100)
    with pytest.raises(ValueError, match="the signal is empty"):
        overlap_add(lambda p: p, torch.zeros(2, 0), chunk=10)
    with pytest.raises(ValueError, match=r"need 0 <= overlap < chunk .* got chunk=10, overlap=10"):
        overlap_add(lambda p: p, x, chunk=10, overlap=10)
    with pytest.raises(ValueError, match="a multiple of grid=4"):
        overlap_add(lambda p: p, x, chunk=10, overlap=3, grid=4)
    with pytest.raises(ValueError, match="need grid >= 1"):
        overlap_add(lambda p: p, x, chunk=10, grid=0)
    with pytest.raises(ValueError, match=r"fn must return a tensor \(\.\.\., 10\)"):
        overlap_add(lambda p: p[..., 1:], x, chunk=10)
    shapes = iter([(1, 10), (2, 10)])
    with pytest.raises(ValueError, match=r"returned leading shape \(2,\) after \(1,\)"):
        overlap_add(lambda p: torch.zeros(next(shapes)), x, chunk=10)
