"""One resolver for every dataset: kind + root -> tracks per split, with a held-out validation split."""

from pathlib import Path

import pytest

import numpy as np

from conditioned_sep.data import sources
from conditioned_sep.data.folder import DatasetError
from conditioned_sep.data.sources import DATASET_KINDS, DatasetSpec, has_own_valid_split, prepare, split_tracks
from conditioned_sep.data.vocabulary import load_references
from conditioned_sep.stems import FINE_STEMS, STEMS

from layouts import write_rendered_like  # a helper, not a fixture: tests/ is on sys.path

MOISESDB = Path(__file__).parent / "fixtures" / "moisesdb"


def test_folder_with_valid_split(hq_folder):
    spec = prepare(DatasetSpec("folder", hq_folder))
    assert [t.name for t in split_tracks(spec, "train")] == ["a", "b", "c"]
    assert [t.name for t in split_tracks(spec, "valid")] == ["v"]
    assert has_own_valid_split(spec)
    assert spec.describe() == f"folder:{hq_folder}"


def test_folder_without_valid_split_holds_out_every_tenth_training_track(tmp_path, hq_folder):
    import shutil

    root = tmp_path / "data"
    for i in range(12):
        shutil.copytree(hq_folder / "train" / "a", root / "train" / f"t{i:02d}")
    spec = DatasetSpec("folder", root)
    valid, train = split_tracks(spec, "valid"), split_tracks(spec, "train")
    assert [t.name for t in valid] == ["t00", "t10"]
    assert len(train) == 10 and not {t.name for t in train} & {"t00", "t10"}
    assert not has_own_valid_split(spec)
    shutil.rmtree(root / "train" / "t01")
    for i in range(2, 12):
        shutil.rmtree(root / "train" / f"t{i:02d}")
    with pytest.raises(DatasetError, match="too few training tracks to hold one out"):
        split_tracks(spec, "valid")


def test_synthetic_kind_checks_its_cache_and_reads_like_a_folder(tiny_synthetic):
    # the tiny fixture was generated with another size than the default: refused, never mixed up
    with pytest.raises(DatasetError, match="another seed, size or version"):
        prepare(DatasetSpec("synthetic", tiny_synthetic))
    spec = DatasetSpec("synthetic", tiny_synthetic)  # a root given as is is read as a stem folder
    assert len(split_tracks(spec, "train")) == 4 and len(split_tracks(spec, "test")) == 2
    assert split_tracks(spec, "test")[0].stems == STEMS
    assert DatasetSpec("synthetic").describe() == "synthetic:the synthetic dataset"


def test_default_kind_is_the_rendered_dataset_with_its_parts(tmp_path, monkeypatch):
    root = write_rendered_like(tmp_path / "rendered", tracks={"a": 2, "b": 1})
    calls = []

    def fake_render(r, *, progress):  # rendering takes minutes: the resolver's wiring is what is tested here
        calls.append(r)
        return root

    monkeypatch.setattr(sources, "ensure_rendered_dataset", fake_render)
    spec = prepare(DatasetSpec(), progress=False)
    assert spec == DatasetSpec("default", root) and calls == [None]
    assert DatasetSpec().describe() == "default:the rendered default dataset"
    train, valid = split_tracks(spec, "train"), split_tracks(spec, "valid")
    assert [t.name for t in valid] == ["a"] and [t.name for t in train] == ["b"]
    assert train[0].stems == FINE_STEMS and not train[0].has("synth") and train[0].has("piano")
    assert not has_own_valid_split(spec)
    split_tracks(DatasetSpec("default"), "train")  # no root: prepared (here: the fake render) first
    assert calls == [None, None]


def test_moisesdb_kind(monkeypatch):
    with pytest.raises(DatasetError, match=r"pass its root \(--moisesdb PATH\) or set \$MOISESDB_PATH"):
        monkeypatch.delenv("MOISESDB_PATH", raising=False)
        prepare(DatasetSpec("moisesdb"))
    monkeypatch.setenv("MOISESDB_PATH", str(MOISESDB))
    spec = prepare(DatasetSpec("moisesdb"))
    assert spec.root == MOISESDB and spec.describe() == f"moisesdb:{MOISESDB}" and has_own_valid_split(spec)
    train = split_tracks(spec, "train")
    assert len(train) == 2 and train[0].stems == FINE_STEMS
    with pytest.raises(DatasetError, match="no track of the test split.*add more tracks"):
        split_tracks(spec, "test")
    with pytest.raises(DatasetError, match="MoisesDB folder .*nowhere does not exist"):
        prepare(DatasetSpec("moisesdb", MOISESDB / "nowhere"))


def test_stempeg_kind_is_one_test_track():
    spec = prepare(DatasetSpec("stempeg"))
    assert spec.describe() == "stempeg:stempeg's example track" and has_own_valid_split(spec)
    (track,) = split_tracks(spec, "test")
    assert track.name == "The Easton Ellises - Falcon 69" and track.split == "test" and track.stems
    assert set(track.stems) == set(STEMS) and track.sample_rate == 44100
    x = load_references(track, STEMS, start=44100, length=4410)
    assert x.shape == (4, 2, 4410) and np.abs(x).max() > 0
    with pytest.raises(DatasetError, match="test excerpt only .* has no train split"):
        split_tracks(spec, "train")
    with pytest.raises(DatasetError, match="has no valid split"):
        split_tracks(spec, "valid")
    with pytest.raises(DatasetError, match="takes no root"):
        DatasetSpec("stempeg", Path("x"))
    with pytest.raises(DatasetError, match="has no stem 'piano'.*rendered default"):
        load_references(track, ("vocals", "piano", "other"))


def test_bad_specs_name_the_way_out(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset kind 'mp3'; choose one of default, synthetic, folder, "
                                           "musdb, moisesdb, stempeg"):
        DatasetSpec("mp3", tmp_path)
    with pytest.raises(DatasetError, match="needs a root: pass --folder PATH"):
        DatasetSpec("folder")
    with pytest.raises(DatasetError, match=r"dataset folder .*typo does not exist; pass a folder laid out"):
        prepare(DatasetSpec("folder", tmp_path / "typo"))
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        split_tracks(DatasetSpec("folder", tmp_path), "dev")
    assert DatasetSpec("folder", Path("~/x")).root == Path("~/x").expanduser()
    assert DATASET_KINDS == ("default", "synthetic", "folder", "musdb", "moisesdb", "stempeg")


def test_a_moisesdb_source_with_nan_samples_is_named(tmp_path):
    import shutil

    import soundfile as sf

    shutil.copytree(MOISESDB, tmp_path / "db")
    bad = sorted((tmp_path / "db").rglob("bass/*.wav"))[0]
    audio, rate = sf.read(bad, dtype="float32", always_2d=True)
    audio[10, 0] = np.inf
    sf.write(bad, audio, rate, subtype="FLOAT")
    (track,) = [t for t in split_tracks(prepare(DatasetSpec("moisesdb", tmp_path / "db")), "train") if t.has("bass")]
    assert track.load(stems=["vocals"]).shape[0] == 1  # the other files read as before
    with pytest.raises(DatasetError, match=f"{bad} holds 1 non-finite sample\\(s\\) \\(NaN or Inf\\), the first at "
                                           "sample 10"):
        track.load(stems=["bass"])
