"""`--provider vertex` finds its credentials as Application Default Credentials do: the file
GOOGLE_APPLICATION_CREDENTIALS names, gcloud's own login file, then the metadata server (here a small one on
loopback, named by GCE_METADATA_HOST / GCE_METADATA_IP as google-auth reads them); nothing found is one line
saying what to set, before anything is uploaded. Tokens are never written anywhere."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from batch_scheduler.core import errors
from batch_scheduler.core.settings import OWN_CREDENTIALS
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.providers.google.gcp_auth import NO_CREDENTIALS, TokenSource
from batch_scheduler.simulator import SimConfig

from ..gcp import BUCKET, EMAIL, PROJECT, service_account, vertex_settings
from ..helpers import ids_of, read_results, write_requests

ROOT = Path(__file__).resolve().parents[2]
FLAVOR = {"Metadata-Flavor": "Google"}


def no_other_credentials(monkeypatch, tmp_path: Path, sim_url: str) -> None:
    """No key file, an empty gcloud configuration, and a metadata address that answers as no metadata server."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    (tmp_path / "gcloud").mkdir(exist_ok=True)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_IP", sim_url.removeprefix("http://"))


def test_gclouds_own_login_file_is_found_when_no_file_is_named_and_a_named_file_comes_first(sim, tmp_path,
                                                                                              monkeypatch):
    """Found, not refreshed: google-auth sends a user login's refresh token only to Google's own endpoint."""
    no_other_credentials(monkeypatch, tmp_path, sim.url)
    login = {"type": "authorized_user", "client_id": "gcloud-client.apps.googleusercontent.com",
             "client_secret": "d-FL95Q19q7MQmFpd7hHD0Ty", "refresh_token": "1//0refresh-token-of-a-user",
             "quota_project_id": "login-project"}
    path = tmp_path / "gcloud" / "application_default_credentials.json"
    path.write_text(json.dumps(login))
    found = TokenSource.find(OWN_CREDENTIALS)
    assert (found.source, found.project) == (str(path), "login-project")
    named = TokenSource.find(service_account(tmp_path / "sa.json", sim.url))
    assert (named.source, named.project) == ("GOOGLE_APPLICATION_CREDENTIALS", PROJECT)
    path.write_text(json.dumps({**login, "type": "external_account"}))
    with pytest.raises(errors.UsageError) as refused:
        TokenSource.find(OWN_CREDENTIALS)
    assert str(refused.value) == (
        f"{path}: gcloud's login file cannot be used as Google credentials (type 'external_account': a "
        f"service_account key or an authorized_user login is needed); give a service account's JSON key, or run "
        f"`gcloud auth application-default login` and name its file")


async def test_without_any_credentials_the_run_says_what_to_set_before_uploading(sim, tmp_path, monkeypatch):
    no_other_credentials(monkeypatch, tmp_path, sim.url)
    write_requests(tmp_path / "in.jsonl", 10)
    settings = vertex_settings(sim.url, OWN_CREDENTIALS)
    result = await Engine(settings, str(tmp_path / "out"), [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert (result.exit_code, result.message) == (ExitCode.USAGE, NO_CREDENTIALS)
    assert sim.stats["uploads"] == 0 and sim.stats.get("tokens_issued", 0) == 0


class MetadataServer:
    """The metadata server's few paths google-auth reads; its tokens are the simulator's, got by a grant."""

    def __init__(self, sim_url: str):
        self.sim_url = sim_url
        self.tokens: list[str] = []
        self.paths: list[str] = []
        self._runner: web.AppRunner | None = None
        self.host = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.host = f"127.0.0.1:{port}"
        return self.host

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def answer(self, request: web.Request) -> web.Response:
        if request.headers.get("metadata-flavor") != "Google":
            return web.Response(status=403, text="Missing Metadata-Flavor:Google header.")
        path = request.path.removeprefix("/computeMetadata/v1/")
        self.paths.append(path)
        if request.path == "/":
            return web.Response(text="computeMetadata/\n", headers=FLAVOR)
        if path == "project/project-id":
            return web.Response(text=PROJECT, headers=FLAVOR)
        if path == "instance/service-accounts/default/":
            return web.json_response({"email": EMAIL, "aliases": ["default"],
                                      "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}, headers=FLAVOR)
        if path == "instance/service-accounts/default/token":
            token = await self._grant()
            self.tokens.append(token)
            return web.json_response({"access_token": token, "expires_in": 3599, "token_type": "Bearer"},
                                     headers=FLAVOR)
        return web.Response(status=404, text="Not found", headers=FLAVOR)

    async def _grant(self) -> str:
        """A token of the machine's service account: the simulator's endpoint reads the JWT's issuer."""
        def part(doc: dict) -> str:
            return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()

        assertion = f"{part({'alg': 'RS256'})}.{part({'iss': EMAIL})}.c2ln"
        async with aiohttp.ClientSession() as session, session.post(f"{self.sim_url}/token", data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}) as resp:
            return (await resp.json())["access_token"]


async def test_on_google_cloud_the_metadata_servers_account_and_project_are_used(sim, tmp_path):
    sim.config = SimConfig(seed=8, processing_s=0.05)
    metadata = MetadataServer(sim.url)
    host = await metadata.start()
    try:
        ids = write_requests(tmp_path / "in.jsonl", 40)
        (tmp_path / "gcloud").mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")}
        env.update(CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), GCE_METADATA_HOST=host, GCE_METADATA_IP=host,
                   GOOGLE_VERTEX_BASE_URL=sim.url, STORAGE_EMULATOR_HOST=sim.url, PYTHONPATH=str(ROOT))
        args = ["run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"), "--provider", "vertex",
                "--staging", f"gs://{BUCKET}/jobs", "--model", "claude-haiku-4-5@20251001", "--batch-size", "20",
                "--poll-min", "0.02", "--poll-max", "0.1", "--shards", "2", "-v"]
        child = await asyncio.create_subprocess_exec(sys.executable, "-m", "batch_scheduler", *args, env=env,
                                                     stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(child.communicate(), timeout=120)
    finally:
        await metadata.stop()
    assert child.returncode == 0, stderr.decode()[-2000:]
    assert sorted(ids_of(read_results(str(tmp_path / "out")))) == sorted(ids)
    assert "project/project-id" in metadata.paths  # no --project and no GOOGLE_CLOUD_PROJECT: the machine's
    assert metadata.tokens and sim.stats["tokens_issued"] == len(metadata.tokens)  # every token came from it
    for token in metadata.tokens:
        assert token.encode() not in stdout + stderr
        assert not any(token.encode() in p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
