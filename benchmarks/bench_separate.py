"""Speed and memory of separating all four stems, ours against Open-Unmix umxhq, on CPU.

    python benchmarks/bench_separate.py                      # full preset, 60 s, niter 1, + umxhq, + 10 min memory
    python benchmarks/bench_separate.py --arch unet,bandsplit --precision fp32,bf16 --skip-long   # both, both
    python benchmarks/bench_separate.py --pretrained --seconds 180 --skip-umx --skip-long   # the shipped model
    python benchmarks/bench_separate.py --preset small --seconds 20 --skip-umx --skip-long

Every system runs in its own subprocess, so each peak resident memory (ru_maxrss: Python, torch and all) is
its own. Random weights: speed does not depend on weight values. Input: seeded noise, stereo 44.1 kHz.
``--pretrained``: the shipped model (its load time too) instead of random weights at ``--preset``.
Each worker separates a 12 s warm-up excerpt first (oneDNN builds its kernels for each new shape on first
use; 12 s covers one whole chunk), then times one separation of the full input. Timings on a shared machine vary with load: compare figures from one run; "CPU s" (process CPU time, all
threads) is steadier than wall time when other jobs compete for the cores.
Open-Unmix is a `bench` extra, not a runtime dependency.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

SAMPLE_RATE = 44100
STEMS = ("vocals", "drums", "bass", "other")
WARMUP = 12  # seconds


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _noise(seconds: float):
    import torch

    gen = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(2, int(seconds * SAMPLE_RATE), generator=gen)


def worker_ours(args: argparse.Namespace) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conditioned_sep.models import from_preset
    from conditioned_sep.separator import Separator

    torch.manual_seed(0)
    load = None
    if args.pretrained:
        start = time.perf_counter()
        sep = Separator.pretrained(niter=args.niter, chunk_seconds=args.chunk_seconds, precision=args.precision)
        load = time.perf_counter() - start
        model = next(iter(sep.models.values()))
        name = f"conditioned-sep shipped model, {sep.precision}"
    else:
        model = from_preset(args.arch, args.preset,
                            **({} if args.film_where is None else {"film_where": args.film_where}))
        sep = Separator(model, niter=args.niter, chunk_seconds=args.chunk_seconds, precision=args.precision)
        name = f"conditioned-sep {args.arch} {args.preset} {sep.precision} ({model.config.film_where} FiLM)"
    audio = _noise(args.seconds)
    sep.separate(audio[:, : WARMUP * SAMPLE_RATE], list(STEMS), sample_rate=SAMPLE_RATE)
    start, cpu = time.perf_counter(), time.process_time()
    out = sep.separate(audio, list(STEMS), sample_rate=SAMPLE_RATE)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert set(out) == set(STEMS) and out["vocals"].shape == audio.shape
    return {"system": name, "parameters": sep.num_parameters, "seconds": seconds, "cpu_seconds": cpu,
            "load_seconds": load}


def worker_umx(args: argparse.Namespace) -> dict:
    import types

    import torch

    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError):
        # Benchmark-only workaround: torchaudio's binary does not load beside this torch build. openunmix
        # imports it at module level but its model, torch STFT and Wiener filter never call it, so an empty
        # stand-in module is enough to build and run umxhq here. Nothing outside this subprocess sees it.
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    from openunmix.model import OpenUnmix, Separator
    from openunmix.utils import bandwidth_to_max_bin

    torch.manual_seed(0)
    max_bin = bandwidth_to_max_bin(rate=44100.0, n_fft=4096, bandwidth=16000)
    targets = {s: OpenUnmix(nb_bins=4096 // 2 + 1, nb_channels=2, hidden_size=512, max_bin=max_bin) for s in STEMS}
    sep = Separator(targets, niter=args.niter, n_fft=4096, n_hop=1024, nb_channels=2, sample_rate=44100.0,
                    filterbank="torch").eval()
    audio = _noise(args.seconds)[None]
    with torch.inference_mode():
        sep(audio[..., : WARMUP * SAMPLE_RATE])
        start, cpu = time.perf_counter(), time.process_time()
        out = sep(audio)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert out.shape[:2] == (1, 4)
    return {"system": "Open-Unmix umxhq (4 targets)", "parameters": sum(p.numel() for p in sep.parameters()),
            "seconds": seconds, "cpu_seconds": cpu}


def _run_worker(kind: str, args: argparse.Namespace, seconds: float, *, arch: str = "unet",
                precision: str = "fp32") -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--arch", arch, "--preset", args.preset,
           "--seconds", str(seconds), "--precision", precision,
           "--niter", str(args.niter), "--chunk-seconds", str(args.chunk_seconds)]
    if args.pretrained:
        cmd.append("--pretrained")
    if args.film_where:
        cmd += ["--film-where", args.film_where]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"system": kind, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="unet", help="unet, bandsplit or both (comma-separated)")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or auto, comma-separated: one row each")
    parser.add_argument("--pretrained", action="store_true", help="the shipped model instead of random weights")
    parser.add_argument("--preset", default="full", choices=["tiny", "small", "full"])
    parser.add_argument("--seconds", type=float, default=60.0, help="input duration for the speed comparison")
    parser.add_argument("--long-seconds", type=float, default=600.0, help="input duration for the memory check")
    parser.add_argument("--niter", type=int, default=1, help="Wiener iterations, for both systems")
    parser.add_argument("--chunk-seconds", type=float, default=10.0)
    parser.add_argument("--film-where", default=None, choices=["encoder", "decoder", "both", "once", "blocks"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    parser.add_argument("--skip-umx", action="store_true")
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--worker", choices=["ours", "umx"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker:
        result = (worker_ours if args.worker == "ours" else worker_umx)(args)
        result.update(input_seconds=args.seconds, peak_rss_mb=_peak_rss_mb())
        print(json.dumps(result))
        return

    import os

    import torch

    print(f"CPU threads: {torch.get_num_threads()} (os.cpu_count={os.cpu_count()}); all four stems, "
          f"stereo 44.1 kHz, niter={args.niter}, {'the shipped weights' if args.pretrained else 'random weights'}")
    archs = ["unet"] if args.pretrained else [a for a in args.arch.split(",") if a]
    precisions = [p for p in args.precision.split(",") if p]
    runs = [("ours", args.seconds, arch, precision) for arch in archs for precision in precisions]
    if not args.skip_umx:
        runs.append(("umx", args.seconds, "", "fp32"))
    if not args.skip_long:
        runs.append(("ours", args.long_seconds, archs[0], precisions[0]))
    print(f"{'system':56s} {'input s':>8s} {'params':>10s} {'seconds':>8s} {'x real-time':>11s} {'CPU s':>7s} "
          f"{'peak RSS':>9s} {'load s':>7s}")
    for kind, secs, arch, precision in runs:
        r = _run_worker(kind, args, secs, arch=arch, precision=precision)
        if "error" in r:
            print(f"{r['system']:56s} failed: {r['error']}")
            continue
        rtf = r["input_seconds"] / r["seconds"]
        load = f"{r['load_seconds']:7.2f}" if r.get("load_seconds") is not None else f"{'':7s}"
        print(f"{r['system']:56s} {r['input_seconds']:8.0f} {r['parameters'] / 1e6:9.2f}M {r['seconds']:8.2f} "
              f"{rtf:11.1f} {r['cpu_seconds']:7.2f} {r['peak_rss_mb'] / 1024:8.2f}G {load}", flush=True)


if __name__ == "__main__":
    main()
