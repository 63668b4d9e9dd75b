"""Reading a Bedrock job's output: its `manifest.json.out`, and the tokens its lines do not report.

Bedrock writes, beside each `{input}.jsonl.out`, a `manifest.json.out` summing the job up
(batch-inference-results): `{totalRecordCount, processedRecordCount, successRecordCount,
errorRecordCount, inputTokenCount, outputTokenCount}`. It is untrusted like every answer: each field is
read on its own (a whole number >= 0, or absent); a manifest that is not a JSON object, or a field of
another shape, is named once in a warning and not used. It is good for two things:

- **completeness**: when the output file has fewer record lines than the manifest says were processed,
  the file lost some; a warning says how many (the collector sends every request the file leaves out
  again: `missing_from_results`, never lost);
- **tokens for the cost** where an answer reports none (a model whose InvokeModel answer carries no
  `usage`): what the manifest counts beyond what the lines report is spread over those answers, as
  they come, each getting an even share of what is left; the last such answer is held back to the end
  of the file and gets the remainder, so the batch's tokens are the manifest's exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from batch_scheduler.providers.answers import shown
from batch_scheduler.providers.base import encode

log = logging.getLogger("batch_scheduler.providers")

MANIFEST_NAME = "manifest.json.out"
_FIELDS = {"total": "totalRecordCount", "processed": "processedRecordCount", "succeeded": "successRecordCount",
           "errored": "errorRecordCount", "input_tokens": "inputTokenCount", "output_tokens": "outputTokenCount"}


@dataclass(frozen=True)
class Manifest:
    """A job's `manifest.json.out`; None for a field it does not hold."""

    total: int | None = None
    processed: int | None = None
    succeeded: int | None = None
    errored: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


def read_manifest(data: bytes, what: str) -> Manifest | None:
    """The manifest in `data`, each field checked; None (after one warning naming what is wrong) otherwise."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        log.warning("%s: not JSON (%s); not used", what, exc)
        return None
    if not isinstance(doc, dict):
        log.warning("%s: expected a JSON object, got %s; not used", what, shown(doc))
        return None
    found: dict[str, int] = {}
    for name, field in _FIELDS.items():
        value = doc.get(field)
        if value is None:
            continue
        if type(value) is not int or value < 0:
            log.warning("%s: %s is %s, expected a whole number >= 0; the manifest is not used", what, field,
                        shown(value))
            return None
        found[name] = value
    return Manifest(**found)


@dataclass
class OutputLine:
    """One output line as read (bedrock_lines.output_line)."""

    line: bytes | None  # the result line to keep; None for a pad's answer (dropped)
    record: bool = False  # the line of a record (it names its recordId): counted against the manifest
    succeeded: bool = False
    reported: tuple[int, int] | None = None  # (input, output) tokens the answer reports; None: none reported
    doc: dict[str, Any] | None = None  # a succeeded answer reporting none: its result line, for the usage


class OutputTally:
    """Counts an output file's lines against its manifest and gives the answers that report no tokens a
    share of what the manifest counts (see the module docstring). One per download."""

    def __init__(self, manifest: Manifest | None, what: str):
        self._manifest = manifest
        self._what = what
        self.records = 0
        self._pool = [0, 0]
        self._left = 0
        self._spread = manifest is not None and manifest.input_tokens is not None and manifest.output_tokens is not None
        if manifest is not None and self._spread:
            self._pool = [manifest.input_tokens or 0, manifest.output_tokens or 0]
            self._left = manifest.succeeded if manifest.succeeded is not None else manifest.processed or 0
        self._held: OutputLine | None = None

    def take(self, block: list[OutputLine]) -> list[bytes]:
        """The lines of a block to keep, after counting them (one line may be held back to the end)."""
        kept: list[bytes] = []
        for out in block:
            self.records += out.record
            if out.succeeded:
                self._left = max(self._left - 1, 0)
                if out.reported is not None:
                    self._pool = [max(p - n, 0) for p, n in zip(self._pool, out.reported, strict=True)]
                elif out.doc is not None and self._spread:
                    share = [p // (self._left + 1) for p in self._pool]
                    self._pool = [p - s for p, s in zip(self._pool, share, strict=True)]
                    _add_usage(out.doc, share)
                    if self._held is not None:
                        kept.append(_encoded(self._held))
                    self._held = out
                    continue
            if out.line is not None:
                kept.append(out.line)
        return kept

    def end(self) -> list[bytes]:
        """The line held back, with what is left of the manifest's tokens; warns when lines are missing."""
        manifest = self._manifest
        if manifest is not None and manifest.processed is not None and self.records < manifest.processed:
            log.warning("%s: manifest.json.out counts %s processed records, the output file has %s; the %s "
                        "missing are sent again", self._what, f"{manifest.processed:,}", f"{self.records:,}",
                        f"{manifest.processed - self.records:,}")
        if self._held is None:
            return []
        held, self._held = self._held, None
        _add_usage(held.doc or {}, self._pool)
        self._pool = [0, 0]
        return [_encoded(held)]


def _add_usage(doc: dict[str, Any], tokens: list[int]) -> None:
    message = doc["result"]["message"]
    usage = message.get("usage") or {}
    message["usage"] = {**usage, "input_tokens": (usage.get("input_tokens") or 0) + tokens[0],
                        "output_tokens": (usage.get("output_tokens") or 0) + tokens[1]}


def _encoded(out: OutputLine) -> bytes:
    return encode(out.doc) if out.doc is not None else out.line or b""
