"""What the simulator does: one mutable dataclass, changed at runtime by tests and `POST /_sim/config`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Provider limits the simulator enforces (Anthropic's are fields: tests shrink them).
OPENAI_MAX_REQUESTS = 50_000
INLINE_MAX_REQUESTS = 10_000


@dataclass
class SimConfig:
    valid_keys: set[str] | None = None  # None: any non-empty key
    require_version: bool = True  # Anthropic: 400 without `anthropic-version`
    processing_s: float = 0.0  # create -> ended
    processing_per_request_s: float = 0.0  # added per request
    cancel_s: float = 0.0  # canceling -> ended
    fail_rate: float = 0.0  # calls answered with a transient fault (429, 500, 529, 503, dropped)
    lost_create_rate: float = 0.0  # creates that create a batch and then drop the connection
    errored_rate: float = 0.0  # results `errored` with a transient kind
    invalid_rate: float = 0.0  # results `errored` with invalid_request_error
    expired_rate: float = 0.0  # results `expired`
    cut_rate: float = 0.0  # results downloads cut short mid-line
    batch_fail_rate: float = 0.0  # OpenAI batches failed as a whole (enqueued token limit), not in all_faults
    queue_limit: int | None = None  # requests processing across all batches
    retry_after_s: float = 0.05
    seed: int | None = None
    max_requests: int = 100_000  # Anthropic, per batch
    max_body_bytes: int = 256 * 1024 * 1024  # Anthropic, per batch
    openai_max_requests: int = OPENAI_MAX_REQUESTS
    inline_max_requests: int = INLINE_MAX_REQUESTS

    @classmethod
    def all_faults(cls, **changes: Any) -> SimConfig:
        """Every fault on, at rates a well-behaved client must survive."""
        preset = dict(fail_rate=0.05, errored_rate=0.03, expired_rate=0.01, cut_rate=0.10,
                      lost_create_rate=0.02)
        return cls(**{**preset, **changes})

    def update(self, fields: dict[str, Any]) -> None:
        """Set fields from JSON-ish values (`valid_keys` as a list). Raises ValueError on an unknown field."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        for name, value in fields.items():
            if name == "valid_keys" and value is not None:
                value = set(value)
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        if self.valid_keys is not None:
            doc["valid_keys"] = sorted(self.valid_keys)
        return doc
