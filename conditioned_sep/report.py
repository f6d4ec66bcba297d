"""Tables, statistics and plots of evaluation results, from plain score records (:class:`ConditionScores`), one per
model, track and condition, so that this module knows nothing of models or audio.

Aggregation is :func:`conditioned_sep.metrics.aggregate` (SiSEC: nanmedian over a track's frames, infinite frames
counting as NaN as in museval's files, then the median over tracks as museval's ``EvalStore``, with the mean over
tracks beside it); the MDX "new SDR" is one number per track and condition.

  summarize(scores) -> [AggregateRow]            compare(scores, conditioned=, dedicated=) -> [ComparisonRow]
  markdown_tables(rows, comparisons=, costs=, title=) -> str
  write_frames_csv(path, scores), write_results_csv(path, rows, comparisons=, costs=)
  plot_metric(path, scores, metric), plot_metrics(out_dir, scores) -> [Path]   (matplotlib, Agg backend)
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from .fileio import atomic_path, atomic_write_text
from .metrics import METRICS
from .metrics import aggregate as sisec_aggregate
from .stems import STEMS

NEW_SDR = "new SDR"
"""Label of the MDX challenge's whole-track SDR in tables and CSV files."""

TABLE_METRICS: tuple[str, ...] = (*METRICS, NEW_SDR)


@dataclass
class ConditionScores:
    """The scores of one model on one track for one condition (a stem or a sum of stems such as "drums+bass").

    ``frames`` maps each of :data:`METRICS` to a float array ``(frames,)`` in dB (NaN where BSS Eval gives NaN);
    ``sources`` is the set of sources scored jointly, the condition first (e.g. ``("accompaniment", "vocals")``);
    ``new_sdr`` is the MDX whole-track SDR in dB; ``window_seconds``/``hop_seconds`` are BSS Eval's frame window and hop.
    """

    model: str
    track: str
    condition: str
    sources: tuple[str, ...]
    frames: dict[str, np.ndarray]
    new_sdr: float
    window_seconds: float = 1.0
    hop_seconds: float = 1.0

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
            "hop_seconds": self.hop_seconds,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ConditionScores":
        return cls(
            model=data["model"], track=data["track"], condition=data["condition"], sources=tuple(data["sources"]),
            frames={m: np.asarray(data["frames"][m], dtype=np.float64) for m in METRICS},
            new_sdr=float(data["new_sdr"]), window_seconds=float(data["window_seconds"]),
            hop_seconds=float(data["hop_seconds"]),
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
    """One cell group of the per-condition table: ``median`` over tracks of the per-track frame medians,
    ``mean`` over tracks beside it, over ``tracks`` tracks with a number (all-NaN tracks are left out)."""

    model: str
    condition: str
    metric: str
    median: float
    mean: float
    tracks: int


@dataclass
class ComparisonRow:
    """Conditioned minus dedicated on one condition and metric, paired over tracks.

    ``median_diff``/``mean_diff`` are the median and mean over tracks of the per-track difference; ``p_value`` is
    the two-sided Wilcoxon signed-rank test of those differences (1.0 when all are zero, NaN with no pair);
    ``wins`` counts the tracks where the conditioned model scores higher.
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


def order_conditions(conditions) -> list[str]:
    """Single stems in vocabulary order first, then sums in first-seen order."""
    seen = list(dict.fromkeys(conditions))
    return [s for s in STEMS if s in seen] + [c for c in seen if c not in STEMS]


def _models(scores) -> list[str]:
    return list(dict.fromkeys(s.model for s in scores))


def track_table(scores, metric: str) -> dict[tuple[str, str], dict[str, float]]:
    """``{(model, condition): {track: score}}``: one number per track (nanmedian over frames, or new SDR)."""
    table: dict[tuple[str, str], dict[str, float]] = {}
    for s in scores:
        table.setdefault((s.model, s.condition), {})[s.track] = s.track_score(metric)
    return table


def summarize(scores) -> list[AggregateRow]:
    """Per model, condition and metric (:data:`TABLE_METRICS`): median and mean over tracks of track scores, by
    :func:`conditioned_sep.metrics.aggregate` (new SDR as one frame per track)."""
    groups: dict[tuple[str, str], list[ConditionScores]] = {}
    for s in scores:
        groups.setdefault((s.model, s.condition), []).append(s)
    rows = []
    for metric in TABLE_METRICS:
        for (model, condition), group in groups.items():
            agg = sisec_aggregate([[s.new_sdr] if metric == NEW_SDR else s.frames[metric] for s in group])
            rows.append(AggregateRow(model=model, condition=condition, metric=metric, median=float(agg.median),
                                     mean=float(agg.mean), tracks=int(np.count_nonzero(~np.isnan(agg.per_track)))))
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
    """Conditioned minus dedicated, per condition both answer and per metric, paired over common tracks."""
    rows = []
    for metric in TABLE_METRICS:
        table = track_table(scores, metric)
        conditions = order_conditions(c for (m, c) in table if m == conditioned)
        for condition in conditions:
            a, b = table.get((conditioned, condition)), table.get((dedicated, condition))
            if a is None or b is None:
                continue
            tracks = [t for t in a if t in b and not (math.isnan(a[t]) or math.isnan(b[t]))]
            diffs = np.array([a[t] - b[t] for t in tracks])
            rows.append(ComparisonRow(
                conditioned=conditioned, dedicated=dedicated, condition=condition, metric=metric,
                median_diff=float(np.median(diffs)) if diffs.size else float("nan"),
                mean_diff=float(np.mean(diffs)) if diffs.size else float("nan"),
                p_value=wilcoxon_p(diffs), tracks=len(tracks), wins=int(np.sum(diffs > 0)),
            ))
    return rows


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def markdown_tables(
    rows: list[AggregateRow],
    *,
    comparisons: list[ComparisonRow] = (),
    costs: list[ModelCost] = (),
    title: str | None = None,
) -> str:
    """The results as markdown: one table per metric (model x condition, "median (mean)" in dB, and "avg" = mean
    over the four single stems, whose mean part for new SDR is the MDX score), then conditioned minus dedicated
    with Wilcoxon p-values, then parameters and separation time."""
    out = io.StringIO()
    if title:
        out.write(f"# {title}\n\n")
    models = list(dict.fromkeys(r.model for r in rows))
    conditions = order_conditions(r.condition for r in rows)
    singles = [c for c in conditions if c in STEMS]
    cell = {(r.model, r.condition, r.metric): r for r in rows}
    for metric in TABLE_METRICS:
        how = ("whole-track MDX SDR, median over tracks (mean)" if metric == NEW_SDR
               else "median over frames, then median over tracks (mean over tracks)")
        out.write(f"## {metric} in dB: {how}\n\n")
        sums = [c for c in conditions if c not in singles]
        header = ["model", *singles, *(["avg"] if len(singles) > 1 else []), *sums]
        out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
        for model in models:
            cells = [model]
            for condition in singles:
                r = cell.get((model, condition, metric))
                cells.append(f"{_fmt(r.median)} ({_fmt(r.mean)})" if r else "")
            if len(singles) > 1:
                got = [cell[(model, c, metric)] for c in singles if (model, c, metric) in cell]
                complete = len(got) == len(singles)
                cells.append(f"{_fmt(np.mean([r.median for r in got]))} ({_fmt(np.mean([r.mean for r in got]))})"
                             if complete else "")
            for condition in sums:
                r = cell.get((model, condition, metric))
                cells.append(f"{_fmt(r.median)} ({_fmt(r.mean)})" if r else "")
            out.write("| " + " | ".join(cells) + " |\n")
        out.write("\n")
    pairs = list(dict.fromkeys((c.conditioned, c.dedicated) for c in comparisons))
    for conditioned, dedicated in pairs:
        out.write(f"## {conditioned} minus {dedicated}: median over tracks of the per-track difference in dB "
                  "(two-sided Wilcoxon signed-rank p over tracks)\n\n")
        header = ["condition", *TABLE_METRICS, "tracks", f"{conditioned} better (SDR)"]
        out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
        mine = [c for c in comparisons if (c.conditioned, c.dedicated) == (conditioned, dedicated)]
        by = {(c.condition, c.metric): c for c in mine}
        for condition in order_conditions(c.condition for c in mine):
            cells = [condition]
            for metric in TABLE_METRICS:
                c = by.get((condition, metric))
                cells.append(f"{c.median_diff:+.2f} (p={_fmt_p(c.p_value)})" if c and not math.isnan(c.median_diff)
                             else "n/a")
            sdr = by.get((condition, "SDR"))
            cells += [str(sdr.tracks) if sdr else "0", f"{sdr.wins}/{sdr.tracks}" if sdr else "n/a"]
            out.write("| " + " | ".join(cells) + " |\n")
        out.write("\n")
    if costs:
        out.write("## Cost: parameters and time to separate the four stems\n\n")
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


def write_frames_csv(path, scores) -> Path:
    """Every frame of every score: model, track, condition, sources (joined by ';'), time (s), SDR, SIR, SAR, ISR.

    NaN frames are written as ``nan``."""
    rows = []
    for s in scores:
        n = len(s.frames["SDR"])
        for i in range(n):
            rows.append([s.model, s.track, s.condition, ";".join(s.sources), f"{i * s.hop_seconds:g}",
                         *[f"{float(s.frames[m][i]):.5f}" for m in METRICS]])
    return _write_csv(path, ["model", "track", "condition", "sources", "time", *METRICS], rows)


def write_results_csv(path, rows: list[AggregateRow], *, comparisons: list[ComparisonRow] = (),
                      costs: list[ModelCost] = ()) -> Path:
    """One long table: ``kind`` is "score" (median, mean over tracks), "difference" (conditioned minus dedicated:
    median, mean of per-track differences, Wilcoxon p) or "cost" (parameters, seconds, real-time factor)."""
    header = ["kind", "model", "reference_model", "condition", "metric", "median", "mean", "p_value", "tracks",
              "wins", "parameters", "seconds", "real_time_factor"]
    out = []
    for r in rows:
        out.append(["score", r.model, "", r.condition, r.metric, f"{r.median:.5f}", f"{r.mean:.5f}", "", r.tracks,
                    "", "", "", ""])
    for c in comparisons:
        out.append(["difference", c.conditioned, c.dedicated, c.condition, c.metric, f"{c.median_diff:.5f}",
                    f"{c.mean_diff:.5f}", f"{c.p_value:.6g}", c.tracks, c.wins, "", "", ""])
    for c in costs:
        out.append(["cost", c.model, "", "", "", "", "", "", c.tracks, "",
                    "" if c.num_parameters is None else c.num_parameters, f"{c.seconds:.3f}",
                    f"{c.real_time_factor:.5f}"])
    return _write_csv(path, header, out)


def plot_metric(path, scores, metric: str, *, title: str | None = None) -> Path:
    """A PNG of per-condition box plots of track scores (nanmedian over frames), one box per model, as the SiSEC
    plots show them. ``metric`` is one of :data:`TABLE_METRICS`."""
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
    for k, model in enumerate(models):
        positions, data = [], []
        for i, condition in enumerate(conditions):
            values = [v for v in table.get((model, condition), {}).values() if not math.isnan(v)]
            if values:
                positions.append(i - 0.4 + width * (k + 0.5))
                data.append(values)
        if not data:
            continue
        parts = ax.boxplot(data, positions=positions, widths=width * 0.85, patch_artist=True, showfliers=True,
                           medianprops={"color": "black"})
        for box in parts["boxes"]:
            box.set_facecolor(colors(k % 10))
            box.set_alpha(0.8)
        ax.plot([], [], marker="s", linestyle="", color=colors(k % 10), label=model)
    ax.set_xticks(range(len(conditions)))
    ax.set_xticklabels(conditions)
    ax.set_xlim(-0.6, len(conditions) - 0.4)
    ax.set_ylabel(f"{metric} (dB)")
    ax.set_title(title or f"{metric} per track ({'whole track' if metric == NEW_SDR else 'median over frames'})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def plot_metrics(out_dir, scores) -> list[Path]:
    """One PNG per metric in ``out_dir``: ``sdr.png``, ``sir.png``, ``sar.png``, ``isr.png``, ``new_sdr.png``."""
    out_dir = Path(out_dir)
    return [plot_metric(out_dir / f"{m.lower().replace(' ', '_')}.png", scores, m) for m in TABLE_METRICS]
