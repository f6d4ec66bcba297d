"""Separators over a test set -> per-track, per-condition BSS Eval v4 frames -> tables and plots.

The question this module answers: does one conditioned model separate each stem as well as dedicated ones, and
at what cost? Every model runs on every test track for every condition it can answer and is scored with BSS
Eval v4 (:func:`conditioned_sep.metrics.bss_eval`), beside two reference rows computed on the same tracks: the
oracle ideal ratio mask at the models' STFT (the upper bound of masking) and the mixture as the estimate (the
floor).

Scoring sets (SIR and SAR depend on the set of sources scored together):

- a single stem is scored jointly with the other three: ``[vocals, drums, bass, other]``;
- a sum such as ``drums+bass`` is scored as one source beside each stem it leaves out, ``[drums+bass, vocals,
  other]``; ``accompaniment`` is the 2-source problem ``[accompaniment, vocals]``. The estimates beside the sum
  are the model's own single-stem estimates (they only matter for BSS Eval's silent-frame rule).

The oracle row is the ideal ratio mask at the first model's STFT, IRM2 by default (the power mask
``|S_j|^2 / sum_k |S_k|^2`` of sigsep's oracle benchmarks; ``oracle="irm1"`` takes magnitudes), applied to the
mixture STFT; a sum's mask is the sum of its stems' masks. The mixture row uses the mixture as every estimate.

A model that cannot answer a stem of the scoring set (a dedicated set without a bass model) gets the mixture
in its place, so that the set stays the same for every model; only the conditions it answers are reported.
Dedicated sets answer a sum by summing their single-stem outputs, the conditioned model by its own ``z``.

Results folder (``out``)::

    results.md, results.csv        per-condition table with bootstrap intervals, differences with intervals,
                                   verdicts and Wilcoxon p, cost
    frames.csv                     every frame of every model (and seed), track and condition, with each frame's
                                   numerical sensitivity and unstable flag
    condition.csv                  per model, track and condition: the references' condition figure (gram_rcond)
                                   and the count of frames whose ISR/SIR/SAR are not stable to 0.1 dB
    sdr.png sir.png sar.png isr.png new_sdr.png
    museval/<model>/<split>/<track>.json   museval format (``museval.MethodStore().add_eval_dir``)
    tracks/<model>/<track>.json    the resume cache: one file per model and track, written atomically
    index.html, listen/            the listening page (:mod:`conditioned_sep.page`; none with ``--no-page``)
    clips/<track>/                 the page's excerpts, written while a track is scored (``track/``: mixture and
                                   references; ``rows/<model>/``: a model's estimates), so that a resumed run has them

With ``estimates`` (``--estimates DIR``), the separated stems go to ``DIR/<model>/<split>/<track>/<condition>.wav``;
a resumed run separates again any cached track whose estimate files are missing.

Command line: ``python evaluate.py [CHECKPOINT_OR_SET ...] [--out DIR] [--musdb [PATH] | --folder PATH]`` (see
:func:`add_arguments`); ``conditioned-sep evaluate`` is the same. API: :func:`evaluate` ``(EvalConfig) ->
EvaluationResult``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import page, report
from .audio import to_numpy, write_audio
from .chunking import overlap_add
from .data.sources import DatasetSpec, prepare, split_tracks
from .runs import CheckpointSet
from .separator import SeparatorOptions
from .fileio import atomic_write_text, check_writable
from .hardware import PRECISION_CHOICES
from .metrics import METRICS, ReferenceSet, new_sdr, no_huge_pages
from .museval_io import write_museval_json
from .report import ConditionScores, ModelCost
from .spectral import ISTFT, STFT
from .data.vocabulary import load_references, with_vocabulary
from .stems import FINE_STEMS, STEMS, StemQuery, check_vocabulary, expand, parse_queries

DEFAULT_SUMS: tuple[str, ...] = ("accompaniment", "drums+bass")
"""Sums of stems evaluated besides the four single stems."""

ORACLES = ("irm2", "irm1", "none")
CACHE_VERSION = 3  # 2: unit-bearing window_seconds / hop_seconds; 3: seed, sensitivity, gram_rcond
_FALLBACK_STFT = (4096, 1024)
_ORACLE_CHUNK = 1 << 18  # samples per oracle stretch (~6 s at 44.1 kHz): bounds the oracle's STFT memory


class EvaluationError(ValueError):
    """Bad evaluation input: no checkpoint found, an unknown dataset, a bad sum, a name used twice."""


# --------------------------------------------------------------------------------------------------------------
# What to evaluate
# --------------------------------------------------------------------------------------------------------------


ModelSpec = CheckpointSet
"""One model row: a conditioned checkpoint, or a set of checkpoints (one dedicated model per stem)."""


@dataclass
class EvalConfig:
    """Everything one evaluation run needs. ``jobs`` > 1 scores tracks in that many processes. The ``help`` of each
    field is the command line's (``evaluate.py --help``)."""

    models: list[ModelSpec]
    out: Path = field(default=Path("results"), metadata={"help": "results folder"})
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    split: str = field(default="test", metadata={"help": "split to evaluate"})
    tracks: int | None = field(default=None, metadata={"help": "only the first N tracks (by name)", "metavar": "N"})
    sums: tuple[str, ...] = field(default=DEFAULT_SUMS, metadata={
        "help": "sum conditions, comma-separated, or none"})
    oracle: str = field(default="irm2", metadata={
        "help": "oracle ideal ratio mask row: irm2 (power), irm1 (magnitude) or none", "choices": ORACLES})
    mixture: bool = field(default=True, metadata={"help": "the mixture-as-estimate row"})
    jobs: int = field(default=1, metadata={"help": "score tracks in N processes", "metavar": "N"})
    estimates: Path | None = field(default=None, metadata={
        "help": "also write the separated stems: DIR/<model>/<split>/<track>/<condition>.wav", "metavar": "DIR"})
    niter: int = field(default=SeparatorOptions.niter, metadata={"help": "Wiener filter iterations of the separators"})
    device: str = field(default=SeparatorOptions.device, metadata={"help": "torch device of the separators"})
    precision: str = field(default=SeparatorOptions.precision, metadata={
        "help": "the separators' network precision (see conditioned-sep separate --help)",
        "choices": PRECISION_CHOICES})
    progress: bool = field(default=True, metadata={"help": "progress bar"})
    restart: bool = field(default=False, metadata={"help": "score every track again (ignore the cache)"})
    page: bool = field(default=True, metadata={
        "help": "the listening page index.html (tables, plots, players of an excerpt of every track)"})
    page_full: bool = field(default=False, metadata={"help": "whole tracks on the listening page, not excerpts"})
    stems: tuple[str, ...] | None = field(default=None, metadata={
        "help": "the stem vocabulary scored, comma-separated (default: the first model's, else vocals,drums,bass,"
                "other); every model must have it"})

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.estimates = None if self.estimates is None else Path(self.estimates)
        self.stems = None if self.stems is None else check_vocabulary(self.stems)
        if self.tracks is not None and not self.tracks >= 1:
            raise EvaluationError(f"--tracks must be >= 1 (the first N tracks of the split), got {self.tracks}; "
                                  "leave it out to evaluate every track")
        # names checked now (a typo fails before any model loads), against the vocabulary at evaluate()
        self.sums = tuple(q.name for q in parse_sums(self.sums, vocabulary=self.stems or FINE_STEMS, check=False))


def parse_sums(sums: str | Sequence[str], *, vocabulary: Sequence[str] = STEMS, check: bool = True
               ) -> list[StemQuery]:
    """Sum conditions (e.g. "accompaniment,drums+bass") over ``vocabulary``; "none" or "" for none. With ``check``
    each must sum 2 to all-but-one entries of the vocabulary."""
    items = [item.strip() for item in (sums.split(",") if isinstance(sums, str) else sums)]
    if [item.lower() for item in items if item] in ([], ["none"]):
        return []
    queries = parse_queries(items, vocabulary=vocabulary)
    for q in queries if check else ():
        if not 2 <= len(q.stems) < len(vocabulary):
            raise EvaluationError(
                f"sum condition {q.name!r} = {'+'.join(q.stems)}: a sum must name 2 to {len(vocabulary) - 1} stems "
                "(single stems are always evaluated; the sum of all stems is the mixture)"
            )
    return queries


def conditions(vocabulary: Sequence[str], sums: Sequence[str]) -> list[StemQuery]:
    """Every condition evaluated over ``vocabulary``: each entry that a query names by itself (with a finer
    vocabulary, ``other`` is the remainder and cannot be asked for alone), then each coarse stem the vocabulary
    splits (``other`` = the remainder plus the listed parts: the answer MUSDB18's ``other`` expects), then
    ``sums``."""
    singles = [StemQuery(s, (s,)) for s in vocabulary if expand(s, vocabulary) == (s,)]
    coarse = [StemQuery(s, expand(s, vocabulary)) for s in STEMS if len(expand(s, vocabulary)) > 1]
    names = {q.name for q in singles + coarse}
    try:
        summed = parse_sums(list(sums), vocabulary=vocabulary)
    except ValueError as err:  # e.g. the default sums over a vocabulary of one or two stems
        raise EvaluationError(f"{err}: the sum conditions {','.join(sums)} cannot be formed over the vocabulary "
                              f"{','.join(vocabulary)}; pass --sums none, or sums of its stems") from err
    return singles + coarse + [q for q in summed if q.name not in names]


def scoring_set(query: StemQuery, vocabulary: Sequence[str] = STEMS) -> tuple[str, ...]:
    """The sources scored jointly for a condition: the condition, then each vocabulary entry it leaves out."""
    return (query.name, *(s for s in vocabulary if s not in query.stems))


# --------------------------------------------------------------------------------------------------------------
# Test tracks
# --------------------------------------------------------------------------------------------------------------


def load_tracks(config: EvalConfig) -> list:
    """The test tracks of ``config`` (its dataset and split), sorted by name, the first ``config.tracks`` of them
    when set."""
    tracks = split_tracks(prepare(config.dataset, progress=config.progress), config.split)
    tracks = sorted(tracks, key=lambda t: t.name)[: config.tracks]
    if not tracks:
        raise EvaluationError(f"no track in the {config.split} split of {config.dataset.describe()}")
    return tracks


def _safe(name: str) -> str:
    """A file name for a model or track name: characters other than letters, digits, space and ``.()-&,'+_``
    become ``_``."""
    return re.sub(r"[^\w .()\-&,'+]", "_", name).strip() or "_"


# --------------------------------------------------------------------------------------------------------------
# Models and reference rows
# --------------------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Row(ABC):
    """One row of the results: a separator, the oracle or the mixture; each implements :meth:`estimate`.

    ``name`` is unique (the cache's key); ``model`` is the name in the tables, shared by the seeds of one model."""

    name: str
    model: str
    seed: int | None = None
    kind: str
    stems: tuple[str, ...]
    num_parameters: int | None = None
    fingerprint: str

    @abstractmethod
    def estimate(self, mixture: np.ndarray, references: np.ndarray, queries: list[StemQuery], rate: int
                 ) -> tuple[dict[str, np.ndarray], float]:
        """``mixture (c, n)``, ``references (s, c, n)`` at ``rate`` Hz -> ``({condition: (c, n)}, seconds)``:
        numpy estimates of ``queries`` and the seconds the separation took (0 for reference rows)."""


class _SeparatorRow(_Row):
    def __init__(self, spec: ModelSpec, *, niter: int, device: str, precision: str) -> None:
        self.separator = spec.load(niter=niter, device=device, precision=precision)
        self.name, self.model, self.seed = spec.label, spec.name, spec.seed
        self.kind = "conditioned" if self.separator.is_conditioned else "dedicated"
        self.stems = tuple(self.separator.stems)  # what it answers: a dedicated set, the stems it has models for
        self.vocabulary = tuple(self.separator.config.stems)
        self.num_parameters = int(self.separator.num_parameters)
        self.fingerprint = "|".join([*(_sha256(p) for p in spec.paths), f"niter={niter}",
                                     *([f"precision={self.separator.precision}"] if self.separator.precision != "fp32"
                                       else [])])  # fp32's fingerprint as before: old caches stay valid
        # one short pass first, so that one-time start-up costs (thread pools, allocator) are not timed
        rate = self.separator.sample_rate
        self.separator.separate(np.zeros((2, rate // 2), np.float32), stems=list(self.stems), sample_rate=rate)

    def stft_size(self) -> tuple[int, int]:
        return int(self.separator.config.n_fft), int(self.separator.config.hop_length)

    def estimate(self, mixture, references, queries, rate):
        # timed: the single stems (a conditioned model's sums are extra passes, a dedicated set's sums are additions)
        singles = [q for q in queries if q.is_single and q.name == q.stems[0]]
        first = singles if self.kind == "conditioned" else queries
        rest = [q for q in queries if q not in first]
        start = time.perf_counter()
        out = self.separator.separate(mixture, stems=[q.name for q in first], sample_rate=rate)
        seconds = time.perf_counter() - start
        estimates = {k: to_numpy(v) for k, v in out.items()}
        if rest:
            out = self.separator.separate(mixture, stems=[q.name for q in rest], sample_rate=rate)
            estimates.update({k: to_numpy(v) for k, v in out.items()})
        return estimates, seconds


class _OracleRow(_Row):
    """Ideal ratio mask from the true stems at a given STFT: ``|S_j|^p / sum_k |S_k|^p`` applied to the mixture
    STFT, p = 2 (IRM2, the power mask of sigsep's oracle benchmarks) or 1 (IRM1). A sum's mask is the sum of its
    stems' masks.

    The track is processed ``chunk`` samples at a time (each with ``n_fft`` samples of context on both sides), so
    memory stays bounded (a few hundred MB at 44.1 kHz stereo, n_fft 4096) whatever the track's length; the result
    equals the whole-track oracle up to float32 round-off.
    """

    def __init__(self, kind: str, *, n_fft: int, hop_length: int, vocabulary: Sequence[str] = STEMS,
                 chunk: int = _ORACLE_CHUNK) -> None:
        if chunk < hop_length:
            raise EvaluationError(f"oracle chunk ({chunk} samples) must be at least one hop ({hop_length})")
        self.power = {"irm1": 1, "irm2": 2}[kind]
        self.name, self.kind, self.stems = f"oracle-{kind}", "reference", tuple(vocabulary)
        self.model = self.name
        self.stft, self.istft = STFT(n_fft=n_fft, hop_length=hop_length), ISTFT(n_fft=n_fft, hop_length=hop_length)
        self.chunk = chunk // hop_length * hop_length
        self.fingerprint = f"{self.name}|{n_fft}|{hop_length}"

    def estimate(self, mixture, references, queries, rate):
        def masked(part: torch.Tensor) -> torch.Tensor:  # (s, c, m) -> (q, c, m)
            return torch.from_numpy(np.stack(list(self._masked(part.numpy(), queries).values())))

        # n_fft of context on each side and starts on the hop grid: every STFT frame that touches a chunk's
        # output is then a frame of the whole-track STFT, so the result is the whole-track oracle's
        refs = torch.from_numpy(np.ascontiguousarray(references, dtype=np.float32))  # (s, c, n)
        out = overlap_add(masked, refs, chunk=self.chunk, grid=self.stft.hop_length, context=self.stft.n_fft)
        return {q.name: out[i].numpy() for i, q in enumerate(queries)}, 0.0

    @torch.no_grad()
    def _masked(self, references: np.ndarray, queries: list[StemQuery]) -> dict[str, np.ndarray]:
        """The oracle estimates of one stretch ``(sources, channels, samples)`` -> ``{condition: (c, samples)}``."""
        # s: sources, c: channels, f: freq, t: frames
        refs = torch.from_numpy(np.ascontiguousarray(references, dtype=np.float32))
        spec = self.stft(refs)  # (s, c, f, t)
        weight = spec.abs().pow_(self.power)
        masks = weight.div_(weight.sum(0, keepdim=True).clamp_min_(1e-12))
        mix_spec = spec.sum(0)  # (c, f, t)
        out = {}
        for q in queries:
            mask = sum(masks[self.stems.index(s)] for s in q.stems)
            out[q.name] = self.istft((mask * mix_spec)[None], length=refs.shape[-1])[0].numpy()
        return out


class _MixtureRow(_Row):
    def __init__(self, vocabulary: Sequence[str] = STEMS) -> None:
        self.name, self.kind, self.stems, self.fingerprint = "mixture", "reference", tuple(vocabulary), "mixture"
        self.model = self.name

    def estimate(self, mixture, references, queries, rate):
        return {q.name: mixture for q in queries}, 0.0


def _build_rows(config: EvalConfig) -> tuple[list[_Row], tuple[str, ...]]:
    """The rows and the vocabulary they are scored over (``config.stems``, else the first model's)."""
    rows: list[_Row] = [_SeparatorRow(spec, niter=config.niter, device=config.device, precision=config.precision)
                        for spec in config.models]
    vocabulary = config.stems or (rows[0].vocabulary if rows else STEMS)
    for row in rows:
        if row.vocabulary != vocabulary:
            raise EvaluationError(
                f"model {row.name!r} has the stem vocabulary {', '.join(row.vocabulary)}, not "
                f"{', '.join(vocabulary)}: a condition such as 'other' means different things in the two; evaluate "
                "models of one vocabulary at a time (or pass --stems matching the model)")
    if config.oracle != "none":
        size = rows[0].stft_size() if rows else _FALLBACK_STFT  # the STFT of the first model
        rows.append(_OracleRow(config.oracle, n_fft=size[0], hop_length=size[1], vocabulary=vocabulary))
    if config.mixture:
        rows.append(_MixtureRow(vocabulary))
    return rows, vocabulary


# --------------------------------------------------------------------------------------------------------------
# Scoring one track
# --------------------------------------------------------------------------------------------------------------


def _conditions_for(row: _Row, wanted: list[StemQuery]) -> list[StemQuery]:
    """The conditions of ``wanted`` a row answers: all of them, except for a dedicated set that lacks a model for
    one of a condition's entries."""
    return [q for q in wanted if row.kind != "dedicated" or set(q.stems) <= set(row.stems)]


def _score(row: _Row, track_name: str, references: np.ndarray, mixture: np.ndarray,
           estimates: dict[str, np.ndarray], queries: list[StemQuery], rate: int,
           prepared: dict[tuple[str, ...], ReferenceSet] | None = None,
           vocabulary: Sequence[str] = STEMS) -> list[ConditionScores]:
    """BSS Eval v4 of every condition in ``queries``, each in its scoring set (see the module docstring).

    ``prepared`` keeps each scoring set's reference side (:class:`~conditioned_sep.metrics.ReferenceSet`: the
    reference correlations, the solver, the condition figure) for the other rows of the same track: give every row
    of a track the same dict (empty for the track's first row) and the track is prepared once for all rows. Sources
    go in as lists of per-source arrays, so nothing the size of the track is stacked.
    """
    prepared = {} if prepared is None else prepared
    vocabulary = tuple(vocabulary)
    refs = {s: references[i] for i, s in enumerate(vocabulary)}
    ests = {s: estimates.get(s, mixture) for s in vocabulary}  # an entry the row did not answer: the mixture
    scores: list[ConditionScores] = []
    singles = [q for q in queries if q.is_single and q.name == q.stems[0]]
    if singles:
        if vocabulary not in prepared:
            prepared[vocabulary] = ReferenceSet(references, sample_rate=rate)
        est = [ests[s] for s in vocabulary]
        result, whole = prepared[vocabulary].evaluate(est), _whole_track_sdr(list(references), est)
        for q in singles:
            i = vocabulary.index(q.stems[0])
            scores.append(_condition_scores(row, track_name, q.name, scoring_set(q, vocabulary), result, i,
                                            whole[i]))
    for q in queries:
        if q in singles:
            continue
        sources = scoring_set(q, vocabulary)
        target = refs[q.stems[0]].astype(np.float64)  # float64: the exact sum, as ReferenceSet.combine needs
        for s in q.stems[1:]:
            target += refs[s]
        if sources not in prepared:
            references = [target, *(refs[s] for s in sources[1:])]
            if vocabulary in prepared:  # the sum's reference correlations from the stems' (no pass over the samples)
                weights = np.array([[float(s in q.stems) for s in vocabulary]]
                                   + [[float(s == other) for s in vocabulary] for other in sources[1:]])
                prepared[sources] = prepared[vocabulary].combine(weights, references)
            else:
                prepared[sources] = ReferenceSet(references, sample_rate=rate)
        result = prepared[sources].evaluate([estimates[q.name], *(ests[s] for s in sources[1:])])
        scores.append(_condition_scores(row, track_name, q.name, sources, result, 0,
                                        _whole_track_sdr([target], [estimates[q.name]])[0]))
    return scores


def _whole_track_sdr(ref: Sequence[np.ndarray], est: Sequence[np.ndarray]) -> np.ndarray:
    """MDX new SDR per source ``(sources,)`` of per-source ``(channels, samples)`` arrays, NaN for a reference that is
    silent for the whole track: MDX's formula gives it -100 dB (or +100 dB), which would drag every median and mean;
    BSS Eval leaves such sources out too."""
    sdr = new_sdr(ref, est)
    return np.where([np.any(r != 0) for r in ref], sdr, np.nan)


def _condition_scores(row: _Row, track, condition, sources, result, index, nsdr) -> ConditionScores:
    frames = {m: np.asarray(getattr(result, m.lower())[index], dtype=np.float64) for m in METRICS}
    sensitivity = None if result.sensitivity is None else np.asarray(result.sensitivity[index], dtype=np.float64)
    return ConditionScores(model=row.model, track=track, condition=condition, sources=tuple(sources), frames=frames,
                           new_sdr=float(nsdr), window_seconds=result.window_samples / result.sample_rate,
                           hop_seconds=result.hop_samples / result.sample_rate, seed=row.seed,
                           sensitivity=sensitivity, gram_rcond=float(result.gram_rcond))


@dataclass
class _TrackRecord:
    """One model on one track: its scores and the time its separation took (the resume cache's content)."""

    model: str
    track: str
    fingerprint: str
    scores: list[ConditionScores]
    seconds: float
    audio_seconds: float

    def to_json(self) -> str:
        return json.dumps({
            "version": CACHE_VERSION, "model": self.model, "track": self.track, "fingerprint": self.fingerprint,
            "seconds": self.seconds, "audio_seconds": self.audio_seconds, "scores": [s.to_dict() for s in self.scores],
        })

    @classmethod
    def from_json(cls, text: str) -> _TrackRecord:
        data = json.loads(text)
        if data.get("version") != CACHE_VERSION:
            raise ValueError(f"cache version {data.get('version')} != {CACHE_VERSION}")
        return cls(model=data["model"], track=data["track"], fingerprint=data["fingerprint"],
                   scores=[ConditionScores.from_dict(s) for s in data["scores"]], seconds=float(data["seconds"]),
                   audio_seconds=float(data["audio_seconds"]))


def _record_fingerprint(row: _Row, config: EvalConfig, wanted: list[StemQuery]) -> str:
    """What a cached record must match to be reused: the row (checkpoint hashes, settings), its conditions and
    the dataset; anything else changed means the track is scored again."""
    names = ",".join(f"{q.name}={'+'.join(q.stems)}" for q in _conditions_for(row, wanted))
    data = config.dataset
    return f"{row.fingerprint}|conditions={names}|data={data.kind}:{data.root}:{config.split}"


def _cache_path(out: Path, model: str, track: str) -> Path:
    return out / "tracks" / _safe(model) / f"{_safe(track)}.json"


def _read_cache(out: Path, row_name: str, track: str, fingerprint: str) -> _TrackRecord | None:
    path = _cache_path(out, row_name, track)
    if not path.is_file():
        return None
    try:
        record = _TrackRecord.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError) as err:  # a stale or foreign file: score the track again
        print(f"evaluate: ignoring unreadable cache {path} ({err}); scoring again", file=sys.stderr)
        return None
    return record if record.fingerprint == fingerprint and record.track == track else None


def _write_outputs_for_track(config: EvalConfig, record: _TrackRecord, split: str) -> None:
    path = _cache_path(config.out, record.model, record.track)
    path.parent.mkdir(parents=True, exist_ok=True)
    if record.scores:
        first = record.scores[0]
        write_museval_json(config.out / "museval" / _safe(record.model),
                           {s.condition: s.frames for s in record.scores}, track_name=_safe(record.track),
                           subset=split, window_seconds=first.window_seconds, hop_seconds=first.hop_seconds)
    # the cache last: a track counts as done only when all of its files exist
    atomic_write_text(path, record.to_json())


def _evaluate_track(track, rows: list[_Row], todo: list[str], config: EvalConfig, wanted: list[StemQuery],
                    vocabulary: tuple[str, ...], clips_only: Sequence[str] = ()) -> list[_TrackRecord]:
    with no_huge_pages():  # large arrays come and go for minutes: see metrics.no_huge_pages
        return _evaluate_track_rows(track, rows, todo, config, wanted, vocabulary, clips_only)


def _evaluate_track_rows(track, rows: list[_Row], todo: list[str], config: EvalConfig, wanted: list[StemQuery],
                         vocabulary: tuple[str, ...], clips_only: Sequence[str] = ()) -> list[_TrackRecord]:
    """Score the rows named in ``todo`` on ``track`` (and write their page clips); of the rows named in
    ``clips_only`` (scores cached, clips missing) only separate the track and write the clips."""
    rate = int(track.sample_rate)
    references = load_references(track, vocabulary)  # (stems, c, samples) float32
    mixture = references.sum(0)
    span = page.excerpt_span(references, rate, seconds=None if config.page_full else page.EXCERPT_SECONDS)
    records = []
    prepared: dict = {}  # one factorisation of each scoring set's references, shared by every row
    # the page's clips encode in the background while the rows are scored and are published at the end of the
    # track; a run killed before that has the rows' scores but not their clips, which it then separates again
    with contextlib.ExitStack() as clips:
        if config.page and not _track_clips_ready(config, track, wanted):
            clips.enter_context(page.writing_clips(
                _clip_folder(config, track), {"mixture": mixture, **{q.name: _reference(references, vocabulary, q)
                                                                     for q in wanted}},
                rate=rate, span=span, key=_track_clips_key(config, track)))
        for row in rows:
            if row.name not in todo and row.name not in clips_only:
                continue
            queries = _conditions_for(row, wanted)
            estimates, seconds = row.estimate(mixture, references, queries, rate)
            if config.page and _on_page(row, rows):
                clips.enter_context(page.writing_clips(
                    _clip_folder(config, track, row), {q.name: estimates[q.name] for q in queries}, rate=rate,
                    span=span, key=_row_clips_key(row, config, wanted)))
            if row.name not in todo:
                continue
            if config.estimates is not None and row.kind != "reference":
                for q in queries:
                    path = _estimate_path(config, row.name, track, q.name)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_audio(path, estimates[q.name], rate, subtype="FLOAT")
            scores = _score(row, track.name, references, mixture, estimates, queries, rate, prepared=prepared,
                            vocabulary=vocabulary)
            record = _TrackRecord(model=row.name, track=track.name, scores=scores, seconds=seconds,
                                  fingerprint=_record_fingerprint(row, config, wanted),
                                  audio_seconds=references.shape[-1] / rate)
            _write_outputs_for_track(config, record, track_split(track, config))
            records.append(record)
    return records


def _reference(references: np.ndarray, vocabulary: Sequence[str], query: StemQuery) -> np.ndarray:
    """The reference of a condition ``(channels, samples)``: the sum of its stems."""
    return references[[vocabulary.index(s) for s in query.stems]].sum(0)


def _on_page(row: _Row, rows: list[_Row]) -> bool:
    """Whether a row's estimates are played on the listening page: the first seed of each model and the oracle
    (the mixture row's estimate is the mixture, played once per track)."""
    return not isinstance(row, _MixtureRow) and next(r for r in rows if r.model == row.model) is row


def _clip_folder(config: EvalConfig, track, row: _Row | None = None) -> Path:
    """``clips/<track>/track`` (mixture and references) or ``clips/<track>/rows/<row>`` (a row's estimates)."""
    folder = config.out / "clips" / _safe(track.name)
    return folder / "track" if row is None else folder / "rows" / _safe(row.name)


def _clips_setting(config: EvalConfig) -> str:
    return f"full={config.page_full}|seconds={page.EXCERPT_SECONDS}"


def _track_clips_key(config: EvalConfig, track) -> str:
    data = config.dataset
    return f"{track.name}|data={data.kind}:{data.root}:{config.split}|{_clips_setting(config)}"


def _row_clips_key(row: _Row, config: EvalConfig, wanted: list[StemQuery]) -> str:
    return f"{_record_fingerprint(row, config, wanted)}|{_clips_setting(config)}"


def _track_clips_ready(config: EvalConfig, track, wanted: list[StemQuery]) -> bool:
    return page.clips_ready(_clip_folder(config, track), key=_track_clips_key(config, track),
                            names=["mixture", *(q.name for q in wanted)])


def _clips_missing(config: EvalConfig, row: _Row, track, rows: list[_Row], wanted: list[StemQuery]) -> bool:
    """Whether the page wants clips of this row that are not there, or were made from something else (another
    checkpoint, another excerpt setting): the track is then separated again, not scored."""
    return config.page and _on_page(row, rows) and not page.clips_ready(
        _clip_folder(config, track, row), key=_row_clips_key(row, config, wanted),
        names=[q.name for q in _conditions_for(row, wanted)])


def track_split(track, config: EvalConfig) -> str:
    return str(getattr(track, "split", None) or config.split)


def _estimate_path(config: EvalConfig, model: str, track, condition: str) -> Path:
    """``estimates/<model>/<split>/<track>/<condition>.wav`` (musdb's layout)."""
    return config.estimates / _safe(model) / track_split(track, config) / _safe(track.name) / f"{condition}.wav"


def _estimates_missing(config: EvalConfig, row: _Row, track, wanted: list[StemQuery]) -> bool:
    """Whether ``--estimates`` wants a file of this row and track that is not there (the scores may be cached
    from a run without ``--estimates``: the track is then separated again)."""
    if config.estimates is None or row.kind == "reference":
        return False
    return any(not _estimate_path(config, row.name, track, q.name).is_file() for q in _conditions_for(row, wanted))


# worker processes (jobs > 1): rows and tracks are built once per process
_WORKER: dict = {}


def _exit_with_parent(parent: int, *, poll: float = 0.5) -> None:
    """End this worker process when ``parent`` is gone (a killed evaluation must not leave workers holding memory):
    a daemon thread watches for the worker being re-parented."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(config: EvalConfig, threads: int, parent: int) -> None:
    _exit_with_parent(parent)
    torch.set_num_threads(threads)  # a worker process of our own: share the cores between workers
    _WORKER["config"] = config
    _WORKER["rows"], _WORKER["vocabulary"] = _build_rows(config)
    _WORKER["tracks"] = {t.name: t for t in load_tracks(config)}
    _WORKER["wanted"] = conditions(_WORKER["vocabulary"], config.sums)


def _worker_task(track_name: str, todo: list[str], clips_only: list[str]) -> list[_TrackRecord]:
    w = _WORKER
    return _evaluate_track(w["tracks"][track_name], w["rows"], todo, w["config"], w["wanted"], w["vocabulary"],
                           clips_only)


# --------------------------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns: every score, the aggregate table, the differences, the costs, the markdown,
    and the files written."""

    scores: list[ConditionScores]
    table: list[report.AggregateRow]
    comparisons: list[report.ComparisonRow]
    costs: list[ModelCost]
    markdown: str
    files: dict[str, Path]


def evaluate(config: EvalConfig) -> EvaluationResult:
    """Run (or resume) an evaluation and write the results folder; see the module docstring."""
    if config.oracle not in ORACLES:
        raise EvaluationError(f"unknown oracle {config.oracle!r}; use one of {', '.join(ORACLES)}")
    if config.jobs < 1:
        raise EvaluationError(f"jobs must be >= 1, got {config.jobs}")
    out = Path(config.out)
    for folder, option in ((out, "--out"), (config.estimates, "--estimates")):
        if folder is None:
            continue
        try:
            check_writable(folder)  # before any model runs, not at the first result
        except OSError as err:
            raise EvaluationError(f"{err}; pass {option} DIR with a folder you can write to") from err
    try:
        return _evaluate(config, out)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise EvaluationError(
            f"cannot write {err.filename or 'the results'} ({err.strerror}): {shutil.disk_usage(out).free / 1e6:.0f} "
            f"MB free on the disk of {out}; free space or pass another --out (the tracks already scored are kept: "
            "the same command continues)") from err


def _evaluate(config: EvalConfig, out: Path) -> EvaluationResult:
    """:func:`evaluate` once its settings and folders are checked."""
    rows, vocabulary = _build_rows(config)
    if not rows:
        raise EvaluationError("nothing to evaluate: give a checkpoint, or keep the oracle or mixture row")
    wanted = conditions(vocabulary, config.sums)
    tracks = load_tracks(config)
    with_vocabulary(tracks[0], vocabulary)  # a dataset without the vocabulary's stems fails here, naming the way out

    records: dict[tuple[str, str], _TrackRecord] = {}
    todo: dict[str, list[str]] = {}
    clips_only: dict[str, list[str]] = {}  # scores cached, page clips missing: separated again, not scored
    for track in tracks:
        for row in rows:
            fingerprint = _record_fingerprint(row, config, wanted)
            cached = None if config.restart else _read_cache(out, row.name, track.name, fingerprint)
            if cached is not None and not _estimates_missing(config, row, track, wanted):
                records[(row.name, track.name)] = cached
                if _clips_missing(config, row, track, rows, wanted):
                    clips_only.setdefault(track.name, []).append(row.name)
            else:
                todo.setdefault(track.name, []).append(row.name)
        if config.page and track.name not in todo and not _track_clips_ready(config, track, wanted):
            clips_only.setdefault(track.name, [])  # the track's own clips (mixture, references) only
    todo = {t.name: todo.get(t.name, []) for t in tracks if t.name in todo or t.name in clips_only}
    if todo:
        bar = tqdm(total=len(todo), desc="evaluate", unit="track", disable=not config.progress, file=sys.stderr)
        if records:
            scored = len(tracks) - sum(1 for names in todo.values() if names)
            bar.write(f"evaluate: resuming, {scored} of {len(tracks)} tracks already scored")
        by_name = {t.name: t for t in tracks}
        try:
            if config.jobs == 1:
                for name, names in todo.items():
                    for record in _evaluate_track(by_name[name], rows, names, config, wanted, vocabulary,
                                                  clips_only.get(name, [])):
                        records[(record.model, record.track)] = record
                    bar.update(1)
            else:
                _evaluate_parallel(config, todo, clips_only, records, bar)
        finally:
            bar.close()
    return _finish(config, rows, tracks, records)


def _write_page(config: EvalConfig, rows: list[_Row], tracks, records, *, table, comparisons, plots, title: str
                ) -> Path:
    """The listening page of this run's rows and tracks, from the clips written while scoring."""
    scored = report.order_conditions(s.condition for record in records.values() for s in record.scores)
    columns = []
    for row in rows:
        if _on_page(row, rows):
            seeds = sorted({r.seed for r in rows if r.model == row.model and r.seed is not None})
            label = row.model if len(seeds) < 2 else f"{row.model} (seed {row.seed} of {len(seeds)})"
            columns.append(page.Column(model=row.model, label=label, folders={
                t.name: _clip_folder(config, t, row) for t in tracks}))
    sdr = {}
    for (name, _), record in records.items():
        row = next(r for r in rows if r.name == name)
        if _on_page(row, rows) or isinstance(row, _MixtureRow):
            sdr.update({(row.model, s.track, s.condition): s.track_score("SDR") for s in record.scores})
    clips = [page.TrackClips(name=t.name, conditions=scored, folder=_clip_folder(config, t))
             for t in tracks]
    span = "whole tracks" if config.page_full else f"an excerpt of {page.EXCERPT_SECONDS:g} s per track"
    notes = (f"{span}; estimates of the first seed of each model (its own SDR under each player); the tables are "
             "results.csv's (2 decimals), the plots the PNG files beside this page.")
    return page.write_page(config.out, title=title, table=table, comparisons=comparisons, plots=plots,
                           tracks=clips, columns=columns, sdr=sdr, notes=notes)


def _notes(rows: list[_Row]) -> str:
    """How the table was made, for a reader of results.md."""
    notes = ["BSS Eval v4 (1 s frames). A single stem is scored jointly with the other stems of the vocabulary; a "
             "sum (or a coarse stem split by the vocabulary) beside each stem it leaves out (accompaniment: [accompaniment, vocals]; drums+bass: [drums+bass, vocals, "
             "other]). Dedicated sets answer a sum with the sum of their outputs. A stem silent for a whole track "
             "has no score on that track (BSS Eval gives NaN; new SDR is left out too, where MDX's formula would "
             "give -100 dB)."]
    oracle = next((r for r in rows if isinstance(r, _OracleRow)), None)
    if oracle is not None:
        notes.append(f"{oracle.name}: ideal ratio mask |S_j|^{oracle.power} / sum_k |S_k|^{oracle.power} at "
                     f"n_fft {oracle.stft.n_fft}, hop {oracle.stft.hop_length} (the first model's STFT).")
    if any(isinstance(r, _MixtureRow) for r in rows):
        notes.append("mixture: the mixture as every estimate (the floor).")
    return "Notes: " + " ".join(notes) + "\n"


def _evaluate_parallel(config: EvalConfig, todo: dict[str, list[str]], clips_only: dict[str, list[str]],
                       records: dict, bar) -> None:
    threads = max(1, (os.cpu_count() or 1) // config.jobs)
    # spawn, not fork: a forked torch with live OpenMP threads can hang
    pool = ProcessPoolExecutor(max_workers=config.jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(config, threads, os.getpid()))
    try:
        futures = [pool.submit(_worker_task, name, names, clips_only.get(name, [])) for name, names in todo.items()]
        for future in as_completed(futures):
            for record in future.result():
                records[(record.model, record.track)] = record
            bar.update(1)
    except BaseException:
        # Ctrl-C or a failed track: drop the queued tracks now (running ones finish and are cached atomically)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _finish(config: EvalConfig, rows: list[_Row], tracks, records) -> EvaluationResult:
    out = Path(config.out)
    scores = [s for row in rows for t in tracks for s in records[(row.name, t.name)].scores]
    table = report.summarize(scores)
    kinds = {row.model: row.kind for row in rows}
    comparisons = [c for a, ka in kinds.items() if ka == "conditioned" for b, kb in kinds.items() if kb == "dedicated"
                   for c in report.compare(scores, conditioned=a, dedicated=b)]
    costs = []
    for model, kind in kinds.items():  # the seeds of a model together: their time over their audio
        mine = [records[(row.name, t.name)] for row in rows if row.model == model for t in tracks]
        first = next(row for row in rows if row.model == model)
        costs.append(ModelCost(model=model, kind=kind, num_parameters=first.num_parameters,
                               seconds=sum(r.seconds for r in mine), audio_seconds=sum(r.audio_seconds for r in mine),
                               tracks=len(tracks)))
    n = len(tracks)
    title = f"{n} track{'s' if n != 1 else ''} of the {config.split} split of {config.dataset.describe()}"
    markdown = report.markdown_tables(table, comparisons=comparisons, costs=costs, title=title) + _notes(rows)
    files = {
        "results.md": out / "results.md",
        "results.csv": report.write_results_csv(out / "results.csv", table, comparisons=comparisons, costs=costs),
        "frames.csv": report.write_frames_csv(out / "frames.csv", scores),
        "condition.csv": report.write_condition_csv(out / "condition.csv", scores),
    }
    atomic_write_text(files["results.md"], markdown)
    plots = report.plot_metrics(out, scores)
    for path in plots:
        files[path.name] = path
    if config.page:
        files["index.html"] = _write_page(config, rows, tracks, records, table=table, comparisons=comparisons,
                                          plots=plots, title=title)
    else:
        page.remove_page(out)
    return EvaluationResult(scores=scores, table=table, comparisons=comparisons, costs=costs, markdown=markdown,
                            files=files)
