"""Bedrock's record lines both ways: input lines to `modelInput` bodies, output lines to Message Batches results.

In: a Message Batches line `{custom_id, params}` becomes, for a Claude model, the InvokeModel body
(`anthropic_version: bedrock-2023-05-31`, the params without `model`: the job names the model); for any
other model, a Converse body (system and text messages as blocks, `inferenceConfig` for max_tokens,
temperature, top_p, stop_sequences), and the job runs with `modelInvocationType: Converse`. A line
`{custom_id, modelInput}` (with `modelId` when it names its own model) is sent as it is. Lines are kept
as `{"custom_id", "modelInput"}` (what the ledger and retries read), led by `"modelId"` when the line's
model is not the job's `--model`; `record_line` renames the id to `recordId` and leaves the model out
when the file is written (the job names the model: one job, one model).

Out: an output line `{recordId, modelInput, modelOutput}` or `{recordId, modelInput, error: {errorCode,
errorMessage}}` becomes `{"custom_id", "result": ...}` in the Message Batches result form (the echoed
input dropped), so the shards, `export` and the price table read Bedrock's answers as they read
Anthropic's. A Claude `modelOutput` is a Messages answer already; a Converse one is turned into one.
An error code of 429 or 5xx is a transient error kind; other codes are final. A line whose fields are not
what is read here is passed on as it came, its id renamed, so the collector keeps it as errored, named.
"""

from __future__ import annotations

from typing import Any

import orjson

from batch_scheduler.providers.answers import ShapeError, line_object, shown, tokens
from batch_scheduler.providers.aws.bedrock_output import OutputLine
from batch_scheduler.providers.base import encode
from batch_scheduler.providers.openai.lines import text_of

BEDROCK_VERSION = "bedrock-2023-05-31"
_CONVERSE_CONFIG = {"max_tokens": "maxTokens", "temperature": "temperature", "top_p": "topP",
                    "stop_sequences": "stopSequences"}
_ID_KEY = b'{"custom_id":'
_RECORD_KEY = b'{"recordId":'


def is_claude(model: str) -> bool:
    """Whether a Bedrock model id (or inference profile) is Anthropic's, i.e. takes a Messages body."""
    return "anthropic." in model


def claude_body(params: dict) -> dict:
    return {"anthropic_version": BEDROCK_VERSION, **{k: v for k, v in params.items() if k != "model"}}


def converse_body(params: dict) -> tuple[dict | None, str | None]:
    """A Converse body from Messages params (text only), or what cannot be converted."""
    for name in params:
        if name not in _CONVERSE_CONFIG and name not in ("model", "system", "messages"):
            return None, f"params.{name} has no Converse equivalent; write the line as {{custom_id, modelInput}}"
    body: dict[str, Any] = {}
    if params.get("system"):
        text, problem = text_of(params["system"], "params.system")
        if problem:
            return None, problem
        body["system"] = [{"text": text}]
    if not isinstance(params["messages"], list):
        return None, "params.messages must be a list"
    messages = []
    for i, msg in enumerate(params["messages"]):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            return None, f"params.messages[{i}] must be an object with role user or assistant"
        text, problem = text_of(msg.get("content"), f"params.messages[{i}].content")
        if problem:
            return None, problem
        messages.append({"role": msg["role"], "content": [{"text": text}]})
    body["messages"] = messages
    body["inferenceConfig"] = {_CONVERSE_CONFIG[k]: v for k, v in params.items() if k in _CONVERSE_CONFIG}
    return body, None


def kept_line(custom_id: str, model_input: dict, model: str | None = None) -> bytes:
    """The line the ledger keeps; `model` (first: `record_line` sees it at once) when it is not the job's."""
    if model:
        return encode({"modelId": model, "custom_id": custom_id, "modelInput": model_input})
    return encode({"custom_id": custom_id, "modelInput": model_input})


def model_of_kept(obj: dict, default: str) -> str:
    """The model a kept line runs on: its own `modelId`, else the job's."""
    model = obj.get("modelId")
    return model if isinstance(model, str) and model else default


def record_line(line: bytes) -> bytes:
    """A kept line as Bedrock reads it: `custom_id` renamed `recordId` (kept lines start with it) and its
    `modelId` left out (the job names the model)."""
    if line.startswith(_ID_KEY):
        return _RECORD_KEY + line[len(_ID_KEY):]
    doc = orjson.loads(line)
    doc.pop("modelId", None)
    return encode({"recordId": doc.pop("custom_id"), **doc})


def padded_line(line: bytes, n: int) -> bytes:
    """A copy of a kept line under the record id `<id>.pad<n>` (a '.' no custom_id holds), max_tokens 1:
    what fills a batch up to Bedrock's floor; its answer is dropped (`is_pad`)."""
    doc = orjson.loads(line)
    model_input = doc["modelInput"]
    if isinstance(model_input.get("max_tokens"), int):
        model_input = {**model_input, "max_tokens": 1}
    config = model_input.get("inferenceConfig")
    if isinstance(config, dict) and "maxTokens" in config:
        model_input = {**model_input, "inferenceConfig": {**config, "maxTokens": 1}}
    return kept_line(f"{doc['custom_id']}.pad{n}", model_input, doc.get("modelId"))


def is_pad(record_id: str) -> bool:
    return ".pad" in record_id


def _error_kind(code: Any) -> str:
    status = code if type(code) is int else int(code) if isinstance(code, str) and code.isdigit() else 0
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "overloaded_error" if status in (503, 529) else "api_error"
    return "invalid_request_error"


def _converse_message(out: dict, rid: str, model: str) -> dict:
    """A Messages answer from a Converse answer (text blocks kept, usage in Anthropic's names)."""
    output = line_object(out.get("output"), rid, "modelOutput.output")
    message = line_object(output.get("message"), rid, "modelOutput.output.message")
    content = message.get("content")
    if not isinstance(content, list):
        raise ShapeError(rid, f"modelOutput.output.message.content is {shown(content)}, expected a list")
    blocks = [{"type": "text", "text": b["text"]} for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)]
    where = "modelOutput.usage"
    u = line_object(out.get("usage") or {}, rid, where)
    usage = None if out.get("usage") is None else {  # none reported: the manifest's may stand in (bedrock_output)
        "input_tokens": tokens(u, "inputTokens", rid, where), "output_tokens": tokens(u, "outputTokens", rid, where),
        "cache_read_input_tokens": tokens(u, "cacheReadInputTokens", rid, where),
        "cache_creation_input_tokens": tokens(u, "cacheWriteInputTokens", rid, where)}
    return {"type": "message", "role": "assistant", "model": model, "content": blocks,
            "stop_reason": out.get("stopReason"), "usage": usage}


def result_of(doc: dict, rid: str, model: str) -> dict:
    """The Message Batches `result` of one output line (ShapeError naming the field it cannot read)."""
    if doc.get("error") is not None:
        err = line_object(doc["error"], rid, "error")
        return {"type": "errored", "error": {"type": _error_kind(err.get("errorCode")),
                                             "message": str(err.get("errorMessage") or err.get("errorCode"))}}
    out = line_object(doc.get("modelOutput"), rid, "modelOutput")
    if "output" in out:
        return {"type": "succeeded", "message": _converse_message(out, rid, model)}
    line_object(out.get("usage") or {}, rid, "modelOutput.usage")
    return {"type": "succeeded", "message": {**out, "model": model}}


def _reported(usage: Any) -> tuple[int, int] | None:
    """(input, output) tokens a Messages usage reports (cache reads and writes are input); None: none."""
    if not isinstance(usage, dict):
        return None
    def count(name: str) -> int:  # another shape counts 0 here: classify names it
        value = usage.get(name)
        return value if type(value) is int and value > 0 else 0

    return count("input_tokens") + count("cache_read_input_tokens") + count("cache_creation_input_tokens"), \
        count("output_tokens")


def output_line(line: bytes, model: str) -> OutputLine:
    """An output line as a Message Batches result line, with what the manifest check needs of it (a pad's
    answer is counted, then dropped). A line whose fields cannot be read is passed on as it came."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return OutputLine(line)  # the collector names it
    rid = doc.get("recordId") if isinstance(doc, dict) else None
    if not isinstance(rid, str) or not rid:
        return OutputLine(line)
    try:
        result = result_of(doc, rid, model)
    except ShapeError:
        doc.pop("modelInput", None)
        kept = None if is_pad(rid) else encode({"custom_id": rid, **{k: v for k, v in doc.items() if k != "recordId"}})
        return OutputLine(kept, record=True)
    if result["type"] != "succeeded":
        return OutputLine(None if is_pad(rid) else encode({"custom_id": rid, "result": result}), record=True)
    reported = _reported(result["message"].get("usage"))
    if is_pad(rid):
        return OutputLine(None, record=True, succeeded=True, reported=reported or (0, 0))
    out = {"custom_id": rid, "result": result}
    return OutputLine(encode(out), record=True, succeeded=True, reported=reported,
                      doc=out if reported is None else None)
