import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conditioned_sep.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    load_checkpoint,
    save_checkpoint,
)
from conditioned_sep.model import ConditionedUNet


def _trained_like(**overrides) -> ConditionedUNet:
    torch.manual_seed(0)
    model = ConditionedUNet.from_preset("tiny", **overrides)
    model.train()
    model.masks(torch.rand(4, 2, 129, 16), torch.eye(4) if model.is_conditioned else None)  # moves BN running stats
    return model.eval()


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
    assert meta["model_name"] == "ConditionedUNet" and meta["format_version"] == 1
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
    import hashlib
    import io
    import json

    from conditioned_sep import checkpoint as ck

    buf = io.BytesIO()
    torch.save({"model_name": "ConditionedUNet", "payload": random.Random(0)}, buf)
    body = buf.getvalue()
    header = {"format_version": 1, "model_name": "ConditionedUNet", "size": len(body),
              "sha256": hashlib.sha256(body).hexdigest()}
    path = tmp_path / "evil.ckpt"
    path.write_bytes(ck.MAGIC + json.dumps(header).encode() + b"\n" + body)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: payload cannot be read safely"):
        load_checkpoint(path)


def test_mismatched_state_is_a_clear_error(tmp_path):
    """Strict loading: a state dict that does not fit the stored config is refused, naming the file."""
    import hashlib
    import io
    import json

    from conditioned_sep import checkpoint as ck

    model = _trained_like()
    state = model.state_dict()
    state.pop("input_scale")
    buf = io.BytesIO()
    torch.save({"model_name": "ConditionedUNet", "config": model.config.to_dict(), "state_dict": state}, buf)
    body = buf.getvalue()
    header = {"format_version": 1, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    path = tmp_path / "partial.ckpt"
    path.write_bytes(ck.MAGIC + json.dumps(header).encode() + b"\n" + body)
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
