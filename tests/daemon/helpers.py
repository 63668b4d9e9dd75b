"""What the daemon tests share: a spool to drop jobs into, a daemon running in-process, and waiting
for an observable condition with a deadline (no test coordinates by sleeping)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from batch_scheduler.core.settings import load_environment
from batch_scheduler.daemon.server import Daemon, DaemonConfig

from ..helpers import ids_of, read_results, write_requests

KEY = "sk-daemon-key-one-0001"
NEW_KEY = "sk-daemon-key-two-0002"
TOKEN = "daemon-token-0123456789"
ROOT = Path(__file__).resolve().parents[2]


async def until(condition: Callable[[], bool], what: str = "condition", timeout_s: float = 15.0) -> None:
    """Wait for an observable condition, with a deadline (no test coordinates by sleeping)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        await asyncio.sleep(0.01)


def wait_until(condition: Callable[[], bool], what: str = "condition", timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.02)


def drop(spool: Path, name: str, n: int, *, options: dict | None = None,
         model: str | None = "claude-sonnet-4-5") -> list[str]:
    """Put a job into the inbox the way a producer should: write aside, rename in (options first)."""
    inbox = spool / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    if options is not None:
        (inbox / f".{name}.options.tmp").write_text(json.dumps(options))
        os.rename(inbox / f".{name}.options.tmp", inbox / f"{name}.options.json")
    ids = write_requests(str(inbox / f".{name}.tmp"), n, prefix=name, model=model)
    os.rename(inbox / f".{name}.tmp", inbox / f"{name}.jsonl")
    return ids


def summary(spool: Path, name: str) -> dict:
    try:
        return json.loads((spool / "jobs" / name / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def state(spool: Path, name: str) -> str | None:
    return summary(spool, name).get("state")


def assert_exactly_once(spool: Path, name: str, ids: list[str]) -> None:
    got = ids_of(read_results(str(spool / "jobs" / name)))
    twice = [cid for cid, n in Counter(got).items() if n > 1]
    assert not twice, f"{name}: {len(twice)} custom_id(s) written more than once, e.g. {twice[:3]}"
    assert sorted(got) == sorted(ids), f"{name}: {len(got)} results for {len(ids)} requests"


def job_flags(url: str, **changes) -> dict:
    return {"base_url": url, "batch_size": 20, "concurrency": 2, "poll_min": 0.02, "poll_max": 0.05,
            "shards": 4, **changes}


class Running:
    def __init__(self, daemon: Daemon, task: asyncio.Task):
        self.daemon = daemon
        self.task = task
        self.exit_code: int | None = None

    async def stop(self) -> int:
        """The SIGTERM path, in-process: the handler the signal would call."""
        self.daemon.handle_signal(signal.SIGTERM)
        self.exit_code = await self.task
        return self.exit_code


@asynccontextmanager
async def running_daemon(spool: Path, env_dir: Path, flags: dict, **config) -> AsyncIterator[Running]:
    daemon = Daemon(DaemonConfig(spool=str(spool), listen=("127.0.0.1", 0), flags=flags,
                                 **{"inbox_poll_s": 0.02, **config}),
                    load_env=lambda: load_environment(env_dir))
    run = Running(daemon, asyncio.create_task(daemon.serve()))
    await until(lambda: daemon.started.is_set() or run.task.done(), "daemon started")
    assert not run.task.done(), f"the daemon did not start (exit {run.task.result()})"
    try:
        yield run
    finally:
        if not run.task.done():
            await run.stop()
