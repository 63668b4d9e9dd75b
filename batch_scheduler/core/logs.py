"""Log lines for machines (`--log-json`), and a filter that keeps secrets out of every log line.

    {"ts": "2025-01-31T12:00:00.123Z", "level": "info", "logger": "batch_scheduler.daemon",
     "msg": "job big: done", "job": "big", "state": "done"}

`ts` is UTC with milliseconds; `msg` is the formatted message; anything passed as `extra=` becomes a
field of its own; an exception adds `exc`. Secrets registered with `add_secret` (API keys, the daemon's
token) are replaced by `[redacted]` wherever they appear, and extras whose names say key, token,
secret, password or authorization are never written out. In plain lines (`RedactFilter`) a message's
control characters are escaped, so a job name with a newline cannot forge a line.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from typing import Any

import orjson

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 8  # shorter strings would blank out ordinary words; real keys are far longer

# LogRecord attributes that are not extras (LogRecord's own, plus what Formatter.format adds)
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
SECRET_NAME = re.compile(r"key|token|secret|passw|authori", re.IGNORECASE)  # names whose values are secrets

_secrets: set[str] = set()


def add_secret(value: str | None) -> None:
    """Never write `value` in a log line from now on."""
    if value and len(value) >= MIN_SECRET_CHARS:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name in _STANDARD or name.startswith("_") or name in doc:
                continue
            doc[name] = REDACTED if SECRET_NAME.search(name) else _plain(value)
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            doc["exc"] = redact(record.exc_text)
        return orjson.dumps(doc).decode()


CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # every C0 control but tab, and DEL


def one_line(text: str) -> str:
    """`text` with its control characters escaped (`\\n`, `\\r`, `\\x1b`): a job name or anything else from
    outside cannot start a log line of its own, nor move the terminal's cursor."""
    if not CONTROL.search(text):
        return text
    return CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class RedactFilter(logging.Filter):
    """Put on a handler: the message of every record it writes has the registered secrets blanked and its
    control characters escaped (one record, one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = one_line(redact(message) if _secrets else message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


# -- the job a line was logged for (the spool daemon's and a cluster node's) -----------------------------

current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_job", default=None)
_MODE_LOGGERS = frozenset({"batch_scheduler.daemon", "batch_scheduler.cluster"})  # they name the job themselves


class JobContextFilter(logging.Filter):
    """Records logged inside a job's tasks (the engine's too) name the job: a `job` field, and a
    `[NAME]` prefix on lines from other modules than the daemon's."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = current_job.get()
        if name is not None and not hasattr(record, "job"):
            record.job = name
            if record.name not in _MODE_LOGGERS and isinstance(record.msg, str):
                record.msg = f"[{name.replace('%', '%%')}] {record.msg}"
        return True
