"""The HTTP token: which paths need it, the 401's shape, and refusing an open API off loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from segstream.errors import ConfigError
from segstream.settings import Settings
from segstream.stream.http.auth import bearer_auth, check_exposure, is_public
from segstream.stream.http.openapi import openapi_document
from segstream.stream.http.server import _errors

TOKEN = "t0ken-with-enough-entropy"


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path})


def _requests(*calls: tuple[str, dict[str, str]]) -> list[tuple[int, Any, dict[str, str]]]:
    """``(status, JSON body, headers)`` of GETs through the app's real middleware chain."""

    async def run() -> list[tuple[int, Any, dict[str, str]]]:
        app = web.Application(middlewares=[_errors, bearer_auth(SecretStr(TOKEN))])
        for path in ("/users/{user_id}", "/metrics", "/status.json", "/healthz", "/readyz", "/"):
            app.router.add_get(path, _ok)
        app.router.add_get("/static/status.js", _ok)
        async with TestClient(TestServer(app)) as client:
            answers = []
            for path, headers in calls:
                response = await client.get(path, headers=headers)
                answers.append((response.status, await response.json(), dict(response.headers)))
            return answers

    return asyncio.run(run())


@pytest.mark.parametrize("path", ["/users/1", "/metrics", "/status.json"])
def test_a_protected_route_without_a_token_is_401_in_the_usual_shape(path: str) -> None:
    [(status, body, headers)] = _requests((path, {}))
    assert status == 401
    assert body == {"error": "no bearer token: send Authorization: Bearer <SEGSTREAM_HTTP_TOKEN>"}
    assert headers["WWW-Authenticate"] == 'Bearer realm="segstream"'


@pytest.mark.parametrize(
    "header",
    [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ", f"Basic {TOKEN}", TOKEN],
)
def test_a_wrong_token_or_scheme_is_refused(header: str) -> None:
    [(status, body, _)] = _requests(("/users/1", {"Authorization": header}))
    assert status == 401
    assert TOKEN not in body["error"]


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer {TOKEN}"])
def test_the_token_opens_every_route(header: str) -> None:
    answers = _requests(
        ("/users/1", {"Authorization": header}), ("/metrics", {"Authorization": header})
    )
    assert [status for status, _, _ in answers] == [200, 200]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/", "/static/status.js"])
def test_probes_and_the_status_page_shell_need_no_token(path: str) -> None:
    [(status, body, _)] = _requests((path, {}))
    assert (status, body) == (200, {"path": path})


def test_public_paths() -> None:
    assert [is_public(p) for p in ("/healthz", "/readyz", "/", "/static/x.css")] == [True] * 4
    assert not any(is_public(p) for p in ("/users/1", "/metrics", "/openapi.json", "/healthzz"))


class TestExposure:
    def test_an_open_api_on_a_public_address_is_refused(self) -> None:
        with pytest.raises(
            ConfigError, match=r"SEGSTREAM_HTTP_TOKEN.*SEGSTREAM_HTTP_ALLOW_ANONYMOUS"
        ):
            check_exposure(Settings(http_host="0.0.0.0"))

    @pytest.mark.parametrize(
        "settings",
        [
            Settings(),
            Settings(http_host="::1"),
            Settings(http_host="0.0.0.0", http_token="x"),  # type: ignore[arg-type]
            Settings(http_host="0.0.0.0", http_allow_anonymous=True),
        ],
    )
    def test_loopback_a_token_or_an_explicit_choice_is_accepted(self, settings: Settings) -> None:
        check_exposure(settings)


def test_the_openapi_document_declares_the_bearer_scheme() -> None:
    document = openapi_document()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["security"] == [{"bearer": []}]
    for path, operations in document["paths"].items():
        for operation in operations.values():
            if is_public(path):
                assert operation["security"] == [], path
                assert "401" not in operation["responses"], path
            else:
                assert "security" not in operation, path
                assert "401" in operation["responses"], path
