"""The fast training path (bf16 autocast, torch.compile) learns what eager fp32 learns: losses pinned on a fixed
batch, and the choices ``auto`` makes."""

from __future__ import annotations

import csv

import pytest
import torch

from conditioned_sep import hardware
from conditioned_sep.checkpoint import load_checkpoint
from conditioned_sep.hardware import choose_compile, choose_precision
from conditioned_sep.models import ConditionedUNet, from_preset
from conditioned_sep.training import TrainConfig, Trainer, separation_loss, train

BF16_REL = 0.02
"""bf16 keeps 8 bits of mantissa: a loss over thousands of bins moves by well under 2% (measured: < 0.5%)."""
COMPILED_REL = 1e-4
"""Compiled fp32 reorders sums (fused kernels): equal to eager to float32 rounding over a few steps."""


def _batch(model, batch_size=4):
    cfg = model.config
    segment = (cfg.segment_frames - 1) * cfg.hop_length
    gen = torch.Generator().manual_seed(7)
    mixture = 0.1 * torch.randn(batch_size, cfg.audio_channels, segment, generator=gen)
    target = 0.5 * mixture + 0.01 * torch.randn(batch_size, cfg.audio_channels, segment, generator=gen)
    z = torch.eye(len(cfg.stems))[torch.arange(batch_size) % len(cfg.stems)]
    return mixture, target, z


@pytest.mark.parametrize("arch", ["unet", "bandsplit"])
def test_bf16_loss_and_gradients_follow_eager_fp32_on_a_fixed_batch(arch):
    torch.manual_seed(0)
    model = from_preset(arch, "tiny").eval()  # eval: no dropout noise between the two passes
    mixture, target, z = _batch(model)
    losses, grads = {}, {}
    for precision in ("fp32", "bf16"):
        model.zero_grad()
        loss, _ = separation_loss(model, mixture, target, z, precision=precision)
        loss.backward()
        losses[precision] = float(loss.detach())
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=BF16_REL)
    cosine = torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0)
    assert cosine > 0.95  # the same descent direction


def test_auto_picks_bf16_and_compile_only_where_they_pay(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert choose_precision("auto", device=cpu, bf16_pays=True) == "bf16"
    assert choose_precision("auto", device=cpu, bf16_pays=False) == "fp32"
    assert choose_precision("fp32", device=cpu, bf16_pays=True) == "fp32"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2"}))  # no bf16 units: emulated, slower
    assert choose_precision("auto", device=cpu, bf16_pays=True) == "fp32"
    assert choose_compile("auto", device=cpu, compile_pays=False) is False
    assert choose_compile("auto", device=cpu, compile_pays=True) is True
    assert choose_compile("on", device=cpu, compile_pays=False) is True
    with pytest.raises(hardware.DeviceError, match="compile must be one of"):
        choose_compile("yes", device=cpu, compile_pays=False)


def _train_loss(tmp_path, data, name, **kwargs):
    config = TrainConfig(out=tmp_path / "runs", name=name, preset="tiny", dataset="folder", data_root=data, steps=4,
                         steps_per_epoch=4, batch_size=4, valid_seconds=1.0, progress=False, device="cpu",
                         workers=0, precision="fp32", **kwargs)
    best = train(config)
    with open(config.run_dir / "log.csv") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["train_loss"]), best


def test_compiled_training_learns_what_eager_training_learns(tmp_path, tiny_synthetic):
    # inductor draws dropout noise from its own generator: without dropout the two runs do the same arithmetic
    no_dropout = {"dropout": 0.0}
    eager, _ = _train_loss(tmp_path, tiny_synthetic, "eager", compile="off", model_overrides=no_dropout)
    compiled, best = _train_loss(tmp_path, tiny_synthetic, "compiled", compile="on", model_overrides=no_dropout)
    assert compiled == pytest.approx(eager, rel=COMPILED_REL)
    model, meta = load_checkpoint(best)  # the compiled run's weights load into a plain model
    assert isinstance(model, ConditionedUNet)
    assert meta["training"]["compiled"] is True and meta["training"]["precision"] == "fp32"


def test_the_trainer_records_what_auto_chose(tmp_path, tiny_synthetic, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2"}))
    trainer = Trainer(TrainConfig(out=tmp_path / "runs", preset="tiny", dataset="folder", data_root=tiny_synthetic,
                                  steps=1, progress=False, device="cpu", workers=0))
    trainer.setup()
    assert trainer.precision == "fp32"  # auto without bf16 units
    assert trainer.compiled is ConditionedUNet.compile_pays


@pytest.mark.parametrize("arch", ["unet", "bandsplit"])
def test_bf16_separation_follows_fp32(arch):
    """Separation's fast path autocasts the network only: the estimates stay within bf16's rounding of fp32's."""
    import numpy as np

    from conditioned_sep import Separator
    from conditioned_sep.metrics import new_sdr

    torch.manual_seed(0)
    model = from_preset(arch, "tiny").eval()
    audio = 0.1 * torch.randn(2, 3 * 44100, generator=torch.Generator().manual_seed(3))
    out = {p: Separator(model, precision=p).separate(audio, stems=["vocals", "drums+bass"], sample_rate=44100)
           for p in ("fp32", "bf16")}
    for stem in ("vocals", "drums+bass"):
        a, b = out["fp32"][stem], out["bf16"][stem]
        assert b.dtype == torch.float32 and b.shape == a.shape
        assert not torch.equal(a, b)  # bf16 did run
        # the bf16 estimate scored against the fp32 one: > 25 dB means the difference is rounding, not a bug
        assert new_sdr(a[None].numpy(), b[None].numpy())[0] > 25


def test_separation_precision_choices(monkeypatch):
    from conditioned_sep import Separator
    from conditioned_sep.hardware import DeviceError

    model = ConditionedUNet.from_preset("tiny")
    assert Separator(model).precision == "fp32"  # the default: exact to what the README's figures were made with
    monkeypatch.setattr(hardware, "has_bf16_matmul", lambda device: True)
    assert Separator(model, precision="auto").precision == ("bf16" if ConditionedUNet.bf16_pays else "fp32")
    monkeypatch.setattr(hardware, "has_bf16_matmul", lambda device: False)
    assert Separator(model, precision="auto").precision == "fp32"
    with pytest.raises(DeviceError, match="fp16 needs a CUDA device"):
        Separator(model, precision="fp16")
    with pytest.raises(DeviceError, match="precision must be one of"):
        Separator(model, precision="fp8")
