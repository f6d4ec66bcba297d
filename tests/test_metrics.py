"""conditioned_sep.metrics against museval (the oracle) and museval's JSON tools; bad input errors.

Parity tolerance: 0.01 dB on every frame where museval gives a number, NaN (and +inf) exactly where it does.
The MUSDB excerpt is band-limited by its lossy codec, which makes the Gram matrix of the delayed references
numerically singular (condition ~1e15): museval's own SIR/SAR then move by ~0.1 dB when the input moves by 1e-14
(benchmarks/bench_metrics.py docstring). The real-music references therefore get -80 dB white dither, as 16-bit
PCM would carry, which makes the problem well posed; estimates stay as they are.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.signal
import torch

from conditioned_sep import metrics
from conditioned_sep.audio import AudioError
from conditioned_sep.metrics import aggregate, bss_eval, framewise_sdr, new_sdr, si_sdr, to_museval_layout

import museval  # noqa: E402  (the oracle: in the test extra, so a missing one fails rather than skips)

TOL_DB = 0.01


def _museval(refs, ests, win, hop) -> np.ndarray:
    """museval's (SDR, ISR, SIR, SAR) as one ``(4, sources, frames)`` array."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = museval.evaluate(to_museval_layout(refs), to_museval_layout(ests), win=win, hop=hop, mode="v4")
    return np.array(out)


def _assert_parity(ours: metrics.BSSEvalResult, oracle: np.ndarray) -> None:
    for name, a, b in zip(metrics.METRICS, (ours.sdr, ours.isr, ours.sir, ours.sar), oracle):
        assert a.shape == b.shape, name
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{name}: NaN frames differ")
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b), err_msg=f"{name}: +inf frames differ")
        finite = np.isfinite(b)
        worst = np.max(np.abs(a[finite] - b[finite]), initial=0.0)
        assert worst < TOL_DB, f"{name}: max |ours - museval| = {worst:.4f} dB"


@pytest.fixture(scope="module")
def music():
    """4 stems (drums, bass, other, vocals) of the stempeg MUSDB excerpt, 3.5 s, float64 (s, c, n)."""
    import stempeg  # in the test extra: fail, do not skip, when it is missing
    stems, rate = stempeg.read_stems(stempeg.example_stem_path(), duration=4.0)
    refs = np.transpose(stems[1:, : int(3.5 * rate)], (0, 2, 1)).astype(np.float64)
    rng = np.random.default_rng(1)
    return refs + 1e-4 * rng.standard_normal(refs.shape), rate


def test_real_music_parity_filtered_mixed_noisy(music):
    refs, rate = music
    rng = np.random.default_rng(2)
    b, a = scipy.signal.butter(4, 6000, fs=rate)
    ests = (0.7 * scipy.signal.lfilter(b, a, refs, axis=-1) + 0.2 * np.roll(refs, 1, axis=0)
            + 0.05 * np.roll(refs, 2, axis=0) + 0.01 * rng.standard_normal(refs.shape))
    ours = bss_eval(refs, ests, rate)
    assert ours.sdr.shape == (4, 3) and ours.sdr.dtype == np.float64
    assert np.isfinite(ours.sar).all()
    _assert_parity(ours, _museval(refs, ests, rate, rate))
    # torch input, float32 or not, gives the same numbers (computed in float64)
    again = bss_eval(torch.from_numpy(refs), torch.from_numpy(ests), rate)
    np.testing.assert_allclose(again.sir, ours.sir, rtol=0, atol=1e-9)


def test_random_stereo_silent_frames_and_short_estimates():
    rate, n = 8000, int(3.6 * 8000)
    rng = np.random.default_rng(3)
    refs = rng.standard_normal((3, 2, n))
    refs[0, :, rate : 2 * rate] = 0.0  # a silent reference frame -> NaN for every source there
    ests = 0.6 * refs + 0.3 * rng.standard_normal(refs.shape) + 0.1 * refs[[1, 2, 0]]
    ests[2, 0, 2 * rate : 3 * rate] = 1.0  # left == -right sums to zero: museval's test calls that silent
    ests[2, 1, 2 * rate : 3 * rate] = -1.0
    ests = ests[..., : n - 500]  # shorter estimates are zero-padded, as museval does
    ours = bss_eval(refs, ests, rate)
    assert ours.sdr.shape == (3, 3)  # the trailing 0.6 s window is dropped
    assert np.isnan(ours.sdr[:, 1:]).all() and np.isfinite(ours.sdr[:, 0]).all()
    _assert_parity(ours, _museval(refs, ests, rate, rate))


def test_mono_overlapping_frames_other_rate():
    rate, n = 6000, 6000 * 4
    rng = np.random.default_rng(4)
    t = np.arange(n) / rate
    refs = np.stack([np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(t)), rng.standard_normal(n)])[:, None]
    b, a = scipy.signal.butter(2, 1000, fs=rate)
    ests = 0.9 * scipy.signal.lfilter(b, a, refs, axis=-1) + 0.2 * refs[::-1] + 0.05 * rng.standard_normal(refs.shape)
    ours = bss_eval(refs, ests, rate, window=rate, hop=rate // 2)
    assert ours.sdr.shape == (2, 7) and ours.hop_samples == rate // 2
    np.testing.assert_allclose(ours.frame_times, np.arange(7) * 0.5)
    _assert_parity(ours, _museval(refs, ests, rate, rate // 2))
    gaps = bss_eval(refs, ests, rate, window=rate // 2, hop=rate)  # hop > window: frames with gaps between
    assert gaps.sdr.shape == (2, 4)
    _assert_parity(gaps, _museval(refs, ests, rate // 2, rate))


def test_single_source_and_signal_shorter_than_a_window():
    rate = 8000
    rng = np.random.default_rng(5)
    refs = rng.standard_normal((1, 2, 3000))  # shorter than one window: one frame over the whole signal
    ests = refs + 0.1 * rng.standard_normal(refs.shape)
    ours = bss_eval(refs, ests, rate)
    assert ours.sdr.shape == (1, 1) and np.isposinf(ours.sir).all()  # no interferer: museval's +inf
    _assert_parity(ours, _museval(refs, ests, rate, rate))


def test_fully_silent_reference_is_nan_with_warning_others_as_museval_without_it():
    rate, n = 8000, 8000 * 3
    rng = np.random.default_rng(6)
    refs = rng.standard_normal((3, 2, n))
    refs[1] = 0.0
    ests = 0.7 * refs + 0.2 * rng.standard_normal(refs.shape)
    with pytest.warns(UserWarning, match=r"reference source\(s\) \[1\] are silent"):
        ours = bss_eval(refs, ests, rate)
    assert np.isnan(ours.sdr[1]).all() and np.isnan(ours.sar[1]).all()
    kept = [0, 2]
    sub = metrics.BSSEvalResult(sdr=ours.sdr[kept], isr=ours.isr[kept], sir=ours.sir[kept], sar=ours.sar[kept],
                                sample_rate=rate, window_samples=rate, hop_samples=rate)
    _assert_parity(sub, _museval(refs[kept], ests[kept], rate, rate))
    with pytest.raises(ValueError, match="non-silent"):  # what museval itself does with it
        _museval(refs, ests, rate, rate)


def test_sdr_only_path_matches_and_skips_filters(music):
    refs, rate = music
    ests = 0.8 * refs + 0.2 * refs[::-1]
    full = bss_eval(refs[..., : 2 * rate], ests[..., : 2 * rate], rate)
    fast = bss_eval(refs[..., : 2 * rate], ests[..., : 2 * rate], rate, compute_filters=False)
    assert fast.isr is None and fast.sir is None and fast.sar is None
    np.testing.assert_array_equal(fast.sdr, full.sdr)
    np.testing.assert_array_equal(framewise_sdr(refs[..., : 2 * rate], ests[..., : 2 * rate], rate), full.sdr)
    # image SDR needs no filters: reference energy over (estimate - reference) energy per frame
    r, d = refs[:, :, :rate], ests[:, :, :rate] - refs[:, :, :rate]
    np.testing.assert_allclose(full.sdr[:, 0], 10 * np.log10((r**2).sum((1, 2)) / (d**2).sum((1, 2))), atol=1e-9)


def test_new_sdr_and_si_sdr_formulas():
    rng = np.random.default_rng(7)
    refs = rng.standard_normal((2, 2, 5000))
    noise = rng.standard_normal(refs.shape)
    ests = refs + 0.5 * noise
    expected = 10 * np.log10(((refs**2).sum((1, 2)) + 1e-7) / (((refs - ests) ** 2).sum((1, 2)) + 1e-7))
    np.testing.assert_allclose(new_sdr(refs, ests), expected, rtol=1e-12)
    np.testing.assert_allclose(new_sdr(torch.from_numpy(refs).float(), torch.from_numpy(ests).float()), expected,
                               atol=1e-4)
    assert new_sdr(np.zeros((1, 1, 10)), np.zeros((1, 1, 10)))[0] == pytest.approx(0.0)  # MDX eps: silent is 0 dB
    # SI-SDR ignores the estimate's scale; with noise orthogonal to the reference it is 10 log10(|a s|^2 / |n|^2)
    s = refs - refs.mean(-1, keepdims=True)
    n = noise - noise.mean(-1, keepdims=True)
    n -= ((n * s).sum((1, 2)) / (s**2).sum((1, 2)))[:, None, None] * s
    value = si_sdr(s, 3.0 * s + n)
    np.testing.assert_allclose(value, 10 * np.log10((9 * s**2).sum((1, 2)) / (n**2).sum((1, 2))), rtol=1e-10)
    np.testing.assert_allclose(si_sdr(s, 0.1 * s + n / 30), si_sdr(s, 3 * s + n), rtol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(si_sdr(np.zeros((1, 1, 8)), np.ones((1, 1, 8))))[0]


@pytest.mark.parametrize(
    ("refs", "ests", "match"),
    [
        (np.ones((2, 2, 100)), np.ones((3, 2, 100)), r"differ in sources or channels: references \(2, 2, 100\), "
                                                     r"estimates \(3, 2, 100\)"),
        (np.ones((2, 2, 100)), np.ones((2, 1, 100)), r"references \(2, 2, 100\), estimates \(2, 1, 100\)"),
        (np.ones((2, 2, 0)), np.ones((2, 2, 0)), "references is empty"),
        (np.ones((2, 2, 100)), np.ones((0, 2, 100)), "estimates is empty"),
        (np.ones((2, 100)), np.ones((2, 100)), r"must be \(sources, channels, samples\).*for mono"),
    ],
)
def test_bad_shapes_raise_clear_errors(refs, ests, match):
    for fn in (bss_eval, new_sdr, si_sdr):
        with pytest.raises(ValueError, match=match):
            fn(refs, ests)


def test_nan_or_inf_names_the_source_and_side():
    refs, ests = np.ones((3, 2, 100)), np.ones((3, 2, 100))
    bad = ests.copy()
    bad[2, 1, 7] = np.nan
    with pytest.raises(AudioError, match=r"estimates contains NaN or Inf samples in source\(s\) \[2\]"):
        bss_eval(refs, bad)
    bad = torch.ones(3, 2, 100)
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"references contains NaN or Inf samples in source\(s\) \[0\]"):
        bss_eval(bad, ests)
    with pytest.raises(ValueError, match="window and hop must be positive"):
        bss_eval(refs, ests, 8000, hop=0)
    with pytest.raises(ValueError, match="number of sources"):
        aggregate([np.ones((2, 3)), np.ones((3, 3))])


def test_identical_channels_singular_gram_matches_museval():
    rate = 8000
    rng = np.random.default_rng(11)
    mono = rng.standard_normal((3, 1, 2 * rate))
    refs = np.concatenate([mono, mono], axis=1)  # mono as stereo: the Gram matrix is exactly singular
    ests = 0.7 * refs + 0.2 * refs[[1, 2, 0]] + 0.1 * rng.standard_normal(refs.shape)
    _assert_parity(bss_eval(refs, ests, rate), _museval(refs, ests, rate, rate))


def test_indefinite_gram_gets_a_ridge_instead_of_failing():
    gram = np.array([[1.0, 1.0], [1.0, 1.0 - 4.5e-16]])  # PSD in exact arithmetic, indefinite after rounding
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(gram + np.finfo(float).eps * np.eye(2))
    x = metrics._solve_spd(gram.copy, np.array([[1.0], [1.0]]))
    np.testing.assert_allclose(gram @ x, [[1.0], [1.0]], atol=1e-6)


def test_silent_estimate_warns_and_frames_are_nan_as_in_museval():
    rng = np.random.default_rng(12)
    refs = rng.standard_normal((2, 2, 3000))
    ests = refs.copy()
    ests[1] = 0.0
    with pytest.warns(UserWarning, match=r"estimate\(s\) for source\(s\) \[1\] are silent"):
        result = bss_eval(refs, ests, 1000)
    assert result.sdr.shape == (2, 3) and np.isnan(result.sdr).all() and np.isnan(result.sar).all()


def test_aggregate_returns_arrays_and_counts_inf_as_nan():
    one = aggregate([np.array([1.0, np.inf, 3.0, 5.0]), [2.0, -np.inf, np.nan], [np.nan, np.inf]])
    # track medians: 3 (inf dropped), 2, NaN (skipped over tracks)
    np.testing.assert_array_equal(one.per_track, [3.0, 2.0, np.nan])
    assert isinstance(one.median, np.ndarray) and one.median.shape == () and float(one.median) == 2.5
    assert isinstance(one.mean, np.ndarray) and one.mean.shape == () and float(one.mean) == 2.5
    many = aggregate({"a": np.array([[1.0, 2.0, 3.0], [4.0, 4.0, np.inf]]), "b": np.array([[0.0, 0.0], [1.0, 3.0]])})
    assert many.median.shape == many.mean.shape == (2,) and many.per_track.shape == (2, 2)
    np.testing.assert_array_equal(many.median, [1.0, 3.0])
    with pytest.raises(ValueError, match="at least one track"):
        aggregate([])
