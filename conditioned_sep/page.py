"""The listening page: ``<out>/index.html``, one self-contained page (no network, no script) with the headline
tables, the plots and, per test track and condition, players for the mixture, the reference and each model's
estimate, each with its track SDR and a small spectrogram.

Two halves, so that a resumed evaluation still has audio for the tracks it does not score again:

- **clips** (:func:`write_clips`), written while a track is scored, where the estimates are at hand: one folder per
  track and row holding an excerpt of each condition (:data:`EXCERPT_SECONDS` around the loudest part of the
  references, the same span for every row of a track; :func:`excerpt_span`) as Ogg Opus at
  :data:`OPUS_BITRATE` (ffmpeg; Ogg Vorbis through soundfile where ffmpeg is missing), a spectrogram PNG of each
  (one fixed dB scale, so that reference and estimate compare), and a stamp (``clips.json``) written last that
  names what the clips were made from (:func:`clips_ready`);
- **the page** (:func:`write_page`), written at the end of a run from the clips of the rows and tracks of that run
  only: the clips are linked (or copied) into ``<out>/listen/``, a folder published whole (a re-run never shows a
  stale player), then ``index.html`` is written beside it.

Numbers on the page are those of ``results.csv`` rounded to 2 decimals; every number cell carries ``data-*``
attributes naming its row of ``results.csv`` (the browser test compares them).
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import soundfile as sf

from .fileio import atomic_folder, atomic_write_text
from .report import CONFIDENCE, TABLE_METRICS, AggregateRow, ComparisonRow, order_conditions
from .stems import STEMS

EXCERPT_SECONDS = 10.0
"""Length of a track's excerpt on the page (``full`` clips: the whole track)."""
OPUS_BITRATE = "48k"
"""Opus bit rate of a clip: about 65 kB per 10 s of stereo, so that the default test split's page (350 clips) stays
under 30 MB."""
OPUS_COMPLEXITY = 0
"""libopus's encoder effort (0-10): 0 costs 0.6 of the CPU time of 5 here, where encoding is what the page adds to an
evaluation's time; the bit rate matters more to what one hears."""
CLIP_SUFFIX = ".ogg"
CLIPS_VERSION = 3  # in every stamp: a change of format or span rule makes every clip stale
STAMP = "clips.json"
PAGE_FOLDER = "listen"
_OURS = ".conditioned-sep-page"  # marks the page folder as ours: a folder of that name without it is left alone
_SPECTROGRAM = {"width": 200, "height": 72, "n_fft": 2048, "low_hz": 40.0, "high_hz": 16000.0, "floor_db": -100.0,
                "top_db": -10.0, "levels": 32}  # 32 colours: steps of 2.8 dB, and a third less PNG than 256
_INFERNO = np.array([(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21),
                   (250, 193, 39), (252, 255, 164)], dtype=np.float64)  # stops of matplotlib's inferno


class PageError(ValueError):
    """The listening page cannot be written where asked (a folder of the page's name that the project did not
    write)."""


# --------------------------------------------------------------------------------------------------------------
# Clips: excerpts, encoding, spectrograms
# --------------------------------------------------------------------------------------------------------------


def excerpt_span(references: np.ndarray, rate: int, *, seconds: float | None = EXCERPT_SECONDS) -> tuple[int, int]:
    """``(start, stop)`` samples of the excerpt of a track whose references are ``(sources, channels, samples)``:
    the ``seconds`` where the sum over sources of the log energy is largest (where every stem plays, loud), on a
    grid of 0.1 s; the whole track when it is not longer (or ``seconds`` is None)."""
    total = references.shape[-1]
    length = total if seconds is None else int(round(seconds * rate))
    if length >= total:
        return 0, total
    block = max(1, rate // 10)
    blocks = total // block
    energy = np.square(references[..., : blocks * block], dtype=np.float64).reshape(
        references.shape[0], -1, blocks, block).sum(axis=(1, 3))  # (sources, blocks)
    width = max(1, length // block)
    windows = np.cumsum(np.pad(energy, ((0, 0), (1, 0))), axis=1)
    windows = windows[:, width:] - windows[:, :-width]  # (sources, starts): energy of each window
    floor = 1e-10 * max(float(windows.max()), 1e-30)  # a silent stem adds the same to every window
    start = int(np.argmax(np.log(windows + floor).sum(axis=0))) * block
    return min(start, total - length), min(start, total - length) + length


@contextlib.contextmanager
def _encoding(clips: dict[Path, np.ndarray], rate: int, workdir: Path) -> Iterator[None]:
    """Write each ``(channels, samples)`` clip to its ``.ogg`` path while the ``with`` body runs: Opus by one
    ffmpeg process for all of them (a process per clip would cost more than the encoding), started at entry and
    waited for at exit, at low priority so that it takes the cores the caller leaves idle; without ffmpeg, Vorbis
    through soundfile."""
    if shutil.which("ffmpeg") is None:
        for path, audio in clips.items():
            sf.write(path, np.clip(audio.T, -1, 1), rate, format="OGG", subtype="VORBIS", compression_level=1.0)
        yield
        return
    command = (["nice", "-n", "10"] if shutil.which("nice") else []) + ["ffmpeg", "-v", "error", "-nostdin", "-y"]
    outputs, sources = [], []
    for k, (path, audio) in enumerate(clips.items()):
        sources.append(workdir / f".{k}.wav")
        sf.write(sources[-1], np.clip(audio.T, -1, 1), rate, subtype="PCM_16")  # half the bytes of float to pass on
        command += ["-i", str(sources[-1])]
        outputs += ["-map", f"{k}:a", "-c:a", "libopus", "-b:a", OPUS_BITRATE,
                    "-compression_level", str(OPUS_COMPLEXITY), str(path)]
    process = subprocess.Popen(command + outputs, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield
    except BaseException:
        process.kill()
        raise
    finally:
        _, errors = process.communicate()
        for source in sources:
            source.unlink(missing_ok=True)
    if process.returncode != 0:
        raise OSError(f"ffmpeg could not encode the page's clips: {errors.strip()[-300:]}")


def _png(pixels: np.ndarray, palette: np.ndarray) -> bytes:
    """An 8-bit palette PNG of ``pixels`` ``(height, width)`` uint8 indices into ``palette`` ``(colours, 3)``."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    height, width = pixels.shape
    rows = np.hstack([np.zeros((height, 1), np.uint8), pixels]).tobytes()  # filter byte 0 before each row
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"PLTE", palette.astype(np.uint8).tobytes())
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def spectrogram_png(audio: np.ndarray, rate: int) -> bytes:
    """A small PNG of the log-frequency spectrogram of ``audio`` ``(channels, samples)`` (channels averaged), in dB
    re a full-scale sine on one fixed scale, so that two clips' pictures compare."""
    p = _SPECTROGRAM
    mono = np.asarray(audio, dtype=np.float64).mean(axis=0)
    n_fft = p["n_fft"]
    mono = np.pad(mono, (0, max(0, n_fft - mono.size)))
    starts = np.linspace(0, mono.size - n_fft, p["width"]).astype(np.int64)
    window = np.hanning(n_fft)
    frames = mono[starts[:, None] + np.arange(n_fft)] * window  # (width, n_fft)
    magnitude = np.abs(np.fft.rfft(frames, axis=1)) / (window.sum() / 2)  # a full-scale sine: 1
    freqs = np.geomspace(p["low_hz"], min(p["high_hz"], rate / 2), p["height"])[::-1]  # top row: high
    bins = np.clip(np.round(freqs * n_fft / rate).astype(np.int64), 0, magnitude.shape[1] - 1)
    db = 20 * np.log10(magnitude[:, bins].T + 1e-12)  # (height, width)
    top = p["levels"] - 1
    level = (db - p["floor_db"]) / (p["top_db"] - p["floor_db"])
    pixels = np.clip(np.round(level * top), 0, top).astype(np.uint8)
    stops = np.linspace(0, top, len(_INFERNO))
    palette = np.stack([np.interp(np.arange(top + 1), stops, _INFERNO[:, c]) for c in range(3)], axis=1)
    return _png(pixels, np.round(palette))


def _stamp(key: str, span: tuple[int, int], rate: int, names: Sequence[str]) -> str:
    return json.dumps({"version": CLIPS_VERSION, "key": key, "span": list(span), "rate": rate, "names": list(names)})


@contextlib.contextmanager
def writing_clips(folder: Path, clips: dict[str, np.ndarray], *, rate: int, span: tuple[int, int], key: str
                  ) -> Iterator[None]:
    """Publish ``folder`` whole when the ``with`` body ends (the clips encode meanwhile, in another process):
    ``<name>.ogg`` and ``<name>.png`` (spectrogram) of the ``span`` of each ``(channels, samples)`` signal of
    ``clips``, then the stamp naming ``key`` (what they were made from). On an exception nothing is published."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    start, stop = span
    excerpts = {name: np.ascontiguousarray(audio[:, start:stop], dtype=np.float32) for name, audio in clips.items()}
    with atomic_folder(folder, replace=True) as tmp:
        with _encoding({tmp / f"{name}{CLIP_SUFFIX}": audio for name, audio in excerpts.items()}, rate, tmp):
            for name, audio in excerpts.items():
                (tmp / f"{name}.png").write_bytes(spectrogram_png(audio, rate))
            yield
        atomic_write_text(tmp / STAMP, _stamp(key, span, rate, list(clips)))


def write_clips(folder: Path, clips: dict[str, np.ndarray], *, rate: int, span: tuple[int, int], key: str) -> None:
    """:func:`writing_clips` with nothing to do meanwhile."""
    with writing_clips(folder, clips, rate=rate, span=span, key=key):
        pass


def clips_ready(folder: Path, *, key: str, names: Sequence[str]) -> bool:
    """Whether ``folder`` holds the clips of ``names`` made from ``key`` by this version (its stamp says so)."""
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (stamp.get("version") == CLIPS_VERSION and stamp.get("key") == key
            and set(names) <= set(stamp.get("names", ())))


def clip_span(folder: Path) -> tuple[float, float]:
    """The span of a clip folder in seconds ``(start, stop)``."""
    stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    start, stop = stamp["span"]
    return start / stamp["rate"], stop / stamp["rate"]


# --------------------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Column:
    """One model's column of players: its name, what the page calls it (the seed noted), and its clip folder per
    track (absent: no clip for that track)."""

    model: str
    label: str
    folders: dict[str, Path] = field(default_factory=dict)


@dataclass
class TrackClips:
    """One track's part of the page: its conditions and the folder of its mixture and reference clips."""

    name: str
    conditions: list[str]
    folder: Path


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1500px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}h3{font-size:1.05em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;
vertical-align:top}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.better{color:#060;font-weight:600}.worse{color:#a00;font-weight:600}.note{color:#555;font-size:.9em}
img.plot{max-width:100%;width:900px;border:1px solid #ddd;display:block;margin:.3em 0}
table.players td{text-align:center;width:190px}
table.players audio{width:185px;height:32px}table.players img{display:block;width:185px;height:67px;
margin:2px auto;image-rendering:pixelated}.sdr{font-size:.9em}
"""


def _num(x: float, *, sign: bool = False) -> str:
    return "n/a" if x is None or math.isnan(x) else (f"{x:+.2f}" if sign else f"{x:.2f}")


def _interval(low: float, high: float, *, sign: bool = False) -> str:
    return "" if math.isnan(low) else f" [{_num(low, sign=sign)}, {_num(high, sign=sign)}]"


def _attrs(**values: str) -> str:
    return "".join(f' data-{k.replace("_", "-")}="{html.escape(str(v))}"' for k, v in values.items())


def _score_table(rows: list[AggregateRow], metric: str) -> str:
    """Model x condition: ``median [interval]`` (mean in the cell's title), and "avg" over MUSDB18's four."""
    models = list(dict.fromkeys(r.model for r in rows))
    conditions = order_conditions(r.condition for r in rows)
    singles = [c for c in conditions if c in STEMS]
    cell = {(r.model, r.condition): r for r in rows if r.metric == metric}
    seeds = {r.model: r.seeds for r in rows}
    head = ["model", *singles, *(["avg"] if len(singles) > 1 else []), *(c for c in conditions if c not in singles)]
    out = ["<table class='scores'><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for model in models:
        name = model if seeds[model] == 1 else f"{model} ({seeds[model]} seeds)"
        cells = [f"<td>{html.escape(name)}</td>"]
        for c in [*singles, "avg", *(c for c in conditions if c not in singles)]:
            if c == "avg":
                if len(singles) > 1:
                    got = [cell[(model, s)].median for s in singles if (model, s) in cell]
                    cells.append(f"<td>{_num(float(np.mean(got))) if len(got) == len(singles) else ''}</td>")
                continue
            r = cell.get((model, c))
            if r is None:
                cells.append("<td></td>")
                continue
            cells.append(f"<td title='mean {_num(r.mean)}, {r.tracks} tracks'"
                         f"{_attrs(kind='score', model=model, condition=c, metric=metric)}>"
                         f"{_num(r.median)}{_interval(r.ci_low, r.ci_high)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def _difference_table(comparisons: list[ComparisonRow], conditioned: str, dedicated: str,
                      metrics: Sequence[str]) -> str:
    mine = [c for c in comparisons if (c.conditioned, c.dedicated) == (conditioned, dedicated)]
    by = {(c.condition, c.metric): c for c in mine}
    head = ["condition", *metrics, "tracks", f"{conditioned} better"]
    out = ["<table class='differences'><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for condition in order_conditions(c.condition for c in mine):
        cells = [f"<td>{html.escape(condition)}</td>"]
        for metric in metrics:
            c = by.get((condition, metric))
            if c is None:
                cells.append("<td></td>")
                continue
            verdict = f" <span class='{c.verdict}'>{c.verdict}</span>" if not math.isnan(c.ci_low) else ""
            key = _attrs(kind="difference", model=conditioned, reference_model=dedicated, condition=condition,
                         metric=metric)
            cells.append(f"<td title='p = {c.p_value:.3g} (Wilcoxon)'{key}>"
                         f"{_num(c.median_diff, sign=True)}{_interval(c.ci_low, c.ci_high, sign=True)}{verdict}</td>")
        sdr = by.get((condition, "SDR")) or next(iter(c for c in mine if c.condition == condition))
        cells += [f"<td>{sdr.tracks}</td>", f"<td>{sdr.wins}/{sdr.tracks}</td>"]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def _link(source: Path, target: Path) -> None:
    """``target`` as a hard link of ``source`` (no second copy on disk), a copy where links are refused."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _player(src: str, picture: str, caption: str) -> str:
    return (f"<audio controls preload='none' src='{src}'></audio>"
            f"<img src='{picture}' alt='spectrogram' loading='lazy'><div class='sdr'>{caption}</div>")


def _sdr_caption(sdr: float | None) -> str:
    if sdr is None:
        return ""
    return "no SDR: silent reference" if math.isnan(sdr) else f"SDR {_num(sdr)} dB"


def _listening(folder: Path, tracks: list[TrackClips], columns: list[Column],
               sdr: dict[tuple[str, str, str], float]) -> str:
    """Link every clip of the page into ``folder`` and return the players' HTML. ``sdr`` maps (model, track,
    condition) to the track SDR shown under a player (the mixture's under the mixture)."""
    out = []
    for t, track in enumerate(tracks):
        here = folder / str(t)
        here.mkdir()
        sources = {"mixture": track.folder}
        sources.update({f"m{j}": col.folders[track.name] for j, col in enumerate(columns) if track.name in col.folders})
        for name, source in sources.items():
            (here / name).mkdir()
            for clip in source.iterdir():
                if clip.suffix in (CLIP_SUFFIX, ".png"):
                    _link(clip, here / name / clip.name)
        start, stop = clip_span(track.folder)
        out.append(f"<h3>{html.escape(track.name)} <span class='note'>({start:.1f}-{stop:.1f} s)</span></h3>")
        head = ["condition", "mixture", "reference", *(col.label for col in columns)]
        rows = ["<table class='players'><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
        for condition in track.conditions:
            base = f"{PAGE_FOLDER}/{t}"
            cells = [f"<th>{html.escape(condition)}</th>",
                     "<td>" + _player(f"{base}/mixture/mixture{CLIP_SUFFIX}", f"{base}/mixture/mixture.png",
                                      _sdr_caption(sdr.get(("mixture", track.name, condition)))) + "</td>",
                     "<td>" + _player(f"{base}/mixture/{quote(condition)}{CLIP_SUFFIX}",
                                      f"{base}/mixture/{quote(condition)}.png", "reference") + "</td>"]
            for j, col in enumerate(columns):
                clip = here / f"m{j}" / f"{condition}{CLIP_SUFFIX}"
                if not clip.is_file():  # a dedicated set without a model for it, or no clip of this track
                    cells.append("<td class='note'>-</td>")
                    continue
                cells.append("<td>" + _player(f"{base}/m{j}/{quote(condition)}{CLIP_SUFFIX}",
                                              f"{base}/m{j}/{quote(condition)}.png",
                                              _sdr_caption(sdr.get((col.model, track.name, condition)))) + "</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        out.append("\n".join(rows) + "</table>")
    return "\n".join(out)


def remove_page(out: Path) -> None:
    """Remove the page of an earlier run from ``out`` (a run without a page must not leave an older one that
    disagrees with its tables): ``listen/`` and ``index.html``, only where ``listen/`` carries the mark of this
    project."""
    folder = Path(out) / PAGE_FOLDER
    if (folder / _OURS).is_file():
        (Path(out) / "index.html").unlink(missing_ok=True)
        shutil.rmtree(folder)


def write_page(out: Path, *, title: str, table: list[AggregateRow], comparisons: list[ComparisonRow],
               plots: Sequence[Path], tracks: list[TrackClips], columns: list[Column],
               sdr: dict[tuple[str, str, str], float], notes: str = "") -> Path:
    """Write ``out/index.html`` and its folder ``out/listen/`` (published whole, replacing the previous page's): the
    SDR table and the differences with their verdicts, the other metrics' tables, the ``plots`` (PNG files in
    ``out``) and the players of ``tracks`` x ``columns``. Returns the page's path."""
    out = Path(out)
    folder = out / PAGE_FOLDER
    if folder.exists() and not (folder / _OURS).is_file():
        raise PageError(f"{folder} exists and was not written by conditioned-sep; move it away to get the "
                        "listening page (or pass --no-page)")
    pairs = list(dict.fromkeys((c.conditioned, c.dedicated) for c in comparisons))
    others = [m for m in TABLE_METRICS if m != "SDR"]
    interval = f"{CONFIDENCE:.0%} bootstrap interval of the median"
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p class='note'>{html.escape(notes)}</p>" if notes else "",
            f"<h2>SDR in dB: median over tracks [{interval}]</h2>", _score_table(table, "SDR")]
    for conditioned, dedicated in pairs:
        body += [f"<h2>{html.escape(conditioned)} minus {html.escape(dedicated)}: median of the per-track SDR "
                 f"difference in dB [{interval}] and verdict</h2>",
                 _difference_table(comparisons, conditioned, dedicated, ["SDR"])]
    body.append("<details><summary>Other metrics (SIR, SAR, ISR, MDX new SDR) and their differences</summary>")
    for metric in others:
        body += [f"<h3>{html.escape(metric)} in dB</h3>", _score_table(table, metric)]
    for conditioned, dedicated in pairs:
        body += [f"<h3>{html.escape(conditioned)} minus {html.escape(dedicated)}</h3>",
                 _difference_table(comparisons, conditioned, dedicated, others)]
    body.append("</details>")
    first = [p for p in plots if p.name == "sdr.png"] or list(plots[:1])  # the headline plot shown, the rest folded
    body += [f"<h2>Per-track scores</h2><img class='plot' src='{quote(p.name)}' alt='{html.escape(p.stem)}'>"
             for p in first]
    if len(plots) > len(first):
        body.append("<details><summary>The other metrics' plots</summary>"
                    + "".join(f"<img class='plot' src='{quote(p.name)}' alt='{html.escape(p.stem)}'>"
                              for p in plots if p not in first) + "</details>")
    body.append("<h2>Listen</h2><p class='note'>Per track, the same excerpt of the mixture, the reference and "
                "each model's estimate of every condition scored, with that track's SDR (median over its frames) "
                "under each player, and a spectrogram of each (log frequency 40 Hz-16 kHz, one dB scale).</p>")
    with atomic_folder(folder, replace=True) as tmp:
        (tmp / _OURS).write_text("written by conditioned-sep's evaluation; replaced whole by the next run\n")
        body.append(_listening(tmp, tracks, columns, sdr))
    page = out / "index.html"
    atomic_write_text(page, "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
                            + "\n".join(body) + "\n</body></html>\n")
    return page
