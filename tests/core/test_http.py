"""Retry policy at the HTTP seam (aioresponses): what is retried, what is not, and how long we wait."""

import aiohttp
import pytest
from aioresponses import aioresponses

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import RetryPolicy

URL = "http://api.test/v1/messages/batches"
FAST = RetryPolicy(attempts=4, initial_wait_s=0.001, max_wait_s=0.002)


@pytest.fixture
async def client():
    async with HttpClient({"x-api-key": "sk-secret-123"}, FAST, secret="sk-secret-123") as c:
        yield c


async def test_5xx_and_529_are_retried_until_success(client):
    with aioresponses() as m:
        m.get(URL, status=500, body=b"{}")
        m.get(URL, status=529, body=b'{"error":{"type":"overloaded_error","message":"busy"}}')
        m.get(URL, status=200, body=b'{"ok":1}')
        assert await client.call("GET", URL, "list") == b'{"ok":1}'
    assert client.stats.retries["list"] == 2


async def test_429_waits_retry_after_and_closes_the_gate_for_every_caller(client):
    waits = []
    client.on_retry.append(lambda ep, n, err, wait: waits.append(wait))
    with aioresponses() as m:
        m.get(URL, status=429, body=b"{}", headers={"retry-after": "0.02"})
        m.get(URL, status=200, body=b"{}")
        await client.call("GET", URL, "list")
    assert waits == [0.02]
    assert client.gate("list").not_before > 0  # the next caller of the endpoint waits too


async def test_401_is_not_retried_and_names_no_key(client):
    with aioresponses() as m:
        m.get(URL, status=401, body=b'{"error":{"type":"authentication_error","message":"bad key sk-secret-123"}}')
        with pytest.raises(errors.AuthRefused) as info:
            await client.call("GET", URL, "retrieve")
    assert "sk-secret-123" not in str(info.value)
    assert client.stats.retries["retrieve"] == 0


async def test_create_is_not_sent_again_after_a_dropped_connection(client):
    with aioresponses() as m:
        m.post(URL, exception=aiohttp.ServerDisconnectedError())
        m.post(URL, status=200, body=b"{}")
        with pytest.raises(errors.OutcomeUnknown):
            await client.call("POST", URL, "create", body=b"{}", idempotent=False)


async def test_create_is_retried_when_the_server_answered_with_an_error(client):
    with aioresponses() as m:
        m.post(URL, status=503, body=b"{}")
        m.post(URL, status=200, body=b'{"id":"b1"}')
        assert await client.call("POST", URL, "create", body=b"{}", idempotent=False) == b'{"id":"b1"}'


@pytest.mark.parametrize("status", [500, 502, 520])
async def test_a_5xx_no_provider_worded_on_create_is_an_unknown_outcome_not_a_blind_resend(client, status):
    """A gateway's page (nginx's 502 when the provider dropped mid-answer) cannot say no batch was made."""
    with aioresponses() as m:
        m.post(URL, status=status, body=b"<html>502 Bad Gateway</html>")
        m.post(URL, status=200, body=b'{"id":"b2"}')
        with pytest.raises(errors.OutcomeUnknown, match=f"HTTP {status}.*may have been done"):
            await client.call("POST", URL, "create", body=b"{}", idempotent=False)
    assert client.stats.retries["create"] == 0


async def test_the_providers_own_500_on_create_and_any_5xx_on_a_read_are_retried(client):
    with aioresponses() as m:
        m.post(URL, status=500, body=b'{"type":"error","error":{"type":"api_error","message":"oops"}}')
        m.post(URL, status=200, body=b'{"id":"b1"}')
        m.get(URL, status=502, body=b"<html>502 Bad Gateway</html>")
        m.get(URL, status=200, body=b'{"ok":1}')
        assert await client.call("POST", URL, "create", body=b"{}", idempotent=False) == b'{"id":"b1"}'
        assert await client.call("GET", URL, "list") == b'{"ok":1}'
    assert (client.stats.retries["create"], client.stats.retries["list"]) == (1, 1)


async def test_409_conflict_and_504_timeout_are_retried_as_the_sdks_do(client):
    with aioresponses() as m:
        m.get(URL, status=409, body=b'{"type":"error","error":{"type":"conflict_error","message":"busy"}}')
        m.get(URL, status=504, body=b'{"type":"error","error":{"type":"timeout_error","message":"slow"}}')
        m.get(URL, status=408, body=b"{}")
        m.get(URL, status=200, body=b'{"ok":1}')
        assert await client.call("GET", URL, "retrieve") == b'{"ok":1}'
    assert client.stats.retries["retrieve"] == 3


async def test_a_504_on_create_is_an_unknown_outcome_not_a_blind_resend(client):
    with aioresponses() as m:
        m.post(URL, status=504, body=b'{"type":"error","error":{"type":"timeout_error","message":"slow"}}')
        with pytest.raises(errors.TimeoutError_) as info:
            await client.call("POST", URL, "create", body=b"{}", idempotent=False)
    assert str(info.value) == "POST create: HTTP 504 timeout_error: slow"


async def test_x_should_retry_beats_the_status(client):
    with aioresponses() as m:
        m.get(URL, status=400, body=b"{}", headers={"x-should-retry": "true"})
        m.get(URL, status=200, body=b'{"ok":1}')
        assert await client.call("GET", URL, "retrieve") == b'{"ok":1}'
        m.get(URL, status=503, body=b"{}", headers={"x-should-retry": "false"})
        with pytest.raises(errors.RequestRejected):
            await client.call("GET", URL, "list")
    assert client.stats.retries == {"retrieve": 1}


async def test_a_spend_limit_is_not_retried_and_keeps_the_providers_message(client):
    body = (b'{"type":"error","error":{"type":"rate_limit_error","message":"You will regain access on 2027-01-01 '
            b'at 00:00 UTC.","details":{"error_code":"enforced_spend_limit_reached"}}}')
    with aioresponses() as m:
        m.post(URL, status=429, body=body)
        with pytest.raises(errors.SpendLimited) as info:
            await client.call("POST", URL, "create", body=b"{}", idempotent=False)
    assert str(info.value) == ("POST create: HTTP 429 rate_limit_error: You will regain access on 2027-01-01 at "
                               "00:00 UTC.")
    assert client.stats.retries["create"] == 0
    assert client.gate("create").not_before == 0  # not a rate limit: no gate closes


async def test_retries_stop_at_the_policy_attempts(client):
    with aioresponses() as m:
        for _ in range(5):
            m.get(URL, status=502, body=b"{}")
        with pytest.raises(errors.ServerError):
            await client.call("GET", URL, "retrieve")
    assert client.stats.retries["retrieve"] == FAST.attempts - 1


async def test_a_full_queue_is_not_retried_here_nor_does_it_close_the_gate(client):
    body = (b'{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your '
            b'organization\'s limit of 500 message batch requests in the processing queue."}}')
    with aioresponses() as m:
        m.post(URL, status=429, body=body, headers={"retry-after": "1"})
        with pytest.raises(errors.QueueFull) as info:
            await client.call("POST", URL, "create", body=b"{}", idempotent=False)
    assert info.value.stated_limit == 500
    assert client.stats.retries["create"] == 0 and client.gate("create").not_before == 0
