"""The daemon's HTTP API (aiohttp): GET /healthz, /jobs, /jobs/NAME, /metrics; POST /jobs/NAME/cancel;
and the status page for people, GET / and /job/NAME (daemon.page).

Who may call what is decided in one place, `Access`, the middleware of every route (a new route, the
status page included, gets the same rules without a line of its own). In this order:

1. Host: on a loopback listener the `Host` header must name it (localhost, 127.0.0.1 or [::1], with its
   port): a web page under another name that resolves to 127.0.0.1 (DNS rebinding) is refused, 403.
2. Origin: a request that carries one (a browser's fetch or form post) must come from this listener's
   own origin, `http://` + its Host (the status page it serves); any other page is refused, 403.
3. The token (`Authorization: Bearer TOKEN`): with one, every path but /healthz needs it (beyond loopback
   the daemon does not start without one). A call that changes state (any method but GET and HEAD:
   POST /jobs/NAME/cancel and whatever comes) needs it in any case: without a token configured such a
   call is refused 403 (start the daemon with --token); with a wrong or missing bearer, 401.
4. A call that changes state must say `Content-Type: application/json` (a form or `text/plain` post, which
   a page may send anywhere, is refused, 415).

The API also listens on a unix socket (`--listen unix:PATH`, mode 0600): no browser reaches one, so the
Host is not checked there; the token rules are the same.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson
from aiohttp import web

from batch_scheduler.daemon.hooks import Hooks
from batch_scheduler.daemon.jobs import Totals
from batch_scheduler.daemon.logs import log
from batch_scheduler.daemon.metrics import CONTENT_TYPE, Metrics, MetricsView
from batch_scheduler.daemon.page import History, Pages
from batch_scheduler.daemon.slots import FairSlots
from batch_scheduler.daemon.spool import FINAL, SUMMARY_FILE, Job, JobState, read_json
from batch_scheduler.job.view.status import job_status

HTTP_STOP_S = 1.0  # open API connections get this long once the jobs have stopped


class Service(Protocol):
    """What the API shows of the daemon (server.Daemon), and the one thing it asks of it."""

    jobs: dict[str, Job]
    should_exit: bool
    started_at: float
    metrics: Metrics
    hooks: Hooks
    history: History

    @property
    def slots(self) -> FairSlots: ...

    @property
    def totals(self) -> Totals: ...

    @property
    def job_flags(self) -> Mapping[str, Any]: ...

    async def cancel(self, job: Job) -> dict[str, Any]: ...


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


def _read_job_files(job_dir: str) -> tuple[dict[str, Any] | None, dict[str, Any], int]:
    """(status.job_status or None, summary.json, bytes in result shards); runs off the loop."""
    st = None
    if os.path.exists(os.path.join(job_dir, "ledger.db")):
        try:
            st = job_status(job_dir)
        except Exception as err:  # noqa: BLE001 - a ledger being created; the next look sees it
            log.debug("%s: no status yet: %s", job_dir, err)
    results = os.path.join(job_dir, "results")
    size = 0
    if os.path.isdir(results):
        with os.scandir(results) as entries:
            size = sum(e.stat().st_size for e in entries if e.name.endswith(".jsonl"))
    return st, read_json(os.path.join(job_dir, SUMMARY_FILE)), size


READ_METHODS = frozenset({"GET", "HEAD"})  # every other method changes state
OPEN_PATHS = frozenset({"/healthz"})  # answer without the token
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def _refuse(status: int, error: str) -> web.Response:
    resp = _json({"error": error}, status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = "Bearer"
    return resp


class Access:
    """The access rules of every route (the module docstring): `middleware` applies them, `bind` tells them
    where the API listens."""

    def __init__(self, token: str | None):
        self._token = token.encode() if token else None
        self._hosts: frozenset[str] | None = None  # the Host values that name the listener; None: any
        self._name = ""  # the listener as the refusal names it

    def bind(self, host: str | None, port: int) -> None:
        """The API listens on host:port (host None: a unix socket)."""
        if host is None or not is_loopback(host):
            self._hosts = None  # a unix socket, or beyond loopback (the token guards it)
            return
        own = f"[{host}]" if ":" in host else host
        names = {*LOOPBACK_NAMES, own}
        self._hosts = frozenset({f"{n}:{port}" for n in names} | (names if port == 80 else set()))
        self._name = f"{own}:{port}"

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        refusal = self.refusal(request)
        return refusal if refusal is not None else await handler(request)

    def refusal(self, request: web.Request) -> web.Response | None:
        """Why `request` may not go on (a response to send instead), or None."""
        host = (request.host or "").lower()
        if self._hosts is not None and host not in self._hosts:
            return _refuse(403, f"Host {request.host!r} does not name this daemon; call it as {self._name}")
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{host}":
            return _refuse(403, f"requests from another origin ({origin}) are refused")
        changes = request.method not in READ_METHODS
        if changes and self._token is None:
            return _refuse(403, "this call changes state and needs the daemon's token: start the daemon with "
                                "--token (or BATCH_DAEMON_TOKEN) and send Authorization: Bearer TOKEN")
        if (changes or (self._token is not None and request.path not in OPEN_PATHS)) and not self._bearer(request):
            return _refuse(401, "missing or wrong bearer token")
        if changes and request.content_type != "application/json":
            return _refuse(415, "a call that changes state must send Content-Type: application/json")
        return None

    def _bearer(self, request: web.Request) -> bool:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return (self._token is not None and scheme.lower() == "bearer"
                and hmac.compare_digest(given.strip().encode(), self._token))


def _clear_stale_socket(path: str) -> None:
    """A socket left at `path` by a daemon that died (the spool's lock says none runs now) goes."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Api:
    def __init__(self, service: Service, token: str | None):
        self.service = service
        self.access = Access(token)
        self._runner: web.AppRunner | None = None
        self._described: dict[str, tuple[int, dict[str, Any]]] = {}
        self.pages = Pages(service)  # the status page for people (daemon.page)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.access.middleware])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/jobs", self.list_jobs)
        app.router.add_get("/jobs/{name}", self.get_job)
        app.router.add_post("/jobs/{name}/cancel", self.cancel_job)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/", self.pages.overview)
        app.router.add_get("/job/{name}", self.pages.job)
        return app

    async def start(self, host: str, port: int, *, unix: str | None = None) -> str:
        """Listen on HOST:PORT (port 0: any free one), or on the unix socket `unix`; the URL it answers on."""
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=HTTP_STOP_S)
        await runner.setup()
        try:
            if unix is not None:
                _clear_stale_socket(unix)
                await web.UnixSite(runner, unix).start()
                os.chmod(unix, 0o600)  # its owner's only, whatever the umask
            else:
                await web.TCPSite(runner, host, port).start()
        except OSError as err:
            await runner.cleanup()
            raise OSError(f"cannot listen on {unix or f'{host}:{port}'}: {err.strerror or err}") from None
        self._runner = runner
        if unix is not None:
            self.access.bind(None, 0)
            return f"unix:{unix}"
        bound = runner.addresses[0]
        self.access.bind(host, bound[1])
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        return f"http://{shown}:{bound[1]}"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- the endpoints --------------------------------------------------------------------------

    def _job(self, request: web.Request) -> Job:
        job = self.service.jobs.get(request.match_info["name"])
        if job is None:
            raise web.HTTPNotFound(text=orjson.dumps({"error": f"no job {request.match_info['name']!r}"}).decode(),
                                   content_type="application/json")
        return job

    async def healthz(self, request: web.Request) -> web.Response:
        d = self.service
        counts = Counter(j.state.value for j in d.jobs.values())
        return _json({"status": "stopping" if d.should_exit else "ok", "jobs": dict(counts),
                      "uptime_s": round(time.time() - d.started_at, 1)})

    async def list_jobs(self, request: web.Request) -> web.Response:
        jobs = sorted(self.service.jobs.values(), key=lambda j: (j.claimed_at, j.name))
        return _json({"jobs": [{"name": j.name, "state": j.state.value, "reason": j.reason, "source": j.source,
                                "claimed_at": j.claimed_at} for j in jobs]})

    async def get_job(self, request: web.Request) -> web.Response:
        return _json(await self.describe(self._job(request)))

    async def cancel_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job.state in FINAL:
            return _json({"error": f"job {job.name} is {job.state.value}: nothing to cancel"}, 409)
        return _json(await self.service.cancel(job), 202)

    async def metrics(self, request: web.Request) -> web.Response:
        body = self.service.metrics.render(await self.metrics_view())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    # -- what they show -------------------------------------------------------------------------

    async def describe(self, job: Job) -> dict[str, Any]:
        """State, progress, batches in flight, spend and ETA of one job."""
        st, summary, result_bytes = await asyncio.to_thread(_read_job_files, job.dir)
        req, attempts = summary.get("requests", {}), summary.get("attempts", {})
        live = job.engine.stats if job.engine is not None else None
        rejects = getattr(job.engine, "rejects", None)
        st_req = st.get("requests", {}) if st else {}
        accepted = st_req.get("accepted")
        if accepted is None:
            accepted = live.accepted if live else req.get("accepted")
        return {
            "name": job.name, "state": job.state.value, "reason": job.reason, "source": job.source,
            "claimed_at": job.claimed_at,
            "progress": {
                "read": live.lines_read if live else req.get("lines_read", 0),
                "submitted": attempts.get("requests_sent", 0) + (live.submitted if live else 0),
                "finished": st_req.get("finished", req.get("finished", 0)),
                "accepted": accepted,
                "rejected": rejects.count if rejects is not None else req.get("rejected", 0),
                "waiting_retry": st_req.get("waiting_retry", 0),
            },
            "batches_in_flight": len(st.get("batches_in_flight", [])) if st else 0,
            "results": st.get("results") if st else summary.get("results", {}),
            "tokens": st.get("tokens") if st else summary.get("tokens", {}),
            "spend_usd": st.get("cost_usd", 0.0) if st else summary.get("cost_usd", 0.0),
            "eta_s": st.get("eta_s") if st and job.state is JobState.RUNNING else None,
            "result_bytes": result_bytes,
        }

    async def described(self, job: Job) -> dict[str, Any]:
        """`describe`, cached while the job does not run (nothing changes until its state does)."""
        cached = self._described.get(job.name)
        if job.engine is None and cached is not None and cached[0] == job.version:
            return cached[1]
        version = job.version
        doc = await self.describe(job)
        self._described[job.name] = (version, doc)
        return doc

    async def metrics_view(self) -> MetricsView:
        d = self.service
        by_state = {s.value: 0 for s in JobState}
        requests: Counter = Counter()
        tokens: Counter = Counter()
        in_flight = result_bytes = 0
        spend = 0.0
        for job in list(d.jobs.values()):
            by_state[job.state.value] += 1
            doc = await self.described(job)
            for k, v in doc["progress"].items():
                requests[k] += v or 0
            for k, v in (doc["results"] or {}).items():
                requests[k] += v or 0
            tokens.update({k: v or 0 for k, v in (doc["tokens"] or {}).items()})
            in_flight += doc["batches_in_flight"]
            result_bytes += doc["result_bytes"]
            spend += doc["spend_usd"] or 0.0
        live = Totals(Counter(d.totals.http_calls), Counter(d.totals.http_retries), d.totals.download_bytes,
                      Counter(d.totals.polls), d.totals.key_checks)
        for job in d.jobs.values():
            if job.engine is not None:
                live.add_engine(job.engine)
        return MetricsView(
            start_time_s=d.started_at, jobs_by_state=by_state, requests_by_state=dict(requests),
            batches_in_flight=in_flight, slots_capacity=d.slots.capacity, slots_in_use=d.slots.in_use,
            slots_waiting=d.slots.waiting, http_calls=dict(live.http_calls), http_retries=dict(live.http_retries),
            http_download_bytes=live.download_bytes, poll_calls=dict(live.polls), result_bytes=result_bytes,
            tokens=dict(tokens), spend_usd=spend, key_checks=dict(live.key_checks),
            notifications=dict(d.hooks.counts))
