"""One module per ``dsifn`` sub-command (see :mod:`dsifn.cli.main`)."""
