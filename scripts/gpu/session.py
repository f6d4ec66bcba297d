"""One prepared run on a lent GPU machine, inside its 10-minute limit (issue 20 item 7, issue 21 item 6):

1. decode the packed training songs (``pack_data.py``) into a stem folder;
2. ``benchmarks/bench_train.py`` on both backbones at the full preset (fp32 and bf16, eager): step time and the
   share of the GPU's measured matrix-product peak;
3. time the ``shipped`` recipe's step, and size the budget to the time left;
4. ``train.py --recipe shipped --all``: the conditioned model and its four dedicated twins at equal compute;
5. export each model's weights (fp16, ``checkpoint.export_weights``) and the logs to ``$OUT``.

    OUT=$OUT python3 scripts/gpu/session.py --seconds 540              # on the device, from the repository root
    python scripts/gpu/session.py --device cpu --preset tiny --seconds 120 --bench-preset tiny   # a rehearsal
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import torch  # noqa: E402

from bench_train import compute_step_ms  # noqa: E402
from conditioned_sep.checkpoint import export_weights  # noqa: E402
from conditioned_sep.hardware import choose_precision  # noqa: E402
from conditioned_sep.models import ARCHITECTURES  # noqa: E402
from conditioned_sep.recipe import RECIPES  # noqa: E402

OVERHEAD = 1.3
"""train.py's step over the compute-only step (loader, validation, checkpoints), assumed when sizing the budget."""


def log(message: str, out: Path) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    print(line, flush=True)
    with open(out / "log.txt", "a") as f:
        f.write(line + "\n")


def run(command: list[str], *, out: Path, timeout: float) -> int:
    """Run ``command``, its output to the console and ``out/log.txt`` (a device run brings back 8 files at most);
    stopped (SIGTERM: train.py then saves and exits) after ``timeout`` seconds."""
    log(" ".join(command), out)
    with open(out / "log.txt", "a") as f:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)

        def pump() -> None:
            for line in proc.stdout:
                print(line, end="", flush=True)
                f.write(line)
                f.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)
    return proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=540, help="wall-clock budget of the whole session")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--packed", type=Path, default=ROOT / ".gpu/data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-work"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu-out")))
    parser.add_argument("--preset", default=None, help="the recipe's preset (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, default=None, help="the recipe's batch (default: the recipe's)")
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--bench-preset", default="full")
    parser.add_argument("--bench-steps", type=int, default=60)
    parser.add_argument("--bench-seconds", type=float, default=100)
    args = parser.parse_args()
    t_start = time.monotonic()
    left = lambda: args.seconds - (time.monotonic() - t_start)  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda":
        log(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, {os.cpu_count()} CPUs", args.out)

    stems = args.work / "stems"
    run([sys.executable, "scripts/gpu/unpack_data.py", str(args.packed), str(stems)], out=args.out,
        timeout=120)
    log(f"unpacked; {left():.0f} s left", args.out)

    run([sys.executable, "benchmarks/bench_train.py", "--device", args.device, "--preset", args.bench_preset,
         "--compile", "off", "--steps", str(args.bench_steps)], out=args.out, timeout=args.bench_seconds)
    log(f"benchmarked; {left():.0f} s left", args.out)

    recipe = RECIPES["shipped"]
    options = dict(recipe.options)
    preset = args.preset or options["preset"]
    batch = args.batch_size or options["batch_size"]
    precision = choose_precision("auto", device=device, bf16_pays=ARCHITECTURES[options["arch"]][1].bf16_pays)
    ms, _ = compute_step_ms(options["arch"], preset, precision=precision, compiled=False, batch_size=batch, steps=20,
                            device=device, overrides=recipe.model_overrides)
    train_seconds = left() - 60  # export and margin
    per_model = train_seconds / 8  # the conditioned model gets 4 shares, the dedicated ones one each
    steps = max(10, int(per_model / (OVERHEAD * ms / 1000)))
    log(f"recipe step {ms:.1f} ms ({precision}, batch {batch}); {train_seconds:.0f} s of training: {steps} steps per "
        f"dedicated model, {4 * steps} for the conditioned one", args.out)

    runs = args.work / "runs"
    code = run([sys.executable, "train.py", "--recipe", "shipped", "--all", "--folder", str(stems), "--device",
                args.device, "--compile", "off", "--workers", str(args.workers), "--steps", str(steps),
                "--time-limit", f"{per_model / 60:.3f}", "--out", str(runs), "--preset", preset,
                "--batch-size", str(batch), "--no-progress", "--overwrite"],
               out=args.out, timeout=train_seconds + 15)
    log(f"train.py exit {code}; {left():.0f} s left", args.out)

    summary = {"step_ms": ms, "precision": precision, "batch": batch, "preset": preset, "steps": steps,
               "train_seconds": train_seconds, "runs": {}}
    for run_dir in sorted(p for p in runs.glob("*") if p.is_dir()):
        best = run_dir / "best.ckpt"
        entry = {"log": (run_dir / "log.csv").read_text() if (run_dir / "log.csv").exists() else None}
        if best.exists():
            export_weights(best, args.out / f"{run_dir.name}.ckpt")
            entry["exported"] = f"{run_dir.name}.ckpt"
        summary["runs"][run_dir.name] = entry
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    log(f"exported {sum('exported' in e for e in summary['runs'].values())} models; {left():.0f} s left", args.out)


if __name__ == "__main__":
    main()
