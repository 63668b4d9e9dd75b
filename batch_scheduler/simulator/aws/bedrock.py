"""AWS Bedrock batch inference (PROVIDERS §3): model invocation jobs over an S3 the simulator reads and writes.

    POST /model-invocation-job              create: {"jobArn"}; the same clientRequestToken answers the same job
    GET  /model-invocation-job/{id}         the job (the ARN or its 12-character id)
    GET  /model-invocation-jobs             newest first, `maxResults` and `nextToken`, `submitTimeAfter`
    POST /model-invocation-job/{id}/stop    Stopping, then Stopped

S3 is another server (`bedrock_s3_endpoint`: moto's in the tests), read and written path-style, signed
with botocore's signer as a fixed role (moto wants a signed call, and does not check it). Create reads the input file at once and answers as Bedrock does:
`ValidationException` under `bedrock_min_records` records or over `bedrock_max_records`, a
`ServiceQuotaExceededException` when the model has `bedrock_jobs_limit` jobs in progress. A job's life over
its drawn duration: Submitted, Validating (to 5%), Scheduled (to 10%), InProgress, then Completed, or
PartiallyCompleted when records were left unprocessed (expired or missing), Expired when none ran. Its
output file (`{out}/{jobId}/{input name}.out`) and `manifest.json.out` (its counts and tokens) are written
when it is first seen ended; faults: answers without their usage, lines lost from the output file. Errors are rest-json: the exception's name in `x-amzn-ErrorType`, the body `{"message"}`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from batch_scheduler.simulator.batches import Requests, new_batch
from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.counting import json_tokens
from batch_scheduler.simulator.responses import Rejected, json_response, parse_json
from batch_scheduler.simulator.store import Batch, Outcome, output_tokens

ACCOUNT = "123456789012"
JOB_NAME = re.compile(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}")
TOKEN = re.compile(r"[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}")
ROLE_ARN = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
S3_URI = re.compile(r"s3://([a-z0-9][-.a-z0-9]{1,61}[a-z0-9])(/[-!_*'().a-zA-Z0-9/]*)?")
VALIDATING, SCHEDULED = 0.05, 0.1  # shares of a job's duration
LIST_MAX = 1000
DEFAULT_MAX_TOKENS = 512


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(text: str | None) -> float:
    """A query's ISO 8601 time (or epoch seconds) as epoch seconds; 0 for none."""
    if not text:
        return 0.0
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise validation(f"submitTimeAfter {text!r} is not a time") from None


def validation(message: str) -> Rejected:
    return Rejected("ValidationException", message, status=400)


def _s3_parts(uri: Any, field: str) -> tuple[str, str]:
    m = S3_URI.fullmatch(uri) if isinstance(uri, str) else None
    if m is None:
        raise validation(f"1 validation error detected: Value at '{field}' failed to satisfy constraint: "
                         f"Member must satisfy regular expression pattern: s3://...")
    return m.group(1), (m.group(2) or "/").lstrip("/")


def _signed(method: str, url: str, body: bytes) -> dict[str, str]:
    """SigV4 headers for an S3 call as Bedrock's service role (moto refuses anonymous calls to a private
    bucket; it does not check the signature)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=url, data=body)
    S3SigV4Auth(Credentials("SIMULATORROLE", "simulator"), "s3", "us-east-1").add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() != "host"}


def _max_tokens(body: dict) -> int:
    config = body.get("inferenceConfig")
    for value in (body.get("max_tokens"), config.get("maxTokens") if isinstance(config, dict) else None,
                  body.get("max_gen_len")):
        if type(value) is int and value > 0:
            return value
    return DEFAULT_MAX_TOKENS


class BedrockApi:
    """Bedrock's control plane for model invocation jobs; the records live in S3."""

    def __init__(self, ctx: SimContext):
        self.ctx = ctx
        self.by_token: dict[str, str] = {}

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        return [
            ("POST", "/model-invocation-job", "bedrock.create", self.create, True),
            ("GET", "/model-invocation-job/{id:.+}/stop", "bedrock.stop.get", self.not_found, False),
            ("POST", "/model-invocation-job/{id:.+}/stop", "bedrock.stop", self.stop, False),
            ("GET", "/model-invocation-job/{id:.+}", "bedrock.get", self.get, False),
            ("GET", "/model-invocation-jobs", "bedrock.list", self.list, False),
        ]

    # -- S3 ---------------------------------------------------------------------------------------

    def _s3_url(self, bucket: str, key: str) -> str:
        endpoint = self.ctx.config.bedrock_s3_endpoint
        if not endpoint:
            raise validation("the simulator has no S3 (set bedrock_s3_endpoint)")
        return f"{endpoint.rstrip('/')}/{bucket}/{key}"

    async def _s3(self, method: str, bucket: str, key: str, body: bytes | None = None) -> bytes | None:
        """An object's bytes (GET; None when absent), or a PUT."""
        url = self._s3_url(bucket, key)
        async with aiohttp.ClientSession() as session, session.request(
                method, url, data=body, headers=_signed(method, url, body or b"")) as resp:
            data = await resp.read()
            if method == "GET" and resp.status == 404:
                return None
            if resp.status >= 300:
                raise Rejected("InternalServerException", f"S3 {method} {bucket}/{key}: HTTP {resp.status}", status=500)
            return data

    # -- create ------------------------------------------------------------------------------------

    def _check_create(self, doc: Any) -> tuple[str, str, str, str, str]:
        """(jobName, modelId, input bucket, input key, token) of a create body, or ValidationException."""
        if not isinstance(doc, dict):
            raise validation("expected a JSON object")
        for name in ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig"):
            if name not in doc:
                raise validation(f"1 validation error detected: Value null at '{name}' failed to satisfy "
                                 f"constraint: Member must not be null")
        name, role, model, token = doc["jobName"], doc["roleArn"], doc["modelId"], doc.get("clientRequestToken")
        if not isinstance(name, str) or not JOB_NAME.fullmatch(name):
            raise validation("Value at 'jobName' failed to satisfy constraint: Member must satisfy regular expression pattern")
        if not isinstance(role, str) or not ROLE_ARN.fullmatch(role):
            raise validation("Value at 'roleArn' failed to satisfy constraint: Member must satisfy regular expression pattern")
        if role in self.ctx.config.bedrock_refused_roles:  # the caller may not pass it (as AWS answers that)
            raise Rejected("AccessDeniedException", f"User: arn:aws:iam::{ACCOUNT}:user/simulator is not authorized to "
                           f"perform: iam:PassRole on resource: {role} because no identity-based policy allows the "
                           f"iam:PassRole action", status=403)
        if not isinstance(model, str) or not model:
            raise validation("Value at 'modelId' failed to satisfy constraint: Member must have length >= 1")
        if token is not None and (not isinstance(token, str) or not TOKEN.fullmatch(token)):
            raise validation("Value at 'clientRequestToken' failed to satisfy constraint: Member must satisfy "
                             "regular expression pattern")
        if doc.get("modelInvocationType", "InvokeModel") not in ("InvokeModel", "Converse"):
            raise validation("Value at 'modelInvocationType' failed to satisfy enum value set: [InvokeModel, Converse]")
        source = (doc["inputDataConfig"] or {}).get("s3InputDataConfig") if isinstance(doc["inputDataConfig"], dict) else None
        out = (doc["outputDataConfig"] or {}).get("s3OutputDataConfig") if isinstance(doc["outputDataConfig"], dict) else None
        if not isinstance(source, dict) or not isinstance(out, dict):
            raise validation("inputDataConfig.s3InputDataConfig and outputDataConfig.s3OutputDataConfig are required")
        bucket, key = _s3_parts(source.get("s3Uri"), "inputDataConfig.s3InputDataConfig.s3Uri")
        _s3_parts(out.get("s3Uri"), "outputDataConfig.s3OutputDataConfig.s3Uri")
        return name, model, bucket, key, token or ""

    def _records(self, data: bytes) -> tuple[Requests, list[dict]]:
        """The records of an input file; ValidationException for a line that is not one."""
        reqs, inputs = Requests(), []
        seen: set[str] = set()
        for no, raw in enumerate((x for x in data.split(b"\n") if x.strip()), 1):
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise validation(f"input line {no} is not valid JSON") from None
            body = obj.get("modelInput") if isinstance(obj, dict) else None
            rid = obj.get("recordId") if isinstance(obj, dict) else None
            if not isinstance(body, dict) or not isinstance(rid, str) or rid in seen:
                raise validation(f"input line {no}: expected {{recordId, modelInput}} with a unique recordId")
            seen.add(rid)
            reqs.custom_ids.append(rid)
            reqs.models.append("")
            reqs.max_tokens.append(_max_tokens(body))
            reqs.in_tokens.append(max(1, json_tokens(body.get("messages") or body)))
            inputs.append(body)
        return reqs, inputs

    def _check_counts(self, n: int, model: str) -> None:
        config = self.ctx.config
        if n < config.bedrock_min_records:
            raise validation(f"The number of records ({n}) in the input is below the minimum "
                             f"({config.bedrock_min_records}) per batch inference job for {model}.")
        if n > config.bedrock_max_records:
            raise validation(f"The number of records ({n}) exceeds the maximum ({config.bedrock_max_records}).")
        now = self.ctx.now()
        running = sum(1 for b in self.ctx.store.batches.values()
                      if b.kind == "bedrock" and b.extra["modelId"] == model and not b.ended(now))
        if running >= config.bedrock_jobs_limit:
            self.ctx.stats["queue_full"] += 1
            raise Rejected("ServiceQuotaExceededException", f"You have reached the limit of {config.bedrock_jobs_limit}"
                           f" in-progress and submitted batch inference jobs for {model}.", status=400)

    async def create(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        doc = parse_json(await request.read())
        name, model, bucket, key, token = self._check_create(doc)
        if token and token in self.by_token:  # the same request again: Bedrock answers with the job it made
            return json_response({"jobArn": self.arn(self.by_token[token])})
        ctx.check_spend()
        data = await self._s3("GET", bucket, key)
        if data is None:
            raise validation(f"The input s3Uri s3://{bucket}/{key} does not exist or cannot be read by the role.")
        reqs, inputs = self._records(data)
        self._check_counts(len(inputs), model)
        now = ctx.now()
        batch = new_batch(ctx, "bedrock", "", reqs, now, doc=doc, modelId=model, inputs=inputs, written=False)
        batch.id = batch.id[-12:].lower()
        batch.extra["duration"] = batch.ends_at - now
        ctx.add_batch(batch)
        if token:
            self.by_token[token] = batch.id
        return json_response({"jobArn": self.arn(batch.id)})

    # -- the job -----------------------------------------------------------------------------------

    def arn(self, job_id: str) -> str:
        return f"arn:aws:bedrock:us-east-1:{ACCOUNT}:model-invocation-job/{job_id}"

    def find(self, request: web.Request, *, ghosts: bool = True) -> Batch:
        job_id = request.match_info["id"].rpartition("/")[2]
        batch = self.ctx.store.get(job_id, "bedrock")
        if batch is None or (ghosts and self.ctx.ghost(batch)):
            raise Rejected("ResourceNotFoundException", f"The specified job {request.match_info['id']} was not found.",
                           status=404)
        return batch

    def status(self, batch: Batch) -> str:
        now = self.ctx.now()
        share = (now - batch.created_at) / batch.extra["duration"] if batch.extra["duration"] > 0 else 1.0
        if batch.ended(now):
            if batch.cancel_at is not None:
                return "Stopped"
            unprocessed = batch.outcomes.count(Outcome.EXPIRED) + len(batch.missing)
            if unprocessed == batch.n:
                return "Expired"
            return "PartiallyCompleted" if unprocessed else "Completed"
        if batch.cancel_at is not None:
            return "Stopping"
        return "Submitted" if share <= 0 else "Validating" if share < VALIDATING else "Scheduled" if share < SCHEDULED \
            else "InProgress"

    def doc(self, batch: Batch) -> dict[str, Any]:
        request = batch.extra["doc"]
        status = self.status(batch)
        done = batch.processed(self.ctx.now()) if status not in ("Expired",) else 0
        unprocessed = {i for i in range(done) if batch.outcomes[i] in (Outcome.EXPIRED, Outcome.CANCELED)} | \
            {i for i in batch.missing if i < done}
        errored = sum(1 for i in range(done) if i not in unprocessed and batch.outcomes[i] != Outcome.SUCCEEDED)
        processed = done - len(unprocessed)
        out: dict[str, Any] = {
            "jobArn": self.arn(batch.id), "jobName": request["jobName"], "modelId": batch.extra["modelId"],
            "roleArn": request["roleArn"], "status": status, "submitTime": iso(batch.created_wall),
            "lastModifiedTime": iso(batch.wall(min(self.ctx.now(), batch.ends_at))),
            "inputDataConfig": request["inputDataConfig"], "outputDataConfig": request["outputDataConfig"],
            "timeoutDurationInHours": request.get("timeoutDurationInHours", 72),
            "jobExpirationTime": iso(batch.created_wall + 72 * 3600.0),
            "totalRecordCount": batch.n, "processedRecordCount": processed,
            "successRecordCount": processed - errored, "errorRecordCount": errored,
        }
        for name in ("clientRequestToken", "modelInvocationType"):
            if request.get(name):
                out[name] = request[name]
        if status in ("Completed", "PartiallyCompleted", "Stopped", "Expired"):
            out["endTime"] = iso(batch.wall(batch.ends_at))
        return out

    def _output_line(self, batch: Batch, i: int) -> dict[str, Any] | None:
        """Record i's output line; None when it was not processed."""
        outcome = batch.outcomes[i]
        if outcome in (Outcome.EXPIRED, Outcome.CANCELED) or i in batch.missing:
            return None
        line: dict[str, Any] = {"recordId": batch.custom_ids[i], "modelInput": batch.extra["inputs"][i]}
        if outcome == Outcome.SUCCEEDED:
            line["modelOutput"] = self._model_output(batch, i)
        else:
            code = {Outcome.API_ERROR: 500, Outcome.OVERLOADED: 429}.get(Outcome(outcome), 400)
            line["error"] = {"errorCode": code, "errorMessage": "simulated error"}
        return line

    def _model_output(self, batch: Batch, i: int) -> dict[str, Any]:
        cid, n_in = batch.custom_ids[i], batch.in_tokens[i]
        n_out = output_tokens(cid, batch.max_tokens[i])
        if batch.extra["doc"].get("modelInvocationType") == "Converse":
            return {"output": {"message": {"role": "assistant", "content": [{"text": f"answer to {cid}"}]}},
                    "stopReason": "end_turn", "usage": {"inputTokens": n_in, "outputTokens": n_out,
                                                        "totalTokens": n_in + n_out}}
        return {"id": f"msg_bdrk_{cid}", "type": "message", "role": "assistant", "model": batch.extra["modelId"],
                "content": [{"type": "text", "text": f"answer to {cid}"}], "stop_reason": "end_turn",
                "usage": {"input_tokens": n_in, "output_tokens": n_out}}

    def _manifest(self, batch: Batch, lines: list[dict[str, Any]]) -> bytes:
        """manifest.json.out as Bedrock writes it (batch-inference-results): the job's counts, and the tokens
        of the records answered (an errored record counts none)."""
        doc = self.doc(batch)
        manifest = {k: doc[k] for k in ("totalRecordCount", "processedRecordCount", "successRecordCount",
                                        "errorRecordCount")}
        index = {cid: i for i, cid in enumerate(batch.custom_ids)}
        done = [index[x["recordId"]] for x in lines if "modelOutput" in x]
        manifest["inputTokenCount"] = sum(batch.in_tokens[i] for i in done)
        manifest["outputTokenCount"] = sum(output_tokens(batch.custom_ids[i], batch.max_tokens[i]) for i in done)
        return orjson.dumps(manifest)

    def _faulty(self, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The output lines after the Bedrock faults: answers without their usage, lines lost from the file
        (the manifest still counts them)."""
        config, rng = self.ctx.config, self.ctx.rng
        if config.bedrock_usage_absent_rate:
            for line in lines:
                if "modelOutput" in line and rng.random() < config.bedrock_usage_absent_rate:
                    line["modelOutput"] = {k: v for k, v in line["modelOutput"].items() if k != "usage"}
        if config.bedrock_lines_lost_rate:
            lines = [x for x in lines if rng.random() >= config.bedrock_lines_lost_rate]
        return lines

    async def _write_output(self, batch: Batch) -> None:
        """The output file and the manifest, once, when the job is first seen ended."""
        if batch.extra["written"] or not batch.ended(self.ctx.now()) or self.status(batch) == "Expired":
            batch.extra["written"] = batch.extra["written"] or self.status(batch) == "Expired"
            return
        request = batch.extra["doc"]
        bucket, prefix = _s3_parts(request["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"], "output")
        input_name = request["inputDataConfig"]["s3InputDataConfig"]["s3Uri"].rstrip("/").rpartition("/")[2]
        base = f"{prefix.rstrip('/')}/{batch.id}".lstrip("/")
        lines = [x for i in range(batch.n) if (x := self._output_line(batch, i)) is not None]
        manifest = self._manifest(batch, lines)
        lines = self._faulty(lines)
        await self._s3("PUT", bucket, f"{base}/{input_name}.out", b"".join(orjson.dumps(x) + b"\n" for x in lines))
        await self._s3("PUT", bucket, f"{base}/manifest.json.out", manifest)
        batch.extra["written"] = True

    async def get(self, request: web.Request) -> web.Response:
        self.ctx.stats["retrieves"] += 1
        batch = self.find(request)
        await self._write_output(batch)
        return json_response(self.doc(batch))

    async def list(self, request: web.Request) -> web.Response:
        self.ctx.stats["lists"] += 1
        try:
            limit = int(request.query.get("maxResults", "1000"))
            start = int(request.query.get("nextToken", "0"))
        except ValueError:
            raise validation("maxResults and nextToken must be numbers") from None
        if not 1 <= limit <= LIST_MAX:
            raise validation(f"maxResults must be 1..{LIST_MAX}")
        after = _epoch(request.query.get("submitTimeAfter"))
        jobs = [b for b in reversed(self.ctx.store.batches.values()) if b.kind == "bedrock" and b.created_wall >= after]
        page = jobs[start:start + limit]
        for batch in page:
            await self._write_output(batch)
        doc: dict[str, Any] = {"invocationJobSummaries": [self.doc(b) for b in page]}
        if start + limit < len(jobs):
            doc["nextToken"] = str(start + limit)
        return json_response(doc)

    async def stop(self, request: web.Request) -> web.Response:
        batch = self.find(request, ghosts=False)
        if batch.ended(self.ctx.now()):
            raise validation(f"The job {batch.id} has already ended ({self.status(batch)}) and cannot be stopped.")
        batch.cancel(self.ctx.now(), self.ctx.config.cancel_s)
        self.ctx.stats["cancels"] += 1
        return json_response({})

    async def not_found(self, request: web.Request) -> web.Response:
        raise Rejected("UnknownOperationException", "Unknown operation", status=404)
