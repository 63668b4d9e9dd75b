"""The daemon's log lines: JSON lines that never carry the key, and lines logged inside a job name it."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from batch_scheduler.core.logs import JsonFormatter, add_secret
from batch_scheduler.daemon.logs import JobContextFilter, current_job

pytestmark = pytest.mark.timeout(20)


def test_json_log_lines_carry_fields_and_extras_and_never_the_key():
    secret = "sk-json-log-secret-0042"
    add_secret(secret)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("scheduler.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("job %s: key %s refused", "big", secret, extra={"job": "big", "api_key": secret, "n": 3})
        try:
            raise ValueError(f"boom {secret}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"ts", "level", "logger", "msg", "job", "api_key", "n"}
    assert first["level"] == "warning" and first["logger"] == "scheduler.test-json"
    assert first["msg"] == "job big: key [redacted] refused"
    assert first["job"] == "big" and first["n"] == 3 and first["api_key"] == "[redacted]"
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2025-01-31T12:00:00.123Z")
    assert "ValueError: boom [redacted]" in second["exc"]
    assert secret not in stream.getvalue()


async def test_lines_logged_inside_a_job_name_the_job():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(JobContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("scheduler.test-engine")
    logger.addHandler(handler)
    logger.propagate = False

    async def engine_task() -> None:
        logger.warning("batch %s failed at the provider", "msgbatch_1")

    async def a_job() -> None:
        current_job.set("big")
        await asyncio.create_task(engine_task())  # a task the job started inherits its context

    try:
        await asyncio.create_task(a_job())
        logger.warning("outside any job")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["job"] == "big" and inside["msg"] == "[big] batch msgbatch_1 failed at the provider"
    assert "job" not in outside and outside["msg"] == "outside any job"
