"""Shared fixtures: tiny datasets in MUSDB18-HQ's layout (a hand-made stem folder, tiny synthetic songs)
and MUSDB18's .stem.mp4 layout (links to the real excerpt that stempeg ships)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conditioned_sep.audio import write_audio
from conditioned_sep.data.synthetic import SyntheticConfig, ensure_synthetic_dataset
from conditioned_sep.stems import STEMS

RATE = 44100
TINY_SYNTHETIC = SyntheticConfig(train_songs=4, valid_songs=2, test_songs=2, train_seconds=3.0, valid_seconds=2.0,
                                 test_seconds=2.0)


def _tone(freq: float, seconds: float, channels: int, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.2 * np.sin(2 * np.pi * freq * t + phase).astype(np.float32)
    return np.stack([x * (0.5 + 0.5 * c) for c in range(channels)]) if channels > 1 else x[None]


@pytest.fixture(scope="session", autouse=True)
def _data_home(tmp_path_factory):
    """Generated data and stem caches of every test (and of the processes tests start) go to a session folder,
    never to the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONDITIONED_SEP_DATA", str(tmp_path_factory.mktemp("data-home")))
        yield


@pytest.fixture(scope="session")
def hq_folder(tmp_path_factory) -> Path:
    """``<root>/{train,valid,test}/<track>/<stem>.wav``: 1.5 s tones; train/b lacks bass, train/c has a mono
    vocals file, train/empty holds no stem (skipped), valid has one track, test has none with stems."""
    root = tmp_path_factory.mktemp("stems")
    layout = {
        ("train", "a"): {"vocals": 2, "drums": 2, "bass": 2, "other": 2},
        ("train", "b"): {"vocals": 2, "drums": 2, "other": 2},
        ("train", "c"): {"vocals": 1, "drums": 2, "bass": 2, "other": 2},
        ("valid", "v"): {"vocals": 2, "drums": 2, "bass": 2, "other": 2},
    }
    for (split, track), stems in layout.items():
        folder = root / split / track
        folder.mkdir(parents=True)
        for i, (stem, channels) in enumerate(stems.items()):
            write_audio(folder / f"{stem}.wav", _tone(220.0 * (i + 1), 1.5, channels), RATE, subtype="FLOAT")
    (root / "train" / "empty").mkdir()
    (root / "train" / "empty" / "notes.txt").write_text("no audio here")
    (root / "test").mkdir()
    return root


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """Tiny synthetic dataset (4 train songs of 3 s, 2 valid and 2 test of 2 s), generated once per session."""
    return ensure_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "data", seed=0, config=TINY_SYNTHETIC,
                                  workers=1, progress=False)


@pytest.fixture(scope="session")
def musdb_stem_folder(tmp_path_factory) -> Path:
    """MUSDB18's layout (train/ and test/ holding .stem.mp4) made of links to stempeg's real MUSDB18 excerpt;
    one training track carries a name from musdb's validation list."""
    import stempeg  # in the test extra: fail, do not skip, when it is missing
    excerpt = Path(stempeg.example_stem_path())
    root = tmp_path_factory.mktemp("musdb")
    for split, name in [("train", "The Easton Ellises - Falcon 69"), ("train", "Leaf - Summerghost"),
                        ("test", "Al James - Schoolboy Facination")]:
        (root / split).mkdir(exist_ok=True)
        (root / split / f"{name}.stem.mp4").symlink_to(excerpt)
    return root


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory) -> Path:
    """A training-run layout of tiny untrained models: conditioned/ and dedicated-<stem>/ with best.ckpt."""
    import torch

    from conditioned_sep.checkpoint import save_checkpoint
    from conditioned_sep.models import ConditionedUNet

    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    models = {"conditioned": ConditionedUNet.from_preset("tiny")}
    for stem in STEMS:
        models[f"dedicated-{stem}"] = ConditionedUNet.from_preset("tiny", conditioned=False, target=stem)
    for name, model in models.items():
        (root / name).mkdir()
        save_checkpoint(root / name / "best.ckpt", model.eval())
    return root
