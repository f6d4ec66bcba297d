"""Tables, statistics and plots of evaluation results, from plain score records (:class:`ConditionScores`), one per
model, track and condition, so that this module knows nothing of models or audio.

Aggregation is :func:`conditioned_sep.metrics.aggregate` (SiSEC: nanmedian over a track's frames, infinite frames
counting as NaN as in museval's files, then the median over tracks as museval's ``EvalStore``, with the mean over
tracks beside it); the MDX "new SDR" is one number per track and condition.

Seeds: a model trained with several seeds gives one :class:`ConditionScores` per seed (``seed``); a track's score
is then the mean over seeds, and every median over tracks carries a bootstrap interval that resamples tracks and,
within them, seeds (:func:`bootstrap_median`); conditioned minus dedicated gets the same interval and a verdict
(better / level / worse). Frames whose SIR/SAR/ISR are not numerically stable to
:data:`~conditioned_sep.metrics.UNSTABLE_DB` are counted per cell and flagged in the tables.

  summarize(scores) -> [AggregateRow]            compare(scores, conditioned=, dedicated=) -> [ComparisonRow]
  markdown_tables(rows, comparisons=, costs=, title=) -> str
  write_frames_csv(path, scores), write_results_csv(path, rows, comparisons=, costs=), write_condition_csv(path, scores)
  plot_metric(path, scores, metric), plot_metrics(out_dir, scores) -> [Path]   (matplotlib, Agg backend; the value
  axis spans the bulk of the data, bulk_limits, and marks what falls outside it)
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from .fileio import atomic_path, atomic_write_text
from .metrics import FRAME_SECONDS, METRICS, UNSTABLE_DB
from .metrics import aggregate as sisec_aggregate
from .stems import FINE_STEMS, STEMS

NEW_SDR = "new SDR"
"""Label of the MDX challenge's whole-track SDR in tables and CSV files."""

TABLE_METRICS: tuple[str, ...] = (*METRICS, NEW_SDR)
FILTER_METRICS: tuple[str, ...] = ("ISR", "SIR", "SAR")
"""The metrics that need BSS Eval's distortion filters, hence the ones a numerically singular problem can move."""
CONFIDENCE = 0.95
"""Coverage of every bootstrap interval."""
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
"""Resamples and generator seed of :func:`bootstrap_median`: fixed, so that a results folder is reproducible."""


@dataclass
class ConditionScores:
    """The scores of one model on one track for one condition (a stem or a sum of stems such as "drums+bass").

    ``frames`` maps each of :data:`METRICS` to a float array ``(frames,)`` in dB (NaN where BSS Eval gives NaN);
    ``sources`` is the set of sources scored jointly, the condition first (e.g. ``("accompaniment", "vocals")``);
    ``new_sdr`` is the MDX whole-track SDR in dB; ``window_seconds``/``hop_seconds`` are BSS Eval's frame window and hop.
    ``seed`` is the training seed of a model trained with several (None: one seed). ``sensitivity`` ``(frames,)`` is
    the largest change (dB) of ISR/SIR/SAR between a plain double-precision solve and the exact filters (NaN:
    unknown), ``gram_rcond`` the reference Gram matrix's condition figure for this scoring set
    (:class:`~conditioned_sep.metrics.BSSEvalResult`); None when not computed (older results).
    """

    model: str
    track: str
    condition: str
    sources: tuple[str, ...]
    frames: dict[str, np.ndarray]
    new_sdr: float
    window_seconds: float = FRAME_SECONDS
    hop_seconds: float = FRAME_SECONDS
    seed: int | None = None
    sensitivity: np.ndarray | None = None
    gram_rcond: float = float("nan")

    @property
    def unstable(self) -> np.ndarray:
        """``(frames,)`` bool: scored frames whose ISR, SIR or SAR are not shown stable to ``UNSTABLE_DB`` (all False
        when the sensitivity was not computed)."""
        n = len(self.frames["SDR"])
        if self.sensitivity is None:
            return np.zeros(n, dtype=bool)
        scored = np.zeros(n, dtype=bool)
        for m in FILTER_METRICS:
            scored |= np.isfinite(np.asarray(self.frames[m], dtype=np.float64))
        return scored & ~(np.asarray(self.sensitivity, dtype=np.float64) <= UNSTABLE_DB)

    def track_score(self, metric: str) -> float:
        """One number for the track: nanmedian over frames, infinite frames counting as NaN (NaN when no frame is
        left), by :func:`conditioned_sep.metrics.aggregate`; ``new SDR`` as is."""
        if metric == NEW_SDR:
            return float(self.new_sdr)
        return float(sisec_aggregate([self.frames[metric]]).per_track[0])

    def to_dict(self) -> dict:
        return {
            "model": self.model, "track": self.track, "condition": self.condition, "sources": list(self.sources),
            "frames": {m: [float(v) for v in np.asarray(self.frames[m])] for m in METRICS},
            "new_sdr": float(self.new_sdr), "window_seconds": self.window_seconds,
            "hop_seconds": self.hop_seconds, "seed": self.seed, "gram_rcond": float(self.gram_rcond),
            "sensitivity": None if self.sensitivity is None else [float(v) for v in np.asarray(self.sensitivity)],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ConditionScores":
        return cls(
            model=data["model"], track=data["track"], condition=data["condition"], sources=tuple(data["sources"]),
            frames={m: np.asarray(data["frames"][m], dtype=np.float64) for m in METRICS},
            new_sdr=float(data["new_sdr"]), window_seconds=float(data["window_seconds"]),
            hop_seconds=float(data["hop_seconds"]), seed=data.get("seed"),
            gram_rcond=float(data.get("gram_rcond", float("nan"))),
            sensitivity=None if data.get("sensitivity") is None else np.asarray(data["sensitivity"], dtype=np.float64),
        )


@dataclass
class ModelCost:
    """What a model costs: parameters and separation time. ``seconds`` separate ``audio_seconds`` of audio
    (the four single stems of every track); ``None`` parameters for the reference rows (oracle, mixture)."""

    model: str
    kind: str  # "conditioned" | "dedicated" | "reference"
    num_parameters: int | None = None
    seconds: float = 0.0
    audio_seconds: float = 0.0
    tracks: int = 0

    @property
    def real_time_factor(self) -> float:
        """Seconds of computation per second of audio (lower is faster); NaN before any track."""
        return self.seconds / self.audio_seconds if self.audio_seconds > 0 else float("nan")


@dataclass
class AggregateRow:
    """One cell group of the per-condition table: ``median`` over tracks of the per-track scores (a track's score:
    its frame median, averaged over seeds), ``mean`` over tracks beside it, over ``tracks`` tracks with a number
    (all-NaN tracks are left out) and ``seeds`` seeds. ``ci_low``/``ci_high``: the :data:`CONFIDENCE` bootstrap
    interval of the median (NaN with a single track and seed). ``unstable_frames`` of ``frames`` scored frames are
    not numerically stable to ``UNSTABLE_DB`` (always 0 for SDR and new SDR, which need no filters)."""

    model: str
    condition: str
    metric: str
    median: float
    mean: float
    tracks: int
    seeds: int = 1
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    frames: int = 0
    unstable_frames: int = 0


@dataclass
class ComparisonRow:
    """Conditioned minus dedicated on one condition and metric, paired over tracks.

    ``median_diff``/``mean_diff`` are the median and mean over tracks of the per-track difference (each side's
    track score averaged over its seeds); ``ci_low``/``ci_high`` the bootstrap interval of ``median_diff``
    (tracks resampled, and each side's seeds within them); ``verdict`` is "better" (interval above 0), "worse"
    (below 0), "level" (spans 0) or "n/a" (no interval); ``p_value`` is the two-sided Wilcoxon signed-rank test of
    the per-track differences (1.0 when all are zero, NaN with no pair); ``wins`` counts the tracks where the
    conditioned model scores higher.
    """

    conditioned: str
    dedicated: str
    condition: str
    metric: str
    median_diff: float
    mean_diff: float
    p_value: float
    tracks: int
    wins: int
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    verdict: str = "n/a"
    seeds: tuple[int, int] = (1, 1)


def bootstrap_median(*samples: np.ndarray, signs: Sequence[float] | None = None,
                     resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE,
                     seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of ``median over tracks of sum_k signs[k] * mean over seeds of samples[k]``.

    Each sample is ``(tracks, seeds_k)`` in dB over the same tracks (NaN: no score). One resample draws the tracks
    with replacement and, independently for each sample, its seeds with replacement (a two-level bootstrap:
    track-to-track and seed-to-seed variation both widen the interval). ``signs`` default: all +1 (one sample:
    the interval of a median; two with ``(1, -1)``: of a paired difference). Returns ``(low, high)``; NaN when
    there is nothing to resample (one track and one seed per sample, or no track with a number).
    """
    signs = [1.0] * len(samples) if signs is None else list(signs)
    arrays = [np.asarray(a, dtype=np.float64) for a in samples]
    n_tracks = arrays[0].shape[0]
    if n_tracks == 0 or (n_tracks < 2 and all(a.shape[1] < 2 for a in arrays)):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    tracks = rng.integers(0, n_tracks, size=(resamples, n_tracks))  # (resamples, tracks)
    total = np.zeros((resamples, n_tracks))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are NaN, skipped by the median
        for sign, a in zip(signs, arrays):
            chosen = rng.integers(0, a.shape[1], size=(resamples, 1, a.shape[1]))  # seeds per resample
            values = a[tracks[:, :, None], chosen]  # (resamples, tracks, seeds)
            total = total + sign * np.nanmean(values, axis=-1)
        medians = np.nanmedian(total, axis=1)
    medians = medians[~np.isnan(medians)]
    if medians.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def verdict(low: float, high: float) -> str:
    """"better" when the interval lies above 0, "worse" below, "level" when it spans 0, "n/a" without one."""
    if math.isnan(low) or math.isnan(high):
        return "n/a"
    return "better" if low > 0 else "worse" if high < 0 else "level"


def order_conditions(conditions) -> list[str]:
    """Single stems in :data:`~conditioned_sep.stems.FINE_STEMS` order (MUSDB18's four, then the parts of
    other) first, then sums in first-seen order."""
    seen = list(dict.fromkeys(conditions))
    return [s for s in FINE_STEMS if s in seen] + [c for c in seen if c not in FINE_STEMS]


def _models(scores) -> list[str]:
    return list(dict.fromkeys(s.model for s in scores))


def _seed_key(seed: int | None) -> int:
    return -1 if seed is None else int(seed)


def track_table(scores, metric: str) -> dict[tuple[str, str], dict[str, float]]:
    """``{(model, condition): {track: score}}``: one number per track (nanmedian over frames, or new SDR), the mean
    over seeds when the model has several."""
    return {key: {t: float(np.nan) if np.all(np.isnan(v)) else float(np.nanmean(v)) for t, v in by_track.items()}
            for key, by_track in seed_table(scores, metric).items()}


def seed_table(scores, metric: str) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """``{(model, condition): {track: (seeds,) scores}}`` with the seeds in the same (sorted) order on every track;
    NaN where a seed has no score for the track."""
    cells: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    seeds: dict[tuple[str, str], set[int]] = {}
    for s in scores:
        key = (s.model, s.condition)
        cells.setdefault(key, {}).setdefault(s.track, {})[_seed_key(s.seed)] = s.track_score(metric)
        seeds.setdefault(key, set()).add(_seed_key(s.seed))
    return {key: {t: np.array([by_seed.get(k, np.nan) for k in sorted(seeds[key])]) for t, by_seed in tracks.items()}
            for key, tracks in cells.items()}


def _matrix(by_track: dict[str, np.ndarray], tracks: Sequence[str]) -> np.ndarray:
    """``(tracks, seeds)`` from :func:`seed_table`'s cell, in ``tracks`` order."""
    return np.stack([by_track[t] for t in tracks]) if tracks else np.zeros((0, 1))


def summarize(scores) -> list[AggregateRow]:
    """Per model, condition and metric (:data:`TABLE_METRICS`): median and mean over tracks of track scores (frame
    nanmedian as :func:`conditioned_sep.metrics.aggregate`, infinite frames as NaN; mean over seeds), with the
    bootstrap interval of the median and the count of numerically unstable frames."""
    unstable: dict[tuple[str, str], tuple[int, int]] = {}
    for s in scores:
        n, k = unstable.get((s.model, s.condition), (0, 0))
        unstable[(s.model, s.condition)] = (n + len(s.frames["SDR"]), k + int(s.unstable.sum()))
    rows = []
    for metric in TABLE_METRICS:
        for (model, condition), by_track in seed_table(scores, metric).items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                per_track = np.array([np.nanmean(v) for v in by_track.values()])
            kept = [t for t, v in zip(by_track, per_track) if not np.isnan(v)]
            values = per_track[~np.isnan(per_track)]
            low, high = bootstrap_median(_matrix(by_track, kept))
            frames, bad = unstable[(model, condition)]
            rows.append(AggregateRow(
                model=model, condition=condition, metric=metric,
                median=float(np.median(values)) if values.size else float("nan"),
                mean=float(np.mean(values)) if values.size else float("nan"), tracks=int(values.size),
                seeds=len(next(iter(by_track.values()))), ci_low=low, ci_high=high,
                frames=frames, unstable_frames=bad if metric in FILTER_METRICS else 0))
    return rows


def wilcoxon_p(differences) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; NaN pairs dropped.

    1.0 when every difference is zero (no evidence of any difference), NaN when no pair is left.
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d).pvalue)


def compare(scores, *, conditioned: str, dedicated: str) -> list[ComparisonRow]:
    """Conditioned minus dedicated, per condition both answer and per metric, paired over common tracks (each
    side's track score the mean over its seeds), with the bootstrap interval of the median difference."""
    rows = []
    for metric in TABLE_METRICS:
        table = seed_table(scores, metric)
        conditions = order_conditions(c for (m, c) in table if m == conditioned)
        for condition in conditions:
            a, b = table.get((conditioned, condition)), table.get((dedicated, condition))
            if a is None or b is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                tracks = [t for t in a if t in b and not (np.all(np.isnan(a[t])) or np.all(np.isnan(b[t])))]
                diffs = np.array([np.nanmean(a[t]) - np.nanmean(b[t]) for t in tracks])
            low, high = bootstrap_median(_matrix(a, tracks), _matrix(b, tracks), signs=(1.0, -1.0))
            rows.append(ComparisonRow(
                conditioned=conditioned, dedicated=dedicated, condition=condition, metric=metric,
                median_diff=float(np.median(diffs)) if diffs.size else float("nan"),
                mean_diff=float(np.mean(diffs)) if diffs.size else float("nan"),
                p_value=wilcoxon_p(diffs), tracks=len(tracks), wins=int(np.sum(diffs > 0)),
                ci_low=low, ci_high=high, verdict=verdict(low, high),
                seeds=(len(next(iter(a.values()))), len(next(iter(b.values())))),
            ))
    return rows


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _cell(r: AggregateRow | None) -> str:
    """``median (mean) [low, high]`` with a dagger when some frames' filter metrics are not numerically stable."""
    if r is None:
        return ""
    text = f"{_fmt(r.median)} ({_fmt(r.mean)})"
    if not math.isnan(r.ci_low):
        text += f" [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"
    return text + (" \u2020" if r.unstable_frames else "")


def markdown_tables(
    rows: list[AggregateRow],
    *,
    comparisons: list[ComparisonRow] = (),
    costs: list[ModelCost] = (),
    title: str | None = None,
) -> str:
    """The results as markdown: one table per metric (model x condition, "median (mean) [bootstrap interval]" in dB,
    and "avg" = mean over MUSDB18's four stems, whose mean part for new SDR is the MDX score; then the parts of
    other, then sums), then conditioned minus
    dedicated with intervals, verdicts and Wilcoxon p-values, then parameters and separation time."""
    out = io.StringIO()
    if title:
        out.write(f"# {title}\n\n")
    models = list(dict.fromkeys(r.model for r in rows))
    conditions = order_conditions(r.condition for r in rows)
    singles = [c for c in conditions if c in STEMS]  # "avg" is over these: MUSDB18's score
    parts = [c for c in conditions if c in FINE_STEMS and c not in STEMS]
    cell = {(r.model, r.condition, r.metric): r for r in rows}
    seeds = {r.model: r.seeds for r in rows}
    for metric in TABLE_METRICS:
        how = ("whole-track MDX SDR, median over tracks (mean)" if metric == NEW_SDR
               else "median over frames, then median over tracks (mean over tracks)")
        if any(n > 1 for n in seeds.values()):
            how += ", a track's score the mean over seeds"
        out.write(f"## {metric} in dB: {how} [{CONFIDENCE:.0%} bootstrap interval of the median]\n\n")
        sums = [c for c in conditions if c not in FINE_STEMS]
        header = ["model", *singles, *(["avg"] if len(singles) > 1 else []), *parts, *sums]
        out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
        for model in models:
            cells = [model if seeds[model] == 1 else f"{model} ({seeds[model]} seeds)"]
            cells += [_cell(cell.get((model, condition, metric))) for condition in singles]
            if len(singles) > 1:
                got = [cell[(model, c, metric)] for c in singles if (model, c, metric) in cell]
                complete = len(got) == len(singles)
                cells.append(f"{_fmt(np.mean([r.median for r in got]))} ({_fmt(np.mean([r.mean for r in got]))})"
                             if complete else "")
            cells += [_cell(cell.get((model, condition, metric))) for condition in (*parts, *sums)]
            out.write("| " + " | ".join(cells) + " |\n")
        flagged = [r for r in rows if r.metric == metric and r.unstable_frames]
        if flagged:
            out.write(f"\n\u2020 some frames' {metric} is not numerically stable to {UNSTABLE_DB} dB (the reference "
                      "Gram matrix is near-singular there; see condition.csv): "
                      + "; ".join(f"{r.model} {r.condition}: {r.unstable_frames} of {r.frames} frames"
                                  for r in flagged) + ".\n")
        out.write("\n")
    pairs = list(dict.fromkeys((c.conditioned, c.dedicated) for c in comparisons))
    for conditioned, dedicated in pairs:
        out.write(f"## {conditioned} minus {dedicated}: median over tracks of the per-track difference in dB "
                  f"[{CONFIDENCE:.0%} bootstrap interval over tracks and seeds] and verdict (two-sided Wilcoxon "
                  "signed-rank p over tracks)\n\n")
        header = ["condition", *TABLE_METRICS, "tracks", f"{conditioned} better (SDR)", "verdict (SDR)"]
        out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
        mine = [c for c in comparisons if (c.conditioned, c.dedicated) == (conditioned, dedicated)]
        by = {(c.condition, c.metric): c for c in mine}
        for condition in order_conditions(c.condition for c in mine):
            cells = [condition]
            for metric in TABLE_METRICS:
                c = by.get((condition, metric))
                if c is None or math.isnan(c.median_diff):
                    cells.append("n/a")
                    continue
                interval = "" if math.isnan(c.ci_low) else f" [{c.ci_low:+.2f}, {c.ci_high:+.2f}] {c.verdict}"
                cells.append(f"{c.median_diff:+.2f}{interval} (p={_fmt_p(c.p_value)})")
            sdr = by.get((condition, "SDR"))
            cells += [str(sdr.tracks) if sdr else "0", f"{sdr.wins}/{sdr.tracks}" if sdr else "n/a",
                      sdr.verdict if sdr else "n/a"]
            out.write("| " + " | ".join(cells) + " |\n")
        out.write("\n")
    if costs:
        out.write("## Cost: parameters and time to separate the single stems\n\n")
        out.write("| model | kind | parameters | seconds | seconds per minute of audio | tracks |\n"
                  "|---|---|---|---|---|---|\n")
        for c in costs:
            params = f"{c.num_parameters:,}" if c.num_parameters is not None else "-"
            per_minute = _fmt(60.0 * c.real_time_factor) if c.kind != "reference" else "-"
            seconds = _fmt(c.seconds, 1) if c.kind != "reference" else "-"
            out.write(f"| {c.model} | {c.kind} | {params} | {seconds} | {per_minute} | {c.tracks} |\n")
        out.write("\n")
    return out.getvalue()


def _write_csv(path, header: list[str], rows) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path = Path(path)
    atomic_write_text(path, buf.getvalue())
    return path


def _seed_text(seed: int | None) -> str:
    return "" if seed is None else str(seed)


def write_frames_csv(path, scores) -> Path:
    """Every frame of every score: model, seed (empty: one seed), track, condition, sources (joined by ';'),
    time (s), SDR, SIR, SAR, ISR, sensitivity (dB; empty: not computed, nan: unknown) and unstable (0/1).

    NaN frames are written as ``nan``."""
    rows = []
    for s in scores:
        n = len(s.frames["SDR"])
        unstable = s.unstable
        for i in range(n):
            sens = "" if s.sensitivity is None else f"{float(s.sensitivity[i]):.3g}"
            rows.append([s.model, _seed_text(s.seed), s.track, s.condition, ";".join(s.sources),
                         f"{i * s.hop_seconds:g}", *[f"{float(s.frames[m][i]):.5f}" for m in METRICS], sens,
                         int(unstable[i])])
    return _write_csv(path, ["model", "seed", "track", "condition", "sources", "time", *METRICS, "sensitivity_db",
                             "unstable"], rows)


def write_condition_csv(path, scores) -> Path:
    """The numerical condition of every scored problem: model, seed, track, condition, sources, ``gram_rcond``
    (smallest over largest eigenvalue of the references' Gram matrix; it depends on the track and the scoring set
    only), frames, unstable frames (ISR/SIR/SAR not stable to ``UNSTABLE_DB``) and the largest known sensitivity."""
    rows = []
    for s in scores:
        sens = np.asarray(s.sensitivity, dtype=np.float64) if s.sensitivity is not None else np.array([np.nan])
        known = sens[np.isfinite(sens)]
        rows.append([s.model, _seed_text(s.seed), s.track, s.condition, ";".join(s.sources), f"{s.gram_rcond:.3e}",
                     len(s.frames["SDR"]), int(s.unstable.sum()),
                     f"{known.max():.3g}" if known.size else "nan"])
    return _write_csv(path, ["model", "seed", "track", "condition", "sources", "gram_rcond", "frames",
                             "unstable_frames", "max_sensitivity_db"], rows)


def write_results_csv(path, rows: list[AggregateRow], *, comparisons: list[ComparisonRow] = (),
                      costs: list[ModelCost] = ()) -> Path:
    """One long table: ``kind`` is "score" (median, mean over tracks, bootstrap interval, seeds, unstable frames),
    "difference" (conditioned minus dedicated: median, mean of per-track differences, interval, verdict, Wilcoxon
    p) or "cost" (parameters, seconds, real-time factor)."""
    header = ["kind", "model", "reference_model", "condition", "metric", "median", "mean", "ci_low", "ci_high",
              "verdict", "p_value", "tracks", "seeds", "wins", "frames", "unstable_frames", "parameters", "seconds",
              "real_time_factor"]
    out = []
    for r in rows:
        out.append(["score", r.model, "", r.condition, r.metric, f"{r.median:.5f}", f"{r.mean:.5f}",
                    f"{r.ci_low:.5f}", f"{r.ci_high:.5f}", "", "", r.tracks, r.seeds, "", r.frames,
                    r.unstable_frames, "", "", ""])
    for c in comparisons:
        out.append(["difference", c.conditioned, c.dedicated, c.condition, c.metric, f"{c.median_diff:.5f}",
                    f"{c.mean_diff:.5f}", f"{c.ci_low:.5f}", f"{c.ci_high:.5f}", c.verdict, f"{c.p_value:.6g}",
                    c.tracks, f"{c.seeds[0]}/{c.seeds[1]}", c.wins, "", "", "", "", ""])
    for c in costs:
        out.append(["cost", c.model, "", "", "", "", "", "", "", "", "", c.tracks, "", "", "", "",
                    "" if c.num_parameters is None else c.num_parameters, f"{c.seconds:.3f}",
                    f"{c.real_time_factor:.5f}"])
    return _write_csv(path, header, out)


def bulk_limits(groups: Sequence[Sequence[float]], *, margin: float = 0.06) -> tuple[float, float]:
    """Axis limits that hold the bulk of every group: from the lowest to the highest box-plot whisker (the most
    extreme value within 1.5 interquartile ranges of its box, as matplotlib draws them), widened by ``margin`` of
    the span, so that one outlier (an oracle at 138 dB on a track whose stem is silent) cannot flatten every box;
    ``(-1, 1)`` without a finite value."""
    low, high = math.inf, -math.inf
    for values in groups:
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if not v.size:
            continue
        q1, q3 = np.percentile(v, [25, 75])
        reach = 1.5 * (q3 - q1)
        low = min(low, float(v[v >= q1 - reach].min()))
        high = max(high, float(v[v <= q3 + reach].max()))
    if math.isinf(low):
        return -1.0, 1.0
    pad = margin * (high - low) or 1.0
    return low - pad, high + pad


def metric_figure(scores, metric: str, *, title: str | None = None):
    """A matplotlib ``Figure`` of per-condition box plots of track scores (nanmedian over frames), one box per model,
    as the SiSEC plots show them; ``metric`` is one of :data:`TABLE_METRICS`. The value axis spans the bulk of the
    data (:func:`bulk_limits`); a value beyond it is drawn as a triangle on the edge, with the count of such values
    and the farthest of them written beside it."""
    # a bare Figure renders with Agg and leaves pyplot's global backend and figure list alone (no window, no
    # state shared with a caller's own plots, fine in worker processes and on servers)
    import matplotlib
    from matplotlib.figure import Figure

    models = _models(scores)
    conditions = order_conditions(s.condition for s in scores)
    table = track_table(scores, metric)
    width = 0.8 / max(len(models), 1)
    colors = matplotlib.colormaps["tab10"]
    fig = Figure(figsize=(max(6.0, 0.4 * len(conditions) * max(1, len(models)) + 2), 4.5))
    ax = fig.subplots()
    boxes: list[tuple[int, float, list[float]]] = []  # (model index, position, values)
    for k, model in enumerate(models):
        for i, condition in enumerate(conditions):
            values = [v for v in table.get((model, condition), {}).values() if not math.isnan(v)]
            if values:
                boxes.append((k, i - 0.4 + width * (k + 0.5), values))
    low, high = bulk_limits([values for _, _, values in boxes])
    for k, model in enumerate(models):
        mine = [(position, values) for j, position, values in boxes if j == k]
        if not mine:
            continue
        parts = ax.boxplot([values for _, values in mine], positions=[position for position, _ in mine],
                           widths=width * 0.85, patch_artist=True, showfliers=True,
                           medianprops={"color": "black"})
        for box in parts["boxes"]:
            box.set_facecolor(colors(k % 10))
            box.set_alpha(0.8)
        ax.plot([], [], marker="s", linestyle="", color=colors(k % 10), label=model)
    span = high - low
    for k, position, values in boxes:  # what the axis leaves out: a triangle on the edge, the count and the extreme
        for outside, edge, marker, extreme, va in (
                ([v for v in values if v > high], high - 0.02 * span, "^", max, "top"),
                ([v for v in values if v < low], low + 0.02 * span, "v", min, "bottom")):
            if outside:
                ax.plot([position], [edge], marker=marker, color=colors(k % 10), markeredgecolor="black",
                        linestyle="", clip_on=False)
                ax.annotate(f"{len(outside)}: {extreme(outside):.0f}", (position, edge), xytext=(4, 0),
                            textcoords="offset points", fontsize="x-small", va=va)
    ax.set_ylim(low, high)
    ax.set_xticks(range(len(conditions)))
    ax.set_xticklabels(conditions)
    ax.set_xlim(-0.6, len(conditions) - 0.4)
    ax.set_ylabel(f"{metric} (dB)")
    ax.set_title(title or f"{metric} per track ({'whole track' if metric == NEW_SDR else 'median over frames'})")
    if any(v > high or v < low for _, _, values in boxes for v in values):
        ax.text(1.0, -0.1, "\u25b2 n: X = n tracks above the axis, the highest at X dB (\u25bc below)",
                transform=ax.transAxes, ha="right", va="top", fontsize="x-small")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def plot_metric(path, scores, metric: str, *, title: str | None = None) -> Path:
    """A PNG of :func:`metric_figure`: per-condition box plots of track scores, one box per model."""
    path = Path(path)
    with atomic_path(path) as tmp:
        metric_figure(scores, metric, title=title).savefig(tmp, dpi=110, format="png")
    return path


def plot_metrics(out_dir, scores) -> list[Path]:
    """One PNG per metric in ``out_dir``: ``sdr.png``, ``sir.png``, ``sar.png``, ``isr.png``, ``new_sdr.png``."""
    out_dir = Path(out_dir)
    return [plot_metric(out_dir / f"{m.lower().replace(' ', '_')}.png", scores, m) for m in TABLE_METRICS]
