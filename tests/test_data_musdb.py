import numpy as np
import pytest
import soundfile as sf

from conditioned_sep.audio import write_audio
from conditioned_sep.data import musdb as mdb
from conditioned_sep.data.folder import DatasetError
from conditioned_sep.stems import STEMS


def test_validation_list_comes_from_the_musdb_package():
    names = mdb.validation_track_names()
    assert len(names) == 14 and "Leaf - Summerghost" in names


def test_stem_mp4_splits_shapes_and_stems(musdb_stem_folder):
    train = mdb.musdb_tracks(musdb_stem_folder, "train")
    valid = mdb.musdb_tracks(musdb_stem_folder, "valid")
    test = mdb.musdb_tracks(musdb_stem_folder, "test")
    assert [t.name for t in train] == ["The Easton Ellises - Falcon 69"]
    assert [t.name for t in valid] == ["Leaf - Summerghost"]
    assert [t.name for t in test] == ["Al James - Schoolboy Facination"]
    track = train[0]
    assert (track.sample_rate, track.channels, track.split) == (44100, 2, "train")
    assert track.num_samples > 5 * 44100
    excerpt = track.load(start=44100, length=22050)
    assert excerpt.shape == (4, 2, 22050) and excerpt.dtype == np.float32
    assert np.all(np.abs(excerpt).max(axis=(1, 2)) > 0.01)  # all four stems of the real excerpt sound here
    # MUSDB18 orders streams mixture, drums, bass, other, vocals: ours come back in STEMS order
    drums = track.load(stems=["drums"], start=44100, length=22050)
    np.testing.assert_array_equal(drums[0], excerpt[STEMS.index("drums")])


def test_root_from_environment_and_clear_errors(musdb_stem_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("MUSDB_PATH", str(musdb_stem_folder))
    assert [t.name for t in mdb.musdb_tracks(split="test")] == ["Al James - Schoolboy Facination"]
    monkeypatch.delenv("MUSDB_PATH")
    with pytest.raises(DatasetError, match=r"--musdb PATH\) or set \$MUSDB_PATH"):
        mdb.musdb_tracks(split="train")
    with pytest.raises(DatasetError, match="does not exist"):
        mdb.musdb_tracks(tmp_path / "nope", "train")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="neither MUSDB18"):
        mdb.musdb_tracks(tmp_path / "empty", "train")
    with pytest.raises(DatasetError, match="unknown MUSDB18 split"):
        mdb.musdb_tracks(musdb_stem_folder, "validation")


def test_decode_to_wav_gives_an_hq_layout_read_with_soundfile(musdb_stem_folder, tmp_path):
    out = tmp_path / "hq"
    assert mdb.main(["decode", str(musdb_stem_folder), str(out)]) == 0
    hq_valid = mdb.musdb_tracks(out, "valid")
    assert [t.name for t in hq_valid] == ["Leaf - Summerghost"]
    assert hq_valid[0].split == "valid"
    hq = mdb.musdb_tracks(out, "train")
    assert [t.name for t in hq] == ["The Easton Ellises - Falcon 69"] and type(hq[0]).__name__ == "Track"
    mp4 = mdb.musdb_tracks(musdb_stem_folder, "train")[0]
    np.testing.assert_allclose(hq[0].load(start=1000, length=5000), mp4.load(start=1000, length=5000), atol=1e-6)
    assert (out / "train" / "Leaf - Summerghost" / "mixture.wav").is_file()
    stamp = (out / "test" / "Al James - Schoolboy Facination" / "vocals.wav").stat().st_mtime_ns
    mdb.decode_musdb_to_wav(musdb_stem_folder, out, progress=False)  # done tracks are skipped
    assert (out / "test" / "Al James - Schoolboy Facination" / "vocals.wav").stat().st_mtime_ns == stamp
    assert sf.info(str(out / "test" / "Al James - Schoolboy Facination" / "bass.wav")).samplerate == 44100


def test_hq_test_split_does_not_need_the_musdb_package(tmp_path, monkeypatch):
    for split, name in (("train", "Leaf - Summerghost"), ("test", "Al James - Schoolboy Facination")):
        folder = tmp_path / split / name
        folder.mkdir(parents=True)
        for stem in STEMS:
            write_audio(folder / f"{stem}.wav", np.zeros((2, 441), dtype=np.float32), 44100)

    def no_musdb():
        raise DatasetError("the musdb package is needed for MUSDB18's splits")

    monkeypatch.setattr(mdb, "validation_track_names", no_musdb)
    test = mdb.musdb_tracks(tmp_path, "test")
    assert [(t.name, t.split) for t in test] == [("Al James - Schoolboy Facination", "test")]
    with pytest.raises(DatasetError, match="musdb package"):
        mdb.musdb_tracks(tmp_path, "valid")
