"""`GET /metrics`: the Prometheus text exposition format (version 0.0.4), written by hand.

    # HELP batch_scheduler_jobs Jobs in the spool by state.
    # TYPE batch_scheduler_jobs gauge
    batch_scheduler_jobs{state="running"} 2

`render` turns families into text; `daemon_families` builds the daemon's families from a plain
`MetricsView` (the daemon fills it from its jobs, engines and slot pool). Counters count since the
daemon started (`_total`); gauges describe the spool as it is (totals over its jobs).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "batch_scheduler_"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass
class Family:
    name: str
    kind: str  # "counter" (name ends in _total) or "gauge"
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"bad metric name {self.name!r}")
        if self.kind not in ("counter", "gauge"):
            raise ValueError(f"unsupported metric type {self.kind!r}")
        if self.kind == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name!r} must end in _total")

    def add(self, value: float, **labels: object) -> Family:
        for name in labels:
            if not _LABEL.match(name) or name.startswith("__"):
                raise ValueError(f"bad label name {name!r}")
        self.samples.append(({k: str(v) for k, v in labels.items()}, value))
        return self


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for f in families:
        lines.append(f"# HELP {f.name} {escape_help(f.help)}")
        lines.append(f"# TYPE {f.name} {f.kind}")
        for labels, value in f.samples:
            text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            lines.append(f"{f.name}{{{text}}} {format_value(value)}" if text else f"{f.name} {format_value(value)}")
    return "\n".join(lines) + "\n"


@dataclass
class MetricsView:
    """What the daemon knows at one instant, as plain numbers."""

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


def daemon_families(v: MetricsView) -> list[Family]:
    p = PREFIX
    fams = [
        Family(p + "up", "gauge", "1 while the daemon runs.").add(1),
        Family(p + "start_time_seconds", "gauge", "When the daemon started (epoch seconds).").add(v.start_time_s),
    ]
    jobs = Family(p + "jobs", "gauge", "Jobs in the spool by state.")
    for state, n in sorted(v.jobs_by_state.items()):
        jobs.add(n, state=state)
    reqs = Family(p + "requests", "gauge", "Requests of the spool's jobs by state (totals over jobs).")
    for state, n in sorted(v.requests_by_state.items()):
        reqs.add(n, state=state)
    fams += [jobs, reqs]
    fams.append(Family(p + "batches_in_flight", "gauge", "Batches at the provider that jobs wait for.")
                .add(v.batches_in_flight))
    slots = Family(p + "slots", "gauge", "The daemon-wide budget of batches in flight (--concurrency).")
    slots.add(v.slots_capacity, kind="capacity").add(v.slots_in_use, kind="in_use").add(v.slots_waiting,
                                                                                         kind="waiting")
    fams.append(slots)
    calls = Family(p + "http_calls_total", "counter", "Provider HTTP calls by endpoint and status (or error).")
    for (endpoint, status), n in sorted(v.http_calls.items()):
        calls.add(n, endpoint=endpoint, status=status)
    retries = Family(p + "http_retries_total", "counter", "Provider HTTP calls retried, by endpoint.")
    for endpoint, n in sorted(v.http_retries.items()):
        retries.add(n, endpoint=endpoint)
    fams += [calls, retries]
    fams.append(Family(p + "http_download_bytes_total", "counter", "Bytes of results downloaded.")
                .add(v.http_download_bytes))
    polls = Family(p + "poll_calls_total", "counter", "Poll calls: one batch retrieved, or a page of batches listed.")
    for kind in ("retrieve", "list"):
        polls.add(v.poll_calls.get(kind, 0), kind=kind)
    fams.append(polls)
    fams.append(Family(p + "result_bytes", "gauge", "Bytes in the result shards of the spool's jobs.")
                .add(v.result_bytes))
    tokens = Family(p + "tokens", "gauge", "Tokens billed to the spool's jobs, by kind.")
    for kind in ("input", "output", "cache_write", "cache_read"):
        tokens.add(v.tokens.get(kind, 0), kind=kind)
    fams.append(tokens)
    fams.append(Family(p + "spend_usd", "gauge", "Spend of the spool's jobs in US dollars (batch prices).")
                .add(v.spend_usd))
    checks = Family(p + "key_checks_total", "counter", "Checks of a refused key by paused jobs, by outcome.")
    for outcome in ("accepted", "refused", "unknown"):
        checks.add(v.key_checks.get(outcome, 0), outcome=outcome)
    fams.append(checks)
    return fams
