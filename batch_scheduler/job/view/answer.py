"""What one result line says, read from either provider's form: the answer's text, its JSON (a tool
call's input or arguments, or a JSON answer), why it stopped, and its error. Every field is checked
where it is read: a line of an unexpected shape gives None, never an exception.
"""

from __future__ import annotations

from typing import Any

import orjson


def answer_text(doc: dict) -> str | None:
    """The answer's text: a Messages result's text blocks joined; a chat completion's message content; a
    Responses answer's output_text parts. None when the line holds no answer."""
    result = doc.get("result")
    if isinstance(result, dict):
        message = result.get("message") or {}
        blocks = message.get("content") if isinstance(message, dict) else None
        if not isinstance(blocks, list):
            return None
        return "".join(b["text"] for b in blocks if isinstance(b, dict) and b.get("type") == "text"
                       and isinstance(b.get("text"), str))
    candidates = (doc.get("response") or {}).get("candidates")
    if isinstance(candidates, list):  # a Gemini GenerateContentResponse: the first candidate's text parts
        content = candidates[0].get("content") if candidates and isinstance(candidates[0], dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        return "".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
                       and not p.get("thought")) if isinstance(parts, list) else None
    body = (doc.get("response") or {}).get("body") or {}
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
    """`kind: message` of an errored result line (either provider's form); None when it did not err."""
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
    response = doc.get("response") or {}
    if response.get("status_code") not in (None, 200):
        body_err = (response.get("body") or {}).get("error") or {}
        kind = body_err.get("type") or body_err.get("code") or f"http_{response['status_code']}"
        return f"{kind}: {body_err.get('message')}"
    return None


def stop_reason(doc: dict) -> str | None:
    """Why the answer stopped: a Message's `stop_reason` (end_turn, max_tokens, tool_use, ...), a chat
    completion's `finish_reason` (stop, length, tool_calls), a Responses answer's incomplete reason."""
    result = doc.get("result")
    if isinstance(result, dict):
        message = result.get("message")
        reason = message.get("stop_reason") if isinstance(message, dict) else None
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
    result = doc.get("result")
    if isinstance(result, dict):
        message = result.get("message")
        blocks = message.get("content") if isinstance(message, dict) else None
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


def _body(doc: dict) -> dict:
    response = doc.get("response")
    body = response.get("body") if isinstance(response, dict) else None
    return body if isinstance(body, dict) else {}
