import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conditioned_sep.audio import SILENCE_DB
from conditioned_sep.data.folder import DatasetError, list_tracks
from conditioned_sep.data.sampling import (SamplingConfig, StemBank, StepSampler, TrainingExamples, collate,
                                           validation_excerpts)
from conditioned_sep.stems import STEMS, UnknownStemError

SEG = 4096


@pytest.fixture(scope="module")
def bank(tiny_synthetic):
    return StemBank(list_tracks(tiny_synthetic, "train"))


def test_examples_shapes_and_mixture_is_sum_of_sources(bank):
    data = TrainingExamples(bank, SamplingConfig(segment=SEG), seed=1)
    for i in range(40):
        ex = data[i]
        assert ex["mixture"].shape == ex["target"].shape == (2, SEG)
        assert ex["sources"].shape == (4, 2, SEG) and ex["z"].shape == (4,)
        assert all(v.dtype == torch.float32 for v in ex.values())
        torch.testing.assert_close(ex["sources"].sum(0), ex["mixture"], atol=1e-6, rtol=0)
        # the target is the z-weighted sum of the augmented sources (scaled subsets included)
        torch.testing.assert_close(torch.einsum("s,sct->ct", ex["z"], ex["sources"]), ex["target"],
                                   atol=1e-6, rtol=0)


def test_same_seed_and_index_give_the_same_example(bank):
    a = TrainingExamples(bank, SamplingConfig(segment=SEG), seed=3)
    b = TrainingExamples(bank, SamplingConfig(segment=SEG), seed=3)
    c = TrainingExamples(bank, SamplingConfig(segment=SEG), seed=4)
    for key in ("mixture", "target", "z"):
        torch.testing.assert_close(a[17][key], b[17][key], atol=0, rtol=0)
    assert not torch.equal(a[17]["mixture"], c[17]["mixture"])
    batch = a.batch([17, 18])
    assert batch["mixture"].shape == (2, 2, SEG)
    torch.testing.assert_close(batch["target"][0], a[17]["target"], atol=0, rtol=0)


def test_condition_mix_matches_the_recipe(bank):
    config = SamplingConfig(segment=SEG, onehot_prob=0.6, subset_prob=0.25, zero_prob=0.15, scale_prob=0.3)
    data = TrainingExamples(bank, config, seed=0)
    rng = np.random.default_rng(0)
    zs = np.stack([data.draw_condition(rng) for _ in range(4000)])
    count = zs.sum(1)
    assert abs((count == 1).mean() - 0.6) < 0.03
    assert abs((count >= 2).mean() - 0.25) < 0.03
    assert abs((count == 0).mean() - 0.15) < 0.03
    assert set(np.unique(count)) == {0, 1, 2, 3, 4}  # subsets up to all four stems
    # scaled targets: z values strictly between 0 and 1 in about scale_prob of the non-zero conditions
    z = np.stack([data[i]["z"].numpy() for i in range(300)])
    nonzero = z[z.sum(1) > 0]
    scaled = ((nonzero > 0) & (nonzero < 1)).any(1).mean()
    assert 0.18 < scaled < 0.42


def test_stem_weights_set_how_often_a_one_hot_z_names_each_stem(bank):
    config = SamplingConfig(segment=SEG, onehot_prob=1, subset_prob=0, zero_prob=0, stem_weights={"bass": 3})
    data = TrainingExamples(bank, config, seed=0)
    rng = np.random.default_rng(0)
    share = np.stack([data.draw_condition(rng) for _ in range(6000)]).mean(0)
    np.testing.assert_allclose(share, [1 / 6, 1 / 6, 3 / 6, 1 / 6], atol=0.02)  # vocals, drums, bass, other
    # a zero weight: never asked for one-hot (subsets may still hold it)
    never = TrainingExamples(bank, SamplingConfig(segment=SEG, onehot_prob=1, subset_prob=0, zero_prob=0,
                                                  stem_weights={"vocals": 0}), seed=0)
    assert not np.stack([never.draw_condition(rng) for _ in range(500)])[:, 0].any()
    # no weights: exactly the draws of before the option existed (rng.integers over the stems)
    plain = TrainingExamples(bank, SamplingConfig(segment=SEG, onehot_prob=1, subset_prob=0, zero_prob=0), seed=0)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(50):
        z = plain.draw_condition(a)
        b.choice(3, p=np.array([1.0, 0, 0]))
        assert z.argmax() == b.integers(4)


def test_bad_stem_weights_are_clear_errors(bank):
    with pytest.raises(UnknownStemError, match="'piano'.*not in the vocabulary"):
        SamplingConfig(segment=SEG, stem_weights={"piano": 2})
    for bad in ({"bass": -1}, {"bass": float("nan")}, dict.fromkeys(STEMS, 0)):
        with pytest.raises(ValueError, match="stem weights must be finite and >= 0"):
            SamplingConfig(segment=SEG, stem_weights=bad)


def test_silent_targets_come_at_the_configured_rate(bank):
    n = 400

    def silent(data, i):
        # silence: below -50 dB before the per-stem gain (>= 0.25, i.e. -12 dB)
        return float(data[i]["target"].pow(2).mean()) < 10 ** (-6.2)

    for rate in (0.0, 0.3):
        config = SamplingConfig(segment=SEG, target="vocals", silent_target_rate=rate, scale_prob=0.0)
        data = TrainingExamples(bank, config, seed=5)
        share = np.mean([silent(data, i) for i in range(n)])
        # binomial standard deviation sqrt(0.3 * 0.7 / 400) = 0.023: 3 sigma = 0.07
        assert abs(share - rate) < 0.07, (rate, share)
    # a silent target is left out of the mixture: the mixture is the sum of the other stems
    ex = next(data[i] for i in range(n) if silent(data, i))
    assert float(ex["sources"][0].abs().max()) == 0.0 and float(ex["mixture"].abs().max()) > 0.01
    # conditioned model: the rate holds among the examples with a non-zero condition
    config = SamplingConfig(segment=SEG, silent_target_rate=0.3, zero_prob=0.1, scale_prob=0.0)
    data = TrainingExamples(bank, config, seed=6)
    flags = [(bool(data[i]["z"].any()), silent(data, i)) for i in range(n)]
    share = np.mean([s for nonzero, s in flags if nonzero])
    assert abs(share - 0.3) < 0.075, share  # about 360 non-zero conditions: 3 sigma = 0.073
    assert all(s for nonzero, s in flags if not nonzero)
    with pytest.raises(ValueError, match="silent_target_rate"):
        SamplingConfig(segment=SEG, silent_target_rate=1.5)


def test_dedicated_examples_target_the_stem_and_remix_takes_other_songs(bank):
    data = TrainingExamples(bank, SamplingConfig(segment=SEG, target="bass", remix_prob=1.0, gain_range=(1, 1),
                                                 channel_swap_prob=0.0, scale_prob=0.0), seed=2)
    ex = data[0]
    torch.testing.assert_close(ex["target"], ex["sources"][2], atol=0, rtol=0)
    assert ex["z"].tolist() == [0, 0, 1, 0]


def test_gain_and_channel_swap_change_sources(hq_folder):
    tracks = list_tracks(hq_folder, "train")[:1]  # track a: tones with louder right channel
    plain = TrainingExamples(StemBank(tracks), SamplingConfig(segment=SEG, gain_range=(1, 1), channel_swap_prob=0,
                                                              silent_target_rate=0.0), seed=0)
    swapped = TrainingExamples(StemBank(tracks), SamplingConfig(segment=SEG, gain_range=(1, 1),
                                                                channel_swap_prob=1, silent_target_rate=0.0), seed=0)
    a, b = plain[0]["sources"], swapped[0]["sources"]
    assert torch.all(a[:, 1].abs().amax(-1) > a[:, 0].abs().amax(-1))
    torch.testing.assert_close(b, a.flip(1), atol=0, rtol=0)
    gains = TrainingExamples(StemBank(tracks), SamplingConfig(segment=SEG, gain_range=(0.25, 1.25),
                                                              silent_target_rate=0.0), seed=0)
    ratio = gains[0]["sources"].abs().amax((1, 2)) / a.abs().amax((1, 2))
    assert torch.all((ratio > 0.24) & (ratio < 1.26)) and ratio.std() > 0.01


def test_stem_the_data_lacks_and_bad_config_are_clear_errors(hq_folder, tmp_path):
    tracks = [t for t in list_tracks(hq_folder, "train") if t.name == "b"]  # b has no bass
    with pytest.raises(DatasetError, match="no training track holds the stem 'bass'"):
        TrainingExamples(StemBank(tracks), SamplingConfig(segment=SEG, target="bass"))
    only_bass = SamplingConfig(segment=SEG, stem_weights={"vocals": 0, "drums": 0, "other": 0})
    with pytest.warns(UserWarning, match="'bass'"), pytest.raises(DatasetError, match="weighs 0 in the stem weights"):
        TrainingExamples(StemBank(tracks), only_bass)
    with pytest.raises(UnknownStemError, match="piano"):
        SamplingConfig(segment=SEG, target="piano")
    with pytest.raises(ValueError, match="segment"):
        SamplingConfig(segment=0)


def test_streaming_bank_reads_the_same_excerpts_as_preloaded(hq_folder):
    tracks = list_tracks(hq_folder, "train")
    mem, disk = StemBank(tracks), StemBank(tracks, preload_bytes=0)
    assert mem.audio is not None and disk.audio is None
    np.testing.assert_array_equal(mem.excerpt(1, 0, 100, 500), disk.excerpt(1, 0, 100, 500))
    np.testing.assert_array_equal(mem.has_stem, disk.has_stem)
    assert not mem.has_stem[1, STEMS.index("bass")]


def test_validation_excerpts_are_fixed_middle_parts(tiny_synthetic):
    tracks = list_tracks(tiny_synthetic, "valid")
    items = validation_excerpts(tracks, seconds=1.0)
    assert [name for name, _ in items] == [t.name for t in tracks]
    whole = tracks[0].load()
    start = (whole.shape[-1] - 44100) // 2
    np.testing.assert_array_equal(items[0][1], whole[:, :, start:start + 44100])


def test_step_sampler_is_a_pure_function_of_step_and_rank():
    whole = list(StepSampler(per_step=3, start=0, stop=5))
    assert whole == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11], [12, 13, 14]]
    assert list(StepSampler(per_step=3, start=2, stop=5)) == whole[2:]  # a resumed run draws the same examples
    # two ranks: disjoint, and together the examples one process with twice the batch would take
    ranks = [list(StepSampler(per_step=3, start=0, stop=4, rank=r, world=2)) for r in range(2)]
    for step in range(4):
        assert ranks[0][step] + ranks[1][step] == list(range(6 * step, 6 * step + 6))
    assert len(StepSampler(per_step=3, start=4, stop=4)) == 0 and not list(StepSampler(per_step=3, start=4, stop=4))
    with pytest.raises(ValueError, match="rank"):
        StepSampler(per_step=3, start=0, stop=4, rank=2, world=2)


def test_loader_workers_give_the_examples_of_the_main_thread(bank):
    data = TrainingExamples(bank, SamplingConfig(segment=SEG), seed=7)
    sampler = StepSampler(per_step=4, start=1, stop=4)
    batches = {workers: list(DataLoader(data, batch_sampler=sampler, collate_fn=collate, num_workers=workers))
               for workers in (0, 2)}
    assert len(batches[0]) == 3 and set(batches[0][0]) == {"mixture", "target", "z"}
    for a, b in zip(batches[0], batches[2]):
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)
    torch.testing.assert_close(batches[0][0]["mixture"], data.batch(range(4, 8))["mixture"], atol=0, rtol=0)


def test_a_stem_no_training_track_holds_is_named_and_never_asked_for(hq_folder):
    tracks = [t for t in list_tracks(hq_folder, "train") if t.name == "b"]  # b has no bass
    with pytest.warns(UserWarning, match="no training track holds the stem.*'bass'.*never asked for"):
        data = TrainingExamples(StemBank(tracks), SamplingConfig(segment=SEG, subset_prob=0.5, zero_prob=0.0))
    z = np.stack([data[i]["z"].numpy() for i in range(200)])
    assert (z[:, STEMS.index("bass")] == 0).all()
    assert (z[:, [STEMS.index(s) for s in STEMS if s != "bass"]] > 0).any(0).all()  # the others are asked for
    assert (((z > 0).sum(1)) == 3).any()  # subsets still reach every stem the data holds


def test_silence_is_the_project_threshold(bank):
    assert SamplingConfig(segment=SEG).silence_db == SILENCE_DB
    # a target quieter than the threshold is redrawn: with every other excerpt silent too, it stays silent
    quiet = SamplingConfig(segment=SEG, target="vocals", silent_target_rate=0.0, silence_db=100.0, max_redraws=3,
                           scale_prob=0.0)
    loud = SamplingConfig(segment=SEG, target="vocals", silent_target_rate=0.0, silence_db=SILENCE_DB, max_redraws=3,
                          scale_prob=0.0)
    redrawn = [TrainingExamples(bank, cfg, seed=1)[0]["target"] for cfg in (quiet, loud)]
    assert not torch.equal(redrawn[0], redrawn[1])  # +100 dB calls every excerpt silent and redraws
