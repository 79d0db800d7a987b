"""The module-level Faust app, for ``faust -A segstream.stream.main:app worker``.

Settings come from the ``SEGSTREAM_*`` environment, as for ``segstream worker``. This is the
only module that builds an app at import time; everything else calls
:func:`segstream.stream.app.create_app`.
"""

from __future__ import annotations

from segstream.settings import load_settings
from segstream.stream.app import create_app

__all__ = ["app"]

app = create_app(load_settings())
