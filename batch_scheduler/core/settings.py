"""Settings: one frozen dataclass, built once at the edge and passed down.

Precedence: command-line flags, then the process environment, then a `.env` file in the working
directory. Only `load_environment` reads `os.environ` and `.env`; nothing else in the package does.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from batch_scheduler.core.errors import UsageError

MB = 1_000_000


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

    @property
    def key_hint(self) -> str:
        """How to name this provider's key to a user: `ANTHROPIC_API_KEY (or CLAUDE_API_KEY)`."""
        first, *rest = self.key_env
        return first + (f" (or {' or '.join(rest)})" if rest else "")


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
    provider: str = "anthropic"
    api_key: str = field(default="", repr=False)
    base_url: str = "https://api.anthropic.com"
    auth: str = "x-api-key"  # or "bearer"
    headers: tuple[tuple[str, str], ...] = ()
    anthropic_version: str = "2023-06-01"
    model: str | None = None
    batch_size: int = 10_000
    batch_bytes: int = 200 * MB
    concurrency: int = 8
    poll_min_s: float = 5.0
    poll_max_s: float = 60.0
    shards: int = 16
    max_attempts: int = 3
    strict: bool = False
    dry_run: bool = False
    max_cost_usd: float | None = None
    retry_cancelled: bool = False
    http_timeout_s: float = 300.0
    retry: RetryPolicy = RetryPolicy()
    # inline proxy paths, joined onto base_url
    inline_create_path: str = "/v1/batches"
    inline_status_path: str = "/v1/batches/{id}"
    inline_results_path: str = "/v1/batches/{id}/results"
    # rows + template input
    template: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    id_field: str | None = None
    prices_file: str | None = None
    progress: bool = False
    verbose: bool = False

    def shaping(self) -> dict[str, Any]:
        """The options that decide how input is cut into batches and what each request says."""
        return {
            "provider": self.provider, "batch_size": self.batch_size, "batch_bytes": self.batch_bytes,
            "model": self.model, "shards": self.shards, "template": self.template,
            "system": self.system, "max_tokens": self.max_tokens, "id_field": self.id_field,
        }

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def load_environment(cwd: str | os.PathLike | None = None) -> dict[str, str]:
    """The process environment over the `.env` file in `cwd`."""
    env_file = Path(cwd or os.getcwd()) / ".env"
    values = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file.exists() else {}
    values.update(os.environ)
    return values


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": MB, "mb": MB, "mib": 1 << 20,
          "g": 1000 * MB, "gb": 1000 * MB, "gib": 1 << 30}


def parse_size(text: str | int) -> int:
    """'200MB', '256 MiB', '1048576' -> bytes."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(text)
    unit = (m.group(2) or "").lower() if m else None
    if not m or unit not in _UNITS:
        raise UsageError(f"cannot read size {text!r}: use a number of bytes or e.g. 200MB, 256MiB")
    return int(float(m.group(1)) * _UNITS[unit])


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"--header {text!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None and v != "":
            return v
    return None


def provider_name(flags: Mapping[str, Any], env: Mapping[str, str]) -> str:
    return flags.get("provider") or env.get("BATCH_PROVIDER") or "anthropic"


def settings_from(flags: Mapping[str, Any], env: Mapping[str, str], spec: ProviderSpec) -> Settings:
    """Combine flags (None = not given) with the environment, for the provider `spec` declares.

    Callers use `providers.build_settings`, which finds the spec. Raises UsageError.
    """
    provider = spec.name
    key = _first(flags.get("api_key"), *(env.get(n) for n in spec.key_env))
    base = _first(flags.get("base_url"), *(env.get(n) for n in spec.base_url_env), spec.default_base_url)
    auth = flags.get("auth") or spec.default_auth
    if auth not in ("x-api-key", "bearer"):
        raise UsageError(f"--auth {auth!r}: choose x-api-key or bearer")
    max_n, max_bytes = spec.max_requests, spec.max_bytes
    def_n, def_bytes = spec.default_requests, spec.default_bytes
    batch_size = int(_first(flags.get("batch_size"), def_n))
    batch_bytes = parse_size(_first(flags.get("batch_bytes"), def_bytes))
    if not 1 <= batch_size <= max_n:
        raise UsageError(f"--batch-size {batch_size}: must be 1..{max_n:,} for provider {provider}")
    if not 1024 <= batch_bytes <= max_bytes:
        raise UsageError(f"--batch-bytes {batch_bytes}: must be 1KB..{max_bytes // MB} MB for provider {provider}")
    concurrency = int(_first(flags.get("concurrency"), 8))
    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    poll_min = float(_first(flags.get("poll_min"), 5.0))
    poll_max = float(_first(flags.get("poll_max"), 60.0))
    if poll_min <= 0 or poll_max < poll_min:
        raise UsageError("--poll-min must be > 0 and --poll-max at least --poll-min")
    shards = int(_first(flags.get("shards"), 16))
    if not 1 <= shards <= 4096:
        raise UsageError("--shards must be 1..4096")
    max_attempts = int(_first(flags.get("max_attempts"), 3))
    if max_attempts < 1:
        raise UsageError("--max-attempts must be at least 1")
    headers = tuple(parse_header(h) for h in flags.get("header") or ())
    template = flags.get("template")
    if template and os.path.isfile(template):
        template = Path(template).read_text(encoding="utf-8")
    max_tokens = flags.get("max_tokens")
    if max_tokens is not None and int(max_tokens) < 1:
        raise UsageError("--max-tokens must be at least 1")
    max_cost = flags.get("max_cost")
    return Settings(
        provider=provider,
        api_key=key or "",
        base_url=str(base).rstrip("/"),
        auth=auth,
        headers=headers,
        anthropic_version=flags.get("anthropic_version") or env.get("ANTHROPIC_VERSION") or "2023-06-01",
        model=_first(flags.get("model"), *(env.get(n) for n in spec.model_env)),
        batch_size=batch_size,
        batch_bytes=batch_bytes,
        concurrency=concurrency,
        poll_min_s=poll_min,
        poll_max_s=poll_max,
        shards=shards,
        max_attempts=max_attempts,
        strict=bool(flags.get("strict")),
        dry_run=bool(flags.get("dry_run")),
        max_cost_usd=float(max_cost) if max_cost is not None else None,
        retry_cancelled=bool(flags.get("retry_cancelled")),
        http_timeout_s=float(_first(flags.get("http_timeout"), 300.0)),
        inline_create_path=_first(flags.get("inline_create_path"), env.get("INLINE_CREATE_PATH"), "/v1/batches"),
        inline_status_path=_first(flags.get("inline_status_path"), env.get("INLINE_STATUS_PATH"),
                                  "/v1/batches/{id}"),
        inline_results_path=_first(flags.get("inline_results_path"), env.get("INLINE_RESULTS_PATH"),
                                   "/v1/batches/{id}/results"),
        template=template,
        system=flags.get("system"),
        max_tokens=int(max_tokens) if max_tokens is not None else None,
        id_field=flags.get("id_field"),
        prices_file=_first(flags.get("prices"), env.get("BATCH_PRICES_FILE")),
        progress=bool(flags.get("progress")),
        verbose=bool(flags.get("verbose")),
    )


def join_url(base: str, path: str) -> str:
    """Join a base URL and a path without doubling `/v1` (the article's base ends in /v1)."""
    base = base.rstrip("/")
    path = "/" + path.lstrip("/")
    if base.endswith("/v1") and path.startswith("/v1/"):
        path = path[3:]
    return base + path
