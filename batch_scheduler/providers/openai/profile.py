"""What differs between the OpenAI-style files + batches APIs, as data: a provider profile.

OpenAI, Azure OpenAI, Groq, Together and Mistral all upload a JSONL file, create a batch on it, poll it and
download an output and an error file; they differ in the purpose of the upload, the paths, the form
of a line, the create body, how a status is spelled, how a create answer is wrapped, how a list
pages and how `errors` is shaped (PROVIDERS.md §4, §6, §7). `OpenAIProvider` reads each of these from
its class's `profile` instead of hard-coding them; the providers of like.py are that class
with another profile and spec.

Status spellings are read in any case. A spelling the profile does not know is logged once (per
spelling, per process) and read as still running, never a crash: a provider that adds a state must
not end a job.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from batch_scheduler.providers.base import BatchState

log = logging.getLogger("batch_scheduler.providers")

# OpenAI's eight statuses (API-NOTES §2), lowercase: what each means for the job
OPENAI_STATUSES: Mapping[str, BatchState] = {
    "validating": BatchState.IN_PROGRESS, "in_progress": BatchState.IN_PROGRESS,
    "finalizing": BatchState.IN_PROGRESS, "cancelling": BatchState.IN_PROGRESS,
    "completed": BatchState.ENDED, "expired": BatchState.ENDED, "cancelled": BatchState.ENDED,
    "failed": BatchState.FAILED,
}
_UNKNOWN_SEEN: set[tuple[str, str]] = set()

LineForm = Literal["request", "body"]  # {custom_id, method, url, body} | {custom_id, body}
# ?after=last_id | ?cursor= + paging.next_cursor | a bare array | ?page=N + total (Mistral)
ListStyle = Literal["after", "cursor", "array", "page"]


@dataclass(frozen=True)
class Profile:
    """One OpenAI-style batch API. The defaults are OpenAI's own."""

    name: str = "openai"
    files_path: str = "/v1/files"
    batches_path: str = "/v1/batches"
    purpose: str = "batch"  # the upload's `purpose` field (Together: batch-api)
    line_form: LineForm = "request"  # the lines of the uploaded file (the job's lines are always `request`)
    endpoint_without_v1: bool = False  # create's `endpoint` is `/chat/completions` (Azure), not `/v1/...`
    completion_window: str | None = "24h"  # None: the create body has none
    model_field: str | None = None  # the create body names the file's model under this key (Together: model_id)
    input_files: bool = False  # the create body names its file in a list, `input_files: [id]` (Mistral)
    create_wrap: str | None = None  # the create answer holds the batch under this key (Together: `job`)
    keeps_metadata: bool = True  # a batch keeps the create's metadata: lost creates are adopted by tag
    list_style: ListStyle = "after"
    statuses: Mapping[str, BatchState] = field(default_factory=lambda: OPENAI_STATUSES)
    unvalidated: frozenset[str] = frozenset({"validating", "failed"})  # not yet in the provider's queue
    max_file_requests: int = 50_000  # named in messages and enforced by the simulator

    def create_endpoint(self, url: str) -> str:
        """The create body's `endpoint` for lines whose `url` is `url`."""
        if self.endpoint_without_v1 and url.startswith("/v1/"):
            return url[3:]
        return url

    def state_of(self, status: str | None, what: str) -> BatchState:
        """The state a status spelling means, in any case; a spelling never seen is logged once and
        read as still running."""
        key = (status or "").lower()
        state = self.statuses.get(key)
        if state is None:
            if (self.name, key) not in _UNKNOWN_SEEN:
                _UNKNOWN_SEEN.add((self.name, key))
                log.warning("%s: status %r is not one %s documents; read as still running (said once)",
                            what, status, self.name)
            return BatchState.IN_PROGRESS
        return state

    def validated(self, status: str | None) -> bool:
        return (status or "").lower() not in self.unvalidated
