"""The daemon's log lines: one logger for all its modules, and the job a line was logged for."""

from __future__ import annotations

import logging

from batch_scheduler.core.logs import JobContextFilter, current_job

__all__ = ["JobContextFilter", "current_job", "log"]  # the job's context is core's: a cluster node's too

log = logging.getLogger("batch_scheduler.daemon")

