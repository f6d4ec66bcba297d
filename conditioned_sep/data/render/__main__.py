"""``python -m conditioned_sep.data.render [ROOT]``: render (once) the dataset and print its root."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .dataset import default_render_root, ensure_rendered_dataset


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conditioned_sep.data.render",
                                     description="Render (once) the dataset of sampled-instrument songs.")
    parser.add_argument("root", nargs="?", default=None, help=f"output folder (default: {default_render_root()})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: up to 2)")
    args = parser.parse_args(argv)
    print(ensure_rendered_dataset(args.root, seed=args.seed, workers=args.workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
