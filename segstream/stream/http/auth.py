"""Bearer-token authentication of the HTTP side (``SEGSTREAM_HTTP_TOKEN``).

With a token set, every route answers 401 (``{"error": ...}``, with ``WWW-Authenticate:
Bearer``) unless the request carries ``Authorization: Bearer <token>``, except:

- ``/healthz`` and ``/readyz``, which orchestrators probe without credentials (they reveal
  nothing but whether the process and its dependencies answer);
- the status page's shell, ``/`` and ``/static/*``: static files holding no data. The page
  asks for the token, keeps it in the tab's ``sessionStorage`` and sends it with its fetches
  of ``/status.json``, which is protected like the API.

The comparison takes constant time (:func:`hmac.compare_digest`). Without a token nothing is
checked, and :func:`check_exposure` refuses to serve such an open API on anything but
loopback unless ``SEGSTREAM_HTTP_ALLOW_ANONYMOUS=true``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr

from segstream.errors import ConfigError
from segstream.settings import LOOPBACK_HOSTS, Settings

__all__ = ["PUBLIC_PATHS", "PUBLIC_PREFIXES", "bearer_auth", "check_exposure", "is_public"]

PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/"})
"""Paths served without the token: probes, and the status page's shell."""
PUBLIC_PREFIXES = ("/static/",)
"""Path prefixes served without the token: the status page's script and style."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_public(path: str) -> bool:
    """Whether ``path`` is served without the token."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def check_exposure(settings: Settings) -> None:
    """Refuse to serve an API without a token beyond this machine.

    Raises:
        ConfigError: ``http_host`` is not a loopback address, no ``http_token`` is set and
            ``http_allow_anonymous`` is false.
    """
    if settings.http_token is not None or settings.http_allow_anonymous:
        return
    if settings.http_host not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"SEGSTREAM_HTTP_HOST is {settings.http_host}, not loopback, and no "
            "SEGSTREAM_HTTP_TOKEN is set: anyone who reaches that address could read every "
            "user's segment. Set SEGSTREAM_HTTP_TOKEN, or SEGSTREAM_HTTP_ALLOW_ANONYMOUS=true "
            "to serve it open on purpose"
        )


def bearer_auth(
    token: SecretStr,
) -> Middleware:
    """An aiohttp middleware requiring ``Authorization: Bearer <token>`` off the public paths.

    It raises 401 as ``web.HTTPUnauthorized``, so the app's error middleware (outside this
    one) gives it the usual JSON shape.
    """
    expected = token.get_secret_value().encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public(request.path):
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # compare_digest's time depends on the length of the input only, never on where
        # the first difference lies, so a token cannot be guessed byte by byte.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            reason = "wrong bearer token" if scheme.lower() == "bearer" else "no bearer token"
            raise web.HTTPUnauthorized(
                text=f"{reason}: send Authorization: Bearer <SEGSTREAM_HTTP_TOKEN>",
                headers={"WWW-Authenticate": 'Bearer realm="segstream"'},
            )
        return await handler(request)

    return middleware
