"""Being told when a job ends: `--on-done CMD` and `--webhook URL`.

    --on-done CMD   run through /bin/sh when a job is done, failed or cancelled, with in its environment
                    BATCH_JOB_NAME, BATCH_JOB_STATE, BATCH_JOB_REASON, BATCH_JOB_DIR, BATCH_JOB_SUMMARY
                    (the path of its summary.json), and PATH, HOME, LANG, TZ, USER; nothing else of the
                    daemon's environment, so no key reaches it
    --webhook URL   POST of one JSON event when a job is done, failed, cancelled or paused:
                    {"event": "job.done", "job": ..., "state": ..., "reason": ..., "summary_path": ...,
                     "requests": {...}, "results": {...}, "cost_usd": ..., "at": epoch, "delivery": id}
                    signed per Standard Webhooks (standardwebhooks.com): `webhook-id` (the delivery id),
                    `webhook-timestamp` (epoch seconds) and `webhook-signature: v1,BASE64`, the
                    HMAC-SHA256 of "{id}.{timestamp}.{body}" under BATCH_WEBHOOK_SECRET=whsec_BASE64;
                    also, until the next release, the old `X-Batch-Scheduler-Signature-256: sha256=HEX`
                    (the HMAC of the body alone, under the secret's text). Retried with backoff (5xx,
                    429, network) with the same headers, so a receiver can drop a repeat by its id;
                    never sent on to where a redirect points

Neither ever blocks or fails a job: an event goes into a bounded queue (dropped, with an error line,
when it is full) and workers of their own deliver it. At shutdown what is being delivered gets a
short deadline. The secret is registered with the log filter and never written anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.logs import add_secret, redact
from batch_scheduler.core.settings import RetryPolicy
from batch_scheduler.daemon.arguments import SECRET_ENV
from batch_scheduler.daemon.logs import log
from batch_scheduler.daemon.spool import SUMMARY_FILE, Job, JobState, read_json

SIGNATURE_HEADER = "X-Batch-Scheduler-Signature-256"  # the old signature: goes away in the next release
SECRET_PREFIX = "whsec_"  # Standard Webhooks' form of a secret: whsec_ then the key in base64
ON_DONE_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})
WEBHOOK_STATES = ON_DONE_STATES | {JobState.PAUSED}
WEBHOOK_RETRY = RetryPolicy(attempts=6, deadline_s=120.0, initial_wait_s=1.0, max_wait_s=30.0)
COMMAND_TIMEOUT_S = 300.0
QUEUE_MAX = 1000  # events waiting for a worker; past that they are dropped (and logged)
WORKERS = 4  # per kind: a slow receiver delays the next events, never a job
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER")
OUTPUT_TAIL_CHARS = 500  # what of a failed command's output the log line shows


@dataclass(frozen=True)
class HookConfig:
    on_done: str | None = None
    webhook: str | None = None
    secret: str | None = None
    env: Mapping[str, str] | None = None  # what PASSED_ENV is taken from
    retry: RetryPolicy = WEBHOOK_RETRY
    command_timeout_s: float = COMMAND_TIMEOUT_S
    clock: Callable[[], float] = time.time  # what `webhook-timestamp` says


def sign(secret: str, body: bytes) -> str:
    """The old signature header's value (until the next release): the HMAC of the body alone."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signing_key(secret: str) -> bytes:
    """The Standard Webhooks key of BATCH_WEBHOOK_SECRET: the bytes whsec_ is followed by, in base64. A
    secret of the old form (any text without the prefix) is, until the next release, its own UTF-8 bytes
    (a receiver verifies it as whsec_ + the base64 of that text)."""
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode()
    text = secret[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise errors.UsageError(f"{SECRET_ENV}: expected whsec_ followed by the key in base64 "
                                f"(`openssl rand -base64 32` makes one)")
    return key


def standard_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """webhook-id, webhook-timestamp and webhook-signature, as the Standard Webhooks specification has them."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{digest}"}


def shown_url(url: str) -> str:
    """The URL as log lines show it: no user, password or query (they may carry a credential)."""
    u = urllib.parse.urlsplit(url)
    return f"{u.scheme}://{u.hostname or ''}{':' + str(u.port) if u.port else ''}{u.path}"


def check_webhook(url: str | None, secret: str | None) -> None:
    """UsageError for a webhook the daemon cannot sign or send to."""
    if url is None:
        return
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise errors.UsageError(f"--webhook {shown_url(url)}: expected an http:// or https:// URL")
    if not secret:
        raise errors.UsageError(f"--webhook needs a signing secret: set {SECRET_ENV} in the environment or .env")
    signing_key(secret)


class Hooks:
    """`job_changed` is called by the JobRunner on every state change; it only queues."""

    def __init__(self, config: HookConfig):
        self.config = config
        add_secret(config.secret)
        self.counts: Counter = Counter()  # (kind, outcome) -> n, for /metrics
        self._queues: dict[str, asyncio.Queue] = {}
        self._workers: list[asyncio.Task] = []
        self._http: HttpClient | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.config.on_done or self.config.webhook)

    async def start(self) -> None:
        if self.config.webhook:
            if self.config.secret and not self.config.secret.startswith(SECRET_PREFIX):
                log.warning("%s is not of the form whsec_BASE64: events are signed under its text as it is; "
                            "the old form is accepted until the next release", SECRET_ENV)
            self._http = await HttpClient({"Content-Type": "application/json"}, self.config.retry,
                                          timeout_s=30.0, connections=WORKERS).__aenter__()
        for kind, on in (("on_done", self.config.on_done), ("webhook", self.config.webhook)):
            if on:
                self._queues[kind] = asyncio.Queue(QUEUE_MAX)
                self._workers += [asyncio.create_task(self._work(kind), name=f"{kind} {i}") for i in range(WORKERS)]

    async def stop(self, deadline_s: float) -> None:
        """Let what is queued or being delivered finish for up to `deadline_s`, then cancel it."""
        waiting = [asyncio.create_task(q.join()) for q in self._queues.values()]
        if waiting:
            _, pending = await asyncio.wait(waiting, timeout=deadline_s)
            for t in pending:
                t.cancel()
            left = sum(q.qsize() for q in self._queues.values())
            if pending:
                log.warning("stopping: %d notification(s) not delivered within %.1f s", left, deadline_s)
        for t in self._workers:
            t.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._http is not None:
            await self._http.__aexit__(None, None, None)
            self._http = None

    def job_changed(self, job: Job, before: JobState) -> None:
        if job.state is before:
            return
        event = self.event(job)
        for kind, states in (("on_done", ON_DONE_STATES), ("webhook", WEBHOOK_STATES)):
            queue = self._queues.get(kind)
            if queue is None or job.state not in states:
                continue
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self.counts[(kind, "dropped")] += 1
                log.error("job %s: %s not sent: %d notifications already wait", job.name, kind, QUEUE_MAX,
                          extra={"job": job.name})

    @staticmethod
    def event(job: Job) -> dict[str, Any]:
        summary_path = f"{job.dir}/{SUMMARY_FILE}"
        s = read_json(summary_path)
        return {"event": f"job.{job.state.value}", "job": job.name, "state": job.state.value,
                "reason": job.reason, "dir": job.dir, "summary_path": summary_path,
                "requests": s.get("requests", {}), "results": s.get("results", {}), "cost_usd": s.get("cost_usd"),
                "at": round(time.time(), 3), "delivery": uuid.uuid4().hex}

    async def _work(self, kind: str) -> None:
        queue = self._queues[kind]
        while True:
            event = await queue.get()
            try:
                ok = await (self.run_command(event) if kind == "on_done" else self.post(event))
                self.counts[(kind, "delivered" if ok else "failed")] += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the next deliveries, nor the daemon
                self.counts[(kind, "failed")] += 1
                log.exception("job %s: %s failed", event["job"], kind, extra={"job": event["job"]})
            finally:
                queue.task_done()

    # -- the two kinds --------------------------------------------------------------------------

    def command_env(self, event: Mapping[str, Any]) -> dict[str, str]:
        base = self.config.env or {}
        env = {k: base[k] for k in PASSED_ENV if k in base}
        env.update({"BATCH_JOB_NAME": event["job"], "BATCH_JOB_STATE": event["state"],
                    "BATCH_JOB_REASON": event["reason"] or "", "BATCH_JOB_DIR": event["dir"],
                    "BATCH_JOB_SUMMARY": event["summary_path"]})
        return env

    async def run_command(self, event: Mapping[str, Any]) -> bool:
        name, extra = event["job"], {"job": event["job"]}
        cmd = self.config.on_done or ""
        proc = await asyncio.create_subprocess_shell(cmd, env=self.command_env(event), stdin=asyncio.subprocess.DEVNULL,
                                                     stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        tail = ""
        try:
            async with asyncio.timeout(self.config.command_timeout_s):
                assert proc.stdout is not None
                while block := await proc.stdout.read(1 << 16):  # bounded: only the end is kept
                    tail = (tail + block.decode(errors="replace"))[-OUTPUT_TAIL_CHARS:]
                code = await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.warning("job %s: --on-done did not end within %g s and was killed", name,
                        self.config.command_timeout_s, extra=extra)
            return False
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            raise
        if code != 0:
            log.warning("job %s: --on-done exited %s: %s", name, code, redact(tail.strip()) or "(no output)",
                        extra=extra)
            return False
        log.info("job %s: --on-done ran (%s)", name, event["state"], extra=extra)
        return True

    async def post(self, event: Mapping[str, Any]) -> bool:
        assert self._http is not None and self.config.webhook and self.config.secret
        body = orjson.dumps(event)
        key, at = signing_key(self.config.secret), int(self.config.clock())
        headers = {**standard_headers(key, event["delivery"], at, body),
                   SIGNATURE_HEADER: sign(self.config.secret, body), "X-Batch-Scheduler-Event": event["event"],
                   "X-Batch-Scheduler-Delivery": event["delivery"]}
        name, url = event["job"], self.config.webhook
        try:
            await self._http.call("POST", url, "webhook", body=body, headers=headers)
        except errors.SchedulerError as err:
            log.warning("job %s: webhook %s not delivered: %s", name, shown_url(url), redact(str(err)),
                        extra={"job": name})
            return False
        log.info("job %s: webhook %s delivered (%s)", name, shown_url(url), event["event"], extra={"job": name})
        return True
