"""The lean consumer's fast-path test and its guard against Faust changing what it overrides."""

from __future__ import annotations

import asyncio
import inspect

from faust.transport.consumer import Consumer as FaustConsumer

from segstream.stream.worker.consumer import LeanConsumer, any_full


def test_any_full_is_true_only_when_a_put_would_wait() -> None:
    roomy: asyncio.Queue[int] = asyncio.Queue(maxsize=2)
    full: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    full.put_nowait(1)
    roomy.put_nowait(1)
    assert not any_full([roomy])
    assert any_full([roomy, full])
    assert not any_full([])


def test_the_overridden_faust_methods_keep_their_signatures() -> None:
    # LeanConsumer re-implements Faust's fetch loop and wraps its commit: if Faust renames or
    # re-signs them, the override would silently stop being called.
    assert list(inspect.signature(FaustConsumer._drain_messages).parameters) == [
        "self",
        "fetcher",
    ]
    assert list(inspect.signature(FaustConsumer.commit).parameters) == [
        "self",
        "topics",
        "start_new_transaction",
    ]
    assert LeanConsumer._drain_messages is not FaustConsumer._drain_messages
