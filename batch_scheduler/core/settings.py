"""Settings: one frozen dataclass, built once at the edge and passed down.

Precedence: command-line flags, then the process environment, then a `.env` file in the working
directory. Only `load_environment` reads `os.environ` and `.env`; nothing else in the package does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from batch_scheduler.core.errors import UsageError
from batch_scheduler.core.headers import parse_header, parse_header_lines
from batch_scheduler.core.options import JOB_OPTIONS, check_value, parse_size

MB = 1_000_000
log = logging.getLogger("batch_scheduler.settings")
_WARNED_BOTH: set[str] = set()
OWN_CREDENTIALS = "own-credential-chain"  # the key of a provider that finds its own (ProviderSpec.own_credentials)


@dataclass(frozen=True)
class JobsQueue:
    """A cap on how many jobs a provider runs at once (Vertex: 4 Claude jobs per project; Bedrock: 20 jobs in
    progress per model; Gemini: 100 batch jobs per project). Admission keeps a queue of that many jobs (`key`,
    counted in "jobs"), its limit learned down from `limit` by the provider's queue-full answers about jobs
    (`errors.QueueFull.jobs`), never below 1.

    `alone`: the batches of `models` count in this queue only (Vertex's Claude, which has no queue of
    requests). Otherwise every batch of the provider counts here and in its queue of requests or tokens
    (Gemini: a batch takes a job of the project's and tokens of its model's), and `models` is not read."""

    key: str  # the queue's name, as `status` shows it
    models: str  # a regular expression searched in a batch's model
    limit: int
    alone: bool = True
    per_model: bool = False  # one queue per model (Bedrock's quota): the job's --model, as a job runs one

    def holds(self, model: object) -> bool:
        return isinstance(model, str) and re.search(self.models, model) is not None

    def key_of(self, model: str | None) -> str:
        """The queue a job of `model` counts in."""
        return f"{self.key} of {model or '(no model)'}" if self.per_model else self.key

    def owns(self, key: str) -> bool:
        """Whether the queue `key` is one of these."""
        return key == self.key or (self.per_model and key.startswith(f"{self.key} of "))


@dataclass(frozen=True)
class ProviderSpec:
    """What a provider declares once, in its own module: limits, defaults, where its key and URL come from."""

    name: str
    max_requests: int  # per batch, the provider's hard limit
    max_bytes: int
    default_requests: int  # per batch when the user says nothing
    default_bytes: int
    key_env: tuple[str, ...]  # first set wins
    base_url_env: tuple[str, ...]
    default_base_url: str
    default_auth: str  # "x-api-key" or "bearer"
    model_env: tuple[str, ...] = ("CLAUDE_MODEL", "ANTHROPIC_MODEL")
    token_env: tuple[str, ...] = ()  # a bearer token used when no key is set (ANTHROPIC_AUTH_TOKEN)
    custom_headers_env: tuple[str, ...] = ()  # newline-separated `Name: value` lines, the twin of --header
    header_env: tuple[tuple[str, str], ...] = ()  # (variable, header) sent when the variable is set
    custom_id: str = r"[a-zA-Z0-9_-]{1,64}"  # what a custom_id must fully match
    custom_id_rule: str = "1-64 characters of a-z A-Z 0-9 _ -"  # the same, said to a user
    # The provider's queue limit (API-NOTES): what it counts, the documented lowest tier's figure (where
    # admission starts learning) and the highest tier's (the most --max-queued-requests /
    # --max-enqueued-tokens may say). "requests": requests waiting in the organisation's processing
    # queue; "tokens": estimated input tokens enqueued per model.
    queue_unit: str = "requests"
    queue_start: int = 200_000
    queue_max: int = 500_000
    # The fewest requests the provider accepts in one batch (Bedrock refuses a job under its minimum record
    # count): the cut never makes a smaller batch, and a job smaller than this is refused before anything goes.
    min_batch_requests: int = 1
    # The provider finds its own credentials (bedrock: botocore's chain); without a key in key_env, the key
    # is OWN_CREDENTIALS, which nothing sends.
    own_credentials: bool = False
    # The variables the provider's own credential chain reads (bedrock: botocore's), taken from `.env` and
    # the environment alike into Settings.credential_env and handed to the chain explicitly (a `.env` is
    # never copied into the process environment, where botocore alone would look).
    credential_env: tuple[str, ...] = ()
    jobs_queue: JobsQueue | None = None  # batches of some models count as jobs, in a queue of their own

    @property
    def queue_option(self) -> str:
        """The flag that caps this provider's queue."""
        return "--max-enqueued-tokens" if self.queue_unit == "tokens" else "--max-queued-requests"

    @property
    def key_hint(self) -> str:
        """How to name this provider's key to a user: `ANTHROPIC_API_KEY (or CLAUDE_API_KEY)`."""
        first, *rest = self.key_env
        return first + (f" (or {' or '.join(rest)})" if rest else "")

    @property
    def credential_hint(self) -> str:
        """The key's names and the token's: `ANTHROPIC_API_KEY (or CLAUDE_API_KEY), or ANTHROPIC_AUTH_TOKEN`."""
        return self.key_hint + "".join(f", or {t}" for t in self.token_env)

    @property
    def custom_id_re(self) -> re.Pattern[str]:
        return re.compile(self.custom_id)


@dataclass(frozen=True)
class RetryPolicy:
    """How HTTP calls are retried: data, not code."""

    attempts: int = 8
    deadline_s: float = 600.0
    initial_wait_s: float = 0.5
    max_wait_s: float = 30.0
    jitter: bool = True  # full jitter: wait uniformly in [0, computed]


@dataclass(frozen=True)
class Settings:
    """What a job runs with: the option table's fields (core.options), then the few a run needs that are
    not options (the key, the retry policy, the terminal). Every field has a default, so
    `Settings(model="m", batch_size=4)` works as for any dataclass."""

    # settings:start (generated from the option table: edit core/options.py, then `make settings`)
    provider: str = "anthropic"
    base_url: str = "https://api.anthropic.com"
    auth: str = "x-api-key"
    headers: tuple[tuple[str, str], ...] = ()  # --header
    anthropic_version: str = "2026-10-21"
    model: str | None = None
    http_timeout_s: float = 300.0  # --http-timeout
    inline_create_path: str = "/v1/batches"
    inline_status_path: str = "/v1/batches/{id}"
    inline_results_path: str = "/v1/batches/{id}/results"
    role_arn: str | None = None
    staging: str | None = None
    keep_staged: bool = False
    project: str | None = None
    location: str | None = None
    storage_url: str | None = None
    batch_size: int = 10_000
    batch_bytes: int = 200_000_000
    concurrency: int = 128
    max_queued_requests: int | None = None
    max_enqueued_tokens: int | None = None
    poll_min_s: float = 5.0  # --poll-min
    poll_max_s: float = 60.0  # --poll-max
    shards: int = 16
    max_attempts: int = 3
    max_unbilled_attempts: int = 8
    retry_wait_s: float = 10.0  # --retry-wait
    not_found_grace_s: float = 300.0  # --not-found-grace
    strict: bool = False
    template: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    id_field: str | None = None
    params: dict[str, Any] | None = None
    cache_system: bool = False
    model_field: str | None = None
    params_field: str | None = None
    dry_run: bool = False
    max_cost_usd: float | None = None  # --max-cost
    prices_file: str | None = None  # --prices
    count_sample: int = 20
    retry_cancelled: bool = False
    mode: str = "batch"
    finish_by: str | None = None
    at_deadline: str = "wait"
    window: tuple[str, ...] = ()
    realtime_concurrency: int = 8
    allow_unknown_model: bool = False
    prime_via: str = "realtime"
    retry_invalid: int = 0
    # settings:end
    api_key: str = field(default="", repr=False)  # never in a repr, a log line or a file
    # the provider's own credential chain's variables as found (ProviderSpec.credential_env): secrets too,
    # so never in a repr, a log line or a file either
    credential_env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    retry: RetryPolicy = field(default=RetryPolicy())
    progress: bool = False  # a live progress line on a terminal
    job_name: str = ""  # a daemon job's name: generated custom_ids carry it (sources.safe_id)
    verbose: bool = False

    def shaping(self) -> dict[str, Any]:
        """The options that decide how input is cut into batches and what each request says."""
        return {o.name: getattr(self, o.attr) for o in JOB_OPTIONS if o.shapes}

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def load_environment(cwd: str | os.PathLike | None = None) -> dict[str, str]:
    """The process environment over the `.env` file in `cwd`."""
    env_file = Path(cwd or os.getcwd()) / ".env"
    values = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file.exists() else {}
    values.update(os.environ)
    return values


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CR, LF and the like (a tab is fine)


def check_base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or _CONTROL.search(url) or " " in url:
        raise UsageError(f"--base-url {url!r}: expected http:// or https:// and a host, e.g. https://api.anthropic.com")
    return url


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None and v != "":
            return v
    return None


def provider_name(flags: Mapping[str, Any], env: Mapping[str, str]) -> str:
    return flags.get("provider") or env.get("BATCH_PROVIDER") or "anthropic"


def settings_from(flags: Mapping[str, Any], env: Mapping[str, str], spec: ProviderSpec, *,
                  template_file: bool = True) -> Settings:
    """Combine flags (None = not given) with the environment, for the provider `spec` declares.

    Each option is resolved generically from the table (flag, then its environment variables, then
    its default, checked for type and range); what depends on the provider comes from `spec`.
    A `template` naming an existing file is read from it, unless `template_file` is False (a daemon
    job's options file gives the template itself, and never makes the daemon read a file).
    Callers use `providers.build_settings`, which finds the spec. Raises UsageError.
    """
    values: dict[str, Any] = {}
    for o in JOB_OPTIONS:
        value = flags.get(o.name)
        if value is None:
            value = _first(*(env.get(n) for n in o.env))
        values[o.attr] = check_value(o, value, "") if value is not None else o.default
    values["provider"] = spec.name
    values["api_key"], values["auth"] = _credential(flags, env, spec)
    values["credential_env"] = tuple((name, str(env[name])) for name in spec.credential_env if env.get(name))
    base = _first(flags.get("base_url"), *(env.get(n) for n in spec.base_url_env), spec.default_base_url)
    if not base:  # a provider without a public URL (Azure: the user's own resource)
        raise UsageError(f"--provider {spec.name}: set {' or '.join(spec.base_url_env)} (or --base-url)")
    values["base_url"] = check_base_url(str(base).rstrip("/"))
    if flags.get("model") is None:
        values["model"] = _first(*(env.get(n) for n in spec.model_env))
    batch_size = values["batch_size"] = int(_first(flags.get("batch_size"), spec.default_requests))
    batch_bytes = values["batch_bytes"] = parse_size(_first(flags.get("batch_bytes"), spec.default_bytes))
    # a remainder under the floor joins the batch before it, so a batch may hold batch_size + floor - 1
    most = spec.max_requests - spec.min_batch_requests + 1
    if not spec.min_batch_requests <= batch_size <= most:
        raise UsageError(f"--batch-size {batch_size}: must be {spec.min_batch_requests:,}..{most:,} for provider "
                         f"{spec.name}")
    if not 1024 <= batch_bytes <= spec.max_bytes:
        raise UsageError(f"--batch-bytes {batch_bytes}: must be 1KB..{spec.max_bytes // MB} MB for provider "
                         f"{spec.name}")
    check_queue_caps(values, spec)
    if values["poll_max_s"] < values["poll_min_s"]:
        raise UsageError("--poll-min must be > 0 and --poll-max at least --poll-min")
    values["headers"] = _headers(values["headers"], env, spec)
    for name in ("anthropic_version", "inline_create_path", "inline_status_path", "inline_results_path"):
        if _CONTROL.search(values[name] or ""):
            raise UsageError(f"--{name.replace('_', '-')}: the value holds a line break or another control character")
    template = values["template"]
    if template and template_file and os.path.isfile(template):
        values["template"] = Path(template).read_text(encoding="utf-8")
    values["progress"] = bool(flags.get("progress"))
    values["verbose"] = bool(flags.get("verbose"))
    for switch in (o.attr for o in JOB_OPTIONS if o.type is bool):
        values[switch] = bool(values[switch])
    return Settings(**values)


def _credential(flags: Mapping[str, Any], env: Mapping[str, str], spec: ProviderSpec) -> tuple[str, str]:
    """(secret, how it is sent). The key wins; without one, the token (`ANTHROPIC_AUTH_TOKEN`) is sent
    as `Authorization: Bearer` unless --auth says otherwise. Both set: the key, as the official SDK does."""
    key = _first(flags.get("api_key"), *(env.get(n) for n in spec.key_env))
    token = _first(*(env.get(n) for n in spec.token_env))
    auth = flags.get("auth")
    if key and token and spec.name not in _WARNED_BOTH:
        _WARNED_BOTH.add(spec.name)  # once per process: the daemon builds settings for every job
        log.warning("both %s and %s are set: the key is used", spec.key_hint, " / ".join(spec.token_env))
    elif token:
        key, auth = token, auth or "bearer"
    secret = str(key or (OWN_CREDENTIALS if spec.own_credentials else ""))
    if "\r" in secret or "\n" in secret:
        raise UsageError(f"the API key holds a line break (CR or LF): check {spec.credential_hint} "
                         f"(a .env file saved with Windows line endings?)")
    return secret, auth or spec.default_auth


def _headers(flag_headers: Any, env: Mapping[str, str], spec: ProviderSpec) -> tuple[tuple[str, str], ...]:
    """Extra headers, later ones winning: those the environment names (`OPENAI_ORG_ID` ->
    `OpenAI-Organization`), then `ANTHROPIC_CUSTOM_HEADERS` lines, then each --header (as in the SDKs,
    where explicit headers beat the variable)."""
    out: list[tuple[str, str]] = [(header, env[variable].strip()) for variable, header in spec.header_env
                                  if env.get(variable, "").strip()]
    if any("\r" in v or "\n" in v for _, v in out):
        raise UsageError(f"{', '.join(v for v, _ in spec.header_env)}: a value holds a line break (CR or LF)")
    for variable in spec.custom_headers_env:
        if env.get(variable):
            out += parse_header_lines(env[variable], variable)
    out += [parse_header(h) for h in flag_headers]
    return tuple(out)
def check_queue_caps(values: Mapping[str, Any], spec: ProviderSpec) -> None:
    """--max-queued-requests / --max-enqueued-tokens: only the one the provider's queue counts, and no
    more than its highest documented tier holds. Raises UsageError naming the limit."""
    for name, unit in (("max_queued_requests", "requests"), ("max_enqueued_tokens", "tokens")):
        value = values.get(name)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if unit != spec.queue_unit:
            raise UsageError(f"{flag}: provider {spec.name} limits {spec.queue_unit} in its queue, not {unit}; "
                             f"use {spec.queue_option}")
        if value > spec.queue_max:
            raise UsageError(f"{flag} {value:,}: provider {spec.name} allows at most {spec.queue_max:,} "
                             f"{unit} in its queue (its highest tier)")


def join_url(base: str, path: str) -> str:
    """Join a base URL and a path without doubling `/v1` (the article's base ends in /v1)."""
    base = base.rstrip("/")
    path = "/" + path.lstrip("/")
    if base.endswith("/v1") and path.startswith("/v1/"):
        path = path[3:]
    return base + path
