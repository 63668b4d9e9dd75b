"""AWS Bedrock batch inference (`--provider bedrock`; PROVIDERS §3): records staged in S3, one job per batch.

    create:  PUT s3://{staging}/{name}/input.jsonl  ->  POST /model-invocation-job {jobName, roleArn, modelId,
             inputDataConfig, outputDataConfig, clientRequestToken, [modelInvocationType]}  ->  {"jobArn"}
    poll:    GET /model-invocation-job/{jobId}, GET /model-invocation-jobs?submitTimeAfter=&nextToken=
    results: GET s3://{staging}/{name}/out/{jobId}/manifest.json.out, then .../input.jsonl.out (matched by
             recordId, never by order; counted against the manifest, bedrock_output.py)
    stop:    POST /model-invocation-job/{jobId}/stop

Credentials, region, endpoints and SigV4 come from botocore (access.py). A Bedrock job runs one model (its
`modelId`): a line names its model (`params.model`, or `modelId` beside `modelInput`) or runs `--model`'s,
and `lane_of` keeps one lane per model, so the cut makes batches of one model each (job.input.batcher),
each a job of its lane's model. The job's name and its `clientRequestToken`
are the create tag (job and chunk) and a digest of the lines, so a create sent again (a lost answer, a
restart) is the same request to Bedrock, which answers it with the job it made: create is idempotent, and
`tag_of` reads the tag back from a listed job for adoption.

Bedrock refuses a job under its minimum record count (`min_batch_requests`, 100 by default): the cut never
makes a smaller batch (job.input.batcher), and a retry batch under it is filled up with copies of its own
records (max_tokens 1, ids `<id>.padN`) whose answers are dropped: they cost a little, a refusal more.

States: Completed, PartiallyCompleted, Stopped and Expired end a batch (records missing from the output,
i.e. not processed, are sent again unbilled); Failed fails it with Bedrock's `message`; the rest, and a
status never seen before (logged once), are still running. A full jobs-in-progress quota
(`ServiceQuotaExceededException` at create) is a full jobs queue (`QueueFull.jobs`; the quota is per model,
`SPEC.jobs_queue`): admission holds the next create until a job of ours ends, and never makes a batch
smaller for it (a smaller batch is one more job, padded up to the floor). Once a batch's
results are durable its staged objects are deleted (`release`), unless --keep-staged.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlencode

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.headers import merge_headers
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import MB, JobsQueue, ProviderSpec, Settings
from batch_scheduler.providers.answers import document, items, mapping, shown, text, whole
from batch_scheduler.providers.aws.access import AWS_ENV, AwsAccess, AwsChain, split_s3_uri
from batch_scheduler.providers.aws.bedrock_lines import (
    claude_body,
    converse_body,
    is_claude,
    kept_line,
    model_of_kept,
    output_line,
    padded_line,
    record_line,
)
from batch_scheduler.providers.aws.bedrock_output import MANIFEST_NAME, Manifest, OutputTally, read_manifest
from batch_scheduler.providers.base import BatchInfo, BatchState, Provider, parse_time
from batch_scheduler.providers.common import LIST_PAGES_MAX, check_message_params, classify_result

log = logging.getLogger("batch_scheduler.providers")

DEFAULT_URL = "https://bedrock.{region}.amazonaws.com"  # the default --base-url: botocore's endpoint for the region
ENDED = frozenset({"Completed", "PartiallyCompleted", "Stopped", "Expired"})
RUNNING = frozenset({"Submitted", "Validating", "Scheduled", "InProgress", "Stopping"})
NOTHING_RAN = frozenset({"Stopped", "Expired"})  # may end without an output file
JOB_ID = re.compile(r"[a-z0-9]{12}")
ROLE_ARN = re.compile(r"arn:aws(-[a-z-]+)?:iam::[0-9]{12}:role/[\w+=,.@/-]+")
PROBE_NAME = ".batch-scheduler-probe"  # written and deleted by preflight: the staging prefix takes writes
INPUT_NAME = "input.jsonl"
LIST_MAX = 100
JOBS_AT_ONCE = 20  # the quota of in-progress and submitted jobs per base model (Service Quotas' default)
_COUNTS = {"total": "totalRecordCount", "processed": "processedRecordCount", "succeeded": "successRecordCount",
           "errored": "errorRecordCount"}
_warned: set[str] = set()

SPEC = ProviderSpec(
    name="bedrock", max_requests=50_000, max_bytes=1000 * MB, default_requests=10_000, default_bytes=200 * MB,
    key_env=("AWS_ACCESS_KEY_ID",), base_url_env=("AWS_ENDPOINT_URL_BEDROCK", "AWS_ENDPOINT_URL"),
    default_base_url=DEFAULT_URL, default_auth="bearer", model_env=("BEDROCK_MODEL",), own_credentials=True,
    # record ids go into S3 object lines only; the same rule as Message Batches keeps them safe everywhere
    queue_unit="requests", queue_start=200_000, queue_max=1_000_000,  # 20 jobs in progress per model x 50,000
    min_batch_requests=100, credential_env=AWS_ENV,
    jobs_queue=JobsQueue("jobs", "", JOBS_AT_ONCE, alone=False, per_model=True))


def job_id_of(arn: str, what: str) -> str:
    """The 12-character id at the end of a job ARN (the id this program keeps: it goes into URLs)."""
    job_id = arn.rpartition("/")[2]
    if not JOB_ID.fullmatch(job_id):
        raise errors.BadAnswer(f"{what}: jobArn is {shown(arn)}, expected ...:model-invocation-job/<12 characters>")
    return job_id


def name_of(tag: str, lines: list[bytes]) -> str:
    """The job's name and idempotency token: the tag and a digest of the lines (letters, digits, hyphens)."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line)
        h.update(b"\n")
    return f"{tag}-{h.hexdigest()[:12]}"


def s3_said(err: errors.ProviderError) -> str:
    """What S3 answered, on one line: `HTTP 404 NoSuchBucket: The specified bucket does not exist` from its
    XML error body (untrusted: only the code and message are kept, each shortened), else the error's text."""
    said = str(err)
    code, message = (re.search(f"<{tag}>([^<]{{1,200}})</{tag}>", said) for tag in ("Code", "Message"))
    if code is None:
        return " ".join(said.split())[:300]
    return f"HTTP {err.status} {code.group(1)}" + (f": {message.group(1)}" if message else "")


def _unknown_status(status: str | None, what: str) -> None:
    if status not in _warned:
        _warned.add(str(status))
        log.warning("%s: status %s is not one this program knows; taken as still running", what, shown(status))


class BedrockProvider(Provider):
    name = "bedrock"
    spec = SPEC

    def __init__(self, settings: Settings, http: HttpClient):
        self.settings = settings
        self.http = http
        self._chain = AwsChain(None if settings.base_url == DEFAULT_URL else settings.base_url,
                               dict(settings.credential_env))
        self._model = settings.model or ""

    @staticmethod
    def headers(settings: Settings) -> dict[str, str]:
        return merge_headers({}, settings.headers)  # each call is signed on its own (aws.AwsAccess.sign)

    # -- input lines ----------------------------------------------------------------------------

    def check_request(self, obj: dict, raw: bytes) -> tuple[str | None, bytes | None]:
        if "modelInput" in obj and "params" not in obj:
            model = obj.get("modelId", self._model)
            if not isinstance(model, str) or not model:
                return "no model: give --model (or BEDROCK_MODEL), or modelId in the line", None
            if not isinstance(obj["modelInput"], dict):
                return "modelInput must be an object (the model's request body)", None
            return None, kept_line(obj["custom_id"], obj["modelInput"], self._own(model))
        params = obj.get("params")
        problem = check_message_params(params, self._model)
        if problem or not isinstance(params, dict):
            if not self._model and isinstance(params, dict) and "model" not in params:
                return "no model: give --model (or BEDROCK_MODEL), the Bedrock model id the job runs", None
            return problem or "params must be an object", None
        model = params.get("model") or self._model
        if not isinstance(model, str):
            return f"params.model is {shown(model)}, expected a Bedrock model id", None
        if is_claude(model):
            return None, kept_line(obj["custom_id"], claude_body(params), self._own(model))
        body, problem = converse_body(params)
        return (problem, None) if problem else (None, kept_line(obj["custom_id"], body or {}, self._own(model)))

    def _own(self, model: str) -> str | None:
        """The model a kept line names: None for the job's own (`--model`)."""
        return None if model == self._model else model

    def lane_of(self, obj: dict) -> str:
        """The job a line belongs in: one per model (a Bedrock job takes one modelId). `obj` is a line
        `check_request` accepted, in the input's form or as kept."""
        params = obj.get("params")
        model = params.get("model") if isinstance(params, dict) else None
        return model or model_of_kept(obj, self._model)

    def body_overhead(self, line_bytes: int) -> int:
        return 1  # the newline

    # -- signed calls ---------------------------------------------------------------------------

    async def _call(self, method: str, path: str, endpoint: str, body: bytes = b"", *, query: str = "",
                    idempotent: bool = True) -> dict:
        aws = await self._chain.access()
        url = aws.bedrock_url + path + (f"?{query}" if query else "")
        headers = aws.sign(method, url, "bedrock", body, {"content-type": "application/json"})
        data = await self.http.call(method, url, endpoint, body=body or None, headers=headers, idempotent=idempotent)
        return document(data, f"{endpoint} answer")

    async def _put(self, aws: AwsAccess, bucket: str, key: str, body: bytes) -> None:
        url = aws.object_url(bucket, key)
        headers = aws.sign("PUT", url, "s3", body, {"content-type": "application/jsonl"})
        try:
            await self.http.call("PUT", url, "s3.put", body=body, headers=headers)
        except (errors.AuthRefused, errors.NotFound) as err:
            raise errors.UsageError(f"--staging s3://{bucket}: cannot write {key} ({s3_said(err)}): check that the "
                                    f"bucket exists and that these AWS credentials may write to it") from None

    def _staging(self) -> tuple[str, str]:
        if not self.settings.role_arn:
            raise errors.UsageError("--provider bedrock needs --role-arn (or BEDROCK_ROLE_ARN): the service role "
                                    "Bedrock assumes to read and write the staging prefix")
        if not self.settings.staging:
            raise errors.UsageError("--provider bedrock needs --staging s3://bucket/prefix (or BEDROCK_STAGING): "
                                    "where records go in and results come out")
        return split_s3_uri(self.settings.staging, "--staging")

    async def _delete(self, aws: AwsAccess, bucket: str, key: str, what: str) -> None:
        url = aws.object_url(bucket, key)
        try:
            await self.http.call("DELETE", url, "s3.delete", headers=aws.sign("DELETE", url, "s3"))
        except errors.ProviderError as err:
            log.warning("%s: staged object s3://%s/%s not deleted: %s", what, bucket, key, err)

    def _role_refused(self, err: errors.ProviderError) -> errors.UsageError | None:
        """Create's refusal of the service role (iam:PassRole denied, a role Bedrock cannot assume) as one
        line naming --role-arn; None for any other refusal."""
        said = str(err)
        role = self.settings.role_arn or ""
        if not isinstance(err, errors.FatalError) or not ("iam:PassRole" in said or (role and role in said)
                                                          or "assume" in said.lower()):
            return None
        return errors.UsageError(f"--role-arn {role}: Bedrock cannot use this role ({self.http.redact(said)}); set "
                                 f"--role-arn (or BEDROCK_ROLE_ARN) to a service role whose trust policy lets "
                                 f"bedrock.amazonaws.com assume it, and let these credentials pass it (iam:PassRole)")

    # -- the Provider's calls -------------------------------------------------------------------

    async def preflight(self) -> None:
        """Before anything is uploaded: --role-arn and --staging given and of their shape, the credentials and
        region found, and the staging prefix writable (an empty probe object written, then deleted). Whether
        Bedrock may assume the role is known at the first create only (`_role_refused`)."""
        bucket, prefix = self._staging()
        role = self.settings.role_arn or ""
        if not ROLE_ARN.fullmatch(role):
            raise errors.UsageError(f"--role-arn {role!r}: expected an IAM role ARN, arn:aws:iam::<account>:role/<name> "
                                    f"(the service role Bedrock assumes; or BEDROCK_ROLE_ARN)")
        aws = await self._chain.access()
        key = f"{prefix}/{PROBE_NAME}" if prefix else PROBE_NAME
        await self._put(aws, bucket, key, b"")
        await self._delete(aws, bucket, key, "preflight")


    async def create(self, lines: list[bytes], *, tag: str) -> BatchInfo:
        bucket, prefix = self._staging()
        aws = await self._chain.access()
        model = model_of_kept(orjson.loads(lines[0]), self._model) if lines else self._model  # the lane's
        floor = self.spec.min_batch_requests
        pads = [padded_line(lines[i % len(lines)], i) for i in range(floor - len(lines))] if lines else []
        name = name_of(tag, lines)
        base = f"{prefix}/{name}" if prefix else name
        input_key = f"{base}/{INPUT_NAME}"
        await self._put(aws, bucket, input_key, b"\n".join(record_line(x) for x in lines + pads) + b"\n")
        body = {"jobName": name, "roleArn": self.settings.role_arn, "modelId": model, "clientRequestToken": name,
                "inputDataConfig": {"s3InputDataConfig": {"s3Uri": f"s3://{bucket}/{base}/{INPUT_NAME}",
                                                          "s3InputFormat": "JSONL"}},
                "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{bucket}/{base}/out/"}}}
        if not is_claude(model):
            body["modelInvocationType"] = "Converse"
        try:  # idempotent: the token
            doc = await self._call("POST", "/model-invocation-job", "create", orjson.dumps(body))
        except errors.QueueFull as err:  # the only quota checked at create: jobs in progress for the model
            raise err.about_jobs() from None
        except errors.FatalError as err:
            if (refused := self._role_refused(err)) is None:
                raise
            await self._delete(aws, bucket, input_key, f"chunk {tag}")  # nothing of the job is left staged
            raise refused from None
        arn = text(doc, "jobArn", "create answer", required=True) or ""
        return BatchInfo(id=job_id_of(arn, "create answer"), state=BatchState.IN_PROGRESS, validated=False,
                         total=len(lines), raw={**body, "jobArn": arn})

    async def get(self, batch_id: str) -> BatchInfo:
        doc = await self._call("GET", f"/model-invocation-job/{batch_id}", "retrieve")
        info = self._info(doc, f"batch {batch_id}: retrieve answer")
        if info.id != batch_id:
            raise errors.BadAnswer(f"batch {batch_id}: retrieve answer: jobArn names {info.id!r}")
        return info

    async def recent(self, since: float) -> AsyncIterator[BatchInfo]:
        after = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        token: str | None = None
        for page_no in range(1, LIST_PAGES_MAX + 1):
            what = f"list answer (page {page_no})"
            query = {"submitTimeAfter": after, "sortBy": "CreationTime", "sortOrder": "Descending",
                     "maxResults": LIST_MAX, **({"nextToken": token} if token else {})}
            page = await self._call("GET", "/model-invocation-jobs", "list", query=urlencode(query))
            for i, item in enumerate(items(page, "invocationJobSummaries", what)):
                try:
                    yield self._info(item if isinstance(item, dict) else {}, f"{what}: invocationJobSummaries[{i}]")
                except errors.BadAnswer as err:
                    log.warning("%s: skipped: %s", what, err)
            next_token = text(page, "nextToken", what)
            if not next_token or next_token == token:
                return
            token = next_token

    async def cancel(self, batch_id: str) -> BatchInfo:
        await self._call("POST", f"/model-invocation-job/{batch_id}/stop", "cancel")
        return await self.get(batch_id)

    async def result_blocks(self, info: BatchInfo) -> AsyncIterator[list[bytes]]:
        """The output file of the batch's one input file, each line as a Message Batches result line, counted
        against the job's manifest (bedrock_output: the lines it lacks are named; tokens the lines lack)."""
        aws = await self._chain.access()
        info = await self._described(info)
        bucket, key = self._output_key(info)
        url = aws.object_url(bucket, key)
        model = str(info.raw.get("modelId") or self._model)
        tally = OutputTally(await self._manifest(aws, bucket, key, info.id), f"batch {info.id}")
        try:
            async for block in self.http.line_blocks(url, "results", headers=aws.sign("GET", url, "s3")):
                lines = tally.take([output_line(line, model) for line in block if line.strip()])
                if lines:
                    yield lines
        except errors.NotFound:
            if info.raw.get("status") not in NOTHING_RAN:
                raise
            return  # stopped or expired before a record ran: no output file; every record is sent again
        if last := tally.end():
            yield last

    async def _manifest(self, aws: AwsAccess, bucket: str, out_key: str, batch_id: str) -> Manifest | None:
        """The job's manifest.json.out beside its output file; None when there is none (a job that ran nothing)."""
        key = out_key.rpartition("/")[0] + "/" + MANIFEST_NAME
        url = aws.object_url(bucket, key)
        try:
            data = await self.http.call("GET", url, "s3.manifest", headers=aws.sign("GET", url, "s3"))
        except errors.NotFound:
            log.debug("batch %s: no %s", batch_id, MANIFEST_NAME)
            return None
        return read_manifest(data, f"batch {batch_id}: s3://{bucket}/{key}")

    classify = staticmethod(classify_result)

    @staticmethod
    def tag_of(info: BatchInfo) -> str | None:
        """The create tag in a job's token (`<tag>-<digest>`); None for a job this program did not name."""
        token = info.raw.get("clientRequestToken")
        if not isinstance(token, str) or not token.startswith("job-") or "-chunk-" not in token:
            return None
        return token.rpartition("-")[0]

    async def release(self, info: BatchInfo) -> None:
        """Delete the batch's staged objects (its input, output and manifest) once its results are durable."""
        if self.settings.keep_staged:
            return
        aws = await self._chain.access()
        try:
            info = await self._described(info)
            bucket, out_key = self._output_key(info)
            in_bucket, in_key = split_s3_uri(self._input_uri(info), "input s3Uri")
        except (errors.UsageError, errors.ProviderError) as err:
            log.warning("batch %s: staged objects not deleted: %s", info.id, err)
            return
        manifest = out_key.rpartition("/")[0] + "/" + MANIFEST_NAME
        for b, key in ((in_bucket, in_key), (bucket, out_key), (bucket, manifest)):
            await self._delete(aws, b, key, f"batch {info.id}")

    # -- reading answers ------------------------------------------------------------------------

    async def _described(self, info: BatchInfo) -> BatchInfo:
        """The batch with its job's whole description (a batch known only by its id is asked for it)."""
        return info if "outputDataConfig" in info.raw and "status" in info.raw else await self.get(info.id)

    @staticmethod
    def _input_uri(info: BatchInfo) -> str:
        source = mapping(mapping(info.raw, "inputDataConfig", "job"), "s3InputDataConfig", "job.inputDataConfig")
        return text(source, "s3Uri", f"batch {info.id}: inputDataConfig.s3InputDataConfig", required=True) or ""

    def _output_key(self, info: BatchInfo) -> tuple[str, str]:
        """(bucket, key) of the output file: `{output s3Uri}/{jobId}/{input file name}.out`."""
        what = f"batch {info.id}: outputDataConfig.s3OutputDataConfig"
        out = mapping(mapping(info.raw, "outputDataConfig", what), "s3OutputDataConfig", what)
        try:
            bucket, prefix = split_s3_uri(text(out, "s3Uri", what, required=True) or "", what)
            input_name = split_s3_uri(self._input_uri(info), what)[1].rpartition("/")[2]
        except errors.UsageError as err:
            raise errors.BadAnswer(str(err)) from None
        return bucket, f"{prefix}/{info.id}/{input_name}.out".lstrip("/")

    def _info(self, doc: dict, what: str) -> BatchInfo:
        """A job object (get answer or list summary), each field it reads checked."""
        bid = job_id_of(text(doc, "jobArn", what, required=True) or "", what)
        what = f"batch {bid}: {what.partition(': ')[2] or what}"
        status = text(doc, "status", what)
        counts = {name: whole(doc.get(field), field, what) for name, field in _COUNTS.items() if field in doc}
        if status in ENDED:
            state = BatchState.ENDED
        elif status == "Failed":
            state = BatchState.FAILED
        else:
            if status not in RUNNING:
                _unknown_status(status, what)
            state = BatchState.IN_PROGRESS
        for name in ("submitTime", "endTime"):
            if doc.get(name) is not None and parse_time(doc[name]) is None:
                raise errors.BadAnswer(f"{what}: {name} is {shown(doc[name])}, expected a time")
        return BatchInfo(
            id=bid, state=state, created_at=parse_time(doc.get("submitTime")), ended_at=parse_time(doc.get("endTime")),
            total=None, counts=counts, raw=doc,  # total: totalRecordCount counts the pads of a padded batch too
            validated=status not in ("Submitted", "Validating"),
            error=(text(doc, "message", what) or "the job failed (no message)") if state is BatchState.FAILED else None,
        )
