"""The benchmark's tests run on one torch thread each (tests/conftest.py: ``one_thread``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every benchmark test on one thread."""
