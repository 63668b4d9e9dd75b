"""The HTTP API: health and metrics while jobs run, the bearer token, cancel."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from batch_scheduler.job.view.status import job_status

from .helpers import (
    TOKEN,
    drop,
    job_flags,
    running_daemon,
    state,
    summary,
    until,
)

pytestmark = pytest.mark.timeout(20)


async def test_healthz_answers_while_jobs_run_and_metrics_parse(sim, env_dir, tmp_path):
    sim.config.processing_s = 5.0  # no batch ends while the test looks
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url)) as run, aiohttp.ClientSession() as http:
        drop(spool, "slow", 60)
        await until(lambda: state(spool, "slow") == "running" and run.daemon.slots.in_use == 2
                    and run.daemon.slots.waiting == 1, "two batches in flight, the third waiting for a slot")
        async with http.get(run.daemon.url + "/healthz") as r:
            assert r.status == 200
            health = await r.json()
        assert health["status"] == "ok" and health["jobs"] == {"running": 1}
        for _ in range(200):  # a slot is taken before its create: the second batch is recorded a moment later
            async with http.get(run.daemon.url + "/jobs/slow") as r:
                job = await r.json()
            if job["batches_in_flight"] == 2:
                break
            await asyncio.sleep(0.02)
        assert job["state"] == "running" and job["reason"] is None
        assert set(job["progress"]) >= {"read", "submitted", "finished", "accepted"}
        assert job["batches_in_flight"] == 2
        assert set(job) >= {"spend_usd", "eta_s", "tokens", "results"}
        async with http.get(run.daemon.url + "/jobs") as r:
            assert [j["name"] for j in (await r.json())["jobs"]] == ["slow"]
        async with http.get(run.daemon.url + "/jobs/nope") as r:
            assert r.status == 404
        async with http.get(run.daemon.url + "/metrics") as r:
            assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = await r.text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    jobs = {s.labels["state"]: s.value for s in fams["batch_scheduler_jobs"].samples}
    assert jobs["running"] == 1
    calls = {(s.labels["endpoint"], s.labels["status"]): s.value for s in fams["batch_scheduler_http_calls"].samples}
    assert calls[("create", "200")] == 2
    assert fams["batch_scheduler_batches_in_flight"].samples[0].value == 2
    slots = {s.labels["kind"]: s.value for s in fams["batch_scheduler_slots"].samples}
    assert slots == {"capacity": 2, "in_use": 2, "waiting": 1}
    assert {"batch_scheduler_poll_calls", "batch_scheduler_result_bytes", "batch_scheduler_tokens",
            "batch_scheduler_spend_usd", "batch_scheduler_requests", "batch_scheduler_http_retries"} <= set(fams)


async def test_with_a_token_a_bad_or_missing_bearer_gets_401_and_healthz_stays_open(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url), token=TOKEN) as run, \
            aiohttp.ClientSession() as http:
        url = run.daemon.url
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"}):
            async with http.get(url + "/jobs", headers=headers) as r:
                assert r.status == 401
                assert await r.json() == {"error": "missing or wrong bearer token"}
        async with http.post(url + "/jobs/x/cancel", headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        async with http.get(url + "/jobs", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
        async with http.get(url + "/healthz") as r:
            assert r.status == 200


async def test_cancel_through_the_api_cancels_the_batches_at_the_provider(sim, env_dir, tmp_path):
    sim.config.processing_s = 60.0  # batches would not end by themselves
    spool = tmp_path / "spool"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}  # a call that changes state
    async with running_daemon(spool, env_dir, job_flags(sim.url, concurrency=4), token=TOKEN) as run, \
            aiohttp.ClientSession(headers=headers) as http:
        drop(spool, "long", 60)
        await until(lambda: sim.stats["creates"] == 3 and run.daemon.slots.in_use == 3, "three batches in flight")
        await until(lambda: len(job_status(str(spool / "jobs" / "long"))["batches_in_flight"]) == 3,
                    "three batches recorded in the ledger")
        async with http.post(run.daemon.url + "/jobs/long/cancel") as r:
            assert r.status == 202
            answer = await r.json()
        assert answer["batches_cancelled"] == 3 and answer["errors"] == []
        await until(lambda: state(spool, "long") == "cancelled", "job cancelled")
        assert summary(spool, "long")["reason"] == "cancelled; what its batches finished is in results/"
        assert sim.stats["cancels"] == 3
        async with http.post(run.daemon.url + "/jobs/long/cancel") as r:
            assert r.status == 409
