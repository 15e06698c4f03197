"""The ``dsifn`` command line: :func:`dsifn.cli.main.main`, one module per command.

Nothing is imported here, so ``python -m dsifn.cli.main`` (as ``torchrun`` runs it) starts the
module once, without runpy's warning about a module imported twice.
"""
