"""The Faust worker: app and agent wiring, batching, the batch processor, the model holder, run.

The worker knows nothing of HTTP or metrics libraries: it reports to a
:class:`~segstream.stream.domain.observer.WorkerObserver` and starts whatever
:data:`~segstream.stream.worker.app.Extension` s it is given
(:mod:`segstream.stream.service` attaches the HTTP side).
"""

from __future__ import annotations

from segstream.stream.worker.app import (
    AGENT_NAME,
    Extension,
    WorkerApp,
    WorkerParts,
    base_app,
    create_app,
    input_channel,
    quiet_framework_loggers,
    stream_buffer_size,
    trim_framework,
    tune_gc,
    worker_parts,
)
from segstream.stream.worker.assigner import Assigner
from segstream.stream.worker.batching import BatchPipeline
from segstream.stream.worker.consumer import LeanConsumer, LeanTransport, use_lean_consumer
from segstream.stream.worker.fetcher import LeanFetcher
from segstream.stream.worker.processor import BatchProcessor, Stats
from segstream.stream.worker.run import check_dependencies, run_worker, use_worker_event_loop
from segstream.stream.worker.watchdog import Deadlines, Progress, Watchdog

__all__ = [
    "AGENT_NAME",
    "Assigner",
    "BatchPipeline",
    "BatchProcessor",
    "Deadlines",
    "Extension",
    "LeanConsumer",
    "LeanFetcher",
    "LeanTransport",
    "Progress",
    "Stats",
    "Watchdog",
    "WorkerApp",
    "WorkerParts",
    "base_app",
    "check_dependencies",
    "create_app",
    "input_channel",
    "quiet_framework_loggers",
    "run_worker",
    "stream_buffer_size",
    "trim_framework",
    "tune_gc",
    "use_lean_consumer",
    "use_worker_event_loop",
    "worker_parts",
]
