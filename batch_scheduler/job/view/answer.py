"""What one result line says, read from any provider's form: the answer's text, its JSON (a tool
call's input or arguments, or a JSON answer), why it stopped, and its error. The forms: a Message
Batches line (`result.message`), an OpenAI line (`response.body`), a Gemini line (`response.candidates`,
`error`), and a Vertex prediction line (its `response` a Message or a GenerateContentResponse, a
non-empty `status` its error). Every field is checked where it is read: a line of an unexpected shape
gives None, never an exception.
"""

from __future__ import annotations

from typing import Any

import orjson


def answer_text(doc: dict) -> str | None:
    """The answer's text: a Message's text blocks joined; a chat completion's message content; a
    Responses answer's output_text parts; a Gemini answer's text parts. None when the line holds no answer."""
    message = _message(doc)
    if message is not None:
        blocks = message.get("content")
        if not isinstance(blocks, list):
            return None
        return "".join(b["text"] for b in blocks if isinstance(b, dict) and b.get("type") == "text"
                       and isinstance(b.get("text"), str))
    candidates = _response(doc).get("candidates")
    if isinstance(candidates, list):  # a Gemini GenerateContentResponse: the first candidate's text parts
        candidate = _first_candidate(doc)
        content = candidate.get("content") if candidate is not None else None
        parts = content.get("parts") if isinstance(content, dict) else None
        return "".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
                       and not p.get("thought")) if isinstance(parts, list) else None
    body = _body(doc)
    choices = body.get("choices")
    if isinstance(choices, list) and choices:
        first = choices[0] or {}
        content = (first.get("message") or {}).get("content") if "message" in first else first.get("text")
        return content if isinstance(content, str) else None
    output = body.get("output")
    if isinstance(output, list):
        return "".join(part.get("text", "") for item in output if isinstance(item, dict)
                       for part in item.get("content") or [] if isinstance(part, dict)
                       and part.get("type") == "output_text")
    return None


def error_text(doc: dict) -> str | None:
    """`kind: message` of an errored result line (any provider's form; a Vertex line's status string as it
    is); None when it did not err."""
    result = doc.get("result")
    if isinstance(result, dict):
        if result.get("type") != "errored":
            return None
        err = result.get("error") or {}
        inner = nested if isinstance(nested := err.get("error"), dict) else err
        return f"{inner.get('type')}: {inner.get('message')}"
    err = doc.get("error")
    if isinstance(err, dict):
        return f"{err.get('code')}: {err.get('message')}"
    status = doc.get("status")  # a Vertex prediction line's: "" when it succeeded
    if isinstance(status, dict):  # a google.rpc.Status
        return f"{status.get('status') or status.get('code')}: {status.get('message')}"
    if isinstance(status, str) and status:
        return status
    response = doc.get("response") or {}
    if response.get("status_code") not in (None, 200):
        body_err = (response.get("body") or {}).get("error") or {}
        kind = body_err.get("type") or body_err.get("code") or f"http_{response['status_code']}"
        return f"{kind}: {body_err.get('message')}"
    return None


def stop_reason(doc: dict) -> str | None:
    """Why the answer stopped: a Message's `stop_reason` (end_turn, max_tokens, tool_use, ...), a chat
    completion's `finish_reason` (stop, length, tool_calls), a Responses answer's incomplete reason, a Gemini
    candidate's `finishReason` (STOP, MAX_TOKENS)."""
    message = _message(doc)
    if message is not None:
        reason = message.get("stop_reason")
        return reason if isinstance(reason, str) else None
    candidate = _first_candidate(doc)
    if candidate is not None:
        reason = candidate.get("finishReason")
        return reason if isinstance(reason, str) else None
    body = _body(doc)
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        return reason if isinstance(reason, str) else None
    details = body.get("incomplete_details")
    if isinstance(details, dict) and isinstance(details.get("reason"), str):
        return details["reason"]
    status = body.get("status")
    return status if isinstance(status, str) else None


def answer_json(doc: dict) -> Any:
    """The answer as data: the first tool call's input (Anthropic `tool_use`, OpenAI `tool_calls`, a Responses
    `function_call`), else the text when it is a JSON object or array (an output schema's, `response_format`'s
    answer; a ```json fence around it is dropped). None when the answer holds no JSON."""
    called = _tool_input(doc)
    if called is not None:
        return called
    return json_of(answer_text(doc))


def json_of(text: Any) -> Any:
    """`text` parsed when it is a JSON object or array (in a ``` fence or not); else None."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    if not text.startswith(("{", "[")):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _tool_input(doc: dict) -> Any:
    message = _message(doc)
    if message is not None:
        blocks = message.get("content")
        for block in blocks if isinstance(blocks, list) else ():
            if isinstance(block, dict) and block.get("type") == "tool_use" and "input" in block:
                return block["input"]
        return None
    body = _body(doc)
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if isinstance(calls, list) and calls and isinstance(calls[0], dict):
            function = calls[0].get("function")
            return _arguments(function.get("arguments") if isinstance(function, dict) else None)
    output = body.get("output")
    for item in output if isinstance(output, list) else ():
        if isinstance(item, dict) and item.get("type") == "function_call":
            return _arguments(item.get("arguments"))
    return None


def _arguments(value: Any) -> Any:
    """A tool call's arguments: OpenAI sends them as a JSON string."""
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value


def _message(doc: dict) -> dict | None:
    """The Message of a line that answers with one: Message Batches' `result.message` ({} when the result
    has none), or a Vertex Claude line's `response`; None for the other forms."""
    result = doc.get("result")
    if isinstance(result, dict):
        message = result.get("message")
        return message if isinstance(message, dict) else {}
    response = _response(doc)
    return response if response.get("type") == "message" else None


def _first_candidate(doc: dict) -> dict | None:
    candidates = _response(doc).get("candidates")
    first = candidates[0] if isinstance(candidates, list) and candidates else None
    return first if isinstance(first, dict) else None


def _response(doc: dict) -> dict:
    response = doc.get("response")
    return response if isinstance(response, dict) else {}


def _body(doc: dict) -> dict:
    body = _response(doc).get("body")
    return body if isinstance(body, dict) else {}
