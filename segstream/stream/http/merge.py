"""One ``/metrics`` for several worker processes: their expositions merged, each metric by its
meaning.

The supervisor of ``segstream worker --processes N`` scrapes every child's ``/metrics``
(Prometheus text format 0.0.4) and serves the merge, so Prometheus keeps one target per
host whatever N is. How each series is merged:

- **counters, histograms, summaries**: summed over the processes, sample by sample (same
  name and labels; the histograms share their buckets, :mod:`segstream.stream.http.metrics`).
  A process that was restarted starts its counters at 0 again: the last figures scraped from
  its previous incarnation are carried into the sum, so the merged counters never go down.
  What the dead process counted between its last scrape and its death is not in them: the
  records it had not committed are redelivered to, and counted by, the partitions' next
  owner, but those it processed and committed in that window are counted by no one, so after
  a SIGKILL the merged counters can fall short of the records processed by up to the dead
  process's work of one scrape interval (a process that stops cleanly is scraped to the end).
- ``*_created`` series (a counter's or histogram's creation time): the earliest.
- **group-wide gauges** (:data:`GROUP_WIDE_GAUGES`: lag, committed offsets, segment
  populations): every process reads the same figures from Kafka or Redis, so summing would
  multiply them; they are taken from the lowest-numbered process that has them.
- **every other gauge** (readiness checks, model info, a degraded Redis primary, drift): a
  fact about one process, so each sample gets the label ``process="<i>"`` (0-based, stable
  across restarts) and none is lost. A gauge unknown here is treated so too.

``tests/unit/stream/http/test_merge.py`` checks that every gauge the worker declares is
classified here on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

__all__ = [
    "GROUP_WIDE_GAUGES",
    "PER_PROCESS_GAUGES",
    "PROCESS_LABEL",
    "MetricsMerger",
    "parse_exposition",
]

PROCESS_LABEL = "process"
"""Label naming the worker process (0-based index) of a per-process gauge."""

SUMMED_TYPES = frozenset({"counter", "histogram", "summary"})
"""Metric types whose samples add up over processes."""

GROUP_WIDE_GAUGES = frozenset(
    {
        "segstream_consumer_lag_messages",
        "segstream_consumer_lag_seconds",
        "segstream_consumer_committed_offset",
        "segstream_segment_population",
    }
)
"""Gauges every process reads from Kafka or Redis for the whole group: taken once."""

PER_PROCESS_GAUGES = frozenset(
    {
        "segstream_ready",
        "segstream_model_info",
        "segstream_redis_degraded",
        "segstream_drift_distance",
        "segstream_drift_state_version",
        "segstream_drift_epoch",
    }
)
"""Gauges that describe the process they come from: labelled ``process="<i>"``."""

_LabelKey = tuple[tuple[str, str], ...]
_SampleKey = tuple[str, _LabelKey]


def _label_key(labels: Mapping[str, str]) -> _LabelKey:
    return tuple(sorted(labels.items()))


@dataclass
class _Family:
    """One metric family of one exposition: its type, help and samples by (name, labels)."""

    name: str
    type: str
    documentation: str
    samples: dict[_SampleKey, float] = field(default_factory=dict)


def parse_exposition(text: str) -> dict[str, _Family]:
    """The families of a Prometheus text exposition, by family name.

    Raises:
        ValueError: ``text`` is not in the text format.
    """
    families: dict[str, _Family] = {}
    for metric in text_string_to_metric_families(text):
        family = families.setdefault(
            metric.name, _Family(metric.name, metric.type, metric.documentation)
        )
        for sample in metric.samples:
            family.samples[(sample.name, _label_key(sample.labels))] = sample.value
    return families


def _is_created(family: _Family) -> bool:
    # Format 0.0.4 writes a counter's or histogram's creation time as a gauge of its own.
    return family.type == "gauge" and family.name.endswith("_created")


class MetricsMerger:
    """The latest exposition of each worker process, merged on demand (see the module doc)."""

    def __init__(self) -> None:
        self._latest: dict[int, tuple[int, dict[str, _Family]]] = {}
        """process index -> (pid of the scraped incarnation, its families)."""
        self._carried: dict[str, _Family] = {}
        """Summed families' totals of incarnations that ended (restarted processes)."""

    def update(self, process: int, pid: int, text: str) -> None:
        """Record ``text``, the exposition just scraped from process ``process`` (pid ``pid``).

        A new pid for the index means the previous incarnation ended: its last counters are
        carried into the merged sums.

        Raises:
            ValueError: ``text`` is not a Prometheus text exposition (nothing is recorded).
        """
        families = parse_exposition(text)
        previous = self._latest.get(process)
        if previous is not None and previous[0] != pid:
            self._carry(previous[1])
        self._latest[process] = (pid, families)

    def _carry(self, families: Mapping[str, _Family]) -> None:
        for family in families.values():
            if family.type not in SUMMED_TYPES:
                continue
            kept = self._carried.setdefault(
                family.name, _Family(family.name, family.type, family.documentation)
            )
            for key, value in family.samples.items():
                if not key[0].endswith("_created"):
                    kept.samples[key] = kept.samples.get(key, 0.0) + value

    def merged(self) -> list[Metric]:
        """Every family, merged over the processes' latest expositions."""
        out: dict[str, _Family] = {
            name: _Family(name, f.type, f.documentation, dict(f.samples))
            for name, f in self._carried.items()
        }
        for process in sorted(self._latest):
            _, families = self._latest[process]
            for family in families.values():
                target = out.setdefault(
                    family.name, _Family(family.name, family.type, family.documentation)
                )
                if family.type in SUMMED_TYPES:
                    for key, value in family.samples.items():
                        target.samples[key] = target.samples.get(key, 0.0) + value
                elif _is_created(family):
                    for key, value in family.samples.items():
                        target.samples[key] = min(target.samples.get(key, value), value)
                elif family.name in GROUP_WIDE_GAUGES:
                    if not target.samples:  # the lowest-numbered process that has them
                        target.samples.update(family.samples)
                else:
                    for (name, labels), value in family.samples.items():
                        tagged = _label_key({**dict(labels), PROCESS_LABEL: str(process)})
                        target.samples[(name, tagged)] = value
        metrics = []
        for family in out.values():
            metric = Metric(family.name, family.documentation, family.type)
            for (name, labels), value in family.samples.items():
                metric.add_sample(name, dict(labels), value)
            metrics.append(metric)
        return metrics

    def exposition(self, extra: Iterable[Metric] = ()) -> bytes:
        """The merge, and ``extra`` families (the supervisor's own), in text format 0.0.4."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed([*self.merged(), *extra]))
        return generate_latest(registry)


class _Fixed(Collector):
    """A collector returning the families it was given."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics
