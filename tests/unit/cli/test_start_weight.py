"""Parsing a command line imports no client library, no numerics and no framework: each
command imports what it runs inside its handler. Every ``segstream`` process (each CLI call,
each worker) paid about a second of CPU for pandas, NumPy, redis-py, aiokafka and Faust while
the parser pulled them in, `segstream --help` included (docs/testing.md)."""

from __future__ import annotations

import json
import subprocess
import sys

RUNTIME_ONLY = (
    "aiohttp",
    "aiokafka",
    "cryptography",
    "duckdb",
    "faust",
    "numpy",
    "pandas",
    "prometheus_client",
    "pyarrow",
    "redis",
    "river",
    "sklearn",
)
"""Libraries some command needs while it runs, and none needs to parse its arguments."""

_PROBE = f"""
import json, sys
from segstream.cli.main import build_parser
build_parser()
print(json.dumps(sorted(m for m in {RUNTIME_ONLY!r} if m in sys.modules)))
"""


def test_building_the_parser_imports_no_runtime_library() -> None:
    # A fresh interpreter: this test process has long imported all of them.
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(done.stdout) == []
