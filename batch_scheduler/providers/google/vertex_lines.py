"""The lines of `--provider vertex`: request lines in, prediction lines out.

In: the program keeps `{"custom_id", "body": {"model", ...the request}}` and uploads, the model being the
job's on Vertex, `{"custom_id", "request": {...}}`; the lane of each line is its model, so a job's Claude
and Gemini requests go apart:

    Claude  {"custom_id", "request": {"messages", "max_tokens", ..., "anthropic_version": "vertex-2023-10-16"}}
    Gemini  {"custom_id", "request": GenerateContentRequest}

Accepted forms: `{custom_id, request}` (request.model, else --model), and for Claude models the Message
Batches form `{custom_id, params}` (params.model or --model; the model leaves the request, the Vertex
`anthropic_version` joins it); for Gemini models the Message Batches form is converted as Gemini Batch
Mode converts it (`providers.gemini_convert`).

Out: each line echoes its input line with `response` and `status` added (empty on success, the error's
text otherwise). Vertex keeps no order and has no id field of its own: Claude lines carry `custom_id`
(the Vertex Claude form), and Gemini lines carry it too, as a field Vertex passes through to the output:
a result is matched to its request by that echoed `custom_id`, never by position.
"""

from __future__ import annotations

import re
from typing import Any

from batch_scheduler.core import errors
from batch_scheduler.providers.answers import ShapeError, custom_id_of, line_object, model_of, shown, tokens
from batch_scheduler.providers.base import Outcome, Usage, encode
from batch_scheduler.providers.common import check_message_params
from batch_scheduler.providers.google.gemini_convert import estimate_params, gemini_request

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
CLAUDE_PUBLISHER = "publishers/anthropic/models/"
GEMINI_PUBLISHER = "publishers/google/models/"
# a per-line status that says the request may succeed when sent again (quota, overload, server, deadline)
_TRANSIENT = re.compile(r"\b(408|429|500|502|503|504|529)\b|RESOURCE_EXHAUSTED|UNAVAILABLE|INTERNAL|"
                        r"DEADLINE_EXCEEDED|ABORTED|overloaded|rate.?limit|timed? ?out", re.IGNORECASE)
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


def model_resource(model: str) -> str | None:
    """`publishers/{anthropic|google}/models/NAME` for a short or full model name; None when unreadable."""
    if model.startswith(("publishers/", "projects/")):
        name = model.rsplit("/", 1)[-1]
        return model if _MODEL.fullmatch(name) and "/models/" in model else None
    if not _MODEL.fullmatch(model):
        return None
    return (CLAUDE_PUBLISHER if model.startswith("claude") else GEMINI_PUBLISHER) + model


def is_claude(resource: str) -> bool:
    return "/anthropic/" in resource or resource.rsplit("/", 1)[-1].startswith("claude")


def short_model(resource: str) -> str:
    """The model's name as the price table knows it: `claude-sonnet-4-5@20250929` -> `claude-sonnet-4-5`."""
    return resource.rsplit("/", 1)[-1].split("@", 1)[0]


def model_of_line(obj: dict, default_model: str | None) -> Any:
    """The model an accepted input line names (its request's or params'), else the default."""
    body = obj.get("request") if "request" in obj else obj.get("params")
    model = body.get("model") if isinstance(body, dict) else None
    return model or default_model


def lane_of_line(obj: dict, default_model: str | None) -> str:
    """The batch an accepted input line belongs in: one model per Vertex job."""
    model = model_of_line(obj, default_model)
    return (model_resource(model) if isinstance(model, str) else None) or ""


def check_line(obj: dict, default_model: str | None) -> tuple[bytes | None, str | None]:
    """The line to keep (`{custom_id, body}`, the model inside the body), or what is wrong."""
    if "params" in obj and "request" not in obj:
        return _from_params(obj, default_model)
    request = obj.get("request")
    if not isinstance(request, dict):
        return None, "request missing or not an object (vertex lines are {custom_id, request})"
    model = request.get("model") or default_model
    resource, problem = _resource(model, "give --model (or VERTEX_MODEL) for {custom_id, request} lines")
    if problem:
        return None, problem
    assert resource is not None
    if is_claude(resource):
        problem = _claude_problem(request, "request")
        if problem:
            return None, problem
        request = {**request, "anthropic_version": request.get("anthropic_version", VERTEX_ANTHROPIC_VERSION)}
    elif not isinstance(request.get("contents"), list) or not request["contents"]:
        return None, "request.contents missing or not a non-empty list (a Gemini GenerateContentRequest)"
    return _kept(obj["custom_id"], model, request), None


def estimate_view(obj: dict) -> dict:
    """A kept line as the estimates read it: a Gemini body as Messages-like params (a Claude body is one)."""
    body = obj.get("body")
    if isinstance(body, dict) and "contents" in body:
        return {"custom_id": obj.get("custom_id"), "body": estimate_params(body, body.get("model"))}
    return obj


def _kept(custom_id: str, model: Any, request: dict) -> bytes:
    """The kept line `{custom_id, body}`: the request with the model first in it, where the estimate and
    the price read a body (`Provider.body_field`); `upload_line` makes it a Vertex line."""
    return encode({"custom_id": custom_id, "body": {"model": model, **{k: v for k, v in request.items()
                                                                        if k != "model"}}})


def _resource(model: Any, missing: str) -> tuple[str | None, str | None]:
    if not model:
        return None, f"no model: {missing}"
    resource = model_resource(model) if isinstance(model, str) else None
    if resource is None:
        return None, f"model {shown(model)} is not a model name (e.g. gemini-2.5-flash, claude-sonnet-4-5@20250929)"
    return resource, None


def _claude_problem(request: dict, where: str) -> str | None:
    for name in ("messages", "max_tokens"):
        if name not in request:
            return f"{where}.{name} missing"
    if request.get("stream"):
        return f"{where}.stream is not allowed in a batch"
    version = request.get("anthropic_version", VERTEX_ANTHROPIC_VERSION)
    if version != VERTEX_ANTHROPIC_VERSION:
        return f"{where}.anthropic_version is {shown(version)}: Vertex takes {VERTEX_ANTHROPIC_VERSION!r}"
    return None


def _from_params(obj: dict, default_model: str | None) -> tuple[bytes | None, str | None]:
    params = obj["params"]
    problem = check_message_params(params, default_model)
    if problem or not isinstance(params, dict):
        return None, problem or "params must be an object"
    model = params.get("model") or default_model
    resource, problem = _resource(model, "give --model")
    if problem:
        return None, problem
    assert resource is not None
    if is_claude(resource):
        return _kept(obj["custom_id"], model, {**params, "anthropic_version": VERTEX_ANTHROPIC_VERSION}), None
    body, problem = gemini_request(params)
    if problem or body is None:
        return None, problem or "params: nothing to send"
    return _kept(obj["custom_id"], model, body), None


def upload_line(line: bytes) -> tuple[str, bytes]:
    """(the line's model resource, the line as uploaded: without the model, which is the job's)."""
    doc, cid = custom_id_of(line)
    body = doc.get("body")
    model = body.get("model") if isinstance(body, dict) else None
    resource = model_resource(model) if isinstance(model, str) else None
    if resource is None or not isinstance(body, dict):
        raise errors.UsageError(f"custom_id {cid!r}: a kept line without its model")
    return resource, encode({"custom_id": cid, "request": {k: v for k, v in body.items() if k != "model"}})


# -- results --------------------------------------------------------------------------------------


def _status_text(doc: dict, cid: str) -> str:
    status = doc.get("status")
    if status is None or isinstance(status, str):
        return status or ""
    if isinstance(status, dict):  # a google.rpc.Status
        return f"{status.get('code', '')} {status.get('status', '')} {status.get('message', '')}".strip() or "error"
    raise ShapeError(cid, f"status is {shown(status)}, expected a string or an object")


def _claude_usage(response: dict, cid: str) -> tuple[Usage, str | None]:
    u = line_object(response.get("usage") or {}, cid, "response.usage")
    where = "response.usage"
    ttl = u.get("cache_creation")
    one_hour = tokens(ttl, "ephemeral_1h_input_tokens", cid, where + ".cache_creation") if type(ttl) is dict else 0
    usage = Usage(tokens(u, "input_tokens", cid, where), tokens(u, "output_tokens", cid, where),
                  tokens(u, "cache_creation_input_tokens", cid, where), tokens(u, "cache_read_input_tokens", cid, where),
                  one_hour)
    return usage, model_of(response.get("model"), cid, "response.model")


def _gemini_usage(response: dict, cid: str) -> tuple[Usage, str | None]:
    """`usageMetadata`: the prompt count includes the cached part; thinking is billed as output."""
    where = "response.usageMetadata"
    u = line_object(response.get("usageMetadata") or {}, cid, where)
    prompt = tokens(u, "promptTokenCount", cid, where)
    cached = tokens(u, "cachedContentTokenCount", cid, where)
    output = tokens(u, "candidatesTokenCount", cid, where) + tokens(u, "thoughtsTokenCount", cid, where)
    model = model_of(response.get("modelVersion"), cid, "response.modelVersion")
    return Usage(max(0, prompt - cached), output, 0, cached), short_model(model) if model else None


def classify_line(line: bytes) -> tuple[str, Outcome, Usage | None, str | None]:
    """Route and count one prediction line (ValueError / ShapeError as for the other providers)."""
    doc, cid = custom_id_of(line)
    status = _status_text(doc, cid)
    response = doc.get("response")
    if status or response is None:
        transient = not status or _TRANSIENT.search(status) is not None
        return cid, Outcome.ERRORED_TRANSIENT if transient else Outcome.ERRORED, None, None
    response = line_object(response, cid, "response")
    if "candidates" in response or "usageMetadata" in response:
        usage, model = _gemini_usage(response, cid)
    else:
        usage, model = _claude_usage(response, cid)
    return cid, Outcome.SUCCEEDED, usage, short_model(model) if model else None
