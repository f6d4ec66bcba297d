"""Checkpoints: one file per model, written atomically, checksummed, loaded strictly and safely.

File layout: one header line ``CONDITIONED-SEP-CHECKPOINT {json}\\n`` (format version, payload size and
sha256), then the payload written by ``torch.save``: a dict of plain data and tensors only (model name, config
as a plain dict, stems, state dict, training summary, library versions, ``extra``). The payload is read with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.

Finding models on disk (run folders, sets of dedicated checkpoints) is :mod:`conditioned_sep.runs`' job.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fileio import atomic_write_bytes
from .model import ConditionedUNet, ModelConfig

MAGIC = b"CONDITIONED-SEP-CHECKPOINT "
FORMAT_VERSION = 1
MODEL_NAME = "ConditionedUNet"
_MAX_HEADER = 4096

CHECKPOINT_NAMES = ("best.ckpt", "last.ckpt")
"""The files a model folder holds, in order of preference."""


class CheckpointError(ValueError):
    """A file that is not a usable conditioned-sep checkpoint (wrong kind, corrupt, truncated, incompatible)."""


class CheckpointNotFoundError(FileNotFoundError, CheckpointError):
    """No checkpoint where the user pointed (or at the default place)."""


def _versions() -> dict[str, str]:
    from . import __version__

    return {"conditioned_sep": str(__version__), "torch": str(torch.__version__), "numpy": str(np.__version__),
            "python": platform.python_version()}


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError unless ``obj`` is plain data that ``torch.load(weights_only=True)`` reads back."""
    # exact types: subclasses (numpy scalars, torch's version string) would need unpickling of their class
    if obj is None or type(obj) in (bool, int, float, str, bytes, torch.Size) or isinstance(obj, torch.Tensor):
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if type(key) not in (str, int, float, bool) and key is not None:
                raise TypeError(f"{where}: dict key {key!r} of type {type(key).__name__} is not plain data")
            _check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, np.ndarray):
        raise TypeError(f"{where}: numpy arrays are not stored; convert with torch.from_numpy(...) first")
    raise TypeError(
        f"{where}: {type(obj).__name__} is not plain data (None, bool, int, float, str, bytes, tensors, "
        "and lists / tuples / dicts of them); convert it before saving (e.g. float(x) for a numpy scalar)"
    )


def save_checkpoint(
    path: str | os.PathLike, model: ConditionedUNet, *, training: dict | None = None, extra: dict | None = None
) -> Path:
    """Write ``model`` to ``path`` atomically (temporary file, then rename) and return the path.

    ``training``: a plain summary (epochs, losses, data, seed...). ``extra``: plain data and tensors, e.g.
    optimizer / scheduler state dicts and RNG states to resume training. Raises TypeError for anything else.
    """
    path = Path(path)
    training = dict(training or {})
    extra = dict(extra or {})
    _check_plain(training, "training")
    _check_plain(extra, "extra")
    state = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in model.state_dict().items())
    payload = {
        "format_version": FORMAT_VERSION,
        "model_name": MODEL_NAME,
        "config": model.config.to_dict(),
        "stems": list(model.config.stems),
        "state_dict": state,
        "training": training,
        "extra": extra,
        "versions": _versions(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    header = {"format_version": FORMAT_VERSION, "model_name": MODEL_NAME, "size": len(body),
              "sha256": hashlib.sha256(body).hexdigest()}
    atomic_write_bytes(path, MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + body)
    return path


def checkpoint_in(folder: str | os.PathLike) -> Path | None:
    """``folder/best.ckpt``, else ``folder/last.ckpt``, else None."""
    return next((Path(folder) / n for n in CHECKPOINT_NAMES if (Path(folder) / n).is_file()), None)


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` names: the file itself, or the ``best.ckpt`` (else ``last.ckpt``) of a model
    folder. Raises :class:`CheckpointNotFoundError` naming the path and the way out."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        found = checkpoint_in(path)
        if found is None:
            raise CheckpointNotFoundError(
                f"no {' or '.join(CHECKPOINT_NAMES)} in {path}; pass a checkpoint file or a model folder "
                "(a training run's conditioned/ or dedicated-<stem>/)")
        return found
    raise CheckpointNotFoundError(f"checkpoint not found: {path}; train first (python train.py) or pass an "
                                  "existing checkpoint")


def _read_payload(path: Path) -> tuple[dict, dict]:
    data = path.read_bytes()
    redo = "re-download or re-train it (the training run writes best.ckpt / last.ckpt)"
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a conditioned-sep checkpoint (no header); pass a .ckpt file written "
                              "by conditioned_sep.checkpoint.save_checkpoint or by training")
    end = data.find(b"\n", 0, _MAX_HEADER)
    try:
        header = json.loads(data[len(MAGIC): end])
        size, digest, version = int(header["size"]), str(header["sha256"]), int(header["format_version"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: corrupt checkpoint header ({err}); {redo}") from err
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}, this library reads up to {FORMAT_VERSION}; "
                              "upgrade conditioned-sep")
    body = data[end + 1:]
    if len(body) != size:
        raise CheckpointError(f"{path} is truncated or padded ({len(body)} of {size} payload bytes); {redo}")
    if hashlib.sha256(body).hexdigest() != digest:
        raise CheckpointError(f"{path} is corrupt (sha256 mismatch); {redo}")
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types (UnpicklingError, RuntimeError) for unreadable data
        raise CheckpointError(f"{path}: payload cannot be read safely ({type(err).__name__}: {err}); {redo}") from err
    if not isinstance(payload, dict) or payload.get("model_name") != MODEL_NAME:
        raise CheckpointError(f"{path} does not hold a {MODEL_NAME} model; {redo}")
    return header, payload


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> tuple[ConditionedUNet, dict]:
    """Read a checkpoint -> ``(model in eval mode, meta)``; meta has format_version, model_name, config, stems,
    training, extra, versions, sha256 and path. Raises :class:`CheckpointError` naming the file on any problem."""
    path = checkpoint_file(path)
    header, payload = _read_payload(path)
    try:
        config = ModelConfig.from_dict(dict(payload["config"]))
        model = ConditionedUNet(config)
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{path}: checkpoint does not match this library's model ({err}); "
                              "was it written by another version? re-train or upgrade conditioned-sep") from err
    model.to(map_location).eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    meta.update(sha256=header["sha256"], path=str(path))
    return model, meta
