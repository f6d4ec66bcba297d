#!/usr/bin/env python
"""Train conditioned-sep models: arguments -> conditioned_sep.training (no logic here).

    python train.py                                  # conditioned model, synthetic default data, small preset
    python train.py --all                            # conditioned + four dedicated models, same budget each
    python train.py --dedicated vocals --musdb PATH  # one dedicated baseline on MUSDB18
    torchrun --nproc_per_node=2 train.py ...         # DistributedDataParallel
"""

from conditioned_sep.training import main

if __name__ == "__main__":
    raise SystemExit(main())
