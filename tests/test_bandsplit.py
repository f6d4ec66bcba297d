"""The band-split RoFormer behind the model interface: shapes, FiLM identity = dedicated path, checkpoints, the
Separator (chunks, sums, Wiener), and that a few training steps lower the loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conditioned_sep.checkpoint import load_checkpoint, save_checkpoint
from conditioned_sep.models import BandSplitConfig, BandSplitRoFormer, build_model, config_from_dict
from conditioned_sep.models.bandsplit import Rotary, band_widths_for
from conditioned_sep.separator import Separator
from conditioned_sep.stems import STEMS

RATE = 44100
FIXTURES = Path(__file__).parent / "fixtures"


def _model(**overrides) -> BandSplitRoFormer:
    torch.manual_seed(0)
    return BandSplitRoFormer.from_preset("tiny", **overrides).eval()


@pytest.mark.parametrize("n_fft", [256, 1024, 2048, 4096])
def test_bands_cover_every_bin_once_finer_at_low_frequencies(n_fft):
    widths = band_widths_for(n_fft)
    assert sum(widths) == n_fft // 2 + 1 and min(widths) >= 1
    assert widths[0] <= widths[len(widths) // 2] <= max(widths[:-1])


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("frames", [1, 7, 40])
def test_shapes_for_mono_stereo_and_any_length(channels, frames):
    model = _model(audio_channels=channels)
    spec = torch.randn(1, channels, 129, frames, dtype=torch.complex64)
    out = model(spec, torch.eye(4))
    assert out.shape == (4, channels, 129, frames) and out.dtype == torch.complex64
    batch = torch.randn(3, channels, 129, frames, dtype=torch.complex64)
    assert model(batch, torch.eye(4)[:3]).shape == (3, channels, 129, frames)
    with pytest.raises(ValueError, match=r"spec must be \(batch, 2, 129, frames\)"):
        _model()(torch.randn(1, 2, 100, 5, dtype=torch.complex64), torch.eye(4))


@pytest.mark.parametrize("where", ["once", "blocks", "both"])
def test_identity_film_equals_the_dedicated_network(where):
    cond = _model(film_where=where)
    for head in cond.conditioner.heads:  # gamma = 1, beta = 0 whatever z is
        torch.nn.init.zeros_(head.weight)
    ded = BandSplitRoFormer.from_preset("tiny", conditioned=False, target="bass").eval()
    missing = ded.load_state_dict({k: v for k, v in cond.state_dict().items() if not k.startswith("conditioner.")})
    assert not missing.missing_keys and not missing.unexpected_keys
    spec = torch.randn(1, 2, 129, 20, dtype=torch.complex64)
    with torch.no_grad():
        assert torch.allclose(cond(spec, torch.eye(4)[2:3]), ded(spec), atol=1e-5)
        # and a conditioned model with a trained conditioner answers different stems differently
        other = _model(film_where=where)
        a, b = other(spec, torch.eye(4)[:2])
        assert not torch.allclose(a, b, atol=1e-4)


def test_one_trunk_pass_serves_every_condition_when_film_is_once():
    model = _model(film_where="once")
    spec = torch.randn(1, 2, 129, 12, dtype=torch.complex64)
    with torch.no_grad():
        together = model(spec, torch.eye(4))
        apart = torch.cat([model(spec, torch.eye(4)[i: i + 1]) for i in range(4)])
    assert torch.allclose(together, apart, atol=1e-5)


def test_config_and_checkpoint_round_trip(tmp_path):
    model = _model(film_where="both")
    assert config_from_dict(model.config.to_dict()) == model.config
    assert isinstance(build_model(model.config), BandSplitRoFormer)
    path = save_checkpoint(tmp_path / "bs.ckpt", model)
    loaded, meta = load_checkpoint(path)
    assert isinstance(loaded, BandSplitRoFormer) and meta["config"]["arch"] == "bandsplit"
    spec = torch.randn(1, 2, 129, 9, dtype=torch.complex64)
    with torch.no_grad():
        assert torch.equal(loaded(spec, torch.eye(4)), model(spec, torch.eye(4)))
    with pytest.raises(ValueError, match="band_widths must be positive and sum to n_fft // 2 \\+ 1 = 129"):
        BandSplitConfig(n_fft=256, hop_length=128, band_widths=(64, 64))
    with pytest.raises(ValueError, match="film_where must be one of"):
        BandSplitConfig(film_where="encoder")


def test_separator_chunks_sums_and_wiener():
    model = _model()
    audio = 0.1 * torch.randn(2, RATE)
    # attention sees the whole chunk, so chunked output only approaches the whole-signal one: with the model's
    # context on each side of 0.5 s chunks the relative RMS difference is small (3.3% measured, random weights),
    # and it shrinks as the context grows
    def difference(context: int) -> float:
        torch.manual_seed(0)
        m = BandSplitRoFormer.from_preset("tiny", context_frames=context).eval()
        whole = Separator(m, chunk_seconds=None).separate(audio, ["vocals", "drums+bass"], sample_rate=RATE)
        chunked = Separator(m, chunk_seconds=0.5).separate(audio, ["vocals", "drums+bass"], sample_rate=RATE)
        return max(float((whole[k] - chunked[k]).norm() / whole[k].norm()) for k in whole)

    near = difference(8)
    assert near < 0.05
    assert difference(64) < near < difference(0)
    # with the Wiener filter the four stems explain the mixture exactly (complex masks included)
    stems = Separator(model, niter=1, chunk_seconds=None).separate(audio, list(STEMS), sample_rate=RATE)
    total = sum(stems.values())
    assert torch.allclose(total, audio, atol=1e-4 * float(audio.abs().max()))


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    model = BandSplitRoFormer.from_preset("tiny").train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    mixture_parts = 0.1 * torch.randn(4, 2, 2, 128 * 31)  # (batch, stems used, channels, samples)
    mixture = mixture_parts.sum(1)
    z = torch.eye(4)[[0, 1, 0, 1]]
    target = mixture_parts[torch.arange(4), [0, 1, 0, 1]]
    losses = []
    for _ in range(15):
        spec = model.stft(mixture)
        loss = (model(spec, z).abs() - model.stft(target).abs()).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_rotary_turns_interleaved_pairs_as_roformer_does():
    # reference: RoFormer's rotation written out, x * cos + rotate_half(x) * sin with each angle used for a pair
    rotary = Rotary(8)
    x = torch.randn(2, 3, 5, 8)
    angles = torch.arange(5.0)[:, None] * rotary.freqs.repeat_interleave(2)  # (s, e)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    half = torch.stack((-x2, x1), dim=-1).flatten(-2)
    expected = x * angles.cos() + half * angles.sin()
    assert torch.allclose(rotary(x), expected, atol=1e-5)
    assert rotary(x.bfloat16()).dtype == torch.bfloat16 and not rotary.freqs.requires_grad
    assert torch.equal(rotary(x)[..., 0, :], x[..., 0, :])  # token 0 is not turned


def test_a_checkpoint_of_the_model_before_its_own_rotary_loads_and_gives_the_same_output():
    # stored by the model as it was with rotary-embedding-torch's RotaryEmbedding and the old mask layout (tiny preset)
    stored = torch.load(FIXTURES / "bandsplit_tiny_before_rotary.pt")
    model = BandSplitRoFormer(config_from_dict(stored["config"])).eval()
    model.load_state_dict(stored["state_dict"], strict=True)
    with torch.no_grad():
        out = model(stored["spec"], stored["z"])
    assert torch.allclose(out, stored["out"], atol=1e-5, rtol=1e-4)
