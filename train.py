#!/usr/bin/env python
"""Train conditioned-sep models (the arguments are conditioned_sep.cli's; no logic here).

    python train.py                                  # conditioned model, embedded default data, small preset
    python train.py --all                            # conditioned + four dedicated models, same budget each
    python train.py --dedicated vocals --musdb PATH  # one dedicated baseline on MUSDB18
    torchrun --nproc_per_node=2 train.py ...         # DistributedDataParallel
"""

from conditioned_sep.cli import run

if __name__ == "__main__":
    raise SystemExit(run("train", prog="train.py"))
