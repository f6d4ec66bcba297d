import numpy as np
import pytest

from conditioned_sep.audio import read_audio
from conditioned_sep.data.folder import DatasetError, fit_channels, list_tracks
from conditioned_sep.stems import STEMS


def test_lists_tracks_sorted_and_skips_folders_without_stems(hq_folder):
    tracks = list_tracks(hq_folder, "train")
    assert [t.name for t in tracks] == ["a", "b", "c"]
    assert all(t.split == "train" and t.sample_rate == 44100 and t.num_samples == 66150 for t in tracks)
    assert [t.name for t in list_tracks(hq_folder, "valid")] == ["v"]


def test_load_returns_stems_in_order_and_missing_stem_is_silence(hq_folder):
    a, b = list_tracks(hq_folder, "train")[:2]
    audio = a.load()
    assert audio.shape == (4, 2, 66150) and audio.dtype == np.float32
    for i, stem in enumerate(STEMS):
        ref, _ = read_audio(hq_folder / "train" / "a" / f"{stem}.wav")
        np.testing.assert_array_equal(audio[i], ref)
    assert b.stem_paths["bass"] is None and not b.has("bass")
    loaded = b.load()
    assert loaded.shape == (4, 2, 66150)
    assert np.all(loaded[2] == 0) and np.abs(loaded[0]).max() > 0.1


def test_mono_stem_is_spread_to_both_channels(hq_folder):
    c = list_tracks(hq_folder, "train")[2]
    vocals = c.load(stems=["vocals"])
    assert vocals.shape == (1, 2, 66150)
    np.testing.assert_array_equal(vocals[0, 0], vocals[0, 1])


def test_excerpt_matches_slice_of_whole_and_pads_past_the_end(hq_folder):
    a = list_tracks(hq_folder, "train")[0]
    whole = a.load()
    np.testing.assert_array_equal(a.load(start=1000, length=5000), whole[:, :, 1000:6000])
    tail = a.load(start=66000, length=300)
    np.testing.assert_array_equal(tail[:, :, :150], whole[:, :, 66000:])
    assert np.all(tail[:, :, 150:] == 0)


def test_load_resamples(hq_folder):
    a = list_tracks(hq_folder, "train")[0]
    assert a.load(sample_rate=22050).shape == (4, 2, 33075)


def test_clear_errors_for_missing_root_split_and_empty_split(hq_folder, tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*--folder"):
        list_tracks(tmp_path / "nowhere", "train")
    with pytest.raises(DatasetError, match="no split folder .*found"):
        list_tracks(hq_folder, "validation")
    with pytest.raises(DatasetError, match="holds no track"):
        list_tracks(hq_folder, "test")


def test_fit_channels_spreads_mono_and_reduces_extra_channels():
    stereo = np.stack([np.full((3, 5), 1.0), np.full((3, 5), 3.0)], axis=1).astype(np.float32)  # (3 stems, 2, 5)
    assert fit_channels(stereo, 2) is stereo
    np.testing.assert_array_equal(fit_channels(stereo, 1), np.full((3, 1, 5), 2.0))
    np.testing.assert_array_equal(fit_channels(stereo[:, :1], 2), np.full((3, 2, 5), 1.0))
    np.testing.assert_array_equal(fit_channels(stereo[0], 1), np.full((1, 5), 2.0))  # (c, samples) too
