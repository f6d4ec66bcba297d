"""Checkpoints: one file per model, written atomically, checksummed, loaded strictly and safely.

File layout: one header line ``CONDITIONED-SEP-CHECKPOINT {json}\\n`` (format version, payload size and
sha256), then the payload written by ``torch.save``: a dict of plain data and tensors only (model name, config
as a plain dict with its ``arch``, stems, state dict, optional EMA state dict, training summary, library versions,
``extra``). The payload is read with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
Loading is strict, refuses non-finite weights, and upgrades older formats (:data:`FORMAT_VERSION`).

Finding models on disk (run folders, sets of dedicated checkpoints) is :mod:`conditioned_sep.runs`' job.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .fileio import atomic_write_bytes
from .models import ARCHITECTURES, SeparationModel, UNetConfig, build_model, config_from_dict

MAGIC = b"CONDITIONED-SEP-CHECKPOINT "
FORMAT_VERSION = 2
"""2: U-Net blocks as modules (state-dict keys renamed; version-1 files are upgraded on load), EMA weights."""
MODEL_NAMES = frozenset(model_class.__name__ for _, model_class in ARCHITECTURES.values())
"""What a payload's ``model_name`` may be: the class name of a known architecture's model."""
_MAX_HEADER = 4096

WEIGHTS = ("auto", "raw", "ema")
"""Which weights :func:`load_checkpoint` loads: the EMA ones when stored (auto), the raw ones, or the EMA ones."""

_V1_KEYS = (
    (r"^enc_convs\.(\d+)\.", r"encoder.\1.conv."),
    (r"^enc_norms\.(\d+)\.", r"encoder.\1.norm."),
    (r"^dec_convs\.(\d+)\.", r"decoder.\1.conv."),
    (r"^dec_norms\.(\d+)\.", r"decoder.\1.norm."),
)
"""Format 1 -> 2 renames of U-Net state-dict keys (regular expression, replacement): flat lists of convolutions
and norms became :class:`~conditioned_sep.models.unet.DownBlock` / ``UpBlock`` modules."""

CHECKPOINT_NAMES = ("best.ckpt", "last.ckpt")
"""The files a model folder holds, in order of preference."""

PRETRAINED = "pretrained"
"""The name of the shipped model: ``Separator.load("pretrained")``, ``evaluate.py pretrained``. A file or folder of
that name in the current folder wins over it (a user's own checkpoint is never shadowed)."""
PRETRAINED_FILE = Path(__file__).resolve().parent / "pretrained" / "conditioned-unet.ckpt"
"""The shipped conditioned model (fp16 weights, trained by ``python train.py --recipe shipped``)."""


class CheckpointError(ValueError):
    """A file that is not a usable conditioned-sep checkpoint (wrong kind, corrupt, truncated, incompatible)."""


class CheckpointNotFoundError(FileNotFoundError, CheckpointError):
    """No checkpoint where the user pointed (or at the default place)."""


def _versions() -> dict[str, str]:
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
    path: str | os.PathLike,
    model: SeparationModel,
    *,
    training: dict | None = None,
    extra: dict | None = None,
    ema_state: Mapping[str, torch.Tensor] | None = None,
    storage_dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically (temporary file, then rename) and return the path.

    ``training``: a plain summary (epochs, losses, data, seed...). ``extra``: plain data and tensors, e.g.
    optimizer / scheduler state dicts and RNG states to resume training. Raises TypeError for anything else.
    ``ema_state``: an exponential moving average of the weights, as a state dict of this same model (same keys,
    shapes and dtypes; ValueError otherwise); :func:`load_checkpoint` prefers it by default.
    ``storage_dtype`` (e.g. ``torch.float16``): the floating-point weights are stored in it (half the bytes;
    loading casts them back to the model's fp32).
    """
    path = Path(path)
    training = dict(training or {})
    extra = dict(extra or {})
    _check_plain(training, "training")
    _check_plain(extra, "extra")
    state = _plain_state(model.state_dict())
    if storage_dtype is not None:
        state = OrderedDict((k, v.to(storage_dtype) if v.is_floating_point() else v) for k, v in state.items())
    ema = None
    if ema_state is not None:
        ema = _plain_state(ema_state)
        _check_same_layout(ema, state)
    payload = {
        "format_version": FORMAT_VERSION,
        "model_name": type(model).__name__,
        "config": model.config.to_dict(),
        "stems": list(model.config.stems),
        "state_dict": state,
        "ema_state_dict": ema,
        "training": training,
        "extra": extra,
        "versions": _versions(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    header = {"format_version": FORMAT_VERSION, "model_name": type(model).__name__, "size": len(body),
              "sha256": hashlib.sha256(body).hexdigest()}
    atomic_write_bytes(path, MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + body)
    return path


def _plain_state(state: Mapping[str, Any]) -> OrderedDict[str, torch.Tensor]:
    """Detached, contiguous CPU copies; TypeError for anything that is not a ``{str: Tensor}`` state dict."""
    if not isinstance(state, Mapping):
        raise TypeError(f"a state dict must be a mapping name -> tensor, got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"state dict entries {bad[:3]} are not str -> tensor; pass model.state_dict()-like data")
    return OrderedDict((k, v.detach().cpu().contiguous()) for k, v in state.items())


def _check_same_layout(ema: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> None:
    """ValueError unless ``ema`` has exactly the keys, shapes and dtypes of the model's ``state``."""
    missing, unexpected = sorted(set(state) - set(ema)), sorted(set(ema) - set(state))
    if missing or unexpected:
        raise ValueError(f"ema_state is not a state dict of this model: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}; pass the averaged copy's state_dict()")
    for k, v in state.items():
        if ema[k].shape != v.shape or ema[k].dtype != v.dtype:
            raise ValueError(f"ema_state[{k!r}] is {tuple(ema[k].shape)} {ema[k].dtype}, the model's is "
                             f"{tuple(v.shape)} {v.dtype}; pass the averaged copy's state_dict()")


def checkpoint_in(folder: str | os.PathLike) -> Path | None:
    """``folder/best.ckpt``, else ``folder/last.ckpt``, else None."""
    return next((Path(folder) / n for n in CHECKPOINT_NAMES if (Path(folder) / n).is_file()), None)


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` names: the file itself, or the ``best.ckpt`` (else ``last.ckpt``) of a model
    folder; the name :data:`PRETRAINED` is the shipped model. Raises :class:`CheckpointNotFoundError` naming the
    path and the way out."""
    path = named_path(path)
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


def named_path(path: str | os.PathLike) -> Path:
    """``path``; or, for the name :data:`PRETRAINED` where no file or folder of that name exists, the shipped
    model's file (:class:`CheckpointNotFoundError` when this installation lacks it)."""
    path = Path(os.fsdecode(path))
    if str(path) != PRETRAINED or path.exists():
        return path
    if not PRETRAINED_FILE.is_file():
        raise CheckpointNotFoundError(f"the shipped model is missing from this installation ({PRETRAINED_FILE}); "
                                      "reinstall conditioned-sep (pip install .), or pass a checkpoint you trained")
    return PRETRAINED_FILE


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
    if not isinstance(payload, dict) or payload.get("model_name") not in MODEL_NAMES:
        name = payload.get("model_name") if isinstance(payload, dict) else None
        raise CheckpointError(f"{path} holds no model this library knows (model_name {name!r}, known: "
                              f"{sorted(MODEL_NAMES)}); {redo}")
    return header, payload


def _upgrade_v1(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> OrderedDict[str, torch.Tensor]:
    """Format-1 state-dict keys -> format 2: the first matching rename of :data:`_V1_KEYS` per key, after the
    last decoder convolution (index depth - 1; no norm, no FiLM), which became the U-Net's ``output``."""
    last = len(config.get("channels", UNetConfig.channels)) - 1
    renames = ((rf"^dec_convs\.{last}\.", "output."), *_V1_KEYS)
    out = OrderedDict()
    for key, value in state.items():
        for pattern, replacement in renames:
            key, hits = re.subn(pattern, replacement, key)
            if hits:
                break
        out[key] = value
    return out


def _check_finite(state: Mapping[str, torch.Tensor], path: Path, *, ema: bool) -> None:
    """CheckpointError naming the file and the first parameter or buffer with a NaN or Inf."""
    for key, value in state.items():
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            other = "; or load the raw weights (weights='raw')" if ema else ""
            raise CheckpointError(f"{path}: {'EMA ' if ema else ''}weight tensor {key!r} holds NaN or Inf (diverged "
                                  f"or tampered); re-train or use another checkpoint{other}")


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu", weights: str = "auto"
) -> tuple[SeparationModel, dict]:
    """Read a checkpoint -> ``(model in eval mode, meta)``.

    ``weights``: ``"auto"`` loads the exponential-moving-average weights when the file has them, else the raw
    ones; ``"raw"`` / ``"ema"`` choose explicitly (``"ema"`` on a file without them is an error).
    meta has format_version, model_name, config, stems, training, extra, versions, sha256, path and
    ``weights`` (``"raw"`` or ``"ema"``: which were loaded). Raises :class:`CheckpointError` naming the file on
    any problem, including NaN or Inf in the loaded weights. Version-1 files are upgraded on the fly.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    path = checkpoint_file(path)
    header, payload = _read_payload(path)
    ema = payload.get("ema_state_dict")
    if weights == "ema" and ema is None:
        raise CheckpointError(f"{path} holds no EMA weights (it was saved without ema_state); "
                              "load it with weights='raw' or 'auto'")
    chosen = "ema" if ema is not None and weights != "raw" else "raw"
    try:
        config = config_from_dict(dict(payload["config"]))
        state = payload["ema_state_dict" if chosen == "ema" else "state_dict"]
        if int(header["format_version"]) < 2:
            state = _upgrade_v1(state, payload["config"])
        model = build_model(config)
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{path}: checkpoint does not match this library's model ({err}); "
                              "was it written by another version? re-train or upgrade conditioned-sep") from err
    # after strict loading, so every tensor checked is one the model uses
    _check_finite(model.state_dict(), path, ema=chosen == "ema")
    model.to(map_location).eval()
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "ema_state_dict")}
    meta.update(sha256=header["sha256"], path=str(path), weights=chosen)
    return model, meta


def export_weights(src: str | os.PathLike, dst: str | os.PathLike, *,
                   storage_dtype: torch.dtype | None = torch.float16) -> Path:
    """Write the weights separation uses (the EMA ones when ``src`` has them) to ``dst`` as a checkpoint of its
    own, without optimizer state or a second set of weights, stored in ``storage_dtype``; the training summary is
    kept. What ships in ``conditioned_sep/pretrained/`` is written by this."""
    model, meta = load_checkpoint(src, weights="auto")
    training = dict(meta.get("training") or {}, exported_from=str(meta["path"]), exported_weights=meta["weights"],
                    source_sha256=meta["sha256"])
    return save_checkpoint(dst, model, training=training, storage_dtype=storage_dtype)
