"""The ``segstream`` command line: one module per area of verbs, registered by :mod:`.main`."""

from __future__ import annotations

from segstream.cli.main import main

__all__ = ["main"]
