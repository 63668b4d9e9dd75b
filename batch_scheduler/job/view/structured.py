"""Answers checked against `response_model=`: valid ones are data, invalid ones say why.

`Judge(model)` is what the collector asks of each succeeded answer: None when its JSON (a tool call's
input, or the text: `answer.answer_json`) validates against the model, else the line to keep instead,
the provider's own with `"validation_error": "..."` added. That key is how everything downstream knows
the answer was invalid (status `invalid` in `to_pandas` and `export`, the reason in `error`), with no
model at hand. `instance(doc, model)` is a final line's answer as a model instance (`read_results(...,
model=...)`), None when it has none or it does not validate. OUT/response_model.json names the model's
fields (`remember_model`): `to_pandas(out)` makes them columns by default (`fields_of`).
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from batch_scheduler.core.durable import write_file
from batch_scheduler.job.view.answer import answer_json

INVALID_KEY = "validation_error"  # added to a result line whose answer did not validate
MODEL_FILE = "response_model.json"  # in OUT: the model's name and fields, so to_pandas makes them columns
_ERROR_CHARS = 500


def invalid_reason(doc: dict) -> str | None:
    """Why a final line's answer did not validate (None: it did, or no model checked it)."""
    reason = doc.get(INVALID_KEY)
    return reason if isinstance(reason, str) else None


class Judge:
    """A succeeded answer against `model` (a pydantic.BaseModel class)."""

    def __init__(self, model: Any):
        self.model = model

    def problem(self, doc: dict) -> str | None:
        """What is wrong with the answer of result line `doc`; None when it validates."""
        import pydantic

        data = answer_json(doc)
        if data is None:
            return "the answer holds no JSON"
        try:
            self.model.model_validate(data)
        except pydantic.ValidationError as err:
            return summary_of(err)
        return None

    def __call__(self, line: bytes) -> bytes | None:
        """None for a valid answer, else the line to keep instead (see the module docstring)."""
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None  # not ours to judge: the provider's reading of the line decides
        if not isinstance(doc, dict) or (reason := self.problem(doc)) is None:
            return None
        doc[INVALID_KEY] = reason
        return orjson.dumps(doc)


def summary_of(err: Any) -> str:
    """A ValidationError in one line: `N error(s): field: message; ...`, cut to a readable length."""
    parts = [f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in err.errors()]
    text = f"{len(parts)} validation error{'s' if len(parts) != 1 else ''}: " + "; ".join(parts)
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"


def instance(doc: dict, model: Any) -> Any:
    """The answer of final line `doc` as a `model` instance; None when it has none or it does not validate."""
    import pydantic

    if invalid_reason(doc) is not None:
        return None
    data = answer_json(doc)
    if data is None:
        return None
    try:
        return model.model_validate(data)
    except pydantic.ValidationError:
        return None


def remember_model(out_dir: str, model: Any) -> None:
    """Write OUT/response_model.json: the model's name and top-level fields, in order."""
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    doc = {"name": model.__name__, "fields": list(model.model_fields)}
    write_file(os.path.join(out_dir, MODEL_FILE), orjson.dumps(doc))


def fields_of(out_dir: str) -> list[str] | None:
    """The fields OUT/response_model.json names; None without one (or one that is not ours to read)."""
    try:
        with open(os.path.join(out_dir, MODEL_FILE), "rb") as f:
            doc = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return None
    fields = doc.get("fields") if isinstance(doc, dict) else None
    return [x for x in fields if isinstance(x, str)] if isinstance(fields, list) else None
