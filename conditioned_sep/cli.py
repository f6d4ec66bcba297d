"""The ``conditioned-sep`` command: ``separate`` songs into stems, ``train`` a model, ``evaluate`` models.

``train`` and ``evaluate`` are the very parsers and functions of ``train.py`` and ``evaluate.py``
(:func:`conditioned_sep.training.main`, :func:`conditioned_sep.evaluation.main`): one implementation each.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from .runs import DEFAULT_RUN, choose_checkpoint
from .stems import STEMS, UnknownStemError, parse_queries

_USAGE = """usage: conditioned-sep {separate,train,evaluate} ...

One FiLM-conditioned U-Net that extracts whichever stem you name.

commands:
  separate   separate songs into the stems you ask for (one wav per stem per song)
  train      train a conditioned model or the dedicated baselines (same as python train.py)
  evaluate   evaluate models beside the oracle and the mixture (same as python evaluate.py)

Run `conditioned-sep COMMAND --help` for a command's options.
"""


def _song_name(path: Path) -> str:
    name = path.name
    for suffix in reversed(path.suffixes[-2:]):  # "song.stem.mp4" -> "song"
        if suffix.lower() in (".stem", path.suffix.lower()) and name.lower().endswith(suffix.lower()):
            name = name[: -len(suffix)]
    return name or path.name


def _file_name(query: str) -> str:
    return re.sub(r"[\\/:*?\"<>|]", "_", query.strip()) or "_"


def build_separate_parser(prog: str = "conditioned-sep separate") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=(
        "Separate songs (wav, flac, ogg; mp3, mp4, m4a with ffmpeg) into the stems you ask for: one wav per "
        "requested stem per song, OUT/<song>/<stem>.wav, at the song's sample rate."))
    parser.add_argument("songs", nargs="+", metavar="SONG", help="audio files")
    parser.add_argument("--stems", "-s", default=None,
                        help="comma-separated stems or sums, e.g. vocals,drums+bass,accompaniment "
                             "(default: every stem the checkpoint separates)")
    parser.add_argument("--out", "-o", type=Path, default=Path("separated"), help="output folder (default: separated)")
    parser.add_argument("--checkpoint", "-c", action="append", default=None, metavar="PATH",
                        help="a checkpoint, a folder with best.ckpt or a training run folder; for a dedicated set, "
                             "one checkpoint per stem (repeat -c, or separate with commas) "
                             f"(default: {DEFAULT_RUN})")
    parser.add_argument("--niter", type=int, default=0, help="Wiener filter iterations (default: 0, plain masks)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--subtype", default="PCM_16", choices=("PCM_16", "PCM_24", "FLOAT"),
                        help="wav sample format (default: PCM_16)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def separate_main(argv: Sequence[str] | None = None, *, prog: str = "conditioned-sep separate") -> int:
    """``conditioned-sep separate``: 0 when every song was separated, 1 when some failed, 2 on a usage error
    (missing checkpoint, unknown stem) before any song is read."""
    parser = build_separate_parser(prog)
    args = parser.parse_args(argv)
    from .audio import read_audio, write_audio
    try:
        if args.stems is not None:
            queries = parse_queries(args.stems)  # a typo fails here, before any checkpoint is read
        paths = [p for value in (args.checkpoint or [str(DEFAULT_RUN)]) for p in value.split(",") if p]
        separator = choose_checkpoint(paths).load(niter=args.niter, device=args.device)
        if args.stems is None:
            queries = parse_queries(list(separator.stems))
        # a dedicated set answers only its stems and their sums: say so before reading any song
        answerable = STEMS if separator.is_conditioned else tuple(separator.stems)
        for q in queries:
            missing = [s for s in q.stems if s not in answerable]
            if missing:
                raise UnknownStemError(f"the checkpoint cannot answer {q.name!r}: it separates "
                                       f"{', '.join(answerable)}; no model for {', '.join(missing)}")
        args.out.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2

    from tqdm import tqdm

    failed: list[str] = []
    written = 0
    used: set[str] = set()
    bar = tqdm(args.songs, desc="separate", unit="song", disable=args.no_progress, file=sys.stderr)
    for song in bar:
        path = Path(song)
        try:
            audio, rate = read_audio(path)
            stems = separator.separate(audio, stems=[q.name for q in queries], sample_rate=rate)
            name = _song_name(path)
            if name in used:  # "song.wav" and "song.mp3" in one call: keep both, the second under its full name
                name = next(n for n in (path.name, *(f"{path.name} ({i})" for i in range(2, 10**6))) if n not in used)
            used.add(name)
            folder = args.out / name
            folder.mkdir(parents=True, exist_ok=True)
            for q in queries:
                write_audio(folder / f"{_file_name(q.name)}.wav", stems[q.name], rate, subtype=args.subtype)
                written += 1
        except (ValueError, OSError) as err:  # one bad song must not stop the others
            failed.append(song)
            bar.write(f"{prog}: error: {song}: {err}", file=sys.stderr)
    bar.close()
    print(f"wrote {written} file(s) for {len(args.songs) - len(failed)} of {len(args.songs)} song(s) to {args.out}",
          file=sys.stderr)
    if failed:
        print(f"{prog}: {len(failed)} song(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _train(argv: Sequence[str]) -> int:
    from . import training

    return int(training.main(list(argv), prog="conditioned-sep train") or 0)


def _evaluate(argv: Sequence[str]) -> int:
    from . import evaluation

    return evaluation.main(list(argv), prog="conditioned-sep evaluate")


COMMANDS = {"separate": separate_main, "train": _train, "evaluate": _evaluate}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``conditioned-sep`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        from . import __version__

        print(f"conditioned-sep {__version__}")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"{_USAGE}\nconditioned-sep: error: unknown command {argv[0]!r}; use separate, train or evaluate",
              file=sys.stderr)
        return 2
    return command(argv[1:])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
