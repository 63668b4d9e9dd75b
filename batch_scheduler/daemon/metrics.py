"""`GET /metrics` and `run --metrics-file PATH`: Prometheus metrics through `prometheus_client`.

Three kinds, in one registry per daemon (or run):
- gauges and counters of the spool at the instant of a scrape, from a custom collector over a plain
  `MetricsView` that the daemon fills from its jobs, engines and slot pool: nothing on the hot path;
- histograms observed as things happen (`Metrics` is the engines' `job.observe.Observer`): batch
  turnaround (create -> ended at the provider), results-durable delay (ended -> fsync'd in the shards),
  and the latency of each provider HTTP call by endpoint and status: one observation per call or batch,
  never per request line;
- the client's own process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
  `process_open_fds`, ...), `python_info` and the garbage collector's.

Counters count since the daemon started (`_total`); gauges describe the spool as it is (totals over
its jobs). `Metrics.write_textfile` writes the same text for node_exporter's textfile collector.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    write_to_textfile,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from batch_scheduler.job.observe import Observer

if TYPE_CHECKING:
    from batch_scheduler.job.engine import Engine, JobResult

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
PREFIX = "batch_scheduler_"

TURNAROUND_BUCKETS_S = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400, float("inf"))
DURABLE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, float("inf"))
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, float("inf"))


@dataclass
class MetricsView:
    """What the daemon (or a run) knows at one instant, as plain numbers."""

    start_time_s: float = 0.0  # epoch
    jobs_by_state: Mapping[str, int] = field(default_factory=dict)
    requests_by_state: Mapping[str, int] = field(default_factory=dict)  # totals over the spool's jobs
    batches_in_flight: int = 0
    slots_capacity: int = 0
    slots_in_use: int = 0
    slots_waiting: int = 0
    http_calls: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, status) -> n
    http_retries: Mapping[str, int] = field(default_factory=dict)  # endpoint -> n
    http_download_bytes: int = 0
    poll_calls: Mapping[str, int] = field(default_factory=dict)  # "retrieve" / "list" -> n
    result_bytes: int = 0
    tokens: Mapping[str, int] = field(default_factory=dict)  # input, output, cache_write, cache_read
    spend_usd: float = 0.0
    key_checks: Mapping[str, int] = field(default_factory=dict)  # "accepted" / "refused" / "unknown" -> n
    notifications: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (kind, outcome) -> n
    daemon: bool = True  # False: one `run` (no slots, no key checks; its exit code and end time instead)
    run_exit_code: int | None = None
    end_time_s: float | None = None


_Family = TypeVar("_Family", GaugeMetricFamily, CounterMetricFamily)


def _labelled(metric: _Family, items: Mapping[Any, float]) -> _Family:
    for labels, value in sorted(items.items()):
        metric.add_metric([str(x) for x in (labels if isinstance(labels, tuple) else (labels,))], value)
    return metric


def view_families(v: MetricsView) -> Iterator[Metric]:
    """The gauges and counters of one view."""
    p = PREFIX
    g, c = GaugeMetricFamily, CounterMetricFamily
    if v.daemon:
        yield g(p + "up", "1 while the daemon runs.", value=1)
    yield g(p + "start_time_seconds", "When the daemon (or the run) started, epoch seconds.", value=v.start_time_s)
    if v.run_exit_code is not None:
        yield g(p + "run_exit_code", "The run's exit status (0: every accepted request finished).",
                value=v.run_exit_code)
    if v.end_time_s is not None:
        yield g(p + "run_end_time_seconds", "When the run ended, epoch seconds.", value=v.end_time_s)
    yield _labelled(g(p + "jobs", "Jobs in the spool by state.", labels=["state"]), v.jobs_by_state)
    yield _labelled(g(p + "requests", "Requests of the spool's jobs by state (totals over jobs).",
                      labels=["state"]), v.requests_by_state)
    yield g(p + "batches_in_flight", "Batches at the provider that jobs wait for.", value=v.batches_in_flight)
    if v.daemon:
        yield _labelled(g(p + "slots", "The daemon-wide budget of batches in flight (--concurrency).",
                          labels=["kind"]),
                        {"capacity": v.slots_capacity, "in_use": v.slots_in_use, "waiting": v.slots_waiting})
    yield _labelled(c(p + "http_calls", "Provider HTTP calls by endpoint and status (or error).",
                      labels=["endpoint", "status"]), v.http_calls)
    yield _labelled(c(p + "http_retries", "Provider HTTP calls retried, by endpoint.", labels=["endpoint"]),
                    v.http_retries)
    yield c(p + "http_download_bytes", "Bytes of results downloaded.", value=v.http_download_bytes)
    yield _labelled(c(p + "poll_calls", "Poll calls: one batch retrieved, or a page of batches listed.",
                      labels=["kind"]), {k: v.poll_calls.get(k, 0) for k in ("retrieve", "list")})
    yield g(p + "result_bytes", "Bytes in the result shards of the spool's jobs.", value=v.result_bytes)
    yield _labelled(g(p + "tokens", "Tokens billed to the spool's jobs, by kind.", labels=["kind"]),
                    {k: v.tokens.get(k, 0) for k in ("input", "output", "cache_write", "cache_read")})
    yield g(p + "spend_usd", "Spend of the spool's jobs in US dollars (batch prices).", value=v.spend_usd)
    if v.daemon:
        yield _labelled(c(p + "key_checks", "Checks of a refused key by paused jobs, by outcome.",
                          labels=["outcome"]),
                        {k: v.key_checks.get(k, 0) for k in ("accepted", "refused", "unknown")})
        yield _labelled(c(p + "notifications", "--on-done commands and --webhook deliveries, by outcome.",
                          labels=["kind", "outcome"]), v.notifications)


class _ViewCollector:
    """A custom collector: the families of the view set just before the registry is read."""

    def __init__(self) -> None:
        self.view = MetricsView()

    def collect(self) -> Iterator[Metric]:
        yield from view_families(self.view)


class Metrics(Observer):
    """One registry: the view's families, the histograms, and the process metrics."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        p = PREFIX
        self.turnaround = Histogram(p + "batch_turnaround_seconds", "Batch create -> ended at the provider.",
                                    buckets=TURNAROUND_BUCKETS_S, registry=r)
        self.durable = Histogram(p + "results_durable_delay_seconds",
                                 "Batch ended at the provider -> its results fsync'd in the shards.",
                                 buckets=DURABLE_BUCKETS_S, registry=r)
        self.http_latency = Histogram(p + "http_call_duration_seconds",
                                      "Provider HTTP call latency (a download: to its head), by endpoint and status.",
                                      ["endpoint", "status"], buckets=HTTP_BUCKETS_S, registry=r)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._view = _ViewCollector()
        r.register(self._view)

    # -- job.observe.Observer -------------------------------------------------------------------

    def http_call(self, endpoint: str, status: str, seconds: float) -> None:
        self.http_latency.labels(endpoint, status).observe(seconds)

    def batch_collected(self, turnaround_s: float | None, durable_s: float | None) -> None:
        if turnaround_s is not None:
            self.turnaround.observe(turnaround_s)
        if durable_s is not None:
            self.durable.observe(durable_s)

    # -- exposition -----------------------------------------------------------------------------

    def render(self, view: MetricsView) -> bytes:
        self._view.view = view  # read at once, on the loop: no scrape sees another's view
        return generate_latest(self.registry)

    def write_textfile(self, path: str, view: MetricsView) -> None:
        """The text format to PATH, written aside and renamed in (node_exporter never reads half a file)."""
        self._view.view = view
        write_to_textfile(path, self.registry)


def run_view(engine: Engine, result: JobResult, started_at: float) -> MetricsView:
    """One finished run as a view (`run --metrics-file`): the job's totals from its summary, the run's calls."""
    s = result.summary
    requests: dict[str, int] = {k: int(v or 0) for k, v in s.get("requests", {}).items()}
    requests.update({k: int(v or 0) for k, v in s.get("results", {}).items()})
    http, poller = engine.http, engine.poller
    return MetricsView(
        start_time_s=started_at, jobs_by_state={s.get("state", "incomplete"): 1}, requests_by_state=requests,
        http_calls={(e, str(st)): n for (e, st), n in http.stats.calls.items()} if http else {},
        http_retries=dict(http.stats.retries) if http else {}, http_download_bytes=http.stats.bytes_down if http else 0,
        poll_calls={"retrieve": poller.stats.retrieves, "list": poller.stats.lists} if poller else {},
        tokens=s.get("tokens", {}), spend_usd=s.get("cost_usd", 0.0), daemon=False,
        run_exit_code=int(result.exit_code), end_time_s=time.time())
