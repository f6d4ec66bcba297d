import copy
import hashlib
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conditioned_sep.checkpoint import (
    MAGIC,
    CheckpointError,
    CheckpointNotFoundError,
    load_checkpoint,
    save_checkpoint,
)
from conditioned_sep.models import ConditionedUNet


def _trained_like(**overrides) -> ConditionedUNet:
    torch.manual_seed(0)
    model = ConditionedUNet.from_preset("tiny", **overrides)
    model.train()
    model.masks(torch.rand(4, 2, 129, 16), torch.eye(4) if model.is_conditioned else None)  # moves BN running stats
    return model.eval()


def _write_raw(path: Path, payload: dict, *, version: int) -> Path:
    """A checkpoint file around an arbitrary payload, with a valid header and checksum."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    header = {"format_version": version, "model_name": "ConditionedUNet", "size": len(body),
              "sha256": hashlib.sha256(body).hexdigest()}
    path.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + body)
    return path


@pytest.mark.parametrize("overrides", [{}, {"z_input": "embedding", "film_where": "both"},
                                       {"conditioned": False, "target": "other"}])
def test_save_load_gives_identical_outputs(tmp_path, overrides):
    model = _trained_like(**overrides)
    path = save_checkpoint(tmp_path / "m.ckpt", model, training={"epochs": 3, "best_loss": 0.25})
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert loaded.config == model.config
    mag = torch.rand(1, 2, 129, 40)
    z = torch.eye(4) if model.is_conditioned else None
    assert torch.equal(loaded.masks(mag, z), model.masks(mag, z))
    assert meta["training"] == {"epochs": 3, "best_loss": 0.25}
    assert meta["stems"] == ["vocals", "drums", "bass", "other"]
    assert meta["model_name"] == "ConditionedUNet" and meta["format_version"] == 2
    assert meta["weights"] == "raw" and "state_dict" not in meta and "ema_state_dict" not in meta
    assert set(meta["versions"]) >= {"torch", "numpy", "conditioned_sep", "python"}
    assert len(meta["sha256"]) == 64 and meta["config"] == model.config.to_dict()


def test_extra_carries_resume_state(tmp_path):
    model = _trained_like()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.masks(torch.rand(2, 2, 129, 16), torch.eye(4)[:2]).mean().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    rng = np.random.default_rng(123)
    extra = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
             "numpy_rng": rng.bit_generator.state, "python_rng": random.getstate(), "step": 7}
    path = save_checkpoint(tmp_path / "last.ckpt", model, extra=extra)
    _, meta = load_checkpoint(path)
    got = meta["extra"]
    assert torch.equal(got["torch_rng"], extra["torch_rng"]) and got["torch_rng"].dtype == torch.uint8
    assert got["step"] == 7
    assert got["numpy_rng"] == rng.bit_generator.state
    random.setstate(got["python_rng"])
    restored = np.random.default_rng()
    restored.bit_generator.state = got["numpy_rng"]
    assert restored.integers(1 << 30) == rng.integers(1 << 30)
    opt2 = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt2.load_state_dict(got["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2)
    sched2.load_state_dict(got["scheduler"])
    assert sched2.state_dict() == sched.state_dict()


def test_non_plain_extra_is_refused_at_save(tmp_path):
    model = _trained_like()
    with pytest.raises(TypeError, match=r"extra\['obj'\]: object is not plain data"):
        save_checkpoint(tmp_path / "x.ckpt", model, extra={"obj": object()})
    with pytest.raises(TypeError, match="numpy arrays"):
        save_checkpoint(tmp_path / "x.ckpt", model, training={"curve": np.zeros(3)})
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_corrupt_truncated_and_foreign_files_are_clear_errors(tmp_path):
    path = save_checkpoint(tmp_path / "m.ckpt", _trained_like())
    data = path.read_bytes()
    bad = tmp_path / "flipped.ckpt"
    bad.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    with pytest.raises(CheckpointError, match=r"flipped\.ckpt is corrupt \(sha256 mismatch\)"):
        load_checkpoint(bad)
    short = tmp_path / "short.ckpt"
    short.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"short\.ckpt is truncated"):
        load_checkpoint(short)
    foreign = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match=r"weights\.pt is not a conditioned-sep checkpoint"):
        load_checkpoint(foreign)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a conditioned-sep checkpoint"):
        load_checkpoint(text)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_unsafe_payload_is_refused(tmp_path):
    """A checkpoint whose (checksummed) payload pickles an arbitrary object must not be unpickled."""
    path = _write_raw(tmp_path / "evil.ckpt", {"model_name": "ConditionedUNet", "payload": random.Random(0)},
                      version=2)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: payload cannot be read safely"):
        load_checkpoint(path)


def test_mismatched_state_is_a_clear_error(tmp_path):
    """Strict loading: a state dict that does not fit the stored config is refused, naming the file."""
    model = _trained_like()
    state = model.state_dict()
    state.pop("input_scale")
    path = _write_raw(tmp_path / "partial.ckpt", {"model_name": "ConditionedUNet", "config": model.config.to_dict(),
                                                  "state_dict": state}, version=2)
    with pytest.raises(CheckpointError, match=r"(?s)partial\.ckpt: checkpoint does not match.*input_scale"):
        load_checkpoint(path)


def test_load_takes_a_model_folder_and_names_a_missing_file(tmp_path):
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "best.ckpt", _trained_like())
    model, meta = load_checkpoint(tmp_path / "run")
    assert meta["path"] == str(tmp_path / "run" / "best.ckpt") and model.is_conditioned
    with pytest.raises(CheckpointNotFoundError, match=r"checkpoint not found: .*missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match=r"no best.ckpt or last.ckpt in .*empty"):
        load_checkpoint(tmp_path / "empty")


def _averaged(model: ConditionedUNet) -> ConditionedUNet:
    """A stand-in for an EMA copy: the same model with visibly different floating-point weights."""
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5).add_(0.01)
    return ema


def test_ema_weights_are_stored_and_chosen_by_weights(tmp_path):
    model = _trained_like()
    ema = _averaged(model)
    path = save_checkpoint(tmp_path / "m.ckpt", model, ema_state=ema.state_dict())
    mag, z = torch.rand(1, 2, 129, 40), torch.eye(4)
    want = {"raw": model.masks(mag, z), "ema": ema.masks(mag, z)}
    assert (want["raw"] - want["ema"]).abs().max() > 1e-3  # the two choices are distinguishable
    for weights, expected in [("auto", "ema"), ("ema", "ema"), ("raw", "raw")]:
        loaded, meta = load_checkpoint(path, weights=weights)
        assert meta["weights"] == expected and "ema_state_dict" not in meta
        assert torch.equal(loaded.masks(mag, z), want[expected])
    plain = save_checkpoint(tmp_path / "plain.ckpt", model)
    loaded, meta = load_checkpoint(plain)  # auto without EMA weights: the raw ones
    assert meta["weights"] == "raw" and torch.equal(loaded.masks(mag, z), want["raw"])
    with pytest.raises(CheckpointError, match=r"plain\.ckpt holds no EMA weights.*weights='raw'"):
        load_checkpoint(plain, weights="ema")
    with pytest.raises(ValueError, match=r"weights must be one of \('auto', 'raw', 'ema'\), got 'best'"):
        load_checkpoint(plain, weights="best")


def test_ema_state_must_be_a_state_dict_of_the_same_model(tmp_path):
    model = _trained_like()
    other = ConditionedUNet.from_preset("tiny", channels=(4, 8, 32))
    with pytest.raises(ValueError, match=r"ema_state\['encoder.2.conv.weight'\] is \(32, 8, 5, 5\)"):
        save_checkpoint(tmp_path / "x.ckpt", model, ema_state=other.state_dict())
    dedicated = ConditionedUNet.from_preset("tiny", conditioned=False, target="bass")
    with pytest.raises(ValueError, match=r"ema_state is not a state dict of this model: missing \['conditioner"):
        save_checkpoint(tmp_path / "x.ckpt", model, ema_state=dedicated.state_dict())
    with pytest.raises(TypeError, match="state dict must be a mapping"):
        save_checkpoint(tmp_path / "x.ckpt", model, ema_state=[1, 2])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("key,value", [("encoder.1.conv.weight", float("nan")),
                                       ("decoder.0.norm.running_var", float("inf"))])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, key, value):
    model = _trained_like()
    with torch.no_grad():
        model.state_dict()[key].view(-1)[3] = value  # state_dict() tensors share storage with the model
    path = save_checkpoint(tmp_path / "diverged.ckpt", model)
    with pytest.raises(CheckpointError, match=rf"diverged\.ckpt: weight tensor '{key}' holds NaN or Inf "
                                              r"\(diverged or tampered\); re-train or use another checkpoint"):
        load_checkpoint(path)


def test_non_finite_ema_weights_are_refused_but_raw_ones_still_load(tmp_path):
    model = _trained_like()
    ema = _averaged(model)
    with torch.no_grad():
        ema.input_shift[0] = float("nan")
    path = save_checkpoint(tmp_path / "m.ckpt", model, ema_state=ema.state_dict())
    with pytest.raises(CheckpointError, match=r"m\.ckpt: EMA weight tensor 'input_shift' holds NaN or Inf"):
        load_checkpoint(path)
    loaded, meta = load_checkpoint(path, weights="raw")
    assert meta["weights"] == "raw" and torch.equal(loaded.input_shift, model.input_shift)


def _v1_key(key: str, depth: int) -> str:
    """The state-dict key format 1 used for a format-2 key (flat lists of convolutions and norms)."""
    parts = key.split(".")
    if parts[0] == "output":
        return ".".join(["dec_convs", str(depth - 1), *parts[1:]])
    if parts[0] in ("encoder", "decoder"):
        kind = {"conv": "convs", "norm": "norms"}[parts[2]]
        return ".".join([f"{parts[0][:3]}_{kind}", parts[1], *parts[3:]])
    return key


@pytest.mark.parametrize("overrides", [{}, {"channels": (4, 8, 16, 32), "n_bins": 64, "film_where": "both"},
                                       {"conditioned": False, "target": "drums"}])
def test_version_1_checkpoints_load_with_their_old_key_names(tmp_path, overrides):
    model = _trained_like(**overrides)
    depth = len(model.config.channels)
    state = {_v1_key(k, depth): v for k, v in model.state_dict().items()}
    assert "enc_convs.0.weight" in state and f"dec_convs.{depth - 1}.bias" in state
    assert f"dec_norms.{depth - 2}.running_mean" in state and not any(k.startswith("output") for k in state)
    config = model.config.to_dict()
    del config["arch"]  # format 1 had no arch field
    path = _write_raw(tmp_path / "v1.ckpt", {"format_version": 1, "model_name": "ConditionedUNet", "config": config,
                                             "stems": list(model.stems), "state_dict": state, "training": {},
                                             "extra": {}, "versions": {}}, version=1)
    loaded, meta = load_checkpoint(path)
    assert meta["format_version"] == 1 and meta["weights"] == "raw" and loaded.config == model.config
    mag = torch.rand(1, 2, 129, 24)
    z = torch.eye(4) if model.is_conditioned else None
    assert torch.equal(loaded.masks(mag, z), model.masks(mag, z))


def test_newer_format_and_unknown_architecture_are_clear_errors(tmp_path):
    model = _trained_like()
    payload = {"format_version": 3, "model_name": "ConditionedUNet", "config": model.config.to_dict(),
               "state_dict": model.state_dict()}
    with pytest.raises(CheckpointError, match=r"new\.ckpt has checkpoint format 3, this library reads up to 2"):
        load_checkpoint(_write_raw(tmp_path / "new.ckpt", payload, version=3))
    payload = {**payload, "format_version": 2, "config": {**model.config.to_dict(), "arch": "bandsplit9"}}
    with pytest.raises(CheckpointError, match=r"arch\.ckpt: checkpoint does not match.*unknown model arch "
                                              r"'bandsplit9'"):
        load_checkpoint(_write_raw(tmp_path / "arch.ckpt", payload, version=2))
