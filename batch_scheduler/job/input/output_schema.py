"""`response_model=`: a Pydantic model's JSON schema, put into every templated request as its provider wants it.

    Messages (anthropic, inline, bedrock, vertex, gemini's converter)
        anthropic-version 2026-10-21 on:  {"output_config": {"format": {"type": "json_schema", "schema": S}}}
        an older version:                 {"tools": [{"name": N, "input_schema": S}], "tool_choice": {"type": "tool", "name": N}}
    Chat completions (openai, azure)      {"response_format": {"type": "json_schema", "json_schema":
                                             {"name": N, "schema": S', "strict": true}}}

S' is S as OpenAI's strict mode takes it: every object closed (`additionalProperties: false`) and every
property required (an optional field of the model is nullable there, its value null when absent). Gemini's
converter turns `output_config.format` into `generationConfig.responseMimeType` and its response schema.
The fields are merged over `--params` (`job_params`); the answers are checked against the model itself
(view/structured.py). pydantic is the optional extra `structured`, imported only here.
"""

from __future__ import annotations

import re
from typing import Any

from batch_scheduler.core.errors import UsageError
from batch_scheduler.providers import provider_class
from batch_scheduler.providers.anthropic.versions import CURRENT_VERSION

PYDANTIC_MISSING = "response_model= needs pydantic: pip install 'batch-scheduler[structured]'"


def model_schema(model: Any) -> tuple[str, dict]:
    """(name, JSON schema) of a Pydantic model class; UsageError for anything else."""
    try:
        import pydantic
    except ImportError:
        raise UsageError(PYDANTIC_MISSING) from None
    if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
        raise UsageError(f"response_model= must be a Pydantic model class (a subclass of pydantic.BaseModel), "
                         f"not {model!r}"[:300])
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", model.__name__)[:64] or "answer"
    return name, model.model_json_schema()


def output_params(model: Any, provider: str, anthropic_version: str) -> dict[str, Any]:
    """The request fields that ask `provider` for JSON of `model`'s schema (see the module docstring)."""
    name, schema = model_schema(model)
    if provider_class(provider).row_api == "chat":
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": name, "schema": strict_schema(schema), "strict": True}}}
    if anthropic_version >= CURRENT_VERSION:
        return {"output_config": {"format": {"type": "json_schema", "schema": schema}}}
    return {"tools": [{"name": name, "description": f"Answer with a {name}", "input_schema": schema}],
            "tool_choice": {"type": "tool", "name": name}}


def job_params(given: Any, model: Any, provider: str, anthropic_version: str) -> dict[str, Any]:
    """`--params` (a mapping or None) with the output schema's fields merged over it."""
    if given is not None and not isinstance(given, dict):
        raise UsageError("response_model= merges its schema into params=: give params as a dict, not a file name")
    return {**(given or {}), **output_params(model, provider, anthropic_version)}


def strict_schema(schema: Any) -> Any:
    """`schema` as OpenAI's strict mode takes it: objects closed, every property required."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items() if k != "default"}
    if out.get("type") == "object" and isinstance(out.get("properties"), dict):
        out["additionalProperties"] = False
        out["required"] = list(out["properties"])
    return out
