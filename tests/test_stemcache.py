"""The int16 memory-mapped stem cache: the same examples as reading the files, built once, never stale."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import soundfile as sf

from conditioned_sep.data.folder import DatasetError, list_tracks
from conditioned_sep.data.sampling import SamplingConfig, StemBank, TrainingExamples
from conditioned_sep.data.stemcache import StemCache, cache_key
from conditioned_sep.stems import STEMS

SEG = 4096


def test_cached_examples_equal_the_files_exactly_for_16_bit_stems(tiny_synthetic, tmp_path):
    tracks = list_tracks(tiny_synthetic, "train")  # 16-bit wav, as the rendered set's FLAC
    plain, cached = StemBank(tracks), StemBank(tracks, cache_root=tmp_path)
    assert cached.cache is not None and plain.audio is not None
    np.testing.assert_array_equal(cached.has_stem, plain.has_stem)
    config = SamplingConfig(segment=SEG)
    a, b = TrainingExamples(plain, config, seed=3), TrainingExamples(cached, config, seed=3)
    for i in (0, 1, 17, 400):
        for key in ("mixture", "target", "z"):
            assert np.array_equal(a[i][key].numpy(), b[i][key].numpy()), (i, key)
    last = tracks[0].num_samples
    np.testing.assert_array_equal(cached.excerpt(0, 1, last - 100, 300), plain.excerpt(0, 1, last - 100, 300))


def test_float_stems_are_kept_to_16_bits_of_their_peak(hq_folder, tmp_path):
    tracks = list_tracks(hq_folder, "train")  # FLOAT wav tones, one track without bass, one mono vocals
    plain, cached = StemBank(tracks), StemBank(tracks, cache_root=tmp_path)
    np.testing.assert_array_equal(cached.has_stem, plain.has_stem)
    assert not cached.has_stem[1, STEMS.index("bass")]
    for track in range(len(tracks)):
        for stem in range(len(STEMS)):
            want = plain.excerpt(track, stem, 0, 2000)
            np.testing.assert_allclose(cached.excerpt(track, stem, 0, 2000), want, rtol=0,
                                       atol=np.abs(want).max(initial=0) * 2 ** -15 + 1e-9)


def test_the_cache_is_built_once_and_a_changed_file_gets_a_new_one(hq_folder, tmp_path, monkeypatch):
    tracks = list_tracks(hq_folder, "train")
    first = StemCache(tracks, stems=STEMS, channels=2, root=tmp_path)
    built = sorted(p.name for p in tmp_path.iterdir())
    assert len(built) == 1 and (first.root / "manifest.json").exists()

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache was decoded again")

    for t in tracks:
        monkeypatch.setattr(t, "load", no_decoding)
    again = StemCache(tracks, stems=STEMS, channels=2, root=tmp_path)  # found: nothing decoded
    assert again.root == first.root
    monkeypatch.undo()
    path = tracks[0].stem_paths["vocals"]
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache_key(tracks, stems=STEMS, channels=2) != first.root.name
    assert cache_key(tracks, stems=STEMS[:2], channels=2) != first.root.name


def test_a_bank_travels_to_loader_workers_without_its_maps(tiny_synthetic, tmp_path):
    bank = StemBank(list_tracks(tiny_synthetic, "train"), cache_root=tmp_path)
    bank.excerpt(0, 0, 0, 100)  # maps one file in this process
    clone = pickle.loads(pickle.dumps(bank))
    assert all(m is None for m in clone.cache._maps)
    np.testing.assert_array_equal(clone.excerpt(2, 3, 500, 700), bank.excerpt(2, 3, 500, 700))


def test_a_stem_holding_nan_is_named_and_no_cache_is_left(tmp_path):
    folder = tmp_path / "data" / "train" / "song"
    folder.mkdir(parents=True)
    for stem in STEMS:
        audio = np.full((2, 4000), 0.1, np.float32)
        if stem == "drums":
            audio[0, 1234] = np.nan
        sf.write(folder / f"{stem}.wav", audio.T, 44100, subtype="FLOAT")  # write_audio refuses NaN
    with pytest.raises(DatasetError, match=r"drums.wav holds 1 non-finite sample\(s\)"):
        StemBank(list_tracks(tmp_path / "data", "train"), cache_root=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # nothing half-written
