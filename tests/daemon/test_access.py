"""Who may call the daemon's API: its own Host and Origin only; the token for every call that changes state (and
for everything but /healthz when it has one); a JSON body type for those calls; a unix socket of its owner's."""

from __future__ import annotations

import os
import stat
from urllib.parse import urlsplit

import aiohttp
import pytest

from batch_scheduler.daemon.server import DaemonConfig, listen_warning

from .helpers import TOKEN, drop, job_flags, running_daemon, state, until

pytestmark = pytest.mark.timeout(20)

NEEDS_TOKEN = {"error": "this call changes state and needs the daemon's token: start the daemon with --token (or "
                        "BATCH_DAEMON_TOKEN) and send Authorization: Bearer TOKEN"}
JSON_ONLY = {"error": "a call that changes state must send Content-Type: application/json"}


async def answer(http: aiohttp.ClientSession, method: str, url: str, **kw) -> tuple[int, dict]:
    async with http.request(method, url, **kw) as r:
        return r.status, await r.json()


async def test_without_a_token_reading_works_and_changing_state_is_refused(sim, env_dir, tmp_path):
    sim.config.processing_s = 30.0
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url)) as run, aiohttp.ClientSession() as http:
        drop(spool, "job", 40)
        await until(lambda: state(spool, "job") == "running", "job running")
        url = run.daemon.url
        assert (await answer(http, "GET", url + "/jobs"))[0] == 200
        json_post = {"Content-Type": "application/json"}
        assert await answer(http, "POST", url + "/jobs/job/cancel", headers=json_post) == (403, NEEDS_TOKEN)
        assert await answer(http, "POST", url + "/jobs/job/cancel",
                            headers={**json_post, "Authorization": "Bearer guessed"}) == (403, NEEDS_TOKEN)
        assert state(spool, "job") == "running" and sim.stats["cancels"] == 0


async def test_a_web_page_cannot_reach_the_api_by_host_origin_form_or_text(sim, env_dir, tmp_path):
    sim.config.processing_s = 30.0
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url), token=TOKEN) as run, \
            aiohttp.ClientSession() as http:
        drop(spool, "job", 40)
        await until(lambda: state(spool, "job") == "running", "job running")
        url, port = run.daemon.url, urlsplit(run.daemon.url).port
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        # DNS rebinding: a page under another name that resolves to 127.0.0.1
        assert await answer(http, "GET", url + "/jobs", headers={**bearer, "Host": f"evil.example:{port}"}) == (
            403, {"error": f"Host 'evil.example:{port}' does not name this daemon; call it as 127.0.0.1:{port}"})
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            assert (await answer(http, "GET", url + "/jobs", headers={**bearer, "Host": host}))[0] == 200
        # another page's fetch or form
        assert await answer(http, "GET", url + "/jobs", headers={**bearer, "Origin": "http://evil.example"}) == (
            403, {"error": "requests from another origin (http://evil.example) are refused"})
        own = {**bearer, "Origin": f"http://127.0.0.1:{port}"}  # the daemon's own page
        assert (await answer(http, "GET", url + "/jobs", headers=own))[0] == 200
        cancel = url + "/jobs/job/cancel"
        assert (await answer(http, "POST", cancel, headers={**bearer, "Origin": "http://evil.example",
                                                            "Content-Type": "application/json"}))[0] == 403
        for body_type in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"):
            assert await answer(http, "POST", cancel, data=b"x=1", headers={**bearer, "Content-Type": body_type}) == (
                415, JSON_ONLY)
        assert await answer(http, "POST", cancel, headers={"Content-Type": "application/json"}) == (
            401, {"error": "missing or wrong bearer token"})
        assert state(spool, "job") == "running" and sim.stats["cancels"] == 0
        status, doc = await answer(http, "POST", cancel, json={}, headers=own)  # its own page, token, JSON: let in
        assert status == 202 and doc["name"] == "job"


async def test_a_unix_socket_is_its_owners_and_follows_the_same_rules(sim, env_dir, tmp_path):
    spool, path = tmp_path / "spool", str(tmp_path / "api.sock")
    async with running_daemon(spool, env_dir, job_flags(sim.url), unix_socket=path) as run:
        assert run.daemon.url == f"unix:{path}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path)) as http:
            status, health = await answer(http, "GET", "http://localhost/healthz")
            assert status == 200 and health["status"] == "ok"
            assert await answer(http, "POST", "http://localhost/jobs/x/cancel",
                                headers={"Content-Type": "application/json"}) == (403, NEEDS_TOKEN)


def test_listening_beyond_loopback_warns_that_it_is_plain_http():
    assert listen_warning(DaemonConfig(spool="s", listen=("0.0.0.0", 8787), token=TOKEN), "http://0.0.0.0:8787") == (
        "the HTTP API on http://0.0.0.0:8787 is plain HTTP: the token and every answer cross the network in clear; "
        "put a TLS proxy in front of it, or listen on loopback or a unix socket")
    assert listen_warning(DaemonConfig(spool="s"), "http://127.0.0.1:8787") is None
    assert listen_warning(DaemonConfig(spool="s", unix_socket="/run/x.sock"), "unix:/run/x.sock") is None
