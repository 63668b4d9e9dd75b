"""One row -> one request line: the prompt template, the options and the row's own fields (`Renderer`).

A row's custom id is its `--id-field`, or `<stem>-<row number>` (`safe_id`).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input.params import check_params
from batch_scheduler.providers import provider_class
from batch_scheduler.providers.base import encode

_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")

Item = bytes | str  # a request line, or what is wrong with the row (BLANK: nothing, skip silently)


class Fields:
    """The mapping `format_map` reads a row through: missing names are recorded, not raised."""

    __slots__ = ("row", "missing")

    def __init__(self, row: dict):
        self.row = row
        self.missing: list[str] = []

    def __getitem__(self, key: str) -> Any:
        try:
            value = self.row[key]
        except KeyError:
            self.missing.append(key)
            return ""
        if type(value) is str:
            return value
        return "" if value is None else orjson.dumps(value).decode()



def safe_id(stem: str, row_number: int) -> str:
    """`<file stem>-<row number>` in custom_id characters, at most 64 (the stem is cut, not the number).

    A daemon job's stem is the job's name (its input is always `input.csv`): jobs sharing an account
    then never share custom_ids, which is what tells one job's batch from another's.

    The row number counts data rows from 1 (`articles-1` is the first row after the header); blank
    lines and the extra lines of multi-line fields do not count; bad rows do (fixing one later does not
    move the ids after it).
    """
    suffix = f"-{row_number}"
    return _UNSAFE.sub("_", stem)[:64 - len(suffix)] + suffix


class Renderer:
    """Turns one row (a dict) into a request line for the job's provider.

    What the request says, later entries winning: the template's prompt, --model and --max-tokens,
    --system (a block with cache_control under --cache-system), --params, the row's --params-field
    object, the row's --model-field model. The options are checked once (`template_sources`); a row's
    own fields are checked with it, and a bad one makes the row a rejected line naming the field.
    """

    def __init__(self, settings: Settings, stem: str):
        self.template = settings.template or ""
        self.system: str | list | None = settings.system
        if settings.system and settings.cache_system:
            self.system = [{"type": "text", "text": settings.system, "cache_control": {"type": "ephemeral"}}]
        self.model = settings.model
        self.max_tokens = settings.max_tokens
        self.id_field = settings.id_field
        self.params: dict = settings.params or {}
        self.model_field = settings.model_field
        self.params_field = settings.params_field
        self.version = settings.anthropic_version
        self.stem = stem
        self.openai = provider_class(settings.provider).row_api == "chat"
        self.max_bytes = settings.batch_bytes  # what one rendered prompt may take: a request must fit in a batch

    def __call__(self, row: dict, row_number: int) -> Item:
        """The request line of the `row_number`-th row (from 1), or what is wrong with the row."""
        cid = self._custom_id(row, row_number)
        if cid is None:
            return f"missing id field {self.id_field!r}"
        fields = Fields(row)
        try:
            text = self.template.format_map(fields)
        except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
            return f"the template cannot render this row: {type(exc).__name__}: {exc}"
        if len(text) > self.max_bytes and (n := len(text.encode())) > self.max_bytes:  # a second guard
            return (f"the template renders {n:,} bytes for this row, over the cap of {self.max_bytes:,} bytes for "
                    f"one request (--batch-bytes)")
        if fields.missing:
            names = ", ".join(repr(n) for n in dict.fromkeys(fields.missing))
            return f"missing field{'s' if len(set(fields.missing)) > 1 else ''} {names} for the template"
        model, params = self.model, self.params
        if self.model_field:
            model, problem = self._model_of(row)
            if problem:
                return problem
        if self.params_field:
            row_params = self._params_of(row)
            if isinstance(row_params, str):
                return row_params
            params = row_params
        return encode(self._request(cid, text, model, params))

    def _model_of(self, row: dict) -> tuple[str | None, str | None]:
        """(the row's model: its --model-field, else --model; None) or (None, what is wrong)."""
        value = row.get(self.model_field)
        if value is None or value == "":
            if self.model:
                return self.model, None
            return None, f"field {self.model_field!r} is empty and no --model is given"
        if type(value) is not str:
            return None, f"field {self.model_field!r} must name a model (got {type(value).__name__})"
        return value, None

    def _params_of(self, row: dict) -> dict | str:
        """--params with the row's own object over it, checked; or what is wrong with the row's object."""
        cell = row.get(self.params_field)
        if cell is None or cell == "":
            return self.params
        name = self.params_field
        if type(cell) is str:
            try:
                cell = orjson.loads(cell)
            except orjson.JSONDecodeError as exc:
                return f"field {name!r} is not JSON: {exc}"
        if type(cell) is not dict:
            return f"field {name!r} must hold a JSON object (got {type(cell).__name__})"
        merged = {**self.params, **cell}
        problem = check_params(merged, openai=self.openai, anthropic_version=self.version,
                               max_tokens=self.max_tokens, where=f"field {name!r}: params")
        return problem or merged

    def _custom_id(self, row: dict, row_number: int) -> str | None:
        if not self.id_field:
            return safe_id(self.stem, row_number)
        value = row.get(self.id_field)
        if value is None or value == "":
            return None
        return value if type(value) is str else orjson.dumps(value).decode()

    def _request(self, cid: str, text: str, model: str | None, extra: dict) -> dict:
        user = {"role": "user", "content": text}
        if self.openai:
            messages = [{"role": "system", "content": self.system}, user] if self.system else [user]
            body: dict = {"model": model, "max_tokens": self.max_tokens, **extra, "messages": messages}
            if "max_completion_tokens" in extra and "max_tokens" not in extra:
                del body["max_tokens"]  # the newer models take max_completion_tokens alone
            return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}
        params: dict = {"model": model, "max_tokens": self.max_tokens}
        if self.system:
            params["system"] = self.system
        params.update(extra)
        params["messages"] = [user]
        return {"custom_id": cid, "params": params}
