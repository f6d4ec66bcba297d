"""Training speed and memory: examples per second and peak memory for a preset (default: small).

    python benchmarks/bench_train.py [--preset small] [--steps 30] [--batch-size 16]

Uses the synthetic default dataset (generated first if missing) and the training loop's own pieces: the
example sampler, the loss and Adam. Prints the sampler alone, then conditioned and dedicated training steps.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from conditioned_sep.data.folder import list_tracks
from conditioned_sep.data.sampling import SamplingConfig, StemBank, TrainingExamples
from conditioned_sep.data.synthetic import ensure_default_dataset
from conditioned_sep.training import TrainConfig, build_model, spectral_loss


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    root = ensure_default_dataset()
    t0 = time.perf_counter()
    bank = StemBank(list_tracks(root, "train"))
    print(f"data: {len(bank)} training songs loaded in {time.perf_counter() - t0:.1f} s, peak RSS {peak_rss_gb():.2f} GB")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, preset {args.preset}, batch {args.batch_size}")
    for target in (None, "vocals"):
        config = TrainConfig(preset=args.preset, target=target, batch_size=args.batch_size)
        model = build_model(config)
        cfg = model.config
        segment = (cfg.segment_frames - 1) * cfg.hop_length
        examples = TrainingExamples(bank, SamplingConfig(segment=segment, target=target), seed=0)
        if target is None:
            t0 = time.perf_counter()
            n = 10 * args.batch_size
            examples.batch(range(n))
            dt = time.perf_counter() - t0
            print(f"sampler alone: {n / dt:.0f} examples/s ({segment / cfg.sample_rate:.2f} s excerpts)")
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        times = []
        for step in range(args.steps + 3):
            t0 = time.perf_counter()
            batch = examples.batch(range(step * args.batch_size, (step + 1) * args.batch_size))
            z = batch["z"] if model.is_conditioned else None
            loss = spectral_loss(model, model, batch["mixture"], batch["target"], z)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step >= 3:
                times.append(time.perf_counter() - t0)
        per_step = sum(times) / len(times)
        kind = "conditioned" if target is None else f"dedicated-{target}"
        print(f"{kind:17s}: {model.num_parameters / 1e6:.2f} M params, {per_step * 1000:.0f} ms/step, "
              f"{args.batch_size / per_step:.0f} examples/s, peak RSS {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
