"""Mistral batch (`--provider mistral`; PROVIDERS.md §5): the OpenAI flow with Mistral's job object.

    create:  POST /v1/files (multipart, purpose=batch)  ->  POST /v1/batch/jobs {input_files: [id], endpoint,
             model, metadata}
    poll:    GET /v1/batch/jobs/{id}, GET /v1/batch/jobs?page=N&page_size=M&order_by=-created
    results: GET /v1/files/{output_file}/content, then GET /v1/files/{error_file}/content

What the profile says: the jobs path, lines uploaded as `{custom_id, body}`, the model named in the
create body, no completion window (`timeout_hours` is left at Mistral's 24), the file named in a
list, paging by page number, and the seven statuses (QUEUED, RUNNING, SUCCESS, FAILED,
TIMEOUT_EXCEEDED, CANCELLATION_REQUESTED, CANCELLED; the SDK's enum is open, so any other spelling
is logged once and read as still running). What it cannot say is the job object itself (`_info`
here): `output_file` and `error_file` rather than `*_file_id`, counts at the top level
(`total_requests`, `succeeded_requests`, `failed_requests`), `started_at`/`completed_at`.

A job keeps its `metadata` (`{str: str}`), so a lost create is adopted by its tag as OpenAI's is.
Mistral documents no limit a batch: the cut is OpenAI's 50,000 requests and 200 MB by default, at
most 1,000,000 requests (the workspace's ongoing requests, a secondary source) and 512 MB (the Files
API's upload limit). Key `MISTRAL_API_KEY` (what the mistralai SDK reads), Bearer.
"""

from __future__ import annotations

from batch_scheduler.core.settings import MB, ProviderSpec
from batch_scheduler.providers.answers import batch_id, text, whole
from batch_scheduler.providers.base import BatchInfo, BatchState, Provider, parse_time
from batch_scheduler.providers.openai.profile import Profile
from batch_scheduler.providers.openai.provider import SPEC as OPENAI_SPEC
from batch_scheduler.providers.openai.provider import OpenAIProvider, failure_text

MISTRAL_STATUSES = {
    "queued": BatchState.IN_PROGRESS, "running": BatchState.IN_PROGRESS,
    "cancellation_requested": BatchState.IN_PROGRESS,
    "success": BatchState.ENDED, "timeout_exceeded": BatchState.ENDED, "cancelled": BatchState.ENDED,
    "failed": BatchState.FAILED,
}
# a job's counts as the pipeline names them (OpenAI's `completed` is the succeeded ones)
_COUNTS = {"total": "total_requests", "completed": "succeeded_requests", "failed": "failed_requests"}

MISTRAL_PROFILE = Profile(name="mistral", batches_path="/v1/batch/jobs", line_form="body", completion_window=None,
                          model_field="model", input_files=True, list_style="page", statuses=MISTRAL_STATUSES,
                          unvalidated=frozenset({"queued", "failed"}), max_file_requests=1_000_000)
MISTRAL_SPEC = ProviderSpec(
    name="mistral", max_requests=1_000_000, max_bytes=512 * MB, default_requests=50_000, default_bytes=200 * MB,
    key_env=("MISTRAL_API_KEY",), base_url_env=("MISTRAL_BASE_URL",), default_base_url="https://api.mistral.ai",
    default_auth="bearer", model_env=("MISTRAL_MODEL",), custom_id=OPENAI_SPEC.custom_id,
    custom_id_rule=OPENAI_SPEC.custom_id_rule,
    queue_start=1_000_000, queue_max=1_000_000)  # ongoing requests per workspace (secondary source)


class MistralProvider(OpenAIProvider):
    name = "mistral"
    realtime_api = None  # its chat endpoint is not served by the simulator yet: no realtime lane until tested
    spec = MISTRAL_SPEC
    profile = MISTRAL_PROFILE
    token_count = None
    count_tokens = Provider.count_tokens

    def _info(self, doc: dict, what: str = "list answer", asked: str | None = None) -> BatchInfo:
        """A Mistral job object, each field it reads checked (answers.BadAnswer naming the job and the field)."""
        bid = batch_id(doc, f"batch {asked}: {what}" if asked else what)
        what = f"batch {bid}: {what}"
        status = text(doc, "status", what)
        counts = {name: whole(doc.get(field), field, what) for name, field in _COUNTS.items() if field in doc}
        files = [text(doc, "output_file", what), text(doc, "error_file", what)]
        state = self.profile.state_of(status, what)
        return BatchInfo(
            id=bid, state=state, created_at=parse_time(doc.get("created_at")),
            ended_at=parse_time(doc.get("completed_at")) if state is not BatchState.IN_PROGRESS else None,
            total=counts.get("total"), counts=counts, results=[f for f in files if f],
            error=failure_text(doc) if state is BatchState.FAILED else None, raw=doc,
            validated=self.profile.validated(status),
        )
