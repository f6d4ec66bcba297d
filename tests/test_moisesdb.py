"""MoisesDB read in place from a fixture in its exact layout: coarse and fine stems as sums of the right sources,
the Track interface of stem folders, excerpts, splits and errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conditioned_sep.data.folder import DatasetError
from conditioned_sep.data.moisesdb import moisesdb_root, moisesdb_tracks, read_moisesdb_track, split_of
from conditioned_sep.stems import FINE_STEMS, STEMS

FIXTURE = Path(__file__).parent / "fixtures" / "moisesdb"
FULL = "0b5c1a2e-6f1d-4a53-9e3a-1c2f3d4e5f60"


def source_audio(track_folder: Path, stem_name: str, track_type: str | None = None) -> np.ndarray:
    """Sum of the sources data.json lists under ``stem_name`` (of one trackType if given), (2, samples)."""
    meta = json.loads((track_folder / "data.json").read_text())
    out = np.zeros((2, 1000), dtype=np.float32)
    for stem in meta["stems"]:
        if stem["stemName"] != stem_name:
            continue
        for source in stem["tracks"]:
            if track_type is None or source["trackType"] == track_type:
                data, _ = sf.read(track_folder / stem_name / f"{source['id']}.wav", dtype="float32", always_2d=True)
                data = np.repeat(data.T, 2, axis=0) if data.shape[1] == 1 else data.T
                out[:, : data.shape[1]] += data
    return out


def test_tracks_are_found_under_the_version_folder_and_have_the_track_interface():
    tracks = moisesdb_tracks(FIXTURE)
    assert [t.name for t in tracks] == sorted(t.name for t in tracks) and len(tracks) == 2
    full = next(t for t in tracks if t.name == FULL)
    assert full.title == "Fixture Artist - Every Stem"
    assert (full.sample_rate, full.num_samples, full.channels) == (44100, 1000, 2)
    assert all(full.has(stem) for stem in FINE_STEMS)
    no_bass = next(t for t in tracks if t.name != FULL)
    assert not no_bass.has("bass") and not no_bass.has("guitar") and no_bass.has("other")
    assert np.all(no_bass.load(stems=["bass"]) == 0)
    assert moisesdb_tracks(FIXTURE / "moisesdb_v0.1")[0].name == tracks[0].name  # the version folder as root


def test_stems_are_sums_of_the_right_sources():
    track = read_moisesdb_track(FIXTURE / "moisesdb_v0.1" / FULL)
    folder = track.folder
    x = dict(zip((*FINE_STEMS, "mixture"), track.load(stems=(*FINE_STEMS, "mixture"))))
    atonal = "a-tonal_percussion_(claps,_shakers,_congas,_cowbell_etc)"
    pitched = "pitched_percussion_(mallets,_glockenspiel,_...)"
    expected = {
        "vocals": source_audio(folder, "vocals"),  # one of the two sources is mono: spread to both channels
        "drums": source_audio(folder, "drums") + source_audio(folder, "percussion", atonal),
        "bass": source_audio(folder, "bass"),
        "piano": source_audio(folder, "piano"),
        "guitar": source_audio(folder, "guitar") + source_audio(folder, "other_plucked"),  # one is 100 samples short
        "keys": source_audio(folder, "other_keys", "organ,_electric_organ") + source_audio(folder, "percussion",
                                                                                            pitched),
        "synth": source_audio(folder, "other_keys", "synth_pad"),
        "strings": source_audio(folder, "bowed_strings"),
        "winds": source_audio(folder, "wind"),
    }
    for stem, audio in expected.items():
        np.testing.assert_allclose(x[stem], audio, atol=1e-6, err_msg=stem)
    fx = source_audio(folder, "other")
    np.testing.assert_allclose(x["other"], sum(x[p] for p in FINE_STEMS[4:]) + fx, atol=1e-6)
    np.testing.assert_allclose(x["mixture"], sum(x[s] for s in STEMS), atol=1e-6)
    assert np.abs(fx).max() > 0.01


def test_excerpts_resampling_and_splits():
    track = read_moisesdb_track(FIXTURE / "moisesdb_v0.1" / FULL)
    whole = track.load(stems=["vocals", "other"])
    np.testing.assert_array_equal(track.load(stems=["vocals", "other"], start=300, length=200), whole[:, :, 300:500])
    past = track.load(stems=["vocals"], start=900, length=300)
    assert past.shape == (1, 2, 300) and np.all(past[:, :, 100:] == 0)
    assert track.load(stems=["bass"], sample_rate=22050).shape == (1, 2, 500)
    assert track.split == split_of(FULL) and split_of(FULL) in ("train", "valid", "test")
    buckets = [split_of(f"track-{i}") for i in range(2000)]
    assert 0.07 < buckets.count("test") / 2000 < 0.13 and 0.07 < buckets.count("valid") / 2000 < 0.13
    assert [t.name for t in moisesdb_tracks(FIXTURE, split=track.split)].count(FULL) == 1
    with pytest.raises(DatasetError, match="unknown stem"):
        track.load(stems=["kazoo"])


def test_errors_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.delenv("MOISESDB_PATH", raising=False)
    with pytest.raises(DatasetError, match="MOISESDB_PATH"):
        moisesdb_root(None)
    with pytest.raises(DatasetError, match="does not exist"):
        moisesdb_tracks(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="holds no MoisesDB track"):
        moisesdb_tracks(tmp_path)
    broken = tmp_path / "db" / FULL
    shutil.copytree(FIXTURE / "moisesdb_v0.1" / FULL, broken)
    next((broken / "bass").glob("*.wav")).unlink()
    with pytest.raises(DatasetError, match="missing"):
        moisesdb_tracks(tmp_path / "db")
    monkeypatch.setenv("MOISESDB_PATH", str(FIXTURE))
    assert moisesdb_root(None) == FIXTURE
