"""Stored-output regression test: a fixed tiny model must keep separating a fixed input into the same numbers.

``tests/fixtures/regression_tiny.ckpt`` holds a tiny-preset conditioned model (seed 0, batch-norm statistics
moved off their defaults) written by ``save_checkpoint``; ``tests/fixtures/regression_tiny.npz`` holds the input
(stereo, 44.1 kHz, 8192 samples of seeded noise) and what :class:`Separator` made of it for two queries,
"vocals" and "drums+bass", with plain masks (niter 0) and one Wiener iteration, through 0.05 s chunks (several
chunks, cross-faded). Any silent numeric drift between versions (model, STFT, chunking, Wiener filter,
checkpoint loading) fails this test.

Regenerate the fixtures ONLY for an intentional change of the numbers (and say so in the commit):

    .venv/bin/python tests/test_regression.py --regenerate
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from conditioned_sep.checkpoint import load_checkpoint, save_checkpoint
from conditioned_sep.models import ConditionedUNet
from conditioned_sep.separator import Separator

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHECKPOINT = FIXTURES / "regression_tiny.ckpt"
OUTPUTS = FIXTURES / "regression_tiny.npz"
RATE = 44100
QUERIES = ("vocals", "drums+bass")
NITERS = (0, 1)
SEPARATOR = dict(chunk_seconds=0.05, overlap=0.25)
TOLERANCE = 1e-5
"""Largest difference allowed, relative to the stored output's peak. float32 round-off across BLAS builds and
thread counts stays near 1e-7 of the peak here; a real change of the numbers is far larger."""


def _separate(model: ConditionedUNet, audio: np.ndarray) -> dict[str, np.ndarray]:
    """``{"<query>/niter<k>": (channels, samples)}`` for every query and Wiener iteration count."""
    out = {}
    for niter in NITERS:
        sep = Separator(model, niter=niter, **SEPARATOR)
        for name, y in sep.separate(audio, list(QUERIES), sample_rate=RATE).items():
            out[f"{name}/niter{niter}"] = y.numpy()
    return out


def test_separated_output_matches_the_stored_output():
    model, meta = load_checkpoint(CHECKPOINT)
    assert meta["config"]["n_fft"] == 256 and model.is_conditioned  # the tiny preset, conditioned
    stored = np.load(OUTPUTS)
    got = _separate(model, stored["input"])
    assert sorted(got) == sorted(k for k in stored.files if k != "input")
    for key, expected in ((k, stored[k]) for k in sorted(got)):
        peak = np.abs(expected).max()
        assert peak > 1e-2, key  # not a trivially silent reference
        error = np.abs(got[key] - expected).max()
        assert error <= TOLERANCE * peak, f"{key}: max error {error:.3g} = {error / peak:.3g} of the peak"


def regenerate() -> None:
    """Write the fixtures anew: the model (seed 0, batch norm moved by three training-mode passes), the input
    and its separated outputs."""
    FIXTURES.mkdir(exist_ok=True)
    audio = (0.3 * np.random.default_rng(0).standard_normal((2, 8192))).astype(np.float32)
    torch.manual_seed(0)
    model = ConditionedUNet.from_preset("tiny").train()
    spec = model.stft(torch.from_numpy(audio)[None])  # (1, c, f, t)
    with torch.no_grad():
        for _ in range(3):
            model(spec, torch.eye(4))
    save_checkpoint(CHECKPOINT, model.eval(), training={"purpose": "regression fixture (tests/test_regression.py)"})
    loaded, _ = load_checkpoint(CHECKPOINT)  # what the test will see
    np.savez_compressed(OUTPUTS, input=audio, **_separate(loaded, audio))
    sizes = {p.name: p.stat().st_size for p in (CHECKPOINT, OUTPUTS)}
    print(f"wrote {sizes} (bytes) in {FIXTURES}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regenerate", action="store_true", help="rewrite the stored fixtures (intentional "
                                                                    "changes of the numbers only)")
    if parser.parse_args().regenerate:
        regenerate()
    else:
        parser.print_help()
