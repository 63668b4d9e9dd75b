"""The OpenAI-like batch APIs that the `openai` provider drives with another profile (PROVIDERS.md §4, §6, §7).

    azure     {resource}/openai/v1/files, /openai/v1/batches; `api-key: KEY` (AZURE_OPENAI_API_KEY) or
              an Entra ID token as Bearer (AZURE_OPENAI_AD_TOKEN); the resource from
              AZURE_OPENAI_ENDPOINT; each line's model is a Global-Batch deployment name; create's
              `endpoint` without /v1 and lines' `url` with or without it; statuses in any case, times
              as epoch seconds or ISO-8601, null counts, an empty error file; 100,000 requests a file
              (50,000 by default: the REST reference says so); enqueued tokens per deployment.
    groq      api.groq.com/openai/v1/...; Bearer GROQ_API_KEY; list paged by `cursor`; `errors` as an
              object or a bare array; 50,000 lines and 100 MB a file (the SDK's figure, the lower).
    together  api.together.xyz/v1/...; Bearer TOGETHER_API_KEY; upload purpose `batch-api`; lines
              `{custom_id, body}`; create names the model (`model_id`) and answers `{"job": ...}`;
              uppercase statuses; the list is a bare array; no metadata and no request counts: a lost
              create is found by its input file (each create uploads its own, named `{tag}.jsonl`:
              the provider remembers which file it uploaded for which tag, and after a restart reads
              the tag from the name of a listed batch's input file); 50,000 requests and 100 MB a batch.

Each is the OpenAI provider's class with its own name, spec and profile: nothing else differs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import MB, ProviderSpec, Settings
from batch_scheduler.providers.answers import document, text
from batch_scheduler.providers.base import BatchInfo, BatchState, Provider
from batch_scheduler.providers.openai.profile import OPENAI_STATUSES, Profile
from batch_scheduler.providers.openai.provider import SPEC as OPENAI_SPEC
from batch_scheduler.providers.openai.provider import OpenAIProvider, error_items

log = logging.getLogger("batch_scheduler.providers")

AZURE_ROOT = "/openai/v1"  # under the resource's endpoint
AZURE_PROFILE = Profile(name="azure", files_path=f"{AZURE_ROOT}/files", batches_path=f"{AZURE_ROOT}/batches",
                        endpoint_without_v1=True, max_file_requests=100_000)
AZURE_SPEC = ProviderSpec(
    name="azure", max_requests=100_000, max_bytes=200 * MB, default_requests=50_000, default_bytes=200 * MB,
    key_env=("AZURE_OPENAI_API_KEY",), token_env=("AZURE_OPENAI_AD_TOKEN",),
    base_url_env=("AZURE_OPENAI_ENDPOINT",), default_base_url="", default_auth="api-key",
    model_env=("AZURE_OPENAI_DEPLOYMENT",), custom_id=OPENAI_SPEC.custom_id, custom_id_rule=OPENAI_SPEC.custom_id_rule,
    # enqueued tokens per deployment: gpt-4o-mini global batch 1B by default, 15B enterprise (limits page)
    queue_unit="tokens", queue_start=1_000_000_000, queue_max=15_000_000_000)


def resource_root(base_url: str) -> str:
    """The resource's endpoint, whether the user gave it bare (as AZURE_OPENAI_ENDPOINT) or as the v1
    surface's base URL (`.../openai/v1`, as the v1 samples do)."""
    base = base_url.rstrip("/")
    for suffix in (AZURE_ROOT, "/openai"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


class AzureProvider(OpenAIProvider):
    name = "azure"
    spec = AZURE_SPEC
    profile = AZURE_PROFILE
    token_count = None  # a deployment name does not say which tokenizer its model uses
    count_tokens = Provider.count_tokens  # the Provider default: none
    realtime_api = None  # Azure's chat endpoint is per deployment: no realtime lane until it is served and tested

    def __init__(self, settings: Settings, http: HttpClient):
        super().__init__(settings.replace(base_url=resource_root(settings.base_url)), http)
        self.settings = settings

    async def get(self, batch_id: str) -> BatchInfo:
        """The batch; a batch failed because its deployment cannot run batches stops the job, one line saying
        what to set (every other batch would fail the same way)."""
        info = await super().get(batch_id)
        if info.state is BatchState.FAILED and (said := deployment_refused(info.raw)) is not None:
            raise errors.UsageError(f"batch {batch_id}: the deployment cannot run batches ({said}): name a "
                                    f"Global-Batch (or Data Zone Batch) deployment in the lines' model, or "
                                    f"--model (AZURE_OPENAI_DEPLOYMENT)")
        return info


def deployment_refused(doc: dict) -> str | None:
    """What a failed Azure batch's `errors` say of its deployment (`model_not_found`, or an `invalid_request`
    naming the deployment: not of a batch SKU), on one line; None when they say nothing of it."""
    for item in error_items(doc):
        if not isinstance(item, dict):
            continue
        code, message = item.get("code"), str(item.get("message") or "")
        if code == "model_not_found" or (code == "invalid_request" and "deployment" in message.lower()):
            return " ".join(f"{code}: {message}".split())[:300]
    return None


GROQ_PROFILE = Profile(name="groq", files_path="/openai/v1/files", batches_path="/openai/v1/batches",
                       list_style="cursor")
GROQ_SPEC = ProviderSpec(
    name="groq", max_requests=50_000, max_bytes=100 * MB, default_requests=50_000, default_bytes=100 * MB,
    key_env=("GROQ_API_KEY",), base_url_env=("GROQ_BASE_URL",), default_base_url="https://api.groq.com",
    default_auth="bearer", model_env=("GROQ_MODEL",), custom_id=OPENAI_SPEC.custom_id, custom_id_rule=OPENAI_SPEC.custom_id_rule,
    # Groq documents no queue limit ("no limit on the number of jobs"): admission learns one if a create
    # is ever answered 429, from a start no real job reaches
    queue_start=10_000_000, queue_max=100_000_000)


class GroqProvider(OpenAIProvider):
    name = "groq"
    realtime_api = None  # its chat endpoint is not served by the simulator yet: no realtime lane until tested
    spec = GROQ_SPEC
    profile = GROQ_PROFILE
    token_count = None
    count_tokens = Provider.count_tokens


_TAG = re.compile(r"(job-[A-Za-z0-9_.-]+-)?chunk-[A-Za-z0-9_.-]+")  # a create tag (submitter), as a file name keeps it
TOGETHER_STATUSES = {**OPENAI_STATUSES, "canceling": BatchState.IN_PROGRESS}  # its SDK's one-L spelling
TOGETHER_PROFILE = Profile(name="together", purpose="batch-api", line_form="body", model_field="model_id",
                           create_wrap="job", keeps_metadata=False, list_style="array",
                           statuses=TOGETHER_STATUSES)
TOGETHER_SPEC = ProviderSpec(
    name="together", max_requests=50_000, max_bytes=100 * MB, default_requests=50_000, default_bytes=100 * MB,
    key_env=("TOGETHER_API_KEY",), base_url_env=("TOGETHER_BASE_URL",),
    default_base_url="https://api.together.xyz", default_auth="bearer", model_env=("TOGETHER_MODEL",),
    custom_id=r"[^\x00-\x1f\x7f]{1,64}", custom_id_rule="1-64 characters, no control characters",
    queue_unit="tokens", queue_start=30_000_000_000, queue_max=30_000_000_000)  # 30B enqueued per model


class TogetherProvider(OpenAIProvider):
    name = "together"
    realtime_api = None  # its chat endpoint is not served by the simulator yet: no realtime lane until tested
    spec = TOGETHER_SPEC
    profile = TOGETHER_PROFILE
    token_count = None
    count_tokens = Provider.count_tokens

    def __init__(self, settings: Settings, http: HttpClient):
        super().__init__(settings, http)
        self._uploaded: dict[str, str] = {}  # input file id -> the create tag it was uploaded for (this process)
        self.tag_of = self._tag_of_input  # no metadata on its batches: the input file says whose a batch is

    async def _upload(self, lines: list[bytes], tag: str) -> str:
        file_id = await super()._upload(lines, tag)
        self._uploaded[file_id] = tag
        return file_id

    def _tag_of_input(self, info: BatchInfo) -> str | None:
        """The tag of the create the batch's input file was uploaded for (None: not known, not ours)."""
        file_id = info.raw.get("input_file_id")
        return self._uploaded.get(file_id) if isinstance(file_id, str) else None

    async def recent(self, since: float) -> AsyncIterator[BatchInfo]:
        """The list, each batch's input file known by the create tag it was uploaded for: this process's
        uploads from memory, any other's (a run before a restart) from the file's name (`{tag}.jsonl`)."""
        async for info in OpenAIProvider.recent(self, since):
            file_id = info.raw.get("input_file_id")
            if isinstance(file_id, str) and file_id not in self._uploaded:
                tag = await self._tag_of_file(file_id, info.id)
                if tag is not None:
                    self._uploaded[file_id] = tag
            yield info

    async def _tag_of_file(self, file_id: str, batch: str) -> str | None:
        """The create tag in the name of an input file (`{tag}.jsonl`, as `_upload` names it); None for a file
        of another name or gone. Untrusted: the name is read only if it is a string of a tag's shape."""
        try:
            data = await self.http.call("GET", f"{self._files_url}/{file_id}", "file")
        except (errors.NotFound, errors.FatalError):
            return None
        try:
            name = text(document(data, f"batch {batch}: input file {file_id}"), "filename", f"file {file_id}")
        except errors.BadAnswer as err:
            log.warning("%s; the batch is not taken as ours", err)
            return None
        tag = name.removesuffix(".jsonl") if name and name.endswith(".jsonl") else ""
        return tag if _TAG.fullmatch(tag) else None
