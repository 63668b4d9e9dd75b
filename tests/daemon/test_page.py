"""The status page at / and /job/NAME: what a person sees in a real headless Chromium (every job, its
state and progress, a job's batches, the chart), under the same access check as the JSON API, with no key.

BATCH_PAGE_SCREENSHOT=$PWD/docs/daemon-page.png also saves a screenshot of / with four jobs (done, running
with a retry tail, failed before starting, paused): how docs/daemon.md's is made.
"""

from __future__ import annotations

import os
import re

import aiohttp
import pytest

from batch_scheduler.job.view.status import job_status

from ..helpers import write_requests
from .browser import Elements, dump_dom, screenshot
from .helpers import KEY, TOKEN, drop, job_flags, running_daemon, state, until

pytestmark = pytest.mark.timeout(120)


async def three_jobs(run, spool, sim) -> None:
    """A job done, one running with batches in flight and some requests finished, one failed."""
    drop(spool, "nightly-done", 40)
    await until(lambda: state(spool, "nightly-done") == "done", "the first job done")
    drop(spool, "big-running", 200)

    def partly_finished() -> bool:
        job = run.daemon.jobs.get("big-running")
        return job is not None and job.engine is not None and job.engine.stats.finished >= 40

    await until(partly_finished, "the second job partly finished")
    sim.config.processing_s = 120.0  # its next batches stay in flight
    drop(spool, "broken", 5, options={"batch_size": "many"})
    await until(lambda: state(spool, "broken") == "failed" and run.daemon.slots.in_use == 2,
                "the third job failed, two batches in flight")


async def test_the_page_in_a_browser_shows_every_job_its_state_and_progress(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    flags = job_flags(sim.url, max_cost=2.5)
    async with running_daemon(spool, env_dir, flags, history_every_s=0.05) as run:
        await three_jobs(run, spool, sim)
        doc = Elements(await dump_dom(run.daemon.url + "/"))
        job_doc = Elements(await dump_dom(run.daemon.url + "/job/big-running"))
        running = run.daemon.jobs["big-running"].engine.stats.finished
    rows = {r["data-job"]: r for r in doc.found if r["tag"] == "tr" and "data-job" in r}
    assert list(rows) == ["nightly-done", "big-running", "broken"]
    assert {n: r["data-state"] for n, r in rows.items()} == {
        "nightly-done": "done", "big-running": "running", "broken": "failed"}
    assert (rows["nightly-done"]["data-final"], rows["nightly-done"]["data-total"]) == ("40", "40")
    assert "40 / 40 (100%)" in rows["nightly-done"]["text"]
    assert int(rows["big-running"]["data-final"]) == running and 40 <= running < 200
    # still reading (its next chunk waits for a slot): the total is an estimate from the input's size
    assert rows["big-running"]["data-estimated"] == "true"
    total = int(rows["big-running"]["data-total"])
    assert 180 <= total <= 220
    assert f"{running} / about {total} ({100 * running / total:.0f}%)" in rows["big-running"]["text"]
    assert rows["nightly-done"]["data-estimated"] == "false"
    assert "of $2.50" in rows["big-running"]["text"]  # spend against --max-cost, in dollars and cents
    bars = doc.select("div", role="progressbar")
    assert [b["aria-valuenow"] for b in bars] == ["40", str(running), "0"]
    assert "options: --batch-size: expected a whole number, got 'many'" in rows["broken"]["text"]
    assert cells(doc, "big-running")[3:5] == ["2", "40"]  # batches and requests in flight
    assert doc.select("svg", id="chart") and len(doc.select("polyline")) == 2
    # the job's own page: its batches with age, attempt and state
    batches = job_doc.select("tr", class_="batch")
    states = [b["data-state"] for b in batches]
    assert states.count("submitted") == 2 and states.count("collected") == running // 20
    header = [th["text"] for th in job_doc.select("th")]
    assert {"age", "attempt", "state"} <= set(header)
    assert job_doc.select("section", **{"data-job": "big-running", "data-state": "running"})


async def four_jobs(run, spool, sim) -> None:
    """A job done, one paused (the provider's spend limit), one running with requests parked for another
    attempt and batches in flight, one failed before it started."""
    drop(spool, "nightly-done", 40)
    await until(lambda: state(spool, "nightly-done") == "done", "the first job done")
    sim.config.spend_cap = sim.stats["requests_created"]  # the next create gets the spend-limit 429
    drop(spool, "on-hold", 20)
    await until(lambda: state(spool, "on-hold") == "paused", "the second job paused")
    sim.config.spend_cap = None  # it stays paused until its next check (--key-check-s: an hour here)
    sim.config.errored_rate = 0.25
    drop(spool, "big-running", 200, options={"retry_wait": 600})

    def parked() -> bool:
        job = run.daemon.jobs.get("big-running")
        return (job is not None and job.engine is not None and job.engine.stats.finished >= 40
                and waiting(spool, "big-running") > 0)

    await until(parked, "the third job partly finished, some of its requests parked")
    sim.config.processing_s = 120.0  # its next batches stay in flight
    drop(spool, "broken", 5, options={"batch_size": "many"})
    await until(lambda: state(spool, "broken") == "failed" and run.daemon.slots.in_use == 2,
                "the fourth job failed, two batches in flight")


def waiting(spool, name: str) -> int:
    return job_status(str(spool / "jobs" / name))["requests"]["waiting_retry"]


async def test_the_page_shows_what_an_operator_needs_for_each_job(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url, max_cost=2.5), history_every_s=0.05,
                              key_check_s=3600.0) as run:
        await four_jobs(run, spool, sim)
        doc = Elements(await dump_dom(run.daemon.url + "/"))
        parked = waiting(spool, "big-running")
        if os.environ.get("BATCH_PAGE_SCREENSHOT"):
            await screenshot(run.daemon.url + "/", os.environ["BATCH_PAGE_SCREENSHOT"], size="1600,1200")
    rows = {r["data-job"]: r for r in doc.found if r["tag"] == "tr" and "data-job" in r}
    assert {n: r["data-state"] for n, r in rows.items()} == {
        "nightly-done": "done", "on-hold": "paused", "big-running": "running", "broken": "failed"}
    for name in ("nightly-done", "big-running"):
        assert "anthropic · claude-sonnet-4-5" in rows[name]["text"]  # provider and model
    done_dir = spool / "jobs" / "nightly-done"
    assert f"batch-scheduler export {done_dir} -o nightly-done.csv" in rows["nightly-done"]["text"]
    assert re.search(r"saved \$\d+\.\d\d of \$\d+\.\d\d at standard prices", rows["nightly-done"]["text"])
    tail = re.search(r"(\d+) wait for attempt 2, next at (\d\d:\d\d:\d\d)", rows["big-running"]["text"])
    assert tail and int(tail[1]) == parked
    assert "not started" in rows["broken"]["text"] and "counting" not in rows["broken"]["text"]
    assert "drop its input (options first) into inbox/: a new job" in rows["broken"]["text"]
    assert "export" not in rows["broken"]["text"]  # nothing to export
    assert "the provider's spend limit is reached" in rows["on-hold"]["text"]
    assert "the daemon resumes it by itself" in rows["on-hold"]["text"]
    page = " ".join(r["text"] for r in rows.values())
    assert "the same command" not in page and "resume " not in page.replace("resumes it", "")
    assert not re.search(r"\$[\d,]*\.\d{3}", doc.found[0]["text"])  # dollars and cents, nowhere more
    totals = doc.select("tr", id="totals")[0]["text"]
    final = sum(int(r["data-final"]) for r in rows.values())
    assert f"all jobs{final:,}" in totals.replace(" ", "") or f"{final:,} /" in totals
    assert "saved $" in totals
    for kind in ("tick-n", "tick-usd", "tick-t"):
        labels = [t["text"] for t in doc.select("text", class_=kind)]
        assert len(labels) >= 2 and len(set(labels)) == len(labels), (kind, labels)


def cells(doc: Elements, name: str) -> list[str]:
    """The text of each cell of one job's row (cells follow their row in document order)."""
    start = next(i for i, e in enumerate(doc.found) if e.get("data-job") == name)
    end = next((i for i, e in enumerate(doc.found) if i > start and e["tag"] == "tr"), len(doc.found))
    return [e["text"] for e in doc.found[start:end] if e["tag"] == "td"]


async def test_the_page_goes_through_the_same_access_check_and_shows_no_key(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url), token=TOKEN) as run, \
            aiohttp.ClientSession() as http:
        drop(spool, "a", 20)
        await until(lambda: state(spool, "a") == "done", "the job done")
        for path in ("/", "/job/a"):
            async with http.get(run.daemon.url + path) as r:
                assert r.status == 401
            async with http.get(run.daemon.url + path, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200 and r.content_type == "text/html"
                text = await r.text()
            assert KEY not in text and TOKEN not in text and sim.url not in text
        async with http.get(run.daemon.url + "/job/nope", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 404
            assert "No job nope in the spool." in await r.text()


async def test_a_job_name_is_shown_as_text_never_as_markup(sim, env_dir, tmp_path):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url)) as run, aiohttp.ClientSession() as http:
        write_requests(str(spool / "inbox" / ".tmp"), 20)
        os.rename(spool / "inbox" / ".tmp", spool / "inbox" / "<i>x&y.jsonl")
        await until(lambda: state(spool, "<i>x&y") == "done", "the job done")
        async with http.get(run.daemon.url + "/") as r:
            text = await r.text()
        async with http.get(run.daemon.url + "/job/%3Ci%3Ex%26y") as r:
            assert r.status == 200
            assert 'data-job="&lt;i&gt;x&amp;y"' in await r.text()
    assert "<i>x" not in text
    assert 'data-job="&lt;i&gt;x&amp;y"' in text
    assert 'href="/job/%3Ci%3Ex%26y"' in text  # and its link is a path that finds it
