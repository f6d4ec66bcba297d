"""A stem vocabulary as configuration: query expansion, the data-side adapter, and a 6-stem model end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conditioned_sep.audio import write_audio
from conditioned_sep.checkpoint import load_checkpoint, save_checkpoint
from conditioned_sep.data.folder import DatasetError, list_tracks
from conditioned_sep.data.sampling import SamplingConfig, StemBank, TrainingExamples, validation_excerpts
from conditioned_sep.data.sources import DatasetSpec, split_tracks
from conditioned_sep.data.vocabulary import VocabularyTrack, load_references, with_vocabulary
from conditioned_sep.models import ConditionedUNet
from conditioned_sep.separator import Separator
from conditioned_sep.stems import (FINE_STEMS, OTHER_PARTS, STEMS, UnknownStemError, check_vocabulary,
                                   parse_queries, parse_query, query_to_z)

from layouts import RATE, noise, write_rendered_like  # a helper module: tests/ is on sys.path

SIX = ("vocals", "drums", "bass", "piano", "guitar", "other")


def test_check_vocabulary():
    assert check_vocabulary(["vocals", "piano"]) == ("vocals", "piano")
    with pytest.raises(UnknownStemError, match="unknown stem 'kazoo'.*known: vocals, drums, bass, other, piano"):
        check_vocabulary(("vocals", "kazoo"))
    with pytest.raises(UnknownStemError, match="'bass' listed twice"):
        check_vocabulary(("bass", "drums", "bass"))
    with pytest.raises(UnknownStemError, match="at least one stem"):
        check_vocabulary(())
    with pytest.raises(UnknownStemError, match="a vocabulary is a sequence"):
        check_vocabulary("vocals")
    assert FINE_STEMS == STEMS + OTHER_PARTS


def test_other_expands_to_the_remainder_and_the_listed_parts():
    assert parse_query("other", vocabulary=SIX).stems == ("piano", "guitar", "other")
    assert parse_query("piano", vocabulary=SIX).stems == ("piano",)
    assert parse_query("accompaniment", vocabulary=SIX).stems == ("drums", "bass", "piano", "guitar", "other")
    assert parse_query("all", vocabulary=SIX).stems == SIX
    assert parse_query("rhythm", vocabulary=SIX).stems == ("drums", "bass")
    assert [q.stems for q in parse_queries("vocals,other", vocabulary=SIX)] == [("vocals",),
                                                                               ("piano", "guitar", "other")]
    assert torch.equal(query_to_z("other", vocabulary=SIX), torch.tensor([0.0, 0, 0, 1, 1, 1]))
    # parts without other: other is the sum of the listed parts
    assert parse_query("other", vocabulary=("vocals", "piano", "guitar")).stems == ("piano", "guitar")
    # the 4-stem vocabulary is unchanged
    assert parse_query("other").stems == ("other",)
    assert parse_query("accompaniment").stems == ("drums", "bass", "other")


def test_a_part_the_vocabulary_lacks_is_named():
    with pytest.raises(UnknownStemError, match=r"unknown stem 'piano' \(a known stem this vocabulary does not "
                                               r"have\).*valid: stems vocals, drums, bass, other"):
        parse_query("piano")
    with pytest.raises(UnknownStemError, match="unknown stem 'strings'.*stems vocals, drums, bass, piano, guitar"):
        parse_query("strings", vocabulary=SIX)
    with pytest.raises(UnknownStemError, match="unknown stem 'accompaniment'"):
        parse_query("accompaniment", vocabulary=("vocals", "piano"))


@pytest.fixture(scope="module")
def rendered_like(tmp_path_factory) -> Path:
    return write_rendered_like(tmp_path_factory.mktemp("rendered"), tracks={"a": 3, "b": 1, "c": 2})


def test_adapter_sums_on_a_rendered_layout(rendered_like):
    tracks = list_tracks(rendered_like, "train", stems=FINE_STEMS)
    for track in tracks:
        raw = dict(zip(FINE_STEMS, track.load(stems=FINE_STEMS)))
        six = with_vocabulary(track, SIX)
        x = dict(zip(SIX, six.load()))
        # the remainder plus the listed parts is other; every entry sums to the mixture
        np.testing.assert_allclose(x["other"] + x["piano"] + x["guitar"], raw["other"], atol=1e-6)
        np.testing.assert_allclose(sum(x.values()), raw["vocals"] + raw["drums"] + raw["bass"] + raw["other"],
                                   atol=1e-5)
        np.testing.assert_array_equal(x["piano"], raw["piano"])  # a part the song lacks is silence
        # an excerpt and a single stem agree with the whole
        np.testing.assert_allclose(six.load(stems=["other"], start=100, length=300)[0], x["other"][:, 100:400],
                                   atol=1e-6)
        assert six.name == track.name and six.num_samples == track.num_samples and six.stems == SIX
        assert six.has("other") and six.has("piano") == track.has("piano")
    np.testing.assert_array_equal(load_references(tracks[0], SIX), with_vocabulary(tracks[0], SIX).load())
    # the 4-stem vocabulary reads the stems as they are
    np.testing.assert_array_equal(load_references(tracks[0], STEMS), tracks[0].load(stems=STEMS))


def test_track_with_parts_only_sums_the_unlisted_parts_into_other(tmp_path):
    folder = tmp_path / "train" / "t"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    audio = {s: noise(rng, 0.5) for s in ("vocals", "piano", "guitar", "synth")}
    for stem, x in audio.items():
        write_audio(folder / f"{stem}.wav", x, RATE, subtype="FLOAT")
    track = list_tracks(tmp_path, "train", stems=("vocals", *OTHER_PARTS))[0]
    x = dict(zip(("vocals", "piano", "other"), with_vocabulary(track, ("vocals", "piano", "other")).load()))
    np.testing.assert_allclose(x["other"], audio["guitar"] + audio["synth"], atol=1e-6)
    np.testing.assert_allclose(x["piano"], audio["piano"], atol=1e-6)


def test_a_track_without_parts_cannot_give_them(hq_folder):
    track = list_tracks(hq_folder, "train")[0]  # MUSDB18-HQ layout: the four stems only
    with pytest.raises(DatasetError, match=r"track 'a' has no stem 'piano' \(it stores vocals, drums, bass, "
                                           r"other\); use a dataset with instrument stems: the rendered default"):
        with_vocabulary(track, SIX)
    with pytest.raises(DatasetError, match="has no stem 'piano'.*MoisesDB"):
        StemBank([track], stems=SIX)
    with pytest.raises(DatasetError, match="has no stem 'guitar'"):
        validation_excerpts([track], stems=("vocals", "guitar"), seconds=0.5)
    assert isinstance(with_vocabulary(with_vocabulary(track, STEMS), STEMS).track, type(track))


def test_folder_kind_lists_the_parts_when_the_folder_has_them(rendered_like, hq_folder):
    spec = DatasetSpec("folder", rendered_like)
    train = split_tracks(spec, "train")
    assert train[0].stems == FINE_STEMS
    assert split_tracks(DatasetSpec("folder", hq_folder), "train")[0].stems == STEMS


def test_six_stem_sampling_draws_remainder_targets(rendered_like):
    tracks = list_tracks(rendered_like, "train", stems=FINE_STEMS)
    bank = StemBank(tracks, stems=SIX)
    assert isinstance(bank.tracks[0], VocabularyTrack) and bank.has_stem.shape == (3, 6)
    data = TrainingExamples(bank, SamplingConfig(segment=2000, stems=SIX, remix_prob=0.0, gain_range=(1, 1),
                                                 channel_swap_prob=0, silent_target_rate=0, scale_prob=0),
                            seed=0)
    item = data[3]
    assert item["z"].shape == (6,) and item["sources"].shape == (6, 2, 2000)
    torch.testing.assert_close(item["mixture"], item["sources"].sum(0))
    with pytest.raises(UnknownStemError, match="unknown stem 'kazoo'"):
        SamplingConfig(segment=10, stems=("vocals", "kazoo"))


def _train_a_few_steps(model: ConditionedUNet, data: TrainingExamples, *, steps: int = 3) -> None:
    """Plain L1 on magnitudes: enough to move every conditioned weight (the real loop is training.py's)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        batch = data.batch(range(step * 2, step * 2 + 2))
        est = model(model.stft(batch["mixture"]), batch["z"])  # (b, c, f, t) complex
        loss = (est.abs() - model.stft(batch["target"]).abs()).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)


def test_six_stem_model_trains_saves_loads_and_answers_other_and_piano(rendered_like, tmp_path):
    torch.manual_seed(0)
    model = ConditionedUNet.from_preset("tiny", stems=SIX, sample_rate=RATE)
    assert model.stems == SIX
    tracks = list_tracks(rendered_like, "train", stems=FINE_STEMS)
    segment = model.config.hop_length * 32  # 0.5 s: the songs are 1 s long
    data = TrainingExamples(StemBank(tracks, stems=SIX), SamplingConfig(segment=segment, stems=SIX))
    _train_a_few_steps(model, data)
    path = save_checkpoint(tmp_path / "six.ckpt", model)
    loaded, meta = load_checkpoint(path)
    assert loaded.stems == SIX and meta["stems"] == list(SIX) and meta["config"]["stems"] == list(SIX)

    sep = Separator.load(path, chunk_seconds=None)
    assert sep.stems == SIX
    mixture = with_vocabulary(tracks[0], SIX).load().sum(0)  # (c, samples)
    out = sep.separate(mixture, ["other", "piano", "guitar", "piano+guitar+other"], sample_rate=RATE)
    for name, y in out.items():
        assert y.shape == mixture.shape and torch.isfinite(y).all(), name
    # "other" is one forward pass with z = remainder + piano + guitar, the same as the explicit sum's
    torch.testing.assert_close(out["other"], out["piano+guitar+other"])
    # a conditioned model is not linear in z: other need not equal the sum of its entries' outputs
    with pytest.raises(UnknownStemError, match="unknown stem 'strings'.*vocals, drums, bass, piano, guitar"):
        sep.separate(mixture, "strings", sample_rate=RATE)
    # the Wiener filter across a disjoint cover of the vocabulary keeps the shapes
    wiener = Separator.load(path, chunk_seconds=None, niter=1).separate(mixture, "vocals,drums,bass,other",
                                                                       sample_rate=RATE)
    assert all(torch.isfinite(y).all() and y.shape == mixture.shape for y in wiener.values())
