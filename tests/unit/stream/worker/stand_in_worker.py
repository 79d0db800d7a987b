"""A stand-in child for the supervisor's tests: behaves as ``segstream worker`` does at the
edges the supervisor watches (its HTTP port, its exit code, SIGTERM, its error line).

``python stand_in_worker.py MODE [MARKER]``, the port from ``SEGSTREAM_HTTP_PORT``:

- ``serve``: listen, exit 0 on SIGTERM;
- ``fail``: print a worker's error line and exit 2 without listening (cannot start);
- ``crash``: listen, then exit 3 (dies after it was up);
- ``crash-once``: ``crash`` when MARKER does not exist yet (creating it), else ``serve``;
- ``long-line``: print one 300,000-character line, then ``serve``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path


def main() -> int:
    mode = sys.argv[1]
    if mode == "fail":
        print("segstream worker: no model at /nowhere/current (SEGSTREAM_MODEL_DIR)", flush=True)
        return 2
    if mode == "long-line":
        print("x" * 300_000, flush=True)
        mode = "serve"
    if mode == "crash-once":
        marker = Path(sys.argv[2])
        mode = "serve" if marker.exists() else "crash"
        marker.touch()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(os.environ["SEGSTREAM_HTTP_PORT"])))
    listener.listen()
    print(f"listening, pid {os.getpid()}", flush=True)
    if mode == "crash":
        time.sleep(1.0)  # long enough for the supervisor's probe to see it up
        return 3
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
