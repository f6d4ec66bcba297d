import pytest
import torch

from conditioned_sep.model import PRESETS, ConditionedUNet, ModelConfig


def _mag(model: ConditionedUNet, batch: int = 2, frames: int = 37) -> torch.Tensor:
    cfg = model.config
    return torch.rand(batch, cfg.audio_channels, cfg.n_fft // 2 + 1, frames) * 3


@pytest.mark.parametrize("overrides", [
    {},
    {"film": "simple"},
    {"film_where": "encoder"},
    {"film_where": "both"},
    {"z_input": "embedding"},
    {"film": "simple", "film_where": "both", "z_input": "embedding"},
    {"conditioned": False, "target": "bass"},
])
def test_tiny_preset_shapes_mask_range_and_backward(overrides):
    torch.manual_seed(0)
    model = ConditionedUNet.from_preset("tiny", **overrides)
    mag = _mag(model)  # 37 frames: not a multiple of the U-Net's 8, padded and cropped internally
    z = torch.eye(4)[:2] if model.is_conditioned else None
    mask = model.masks(mag, z)
    assert mask.shape == mag.shape
    assert mask.min() >= 0 and mask.max() <= 1
    mask.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_tiny_training_batch_forward_backward():
    """A training-sized batch (8 patches of segment_frames); speed is measured in benchmarks, not here."""
    model = ConditionedUNet.from_preset("tiny")
    mag = _mag(model, batch=8, frames=model.config.segment_frames)
    mask = model.masks(mag, torch.eye(4).repeat(2, 1))
    assert mask.shape == mag.shape
    mask.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().max() > 0 for g in grads)


@pytest.mark.parametrize("where", ["encoder", "decoder", "both"])
def test_different_z_give_different_outputs(where):
    torch.manual_seed(0)
    model = ConditionedUNet.from_preset("tiny", film_where=where).eval()
    masks = model.masks(_mag(model, batch=1), torch.eye(4))
    assert masks.shape[0] == 4
    for i in range(4):
        for j in range(i + 1, 4):
            assert (masks[i] - masks[j]).abs().max() > 1e-4


def _set_identity_film(model: ConditionedUNet) -> None:
    with torch.no_grad():
        for head in model.conditioner.heads:
            n = head.out_features // 2
            head.weight.zero_()
            head.bias[:n].fill_(1.0)
            head.bias[n:].zero_()


@pytest.mark.parametrize("where", ["encoder", "decoder", "both"])
@pytest.mark.parametrize("kind", ["simple", "complex"])
def test_identity_film_equals_the_unconditioned_twin(where, kind):
    torch.manual_seed(0)
    cond = ConditionedUNet.from_preset("tiny", film_where=where, film=kind).eval()
    twin = ConditionedUNet.from_preset("tiny", conditioned=False, target="vocals").eval()
    backbone = {k: v for k, v in cond.state_dict().items() if not k.startswith("conditioner.")}
    twin.load_state_dict(backbone, strict=True)
    _set_identity_film(cond)
    mag = _mag(cond, batch=1)
    expected = twin(mag)
    assert torch.allclose(cond(mag, torch.eye(4)), expected.expand(4, -1, -1, -1), atol=1e-6)


def test_shared_encoder_broadcast_equals_full_batch():
    torch.manual_seed(0)
    model = ConditionedUNet.from_preset("tiny").eval()
    assert model.encoder_is_shared
    mag = _mag(model, batch=1)
    z = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]])
    assert torch.allclose(model.masks(mag, z), model.masks(mag.expand(3, -1, -1, -1).contiguous(), z), atol=1e-5)
    spec = torch.polar(mag, torch.rand_like(mag) * 6)
    assert torch.allclose(model(spec, z), model.masks(mag, z) * spec, atol=1e-5)


def test_high_band_mask_follows_the_top_modelled_bins():
    model = ConditionedUNet.from_preset("tiny").eval()
    mask = model.masks(_mag(model, batch=1), torch.eye(4)[:1])
    nb = model.config.n_bins
    top = mask[:, :, nb - nb // 8: nb].mean(2)
    assert torch.allclose(mask[:, :, nb:], top[:, :, None].expand_as(mask[:, :, nb:]), atol=1e-6)


def test_z_errors():
    cond = ConditionedUNet.from_preset("tiny")
    ded = ConditionedUNet.from_preset("tiny", conditioned=False, target="drums")
    mag = _mag(cond)
    with pytest.raises(ValueError, match="needs z"):
        cond(mag)
    with pytest.raises(ValueError, match=r"z must be \(batch, 4\)"):
        cond(mag, torch.ones(2, 3))
    with pytest.raises(ValueError, match="z has batch 3 but mag has batch 2"):
        cond(mag, torch.ones(3, 4))
    with pytest.raises(ValueError, match="dedicated 'drums' model"):
        ded(mag, torch.ones(2, 4))
    with pytest.raises(ValueError, match="mag must be"):
        cond(mag[:, :, :10], torch.ones(2, 4))


def test_config_validation_and_round_trip():
    cfg = ModelConfig(**PRESETS["small"], z_input="embedding")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg.to_dict()["channels"], list)
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.from_dict({**cfg.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="multiple of 8"):
        ModelConfig(**{**PRESETS["tiny"], "n_bins": 60})
    with pytest.raises(ValueError, match="needs target"):
        ModelConfig(**PRESETS["tiny"], conditioned=False)
    with pytest.raises(ValueError, match="has no target"):
        ModelConfig(**PRESETS["tiny"], target="vocals")
    assert ModelConfig(**{**PRESETS["tiny"], "hop_length": 128}).hop_length == 256 // 2  # the largest allowed
    for n_fft in (0, -256, 255):
        with pytest.raises(ValueError, match="n_fft must be a positive even number"):
            ModelConfig(**{**PRESETS["tiny"], "n_fft": n_fft})
    for hop in (0, -1, 129, 256):
        with pytest.raises(ValueError, match=r"hop_length must be in 1\.\.n_fft // 2 \(128\)"):
            ModelConfig(**{**PRESETS["tiny"], "hop_length": hop})
    with pytest.raises(ValueError, match="film_where must be one of"):
        ModelConfig(film_where="middle")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        ConditionedUNet.from_preset("huge")
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ConditionedUNet.from_preset("tiny", colour="red")


def test_full_preset_size_is_below_open_unmix_umxhq():
    model = ConditionedUNet.from_preset("full")
    assert model.config.channels == (16, 32, 64, 128, 256, 512) and model.config.kernel_size == 5
    assert model.num_parameters < 35.6e6  # four umxhq target models together
