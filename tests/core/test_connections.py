"""Connecting the way the official SDKs do: proxies from the environment, the auth token, custom and
organisation headers, a User-Agent, and no secret in an error."""

from __future__ import annotations

import logging
import os

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses

from batch_scheduler import __version__
from batch_scheduler.commands.main import main
from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import RetryPolicy
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.providers import build_settings, headers_for
from batch_scheduler.simulator import SimConfig, Simulator

from ..conftest import FAST_RETRY, KEY
from ..helpers import read_results, write_requests

TOKEN = "sk-ant-oat-token-0123456789"


class RecordingSimulator(Simulator):
    """The simulator, noting the method, path and headers (names in lower case) of every call it gets."""

    def __init__(self, config: SimConfig | None = None):
        super().__init__(config)
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def record(request: web.Request, handler):
            self.seen.append((request.method, request.path, {k.lower(): v for k, v in request.headers.items()}))
            return await handler(request)

        app.middlewares.append(record)
        return app


@pytest.fixture
async def rec():
    simulator = RecordingSimulator(SimConfig(seed=3))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


class ForwardProxy:
    """A plain-HTTP forward proxy on loopback: takes absolute-form requests, forwards them, notes each URL."""

    def __init__(self):
        self.seen: list[str] = []
        self.authorizations: list[str | None] = []  # the Authorization header of each call it carried
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        assert self._client is not None
        self.seen.append(f"{request.method} {request.url}")
        self.authorizations.append(request.headers.get("Authorization"))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "proxy-connection")}
        async with self._client.request(request.method, str(request.url), headers=headers,
                                        data=await request.read()) as resp:
            body = await resp.read()
            kept = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "retry-after")}
            return web.Response(status=resp.status, body=body, headers=kept)

    async def start(self) -> None:
        self._client = aiohttp.ClientSession(auto_decompress=False)  # trust_env off: never itself proxied
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()


@pytest.fixture
async def proxy():
    p = ForwardProxy()
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def settings_for(url: str, env: dict[str, str], **flags):
    """Settings as the CLI builds them (flags over the environment), with the tests' fast timings."""
    flags = {"base_url": url, "batch_size": 20, "poll_min": 0.01, "poll_max": 0.05, "shards": 2, **flags}
    return build_settings(flags, env).replace(retry=FAST_RETRY)


async def run(settings, tmp_path, n: int = 45):
    ids = write_requests(tmp_path / "in.jsonl", n)
    result = await Engine(settings, str(tmp_path / "out"), [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    assert sorted(r["custom_id"] for r in read_results(str(tmp_path / "out"))) == ids
    return result


# -- proxies ------------------------------------------------------------------------------------------


async def test_http_proxy_carries_every_call_of_a_run(sim, proxy, tmp_path, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    await run(settings_for(sim.url, {"ANTHROPIC_API_KEY": KEY}), tmp_path)
    kinds = {line.split(" ", 1)[0] + " " + line.split(sim.url, 1)[1].split("?")[0].rsplit("/", 1)[-1]
             for line in proxy.seen}
    assert all(sim.url in line for line in proxy.seen)
    assert {"POST batches", "GET results"} <= kinds  # creates and downloads went through the proxy
    assert len(proxy.seen) == sum(sim.stats["calls"].values())


async def test_no_proxy_bypasses_the_proxy_for_the_hosts_it_names(sim, proxy, tmp_path, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    await run(settings_for(sim.url, {"ANTHROPIC_API_KEY": KEY}), tmp_path)
    assert proxy.seen == []
    assert sum(sim.stats["calls"].values()) > 0


@pytest.fixture
def netrc_naming_the_provider(tmp_path, monkeypatch):
    """A ~/.netrc (as curl and git users keep) with a login for the host the provider answers on."""
    path = tmp_path / "netrc"
    path.write_text("machine 127.0.0.1\nlogin someone\npassword hunter2-not-for-the-provider\n")
    path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(path))


async def test_a_netrc_entry_for_the_providers_host_never_reaches_it(sim, proxy, tmp_path, monkeypatch,
                                                                      netrc_naming_the_provider):
    """The official SDKs do not read ~/.netrc; aiohttp's trust_env sent its login as Basic auth beside the key."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    await run(settings_for(sim.url, {"ANTHROPIC_API_KEY": KEY}), tmp_path)
    assert len(proxy.seen) == sum(sim.stats["calls"].values()) > 0  # every call still went by the proxy
    assert proxy.authorizations == [None] * len(proxy.seen)  # the key went as x-api-key, nothing else


async def test_a_netrc_entry_for_the_providers_host_does_not_stop_a_bearer_provider(sim, tmp_path,
                                                                                     netrc_naming_the_provider):
    """With a bearer key aiohttp's trust_env refused every call (an Authorization header and netrc's login)."""
    await run(settings_for(sim.url + "/v1", {"OPENAI_API_KEY": KEY}, provider="openai"), tmp_path)


# -- credentials ----------------------------------------------------------------------------------------


async def test_anthropic_auth_token_alone_is_sent_as_bearer_and_written_nowhere(rec, tmp_path):
    rec.config.valid_keys = {TOKEN}
    settings = settings_for(rec.url, {"ANTHROPIC_AUTH_TOKEN": TOKEN})
    assert (settings.api_key, settings.auth) == (TOKEN, "bearer")
    assert TOKEN not in repr(settings)
    await run(settings, tmp_path)
    assert {h.get("authorization") for _, _, h in rec.seen} == {f"Bearer {TOKEN}"}
    assert all("x-api-key" not in h for _, _, h in rec.seen)
    for root, _, files in os.walk(tmp_path / "out"):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert TOKEN.encode() not in f.read(), name


def test_with_both_the_key_wins_as_in_the_sdk_and_the_run_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="batch_scheduler.settings"):
        settings = build_settings({"provider": "inline"}, {"CLAUDE_API_KEY": KEY, "ANTHROPIC_AUTH_TOKEN": TOKEN})
    assert (settings.api_key, settings.auth) == (KEY, "bearer")  # inline sends its key as Bearer anyway
    assert [r.getMessage() for r in caplog.records] == [
        "both ANTHROPIC_API_KEY (or CLAUDE_API_KEY) and ANTHROPIC_AUTH_TOKEN are set: the key is used"]


def test_the_token_goes_as_the_auth_flag_says_when_one_is_given():
    settings = build_settings({"auth": "x-api-key"}, {"ANTHROPIC_AUTH_TOKEN": TOKEN})
    assert headers_for(settings)["x-api-key"] == TOKEN


def test_openai_reads_no_anthropic_token(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", TOKEN)
    write_requests(tmp_path / "in.jsonl", 1)
    assert main(["run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"), "--provider", "openai"]) == 2
    assert capsys.readouterr().err.strip() == (
        "batch-scheduler: no API key: set OPENAI_API_KEY in the environment or in .env")


# -- headers ---------------------------------------------------------------------------------------------


async def test_custom_headers_from_the_environment_and_flags_reach_the_api_with_a_user_agent(rec, tmp_path):
    env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_CUSTOM_HEADERS": "X-Team: data\r\nBypass-Middleware: true\n\n"}
    await run(settings_for(rec.url, env, header=["x-team: ml"]), tmp_path)
    assert rec.seen
    for _, _, h in rec.seen:
        assert (h["x-team"], h["bypass-middleware"]) == ("ml", "true")  # --header beats the variable
        assert h["user-agent"] == f"batch-scheduler/{__version__}"
        assert h["anthropic-version"] == "2026-10-21"


async def test_openai_organisation_and_project_go_with_every_call(rec, tmp_path):
    env = {"OPENAI_API_KEY": KEY, "OPENAI_ORG_ID": "org-abc", "OPENAI_PROJECT_ID": "proj_xyz",
           "OPENAI_CUSTOM_HEADERS": "X-Trace: 7"}
    await run(settings_for(rec.url, env, provider="openai", batch_size=50), tmp_path)
    paths = {p.rsplit("/", 1)[-1] if not p.endswith("content") else "content" for _, p, _ in rec.seen}
    assert {"files", "batches", "content"} <= paths  # upload, create, download
    for _, _, h in rec.seen:
        assert (h["openai-organization"], h["openai-project"], h["x-trace"]) == ("org-abc", "proj_xyz", "7")
        assert h["authorization"] == f"Bearer {KEY}"
        assert h["user-agent"] == f"batch-scheduler/{__version__}"


def test_a_user_agent_header_given_by_the_user_replaces_ours_whatever_its_case():
    headers = headers_for(build_settings({"header": ["user-agent: my-pipeline/2"]}, {"ANTHROPIC_API_KEY": KEY}))
    assert [v for k, v in headers.items() if k.lower() == "user-agent"] == ["my-pipeline/2"]


@pytest.mark.parametrize("flags, env, message", [
    ({"header": ["X-A: 1\r\nX-Injected: 2"]}, {},
     "--header: the value of header X-A holds a line break (CR or LF)"),
    ({"header": ["Bad Name: 1"]}, {},
     "--header: 'Bad Name' is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)"),
    ({}, {"ANTHROPIC_CUSTOM_HEADERS": "X-A: 1\nno colon here"},
     "ANTHROPIC_CUSTOM_HEADERS line 2: expected 'Name: value'"),
    ({}, {"ANTHROPIC_CUSTOM_HEADERS": "X-A: one\rtwo"},
     "ANTHROPIC_CUSTOM_HEADERS line 1: the value of header X-A holds a line break (CR or LF)"),
    ({"provider": "openai"}, {"OPENAI_API_KEY": KEY, "OPENAI_ORG_ID": "org-1\nX-B: 2"},
     "OPENAI_ORG_ID, OPENAI_PROJECT_ID: a value holds a line break (CR or LF)"),
    ({}, {"ANTHROPIC_API_KEY": KEY + "\r"},
     "the API key holds a line break (CR or LF): check ANTHROPIC_API_KEY (or CLAUDE_API_KEY), or "
     "ANTHROPIC_AUTH_TOKEN (a .env file saved with Windows line endings?)"),
], ids=["crlf-in-flag", "bad-name", "no-colon", "cr-in-variable", "lf-in-org-id", "cr-in-key"])
def test_a_line_break_or_a_bad_name_in_a_header_is_a_usage_error(flags, env, message):
    with pytest.raises(errors.UsageError) as info:
        build_settings(flags, {"ANTHROPIC_API_KEY": KEY, **env})
    assert str(info.value) == message
    assert KEY not in str(info.value)


def test_a_bad_custom_header_exits_2_before_anything_is_sent(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_CUSTOM_HEADERS", "X-A: 1\r\nX-B: two\rX-Injected: 3")
    write_requests(tmp_path / "in.jsonl", 1)
    assert main(["run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"),
                 "--base-url", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.strip() == (
        "batch-scheduler: ANTHROPIC_CUSTOM_HEADERS line 2: the value of header X-B holds a line break (CR or LF)")
    assert not (tmp_path / "out").exists()


async def test_a_secret_header_echoed_by_a_server_never_reaches_an_error():
    url = "http://api.test/v1/messages/batches"
    headers = headers_for(build_settings({"auth": "bearer"}, {
        "ANTHROPIC_AUTH_TOKEN": TOKEN, "ANTHROPIC_CUSTOM_HEADERS": "X-Proxy-Token: pxy-secret-998877"}))
    async with HttpClient(headers, RetryPolicy(attempts=1)) as http:
        with aioresponses() as m:
            m.get(url, status=401, body=f'{{"error": {{"type": "authentication_error", "message": '
                                        f'"bad {TOKEN} via pxy-secret-998877"}}}}'.encode())
            with pytest.raises(errors.AuthRefused) as info:
                await http.call("GET", url, "retrieve")
    assert str(info.value) == "GET retrieve: HTTP 401 authentication_error: bad [key] via [key]"
