"""Every argument parser of the project: ``conditioned-sep separate | train | evaluate``.

``train.py`` and ``evaluate.py`` are thin scripts over :func:`run` (the same parsers, under their own names).
Options of ``train`` and ``evaluate`` are derived from the fields of :class:`~conditioned_sep.recipe.TrainConfig`
and :class:`~conditioned_sep.evaluation.EvalConfig` (:func:`add_config_options`), so each default and help text is
written once, in its dataclass. Library code never exits the process: commands return an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
import threading
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import __version__
from .audio import OUTPUT_FORMATS, output_subtype
from .checkpoint import PRETRAINED
from .data.sources import DATASET_KINDS, ROOTED_KINDS, DatasetSpec
from .distributed import world
from .evaluation import EvalConfig, evaluate
from .fileio import ForeignFolderError, check_writable
from .film import FILM_KINDS, Z_INPUTS
from .hardware import resolve_device
from .models import BANDSPLIT_FILM_PLACES, FILM_PLACES
from .runs import DEFAULT_RUN, SEED_FOLDER, choose_checkpoint, discover_models
from .separator import SeparatorOptions
from .stems import STEMS, UnknownStemError, check_vocabulary, parse_queries
from .recipe import RECIPES, TrainConfig, TrainingError, apply_budget
from .training import TrainingInterrupted, existing_run_error, train_many

DESCRIPTION = "One FiLM-conditioned network that extracts whichever stem you name."


# --------------------------------------------------------------------------------------------------------------
# Options derived from dataclass fields
# --------------------------------------------------------------------------------------------------------------


def _exit_code(done: SystemExit) -> int:
    """The exit code argparse asked for (after --help, --version or a usage error): returned, never raised, so
    that library callers of :func:`run` get a code."""
    return int(done.code or 0) if not isinstance(done.code, str) else 2


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value_type(annotation: Any) -> tuple[Any, bool]:
    """``(element type, is_tuple)`` of a field annotation such as ``int``, ``Path | None``, ``tuple[str, ...]``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in args if a is not type(None))
        args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple:
        return args[0], True
    return annotation, False


def _comma_list(element: type) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        return tuple(element(part.strip()) for part in text.split(",") if part.strip())

    parse.__name__ = f"comma-separated {element.__name__}"  # argparse names the type in its errors
    return parse


def add_config_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                       *, names: Sequence[str] | None = None) -> None:
    """Add one option per field of dataclass ``cls`` that has a ``help`` in its metadata (or only ``names``).

    The option is ``--field-name``; its type, default and choices come from the field. A bool field that defaults
    to True becomes ``--no-field-name``, one that defaults to False a plain flag. Tuples take comma-separated
    values. The default is shown in the help, read from the dataclass, never written again here.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta or (names is not None and f.name not in names):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        element, is_tuple = _value_type(hints[f.name])
        kwargs: dict[str, Any] = {"dest": f.name, "default": default}
        if element is bool:
            flag = _flag(f"no_{f.name}") if default else _flag(f.name)
            action = "store_false" if default else "store_true"
            parser.add_argument(flag, action=action, help=meta["help"] + (" off" if default else ""), **kwargs)
            continue
        kwargs["type"] = _comma_list(element) if is_tuple else element
        shown = ",".join(map(str, default)) if is_tuple and default is not None else default
        for key in ("choices", "metavar"):
            if key in meta:
                kwargs[key] = meta[key]
        suffix = "" if default is None else f" (default: {shown})"
        parser.add_argument(_flag(f.name), help=meta["help"] + suffix, **kwargs)


def config_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The parsed values of the options :func:`add_config_options` added for ``cls``, as keyword arguments."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if "help" in f.metadata and hasattr(args, f.name)}


def _dataset(args: argparse.Namespace) -> DatasetSpec:
    for kind in ROOTED_KINDS:  # --folder PATH, --musdb [PATH], --moisesdb [PATH] ("" for the default root)
        root = getattr(args, kind)
        if root is not None:
            return DatasetSpec(kind, Path(root) if root else None)
    return DatasetSpec(args.dataset, args.data_root)


_NAMED_KINDS = tuple(kind for kind in DATASET_KINDS if kind not in ROOTED_KINDS)
"""Dataset kinds chosen by name (--dataset); the others have their own option that takes their root."""


def _add_dataset_options(parser: argparse.ArgumentParser, *, what: str) -> None:
    data = parser.add_argument_group(
        "data (default: the embedded default data: songs rendered from sampled instruments, generated once)")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=_NAMED_KINDS, default="default",
                        help=f"{what} the rendered default songs (default), the oscillator-made synthetic songs "
                             "(the first version's data), or stempeg's 6 s MUSDB18 excerpt (test split only)")
    source.add_argument("--musdb", metavar="PATH", nargs="?", const="", default=None,
                        help=f"{what} MUSDB18 or MUSDB18-HQ (the root; without PATH, $MUSDB_PATH)")
    source.add_argument("--moisesdb", metavar="PATH", nargs="?", const="", default=None,
                        help=f"{what} MoisesDB (the root; without PATH, $MOISESDB_PATH): instrument-level stems")
    source.add_argument("--folder", metavar="PATH", help=f"{what} a stem folder <split>/<track>/<stem>.wav")
    data.add_argument("--data-root", "--synthetic-root", metavar="PATH", type=Path, default=None,
                      help="where --dataset default / synthetic is generated (default: under $CONDITIONED_SEP_DATA, "
                           "else ~/.cache/conditioned-sep)")


# --------------------------------------------------------------------------------------------------------------
# separate
# --------------------------------------------------------------------------------------------------------------


def _song_name(path: Path) -> str:
    name = path.name
    for suffix in reversed(path.suffixes[-2:]):  # "song.stem.mp4" -> "song"
        if suffix.lower() in (".stem", path.suffix.lower()) and name.lower().endswith(suffix.lower()):
            name = name[: -len(suffix)]
    return name or path.name


def add_separate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Separate songs (wav, flac, ogg, mp3; mp4, m4a with ffmpeg) into the stems you ask for: one "
                          "file per requested stem per song, OUT/<song>/<stem>.<format>, at the song's sample rate. "
                          "Songs stream from disk to disk: memory does not grow with their length.")
    parser.add_argument("songs", nargs="+", metavar="SONG", help="audio files")
    parser.add_argument("--stems", "-s", default=None,
                        help="comma-separated stems or sums, e.g. vocals,drums+bass,accompaniment "
                             "(default: every stem the checkpoint separates)")
    parser.add_argument("--out", "-o", type=Path, default=Path("separated"), help="output folder (default: separated)")
    parser.add_argument("--checkpoint", "-c", action="append", default=None, metavar="PATH",
                        help="a checkpoint, a folder with best.ckpt or a training run folder; for a dedicated set, "
                             "one checkpoint per stem (repeat -c, or separate with commas) (default: the shipped "
                             f"model, '{PRETRAINED}'; your own training's: -c {DEFAULT_RUN})")
    add_config_options(parser, SeparatorOptions, names=("niter", "device", "precision"))
    parser.add_argument("--format", "-f", default="wav", choices=tuple(OUTPUT_FORMATS),
                        help="output format (default: wav)")
    parser.add_argument("--subtype", default=None, choices=sorted({t for ts in OUTPUT_FORMATS.values() for t in ts}),
                        help="sample format: wav PCM_16 (default), PCM_24 or FLOAT; flac PCM_16 (default) or PCM_24")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: unwinds like Ctrl-C, so that every open song folder and scratch folder is cleaned up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`_Interrupted` (in the main thread; the first signal only, so that a second
    one does not cut the clean-up short). The earlier handlers are restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if not received:
            received.append(signum)
            raise _Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_separate(args: argparse.Namespace, prog: str) -> int:
    """0 when every song was separated, 1 when some failed, 2 on a usage error (missing checkpoint, unknown
    stem, a format and sample format that do not go together, an unusable device or output folder) before any
    song is read; 130 after Ctrl-C (SIGINT), 143 after SIGTERM, with a summary and the song being separated left
    unwritten."""
    try:
        with _signals_interrupt():
            return _separate_songs(args, prog)
    except KeyboardInterrupt as stop:  # before the first song: nothing written
        print(f"{prog}: interrupted ({_signal_name(stop)}) before any song was separated", file=sys.stderr)
        return _interrupted_code(stop)


def _signal_name(stop: KeyboardInterrupt) -> str:
    return signal.Signals(stop.signum).name if isinstance(stop, _Interrupted) else "SIGINT"


def _interrupted_code(stop: KeyboardInterrupt) -> int:
    """The shell's exit code for a process stopped by the signal: 128 + its number (130 for SIGINT, 143 for
    SIGTERM)."""
    return 128 + (stop.signum if isinstance(stop, _Interrupted) else signal.SIGINT)


def _separate_songs(args: argparse.Namespace, prog: str) -> int:
    """:func:`run_separate` under its signal handlers."""
    try:
        subtype = output_subtype(args.format, args.subtype)
        device = resolve_device(args.device)
        if args.stems is not None:
            queries = parse_queries(args.stems)  # a typo fails here, before any checkpoint is read
        paths = [p for value in (args.checkpoint or [PRETRAINED]) for p in value.split(",") if p]
        separator = choose_checkpoint(paths).load(niter=args.niter, device=device, precision=args.precision)
        if args.stems is None:
            queries = parse_queries(list(separator.stems))
        # a dedicated set answers only its stems and their sums: say so before reading any song
        answerable = STEMS if separator.is_conditioned else tuple(separator.stems)
        for q in queries:
            missing = [s for s in q.stems if s not in answerable]
            if missing:
                raise UnknownStemError(f"the checkpoint cannot answer {q.name!r}: it separates "
                                       f"{', '.join(answerable)}; no model for {', '.join(missing)}")
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"output folder {args.out} is a file; pass -o with a folder (it is created if missing)")
        args.out.mkdir(parents=True, exist_ok=True)
        check_writable(args.out)
    except (ValueError, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2

    failed: list[str] = []
    done: list[str] = []
    written = 0
    used: set[str] = set()
    bar = tqdm(args.songs, desc="separate", unit="song", disable=args.no_progress, file=sys.stderr)
    current = None  # the song being separated
    try:
        for song in bar:
            path = Path(song)
            name = _song_name(path)
            if name in used:  # "song.wav" and "song.mp3" in one call: keep both, the second under its full name
                name = next(n for n in (path.name, *(f"{path.name} ({i})" for i in range(2, 10**6))) if n not in used)
            used.add(name)
            current = song
            try:
                files = separator.separate_file(path, args.out / name, [q.name for q in queries], format=args.format,
                                                subtype=subtype, progress=not args.no_progress)
                written += len(files)
                done.append(song)
            except Exception as err:  # one bad song must not stop the others, whatever its error
                failed.append(song)
                reason = str(err) if isinstance(err, (ValueError, OSError)) else f"{type(err).__name__}: {err}"
                if isinstance(err, ForeignFolderError):
                    reason += " (or pass another -o)"
                bar.write(f"{prog}: error: {song}: {reason}", file=sys.stderr)
            current = None
    except KeyboardInterrupt as stop:
        bar.close()
        left = len(args.songs) - len(done) - len(failed) - (current is not None)
        during = (f"during {current}: its folder was not written (an earlier one is kept)" if current is not None
                  else "between songs")
        print(f"{prog}: interrupted ({_signal_name(stop)}) {during}; {len(done)} of {len(args.songs)} song(s) done "
              f"({written} file(s) in {args.out}), {len(failed)} failed, {left} not started", file=sys.stderr)
        return _interrupted_code(stop)
    bar.close()
    print(f"wrote {written} file(s) for {len(done)} of {len(args.songs)} song(s) to {args.out}", file=sys.stderr)
    if failed:
        print(f"{prog}: {len(failed)} song(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------------------


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Evaluate conditioned and dedicated separators (BSS Eval v4) beside the oracle and the "
                          "mixture, per condition, and compare them.")
    parser.add_argument("models", nargs="*", metavar="CHECKPOINT_OR_SET",
                        help="[NAME=]PATH[,PATH...]: a checkpoint, a folder with best.ckpt, a training run folder "
                             "(conditioned/ and dedicated-<stem>/ subfolders), or comma-separated dedicated "
                             f"checkpoints ('{PRETRAINED}': the shipped model); default {DEFAULT_RUN}")
    parser.add_argument("--pretrained", action="store_true",
                        help="also evaluate the shipped model (conditioned_sep/pretrained/), in a row named "
                             f"'{PRETRAINED}' (beside the models given, e.g. a dedicated set)")
    _add_dataset_options(parser, what="evaluate on")
    add_config_options(parser, EvalConfig)


def evaluate_config(args: argparse.Namespace) -> EvalConfig:
    """The :class:`EvalConfig` of parsed ``evaluate`` arguments."""
    specs = list(args.models)
    if not specs and not args.pretrained:
        if not DEFAULT_RUN.exists():
            raise ValueError(f"no checkpoint given and {DEFAULT_RUN} does not exist: train first "
                             "(python train.py), pass CHECKPOINT_OR_SET, or --pretrained for the shipped model")
        specs = [str(DEFAULT_RUN)]
    if args.pretrained:
        specs.append(f"{PRETRAINED}={PRETRAINED}")
    return EvalConfig(models=discover_models(specs), dataset=_dataset(args), **config_values(args, EvalConfig))


def run_evaluate(args: argparse.Namespace, prog: str) -> int:
    """Prints the markdown table; 2 on a user error (printed)."""
    try:
        config = evaluate_config(args)
        result = evaluate(config)
    except (ValueError, OSError) as err:  # OSError: e.g. a results file that cannot be read or written
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    print(result.markdown)
    page = ", index.html: the listening page" if config.page else ""
    print(f"results in {config.out}/ (results.md, results.csv, frames.csv, *.png, museval/{page})", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------------------------


_TRAIN_OPTIONS = {
    "what to train": ("arch", "preset", "stems"),
    "budget and optimisation": ("budget", "steps", "epochs", "steps_per_epoch", "batch_size", "accumulate", "lr",
                                "lr_final", "warmup_steps", "weight_decay", "grad_clip", "wave_loss", "ema_decay",
                                "patience", "valid_seconds", "time_limit", "seed"),
    "output": ("out", "name", "resume", "overwrite", "checkpoint_every", "tensorboard", "progress"),
    "hardware": ("device", "precision", "compile", "threads", "workers", "stem_cache"),
}
"""TrainConfig fields offered as options, by group (each option's default and help come from its field)."""


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Train a conditioned separator or dedicated baselines."
    groups = {title: parser.add_argument_group(title) for title in _TRAIN_OPTIONS}
    what = groups["what to train"]
    what.add_argument("--dedicated", metavar="STEM", default=None,
                      help=f"train a dedicated baseline for STEM (one of --stems, default {', '.join(STEMS)}) or "
                           "'all' (one per stem), instead of the conditioned model")
    what.add_argument("--with-conditioned", action="store_true",
                      help="with --dedicated: train the conditioned model too (first; budget: see --budget)")
    what.add_argument("--all", action="store_true",
                      help="conditioned model and one dedicated model per stem, same data (budget: see --budget)")
    what.add_argument("--recipe", choices=tuple(RECIPES), default=None,
                      help="start from a named recipe's settings (options given beside it win): "
                           + "; ".join(f"{name}: {recipe.summary}" for name, recipe in RECIPES.items()))
    what.add_argument("--dropout", type=float, default=None, metavar="P",
                      help="dropout rate of the backbone, for every model trained (the U-Net: on its first decoder "
                           "blocks, 0.5 in its presets, C-U-Net's; the band-split model: in its transformer, 0); "
                           "default: the preset's (or the recipe's)")
    what.add_argument("--segment-frames", type=int, default=None, metavar="N",
                      help="training excerpt length in STFT frames, for every model trained (the U-Net small "
                           "preset's 128 frames are 0.74 s); default: the preset's (or the recipe's)")
    what.add_argument("--seeds", type=int, default=1, metavar="N",
                      help="train every model with N seeds: --seed, --seed + 1, ...; with N > 1 the models of "
                           f"seed k go to <out>/{SEED_FOLDER.format(seed='<k>')}/ (default: 1, straight in <out>)")
    for title, names in _TRAIN_OPTIONS.items():
        add_config_options(groups[title], TrainConfig, names=names)
    conditioning = parser.add_argument_group("conditioning (default: the preset's)")
    conditioning.add_argument("--film", choices=FILM_KINDS, default=None,
                              help="FiLM kind: one gamma/beta per block (simple) or per channel (complex); U-Net only")
    conditioning.add_argument("--film-where", choices=tuple(dict.fromkeys(FILM_PLACES + BANDSPLIT_FILM_PLACES)),
                              default=None,
                              help=f"where FiLM modulates: U-Net {', '.join(FILM_PLACES)}; band-split "
                                   f"{', '.join(BANDSPLIT_FILM_PLACES)}")
    conditioning.add_argument("--z-input", choices=Z_INPUTS, default=None,
                              help="feed z to the conditioner as is (onehot) or through a learned embedding; U-Net "
                                   "only")
    conditioning.add_argument("--stem-weights", type=_stem_weights, default=None, metavar="STEM=W,...",
                              help="how often a one-hot z names each stem, relative (unnamed stems weigh 1), e.g. "
                                   "bass=2: bass asked for twice as often (default: every stem alike)")
    _add_dataset_options(parser, what="train on")


def _stem_weights(text: str) -> dict[str, float]:
    """``"bass=2,vocals=0.5"`` -> ``{"bass": 2.0, "vocals": 0.5}`` (stem names are checked against the
    vocabulary later, by :class:`~conditioned_sep.data.sampling.SamplingConfig`)."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        stem, sep, value = item.partition("=")
        try:
            weights[stem.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not stem.strip():
            raise argparse.ArgumentTypeError(f"{item!r} is not STEM=WEIGHT (e.g. bass=2)")
    if not weights:
        raise argparse.ArgumentTypeError("give at least one STEM=WEIGHT (e.g. bass=2)")
    return weights


def train_configs(args: argparse.Namespace, *, stems: Sequence[str] | None = None) -> list[TrainConfig]:
    """One :class:`TrainConfig` per model and seed the parsed ``train`` arguments ask for (same data for each;
    budgets by ``--budget``, :func:`~conditioned_sep.recipe.apply_budget`), seed by seed.

    ``stems``: the vocabulary the dedicated models come from (``--dedicated all`` and ``--all`` train one per
    stem), which also scales the budget of an equal-compute conditioned model trained alone.
    """
    stems = check_vocabulary(args.stems if stems is None else stems)
    if args.dedicated is None and (args.with_conditioned and not args.all):
        raise TrainingError("--with-conditioned goes with --dedicated STEM|all")
    if args.all and args.dedicated not in (None, "all"):
        raise TrainingError("--all already trains every model; drop --dedicated")
    if args.dedicated is not None and args.dedicated != "all" and args.dedicated not in stems:
        raise UnknownStemError(f"unknown stem {args.dedicated!r} for --dedicated; choose one of {stems} or 'all'")
    if args.name and (args.all or args.dedicated == "all" or args.with_conditioned):
        raise TrainingError("--name names one run; it cannot be used when training several models")
    if args.seeds < 1:
        raise TrainingError(f"--seeds must be a positive number of seeds, got {args.seeds}")
    targets: list[str | None]
    if args.all:
        targets = [None, *stems]
    elif args.dedicated == "all":
        targets = ([None] if args.with_conditioned else []) + list(stems)
    elif args.dedicated is not None:
        targets = ([None] if args.with_conditioned else []) + [args.dedicated]
    else:
        targets = [None]
    dataset = _dataset(args)
    overrides = {key: value for key, value in (("film", args.film), ("film_where", args.film_where),
                                               ("z_input", args.z_input)) if value is not None}
    shared = dict(RECIPES[args.recipe].model_overrides) if getattr(args, "recipe", None) else {}
    dropout = getattr(args, "dropout", None)
    if dropout is not None:
        if not 0.0 <= dropout < 1.0:
            raise TrainingError(f"--dropout is a rate from 0 up to (not including) 1, got {dropout:g}")
        shared["dropout"] = dropout  # the backbone's: the dedicated twins get it too, so they keep one backbone
    segment_frames = getattr(args, "segment_frames", None)
    if segment_frames is not None:
        if segment_frames < 2:
            raise TrainingError(f"--segment-frames is a number of STFT frames, at least 2, got {segment_frames}")
        shared["segment_frames"] = segment_frames
    only_dedicated = args.dedicated is not None and not (args.with_conditioned or args.all)
    if overrides and only_dedicated:
        raise TrainingError("--film, --film-where and --z-input shape the conditioner: a dedicated model has none")
    if args.stem_weights and only_dedicated:
        raise TrainingError("--stem-weights says how often z names each stem: a dedicated model draws no z")
    passed = config_values(args, TrainConfig)
    sampling = {**passed.pop("sampling", {}), **({"stem_weights": args.stem_weights} if args.stem_weights else {})}
    for key in ("seed", "out"):  # set per seed below
        passed.pop(key, None)
    configs: list[TrainConfig] = []
    for seed in range(args.seed, args.seed + args.seeds):
        out = Path(args.out) if args.seeds == 1 else Path(args.out) / SEED_FOLDER.format(seed=seed)
        group = [TrainConfig(**passed, out=out, seed=seed, target=t, dataset=dataset.kind, data_root=dataset.root,
                             model_overrides={**shared, **overrides} if t is None else shared,
                             sampling=sampling if t is None else {})
                 for t in targets]
        configs.extend(apply_budget(group, n_stems=len(stems)))
    return configs


def _budget_line(config: TrainConfig) -> str:
    """What one model gets, e.g. ``runs/x/conditioned: unet small, seed 0, 8000 steps (equal-compute: 4 x)``."""
    parts = [f"{config.total_steps} steps"]
    if config.epochs:
        parts.append(f"at most {config.epochs} epochs")
    if config.time_limit:
        parts.append(f"at most {config.time_limit:g} min")
    scale = f" ({config.budget}: {config.budget_scale} x a dedicated model's)" if config.budget_scale > 1 else ""
    return f"{config.run_dir}: {config.arch} {config.preset}, seed {config.seed}, {', '.join(parts)}{scale}"


def run_train(args: argparse.Namespace, prog: str) -> int:
    """Trains every model the arguments ask for, one after another; 2 on a user error (printed)."""
    try:
        configs = train_configs(args)
        if not any(c.resume or c.overwrite for c in configs):
            for c in configs:  # every run (of every seed) checked before the first one starts
                if (c.run_dir / "last.ckpt").exists():
                    raise existing_run_error(c)
        if world()[0] == 0:
            for c in configs:
                print(_budget_line(c), file=sys.stderr)
        results = train_many(configs)
    except ValueError as err:  # user errors (DatasetError, TrainingError, UnknownStemError...): a clear message
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:  # Ctrl-C or SIGTERM: a summary, no traceback
        print(f"{prog}: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C, or one between two models
        print(f"{prog}: stopped at once by Ctrl-C; --resume continues from the last checkpoint (last.ckpt) of a run "
              "that wrote one", file=sys.stderr)
        return 128 + signal.SIGINT
    if world()[0] == 0:
        for run_dir, path in results.items():
            print(f"{run_dir}: {path}")
    return 0


# --------------------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------------------

COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "separate": ("separate songs into the stems you ask for (one wav per stem per song)",
                 add_separate_arguments, run_separate),
    "train": ("train a conditioned model or the dedicated baselines (same as python train.py)",
              add_train_arguments, run_train),
    "evaluate": ("evaluate models beside the oracle and the mixture (same as python evaluate.py)",
                 add_evaluate_arguments, run_evaluate),
}


def build_parser(prog: str = "conditioned-sep") -> argparse.ArgumentParser:
    """The ``conditioned-sep`` parser with one subcommand per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"conditioned-sep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", required=True)
    for name, (summary, add, _) in COMMANDS.items():
        add(sub.add_parser(name, help=summary, description=summary))
    return parser


def run(command: str, argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run one command with its own parser named ``prog`` (``train.py`` and ``evaluate.py`` call this)."""
    _, add, execute = COMMANDS[command]
    parser = argparse.ArgumentParser(prog=prog or f"conditioned-sep {command}")
    add(parser)
    try:
        args = _parse_with_recipe(parser, argv)
    except SystemExit as done:
        return _exit_code(done)
    return execute(args, parser.prog)


def _parse_with_recipe(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; when ``--recipe`` names one, parse again with its settings as the defaults, so that an option given
    beside it wins over the recipe's."""
    args = parser.parse_args(argv)
    if getattr(args, "recipe", None):
        parser.set_defaults(**RECIPES[args.recipe].options)
        args = parser.parse_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``conditioned-sep`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:
        return _exit_code(done)
    if getattr(args, "recipe", None):  # the subcommand's own parser applies the recipe's defaults
        argv = list(sys.argv[1:] if argv is None else argv)
        return run(args.command, argv[argv.index(args.command) + 1:], prog=f"{parser.prog} {args.command}")
    return COMMANDS[args.command][2](args, f"{parser.prog} {args.command}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
