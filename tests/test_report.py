"""Tables and plots of conditioned_sep.report (the museval JSON part has its own tests above, if any)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from conditioned_sep import report
from conditioned_sep.report import ConditionScores, ModelCost


def _scores(model: str, track: str, condition: str, sdr, new_sdr: float = 0.0, sources=None) -> ConditionScores:
    sdr = np.asarray(sdr, dtype=np.float64)
    frames = {"SDR": sdr, "SIR": sdr + 10.0, "SAR": sdr + 1.0, "ISR": sdr + 5.0}
    return ConditionScores(model=model, track=track, condition=condition,
                           sources=tuple(sources or (condition, "x")), frames=frames, new_sdr=new_sdr)


@pytest.fixture
def scores() -> list[ConditionScores]:
    rng = np.random.default_rng(0)
    out = []
    for t in range(6):
        for cond in ("vocals", "drums", "bass", "other", "drums+bass"):
            a = rng.normal(5.0, 2.0, size=7)
            a[t % 7] = np.nan  # one NaN frame per track, as BSS Eval gives for silent frames
            out.append(_scores("conditioned", f"track{t}", cond, a, new_sdr=float(np.nanmean(a))))
            out.append(_scores("dedicated", f"track{t}", cond, a - 0.5 - 0.1 * t, new_sdr=float(np.nanmean(a)) - 1))
    return out


def test_track_score_is_nanmedian_and_all_nan_is_nan():
    s = _scores("m", "t", "vocals", [1.0, np.nan, 3.0, 10.0])
    assert s.track_score("SDR") == pytest.approx(3.0)
    assert s.track_score("SIR") == pytest.approx(13.0)
    assert s.track_score(report.NEW_SDR) == 0.0
    assert math.isnan(_scores("m", "t", "vocals", [np.nan, np.nan]).track_score("SDR"))


def test_aggregate_median_of_medians_and_mean(scores):
    rows = {(r.model, r.condition, r.metric): r for r in report.summarize(scores)}
    per_track = [np.nanmedian(s.frames["SDR"]) for s in scores if s.model == "dedicated" and s.condition == "bass"]
    r = rows[("dedicated", "bass", "SDR")]
    assert r.median == pytest.approx(np.median(per_track), abs=1e-12)
    assert r.mean == pytest.approx(np.mean(per_track), abs=1e-12)
    assert r.tracks == 6
    new = [s.new_sdr for s in scores if s.model == "conditioned" and s.condition == "drums+bass"]
    assert rows[("conditioned", "drums+bass", report.NEW_SDR)].mean == pytest.approx(np.mean(new))


def test_aggregate_matches_museval_evalstore(scores):
    import museval.aggregate as museval_aggregate
    store = museval_aggregate.EvalStore()
    for t in range(6):
        track = museval_aggregate.TrackStore(track_name=f"track{t}")
        for s in scores:
            if s.model == "conditioned" and s.track == f"track{t}":
                track.add_target(s.condition, {m: list(s.frames[m]) for m in report.METRICS})
        store.add_track(track)
    theirs = store.agg_frames_tracks_scores()
    ours = {(r.condition, r.metric): r.median for r in report.summarize(scores) if r.model == "conditioned"}
    for (target, metric), value in theirs.items():
        # museval quantises frames to 1e-5 dB in its JSON
        assert ours[(target, metric)] == pytest.approx(float(value), abs=1e-4)


def test_compare_paired_difference_and_wilcoxon(scores):
    rows = report.compare(scores, conditioned="conditioned", dedicated="dedicated")
    by = {(r.condition, r.metric): r for r in rows}
    assert [c for c, m in by if m == "SDR"] == ["vocals", "drums", "bass", "other", "drums+bass"]
    r = by[("vocals", "SDR")]
    diffs = np.array([0.5 + 0.1 * t for t in range(6)])  # the frame medians shift by the same offset
    assert r.median_diff == pytest.approx(np.median(diffs))
    assert r.mean_diff == pytest.approx(np.mean(diffs))
    assert r.p_value == pytest.approx(wilcoxon(diffs).pvalue)
    assert (r.wins, r.tracks) == (6, 6)
    assert by[("vocals", report.NEW_SDR)].median_diff == pytest.approx(1.0)


def test_wilcoxon_edge_cases():
    assert report.wilcoxon_p([0.0, 0.0, 0.0]) == 1.0
    assert math.isnan(report.wilcoxon_p([np.nan]))
    assert report.wilcoxon_p([1.0, 2.0, np.nan, 3.0]) == pytest.approx(wilcoxon([1.0, 2.0, 3.0]).pvalue)


def test_markdown_tables_show_medians_means_differences_and_costs(scores):
    rows = report.summarize(scores)
    comparisons = report.compare(scores, conditioned="conditioned", dedicated="dedicated")
    costs = [ModelCost("conditioned", "conditioned", 1234567, 2.0, 60.0, 6),
             ModelCost("dedicated", "dedicated", 4000000, 6.0, 60.0, 6)]
    text = report.markdown_tables(rows, comparisons=comparisons, costs=costs, title="test")
    cell = {(r.model, r.condition, r.metric): r for r in rows}
    r = cell[("conditioned", "vocals", "SDR")]
    assert f"| conditioned | {r.median:.2f} ({r.mean:.2f}) [{r.ci_low:.2f}, {r.ci_high:.2f}] |" in text
    avg = np.mean([cell[("conditioned", s, "SDR")].median for s in ("vocals", "drums", "bass", "other")])
    assert f"{avg:.2f} (" in text
    for header in ("## SDR", "## SIR", "## SAR", "## ISR", "## new SDR", "conditioned minus dedicated", "## Cost"):
        assert header in text
    c = {(x.condition, x.metric): x for x in comparisons}[("bass", "SDR")]
    assert f"{c.median_diff:+.2f} [{c.ci_low:+.2f}, {c.ci_high:+.2f}] {c.verdict} (p={c.p_value:.3f})" in text
    assert c.verdict == "better"  # every track is 0.5 to 1.0 dB better
    assert "| conditioned | conditioned | 1,234,567 | 2.0 | 2.00 | 6 |" in text  # 2 s for 60 s: 2 s per minute


def test_frames_and_results_csv(tmp_path, scores):
    path = report.write_frames_csv(tmp_path / "frames.csv", scores)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(s.frames["SDR"]) for s in scores)
    first = scores[0]
    got = [float(r["SDR"]) for r in rows if (r["model"], r["track"], r["condition"]) ==
           (first.model, first.track, first.condition)]
    np.testing.assert_allclose(got, first.frames["SDR"], atol=1e-5)
    assert rows[0]["sources"] == "vocals;x" and rows[1]["time"] == "1"

    table = report.summarize(scores)
    comparisons = report.compare(scores, conditioned="conditioned", dedicated="dedicated")
    path = report.write_results_csv(tmp_path / "results.csv", table, comparisons=comparisons,
                                    costs=[ModelCost("conditioned", "conditioned", 10, 1.0, 2.0, 1)])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    kinds = [r["kind"] for r in rows]
    assert kinds.count("score") == len(table) and kinds.count("difference") == len(comparisons)
    cost = rows[-1]
    assert (cost["kind"], cost["parameters"], float(cost["real_time_factor"])) == ("cost", "10", 0.5)


def test_plots_one_png_per_metric(tmp_path, scores):
    paths = report.plot_metrics(tmp_path, scores)
    assert sorted(p.name for p in paths) == ["isr.png", "new_sdr.png", "sar.png", "sdr.png", "sir.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary file


def test_one_aggregation_inf_frames_count_as_nan_as_in_museval_files():
    from conditioned_sep import metrics

    assert report.METRICS is metrics.METRICS and report.TABLE_METRICS == (*metrics.METRICS, report.NEW_SDR)
    # a perfect frame gives SDR +inf; museval writes it as NaN, so it must not pull the median up
    s = _scores("m", "t0", "vocals", [1.0, np.inf, np.inf, 2.0])
    assert s.track_score("SDR") == pytest.approx(1.5)
    scores = [s, _scores("m", "t1", "vocals", [np.inf, np.inf]), _scores("m", "t2", "vocals", [4.0, 6.0])]
    row = next(r for r in report.summarize(scores) if r.metric == "SDR")
    assert (row.median, row.mean, row.tracks) == (pytest.approx(3.25), pytest.approx(3.25), 2)
    theirs = metrics.aggregate([x.frames["SDR"] for x in scores])
    assert row.median == float(theirs.median) and row.mean == float(theirs.mean)
    assert report.track_table(scores, "SDR")[("m", "vocals")] == {"t0": 1.5, "t1": pytest.approx(np.nan, nan_ok=True),
                                                                  "t2": 5.0}


def test_bootstrap_interval_covers_the_true_median_about_95_percent():
    # tracks drawn from N(2, 1): the population median is 2; a 95% interval should cover it in roughly 95% of
    # data sets (percentile bootstrap of a median with 25 tracks: a little under, hence the band)
    rng = np.random.default_rng(1)
    covered = 0
    for k in range(200):
        sample = rng.normal(2.0, 1.0, size=(25, 1))
        low, high = report.bootstrap_median(sample, resamples=1000, seed=k)
        assert low <= np.median(sample) <= high
        covered += low <= 2.0 <= high
    assert 0.86 <= covered / 200 <= 0.99


def test_bootstrap_seed_variation_widens_the_interval_and_one_unit_has_none():
    rng = np.random.default_rng(2)
    tracks = rng.normal(0.0, 1.0, size=(10, 1))
    steady = np.repeat(tracks, 3, axis=1)  # three seeds that agree
    noisy = tracks + np.array([[-2.0, 0.0, 2.0]])  # three seeds 2 dB apart
    w_steady = np.subtract(*report.bootstrap_median(steady)[::-1])
    w_noisy = np.subtract(*report.bootstrap_median(noisy)[::-1])
    assert w_noisy > w_steady + 0.5
    assert all(math.isnan(v) for v in report.bootstrap_median(np.array([[1.0]])))
    low, high = report.bootstrap_median(np.array([[1.0, 3.0]]))  # one track, two seeds: seeds alone resampled
    assert (low, high) == (pytest.approx(1.0), pytest.approx(3.0))


def test_verdicts():
    assert report.verdict(0.1, 0.5) == "better"
    assert report.verdict(-0.5, -0.1) == "worse"
    assert report.verdict(-0.1, 0.5) == "level"
    assert report.verdict(float("nan"), float("nan")) == "n/a"


def test_seeds_average_per_track_and_compare_pairs_over_tracks():
    scores = []
    for t in range(8):
        for seed in range(3):
            # conditioned: track t scores t + seed offset; dedicated: t + 0.2 (one seed shift cancels in the mean)
            scores.append(_scores("conditioned", f"t{t}", "vocals", [t + seed - 1.0] * 3, new_sdr=0.0))
            scores[-1].seed = seed
            d = _scores("dedicated", f"t{t}", "vocals", [t + 0.2 + (seed - 1.0) * 0.1] * 3)
            d.seed = seed
            scores.append(d)
    rows = {(r.model, r.metric): r for r in report.summarize(scores) if r.condition == "vocals"}
    r = rows[("conditioned", "SDR")]
    assert (r.seeds, r.tracks) == (3, 8)
    assert r.median == pytest.approx(np.median(np.arange(8.0)))  # the mean over seeds of t + seed - 1 is t
    assert r.ci_low < r.median < r.ci_high
    c = next(c for c in report.compare(scores, conditioned="conditioned", dedicated="dedicated")
             if (c.condition, c.metric) == ("vocals", "SDR"))
    assert c.median_diff == pytest.approx(-0.2) and c.seeds == (3, 3)
    # the conditioned seeds spread 2 dB: -0.2 dB is within seed noise
    assert c.ci_low < 0 < c.ci_high and c.verdict == "level"


def test_unstable_frames_are_counted_flagged_and_written(tmp_path):
    s = _scores("conditioned", "t0", "vocals", [1.0, 2.0, 3.0, np.nan])
    s.sensitivity = np.array([0.0, 0.5, np.nan, np.nan])  # frame 1 moves 0.5 dB, frame 2 unknown, frame 3 unscored
    s.gram_rcond = 3e-17
    assert s.unstable.tolist() == [False, True, True, False]
    ok = _scores("conditioned", "t1", "vocals", [1.0, 2.0])
    ok.sensitivity = np.zeros(2)
    rows = report.summarize([s, ok])
    by = {r.metric: r for r in rows}
    assert (by["SIR"].unstable_frames, by["SIR"].frames) == (2, 6)
    assert by["SDR"].unstable_frames == 0  # SDR needs no filters
    text = report.markdown_tables(rows)
    assert "conditioned vocals: 2 of 6 frames" in text and "\u2020" in text
    with open(report.write_frames_csv(tmp_path / "frames.csv", [s, ok]), newline="") as f:
        frames = list(csv.DictReader(f))
    assert [r["unstable"] for r in frames] == ["0", "1", "1", "0", "0", "0"]
    with open(report.write_condition_csv(tmp_path / "condition.csv", [s, ok]), newline="") as f:
        cond = list(csv.DictReader(f))
    assert (cond[0]["gram_rcond"], cond[0]["unstable_frames"], cond[0]["max_sensitivity_db"]) == ("3.000e-17", "2",
                                                                                                   "0.5")
    # round trip through the resume cache keeps seed, sensitivity and condition figure
    back = ConditionScores.from_dict(s.to_dict())
    assert back.unstable.tolist() == s.unstable.tolist() and back.gram_rcond == 3e-17 and back.seed is None


def test_one_outlier_does_not_set_the_plot_axis(tmp_path, scores):
    # an oracle at 138 dB on a track whose stem is silent: the axis spans the bulk, the outlier is marked
    outlier = [*scores, _scores("oracle", "track0", "vocals", [138.0, 138.0])]
    outlier += [_scores("oracle", f"track{t}", "vocals", [9.0 + 0.1 * t] * 2) for t in range(1, 6)]
    fig = report.metric_figure(outlier, "SDR")
    low, high = fig.axes[0].get_ylim()
    bulk = [report.track_table(outlier, "SDR")[key][t] for key in report.track_table(outlier, "SDR")
            for t in report.track_table(outlier, "SDR")[key] if key != ("oracle", "vocals") or t != "track0"]
    assert low <= min(bulk) and max(bulk) <= high < 20.0  # every other value shown, the axis not stretched to 138
    marks = [t.get_text() for t in fig.axes[0].texts]
    assert "1: 138" in marks and any("above the axis" in m for m in marks)
    assert report.bulk_limits([[1.0, 2.0, 3.0, 2.5, 138.0]])[1] < 10.0
    assert report.bulk_limits([[]]) == (-1.0, 1.0) and report.bulk_limits([[5.0]]) == (4.0, 6.0)
    # without an outlier nothing is marked, and the axis still holds every value
    fig = report.metric_figure(scores, "SDR")
    assert not fig.axes[0].texts
    report.plot_metric(tmp_path / "sdr.png", outlier, "SDR")
    assert (tmp_path / "sdr.png").read_bytes()[:4] == b"\x89PNG"
