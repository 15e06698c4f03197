"""Shared test settings: seeded torch, every test offline with its own hub cache, one thread."""

from __future__ import annotations

import socket
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import torch


class NetworkBlocked(OSError):
    """A test tried to reach the network; tests run on data they generate."""


def _blocked(*args: Any, **kwargs: Any) -> NoReturn:
    raise NetworkBlocked(f"a test tried to reach the network: {args[:1]!r}")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test on one torch thread, as the rest of the process had it before.

    On 2 shared cores two OpenMP threads per process spend most of their time waiting for each
    other; tests of heavy steps run faster on one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _offline(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Block downloads and give each test an empty torch.hub cache of its own.

    A test that wants a download to happen replaces ``torch.hub.download_url_to_file`` itself;
    anything else that opens a URL or an internet socket fails with :class:`NetworkBlocked`
    (an ``OSError``, as a real network failure is). Local sockets and URLs (``torchrun``'s
    rendezvous and the HTTP servers tests start on 127.0.0.1, unix sockets) stay allowed. GDAL
    reads URLs through libcurl, below Python's sockets: every host but the local ones goes
    through a proxy that refuses connections (``http_proxy`` with ``no_proxy``).
    """
    hub = tmp_path_factory.mktemp("hub")
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    monkeypatch.setenv("TORCH_HOME", str(hub))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _blocked)
    urlopen = urllib.request.urlopen

    def local_urls(url: Any, *args: Any, **kwargs: Any) -> Any:
        target = url.full_url if isinstance(url, urllib.request.Request) else str(url)
        if urllib.parse.urlparse(target).hostname not in _LOCAL_HOSTS:
            _blocked(target)
        return urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_urls)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, _DEAD_PROXY)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, ",".join(sorted(_LOCAL_HOSTS)))
    connect = socket.socket.connect

    def local_only(sock: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else None
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in _LOCAL_HOSTS:
            _blocked(address)
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    yield hub
    torch.hub.set_dir(old)


_LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost", "0.0.0.0"}
# Where libcurl (GDAL's /vsicurl/) sends every non-local request: port 9 refuses them.
_DEAD_PROXY = "http://127.0.0.1:9"
