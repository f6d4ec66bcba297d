"""Training speed: examples per second of the real training step (DataLoader, loss, Adam) for thread and loader
worker settings, on a quiet machine and beside one competing busy process.

    python benchmarks/bench_train.py [--preset small] [--steps 30] [--batch-size 16] [--threads 1,2]
                                     [--workers 0,1] [--load quiet,busy] [--dedicated STEM] [--folder PATH]
    python benchmarks/bench_train.py --preset tiny --steps 3 --folder PATH   # a quick check that it runs

Uses the rendered default dataset (rendered first if missing) unless ``--folder`` names a stem folder. Each
setting builds a :class:`~conditioned_sep.training.Trainer` (its own setup: threads, data loader, model) and times
``--steps`` optimizer steps after two warm-up steps, data waiting included. "busy" runs ``python -c "while True:
pass"`` beside it (killed afterwards): on a shared 2-core machine, what another user's job does to each setting.
Also prints the example sampler alone, in the main process.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from conditioned_sep.data.sampling import SamplingConfig, StemBank, TrainingExamples
from conditioned_sep.data.sources import DatasetSpec, prepare, split_tracks
from conditioned_sep.models import PRESETS
from conditioned_sep.training import TrainConfig, Trainer

WARMUP_STEPS = 2


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def comma_list(kind: type):
    return lambda text: [kind(part) for part in text.split(",") if part]


def sampler_rate(spec: DatasetSpec, preset: str, batch_size: int) -> float:
    """Examples per second of the sampler alone (main process), on the training split training reads."""
    cfg = PRESETS[preset]
    segment = (cfg["segment_frames"] - 1) * cfg["hop_length"]
    examples = TrainingExamples(StemBank(split_tracks(spec, "train")), SamplingConfig(segment=segment), seed=0)
    n = 10 * batch_size
    t0 = time.perf_counter()
    examples.batch(range(n))
    return n / (time.perf_counter() - t0)


def training_rate(config: TrainConfig, steps: int) -> tuple[float, float]:
    """(examples per second, ms per optimizer step) over ``steps`` steps after the warm-up ones."""
    trainer = Trainer(config)
    trainer.setup()
    batches = iter(trainer.loader)
    for _ in range(WARMUP_STEPS):
        trainer.train_step(next(batches))
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(next(batches))
    seconds = time.perf_counter() - t0
    return steps * config.batch_size * config.accumulate / seconds, 1000 * seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per setting")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=comma_list(int), default=[1, 2], help="torch threads to try (1,2)")
    parser.add_argument("--workers", type=comma_list(int), default=[0, 1], help="loader workers to try (0,1)")
    parser.add_argument("--load", type=comma_list(str), default=["quiet", "busy"],
                        help="quiet, and/or busy (one competing busy process)")
    parser.add_argument("--dedicated", metavar="STEM", default=None, help="a dedicated model instead")
    parser.add_argument("--folder", type=Path, default=None, help="a stem folder instead of the default data")
    args = parser.parse_args()
    if set(args.load) - {"quiet", "busy"}:
        parser.error(f"--load takes quiet and/or busy, got {args.load}")
    # the data the trainings below read: the rendered default, or the folder
    spec = prepare(DatasetSpec("folder", args.folder) if args.folder is not None else DatasetSpec("default"))
    dataset = dict(dataset=spec.kind, data_root=spec.root)
    print(f"torch {torch.__version__}, preset {args.preset}, batch {args.batch_size}, data {spec.describe()}")
    print(f"sampler alone: {sampler_rate(spec, args.preset, args.batch_size):.0f} examples/s")
    print(f"{'load':6s} {'threads':>7s} {'workers':>7s} {'examples/s':>10s} {'ms/step':>8s}")
    warnings.simplefilter("ignore", RuntimeWarning)  # inter-op threads can be set once per process only
    with tempfile.TemporaryDirectory() as out:
        for load in args.load:
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None
            try:
                for threads in args.threads:
                    for workers in args.workers:
                        config = TrainConfig(out=Path(out), name=f"{load}-{threads}-{workers}", preset=args.preset,
                                             target=args.dedicated, steps=WARMUP_STEPS + args.steps,
                                             batch_size=args.batch_size, threads=threads, workers=workers,
                                             device="cpu", progress=False, **dataset)
                        rate, ms = training_rate(config, args.steps)
                        print(f"{load:6s} {threads:7d} {workers:7d} {rate:10.0f} {ms:8.0f}", flush=True)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    print(f"peak RSS {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
