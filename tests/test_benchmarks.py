"""The benchmark scripts still run against the package as it is now (tiny inputs; their figures are not checked).

A change of an internal signature once broke ``bench_evaluate.py`` without any test noticing; these runs catch
that. ``bench_train.py`` runs on the tiny synthetic folder (its default data would be rendered first).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

RUNS = {
    "bench_metrics": (["--seconds", "3", "--repeats", "1"],
                      [r"speed-up wall clock\s*:\s*[\d.]+x", r"max \|ours - museval\| SAR: [\d.e+-]+ dB"]),
    "bench_evaluate": (["--tracks", "2", "--minutes", "0.1", "--measure", "1", "--museval-seconds", "2", "4"],
                       [r"song 0: ours [\d.]+ s wall", r"ratio: \d+x"]),
    "bench_separate": (["--preset", "tiny", "--seconds", "2", "--skip-umx", "--skip-long", "--arch", "unet,bandsplit",
                        "--precision", "fp32,bf16"],
                       [r"conditioned-sep unet tiny fp32 .* [\d.]+G", r"conditioned-sep bandsplit tiny bf16 .* [\d.]+G"]),
    "bench_stream": (["--minutes", "0.05", "--arch", "unet", "--preset", "tiny"],
                     [r"longest / shortest peak: [\d.]+"]),
}


@pytest.mark.parametrize("script", sorted(RUNS))
def test_benchmark_runs_and_prints_its_figures(script):
    args, patterns = RUNS[script]
    done = subprocess.run([sys.executable, str(BENCHMARKS / f"{script}.py"), *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for pattern in patterns:
        assert re.search(pattern, done.stdout), f"{pattern!r} not in the output of {script}:\n{done.stdout[-3000:]}"


def test_bench_train_runs_on_a_tiny_folder_and_prints_its_figures(tiny_synthetic):
    args = ["--arch", "unet,bandsplit", "--preset", "tiny", "--steps", "1", "--precision", "fp32,bf16", "--compile",
            "off", "--loader", "--workers", "0", "--train", "--folder", str(tiny_synthetic)]
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_train.py"), *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for pattern in (r"peak: fp32 [\d.]+ TFLOP/s, bf16 [\d.]+ TFLOP/s",
                    r"unet\s+tiny\s+bf16\s+off\s+[\d.]+\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+%\s+[\d.]+x",
                    r"bandsplit\s+tiny\s+fp32\s+off", r"loader unet tiny, 0 worker\(s\): \d+ examples/s",
                    r"train.py step bandsplit tiny \(defaults: precision auto"):
        assert re.search(pattern, done.stdout), f"{pattern!r} not in the output:\n{done.stdout[-3000:]}"
