"""What a run tells an observer as it goes: each HTTP call's latency, and each batch's timings once its
results are durable. The daemon's metrics (and `run --metrics-file`) turn them into histograms.

Observations happen once per HTTP call and once per batch, never per request line. The default
`Observer` ignores everything, so a run without metrics pays one no-op call per event.
"""

from __future__ import annotations


class Observer:
    def http_call(self, endpoint: str, status: str, seconds: float) -> None:
        """One HTTP call ended: its endpoint, its status (or error name) and how long it took."""

    def batch_collected(self, turnaround_s: float | None, durable_s: float | None) -> None:
        """One batch's results are durable: create -> ended at the provider, and ended -> fsync'd here."""


def batch_times(submitted_at: float | None, ended_at: float | None, durable_at: float) -> tuple[float | None, float | None]:
    """(turnaround, durable delay) in seconds from epoch times; None where a time is unknown. A provider's
    clock may run ahead of ours: a negative span is counted as 0."""
    if ended_at is None:
        return None, None
    turnaround = max(0.0, ended_at - submitted_at) if submitted_at is not None else None
    return turnaround, max(0.0, durable_at - ended_at)
