#!/usr/bin/env python
"""Evaluate conditioned and dedicated separators beside the oracle and the mixture (BSS Eval v4, per condition).

    python evaluate.py runs/default --out results          # the models that `python train.py` left there
    python evaluate.py runs/default --musdb ~/musdb18 --jobs 2
    python evaluate.py --help

The arguments are conditioned_sep.cli's (``conditioned-sep evaluate`` is the same command); no logic here.
"""

from conditioned_sep.cli import run

if __name__ == "__main__":
    raise SystemExit(run("evaluate", prog="evaluate.py"))
