import json
import os

import numpy as np
import pytest
import soundfile as sf

from conditioned_sep.data import synthetic
from conditioned_sep.data.folder import DatasetError, list_tracks
from conditioned_sep.data.synthetic import SyntheticConfig, ensure_synthetic_dataset
from conditioned_sep.stems import STEMS


def test_layout_manifest_and_track_format(tiny_synthetic):
    manifest = json.loads((tiny_synthetic / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["config"]["train_songs"] == 4
    for split, (n_songs, seconds) in SyntheticConfig(**manifest["config"]).split_sizes().items():
        tracks = list_tracks(tiny_synthetic, split)
        assert len(tracks) == n_songs == len(manifest["tracks"][split])
        for t in tracks:
            assert t.sample_rate == 44100 and t.channels == 2 and t.num_samples == int(seconds * 44100)
            assert all(t.has(s) for s in STEMS)
            info = sf.info(str(tiny_synthetic / split / t.name / "mixture.wav"))
            assert (info.samplerate, info.channels, info.subtype) == (44100, 2, "PCM_16")


def test_mixture_file_is_the_sum_of_the_stems(tiny_synthetic):
    track = list_tracks(tiny_synthetic, "test")[0]
    stems = track.load()
    mixture, _ = sf.read(str(tiny_synthetic / "test" / track.name / "mixture.wav"), dtype="float32")
    # 16-bit quantisation of five files: at most 4 LSB apart
    assert np.abs(stems.sum(0) - mixture.T).max() <= 4 / 32768 + 1e-7


def test_generation_is_deterministic(tmp_path):
    config = SyntheticConfig(train_songs=1, valid_songs=1, test_songs=0, train_seconds=1.0, valid_seconds=1.0)
    a = ensure_synthetic_dataset(tmp_path / "a", seed=3, config=config, workers=1, progress=False)
    b = ensure_synthetic_dataset(tmp_path / "b", seed=3, config=config, workers=1, progress=False)
    c = ensure_synthetic_dataset(tmp_path / "c", seed=4, config=config, workers=1, progress=False)
    ta, tb, tc = (list_tracks(r, "train")[0] for r in (a, b, c))
    assert ta.name == tb.name
    np.testing.assert_array_equal(ta.load(), tb.load())
    assert not np.array_equal(ta.load(), tc.load())


def test_second_call_reuses_and_mismatch_or_foreign_folder_is_an_error(tmp_path):
    config = SyntheticConfig(train_songs=1, valid_songs=0, test_songs=0, train_seconds=0.5)
    root = ensure_synthetic_dataset(tmp_path / "d", config=config, workers=1, progress=False)
    stamp = os.stat(root / "manifest.json").st_mtime_ns
    assert ensure_synthetic_dataset(root, config=config, workers=1, progress=False) == root
    assert os.stat(root / "manifest.json").st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="another seed, size or version"):
        ensure_synthetic_dataset(root, seed=1, config=config, workers=1, progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("precious")
    with pytest.raises(DatasetError, match="not a synthetic dataset"):
        ensure_synthetic_dataset(foreign, config=config, workers=1, progress=False)
    assert (foreign / "thesis.txt").exists()


def test_killed_generation_leaves_nothing_usable_and_is_redone(tmp_path, monkeypatch):
    config = SyntheticConfig(train_songs=2, valid_songs=0, test_songs=0, train_seconds=0.5)
    calls = []

    def dying(job):
        if calls:
            raise KeyboardInterrupt("killed")
        calls.append(job)
        return real(job)

    real = synthetic._write_song_job
    monkeypatch.setattr(synthetic, "_write_song_job", dying)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(tmp_path / "e", config=config, workers=1, progress=False)
    assert not (tmp_path / "e").exists()
    assert not list(tmp_path.glob(".e.partial-*"))
    monkeypatch.setattr(synthetic, "_write_song_job", real)
    root = ensure_synthetic_dataset(tmp_path / "e", config=config, workers=1, progress=False)
    assert len(list_tracks(root, "train")) == 2


def test_stale_partial_of_a_dead_process_is_removed_and_missing_files_regenerate(tmp_path):
    config = SyntheticConfig(train_songs=1, valid_songs=0, test_songs=0, train_seconds=0.5)
    stale = tmp_path / ".f.partial-999999999-x"
    stale.mkdir()
    root = ensure_synthetic_dataset(tmp_path / "f", config=config, workers=1, progress=False)
    assert not stale.exists()
    track = list_tracks(root, "train")[0]
    (root / "train" / track.name / "bass.wav").unlink()
    ensure_synthetic_dataset(root, config=config, workers=1, progress=False)
    assert (root / "train" / track.name / "bass.wav").is_file()


def test_default_root_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CONDITIONED_SEP_DATA", str(tmp_path / "x"))
    assert synthetic.default_data_root() == tmp_path / "x" / "synthetic-v1"
    monkeypatch.delenv("CONDITIONED_SEP_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert synthetic.default_data_root().parent == tmp_path / "cache" / "conditioned-sep"
