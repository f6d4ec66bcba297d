"""Finding models on disk: files, model folders, run folders, dedicated sets, evaluation arguments."""

import shutil
from pathlib import Path

import pytest

from conditioned_sep.checkpoint import CheckpointNotFoundError
from conditioned_sep.runs import (
    DEFAULT_RUN,
    CheckpointSet,
    ModelArgumentError,
    choose_checkpoint,
    discover_models,
    find_checkpoints,
)
from conditioned_sep.stems import STEMS

ModelSpec = CheckpointSet


def _layout(root: Path, files: list[str]) -> Path:
    for name in files:  # find_checkpoints looks at names only: empty files will do
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    return root


def test_find_checkpoints_file_folder_run_and_set(tmp_path):
    run = _layout(tmp_path / "run", ["baseline/last.ckpt", "conditioned/best.ckpt", "conditioned/last.ckpt",
                                     "dedicated-other/best.ckpt", "dedicated-vocals/last.ckpt",
                                     "dedicated-bass/best.ckpt", "notes/readme.txt"])
    assert find_checkpoints(run / "conditioned" / "last.ckpt") == [
        CheckpointSet("conditioned", (run / "conditioned" / "last.ckpt",))]
    assert find_checkpoints(str(run / "conditioned")) == [
        CheckpointSet("conditioned", (run / "conditioned" / "best.ckpt",))]  # best before last
    _layout(tmp_path, ["model-7.ckpt"])
    assert find_checkpoints(tmp_path / "model-7.ckpt")[0].name == "model-7"
    # a run folder: conditioned first, other models by name, the dedicated models as one set in stem order
    assert find_checkpoints(run) == [
        CheckpointSet("conditioned", (run / "conditioned" / "best.ckpt",)),
        CheckpointSet("baseline", (run / "baseline" / "last.ckpt",)),
        CheckpointSet("dedicated", (run / "dedicated-vocals" / "last.ckpt", run / "dedicated-bass" / "best.ckpt",
                                    run / "dedicated-other" / "best.ckpt")),
    ]
    # several paths: one dedicated set, files or model folders, in the given order
    assert find_checkpoints([run / "dedicated-bass", str(run / "dedicated-vocals" / "last.ckpt")]) == [
        CheckpointSet("dedicated", (run / "dedicated-bass" / "best.ckpt", run / "dedicated-vocals" / "last.ckpt"))]


def test_find_checkpoints_errors_name_the_path_and_the_way_out(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match=r"checkpoint not found: .*nothing.ckpt; train first"):
        find_checkpoints(tmp_path / "nothing.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match=r"no checkpoint in .*empty: expected best.ckpt"):
        find_checkpoints(tmp_path / "empty")
    _layout(tmp_path, ["a/best.ckpt"])
    with pytest.raises(CheckpointNotFoundError, match=r"no best.ckpt or last.ckpt in .*empty"):
        find_checkpoints([tmp_path / "a", tmp_path / "empty"])
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint given"):
        find_checkpoints([])
    # a FileNotFoundError for callers that handle OS errors, a CheckpointError (ValueError) for the others
    assert issubclass(CheckpointNotFoundError, FileNotFoundError) and issubclass(CheckpointNotFoundError, ValueError)


def test_checkpoint_set_loads_a_separator(run_folder):
    one = CheckpointSet("x", (run_folder / "dedicated-bass" / "best.ckpt",)).load()
    assert not one.is_conditioned and list(one.stems) == ["bass"]
    both = CheckpointSet("x", (run_folder / "dedicated-bass" / "best.ckpt", run_folder / "conditioned" / "best.ckpt"))
    with pytest.raises(ValueError, match="holds a conditioned model"):
        both.load()
    assert list(CheckpointSet("c", (run_folder / "conditioned" / "best.ckpt",)).load().stems) == list(STEMS)
    assert DEFAULT_RUN == Path("runs/default")


def test_choose_checkpoint_from_files_run_folders_and_sets(tmp_path, run_folder):
    conditioned = run_folder / "conditioned" / "best.ckpt"
    vocals, drums = (run_folder / f"dedicated-{s}" / "best.ckpt" for s in ("vocals", "drums"))
    assert choose_checkpoint([str(run_folder)]).paths == (conditioned,)
    pair = choose_checkpoint([str(vocals.parent), str(drums)])
    assert pair.name == "dedicated" and pair.paths == (vocals, drums)
    # a run folder without conditioned/ but with two models: the user must pick one
    other = tmp_path / "run"
    for name in ("small", "dedicated-vocals"):
        (other / name).mkdir(parents=True)
        shutil.copy(vocals, other / name / "best.ckpt")
    with pytest.raises(ValueError, match=r"holds several models \(small, dedicated\) and no conditioned/"):
        choose_checkpoint([str(other)])
    shutil.rmtree(other / "small")
    only = choose_checkpoint([str(other)])
    assert only.name == "dedicated" and only.paths == (other / "dedicated-vocals" / "best.ckpt",)


def test_discover_models_run_folder_files_and_sets(run_folder, tmp_path):
    models = discover_models([str(run_folder)])
    assert [m.name for m in models] == ["conditioned", "dedicated"]
    assert [p.parent.name for p in models[1].paths] == [f"dedicated-{s}" for s in STEMS]
    ckpt = run_folder / "conditioned" / "best.ckpt"
    assert discover_models([str(ckpt)]) == [ModelSpec("conditioned", (ckpt,))]
    assert discover_models([f"mine={ckpt}"])[0].name == "mine"
    pair = f"{run_folder / 'dedicated-vocals'},{run_folder / 'dedicated-bass' / 'best.ckpt'}"
    assert discover_models([pair])[0] == ModelSpec(
        "dedicated", (run_folder / "dedicated-vocals" / "best.ckpt", run_folder / "dedicated-bass" / "best.ckpt"))
    with pytest.raises(ModelArgumentError, match="not found"):
        discover_models([str(tmp_path / "nothing.ckpt")])
    with pytest.raises(ModelArgumentError, match="no checkpoint in"):
        discover_models([str(tmp_path)])
    with pytest.raises(ModelArgumentError, match="used twice"):
        discover_models([str(ckpt), str(ckpt)])


def test_discover_models_names_run_rows_and_wraps_missing_paths(run_folder, tmp_path):
    assert [m.name for m in discover_models([f"mine={run_folder}"])] == ["mine-conditioned",
                                                                                     "mine-dedicated"]
    assert discover_models([f"mine={run_folder / 'conditioned'}"])[0].name == "mine"
    (tmp_path / "lonely").mkdir()
    with pytest.raises(ModelArgumentError, match=r"no best.ckpt or last.ckpt in .*lonely"):
        discover_models([f"{run_folder / 'dedicated-vocals'},{tmp_path / 'lonely'}"])
    with pytest.raises(ModelArgumentError, match="reserved"):
        discover_models([f"mixture={run_folder / 'conditioned'}"])


def test_a_run_of_several_seeds_gives_each_model_once_per_seed(tmp_path):
    names = ["conditioned/best.ckpt", "dedicated-vocals/best.ckpt", "dedicated-bass/best.ckpt"]
    run = _layout(tmp_path / "run", [f"seed-{k}/{name}" for k in (10, 2) for name in names] + ["notes/x.txt"])

    def model(name, seed, *folders):
        return CheckpointSet(name, tuple(run / f"seed-{seed}" / f / "best.ckpt" for f in folders), seed=seed)

    # seed by seed (by number, not by name), the names of a one-seed run, the seed recorded
    expected = [model("conditioned", 2, "conditioned"), model("dedicated", 2, "dedicated-vocals", "dedicated-bass"),
                model("conditioned", 10, "conditioned"),
                model("dedicated", 10, "dedicated-vocals", "dedicated-bass")]
    assert find_checkpoints(run) == expected
    assert discover_models([str(run)]) == expected  # same names, told apart by seed: not "used twice"
    assert [m.label for m in expected] == ["conditioned/seed-2", "dedicated/seed-2", "conditioned/seed-10",
                                           "dedicated/seed-10"]
    assert [(m.name, m.seed) for m in discover_models([f"mine={run}"])] == [
        ("mine-conditioned", 2), ("mine-dedicated", 2), ("mine-conditioned", 10), ("mine-dedicated", 10)]
    # one seed's folder is a run folder of its own, and knows its seed
    assert find_checkpoints(run / "seed-10") == expected[2:]
    with pytest.raises(ModelArgumentError, match="used twice"):
        discover_models([str(run), str(run / "seed-2")])
    # separate needs one model: a run of several seeds says which folder to pick
    with pytest.raises(ValueError, match=r"holds the models of 2 seeds \(2, 10\); pick one: --checkpoint .*seed-2"):
        choose_checkpoint([str(run)])
    assert choose_checkpoint([str(run / "seed-2")]) == expected[0]
    # a one-seed run keeps seed None
    assert all(m.seed is None for m in find_checkpoints(_layout(tmp_path / "one", names)))
    (tmp_path / "empty" / "seed-0").mkdir(parents=True)
    with pytest.raises(CheckpointNotFoundError, match="seed-<k>/ subfolders"):
        find_checkpoints(tmp_path / "empty")
