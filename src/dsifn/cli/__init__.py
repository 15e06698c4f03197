"""The ``dsifn`` command line."""

from dsifn.cli.main import main

__all__ = ["main"]
