"""The module-level Faust app, for ``faust -A segstream.stream.main:app worker --without-web``.

Settings come from the ``SEGSTREAM_*`` environment, as for ``segstream worker``. This is the
only module that builds an app at import time; everything else calls
:func:`segstream.stream.service.create_service`.
"""

from __future__ import annotations

from segstream.settings import load_settings
from segstream.stream.service import create_service

__all__ = ["app"]

app = create_service(load_settings())
