"""museval-format JSON in and out: one file per track, as ``museval.eval_mus_track(..., output_dir=root)`` writes it (``root/<subset>/<track>.json``),
holding ``{"targets": [{"name": ..., "frames": [{"time": s, "duration": s, "metrics": {"SDR": dB, "SIR": dB,
"SAR": dB, "ISR": dB}}]}]}``. Values are rounded to 5 decimals and infinite values are written as ``NaN``, both as
museval does, so ``museval.EvalStore().add_eval_dir(root)`` and ``museval.MethodStore`` read our files unchanged
(they look for ``root/test/**/*.json``; the file name is the track name).

- :func:`write_museval_json` ``(path, frames, *, track_name=None, subset="test", window_seconds=1.0,
  hop_seconds=1.0) -> Path``
- :func:`read_museval_json` ``(path) -> {target: {"SDR", "SIR", "SAR", "ISR", "time": (frames,) arrays}}``
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .fileio import atomic_write_text
from .metrics import FRAME_SECONDS, METRICS


def _museval_number(value: float) -> float:
    """museval's quantisation: 5 decimals; infinite becomes NaN."""
    value = float(value)
    if math.isinf(value):
        return math.nan
    return round(value, 5) if math.isfinite(value) else value


def write_museval_json(
    path: str | os.PathLike,
    frames: Mapping[str, Mapping[str, Sequence[float] | np.ndarray]],
    *,
    track_name: str | None = None,
    subset: str = "test",
    window_seconds: float = FRAME_SECONDS,
    hop_seconds: float = FRAME_SECONDS,
) -> Path:
    """Write one track's framewise scores as museval does; returns the file written.

    ``path`` ending in ``.json`` is the file itself (museval takes the track name from its stem); any other
    ``path`` is a results root and the file is ``path/subset/track_name.json`` as ``museval.eval_mus_track``
    lays it out. ``frames``: ``{target: {"SDR": (frames,), "SIR": ..., "SAR": ..., "ISR": ...}}`` in dB (e.g.
    :meth:`conditioned_sep.metrics.BSSEvalResult.frames`).
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        if track_name is not None and track_name != path.stem:
            raise ValueError(f"track_name {track_name!r} differs from the file name {path.name!r}; museval reads "
                             "the track name from the file name")
    else:
        if not track_name or "/" in track_name or (os.altsep and os.altsep in track_name) or os.sep in track_name:
            raise ValueError(f"track_name must be a plain file name when path is a folder, got {track_name!r}")
        path = path / subset / f"{track_name}.json"
    targets = []
    for name, by_metric in frames.items():
        missing = [m for m in METRICS if m not in by_metric]
        if missing:
            raise ValueError(f"target {name!r} lacks metric(s) {missing}; museval files hold SDR, SIR, SAR and ISR")
        values = {m: np.asarray(by_metric[m], dtype=np.float64).reshape(-1) for m in METRICS}
        lengths = {len(v) for v in values.values()}
        if len(lengths) != 1:
            raise ValueError(f"target {name!r}: metrics have different frame counts {sorted(lengths)}")
        n_frames = lengths.pop()
        targets.append(
            {
                "name": str(name),
                "frames": [
                    {
                        "time": i * hop_seconds,
                        "duration": window_seconds,
                        "metrics": {m: _museval_number(values[m][i]) for m in METRICS},
                    }
                    for i in range(n_frames)
                ],
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # json writes NaN as the bare token NaN, exactly as museval's simplejson(allow_nan=True) does
    atomic_write_text(path, json.dumps({"targets": targets}, indent=2, allow_nan=True))
    return path


def read_museval_json(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Read a museval-format track file (ours or museval's): ``{target: {metric or "time": (frames,) float64}}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        targets = data["targets"]
        out = {}
        for target in targets:
            frames = target["frames"]
            entry = {m: np.array([float(f["metrics"][m]) for f in frames], dtype=np.float64) for m in METRICS}
            entry["time"] = np.array([float(f["time"]) for f in frames], dtype=np.float64)
            out[target["name"]] = entry
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a museval track file ({type(err).__name__}: {err})") from err
    return out
