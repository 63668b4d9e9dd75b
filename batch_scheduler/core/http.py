"""HTTP calls with a retry policy, shared rate-limit gates and one place that maps failures.

Every provider call goes through `HttpClient.call` (whole answer) or `HttpClient.lines` (a streamed
JSONL download). Transient failures are retried here with exponential backoff and full jitter; the
server's `retry-after` beats the computed wait, and a 429 closes the endpoint's gate so every caller
of that endpoint waits, not just the one that was told. Calls that must not be repeated blindly
(`idempotent=False`, i.e. batch creation) are not retried on a dropped connection, a timeout or a 5xx
no provider worded (a gateway's page: `for_unsafe_call`): the caller gets `OutcomeUnknown` and decides
(see submitter: look for the batch before sending again).

Proxies come from the process environment as in the official SDKs (`trust_env`: `HTTPS_PROXY`,
`HTTP_PROXY`, `NO_PROXY`), read once per origin. `~/.netrc` is never read for the provider's host, as the
SDKs (httpx) do not: aiohttp's own `trust_env` would send a matching entry's login as Basic auth beside
the key, and refuse every call that carries a bearer token. A proxy named without credentials takes its
own from `~/.netrc`, as aiohttp does. The key never leaves in an error: `redact` blanks `secret` and the
value of every header whose name says key, token, secret, password or authorization (a proxy's token in
`ANTHROPIC_CUSTOM_HEADERS` included).

A 429 about the processing queue (`QueueFull`) is not retried either: admission waits for a batch to end.
A call made with `full_at_429` reads every 429 so (Claude on Vertex: a create over the project's jobs).
Redirects are never followed (as in the official SDKs): a 3xx is `Redirected`, naming the Location, and
fatal, so neither the key nor the body ever goes to a host the configuration does not name.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from batch_scheduler.core import errors
from batch_scheduler.core.lines import split_after
from batch_scheduler.core.logs import MIN_SECRET_CHARS, SECRET_NAME
from batch_scheduler.core.settings import RetryPolicy

RetryHook = Callable[[str, int, BaseException, float], None]  # (endpoint, attempt, error, wait_s)
CallHook = Callable[[str, str, float], None]  # (endpoint, status or error name, seconds): once per HTTP call


@dataclass
class HttpStats:
    calls: Counter = field(default_factory=Counter)  # (endpoint, status or error name) -> n
    retries: Counter = field(default_factory=Counter)  # endpoint -> n
    bytes_down: int = 0


class Gate:
    """Per-endpoint 'not before' time shared by every caller; a 429 moves it forward."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self.not_before = 0.0

    def close_for(self, seconds: float) -> None:
        self.not_before = max(self.not_before, self._clock() + seconds)

    async def wait(self) -> None:
        while (delay := self.not_before - self._clock()) > 0:  # noqa: ASYNC110 - not_before moves
            await asyncio.sleep(delay)


def backoff_s(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter for attempt 1, 2, ..."""
    ceiling = min(policy.max_wait_s, policy.initial_wait_s * (2 ** (attempt - 1)))
    return rng.uniform(0, ceiling) if policy.jitter else ceiling


def secrets_in(headers: dict[str, str], secret: str = "") -> tuple[str, ...]:
    """The values not to let out: `secret`, and every header value whose name says it is one (the part
    after `Bearer ` too); longest first, so a key is blanked whole before any part of it."""
    found = {secret}
    for name, value in headers.items():
        if SECRET_NAME.search(name):
            found.add(value)
            scheme, _, rest = value.partition(" ")
            if scheme.lower() in ("bearer", "basic", "token") and rest:
                found.add(rest.strip())
    return tuple(sorted((s for s in found if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True))


class HttpClient:
    def __init__(self, headers: dict[str, str], policy: RetryPolicy, *, timeout_s: float = 300.0,
                 secret: str = "", connections: int = 32, clock: Callable[[], float] = time.monotonic,
                 on_retry: list[RetryHook] | None = None, rng: random.Random | None = None,
                 trust_env: bool = True):
        self._headers = headers
        self._policy = policy
        self._timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30, sock_read=timeout_s)
        self._secrets = secrets_in(headers, secret)
        self._trust_env = trust_env
        self._proxies: dict[tuple[str, str | None, int | None], dict[str, Any]] = {}  # per origin
        self._connections = connections
        self._clock = clock
        self._gates: dict[str, Gate] = {}
        self._rng = rng or random.Random()
        self.on_retry: list[RetryHook] = list(on_retry or [])
        self.on_call: list[CallHook] = []  # e.g. a latency histogram (daemon.metrics)
        self.stats = HttpStats()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpClient:
        connector = aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout,
                                              connector=connector, auto_decompress=True,
                                              trust_env=False)  # proxies: `request`; no ~/.netrc
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "HttpClient used outside 'async with'"
        return self._session

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """`session.request`, through the environment's proxy for `url`'s origin when there is one (the
        async context manager aiohttp gives). Every call of a provider goes through here."""
        return self.session.request(method, url, **self._proxy_for(url), **kwargs)

    def _proxy_for(self, url: str) -> dict[str, Any]:
        if not self._trust_env:
            return {}
        u = URL(url)
        origin = (u.scheme, u.host, u.port)
        found = self._proxies.get(origin)
        if found is None:
            try:
                proxy, auth = get_env_proxy_for_url(u)  # NO_PROXY honoured; a proxy's own ~/.netrc login
                found = {"proxy": proxy, "proxy_auth": auth}
            except LookupError:  # no proxy for this origin
                found = {}
            self._proxies[origin] = found
        return found

    def gate(self, endpoint: str) -> Gate:
        if endpoint not in self._gates:
            self._gates[endpoint] = Gate(self._clock)
        return self._gates[endpoint]

    def redact(self, text: str) -> str:
        """Never let the key out, whatever a server echoes back."""
        for secret in self._secrets:
            text = text.replace(secret, "[key]")
        return text

    async def call(self, method: str, url: str, endpoint: str, *,
                   body: bytes | aiohttp.FormData | aiohttp.payload.Payload | None = None,
                   headers: dict[str, str] | None = None, idempotent: bool = True,
                   seen: dict[str, str] | None = None, full_at_429: bool = False) -> bytes:
        """One API call, retried by policy; the answer body on 2xx. `seen` gets the last answer's headers
        (a realtime call's rate limits), an error's included. With `full_at_429`, a 429 is QueueFull."""

        async def once() -> bytes:
            t0 = self._clock()
            try:
                async with self.request(method, url, data=body, headers=headers,
                                        allow_redirects=False) as resp:
                    data = await resp.read()
                    if seen is not None:
                        seen.clear()
                        seen.update((k.lower(), v) for k, v in resp.headers.items())
            except Exception as exc:
                self._called(endpoint, type(exc).__name__, t0)
                raise
            self.stats.calls[(endpoint, resp.status)] += 1
            self._called(endpoint, str(resp.status), t0)
            if resp.status >= 300:  # a redirect is never followed: errors.Redirected names its Location
                err = errors.from_status(resp.status, data, dict(resp.headers), what=f"{method} {endpoint}")
                if full_at_429 and isinstance(err, errors.RateLimited):
                    err = errors.QueueFull(str(err), status=err.status, kind=err.kind)
                raise err
            return data

        return await self.retrying(endpoint, once, idempotent=idempotent, sent=body is not None)

    def _called(self, endpoint: str, status: str, t0: float) -> None:
        if self.on_call:
            seconds = self._clock() - t0
            for hook in self.on_call:
                hook(endpoint, status, seconds)

    async def retrying(self, endpoint: str, attempt_fn: Callable[[], Awaitable[Any]], *,
                       idempotent: bool = True, sent: bool = False) -> Any:
        policy = self._policy
        gate = self.gate(endpoint)
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            await gate.wait()
            try:
                return await attempt_fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - mapped right here, the one place
                err = errors.from_exception(exc, what=endpoint, sent=sent and not idempotent)
                if not isinstance(exc, errors.ProviderError):
                    self.stats.calls[(endpoint, type(exc).__name__)] += 1
                if not idempotent:
                    err = for_unsafe_call(err)
                err.args = (self.redact(str(err)),)
                if isinstance(err, errors.OutcomeUnknown | errors.TimeoutError_) and not idempotent:
                    raise err from None
                if not isinstance(err, errors.TransientError) or isinstance(err, errors.QueueFull):
                    raise err from None  # a full queue waits for a batch to end (admission), not for a timer
                if attempt >= policy.attempts or self._clock() - started > policy.deadline_s:
                    raise err from None
                wait = backoff_s(policy, attempt, self._rng)
                if isinstance(err, errors.RateLimited):
                    if err.retry_after_s is not None:
                        wait = err.retry_after_s
                    gate.close_for(wait)
                self.stats.retries[endpoint] += 1
                for hook in self.on_retry:
                    hook(endpoint, attempt, err, wait)
                await asyncio.sleep(wait)

    async def line_blocks(self, url: str, endpoint: str, *, headers: dict[str, str] | None = None
                          ) -> AsyncIterator[list[bytes]]:
        """Stream a JSONL download as lists of lines (without newlines), one attempt.

        A cut-off download raises a TransientError; the caller restarts from the first line, after
        rolling back what it wrote (see collector).
        """
        await self.gate(endpoint).wait()
        t0 = self._clock()
        try:
            async with self.request("GET", url, headers=headers, allow_redirects=False) as resp:
                self.stats.calls[(endpoint, resp.status)] += 1
                self._called(endpoint, str(resp.status), t0)  # the time to the answer's head, not the download
                if resp.status >= 300:
                    data = await resp.read()
                    raise errors.from_status(resp.status, data, dict(resp.headers), what=f"GET {endpoint}")
                tail = b""
                async for block in resp.content.iter_chunked(1 << 18):
                    self.stats.bytes_down += len(block)
                    parts, tail = split_after(tail, block)
                    if parts:
                        yield parts
                if tail.strip():
                    yield [tail]
        except asyncio.CancelledError:
            raise
        except errors.ProviderError as err:
            if isinstance(err, errors.RateLimited):
                self.gate(endpoint).close_for(err.retry_after_s or 1.0)
            raise
        except Exception as exc:  # noqa: BLE001
            self.stats.calls[(endpoint, type(exc).__name__)] += 1
            self._called(endpoint, type(exc).__name__, t0)
            mapped = errors.from_exception(exc, what=endpoint)
            mapped.args = (self.redact(str(mapped)),)
            raise mapped from None


# 5xx a gateway sends when it never reached the provider, or that say the provider did not take the call
NOT_TAKEN_5XX = frozenset({501, 503, 529})


def for_unsafe_call(err: errors.ProviderError) -> errors.ProviderError:
    """What a failed call that must not be repeated blindly (a batch create, a paid live call) means.

    A 5xx the provider did not word (no error body of its own: a gateway's or proxy's page, as nginx's 502
    when the provider dropped the connection mid-answer) cannot say the call was not done: OutcomeUnknown,
    looked for before it is sent again. The provider's own 5xx error says it failed, and is retried as the
    official SDKs do; a 503 or 529 says the call was not taken.
    """
    if isinstance(err, errors.ServerError) and err.kind is None and err.status is not None \
            and err.status not in NOT_TAKEN_5XX:
        return errors.OutcomeUnknown(f"{err} (not the provider's own error: the call may have been done)",
                                     status=err.status)
    return err
