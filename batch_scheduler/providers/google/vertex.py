"""Vertex AI batch prediction (`--provider vertex`), for Gemini models and Claude (PROVIDERS.md §2).

    create:  upload STAGING/{tag}/input.jsonl to Cloud Storage  ->  POST {J} {displayName, model, inputConfig,
             outputConfig: STAGING/{tag}/output/, labels}
    poll:    GET {J}/{id}; GET {J}?filter=labels.batch_scheduler:*  (lost creates, by tag)
    results: every *.jsonl under the job's outputInfo.gcsOutputDirectory, read once the job has ended
    cleanup: STAGING/{tag}/ removed once the batch is collected (unless --keep-staged)

where J = {base}/v1/projects/{project}/locations/{location}/batchPredictionJobs, base the regional host
`https://{location}-aiplatform.googleapis.com` (`aiplatform.googleapis.com` for `global`) unless --base-url /
GOOGLE_VERTEX_BASE_URL names another. Auth is an OAuth token by Application Default Credentials (`gcp_auth`:
a key or login file, gcloud's login, or the metadata server), sent to that host and to Cloud Storage's (`gcs`)
only. One model per job: each line's lane is its model, so a job may mix models and no batch does (lines and
results: `vertex_lines`).

The upload is safe to repeat (its name is the chunk's tag); the create is not (`idempotent=False`): the tag
is the job's display name and its `batch_scheduler` label, read back by `tag_of`, so a lost create is
adopted by tag. Results exported while a job runs are not read until it has ended, then every file
once: each request's line is collected once. States: SUCCEEDED, PARTIALLY_SUCCEEDED, CANCELLED and
EXPIRED end the job (what its output holds is collected; the requests it leaves out go again), FAILED
ends it the same way when it exported results, else fails it as a whole; QUEUED, PENDING, RUNNING,
PAUSED, UPDATING, CANCELLING and anything unknown are in progress. Claude runs at most
CLAUDE_JOBS_AT_ONCE jobs per project (Vertex's default quota): admission holds a queue of that many jobs
for Claude batches (`SPEC.jobs_queue`), and a 429 at a Claude create is that queue being full (QueueFull:
no attempt used; the batch goes again when one of ours ends).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import MB, JobsQueue, ProviderSpec, Settings
from batch_scheduler.providers.answers import BATCH_ID, document, items, mapping, shown, text
from batch_scheduler.providers.base import BatchInfo, BatchState, Provider, parse_time
from batch_scheduler.providers.google.gcp_auth import TokenSource
from batch_scheduler.providers.google.gcs import DEFAULT_STORAGE_URL, Storage, split_gs
from batch_scheduler.providers.google.vertex_lines import (
    check_line,
    classify_line,
    estimate_view,
    is_claude,
    lane_of_line,
    upload_line,
)

log = logging.getLogger("batch_scheduler.providers")

DEFAULT_LOCATION = "us-central1"
LABEL = "batch_scheduler"  # the job label that carries the create tag
CLAUDE_JOBS_AT_ONCE = 4  # Vertex's default concurrent Claude batch jobs per project
LIST_PAGE = 100
LIST_PAGES_MAX = 100
_ENDED = {"SUCCEEDED", "PARTIALLY_SUCCEEDED", "CANCELLED", "EXPIRED"}
_RUNNING = {"QUEUED", "PENDING", "RUNNING", "PAUSED", "UPDATING", "CANCELLING"}
_PROJECT = re.compile(r"[a-z0-9][a-z0-9.:-]{0,62}")
_LOCATION = re.compile(r"[a-z0-9-]{1,40}")
COUNTS = ("successfulCount", "failedCount", "incompleteCount")

SPEC = ProviderSpec(
    name="vertex", max_requests=200_000, max_bytes=1000 * MB, default_requests=10_000, default_bytes=200 * MB,
    key_env=("GOOGLE_APPLICATION_CREDENTIALS",), base_url_env=("GOOGLE_VERTEX_BASE_URL",),
    default_base_url="https://aiplatform.googleapis.com", default_auth="bearer",
    own_credentials=True,  # Application Default Credentials: the file, gcloud's login, or the metadata server
    model_env=("VERTEX_MODEL", "CLAUDE_MODEL", "ANTHROPIC_MODEL"),
    # no documented queue quota (a shared pool): admission learns one only if Vertex answers that it is full
    queue_unit="requests", queue_start=1_000_000, queue_max=10_000_000,
    jobs_queue=JobsQueue("claude jobs", r"(^|/)anthropic/|(^|/)claude[^/]*$", CLAUDE_JOBS_AT_ONCE))  # as is_claude


def int64(value: Any, where: str, what: str) -> int:
    """A Google int64 count: a number or a string of digits (null and absent are 0)."""
    if value is None:
        return 0
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise errors.BadAnswer(f"{what}: {where} is {shown(value)}, expected a whole number >= 0")


def _place(settings: Settings, project_from_file: str | None) -> tuple[str, str]:
    project = settings.project or project_from_file
    if not project:
        raise errors.UsageError("--provider vertex: no project: give --project or set GOOGLE_CLOUD_PROJECT")
    location = settings.location or DEFAULT_LOCATION
    if not _PROJECT.fullmatch(project):
        raise errors.UsageError(f"--project {project!r}: not a Google Cloud project id")
    if not _LOCATION.fullmatch(location):
        raise errors.UsageError(f"--location {location!r}: not a Google Cloud location (e.g. us-central1, global)")
    return project, location


@dataclass
class _Where:
    """Where a provider's calls go: its credentials, the jobs' URL, the staging bucket and prefix."""

    tokens: TokenSource
    project: str
    location: str
    url: str  # .../batchPredictionJobs
    storage: Storage
    bucket: str
    prefix: str

    @classmethod
    def of(cls, settings: Settings, http: HttpClient) -> _Where:
        """UsageError naming what to set when something is missing or unreadable. Blocking: finding the
        credentials may ask the metadata server."""
        if not settings.staging:
            raise errors.UsageError("--provider vertex needs --staging gs://BUCKET/PREFIX: where its input and "
                                    "output files go in Cloud Storage")
        bucket, prefix = split_gs(settings.staging, "--staging")
        tokens = TokenSource.find(settings.api_key)
        project, location = _place(settings, tokens.project)
        base = settings.base_url
        if base == SPEC.default_base_url and location != "global":
            base = f"https://{location}-aiplatform.googleapis.com"
        url = f"{base}/v1/projects/{project}/locations/{location}/batchPredictionJobs"
        storage = Storage(http, settings.storage_url or DEFAULT_STORAGE_URL, tokens.token)
        return cls(tokens, project, location, url, storage, bucket, prefix)


class VertexProvider(Provider):
    name = "vertex"
    spec = SPEC
    body_field = "body"  # where the kept lines hold the request (vertex_lines: the uploaded lines say `request`)
    estimate_view = staticmethod(estimate_view)  # a Gemini body read as Messages-like params

    def __init__(self, settings: Settings, http: HttpClient):
        """Nothing is read or checked here (a job's views make a provider to read its lines); the first
        call, `preflight` in a run, sets up where the jobs and files go (`_where`)."""
        self.settings = settings
        self.http = http
        self._place: _Where | None = None
        self._placing = asyncio.Lock()

    def _where(self) -> _Where:
        if self._place is None:  # every call awaits `_ready` first; this only keeps the type exact
            self._place = _Where.of(self.settings, self.http)
        return self._place

    async def _ready(self) -> None:
        """Where the calls go, found once, off the event loop (the metadata server may be asked)."""
        if self._place is None:
            async with self._placing:
                if self._place is None:
                    self._place = await asyncio.to_thread(_Where.of, self.settings, self.http)

    @staticmethod
    def headers(settings: Settings) -> dict[str, str]:
        return dict(settings.headers)  # the token goes on each call (it is refreshed)

    async def _auth(self, json_body: bool = False) -> dict[str, str]:
        headers = {"authorization": f"Bearer {await self._where().tokens.token()}"}
        if json_body:
            headers["content-type"] = "application/json"
        return headers

    # -- input lines ----------------------------------------------------------------------------

    def check_request(self, obj: dict, raw: bytes) -> tuple[str | None, bytes | None]:
        line, problem = check_line(obj, self.settings.model)
        return problem, line

    def lane_of(self, obj: dict) -> str:
        return lane_of_line(obj, self.settings.model)

    def body_overhead(self, line_bytes: int) -> int:
        return 1  # the newline

    # -- before anything is sent ----------------------------------------------------------------

    async def preflight(self) -> None:
        """The token, the staging bucket and the project's jobs, each checked once before the first upload."""
        await self._ready()
        await self.http.retrying("token", self._where().tokens.token)
        try:
            await self._where().storage.bucket(self._where().bucket)
        except (errors.NotFound, errors.AuthRefused) as err:
            raise errors.UsageError(f"--staging gs://{self._where().bucket}: the bucket cannot be used with these credentials "
                                    f"({self.http.redact(str(err))}); create it, grant the credentials Storage "
                                    f"Object Admin on it, or choose another --staging") from None
        try:
            await self.http.call("GET", f"{self._where().url}?pageSize=1", "list", headers=await self._auth())
        except (errors.NotFound, errors.AuthRefused, errors.RequestRejected) as err:
            raise errors.UsageError(f"project {self._where().project} in {self._where().location}: Vertex AI cannot be reached "
                                    f"({self.http.redact(str(err))}); check --project (GOOGLE_CLOUD_PROJECT), "
                                    f"--location (GOOGLE_CLOUD_LOCATION) and that the Vertex AI API is enabled "
                                    f"for the credentials' project") from None

    # -- calls ----------------------------------------------------------------------------------

    def _object(self, tag: str, name: str) -> str:
        return "/".join(p for p in (self._where().prefix, tag, name) if p)

    async def create(self, lines: list[bytes], *, tag: str) -> BatchInfo:
        await self._ready()
        models, body_lines = zip(*(upload_line(line) for line in lines), strict=True)
        model = models[0]
        if any(m != model for m in models):
            raise errors.UsageError(f"chunk {tag}: lines of several models in one batch")
        return await self._create(model, list(body_lines), tag, is_claude(model))

    async def _create(self, model: str, body_lines: list[bytes], tag: str, claude: bool) -> BatchInfo:
        source = self._object(tag, "input.jsonl")
        await self._where().storage.upload(self._where().bucket, source, b"\n".join(body_lines) + b"\n")
        body = orjson.dumps({
            "displayName": tag, "model": model, "labels": {LABEL: tag},
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": [f"gs://{self._where().bucket}/{source}"]}},
            "outputConfig": {"predictionsFormat": "jsonl",
                             "gcsDestination": {"outputUriPrefix": f"gs://{self._where().bucket}/{self._object(tag, 'output')}"}},
        })
        try:
            data = await self.http.call("POST", self._where().url, "create", body=body, idempotent=False,
                                        headers=await self._auth(json_body=True), full_at_429=claude)
        except (errors.RequestRejected, errors.SpendLimited, errors.QueueFull) as err:
            await self._where().storage.delete(self._where().bucket, source)  # refused outright: surely no job reads the file
            if isinstance(err, errors.QueueFull) and claude:
                raise err.about_jobs() from None  # the project's Claude jobs
            raise
        return self._info(document(data, "create answer"), "create answer")

    async def get(self, batch_id: str) -> BatchInfo:
        await self._ready()
        data = await self.http.call("GET", f"{self._where().url}/{batch_id}", "retrieve", headers=await self._auth())
        info = self._info(document(data, f"batch {batch_id}: retrieve answer"), "retrieve answer", batch_id)
        if info.id != batch_id:
            raise errors.BadAnswer(f"batch {batch_id}: retrieve answer: name ends in {shown(info.id)}")
        return info

    async def recent(self, since: float) -> AsyncIterator[BatchInfo]:
        """The project's jobs labelled by this program and created at or after `since` (Vertex promises no
        order: every page is read, at most LIST_PAGES_MAX)."""
        await self._ready()
        token: str | None = None
        for page_no in range(1, LIST_PAGES_MAX + 1):
            what = f"list answer (page {page_no})"
            query = {"pageSize": LIST_PAGE, "filter": f"labels.{LABEL}:*", **({"pageToken": token} if token else {})}
            page = document(await self.http.call("GET", f"{self._where().url}?{urlencode(query)}", "list",
                                                 headers=await self._auth()), what)
            for i, item in enumerate(items(page, "batchPredictionJobs", what)):
                try:
                    if not isinstance(item, dict):
                        raise errors.BadAnswer(f"{shown(item)}, expected an object")
                    info = self._info(item, what)
                except errors.BadAnswer as err:
                    log.warning("%s: batchPredictionJobs[%d] skipped: %s", what, i, err)
                    continue
                if info.created_at is None or info.created_at >= since:
                    yield info
            following = page.get("nextPageToken")
            if not following or not isinstance(following, str) or following == token:
                return
            token = following
        log.warning("list batches: stopped after %d pages", LIST_PAGES_MAX)

    async def cancel(self, batch_id: str) -> BatchInfo:
        await self._ready()
        await self.http.call("POST", f"{self._where().url}/{batch_id}:cancel", "cancel", body=b"{}",
                             headers=await self._auth(json_body=True))
        return await self.get(batch_id)

    async def result_blocks(self, info: BatchInfo) -> AsyncIterator[list[bytes]]:
        """Every prediction file the ended job wrote, each line once; none for a job that wrote nothing."""
        await self._ready()
        for directory in info.results:
            bucket, prefix = split_gs(directory, f"batch {info.id}: outputInfo.gcsOutputDirectory")
            mine = self._object(self.tag_of(info) or "", "output")
            if bucket != self._where().bucket or not prefix.startswith(mine):
                raise errors.BadAnswer(f"batch {info.id}: output directory {directory!r} is not under "
                                       f"gs://{self._where().bucket}/{mine}")
            for name in await self._where().storage.names(bucket, prefix + "/"):
                if name.endswith(".jsonl"):
                    async for block in self._where().storage.lines(bucket, name):
                        lines = [line for line in block if line.strip()]
                        if lines:
                            yield lines

    async def release(self, info: BatchInfo) -> None:
        """The batch's results are durable: its staged files go (unless --keep-staged)."""
        await self._ready()
        tag = self.tag_of(info)
        if self.settings.keep_staged or not tag:
            return
        try:
            names = await self._where().storage.names(self._where().bucket, self._object(tag, "") + "/")
        except errors.ProviderError as err:
            log.warning("staged files of %s not removed (%s): gs://%s/%s", info.id, err, self._where().bucket,
                        self._object(tag, ""))
            return
        for name in names:
            await self._where().storage.delete(self._where().bucket, name)

    async def release_job(self, job_tag: str) -> None:
        """The job is done: every file still staged under its tag goes (unless --keep-staged)."""
        if self.settings.keep_staged:
            return
        await self._ready()
        where = self._where()
        try:
            names = await where.storage.names(where.bucket, self._object(job_tag, ""))
            for name in names:
                await where.storage.delete(where.bucket, name)
        except errors.ProviderError as err:
            log.warning("staged files of this job not all removed (%s): gs://%s/%s*", err, where.bucket,
                        self._object(job_tag, ""))

    classify = staticmethod(classify_line)

    @staticmethod
    def tag_of(info: BatchInfo) -> str | None:
        """The create tag, from the job's label (None: not created by this program)."""
        labels = info.raw.get("labels")
        tag = labels.get(LABEL) if isinstance(labels, dict) else None
        return tag if isinstance(tag, str) and tag == info.raw.get("displayName") else None

    def _info(self, doc: dict, what: str = "list answer", asked: str | None = None) -> BatchInfo:
        """A BatchPredictionJob, each field it reads checked (answers.BadAnswer naming the job and the field)."""
        where = f"batch {asked}: {what}" if asked else what
        name = text(doc, "name", where, required=True)
        assert name is not None
        bid = name.rsplit("/", 1)[-1]
        if "/batchPredictionJobs/" not in name or not BATCH_ID.fullmatch(bid):
            raise errors.BadAnswer(f"{where}: name is {shown(name)}, expected .../batchPredictionJobs/ID")
        what = f"batch {bid}: {what}"
        state = (text(doc, "state", what) or "JOB_STATE_UNSPECIFIED").removeprefix("JOB_STATE_")
        stats = mapping(doc, "completionStats", what)
        counts = {k: int64(stats.get(k), f"completionStats.{k}", what) for k in COUNTS if k in stats}
        directory = text(mapping(doc, "outputInfo", what), "gcsOutputDirectory", what)
        error = mapping(doc, "error", what).get("message")
        if state in _ENDED or (state == "FAILED" and directory and counts.get("successfulCount")):
            kind = BatchState.ENDED
        elif state == "FAILED":
            kind = BatchState.FAILED
        else:
            if state not in _RUNNING:
                log.info("%s: state %s read as still running", what, shown(state))
            kind = BatchState.IN_PROGRESS
        # completionStats count what is done so far: the job's size only once it ended (a running job's partial
        # count is no size: a lost create's batch found mid-run must not look like another chunk's)
        total = sum(counts.values()) if counts and kind is not BatchState.IN_PROGRESS else None
        return BatchInfo(
            id=bid, state=kind, created_at=parse_time(doc.get("createTime")), ended_at=parse_time(doc.get("endTime")),
            total=total, counts=counts, results=[directory] if directory else [],
            error=(str(error) if error else f"the job ended {state}") if kind is BatchState.FAILED else None,
            raw=doc)
