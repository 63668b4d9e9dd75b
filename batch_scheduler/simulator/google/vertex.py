"""Vertex AI batch prediction (PROVIDERS.md §2), for Gemini and Claude models, over the simulated Cloud Storage.

    POST   {v}/projects/{p}/locations/{l}/batchPredictionJobs            create (input read from gcs.py)
    GET    {v}/projects/{p}/locations/{l}/batchPredictionJobs            list: filter, pageSize, pageToken
    GET    {v}/projects/{p}/locations/{l}/batchPredictionJobs/{id}       get
    POST   {v}/projects/{p}/locations/{l}/batchPredictionJobs/{id}:cancel
    DELETE {v}/projects/{p}/locations/{l}/batchPredictionJobs/{id}       an Operation, done

for {v} in /v1 and /v1beta1 (google-genai's default for Vertex). A job's life over its drawn duration D:
QUEUED for the first 5%, PENDING until 10%, RUNNING (PAUSED from 40% to 60% for `vertex_paused_rate` of
jobs) until D, then SUCCEEDED, or PARTIALLY_SUCCEEDED when some lines failed, CANCELLING -> CANCELLED, or
EXPIRED with no output at all (`vertex_expired_rate`: it waited in the queue too long). Results are
exported while the job runs: once half of it is processed a first file holds what is done, and the rest
goes into a second file when it ends (a line per request, in no order, requests `missing_rate` leaves out
not at all). Each line echoes its input line with `response` and `status` added. Claude jobs running at
once per project are capped (`vertex_claude_jobs`, 4 as Vertex's default quota): past it a create is a 429.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from aiohttp import web

from batch_scheduler.simulator.batches import Requests, new_batch
from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.counting import json_tokens
from batch_scheduler.simulator.google.cloud import Handler
from batch_scheduler.simulator.google.gcs import CloudStorage, Files, StorageServer
from batch_scheduler.simulator.responses import Rejected, json_response, parse_json
from batch_scheduler.simulator.store import Batch, Outcome, output_tokens, rfc3339

JOBS = "/projects/{project}/locations/{location}/batchPredictionJobs"
VERSIONS = ("/v1", "/v1beta1")
QUEUED, PENDING, PAUSE_FROM, PAUSE_TO, EXPORT_AT = 0.05, 0.1, 0.4, 0.6, 0.5
CLAUDE_VERSION = "vertex-2023-10-16"
DEFAULT_MAX_TOKENS = 8192
_STATUS_TEXT = {
    Outcome.API_ERROR: "500 INTERNAL: Internal error encountered.",
    Outcome.OVERLOADED: "429 RESOURCE_EXHAUSTED: Resource exhausted. Please try again later.",
    Outcome.EXPIRED: "504 DEADLINE_EXCEEDED: The request timed out.",
    Outcome.REQUEST_TIMEOUT: "504 DEADLINE_EXCEEDED: The request timed out.",
}


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _gs(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("gs://") or len(value) < 6:
        raise Rejected("invalid_request_error", f"{where}: expected a gs:// URI")
    return value


def _line(no: int, raw: bytes, claude: bool, reqs: Requests, kept: list[dict]) -> None:
    """One input line as a request: its problem (if any) becomes its failed status, as Vertex does."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        obj = {}
    request = obj.get("request")
    given = obj.get("custom_id")
    cid = given if isinstance(given, str) else f"line-{no}"
    reqs.custom_ids.append(cid)
    kept.append(obj)
    problem = None
    if not isinstance(request, dict):
        problem = "request: a JSON object is required"
    elif claude and request.get("anthropic_version") != CLAUDE_VERSION:
        problem = f"anthropic_version: must be {CLAUDE_VERSION}"
    elif claude and not (isinstance(request.get("messages"), list) and isinstance(request.get("max_tokens"), int)):
        problem = "messages and max_tokens are required"
    elif not claude and not isinstance(request.get("contents"), list):
        problem = "contents: a list is required"
    if problem:
        reqs.add_invalid(f"400 INVALID_ARGUMENT: {problem}")
        return
    assert isinstance(request, dict)
    reqs.models.append("")
    config = request.get("generationConfig")
    limit = request.get("max_tokens") if claude else (config or {}).get("maxOutputTokens") if isinstance(config, dict) else None
    reqs.max_tokens.append(limit if isinstance(limit, int) and limit > 0 else DEFAULT_MAX_TOKENS)
    reqs.in_tokens.append(max(1, json_tokens(request.get("messages") if claude else request.get("contents"))))


class VertexApi:
    def __init__(self, ctx: SimContext, gcs: CloudStorage):
        self.ctx = ctx
        self.gcs = gcs
        self._pending: list[tuple[str, str, bytes]] = []  # output files exported, written before the answer

    def files(self) -> Files:
        """The simulator's own Cloud Storage, or another server's (`vertex_gcs_endpoint`)."""
        endpoint = self.ctx.config.vertex_gcs_endpoint
        return StorageServer(endpoint) if endpoint else self.gcs

    async def _flush(self) -> None:
        """Write the files a job exported, before the answer that shows them (one failed write stays queued)."""
        files = self.files()
        while self._pending:
            bucket, path, data = self._pending[0]
            await files.put_object(bucket, path, data)
            self._pending.pop(0)

    def routes(self) -> list[tuple[str, str, str, Handler, bool]]:
        out: list[tuple[str, str, str, Handler, bool]] = []
        for v in VERSIONS:
            out += [("POST", v + JOBS, "vertex.create", self.create, True),
                    ("GET", v + JOBS, "vertex.list", self.list, False),
                    ("POST", v + JOBS + "/{id}:cancel", "vertex.cancel", self.cancel, False),
                    ("GET", v + JOBS + "/{id}", "vertex.get", self.get, False),
                    ("DELETE", v + JOBS + "/{id}", "vertex.delete", self.delete, False)]
        return out

    # -- create ---------------------------------------------------------------------------------------

    def _project(self, request: web.Request) -> tuple[str, str]:
        project, location = request.match_info["project"], request.match_info["location"]
        known = self.ctx.config.vertex_projects
        if known is not None and project not in known:
            raise Rejected("permission_error", f"Permission denied on resource project {project}.")
        return project, location

    def _check_create(self, doc: Any) -> tuple[str, str, list[str], str, dict]:
        if not isinstance(doc, dict):
            raise Rejected("invalid_request_error", "expected a JSON object")
        name, model = doc.get("displayName"), doc.get("model")
        if not isinstance(name, str) or not name:
            raise Rejected("invalid_request_error", "displayName is required")
        if not isinstance(model, str) or not model.startswith(("publishers/google/models/",
                                                                "publishers/anthropic/models/")):
            raise Rejected("invalid_request_error", f"model: unsupported model {model!r}")
        source, dest = _object(doc.get("inputConfig")), _object(doc.get("outputConfig"))
        if source.get("instancesFormat") != "jsonl" or dest.get("predictionsFormat") != "jsonl":
            raise Rejected("invalid_request_error", "instancesFormat and predictionsFormat must be jsonl here")
        uris = _object(source.get("gcsSource")).get("uris")
        if not isinstance(uris, list) or not uris:
            raise Rejected("invalid_request_error", "inputConfig.gcsSource.uris is required")
        prefix = _gs(_object(dest.get("gcsDestination")).get("outputUriPrefix"), "outputConfig.gcsDestination")
        labels = doc.get("labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) and len(v) <= 63
                                                   for k, v in labels.items()):
            raise Rejected("invalid_request_error", "labels: string keys and values of at most 63 characters")
        return name, model, [_gs(u, "inputConfig.gcsSource.uris") for u in uris], prefix.rstrip("/"), labels

    def _claude_room(self, project: str) -> None:
        """A 429 when the project's Claude jobs running are at the cap; else the peak counts this one."""
        now, stats = self.ctx.now(), self.ctx.stats
        running = sum(1 for b in self.ctx.store.batches.values() if b.kind == "vertex" and not b.ended(now)
                      and b.extra["project"] == project and b.extra["claude"])
        if running >= self.ctx.config.vertex_claude_jobs:
            raise Rejected("rate_limit_error", f"Quota exceeded for aiplatform.googleapis.com/"
                           f"concurrent_anthropic_batch_prediction_jobs: {running} jobs are running in project "
                           f"{project}.", status=429)
        stats["peak_vertex_claude_jobs"] = max(stats.get("peak_vertex_claude_jobs", 0), running + 1)

    async def create(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        project, location = self._project(request)
        name, model, uris, prefix, labels = self._check_create(parse_json(await request.read()))
        claude = model.startswith("publishers/anthropic/")
        if claude:
            self._claude_room(project)
        reqs, kept = Requests(), list[dict]()
        for uri in uris:
            data = await self.files().read_object(uri)
            if data is None:
                raise Rejected("invalid_request_error", f"The input file {uri} does not exist.")
            for raw in data.split(b"\n"):
                if raw.strip():
                    _line(len(kept) + 1, raw, claude, reqs, kept)
        now = ctx.now()
        batch = new_batch(ctx, "vertex", "", reqs, now, project=project, location=location, model=model,
                          display_name=name, labels=labels, uris=uris, output_prefix=prefix, claude=claude, lines=kept,
                          expired=ctx.rng.random() < ctx.config.vertex_expired_rate,
                          paused=ctx.rng.random() < ctx.config.vertex_paused_rate, exported=None,
                          output_dir=f"{prefix}/prediction-model-{rfc3339(ctx.wall_time())}")
        ctx.rng.randrange(10 ** 18, 10 ** 19)  # drawn as before, so that the seeded draws after it do not change
        # unique across simulators as Vertex's ids are: two seeded simulators in one process (a test suite's)
        # would give the same ids, and the process's claims would take one job's batch for another's
        batch.id = str(10 ** 18 + secrets.randbelow(9 * 10 ** 18))
        if batch.extra["expired"]:
            batch.outcomes[:] = bytes([Outcome.EXPIRED]) * batch.n  # nothing runs, nothing is billed
        ctx.add_batch(batch)
        return json_response(self.doc(batch, fresh=True))

    # -- the other calls ------------------------------------------------------------------------------

    def find(self, request: web.Request, *, ghosts: bool = True) -> Batch:
        self._project(request)
        batch = self.ctx.store.get(request.match_info["id"], "vertex")
        if batch is None or batch.extra["project"] != request.match_info["project"] or (ghosts and self.ctx.ghost(batch)):
            raise Rejected("not_found_error", f"The BatchPredictionJob does not exist: {request.match_info['id']}")
        return batch

    async def get(self, request: web.Request) -> web.Response:
        self.ctx.stats["retrieves"] += 1
        doc = self.doc(self.find(request))
        await self._flush()
        return json_response(doc)

    async def list(self, request: web.Request) -> web.Response:
        self.ctx.stats["lists"] += 1
        project, _ = self._project(request)
        wanted = _filter(request.query.get("filter", ""))
        try:
            start = int(request.query.get("pageToken") or 0)
            size = max(1, min(1000, int(request.query.get("pageSize") or 100)))
        except ValueError:
            raise Rejected("invalid_request_error", "Invalid pageToken or pageSize") from None
        jobs = [b for b in reversed(self.ctx.store.batches.values())
                if b.kind == "vertex" and b.extra["project"] == project and wanted(b)]
        doc: dict[str, Any] = {"batchPredictionJobs": [self.doc(b) for b in jobs[start:start + size]]}
        if start + size < len(jobs):
            doc["nextPageToken"] = str(start + size)
        await self._flush()
        return json_response(doc)

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.find(request, ghosts=False)
        batch.cancel(self.ctx.now(), self.ctx.config.cancel_s)
        self.ctx.stats["cancels"] += 1
        return json_response({})

    async def delete(self, request: web.Request) -> web.Response:
        batch = self.find(request, ghosts=False)
        del self.ctx.store.batches[batch.id]
        self.ctx.stats["deletes"] += 1
        return json_response({"name": f"{self._name(batch)}/operations/{secrets.randbelow(10 ** 18)}", "done": True,
                              "metadata": {"@type": "type.googleapis.com/google.cloud.aiplatform.v1.DeleteOperationMetadata"},
                              "response": {"@type": "type.googleapis.com/google.protobuf.Empty"}})

    # -- the job as Vertex shows it -------------------------------------------------------------------

    @staticmethod
    def _name(batch: Batch) -> str:
        e = batch.extra
        return f"projects/{e['project']}/locations/{e['location']}/batchPredictionJobs/{batch.id}"

    def _state(self, batch: Batch, now: float) -> str:
        e = batch.extra
        share = (now - batch.created_at) / max(1e-9, batch.ends_at - batch.created_at)
        if batch.ended(now):
            if e["expired"]:
                return "EXPIRED"
            if batch.cancel_at is not None:
                return "CANCELLED"
            return "SUCCEEDED" if bytes(batch.outcomes).count(Outcome.SUCCEEDED) == batch.n else "PARTIALLY_SUCCEEDED"
        if batch.cancel_at is not None:
            return "CANCELLING"
        if share < QUEUED or e["expired"]:
            return "QUEUED"
        if share < PENDING:
            return "PENDING"
        if e["paused"] and PAUSE_FROM <= share < PAUSE_TO:
            return "PAUSED"
        return "RUNNING"

    def doc(self, batch: Batch, *, fresh: bool = False) -> dict[str, Any]:
        e, now = batch.extra, self.ctx.now()
        state = "PENDING" if fresh else self._state(batch, now)
        doc: dict[str, Any] = {
            "name": self._name(batch), "displayName": e["display_name"], "model": e["model"],
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": e["uris"]}},
            "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": e["output_prefix"]}},
            "labels": e["labels"], "state": f"JOB_STATE_{state}", "createTime": rfc3339(batch.created_wall),
            "updateTime": rfc3339(self.ctx.wall_time()),
        }
        if state in ("QUEUED", "PENDING"):
            return doc
        doc["startTime"] = rfc3339(batch.wall(batch.created_at + PENDING * (batch.ends_at - batch.created_at)))
        if state == "EXPIRED":
            doc.update(endTime=rfc3339(batch.wall(batch.ends_at)),
                       error={"code": 4, "message": "The job waited in the queue for more than 72 hours."})
            return doc
        done = batch.processed(now)
        self._export(batch, done, ended=batch.ended(now))
        ok = bytes(batch.outcomes[:done]).count(Outcome.SUCCEEDED)
        failed = done - ok - bytes(batch.outcomes[:done]).count(Outcome.CANCELED)
        doc["completionStats"] = {"successfulCount": str(ok), "failedCount": str(failed),
                                  "incompleteCount": str(batch.n - ok - failed)}
        if e["exported"] is not None:
            doc["outputInfo"] = {"gcsOutputDirectory": e["output_dir"]}
        if batch.ended(now):
            doc["endTime"] = rfc3339(batch.wall(batch.ends_at))
        return doc

    def _export(self, batch: Batch, done: int, *, ended: bool) -> None:
        """The first file once half is processed (what is done then), the second when the job ends."""
        e = batch.extra
        if e["exported"] is None and (ended or done >= EXPORT_AT * batch.n):
            e["exported"] = done
            self._write(batch, range(done), "predictions_00001.jsonl")
        if ended and not e.get("finished"):
            e["finished"] = True
            self._write(batch, range(e["exported"], batch.n), "predictions_00002.jsonl")

    def _write(self, batch: Batch, indexes: range, file: str) -> None:
        order = [i for i in indexes if i not in batch.missing and batch.outcomes[i] != Outcome.CANCELED]
        self.ctx.rng.shuffle(order)
        data = b"".join(orjson.dumps(self._result(batch, i)) + b"\n" for i in order)
        bucket, _, path = f"{batch.extra['output_dir']}/{file}".removeprefix("gs://").partition("/")
        self._pending.append((bucket, path, data))

    def _result(self, batch: Batch, i: int) -> dict[str, Any]:
        line = dict(batch.extra["lines"][i])
        outcome, cid = batch.outcomes[i], batch.custom_ids[i]
        if outcome == Outcome.INVALID:
            return {**line, "status": batch.invalid.get(i, "400 INVALID_ARGUMENT")}
        if outcome != Outcome.SUCCEEDED:
            return {**line, "status": _STATUS_TEXT.get(Outcome(outcome), "500 INTERNAL")}
        model = batch.extra["model"].rsplit("/", 1)[-1].split("@", 1)[0]
        out = output_tokens(cid, batch.max_tokens[i])
        answer = f"answer:{cid}"
        if batch.extra["claude"]:
            response: dict[str, Any] = {
                "id": f"msg_vrtx_{batch.id[-8:]}{i:06d}", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": batch.in_tokens[i], "output_tokens": out}}
        else:
            response = {"candidates": [{"content": {"role": "model", "parts": [{"text": answer}]},
                                        "finishReason": "STOP"}],
                        "usageMetadata": {"promptTokenCount": batch.in_tokens[i], "candidatesTokenCount": out,
                                          "totalTokenCount": batch.in_tokens[i] + out},
                        "modelVersion": model}
        return {**line, "response": response, "status": ""}


def _filter(text: str) -> Any:
    """`labels.K:*`, `labels.K="V"` and `display_name="V"` (one term): what a client finds its jobs by."""
    text = text.strip()
    if not text:
        return lambda b: True
    if text.startswith("labels.") and text.endswith(":*"):
        key = text[len("labels."):-2]
        return lambda b: key in b.extra["labels"]
    field, sep, value = text.partition("=")
    value = value.strip().strip('"')
    if sep and field.strip().startswith("labels."):
        key = field.strip()[len("labels."):]
        return lambda b: b.extra["labels"].get(key) == value
    if sep and field.strip() in ("display_name", "displayName"):
        return lambda b: b.extra["display_name"] == value
    raise Rejected("invalid_request_error", f"Unsupported filter: {text}")
