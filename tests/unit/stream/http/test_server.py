"""Parsing HTTP requests: user ids and predict bodies, with messages that say what is wrong."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from segstream.errors import DriftStateError, StateConflict, StateError, StateUnavailable
from segstream.stream.http.openapi import MAX_USER_ID
from segstream.stream.http.server import _errors, parse_predict_body, parse_user_id

GOOD = {
    "age": 30,
    "gender": "F",
    "country": "Brasil",
    "traffic_source": "Search",
    "total_orders": 2,
    "most_frequent_brand": "Levi's",
    "most_frequent_category": "Jeans",
}


@pytest.mark.parametrize("raw", ["1", "42", str(MAX_USER_ID)])
def test_valid_user_ids_parse(raw: str) -> None:
    assert parse_user_id(raw) == int(raw)


@pytest.mark.parametrize("raw", ["0", "-3", "abc", "1.5", "", " 7", str(MAX_USER_ID + 1), "٣"])
def test_invalid_user_ids_are_rejected_naming_the_range(raw: str) -> None:
    with pytest.raises(web.HTTPBadRequest) as caught:
        parse_user_id(raw)
    assert f"from 1 to {MAX_USER_ID}" in caught.value.text
    assert repr(raw) in caught.value.text


def test_predict_body_gives_the_features_and_top() -> None:
    features, top, unknown = parse_predict_body(json.dumps({**GOOD, "top": 3}).encode())
    assert features == GOOD
    assert top == 3
    assert unknown == ()


def test_whole_numbers_written_with_a_fraction_are_their_ints() -> None:
    features, top, _ = parse_predict_body(json.dumps({**GOOD, "age": 30.0, "top": 2.0}).encode())
    assert features == GOOD and type(features["age"]) is int
    assert top == 2


def test_unknown_fields_are_ignored_and_named_or_refused_by_the_setting() -> None:
    body = json.dumps({**GOOD, "shoe_size": 42, "email": "a@b.c"}).encode()
    features, _, unknown = parse_predict_body(body)
    assert features == GOOD
    assert unknown == ("shoe_size", "email")
    with pytest.raises(web.HTTPBadRequest) as caught:
        parse_predict_body(body, "dead_letter")
    assert "field 'shoe_size' is not part of a predict request" in caught.value.text


def test_predict_top_defaults_to_five() -> None:
    assert parse_predict_body(json.dumps(GOOD).encode())[1] == 5


AGE = "age must be a whole number from 0 to 120"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"age": NaN}', "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"age": 30}).encode(), "missing field(s) gender, country"),
        (json.dumps({**GOOD, "age": "30"}).encode(), f'{AGE}, got "30"'),
        (json.dumps({**GOOD, "age": 500}).encode(), f"{AGE}, got 500"),
        (json.dumps({**GOOD, "age": 30.5}).encode(), f"{AGE}, got 30.5"),
        (json.dumps({**GOOD, "total_orders": -1}).encode(), "total_orders must be a whole"),
        (json.dumps({**GOOD, "country": ""}).encode(), "country must be text of 1 to 64 c"),
        (json.dumps({**GOOD, "top": 51}).encode(), "top must be a whole number from 0 to 50"),
        (b'{"age": 30, "age": 31}', "invalid body: key 'age' appears more than once"),
        (json.dumps(GOOD).encode()[:-1] + b', "\\u0061ge": 30}', "key 'age' appears more"),
        (b'{"x": {"a": 1, "a": 2}}', "key 'a' appears more than once"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"age": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested too deeply"),
        (b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
        (json.dumps(GOOD).encode().replace(b"30", b"9" * 5000), "not JSON"),
        (json.dumps(GOOD).encode().replace(b"30", b"1e999"), f"{AGE}, got a number too large"),
        (b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), "not JSON"),
        (json.dumps(GOOD).encode().replace(b'"F"', b'"\xc3\x28"'), "not JSON"),
        (json.dumps(GOOD).encode() + b"\x00", "not JSON"),
        (b"", "not JSON"),
    ],
)
def test_bad_predict_bodies_say_what_is_wrong(body: bytes, expected: str) -> None:
    with pytest.raises(web.HTTPBadRequest) as caught:
        parse_predict_body(body)
    assert expected in caught.value.text


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (StateUnavailable("read a user failed 2 times"), "Redis is unavailable: read a user"),
        (
            DriftStateError("drift state of model v1 is malformed"),
            "the stored state is unusable: drift state of model v1 is malformed",
        ),
        (StateConflict("user(s) [7] could not be erased"), "the stored state is unusable: user"),
    ],
)
def test_a_state_error_is_a_503_that_says_whether_redis_or_the_state_failed(
    error: StateError, expected: str
) -> None:
    async def failing(request: web.Request) -> web.Response:
        raise error

    async def run() -> tuple[int, dict[str, str]]:
        app = web.Application(middlewares=[_errors])
        app.router.add_get("/users/{user_id}", failing)
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/users/7")
            return response.status, await response.json()

    status, body = asyncio.run(run())
    assert status == 503
    assert body["error"].startswith(expected)
