"""--on-done and --webhook: told when a job ends, by a command and by a signed POST to a loopback
receiver; a receiver that fails is retried, and one that never answers well does not hurt the job.
The signature is checked as a receiver would, with the stock `standardwebhooks` library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import shlex
import time

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from batch_scheduler.core import errors
from batch_scheduler.core.settings import RetryPolicy
from batch_scheduler.daemon.hooks import SIGNATURE_HEADER, HookConfig, check_webhook, shown_url

from .helpers import KEY, drop, job_flags, running_daemon, state, until

pytestmark = pytest.mark.timeout(30)

SECRET = "whsec-test-secret-0123456789"  # the old form (no base64 after whsec_): accepted until the next release
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the specification's own example
FAST = RetryPolicy(attempts=4, deadline_s=10.0, initial_wait_s=0.01, max_wait_s=0.05)


class Receiver:
    """A loopback webhook receiver: answers `statuses` in turn (then 200) and keeps every request."""

    def __init__(self, statuses: list[int] | None = None, headers: dict[str, str] | None = None):
        self.statuses = list(statuses or [])
        self.headers = headers or {}
        self.received: list[tuple[dict, bytes]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200, headers=self.headers)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook?token=in-the-query"
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.received]


def signed_by(secret: str, headers: dict, body: bytes) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers[SIGNATURE_HEADER], expected)


async def test_on_done_runs_with_the_jobs_name_state_and_summary_and_no_key(sim, env_dir, tmp_path):
    spool, seen = tmp_path / "spool", tmp_path / "seen"
    seen.mkdir()
    cmd = f"env > {shlex.quote(str(seen))}/$BATCH_JOB_NAME.env"
    hooks = HookConfig(on_done=cmd, env={"PATH": "/usr/bin:/bin", "ANTHROPIC_API_KEY": KEY})
    async with running_daemon(spool, env_dir, job_flags(sim.url), hooks=hooks) as run:
        drop(spool, "nightly", 30)
        await until(lambda: (seen / "nightly.env").exists() and run.daemon.hooks.counts[("on_done", "delivered")],
                    "the command ran")
    env = dict(line.split("=", 1) for line in (seen / "nightly.env").read_text().splitlines() if "=" in line)
    assert env["BATCH_JOB_NAME"] == "nightly"
    assert env["BATCH_JOB_STATE"] == "done"
    assert env["BATCH_JOB_SUMMARY"] == str(spool / "jobs" / "nightly" / "summary.json")
    assert json.loads((spool / "jobs" / "nightly" / "summary.json").read_text())["results"]["succeeded"] == 30
    assert KEY not in (seen / "nightly.env").read_text()  # the daemon's environment stays its own


async def test_a_failing_on_done_is_logged_and_the_job_stays_done(sim, env_dir, tmp_path, caplog):
    spool = tmp_path / "spool"
    hooks = HookConfig(on_done="echo cannot reach the pager >&2; exit 4", env={"PATH": "/usr/bin:/bin"})
    with caplog.at_level(logging.INFO, logger="batch_scheduler.daemon"):
        async with running_daemon(spool, env_dir, job_flags(sim.url), hooks=hooks) as run:
            drop(spool, "a", 20)
            await until(lambda: run.daemon.hooks.counts[("on_done", "failed")] == 1, "the command failed")
            assert state(spool, "a") == "done"
    assert "job a: --on-done exited 4: cannot reach the pager" in caplog.messages


async def test_the_webhook_is_signed_retried_through_failures_and_delivered_once(sim, env_dir, tmp_path, caplog):
    spool = tmp_path / "spool"
    async with Receiver(statuses=[503, 500]) as receiver:
        hooks = HookConfig(webhook=receiver.url, secret=SECRET, retry=FAST)
        with caplog.at_level(logging.DEBUG):
            async with running_daemon(spool, env_dir, job_flags(sim.url), hooks=hooks) as run:
                drop(spool, "nightly", 30)
                await until(lambda: run.daemon.hooks.counts[("webhook", "delivered")] == 1, "the event delivered")
                async with aiohttp.ClientSession() as http, http.get(run.daemon.url + "/metrics") as r:
                    metrics = await r.text()
    assert len(receiver.received) == 3  # 503, 500, then 200
    assert 'batch_scheduler_notifications_total{kind="webhook",outcome="delivered"} 1.0' in metrics
    deliveries = {headers["X-Batch-Scheduler-Delivery"] for headers, _ in receiver.received}
    assert len(deliveries) == 1  # one delivery id: a receiver can drop a repeat
    headers, body = receiver.received[-1]
    assert signed_by(SECRET, headers, body)
    assert not signed_by("another-secret-000000", headers, body)
    event = json.loads(body)
    assert (event["event"], event["job"], event["state"]) == ("job.done", "nightly", "done")
    assert event["results"]["succeeded"] == 30 and event["requests"]["finished"] == 30
    assert event["summary_path"] == str(spool / "jobs" / "nightly" / "summary.json")
    logged = "\n".join(caplog.messages)
    assert SECRET not in logged and "in-the-query" not in logged
    assert f"job nightly: webhook {shown_url(receiver.url)} delivered (job.done)" in caplog.messages


async def test_a_receiver_that_always_fails_does_not_hurt_the_job(sim, env_dir, tmp_path, caplog):
    spool = tmp_path / "spool"
    async with Receiver(statuses=[500] * 10) as receiver:
        hooks = HookConfig(webhook=receiver.url, secret=SECRET, retry=FAST)
        async with running_daemon(spool, env_dir, job_flags(sim.url), hooks=hooks) as run:
            drop(spool, "first", 20)
            drop(spool, "second", 20)
            await until(lambda: run.daemon.hooks.counts[("webhook", "failed")] == 2, "both deliveries given up")
            assert state(spool, "first") == state(spool, "second") == "done"
    assert len(receiver.received) == 2 * FAST.attempts
    assert any(m.startswith(f"job first: webhook {shown_url(receiver.url)} not delivered: POST webhook: HTTP 500")
               for m in caplog.messages)
    assert SECRET not in "\n".join(caplog.messages)


async def test_a_paused_job_is_told_to_the_webhook(sim, env_dir, tmp_path):
    (env_dir / ".env").write_text("ANTHROPIC_API_KEY=sk-rotated-away-9999\n")
    spool = tmp_path / "spool"
    async with Receiver() as receiver:
        hooks = HookConfig(webhook=receiver.url, secret=SECRET, retry=FAST)
        async with running_daemon(spool, env_dir, job_flags(sim.url), hooks=hooks):
            drop(spool, "p", 20)
            await until(lambda: receiver.received, "the event delivered")
    event = receiver.events()[0]
    assert (event["event"], event["state"]) == ("job.paused", "paused")
    assert "ANTHROPIC_API_KEY" in event["reason"] and "sk-rotated" not in event["reason"]


async def deliver_one(sim, env_dir, tmp_path, receiver: Receiver, **config) -> tuple[dict, bytes]:
    """A daemon that runs one job and delivers its event to `receiver`: the (headers, body) received."""
    hooks = HookConfig(webhook=receiver.url, retry=FAST, **{"secret": STANDARD_SECRET, **config})
    async with running_daemon(tmp_path / "spool", env_dir, job_flags(sim.url), hooks=hooks) as run:
        drop(tmp_path / "spool", "nightly", 20)
        await until(lambda: run.daemon.hooks.counts[("webhook", "delivered")] == 1, "the event delivered")
    return receiver.received[-1]


async def test_a_delivered_event_verifies_with_the_standard_webhooks_library(sim, env_dir, tmp_path, caplog):
    async with Receiver() as receiver:
        with caplog.at_level(logging.INFO, logger="batch_scheduler.daemon"):
            headers, body = await deliver_one(sim, env_dir, tmp_path, receiver)
    event = Webhook(STANDARD_SECRET).verify(body, headers)
    assert (event["event"], event["job"]) == ("job.done", "nightly")
    assert headers["webhook-id"] == headers["X-Batch-Scheduler-Delivery"] == event["delivery"]
    assert headers["webhook-signature"].startswith("v1,")
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        Webhook("whsec_" + "QW5vdGhlciBzZWNyZXQgb2YgMzIgYnl0ZXMgISEhISE=").verify(body, headers)
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        Webhook(STANDARD_SECRET).verify(body.replace(b'"nightly"', b'"nightlz"'), headers)
    assert signed_by(STANDARD_SECRET, headers, body)  # the old header, kept one release
    assert not any("whsec_" in m for m in caplog.messages)  # no warning about the form, no secret


async def test_an_old_event_replayed_is_refused_by_the_standard_webhooks_library(sim, env_dir, tmp_path):
    async with Receiver() as receiver:
        headers, body = await deliver_one(sim, env_dir, tmp_path, receiver, clock=lambda: time.time() - 600)
    with pytest.raises(WebhookVerificationError, match="Message timestamp too old"):
        Webhook(STANDARD_SECRET).verify(body, headers)
    fresh = {**headers, "webhook-timestamp": str(int(time.time()))}  # made current again: no longer signed
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        Webhook(STANDARD_SECRET).verify(body, fresh)


async def test_a_secret_of_the_old_form_signs_both_ways_and_is_warned_about(sim, env_dir, tmp_path, caplog):
    async with Receiver() as receiver:
        with caplog.at_level(logging.INFO, logger="batch_scheduler.daemon"):
            headers, body = await deliver_one(sim, env_dir, tmp_path, receiver, secret=SECRET)
    assert signed_by(SECRET, headers, body)
    as_standard = "whsec_" + base64.b64encode(SECRET.encode()).decode()
    assert Webhook(as_standard).verify(body, headers)["job"] == "nightly"
    assert ("BATCH_WEBHOOK_SECRET is not of the form whsec_BASE64: events are signed under its text as it is; "
            "the old form is accepted until the next release") in caplog.messages


async def test_a_redirect_is_not_followed(sim, env_dir, tmp_path, caplog):
    async with Receiver() as elsewhere, Receiver([307]) as receiver:
        receiver.headers["Location"] = elsewhere.url
        hooks = HookConfig(webhook=receiver.url, secret=STANDARD_SECRET, retry=FAST)
        async with running_daemon(tmp_path / "spool", env_dir, job_flags(sim.url), hooks=hooks) as run:
            drop(tmp_path / "spool", "a", 20)
            await until(lambda: run.daemon.hooks.counts[("webhook", "failed")] == 1, "the delivery given up")
    assert len(receiver.received) == 1 and elsewhere.received == []


@pytest.mark.parametrize("url, secret, message", [
    ("http://127.0.0.1:9/x", None,
     "--webhook needs a signing secret: set BATCH_WEBHOOK_SECRET in the environment or .env"),
    ("ftp://example.invalid/x", SECRET, "--webhook ftp://example.invalid/x: expected an http:// or https:// URL"),
    ("http://127.0.0.1:9/x", "whsec_not base64!",
     "BATCH_WEBHOOK_SECRET: expected whsec_ followed by the key in base64 (`openssl rand -base64 32` makes one)"),
    ("http://127.0.0.1:9/x", "whsec_",
     "BATCH_WEBHOOK_SECRET: expected whsec_ followed by the key in base64 (`openssl rand -base64 32` makes one)"),
])
def test_a_webhook_that_cannot_be_signed_or_sent_is_refused_at_start(url, secret, message):
    with pytest.raises(errors.UsageError) as err:
        check_webhook(url, secret)
    assert str(err.value) == message
