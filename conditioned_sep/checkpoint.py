"""Checkpoints: one file per model, written atomically, checksummed, loaded strictly and safely.

File layout: one header line ``CONDITIONED-SEP-CHECKPOINT {json}\\n`` (format version, payload size and
sha256), then the payload written by ``torch.save``: a dict of plain data and tensors only (model name, config
as a plain dict, stems, state dict, training summary, library versions, ``extra``). The payload is read with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.

Finding models on disk (one resolver for ``separate`` and ``evaluate``): :func:`find_checkpoints` ``(paths) ->
[CheckpointSet]`` reads a checkpoint file, a model folder (``best.ckpt``), a training run folder or a list of
dedicated checkpoints; :data:`DEFAULT_RUN` is where training leaves its models.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fileio import atomic_write_bytes
from .model import ConditionedUNet, ModelConfig
from .stems import STEMS

MAGIC = b"CONDITIONED-SEP-CHECKPOINT "
FORMAT_VERSION = 1
MODEL_NAME = "ConditionedUNet"
_MAX_HEADER = 4096


class CheckpointError(ValueError):
    """A file that is not a usable conditioned-sep checkpoint (wrong kind, corrupt, truncated, incompatible)."""


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


def _read_payload(path: Path) -> tuple[dict, dict]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
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
    path = Path(path)
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


# --------------------------------------------------------------------------------------------------------------
# Finding checkpoints on disk (the command line of separate and evaluate)
# --------------------------------------------------------------------------------------------------------------

DEFAULT_RUN = Path("runs/default")
"""Where ``python train.py`` (``conditioned-sep train``) leaves its models, and where ``separate`` and
``evaluate`` look when no checkpoint is given."""

CHECKPOINT_NAMES = ("best.ckpt", "last.ckpt")
"""The files a model folder holds, in order of preference."""

_HINT = "train first (python train.py or conditioned-sep train) or pass an existing checkpoint"


class CheckpointNotFoundError(FileNotFoundError, CheckpointError):
    """No checkpoint where the user pointed (or at the default place)."""


@dataclass(frozen=True)
class CheckpointSet:
    """One model to load: a single checkpoint (conditioned or one dedicated model), or a set of dedicated
    checkpoints (one per stem). ``name`` names the model in tables and messages."""

    name: str
    paths: tuple[Path, ...]

    def load(self, **kwargs):
        """The :class:`~conditioned_sep.separator.Separator` of these checkpoints; ``kwargs`` go to it."""
        from .separator import Separator

        paths = [str(p) for p in self.paths]
        return Separator.load(paths[0] if len(paths) == 1 else paths, **kwargs)


def checkpoint_in(folder: str | os.PathLike) -> Path | None:
    """``folder/best.ckpt``, else ``folder/last.ckpt``, else None."""
    return next((Path(folder) / n for n in CHECKPOINT_NAMES if (Path(folder) / n).is_file()), None)


def _name_of_file(path: Path) -> str:
    return path.parent.name if path.stem in ("best", "last") and path.parent.name else path.stem


def find_checkpoints(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[CheckpointSet]:
    """The models at ``paths``, always as a list of :class:`CheckpointSet`.

    One path:

    - a checkpoint file: one model, named after the file (or its folder for ``best.ckpt`` / ``last.ckpt``);
    - a folder holding ``best.ckpt`` (or ``last.ckpt``): one model named after the folder;
    - a training run folder (``train.py --out``): ``conditioned/`` first, then every other subfolder holding a
      checkpoint (by name) as one model each, then all ``dedicated-<stem>/`` subfolders as one set named
      "dedicated" (in stem order).

    Several paths: one set of dedicated checkpoints named "dedicated", each path a file or a folder holding one.
    Raises :class:`CheckpointNotFoundError` naming the path and the way out.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise CheckpointNotFoundError(f"no checkpoint given; {_HINT}")
    files: list[Path] = []
    for item in map(Path, items):
        if not item.exists():
            raise CheckpointNotFoundError(f"checkpoint not found: {item}; {_HINT}")
        own = item if item.is_file() else checkpoint_in(item)
        if own is not None:
            files.append(own)
        elif len(items) > 1:
            raise CheckpointNotFoundError(f"no {' or '.join(CHECKPOINT_NAMES)} in {item}; pass one checkpoint (or "
                                          "model folder) per stem of a dedicated set")
    if len(items) > 1:
        return [CheckpointSet("dedicated", tuple(files))]
    if files:
        path = files[0]
        return [CheckpointSet(_name_of_file(path) if Path(items[0]).is_file() else Path(items[0]).name, (path,))]
    return _run_folder(Path(items[0]))


def _run_folder(root: Path) -> list[CheckpointSet]:
    found: list[CheckpointSet] = []
    dedicated: dict[str, Path] = {}
    for sub in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (p.name != "conditioned", p.name)):
        ckpt = checkpoint_in(sub)
        if ckpt is None:
            continue
        if sub.name.startswith("dedicated-"):
            dedicated[sub.name.removeprefix("dedicated-")] = ckpt
        else:
            found.append(CheckpointSet(sub.name, (ckpt,)))
    if dedicated:
        # vocabulary order, so that the set's stems read naturally; unknown names after, by name
        order = sorted(dedicated, key=lambda s: (STEMS.index(s) if s in STEMS else len(STEMS), s))
        found.append(CheckpointSet("dedicated", tuple(dedicated[s] for s in order)))
    if not found:
        raise CheckpointNotFoundError(
            f"no checkpoint in {root}: expected best.ckpt, or the subfolders conditioned/ and dedicated-<stem>/ "
            f"holding best.ckpt (the layout train.py writes); {_HINT}")
    return found
