"""Finding models on disk: run folders, model folders, sets of dedicated checkpoints.

Saving and loading one checkpoint is :mod:`conditioned_sep.checkpoint`'s job; this module turns what a user
points at (a file, a folder, a training run, several files, ``NAME=PATH`` on the evaluation command line) into
:class:`CheckpointSet` values that load as one :class:`~conditioned_sep.separator.Separator` each.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .checkpoint import CHECKPOINT_NAMES, CheckpointError, CheckpointNotFoundError, checkpoint_in, named_path
from .separator import Separator
from .stems import STEMS

DEFAULT_RUN = Path("runs/default")
"""Where ``python train.py`` (``conditioned-sep train``) leaves its models, and where ``separate`` and
``evaluate`` look when no checkpoint is given."""

RESERVED_NAMES = ("mixture", "oracle-irm1", "oracle-irm2")
"""Row names of the evaluation's reference rows: no model may take them."""

SEED_FOLDER = "seed-{seed}"
"""A seed's subfolder of a run folder trained with several seeds (``train.py --seeds N``):
``<out>/seed-<seed>/{conditioned, dedicated-<stem>}/``. With one seed the models sit in ``<out>`` itself."""
_SEED = re.compile(r"seed-(\d+)")

_HINT = "train first (python train.py or conditioned-sep train) or pass an existing checkpoint"


class ModelArgumentError(ValueError):
    """An evaluation model argument that names no model, a name used twice, or a reserved name."""


@dataclass(frozen=True)
class CheckpointSet:
    """One model to load: a single checkpoint (conditioned or one dedicated model), or a set of dedicated
    checkpoints (one per stem). ``name`` names the model in tables and messages; ``seed`` is the training seed of
    a model found in a run folder trained with several seeds (``seed-<k>/``), else None, so that the seeds of one
    model share its name and :attr:`label` tells them apart."""

    name: str
    paths: tuple[Path, ...]
    seed: int | None = None

    @property
    def label(self) -> str:
        """``name``, or ``name/seed-<k>`` for one seed of a several-seed run: unique among the models found."""
        return self.name if self.seed is None else f"{self.name}/{SEED_FOLDER.format(seed=self.seed)}"

    def load(self, **kwargs) -> Separator:
        """The :class:`~conditioned_sep.separator.Separator` of these checkpoints; ``kwargs`` go to it."""
        paths = [str(p) for p in self.paths]
        return Separator.load(paths[0] if len(paths) == 1 else paths, **kwargs)


def _name_of_file(path: Path) -> str:
    return path.parent.name if path.stem in ("best", "last") and path.parent.name else path.stem


def find_checkpoints(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[CheckpointSet]:
    """The models at ``paths``, always as a list of :class:`CheckpointSet`.

    One path:

    - a checkpoint file: one model, named after the file (or its folder for ``best.ckpt`` / ``last.ckpt``);
    - a folder holding ``best.ckpt`` (or ``last.ckpt``): one model named after the folder;
    - a training run folder (``train.py --out``): ``conditioned/`` first, then every other subfolder holding a
      checkpoint (by name) as one model each, then all ``dedicated-<stem>/`` subfolders as one set named
      "dedicated" (in stem order). A run trained with several seeds holds that layout once per seed in
      ``seed-<k>/`` subfolders: its models come seed by seed (ascending), with the same names and ``seed=k``
      (a ``seed-<k>`` folder given itself also records ``seed=k``).

    Several paths: one set of dedicated checkpoints named "dedicated", each path a file or a folder holding one.
    Raises :class:`~conditioned_sep.checkpoint.CheckpointNotFoundError` naming the path and the way out.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise CheckpointNotFoundError(f"no checkpoint given; {_HINT}")
    files: list[Path] = []
    for item in map(named_path, items):
        if not item.exists():
            raise CheckpointNotFoundError(f"checkpoint not found: {item}; {_HINT}")
        own = item if item.is_file() else checkpoint_in(item)
        if own is not None:
            files.append(own)
        elif len(items) > 1:
            raise CheckpointNotFoundError(f"no {' or '.join(CHECKPOINT_NAMES)} in {item}; pass one checkpoint (or "
                                     "model folder) per stem of a dedicated set")
    if len(items) > 1:
        return [CheckpointSet("dedicated", tuple(files))]
    if files:
        path = files[0]
        return [CheckpointSet(_name_of_file(path) if Path(items[0]).is_file() else Path(items[0]).name, (path,))]
    return _run_folder(Path(items[0]))


def _seed_of(folder: Path) -> int | None:
    match = _SEED.fullmatch(folder.name)
    return int(match.group(1)) if match else None


def _run_folder(root: Path) -> list[CheckpointSet]:
    found = _models_of_run(root, seed=_seed_of(root))
    seeds = sorted((seed, sub) for sub in root.iterdir() if sub.is_dir() and (seed := _seed_of(sub)) is not None)
    for seed, sub in seeds:
        found.extend(_models_of_run(sub, seed=seed))
    if not found:
        raise CheckpointNotFoundError(
            f"no checkpoint in {root}: expected best.ckpt, or the subfolders conditioned/ and dedicated-<stem>/ "
            f"holding best.ckpt (the layout train.py writes; seed-<k>/ subfolders holding them with --seeds); {_HINT}")
    return found


def _models_of_run(root: Path, *, seed: int | None) -> list[CheckpointSet]:
    """The models of one seed's run folder: conditioned/, other model folders by name, the dedicated set."""
    found: list[CheckpointSet] = []
    dedicated: dict[str, Path] = {}
    for sub in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (p.name != "conditioned", p.name)):
        ckpt = checkpoint_in(sub)
        if ckpt is None:
            continue
        if sub.name.startswith("dedicated-"):
            dedicated[sub.name.removeprefix("dedicated-")] = ckpt
        else:
            found.append(CheckpointSet(sub.name, (ckpt,), seed=seed))
    if dedicated:
        # vocabulary order, so that the set's stems read naturally; unknown names after, by name
        order = sorted(dedicated, key=lambda s: (STEMS.index(s) if s in STEMS else len(STEMS), s))
        found.append(CheckpointSet("dedicated", tuple(dedicated[s] for s in order), seed=seed))
    return found


def choose_checkpoint(paths: Sequence[str | os.PathLike]) -> CheckpointSet:
    """The one model that ``separate --checkpoint`` values name.

    One value: a checkpoint file, a folder holding ``best.ckpt`` (or ``last.ckpt``), or a training run folder
    (its ``conditioned/`` model, else its only model, e.g. the ``dedicated-<stem>/`` set). Several values: a set of
    dedicated checkpoints (files or folders). Raises :class:`CheckpointNotFoundError`, or a ``CheckpointError`` for a run
    folder holding several models but no ``conditioned/``, or the models of several seeds.
    """
    found = find_checkpoints(paths)
    seeds = sorted({m.seed for m in found if m.seed is not None})
    if len(seeds) > 1:
        raise CheckpointError(f"{paths[0]} holds the models of {len(seeds)} seeds ({', '.join(map(str, seeds))}); "
                              f"pick one: --checkpoint {Path(paths[0]) / SEED_FOLDER.format(seed=seeds[0])}")
    if len(found) > 1 and found[0].name != "conditioned":
        raise CheckpointError(f"{paths[0]} holds several models ({', '.join(m.name for m in found)}) and no "
                              f"conditioned/; pick one: --checkpoint {Path(paths[0]) / found[0].name}")
    return found[0]


def discover_models(specs: Sequence[str]) -> list[CheckpointSet]:
    """Turn evaluation command-line model arguments into model rows (:func:`find_checkpoints`).

    Each argument is ``[NAME=]PATH[,PATH...]``:

    - a checkpoint file: one model, named after the file (or its folder for ``best.ckpt`` / ``last.ckpt``);
    - a folder holding ``best.ckpt`` (or ``last.ckpt``): one model named after the folder;
    - a training run folder (``train.py --out``): its ``conditioned/`` (and any other non-dedicated subfolder)
      as one model each, and all of its ``dedicated-<stem>/`` subfolders together as one set named "dedicated";
      with NAME, the rows are named NAME-<row>; a run of several seeds gives these models once per seed, same
      names, ``seed`` set (see :func:`find_checkpoints`);
    - several comma-separated paths: one set of dedicated checkpoints, named "dedicated" unless NAME is given.

    Raises :class:`ModelArgumentError` naming the argument (a ValueError) for a path without a model, a name
    used twice for the same seed (:attr:`CheckpointSet.label`) or a reserved name.
    """
    models: list[CheckpointSet] = []
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if not sep or "/" in name or os.sep in name or not name:
            name, rest = "", spec
        parts = [p for p in rest.split(",") if p.strip()]
        if not parts:
            raise ModelArgumentError(f"empty model argument {spec!r}; pass a checkpoint, a folder or NAME=PATH")
        try:
            found = find_checkpoints(parts)
        except CheckpointNotFoundError as err:
            raise ModelArgumentError(f"{err} (from {spec!r})") from err
        if name:
            run_folder = len(parts) == 1 and Path(parts[0]).is_dir() and checkpoint_in(parts[0]) is None
            found = [replace(m, name=f"{name}-{m.name}" if run_folder else name) for m in found]
        models.extend(found)
    names = [m.name for m in models]
    labels = [m.label for m in models]  # the seeds of one model share its name
    twice = sorted({n for n in labels if labels.count(n) > 1})
    if twice:
        raise ModelArgumentError(f"model name(s) {', '.join(twice)} used twice; name each row: NAME=PATH")
    for reserved in RESERVED_NAMES:
        if reserved in names:
            raise ModelArgumentError(f"model name {reserved!r} is reserved for a reference row; pass NAME=PATH")
    return models
