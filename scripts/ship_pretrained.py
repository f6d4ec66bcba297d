"""Ship a trained conditioned model: its separation weights (EMA when trained with it), fp16, into
``conditioned_sep/pretrained/conditioned-unet.ckpt``, where ``Separator.pretrained()`` finds it. Commit the file once
per retraining (README: model card).

    python scripts/ship_pretrained.py runs/shipped/conditioned
"""

from __future__ import annotations

import argparse
import hashlib
import time

from conditioned_sep.checkpoint import PRETRAINED_FILE, checkpoint_file, export_weights, load_checkpoint
from conditioned_sep.separator import Separator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a conditioned checkpoint or its run folder (best.ckpt)")
    args = parser.parse_args()
    source = checkpoint_file(args.checkpoint)
    model, meta = load_checkpoint(source)
    if not model.is_conditioned:
        raise SystemExit(f"{source} holds a dedicated model; ship a conditioned one")
    PRETRAINED_FILE.parent.mkdir(exist_ok=True)
    export_weights(source, PRETRAINED_FILE)
    t0 = time.perf_counter()
    Separator.pretrained()
    loaded = time.perf_counter() - t0
    training = meta.get("training") or {}
    print(f"{PRETRAINED_FILE}: {PRETRAINED_FILE.stat().st_size / 1e6:.1f} MB, sha256 "
          f"{hashlib.sha256(PRETRAINED_FILE.read_bytes()).hexdigest()[:16]}, {model.num_parameters / 1e6:.2f} M "
          f"weights ({meta['weights']}), step {training.get('step')}, {training.get('seconds')} s of training; "
          f"Separator.pretrained() loads in {loaded:.2f} s")


if __name__ == "__main__":
    main()
