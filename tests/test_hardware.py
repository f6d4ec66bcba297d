"""Hardware policy: device names, threads, precision, the processor's bf16 matrix units."""

from __future__ import annotations

import os

import pytest
import torch

from conditioned_sep import hardware
from conditioned_sep.hardware import DeviceError, auto_threads, autocast, device_problem, has_bf16_matmul, resolve_device


def test_auto_threads_leave_a_core_to_each_loader_worker(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert auto_threads(device=torch.device("cpu"), workers=1) == 1
    assert auto_threads(device=torch.device("cpu"), workers=0) == 2
    assert auto_threads(device=torch.device("cpu"), workers=4) == 1
    assert auto_threads(device=torch.device("cuda"), workers=1) is None
    assert auto_threads(device=torch.device("cpu"), workers=1, light_loader=True) == 2  # the stem cache's loader
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert auto_threads(device=torch.device("cpu"), workers=1) is None



@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_well_formed_device_names_pass_the_settings_check(name):
    assert device_problem(name) is None


@pytest.mark.parametrize("name", ["bogus", "gpu", "cuda:", "cuda:x", "", "CPU"])
def test_malformed_device_names_are_refused_with_the_valid_ones(name):
    assert "auto, cpu, cuda or cuda:N" in device_problem(name)
    with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:N"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals of a CPU-only torch")
def test_cuda_and_fp16_are_refused_on_a_cpu_only_torch():
    with pytest.raises(DeviceError, match="CUDA is not available.*--device cpu or auto"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="fp16 needs a CUDA device"):
        resolve_device("cpu", precision="fp16")
    with pytest.raises(DeviceError, match="precision must be one of"):
        resolve_device("cpu", precision="fp8")
    assert resolve_device("auto", precision="bf16") == torch.device("cpu")


def test_cpu_flags_decide_bf16_matrix_units(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"sse2", "avx512f"}))
    assert not has_bf16_matmul(torch.device("cpu"))
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16", "amx_tile"}))
    assert has_bf16_matmul(torch.device("cpu"))
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert has_bf16_matmul(torch.device("cpu"))


def test_cpu_flags_read_this_machine():
    flags = hardware.cpu_flags()
    if os.path.exists("/proc/cpuinfo") and os.uname().machine == "x86_64":
        assert "sse2" in flags  # every x86-64 processor has it
    assert isinstance(flags, frozenset)


def test_autocast_runs_the_forward_in_the_asked_dtype():
    a = torch.randn(8, 8)
    with autocast(torch.device("cpu"), "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert (a @ a).dtype == torch.float32
