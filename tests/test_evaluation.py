"""conditioned_sep.evaluation: models over a test set, reference rows, resume, museval-readable results."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from conditioned_sep import cli, evaluation
from conditioned_sep.audio import read_audio, write_audio
from conditioned_sep.data.sources import DatasetSpec
from conditioned_sep.evaluation import EvalConfig, EvaluationError, ModelSpec
from conditioned_sep.runs import discover_models
from conditioned_sep.stems import STEMS, UnknownStemError, parse_queries

RATE = 44100


class Killed(Exception):
    """Stands for a kill or Ctrl-C in the middle of a run."""


def make_stem_folder(root: Path, *, tracks: int = 2, seconds: float = 3.0, rate: int = RATE, channels: int = 1
                     ) -> Path:
    """``root/test/<track>/<stem>.wav``: four distinct, deterministic stems per track (mono by default: BSS Eval's
    cost grows with the cube of sources x channels, and the evaluation code does not care)."""
    t = np.arange(int(seconds * rate)) / rate
    for k in range(tracks):
        rng = np.random.default_rng(k)
        f0 = 220.0 * (1 + 0.12 * k)
        phase = 2 * np.pi * f0 * t + 0.3 * np.sin(2 * np.pi * 5 * t)
        vocals = 0.25 * sum(np.sin(h * phase) / h for h in range(1, 6))
        hits = (np.mod(t, 0.25) < 0.06) * np.exp(-np.mod(t, 0.25) * 40)
        drums = 0.5 * hits * rng.standard_normal(t.size)
        bass = 0.35 * np.sin(2 * np.pi * 55.0 * (1 + k) * t)
        other = 0.12 * sum(2 * (np.mod(f * t, 1.0) - 0.5) for f in (330.0, 415.3, 493.9))
        pans = {"vocals": 0.5, "drums": 0.35, "bass": 0.5, "other": 0.7}
        folder = root / "test" / f"track {k}"
        folder.mkdir(parents=True)
        for name, sig in zip(STEMS, (vocals, drums, bass, other)):
            stereo = np.stack([sig * (1 - pans[name]), sig * pans[name]]).astype(np.float32)
            write_audio(folder / f"{name}.wav", stereo[:channels], rate, subtype="FLOAT")
    return root


@pytest.fixture(scope="module")
def stem_folder(tmp_path_factory) -> Path:
    return make_stem_folder(tmp_path_factory.mktemp("stems"))


def _config(out: Path, run_folder: Path, stem_folder: Path, **kwargs) -> EvalConfig:
    return EvalConfig(models=discover_models([str(run_folder)]), out=out,
                      dataset=DatasetSpec("folder", stem_folder), progress=False, **kwargs)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, run_folder, stem_folder):
    out = tmp_path_factory.mktemp("results")
    return out, evaluation.evaluate(_config(out, run_folder, stem_folder))


# ---- model discovery and conditions -------------------------------------------------------------------------


def test_sums_and_scoring_sets():
    acc, rhythm = evaluation.parse_sums("accompaniment,drums+bass")
    assert evaluation.scoring_set(acc) == ("accompaniment", "vocals")
    assert evaluation.scoring_set(rhythm) == ("drums+bass", "vocals", "other")
    assert evaluation.parse_sums("none") == []
    with pytest.raises(EvaluationError, match="sum of all stems"):
        evaluation.parse_sums("all")
    with pytest.raises(EvaluationError, match="2 to 3 stems"):
        evaluation.parse_sums("vocals")
    with pytest.raises(UnknownStemError, match="unknown stem 'guitar'"):
        evaluation.parse_sums("guitar+bass")


# ---- a full run ---------------------------------------------------------------------------------------------


def test_rows_conditions_and_reference_order(full_run):
    out, result = full_run
    medians = {(r.model, r.condition, r.metric): r.median for r in result.table}
    models = list(dict.fromkeys(r.model for r in result.table))
    assert models == ["conditioned", "dedicated", "oracle-irm2", "mixture"]
    conditions = ["vocals", "drums", "bass", "other", "accompaniment", "drums+bass"]
    for model in models:
        assert [c for c in conditions if (model, c, "SDR") in medians] == conditions
    for condition in conditions:
        oracle, mixture = medians[("oracle-irm2", condition, "SDR")], medians[("mixture", condition, "SDR")]
        # the oracle mask is the upper bound of any (untrained tiny) masking model; the mixture is the floor
        for model in ("conditioned", "dedicated"):
            assert oracle > medians[(model, condition, "SDR")] + 1.0, (model, condition)
        assert oracle > mixture + 3.0
    assert np.mean([medians[("mixture", c, "SDR")] for c in conditions]) < min(
        np.mean([medians[(m, c, "SDR")] for c in conditions]) for m in ("conditioned", "dedicated"))
    diffs = {(c.condition, c.metric) for c in result.comparisons}
    assert {(c, "SDR") for c in conditions} <= diffs
    costs = {c.model: c for c in result.costs}
    assert costs["conditioned"].num_parameters * 2 < costs["dedicated"].num_parameters
    assert costs["conditioned"].seconds > 0 and costs["conditioned"].audio_seconds == pytest.approx(6.0)
    for name in ("results.md", "results.csv", "frames.csv", "sdr.png", "sir.png", "sar.png", "isr.png"):
        assert (out / name).is_file(), name
    assert (out / "results.md").read_text() == result.markdown
    assert "conditioned minus dedicated" in result.markdown


def test_sum_condition_is_scored_in_its_own_set(full_run, stem_folder):
    from conditioned_sep.metrics import bss_eval

    _, result = full_run
    refs = {s: read_audio(stem_folder / "test" / "track 1" / f"{s}.wav")[0] for s in STEMS}
    mix = sum(refs.values())
    accompaniment = refs["drums"] + refs["bass"] + refs["other"]
    expected = bss_eval(np.stack([accompaniment, refs["vocals"]]), np.stack([mix, mix]), sample_rate=RATE)
    got = next(s for s in result.scores if (s.model, s.track, s.condition) == ("mixture", "track 1", "accompaniment"))
    assert got.sources == ("accompaniment", "vocals")
    np.testing.assert_allclose(got.frames["SIR"], expected.sir[0], atol=1e-9)
    np.testing.assert_allclose(got.frames["SDR"], expected.sdr[0], atol=1e-9)
    # the condition figure and the per-frame sensitivity travel with the scores
    assert got.gram_rcond == pytest.approx(expected.gram_rcond, rel=1e-6)
    np.testing.assert_array_equal(got.unstable, expected.unstable[0])


def test_frames_csv_holds_every_frame(full_run):
    out, result = full_run
    with open(out / "frames.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(s.frames["SDR"]) for s in result.scores)
    assert {r["model"] for r in rows} == {"conditioned", "dedicated", "oracle-irm2", "mixture"}
    assert sum(int(r["unstable"]) for r in rows) == sum(int(s.unstable.sum()) for s in result.scores)
    with open(out / "condition.csv", newline="") as f:
        condition = list(csv.DictReader(f))
    assert len(condition) == len(result.scores)
    # the condition figure depends on the references only: every row of a track and scoring set shares it
    by_problem: dict = {}
    for r in condition:
        by_problem.setdefault((r["track"], r["sources"]), set()).add(r["gram_rcond"])
    assert all(len(v) == 1 for v in by_problem.values())
    assert all(0 < float(r["gram_rcond"]) <= 1 for r in condition)


def test_museval_reads_the_json_back(full_run):
    import museval.aggregate as museval_aggregate
    out, result = full_run
    store = museval_aggregate.MethodStore()
    for model in ("conditioned", "oracle-irm2"):
        store.add_eval_dir(out / "museval" / model)
    theirs = store.agg_frames_tracks_scores()
    ours = {(r.model, r.condition, r.metric): r.median for r in result.table}
    assert len(theirs) == 2 * 6 * 4
    for (method, target, metric), value in theirs.items():
        mine = ours[(method, target, metric)]
        assert (math.isnan(mine) and math.isnan(value)) or mine == pytest.approx(float(value), abs=1e-4)


def _table_key(result, models) -> list[tuple]:
    return [(r.model, r.condition, r.metric, round(r.median, 9), round(r.mean, 9)) for r in result.table
            if r.model in models and r.condition in STEMS]


def test_resumed_run_gives_the_same_table(tmp_path, full_run, run_folder, stem_folder, monkeypatch):
    _, uninterrupted = full_run
    scored: list[str] = []
    original = evaluation._evaluate_track

    def interrupted(track, *args, **kwargs):
        if scored:
            raise Killed  # the run dies during the second track
        scored.append(track.name)
        return original(track, *args, **kwargs)

    monkeypatch.setattr(evaluation, "_evaluate_track", interrupted)
    # the single stems of both models: rows are scored independently, so the full run's rows are the reference
    config = _config(tmp_path, run_folder, stem_folder, sums=(), oracle="none", mixture=False)
    with pytest.raises(Killed):
        evaluation.evaluate(config)
    assert scored == ["track 0"]

    def counting(track, *args, **kwargs):
        scored.append(track.name)
        return original(track, *args, **kwargs)

    monkeypatch.setattr(evaluation, "_evaluate_track", counting)
    resumed = evaluation.evaluate(config)
    assert scored == ["track 0", "track 1"]  # the first track was not scored again
    models = ("conditioned", "dedicated")
    assert _table_key(resumed, models) == _table_key(uninterrupted, models)
    assert [(c.condition, c.metric, round(c.median_diff, 9), c.p_value) for c in resumed.comparisons] == [
        (c.condition, c.metric, round(c.median_diff, 9), c.p_value) for c in uninterrupted.comparisons
        if c.condition in STEMS]
    monkeypatch.setattr(evaluation, "_evaluate_track", lambda *a, **k: pytest.fail("nothing left to score"))
    assert _table_key(evaluation.evaluate(config), models) == _table_key(uninterrupted, models)


def test_estimates_in_musdb_layout_and_parallel_jobs(tmp_path, run_folder, stem_folder, full_run):
    _, serial = full_run
    config = _config(tmp_path / "out", run_folder, stem_folder, estimates=tmp_path / "est", jobs=2,
                     sums=("drums+bass",), oracle="none", mixture=False)
    config.models = [m for m in config.models if m.name == "conditioned"]
    result = evaluation.evaluate(config)
    folder = tmp_path / "est" / "conditioned" / "test" / "track 0"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{c}.wav" for c in (*STEMS, "drums+bass"))
    audio, rate = read_audio(folder / "vocals.wav")
    assert rate == RATE and audio.shape == (1, 3 * RATE)
    # two worker processes give the scores of the serial run
    want = {(r.model, r.condition, r.metric): r.median for r in serial.table}
    assert len(result.table) == 5 * 5
    for r in result.table:
        assert r.median == pytest.approx(want[(r.model, r.condition, r.metric)], abs=1e-6)


def test_main_prints_the_table_and_reports_errors(tmp_path, run_folder, stem_folder, capsys):
    # a stem folder is also a MUSDB18-HQ tree: the --musdb path reads it through data.musdb
    code = cli.run("evaluate", [f"{run_folder / 'conditioned'}", "--musdb", str(stem_folder), "--out", str(tmp_path),
                            "--sums", "none", "--oracle", "none", "--tracks", "1", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "## SDR" in printed and "| conditioned |" in printed and "| mixture |" in printed
    assert "# 1 track of the test split of musdb:" in printed
    assert cli.run("evaluate", [str(tmp_path / "missing.ckpt"), "--folder", str(stem_folder)]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli.run("evaluate", [str(run_folder), "--folder", str(tmp_path / "empty")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_oracle_masks_share_out_the_mixture(stem_folder):
    from conditioned_sep.data.folder import list_tracks

    track = list_tracks(stem_folder, "test")[0]
    refs = track.load()
    mixture = refs.sum(0)
    queries = [*parse_queries(list(STEMS)), *evaluation.parse_sums("drums+bass")]
    for kind in ("irm1", "irm2"):
        oracle = evaluation._OracleRow(kind, n_fft=512, hop_length=128)
        est, seconds = oracle.estimate(mixture, refs, queries, RATE)
        # the masks sum to one in every bin, so the estimates sum to the mixture (up to STFT round-off)
        np.testing.assert_allclose(sum(est[s] for s in STEMS), mixture, atol=1e-5)
        np.testing.assert_allclose(est["drums+bass"], est["drums"] + est["bass"], atol=1e-5)
        assert est["vocals"].shape == mixture.shape and seconds == 0.0


@pytest.fixture
def scored(monkeypatch) -> list[str]:
    """Records ``"<track>:<row>"`` for every (track, row) that evaluation scores (not served from the cache)."""
    calls: list[str] = []
    original = evaluation._evaluate_track

    def counting(track, rows, todo, *args, **kwargs):
        calls.extend(f"{track.name}:{r}" for r in todo)
        return original(track, rows, todo, *args, **kwargs)

    monkeypatch.setattr(evaluation, "_evaluate_track", counting)
    return calls


def test_changed_settings_score_again_and_restart(tmp_path, stem_folder, scored):
    calls = scored
    # the mixture row alone: one cheap BSS Eval per track
    config = EvalConfig(models=[], out=tmp_path, dataset=DatasetSpec("folder", stem_folder), tracks=1,
                        sums=(), oracle="none", progress=False)
    evaluation.evaluate(config)
    evaluation.evaluate(config)
    assert calls == ["track 0:mixture"]
    config.sums = ("accompaniment",)  # other conditions: the cached track does not answer them
    result = evaluation.evaluate(config)
    assert calls == ["track 0:mixture"] * 2
    assert {r.condition for r in result.table} == {*STEMS, "accompaniment"}
    config.restart = True
    evaluation.evaluate(config)
    assert calls == ["track 0:mixture"] * 3


def test_chunked_oracle_equals_the_whole_track_oracle(stem_folder):
    from conditioned_sep.data.folder import list_tracks

    refs = list_tracks(stem_folder, "test")[1].load()  # (4, 1, 3 s)
    mixture = refs.sum(0)
    queries = [*parse_queries(list(STEMS)), *evaluation.parse_sums("accompaniment")]
    n = refs.shape[-1]
    whole, _ = evaluation._OracleRow("irm2", n_fft=512, hop_length=128, chunk=2 * n).estimate(
        mixture, refs, queries, RATE)
    # stretches of 2944 samples (not a divisor of the length; the last one is short) with 512 samples of context
    chunked = evaluation._OracleRow("irm2", n_fft=512, hop_length=128, chunk=3000)
    assert chunked.chunk == 2944
    got, _ = chunked.estimate(mixture, refs, queries, RATE)
    for q in queries:
        assert got[q.name].shape == whole[q.name].shape == mixture.shape and got[q.name].dtype == np.float32
        # the same STFT frames: equal up to float32 FFT round-off (signals peak near 1)
        np.testing.assert_allclose(got[q.name], whole[q.name], atol=2e-6, err_msg=q.name)
    with pytest.raises(EvaluationError, match="at least one hop"):
        evaluation._OracleRow("irm2", n_fft=512, hop_length=128, chunk=100)


def test_resumed_run_writes_the_estimates_of_cached_tracks(tmp_path, run_folder, stem_folder, scored):
    calls = scored
    config = EvalConfig(models=discover_models([str(run_folder / "conditioned")]), out=tmp_path / "out",
                        dataset=DatasetSpec("folder", stem_folder), tracks=1, sums=(), oracle="none",
                        progress=False)
    first = evaluation.evaluate(config)  # scored and cached without --estimates
    assert calls == ["track 0:conditioned", "track 0:mixture"]
    config.estimates = tmp_path / "est"
    second = evaluation.evaluate(config)  # the cached scores have no estimate files: separate the track again
    assert calls[2:] == ["track 0:conditioned"]
    folder = tmp_path / "est" / "conditioned" / "test" / "track 0"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}.wav" for s in STEMS)
    assert [(r.model, r.condition, r.metric, r.median) for r in second.table] == [
        (r.model, r.condition, r.metric, r.median) for r in first.table]
    evaluation.evaluate(config)  # everything there: nothing to do
    assert len(calls) == 3
    (folder / "bass.wav").unlink()  # a lost file: that track is separated again
    evaluation.evaluate(config)
    assert calls[3:] == ["track 0:conditioned"] and (folder / "bass.wav").is_file()


# ---- a finer vocabulary and several seeds ---------------------------------------------------------------------


SIX = ("vocals", "drums", "bass", "piano", "guitar", "other")


@pytest.fixture(scope="module")
def six_stem_seeds(tmp_path_factory) -> Path:
    """Two seeds of a 6-stem run (tiny untrained U-Nets): seed-<k>/conditioned and seed-<k>/dedicated-<stem>."""
    import torch

    from conditioned_sep.checkpoint import save_checkpoint
    from conditioned_sep.models import ConditionedUNet

    root = tmp_path_factory.mktemp("six")
    for seed in (0, 1):
        torch.manual_seed(seed)
        models = {"conditioned": ConditionedUNet.from_preset("tiny", stems=SIX)}
        for stem in SIX:
            models[f"dedicated-{stem}"] = ConditionedUNet.from_preset("tiny", stems=SIX, conditioned=False,
                                                                       target=stem)
        for name, model in models.items():
            (root / f"seed-{seed}" / name).mkdir(parents=True)
            save_checkpoint(root / f"seed-{seed}" / name / "best.ckpt", model.eval())
    return root


def test_six_stem_vocabulary_and_seeds(tmp_path, six_stem_seeds, run_folder):
    from layouts import write_rendered_like  # a helper, not a fixture: tests/ is on sys.path

    from conditioned_sep.metrics import bss_eval

    # "a" is held out as validation (no valid/ folder): "b" (piano and guitar) is the split's track
    data = write_rendered_like(tmp_path / "data", tracks={"a": 3, "b": 2}, seconds=2.5)
    config = EvalConfig(models=discover_models([str(six_stem_seeds)]), out=tmp_path / "out",
                        dataset=DatasetSpec("folder", data), split="train", progress=False)
    result = evaluation.evaluate(config)
    want = ["vocals", "drums", "bass", "piano", "guitar", "other", "accompaniment", "drums+bass"]
    for model in ("conditioned", "dedicated", "oracle-irm2", "mixture"):
        assert [c for c in want if any(s.model == model and s.condition == c for s in result.scores)] == want
    # "other" is MUSDB's other (remainder + piano + guitar), scored beside vocals, drums and bass
    refs = {s: read_audio(data / "train" / "b" / f"{s}.wav")[0] for s in ("vocals", "drums", "bass", "other")}
    mix = sum(refs.values())
    expected = bss_eval(np.stack([refs["other"], refs["vocals"], refs["drums"], refs["bass"]]),
                        np.stack([mix] * 4), sample_rate=8000)
    got = next(s for s in result.scores if (s.model, s.track, s.condition) == ("mixture", "b", "other"))
    assert got.sources == ("other", "vocals", "drums", "bass")
    np.testing.assert_allclose(got.frames["SDR"], expected.sdr[0], atol=1e-6)
    piano = next(s for s in result.scores if (s.model, s.track, s.condition) == ("mixture", "b", "piano"))
    assert piano.sources == SIX[3:4] + ("vocals", "drums", "bass", "guitar", "other")
    # two seeds per model: one row each in the tables, a track's score the mean of its seeds
    rows = {(r.model, r.condition, r.metric): r for r in result.table}
    assert rows[("conditioned", "piano", "SDR")].seeds == 2 and rows[("mixture", "piano", "SDR")].seeds == 1
    per_seed = [s.track_score("SDR") for s in result.scores
                if (s.model, s.track, s.condition) == ("conditioned", "b", "piano")]
    assert sorted({s.seed for s in result.scores if s.model == "conditioned"}) == [0, 1] and len(per_seed) == 2
    table = evaluation.report.track_table(result.scores, "SDR")
    assert table[("conditioned", "piano")]["b"] == pytest.approx(np.mean(per_seed))
    c = next(c for c in result.comparisons if (c.condition, c.metric) == ("piano", "SDR"))
    assert c.seeds == (2, 2) and c.verdict in report_verdicts()
    assert "conditioned (2 seeds)" in result.markdown
    # "avg" is MUSDB18's four; the parts of other follow it, then the sums
    assert "| model | vocals | drums | bass | other | avg | piano | guitar | accompaniment | drums+bass |" in \
        result.markdown
    # a 4-stem model cannot be scored beside them: "other" would mean something else
    mixed = discover_models([str(six_stem_seeds), f"four={run_folder / 'conditioned'}"])
    with pytest.raises(EvaluationError, match="vocabulary"):
        evaluation.evaluate(EvalConfig(models=mixed, out=tmp_path / "out2", dataset=DatasetSpec("folder", data),
                                       split="train", progress=False))


def report_verdicts() -> tuple[str, ...]:
    return ("better", "level", "worse", "n/a")  # report.verdict's answers


def test_user_errors_name_the_option_to_fix(tmp_path, stem_folder, capsys):
    import torch

    from conditioned_sep.checkpoint import save_checkpoint
    from conditioned_sep.models import ConditionedUNet

    torch.manual_seed(0)
    only_other = save_checkpoint(tmp_path / "other.ckpt", ConditionedUNet.from_preset("tiny", stems=("other",)).eval())
    args = ["--folder", str(stem_folder), "--oracle", "none", "--no-progress"]
    assert cli.run("evaluate", [str(only_other), *args, "--out", str(tmp_path / "a")]) == 2
    assert "cannot be formed over the vocabulary other; pass --sums none" in capsys.readouterr().err
    assert [q.name for q in evaluation.conditions(("other",), ())] == ["other"]  # what --sums none evaluates
    for tracks in ("0", "-1"):
        assert cli.run("evaluate", [str(only_other), *args, "--tracks", tracks, "--out", str(tmp_path / "b")]) == 2
        assert f"--tracks must be >= 1 (the first N tracks of the split), got {tracks}" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli.run("evaluate", [str(only_other), *args, "--out", str(blocker / "results")]) == 2
    assert f"cannot write to the folder {blocker / 'results'}" in capsys.readouterr().err
    assert cli.run("evaluate", [str(only_other), *args, "--estimates", str(blocker / "est")]) == 2
    assert "pass --estimates DIR" in capsys.readouterr().err


def test_a_full_disk_while_writing_the_results_says_what_is_free(tmp_path, stem_folder, monkeypatch):
    import errno

    from conditioned_sep import report

    def disk_full(path, *args, **kwargs):  # the plots come last, when the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(report, "plot_metric", disk_full)
    config = EvalConfig(models=[], out=tmp_path / "results", dataset=DatasetSpec("folder", stem_folder), tracks=1,
                        sums=(), oracle="none", progress=False)
    with pytest.raises(EvaluationError, match=r"cannot write .*sdr.png \(No space left on device\): \d+ MB free on "
                                              r"the disk of .*results; free space or pass another --out"):
        evaluation.evaluate(config)
    monkeypatch.undo()
    assert evaluation.evaluate(config).files["sdr.png"].is_file()  # the same command continues
