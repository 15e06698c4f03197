"""The precision rule: bf16 only where the hardware computes it, never fp16 unasked."""

from __future__ import annotations

import pytest
import torch

from dsifn import devices
from dsifn.devices import resolve_precision
from dsifn.errors import ConfigError

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ((6, 1), "fp32"),  # Pascal: no bf16 units
        ((7, 0), "fp32"),  # Volta: fp16 tensor cores, bf16 emulated
        ((7, 5), "fp32"),  # Turing
        ((8, 0), "bf16"),  # Ampere A100
        ((8, 9), "bf16"),  # Ada
        ((9, 0), "bf16"),  # Hopper
    ],
)
def test_auto_on_cuda_follows_the_compute_capability(monkeypatch, capability, expected):
    asked = []

    def capability_of(device=None):
        asked.append(device)
        return capability

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability_of)
    # What older code asked: it says yes on Volta too, where bf16 is emulated.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", CUDA) == expected
    assert asked == [CUDA]  # the device in use, not whichever is current


def test_explicit_precisions_are_kept_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert resolve_precision("fp16", CUDA) == "fp16"
    assert resolve_precision("bf16", CUDA) == "bf16"
    assert resolve_precision("fp32", CUDA) == "fp32"


@pytest.mark.parametrize(("fast", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_the_cpu_follows_native_bf16(monkeypatch, fast, expected):
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: fast)
    assert resolve_precision("auto", torch.device("cpu")) == expected


def test_fp16_needs_cuda_and_unknown_names_are_refused():
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ConfigError, match="fp32"):
        resolve_precision("half", torch.device("cpu"))
