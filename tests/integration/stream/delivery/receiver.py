"""A real HTTP server, in-process on its own thread, that receives webhooks and misbehaves on
purpose, per path (one path per destination):

- ``fast``: 200 at once;
- ``flaky``: a fixed cycle of 8 over the requests it gets: the 1st a 500, the 3rd a 429 with
  ``Retry-After: 1``, the 5th answered later than the client's timeout (its events recorded
  all the same, as a receiver that processed them but whose answer was lost), the rest 200;
- ``down``: 503 until :meth:`Receiver.bring_up`, then 200;
- ``slow``: 200 after ``slow_s`` seconds;
- ``reject``: 400 until :meth:`Receiver.bring_up`, then 200.

Every acknowledged request's events are recorded in order; a request whose signature does
not verify is answered 401 and counted in :attr:`Receiver.bad_signatures`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from typing import Any

from aiohttp import web

from segstream.stream.delivery.signing import SIGNATURE_HEADER, verify
from tests.ports import free_port

SECRET = "test-secret-0123456789abcdef"


class Receiver:
    """See the module docstring. ``timeout_s`` is the client timeout the ``flaky`` path
    answers past."""

    def __init__(self, behaviour: dict[str, str], timeout_s: float = 1.0, slow_s: float = 0.2):
        self.behaviour = behaviour
        self.timeout_s = timeout_s
        self.slow_s = slow_s
        self.port = free_port()
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.requests: dict[str, int] = defaultdict(int)
        self.statuses: dict[str, list[int]] = defaultdict(list)
        self.bad_signatures = 0
        self._up: set[str] = set()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def bring_up(self, path: str) -> None:
        with self._lock:
            self._up.add(path)

    def events(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received[path])

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        if not verify(
            SECRET.encode(), request.headers.get(SIGNATURE_HEADER, ""), body, int(time.time())
        ):
            with self._lock:
                self.bad_signatures += 1
            return web.Response(status=401)
        with self._lock:
            self.requests[path] += 1
            n = self.requests[path]
            up = path in self._up
        mode = self.behaviour[path]
        status, headers = 200, {}
        if mode == "flaky":
            step = n % 8
            if step == 1:
                status = 500
            elif step == 3:
                status, headers = 429, {"Retry-After": "1"}
            elif step == 5:
                await asyncio.sleep(self.timeout_s * 3)  # the client has given up by then
        elif mode == "down" and not up:
            status = 503
        elif mode == "reject" and not up:
            status = 400
        elif mode == "slow":
            await asyncio.sleep(self.slow_s)
        with self._lock:
            self.statuses[path].append(status)
            if status == 200:
                document = await request.json()
                self.received[path].extend(document["events"])
        return web.Response(status=status, headers=headers)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{path}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> Receiver:
        self._thread.start()
        assert self._ready.wait(10), "the receiver did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
