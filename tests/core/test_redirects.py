"""No redirects: a provider call or a webhook that is answered 3xx stops there, naming the Location;
the key and the body never reach the host it points at (the official SDKs do not follow redirects)."""

from __future__ import annotations

import pytest
from aiohttp import web

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import RetryPolicy
from batch_scheduler.daemon.hooks import HookConfig, Hooks

KEY = "sk-redirect-key-0123456789"
FAST = RetryPolicy(attempts=4, deadline_s=10.0, initial_wait_s=0.001, max_wait_s=0.002)


class Loopback:
    """A loopback server that keeps every request; answers `status` with `location` when given."""

    def __init__(self, status: int = 200, location: str | None = None):
        self.status, self.location = status, location
        self.received: list[tuple[str, str, dict]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.received.append((request.method, request.path, dict(request.headers)))
        headers = {"Location": self.location} if self.location else {}
        return web.Response(status=self.status, headers=headers, body=b"{}")

    async def __aenter__(self) -> Loopback:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_provider_call_answered_3xx_is_refused_naming_the_location_and_sends_nothing_there(status):
    async with Loopback() as elsewhere, Loopback(status, location="") as api:
        api.location = f"{elsewhere.url}/v1/messages/batches"
        async with HttpClient({"x-api-key": KEY}, FAST, secret=KEY) as http:
            with pytest.raises(errors.Redirected) as info:
                await http.call("POST", f"{api.url}/v1/messages/batches", "create", body=b'{"requests":[]}',
                                idempotent=False)
    assert str(info.value) == (f"POST create: HTTP {status} redirect to {elsewhere.url}/v1/messages/batches: not "
                               f"followed (the key goes only to the configured base URL)")
    assert isinstance(info.value, errors.FatalError)
    assert len(api.received) == 1  # not retried
    assert elsewhere.received == []


async def test_a_results_download_answered_307_is_refused_and_sends_nothing_there():
    async with Loopback() as elsewhere, Loopback(307, location="") as api:
        api.location = f"{elsewhere.url}/results"
        async with HttpClient({"x-api-key": KEY}, FAST, secret=KEY) as http:
            with pytest.raises(errors.Redirected):
                async for _ in http.line_blocks(f"{api.url}/v1/messages/batches/b1/results", "results"):
                    pass
    assert elsewhere.received == []


async def test_a_webhook_answered_307_is_not_delivered_and_its_target_receives_nothing(caplog):
    async with Loopback() as elsewhere, Loopback(307, location="") as receiver:
        receiver.location = f"{elsewhere.url}/steal"
        hooks = Hooks(HookConfig(webhook=f"{receiver.url}/hook", secret="whsec-redirect-0123456789", retry=FAST))
        await hooks.start()
        try:
            event = {"event": "job.done", "job": "nightly", "delivery": "d1"}
            assert await hooks.post(event) is False
        finally:
            await hooks.stop(1.0)
    assert len(receiver.received) == 1 and elsewhere.received == []
    assert any(m.startswith(f"job nightly: webhook {receiver.url}/hook not delivered: POST webhook: HTTP 307 "
                            f"redirect to {elsewhere.url}/steal: not followed") for m in caplog.messages)
