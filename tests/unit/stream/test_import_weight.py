"""A worker imports what running needs, not what fitting needs: scikit-learn, SciPy, DuckDB
and matplotlib cost each worker process about 2 s of CPU at every start while they came with
it (through the HTTP side's prediction; docs/testing.md)."""

from __future__ import annotations

import json
import subprocess
import sys

FITTING_ONLY = ("sklearn", "scipy.stats", "duckdb", "matplotlib")
"""SciPy itself comes with river (drift), in 10 ms; its statistics took 0.9 s."""

_PROBE = f"""
import json, sys
from segstream.cli.main import build_parser
build_parser()  # every command's module, as `segstream worker` loads them
import segstream.stream.worker.run, segstream.stream.worker.app, segstream.stream.http.live
print(json.dumps(sorted(m for m in {FITTING_ONLY!r} if m in sys.modules)))
"""


def test_the_worker_and_its_http_side_import_no_fitting_library() -> None:
    # A fresh interpreter: this test process has long imported all of them.
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(done.stdout) == []
