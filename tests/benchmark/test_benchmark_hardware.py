"""The device peak table and the peak-memory measurement."""

from __future__ import annotations

import mmap
import sys

import numpy as np
import pytest
import torch

from dsifn.benchmark import device_peak_tflops
from dsifn.benchmark.hardware import peak_memory_of


def test_device_peak_table(monkeypatch):
    assert device_peak_tflops(torch.device("cpu"), "fp32") is None
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert device_peak_tflops(cuda, "bf16") == pytest.approx(989.4)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert device_peak_tflops(cuda, "fp32") == pytest.approx(494.7)  # convolutions run TF32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert device_peak_tflops(cuda, "fp32") == pytest.approx(66.9)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert device_peak_tflops(cuda, "bf16") == pytest.approx(756.5)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert device_peak_tflops(cuda, "bf16") == pytest.approx(989.4)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some GPU")
    assert device_peak_tflops(cuda, "bf16") is None


@pytest.mark.skipif(sys.platform != "linux", reason="the CPU peak is Linux's VmHWM")
def test_peak_memory_restarts_at_each_step():
    cpu = torch.device("cpu")
    kept: list[mmap.mmap] = []  # resident until the peak is read

    def allocate() -> None:
        # Fresh pages from the system: malloc could reuse pages the process already holds.
        block = mmap.mmap(-1, 64 * 2**20)
        np.frombuffer(block, dtype=np.uint8)[:] = 1
        kept.append(block)

    busy = peak_memory_of(allocate, cpu)
    kept.pop().close()
    idle = peak_memory_of(lambda: None, cpu)
    assert busy is not None and idle is not None
    # The 64 MiB freed before the second step are not part of its peak.
    assert busy - idle >= 60 * 2**20
