"""The daemon's log lines: one logger for all its modules, and the job a line was logged for."""

from __future__ import annotations

import contextvars
import logging

log = logging.getLogger("batch_scheduler.daemon")

current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_job", default=None)


class JobContextFilter(logging.Filter):
    """Records logged inside a job's tasks (the engine's too) name the job: a `job` field, and a
    `[NAME]` prefix on lines from other modules than the daemon's."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = current_job.get()
        if name is not None and not hasattr(record, "job"):
            record.job = name
            if record.name != log.name and isinstance(record.msg, str):
                record.msg = f"[{name.replace('%', '%%')}] {record.msg}"
        return True
