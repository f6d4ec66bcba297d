"""museval-format JSON: files museval's own stores read unchanged, round trips, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conditioned_sep.metrics import aggregate, bss_eval
from conditioned_sep.museval_io import read_museval_json, write_museval_json

import museval  # noqa: E402  (the oracle: in the test extra, so a missing one fails rather than skips)


def _track_frames(rng, n_frames):
    frames = {}
    for target in ("vocals", "drums"):
        sdr = rng.normal(5, 2, n_frames)
        sdr[1] = np.nan
        frames[target] = {"SDR": sdr, "SIR": sdr + 10, "SAR": sdr + 1, "ISR": sdr + 5}
    frames["drums"]["SIR"][2] = np.inf  # museval stores infinite values as NaN
    return frames


def _same_with_nan(a, b) -> bool:
    """Deep equality where NaN equals NaN (json.loads gives float('nan') for both files)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_with_nan(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_with_nan(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return (np.isnan(a) and np.isnan(b)) or a == b
    return a == b


def test_museval_json_matches_museval_trackstore_and_round_trips(tmp_path):
    rng = np.random.default_rng(8)
    frames = _track_frames(rng, 6)
    path = write_museval_json(tmp_path, frames, track_name="Artist - Song")
    assert path == tmp_path / "test" / "Artist - Song.json"
    store = museval.TrackStore(win=1.0, hop=1.0, track_name="Artist - Song")
    for target, values in frames.items():
        store.add_target(target_name=target, values={m: list(v) for m, v in values.items()})
    theirs = json.loads(store.json)
    ours = json.loads(path.read_text())
    theirs.pop("museval_version")
    assert ours == json.loads(json.dumps(theirs)) or _same_with_nan(ours, theirs)
    assert "NaN" in path.read_text()
    back = read_museval_json(path)
    assert set(back) == {"vocals", "drums"}
    np.testing.assert_allclose(back["vocals"]["SDR"], np.round(frames["vocals"]["SDR"], 5), atol=0)
    assert np.isnan(back["drums"]["SIR"][2]) and np.isnan(back["vocals"]["ISR"][1])
    np.testing.assert_array_equal(back["drums"]["time"], np.arange(6.0))
    file_path = write_museval_json(tmp_path / "x.json", frames)
    assert file_path.read_text() == path.read_text()
    with pytest.raises(ValueError, match="differs from the file name"):
        write_museval_json(tmp_path / "x.json", frames, track_name="y")
    with pytest.raises(ValueError, match="lacks metric"):
        write_museval_json(tmp_path, {"vocals": {"SDR": [1.0]}}, track_name="t")
    (tmp_path / "bad.json").write_text('{"tracks": []}')
    with pytest.raises(ValueError, match="not a museval track file"):
        read_museval_json(tmp_path / "bad.json")


def test_aggregate_matches_museval_evalstore_on_our_json(tmp_path):
    rng = np.random.default_rng(9)
    tracks = {f"track{i}": _track_frames(rng, 5 + i) for i in range(3)}
    tracks["track2"]["vocals"]["SDR"][:] = np.nan  # a track without any valid frame is skipped by the median
    for name, frames in tracks.items():
        write_museval_json(tmp_path, frames, track_name=name)
    store = museval.EvalStore()
    store.add_eval_dir(tmp_path)
    table = store.agg_frames_tracks_scores()
    methods = museval.MethodStore()
    methods.add_eval_dir(tmp_path)
    assert len(methods.df) == len(store.df) > 0
    for target in ("vocals", "drums"):
        for metric in ("SDR", "SIR"):
            agg = aggregate([tracks[t][target][metric] for t in tracks])
            assert agg.median == pytest.approx(table.loc[(target, metric)], abs=1e-5)
            assert agg.mean == pytest.approx(np.nanmean(agg.per_track), abs=1e-12)
    both = aggregate([np.stack([f["vocals"]["SAR"][:5], f["drums"]["SAR"][:5]]) for f in tracks.values()])
    assert both.median.shape == (2,) and both.per_track.shape == (3, 2)


def test_result_frames_feed_the_json_writer(tmp_path):
    rng = np.random.default_rng(10)
    refs = rng.standard_normal((2, 1, 2000))
    result = bss_eval(refs, refs + 0.3 * rng.standard_normal(refs.shape), 1000)
    frames = result.frames(["vocals", "drums"])
    back = read_museval_json(write_museval_json(tmp_path, frames, track_name="t"))
    np.testing.assert_allclose(back["drums"]["SAR"], np.round(result.sar[1], 5))
    with pytest.raises(ValueError, match="one per source"):
        result.frames(["vocals"])
