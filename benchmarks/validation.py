"""Micro-timing of the stream's input validation: µs per event, best of 7 runs of 20,000.

``python benchmarks/validation.py`` times the installed checkout; ``PYTHONPATH=OTHER_CHECKOUT
python benchmarks/validation.py`` (run from outside both checkouts) times another checkout's
``segstream/stream/domain/events.py`` on the same samples, before and after a change. Prints
one line per sample: the time per call and the verdict. On a shared machine, run both more
than once: the figures move with the load.
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable
from functools import partial

import segstream.stream.domain.events as events
from segstream.errors import EventError

USER = {
    "user_id": 42,
    "age": 31,
    "gender": "F",
    "country": "Brasil",
    "traffic_source": "Search",
    "created_at": "2023-04-05T06:07:08.123456+00:00",
}
ORDER = {
    "order_id": 7,
    "user_id": 42,
    "status": "Shipped",
    "created_at": "2023-04-06T00:00:00Z",
    "items": [
        {"product_id": 1, "brand": "Levi's", "category": "Jeans", "sale_price": 19.5},
        {"product_id": 2, "brand": "Nike", "category": "Active", "sale_price": 0},
    ],
}
SAMPLES: dict[str, tuple[Callable[..., object], dict[str, object]]] = {
    "valid user": (events.parse_user, USER),
    "valid order, 2 items": (events.parse_order, ORDER),
    "user, age 31.0": (events.parse_user, {**USER, "age": 31.0}),
    "user + unknown field email": (events.parse_user, {**USER, "email": "a@b.c"}),
    "user, age -5 (refused)": (events.parse_user, {**USER, "age": -5}),
}
RUNS = 20_000


def verdict(parse: Callable[..., object], raw: bytes) -> str:
    """``accepted``, or the refusal's reason and detail."""
    try:
        parse(raw, b"42")
    except EventError as exc:
        return str(exc)[:70]
    return "accepted"


def main() -> None:
    """Time each sample and print it."""
    print("code from", events.__file__)
    for name, (parse, document) in SAMPLES.items():
        raw = json.dumps(document).encode()
        call = partial(verdict, parse, raw)
        best = min(timeit.repeat(call, number=RUNS, repeat=7)) / RUNS * 1e6
        print(f"{name:28s} {best:6.2f} µs  {verdict(parse, raw)}")


if __name__ == "__main__":
    main()
