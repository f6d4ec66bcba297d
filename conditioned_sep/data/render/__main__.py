"""``python -m conditioned_sep.data.render [ROOT]``: render (once) the dataset and print its root."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .compose import ComposeConfig
from .dataset import RenderConfig, default_render_root, ensure_rendered_dataset


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conditioned_sep.data.render",
                                     description="Render (once) the dataset of sampled-instrument songs.")
    parser.add_argument("root", nargs="?", default=None, help=f"output folder (default: {default_render_root()})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: up to 2)")
    parser.add_argument("--hydrogen-kits", type=float, default=ComposeConfig.hydrogen_kits, metavar="SHARE",
                        help="share of songs drummed on a real Hydrogen kit (needs hydrogen-drumkits; a variant of "
                             "the default dataset: give it its own ROOT)")
    parser.add_argument("--opl3", type=float, default=ComposeConfig.opl3, metavar="SHARE",
                        help="share of the pitched instrument parts played by the OPL3 FM soundfont (needs "
                             "opl3-soundfont; a variant of the default dataset: give it its own ROOT)")
    parser.add_argument("--train-songs", type=int, default=RenderConfig.train_songs, metavar="N",
                        help="songs in the training split; the validation and test splits, and the first training "
                             "songs, stay those of the default dataset (a variant: give it its own ROOT)")
    args = parser.parse_args(argv)
    if args.train_songs < 1:
        parser.error(f"--train-songs is a number of songs, at least 1 (got {args.train_songs})")
    if not 0.0 <= args.hydrogen_kits <= 1.0:
        parser.error(f"--hydrogen-kits is a share of songs, from 0 to 1 (got {args.hydrogen_kits:g})")
    if not 0.0 <= args.opl3 <= 1.0:
        parser.error(f"--opl3 is a share of parts, from 0 to 1 (got {args.opl3:g})")
    compose = ComposeConfig(hydrogen_kits=args.hydrogen_kits, opl3=args.opl3)
    config = RenderConfig(train_songs=args.train_songs)
    print(ensure_rendered_dataset(args.root, seed=args.seed, config=config, compose=compose, workers=args.workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
