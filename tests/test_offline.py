"""The suite's offline guard (tests/conftest.py): no downloads, a hub cache of its own."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
import torch

from dsifn.errors import WeightsError
from dsifn.models.vgg import VGG16_IMAGENET1K_V1, fetch_weights


def test_the_hub_cache_is_an_empty_folder_of_the_test(_offline: Path) -> None:
    assert Path(torch.hub.get_dir()) == _offline
    assert list(_offline.iterdir()) == []


def test_urls_and_internet_sockets_are_refused() -> None:
    with pytest.raises(OSError, match="network"):
        urllib.request.urlopen("https://download.pytorch.org/")
    with socket.socket() as sock, pytest.raises(OSError, match="network"):
        sock.connect(("192.0.2.1", 443))


def test_pretrained_weights_are_a_clear_error_offline() -> None:
    with pytest.raises(WeightsError, match="could not be downloaded"):
        fetch_weights(VGG16_IMAGENET1K_V1, progress=False)
