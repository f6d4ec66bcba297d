#!/usr/bin/env python
"""Evaluate conditioned and dedicated separators beside the oracle and the mixture (BSS Eval v4, per condition).

    python evaluate.py runs/default --out results          # the models that `python train.py` left there
    python evaluate.py runs/default --musdb ~/musdb18 --jobs 2
    python evaluate.py --help

All logic lives in :mod:`conditioned_sep.evaluation` (``conditioned-sep evaluate`` runs the same code).
"""

import sys

from conditioned_sep.evaluation import main

if __name__ == "__main__":
    sys.exit(main(prog="evaluate.py"))
