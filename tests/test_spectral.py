import pytest
import torch

from conditioned_sep.spectral import ISTFT, STFT, _wiener_generic, wiener


@pytest.mark.parametrize("n_fft,hop", [(256, 64), (512, 128), (2048, 512)])
def test_stft_istft_round_trip_below_1e6(n_fft, hop):
    torch.manual_seed(0)
    audio = torch.rand(2, 2, 10_001) * 2 - 1  # odd length: not a multiple of the hop
    spec = STFT(n_fft=n_fft, hop_length=hop)(audio)
    assert spec.shape == (2, 2, n_fft // 2 + 1, 10_001 // hop + 1) and spec.is_complex()
    back = ISTFT(n_fft=n_fft, hop_length=hop)(spec, length=10_001)
    assert back.shape == audio.shape
    assert (back - audio).abs().max() < 1e-6


def test_stft_matches_numpy_dft_of_one_frame():
    torch.manual_seed(0)
    audio = torch.randn(1, 1, 2048)
    spec = STFT(n_fft=256, hop_length=64)(audio)
    frame = 10  # centred: frame k covers samples k*hop - n_fft/2 ... + n_fft
    seg = audio[0, 0, frame * 64 - 128: frame * 64 + 128] * torch.hann_window(256)
    assert torch.allclose(spec[0, 0, :, frame], torch.fft.rfft(seg), atol=1e-4)


def test_stft_handles_audio_shorter_than_the_window():
    spec = STFT(n_fft=2048, hop_length=512)(torch.randn(1, 2, 100))
    back = ISTFT(n_fft=2048, hop_length=512)(spec, length=100)
    assert back.shape == (1, 2, 100)


def test_bad_stft_sizes_are_refused():
    with pytest.raises(ValueError, match="hop_length <= n_fft"):
        STFT(n_fft=256, hop_length=512)


def _sources(channels: int):
    torch.manual_seed(1)
    est = torch.randn(4, channels, 33, 50, dtype=torch.complex64)
    mix = est.sum(0) + 0.3 * torch.randn(channels, 33, 50, dtype=torch.complex64)
    return est, mix


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_wiener_outputs_sum_to_the_mixture(channels):
    est, mix = _sources(channels)
    for niter in (1, 3):
        out = wiener(est, mix, niter=niter)
        assert out.shape == est.shape
        assert (out.sum(0) - mix).abs().max() < 1e-4 * mix.abs().max()


def test_wiener_stereo_fast_path_equals_generic_path():
    est, mix = _sources(2)
    load = 1e-10 + 1e-8 * float(mix.abs().square().mean())
    fast = wiener(est, mix, niter=2)
    slow = _wiener_generic(est, mix, niter=2, load=load)
    assert torch.allclose(fast, slow, atol=1e-4 * float(slow.abs().max()))


def test_wiener_niter_0_is_identity_and_bad_input_is_refused():
    est, mix = _sources(2)
    assert wiener(est, mix, niter=0) is est
    with pytest.raises(ValueError, match="niter must be >= 0"):
        wiener(est, mix, niter=-1)
    with pytest.raises(ValueError, match="estimates"):
        wiener(est, mix[:1], niter=1)


def test_wiener_survives_digital_silence():
    est = torch.zeros(3, 2, 9, 20, dtype=torch.complex64)
    out = wiener(est, est.sum(0), niter=2)
    assert torch.isfinite(torch.view_as_real(out)).all()
