"""Shared by the benchmark's tests: one CPU thread per test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # These tests run beside others on 2 shared cores, where two OpenMP threads per process
    # spend most of their time waiting for each other; one thread is faster there.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
