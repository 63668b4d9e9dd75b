"""What the simulator does: one mutable dataclass, changed at runtime by tests and `POST /_sim/config`.

Every field is also a `simulate` flag of the same name (cli.py) where a user would want it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Provider limits the simulator enforces (Anthropic's are fields: tests shrink them).
OPENAI_MAX_REQUESTS = 50_000
INLINE_MAX_REQUESTS = 10_000
AZURE_MAX_REQUESTS = 100_000
GROQ_MAX_REQUESTS = 50_000
TOGETHER_MAX_REQUESTS = 50_000
MISTRAL_MAX_REQUESTS = 1_000_000  # ongoing requests per workspace (a secondary source): no per-file limit found
GEMINI_MAX_BATCHES = 100
ORGANIZATION = "org-simulator0000000000000"
# Every kind of failing call (fail_rate draws from these, or from fail_kinds); here, not in faults.py, so
# the CLI's parser is built without loading the server's modules.
FAULT_KINDS = ("rate_limit_error", "api_error", "timeout_error", "conflict_error", "overloaded_error", "dropped")
# The kinds of failing call all_faults draws from; real_faults adds conflict_error (FAULT_KINDS).
SURVIVABLE_KINDS = ("rate_limit_error", "api_error", "timeout_error", "overloaded_error", "dropped")


@dataclass
class SimConfig:
    valid_keys: set[str] | None = None  # None: any non-empty key
    require_version: bool = True  # Anthropic: 400 without `anthropic-version`
    processing_s: float = 0.0  # create -> ended, whatever the batch's size
    processing_jitter: float = 0.0  # each batch's duration is processing_s x (1 ± jitter), drawn at create
    processing_per_request_s: float = 0.0  # added per request (0: latency does not grow with size)
    cancel_s: float = 0.0  # canceling -> ended
    # -- transient faults of the calls themselves
    fail_rate: float = 0.0  # calls answered 429 / 500 / 504 / 409 / 529 (Anthropic) or 503 (OpenAI), or dropped
    fail_kinds: list[str] | None = None  # which of faults.FAULT_KINDS fail_rate draws from (None: all)
    lost_create_rate: float = 0.0  # creates that create a batch and then drop the connection
    ghost_404_s: float = 0.0  # retrieve / results answer 404 for this long after a batch's create
    # -- what comes back in the results
    errored_rate: float = 0.0  # results `errored` with a transient kind
    invalid_rate: float = 0.0  # results `errored` with invalid_request_error
    expired_rate: float = 0.0  # results `expired`
    missing_rate: float = 0.0  # requests absent from their batch's results (counts still include them)
    request_timeout_rate: float = 0.0  # OpenAI: error-file lines with code `request_timeout`
    cut_rate: float = 0.0  # results downloads cut short mid-line
    invalid_json_rate: float = 0.0  # answers asked for JSON of a schema that do not fit it (structured.py)
    params_at_create: bool = False  # Anthropic: params checked at create (400 naming requests.N), as some
    #                                 proxies do; the real API checks them while processing (errored results)
    # -- limits of the organisation
    queue_limit: int | None = None  # Anthropic / inline: requests queued across all batches (429 at create)
    enqueued_token_limit: int | None = None  # OpenAI: input tokens enqueued per model (accepted, then failed)
    enqueued_token_limits: dict[str, int] = field(default_factory=dict)  # per-model overrides of the above
    batch_fail_rate: float = 0.0  # OpenAI batches failed as a whole (token_limit_exceeded) at random
    spend_cap: int | None = None  # requests created after which creates get the spend-limit 429
    billing_error: bool = False  # every API call answers 402 billing_error (credit balance too low)
    retry_after_s: int = 1  # the `retry-after` of a 429 (whole seconds, as the real header)
    seed: int | None = None
    max_requests: int = 100_000  # Anthropic, per batch (over it: 400, schema maxItems)
    max_body_bytes: int = 256 * 1024 * 1024  # Anthropic, per batch (over it: 413)
    openai_max_requests: int = OPENAI_MAX_REQUESTS
    inline_max_requests: int = INLINE_MAX_REQUESTS
    organization: str = ORGANIZATION  # named in OpenAI's token-limit message
    bedrock_s3_endpoint: str | None = None  # Bedrock: the S3 its jobs read and write (moto's server in tests)
    bedrock_min_records: int = 100  # Bedrock: fewer records in a job is a ValidationException
    bedrock_max_records: int = 50_000
    bedrock_jobs_limit: int = 20  # Bedrock: jobs submitted or in progress per model (ServiceQuotaExceeded)
    bedrock_refused_roles: list[str] = field(default_factory=list)  # Bedrock: roles create refuses (iam:PassRole)
    bedrock_usage_absent_rate: float = 0.0  # Bedrock: answers whose output line reports no usage (the manifest does)
    bedrock_lines_lost_rate: float = 0.0  # Bedrock: processed records left out of the output file (the manifest
    #                                       counts them)
    # -- Azure OpenAI (azure.py)
    azure_max_requests: int = AZURE_MAX_REQUESTS
    azure_batch_deployments: list[str] | None = None  # the Global-Batch deployments (None: every one is)
    azure_variants: bool = False  # what Azure's samples show: `Validating`, ISO-8601 times, null counts
    # -- Groq and Together (groq.py, together.py)
    groq_max_requests: int = GROQ_MAX_REQUESTS
    groq_variants: bool = False  # what Groq's guide shows: `errors` as a bare array
    together_max_requests: int = TOGETHER_MAX_REQUESTS
    together_variants: bool = False  # what Together's legacy SDK knows: `CANCELING`
    # -- Mistral (mistral.py)
    mistral_max_requests: int = MISTRAL_MAX_REQUESTS
    gemini_max_batches: int = GEMINI_MAX_BATCHES  # Gemini: unfinished batch jobs per project (429 at create)
    # -- Vertex AI and its Cloud Storage (google/vertex.py, google/gcs.py, google/cloud.py)
    vertex_projects: list[str] | None = None  # the projects that exist (None: any)
    gcs_buckets: list[str] | None = None  # the buckets that exist (None: any)
    vertex_claude_jobs: int = 4  # Claude batch jobs running at once per project (a create past it: 429)
    vertex_expired_rate: float = 0.0  # jobs that end EXPIRED (queued too long) with no output at all
    vertex_paused_rate: float = 0.0  # jobs PAUSED for a stretch of their life
    vertex_gcs_endpoint: str | None = None  # Vertex: another server's Cloud Storage its jobs read and write (a GCS
    # emulator in the tests); None: the simulator's own (gcs.py)
    # -- the realtime endpoints (POST /v1/messages, /v1/chat/completions: realtime.py)
    realtime_rpm: int | None = None  # requests per minute per key (over it: 429 with retry-after)
    realtime_latency_s: float = 0.0  # each realtime call takes this long (wall-clock seconds) to answer
    realtime_window_s: float = 60.0  # the span realtime_rpm counts over (shorter: scaled time in tests, bench)
    # -- the prompt cache (counting.py)
    cache_as_measured: bool = False  # writes readable only once the writing request completed (a batch's end),
    #                                  never by the requests of the same batch; cache_control marks not in the key

    @classmethod
    def all_faults(cls, **changes: Any) -> SimConfig:
        """The classic faults, at rates a well-behaved client must survive: calls failing (429, 500,
        504, 529, dropped), create answers lost, transient and expired results, cut downloads."""
        preset = dict(fail_rate=0.05, errored_rate=0.03, expired_rate=0.01, cut_rate=0.10,
                      lost_create_rate=0.02, fail_kinds=list(SURVIVABLE_KINDS))
        return cls(**{**preset, **changes})

    @classmethod
    def real_faults(cls, **changes: Any) -> SimConfig:
        """`all_faults` plus what real providers were seen to do (`simulate --faults`): 409 conflict_error
        in the mix of failing calls, a 404 for the first second of every batch, 0.5% of requests
        missing from their results, 1% of OpenAI requests timed out, Azure's answers as its samples
        show them (`azure_variants`), Groq's `errors` array and Together's `CANCELING` (`groq_variants`,
        `together_variants`), 2% of Vertex jobs expired unrun and 10% paused a while. No spend cap:
        that one ends a run by design."""
        preset = dict(ghost_404_s=1.0, missing_rate=0.005, request_timeout_rate=0.01, fail_kinds=None,
                      azure_variants=True, groq_variants=True, together_variants=True, vertex_expired_rate=0.02,
                      vertex_paused_rate=0.1)
        return cls.all_faults(**{**preset, **changes})

    def token_limit(self, model: str) -> int | None:
        return self.enqueued_token_limits.get(model, self.enqueued_token_limit)

    def update(self, fields: dict[str, Any]) -> None:
        """Set fields from JSON-ish values (`valid_keys` as a list). Raises ValueError on an unknown field."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        for name, value in fields.items():
            if name == "valid_keys" and value is not None:
                value = set(value)
            if name == "azure_batch_deployments" and value is not None:
                value = list(value)
            if name == "bedrock_refused_roles":
                value = list(value or [])
            if name == "fail_kinds" and value is not None:
                value = list(value)
            if name == "enqueued_token_limits":
                value = dict(value or {})
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        if self.valid_keys is not None:
            doc["valid_keys"] = sorted(self.valid_keys)
        return doc
