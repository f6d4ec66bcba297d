import subprocess
import sys

import pytest
import torch

from conditioned_sep.film import Conditioner
from conditioned_sep.models import (
    ARCHITECTURES,
    PRESETS,
    ConditionedUNet,
    DownBlock,
    ModelConfig,
    SeparationConfig,
    SeparationModel,
    UNetConfig,
    UpBlock,
    build_model,
    config_from_dict,
)
from conditioned_sep.spectral import ISTFT, STFT


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
    assert not model.film_encoder  # the encoder does not depend on z: one encoder pass serves every condition
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
    with pytest.raises(ValueError, match="z has batch 3 but the spectrogram has batch 2"):
        cond(mag, torch.ones(3, 4))
    with pytest.raises(ValueError, match="dedicated 'drums' model"):
        ded(mag, torch.ones(2, 4))
    with pytest.raises(ValueError, match="mag must be"):
        cond(mag[:, :, :10], torch.ones(2, 4))


def test_config_validation_and_round_trip():
    cfg = ModelConfig(**PRESETS["small"], z_input="embedding")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg.to_dict()["channels"], list)
    with pytest.raises(ValueError, match="unknown UNetConfig field"):
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
    with pytest.raises(ValueError, match="unknown UNetConfig field"):
        ConditionedUNet.from_preset("tiny", colour="red")
    with pytest.raises(TypeError, match="arch"):  # fixed by the class, not an argument
        ModelConfig(arch="unet")
    with pytest.raises(ValueError, match=r"invalid UNetConfig: sample_rate must be .*; segment_frames must be"):
        ModelConfig(sample_rate=0, segment_frames=0)


def test_full_preset_size_is_below_open_unmix_umxhq():
    model = ConditionedUNet.from_preset("full")
    assert model.config.channels == (16, 32, 64, 128, 256, 512) and model.config.kernel_size == 5
    assert model.num_parameters < 35.6e6  # four umxhq target models together


def test_model_config_is_the_unet_config_and_configs_name_their_architecture():
    assert ModelConfig is UNetConfig and issubclass(UNetConfig, SeparationConfig)
    cfg = UNetConfig(**PRESETS["tiny"])
    data = cfg.to_dict()
    assert data["arch"] == "unet" and UNetConfig.from_dict(data) == cfg
    assert config_from_dict(data) == cfg
    legacy = {k: v for k, v in data.items() if k != "arch"}  # format-1 checkpoints: no arch, a U-Net
    assert config_from_dict(legacy) == cfg
    with pytest.raises(ValueError, match=r"unknown model arch 'transformer'; this library knows \['bandsplit', 'unet'\]"):
        config_from_dict({**data, "arch": "transformer"})
    with pytest.raises(ValueError, match="UNetConfig is the config of arch 'unet', got arch='other'"):
        UNetConfig.from_dict({**data, "arch": "other"})
    assert set(ARCHITECTURES) == {"unet", "bandsplit"} and ARCHITECTURES["unet"] == (UNetConfig, ConditionedUNet)
    model = build_model(cfg)
    assert type(model) is ConditionedUNet and model.config is cfg


def test_interface_properties():
    cond = ConditionedUNet.from_preset("tiny")
    ded = ConditionedUNet.from_preset("small", conditioned=False, target="bass")
    assert isinstance(cond, SeparationModel)
    assert cond.stems == ("vocals", "drums", "bass", "other") and cond.is_conditioned and cond.target is None
    assert not ded.is_conditioned and ded.target == "bass"
    assert cond.frame_multiple == 8 and ded.frame_multiple == 32  # 2 ** blocks: each block halves the frames
    assert cond.context_frames == 0  # seams are cross-faded, not given context
    assert cond.num_parameters == sum(p.numel() for p in cond.parameters()) > 0
    assert isinstance(cond.stft, STFT) and isinstance(cond.istft, ISTFT)
    assert (cond.stft.n_fft, cond.stft.hop_length) == (256, 128)
    assert cond.check_z(torch.eye(4)[:3], 1) == 3 and ded.check_z(None, 5) == 5


def test_the_base_class_states_the_contract():
    class Bare(SeparationModel):
        pass

    with pytest.raises(TypeError, match="abstract method.*forward"):
        Bare(SeparationConfig())
    with pytest.raises(TypeError, match="ConditionedUNet needs a UNetConfig, got SeparationConfig"):
        ConditionedUNet(SeparationConfig())


@pytest.mark.parametrize("overrides", [{}, {"film_where": "both"}, {"conditioned": False, "target": "vocals"}])
def test_forward_is_the_mask_times_the_mixture(overrides):
    """Both paths of forward (with gradients: concatenation; without: one preallocated real buffer) give
    ``masks(|spec|, z) * spec``. Stated tolerance: 1e-6 absolute (the same products; masks <= 1, |spec| <= 3)."""
    torch.manual_seed(0)
    model = ConditionedUNet.from_preset("tiny", **overrides).eval()
    mag = _mag(model, batch=1, frames=21)
    spec = torch.polar(mag, torch.rand_like(mag) * 6)
    z = torch.eye(4)[[0, 2]] if model.is_conditioned else None
    expected = model.masks(mag, z) * spec
    with torch.no_grad():
        assert torch.allclose(model(spec, z), expected, atol=1e-6)
    spec.requires_grad_(True)
    est = model(spec, z)
    assert est.requires_grad and torch.allclose(est, expected, atol=1e-6)


def test_down_block_is_conv_norm_film_leaky_relu():
    torch.manual_seed(0)
    block = DownBlock(c_in=2, c_out=4, kernel_size=5, leaky_slope=0.2).eval()
    x = torch.randn(3, 2, 16, 12)
    y = block(x)
    assert y.shape == (3, 4, 8, 6)  # strided: halves freq and frames
    pre = block.norm(block.conv(x))
    assert torch.allclose(y, torch.nn.functional.leaky_relu(pre, 0.2), atol=1e-6)
    gamma, beta = torch.rand(3, 4) + 0.5, torch.randn(3, 4)
    y = block(x, (gamma, beta))
    expected = torch.nn.functional.leaky_relu(gamma[:, :, None, None] * pre + beta[:, :, None, None], 0.2)
    assert torch.allclose(y, expected, atol=1e-6)


def test_up_block_shares_a_batch_1_skip_without_copying_it():
    """A skip of batch 1 (a shared encoder) goes through its half of the transposed convolution once; the result
    equals concatenating q copies. Stated tolerance: 1e-5 (float32 sums in a different order)."""
    torch.manual_seed(0)
    block = UpBlock(c_in=6, c_out=4, kernel_size=5, dropout=0.5).eval()
    x, skip = torch.randn(3, 2, 8, 6), torch.randn(1, 4, 8, 6)
    gamma, beta = torch.rand(3, 4) + 0.5, torch.randn(3, 4)
    shared = block(x, skip, (gamma, beta))
    copied = block(x, skip.expand(3, -1, -1, -1).contiguous(), (gamma, beta))
    assert shared.shape == (3, 4, 16, 12)  # doubles freq and frames
    assert torch.allclose(shared, copied, atol=1e-5)
    pre = block.norm(block.conv(torch.cat([x, skip.expand(3, -1, -1, -1)], dim=1)))
    assert torch.allclose(copied, torch.relu(gamma[:, :, None, None] * pre + beta[:, :, None, None]), atol=1e-5)
    block.train()
    torch.manual_seed(1)
    dropped = block(x, skip)
    assert 0.3 < float((dropped == 0).float().mean()) < 0.8  # ReLU zeros plus dropout's half
    assert isinstance(UpBlock(c_in=6, c_out=4, kernel_size=5, dropout=0.0).dropout, torch.nn.Identity)


def test_unet_layout_follows_the_config():
    model = ConditionedUNet.from_preset("tiny", dropout_blocks=1, film_where="both")
    assert [b.conv.out_channels for b in model.encoder] == [4, 8, 16]
    assert [b.conv.out_channels for b in model.decoder] == [8, 4] and model.output.out_channels == 2
    assert [b.conv.in_channels for b in model.decoder] == [16, 16] and model.output.in_channels == 8
    assert [type(b.dropout).__name__ for b in model.decoder] == ["Dropout", "Identity"]
    assert isinstance(model.conditioner, Conditioner)
    assert model.conditioner.block_channels == (4, 8, 16, 8, 4)  # encoder blocks, then decoder blocks
    one = ConditionedUNet.from_preset("tiny", channels=(4,), n_bins=64)  # a single block: no skips at all
    assert len(one.decoder) == 0 and one.output.in_channels == 4
    assert one.masks(_mag(one, batch=1), torch.eye(4)).shape == (4, 2, 129, 37)


def test_importing_models_needs_nothing_beyond_torch():
    # beyond torch and einops
    code = ("import sys, torch, einops; before = set(sys.modules); import conditioned_sep.models; "
            "print(sorted({m.split('.')[0] for m in set(sys.modules) - before}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['conditioned_sep']"
