"""Training throughput against the machine's own peak: the network's step per precision and compile setting beside
eager fp32, the loader alone, and ``train.py``'s step with its defaults (data included), in one run.

    python benchmarks/bench_train.py [--arch unet,bandsplit] [--preset small] [--precision fp32,bf16]
                                     [--compile off,on] [--batch-size 16] [--steps 5] [--threads 2]
                                     [--loader] [--train] [--folder PATH]
    python benchmarks/bench_train.py --arch unet --preset tiny --steps 2 --compile off   # a quick check

Per setting (one quiet process, settings side by side): FLOP per optimizer step (forward + backward, counted by
``torch.utils.flop_counter`` on the eager model: the same work whatever the precision), ms per step of forward,
backward and Adam on random audio (the compute-only step, after warm-up steps that include compiling), examples
per second, the achieved TFLOP/s and its share of this run's measured matrix-product peak of the same dtype
(2048^3 products, fp32 and bf16), and the speed-up over eager fp32.

``--loader``: examples per second the training loader delivers (stems from the int16 stem cache, the same
sampler and workers training uses), on the data the trainings read. ``--train``: ms per step of ``train.py``'s own
step with its defaults (Trainer, DataLoader, threads auto), after warm-up steps. Uses the rendered default
dataset (rendered first if missing) unless ``--folder`` names a stem folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from conditioned_sep.data.sampling import SamplingConfig, StemBank, StepSampler, TrainingExamples, collate
from conditioned_sep.data.sources import DatasetSpec, prepare, split_tracks
from conditioned_sep.data.stemcache import default_stem_cache_root
from conditioned_sep.hardware import cpu_flags
from conditioned_sep.models import from_preset
from conditioned_sep.training import TrainConfig, Trainer, separation_loss

WARMUP_STEPS = 2


def comma_list(kind: type):
    return lambda text: [kind(part) for part in text.split(",") if part]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the GPU runs behind the host: read the clock once its work is done


def matmul_peak(dtype: torch.dtype, *, device: torch.device = torch.device("cpu"), n: int | None = None,
                repeats: int = 5) -> float:
    """TFLOP/s of an ``n^3`` matrix product in ``dtype`` on random data (median of ``repeats`` after warm-ups);
    ``n`` 2048 on a CPU, 8192 on a GPU (a product that fills it)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e12


def _batch(model, batch_size: int, seed: int = 0,
           device: torch.device = torch.device("cpu")) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    cfg = model.config
    segment = (cfg.segment_frames - 1) * cfg.hop_length
    gen = torch.Generator().manual_seed(seed)
    mixture = 0.1 * torch.randn(batch_size, cfg.audio_channels, segment, generator=gen)
    target = 0.05 * torch.randn(batch_size, cfg.audio_channels, segment, generator=gen)
    z = torch.eye(len(cfg.stems))[torch.arange(batch_size) % len(cfg.stems)] if cfg.conditioned else None
    return mixture.to(device), target.to(device), z.to(device) if z is not None else None


def step_flop(arch: str, preset: str, batch_size: int, device: torch.device = torch.device("cpu")) -> float:
    """FLOP of one forward + backward of the eager fp32 network on a batch (Adam's few FLOP per weight aside)."""
    model = from_preset(arch, preset).train().to(device)
    mixture, target, z = _batch(model, batch_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = separation_loss(model, mixture, target, z)
        loss.backward()
    return float(counter.get_total_flops())


def compute_step_ms(arch: str, preset: str, *, precision: str, compiled: bool, batch_size: int,
                    steps: int, device: torch.device = torch.device("cpu"),
                    overrides: dict | None = None) -> tuple[float, float]:
    """(ms per optimizer step, seconds of the warm-up steps) of forward, backward and Adam on random audio;
    ``overrides``: fields of the architecture's config (e.g. a recipe's)."""
    torch.manual_seed(0)
    model = from_preset(arch, preset, **(overrides or {})).train().to(device)
    if compiled:
        model.compile_network()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    mixture, target, z = _batch(model, batch_size, device=device)

    def step() -> None:
        loss, _ = separation_loss(model, mixture, target, z, precision=precision)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    t0 = time.perf_counter()
    for _ in range(WARMUP_STEPS):
        step()
    _sync(device)
    warmup = time.perf_counter() - t0
    if device.type == "cuda":  # no sync inside the loop: the host queues steps as training does
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        return 1000 * (time.perf_counter() - t0) / steps, warmup
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times), warmup


def loader_rate(spec: DatasetSpec, arch: str, preset: str, *, batch_size: int, workers: int, batches: int) -> float:
    """Examples per second the training loader delivers (as :class:`Trainer` builds it), after one batch."""
    cfg = from_preset(arch, preset).config
    bank = StemBank(split_tracks(spec, "train"), stems=cfg.stems, channels=cfg.audio_channels,
                    cache_root=default_stem_cache_root(), progress=True)
    examples = TrainingExamples(bank, SamplingConfig(segment=(cfg.segment_frames - 1) * cfg.hop_length), seed=0)
    sampler = StepSampler(per_step=batch_size, start=0, stop=batches + 1)
    loader = DataLoader(examples, batch_sampler=sampler, num_workers=workers, collate_fn=collate)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t0)


def train_step_ms(config: TrainConfig, steps: int) -> float:
    """ms per optimizer step of ``train.py``'s step (DataLoader included), after the warm-up steps."""
    trainer = Trainer(config)
    trainer.setup()
    batches = iter(trainer.loader)
    for _ in range(WARMUP_STEPS):
        trainer.train_step(next(batches))
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(next(batches))
    return 1000 * (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=comma_list(str), default=["unet", "bandsplit"])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--precision", type=comma_list(str), default=["fp32", "bf16"])
    parser.add_argument("--compile", type=comma_list(str), default=["off", "on"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--loader", action="store_true", help="also time the training loader alone")
    parser.add_argument("--workers", type=comma_list(int), default=[0, 1], help="loader workers to try (--loader)")
    parser.add_argument("--train", action="store_true", help="also time train.py's step with its defaults")
    parser.add_argument("--folder", type=Path, default=None, help="a stem folder instead of the default data")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (the compute-only steps and the peak)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)
    peaks = {"fp32": matmul_peak(torch.float32, device=device), "bf16": matmul_peak(torch.bfloat16, device=device)}
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}, fp32 products in {torch.get_float32_matmul_precision()} precision"
    else:
        bf16_units = sorted(cpu_flags() & {"amx_bf16", "avx512_bf16"}) or ["none"]
        where = f"{torch.get_num_threads()} threads, bf16 units: {', '.join(bf16_units)}"
    n = 8192 if device.type == "cuda" else 2048
    print(f"torch {torch.__version__}, {where}; {n}^3 product peak: fp32 {peaks['fp32']:.3f} TFLOP/s, bf16 "
          f"{peaks['bf16']:.3f} TFLOP/s")
    print(f"{'arch':9s} {'preset':6s} {'prec':5s} {'compile':7s} {'GFLOP/step':>10s} {'ms/step':>8s} "
          f"{'ex/s':>6s} {'TFLOP/s':>8s} {'of peak':>8s} {'speed-up':>8s} {'warm-up s':>9s}")
    for arch in args.arch:
        flop = step_flop(arch, args.preset, args.batch_size, device)
        base = None
        for precision in args.precision:
            for compiled in args.compile:
                ms, warmup = compute_step_ms(arch, args.preset, precision=precision, compiled=compiled == "on",
                                             batch_size=args.batch_size, steps=args.steps, device=device)
                base = base if base is not None else ms
                rate = flop / (ms / 1000) / 1e12
                print(f"{arch:9s} {args.preset:6s} {precision:5s} {compiled:7s} {flop / 1e9:10.1f} {ms:8.0f} "
                      f"{args.batch_size / (ms / 1000):6.1f} {rate:8.3f} {100 * rate / peaks[precision]:7.1f}% "
                      f"{base / ms:7.2f}x {warmup:9.1f}", flush=True)
    if args.loader or args.train:
        spec = prepare(DatasetSpec("folder", args.folder) if args.folder is not None else DatasetSpec("default"))
    if args.loader:
        for arch in args.arch:
            for workers in args.workers:
                rate = loader_rate(spec, arch, args.preset, batch_size=args.batch_size, workers=workers, batches=10)
                print(f"loader {arch} {args.preset}, {workers} worker(s): {rate:.0f} examples/s", flush=True)
    if args.train:
        with tempfile.TemporaryDirectory() as out:
            for arch in args.arch:
                config = TrainConfig(out=Path(out), name=arch, arch=arch, preset=args.preset,
                                     steps=WARMUP_STEPS + args.steps, batch_size=args.batch_size, progress=False,
                                     dataset=spec.kind, data_root=spec.root)
                ms = train_step_ms(config, args.steps)
                print(f"train.py step {arch} {args.preset} (defaults: precision {config.precision}, threads "
                      f"{config.threads}, workers {config.workers}): {ms:.0f} ms, "
                      f"{args.batch_size / (ms / 1000):.1f} examples/s", flush=True)


if __name__ == "__main__":
    main()
