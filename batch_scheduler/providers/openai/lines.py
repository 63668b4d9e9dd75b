"""The lines of an OpenAI-style batch file: checking and converting input lines, reading result lines.

Input lines are `{custom_id, method, url, body}`; lines in the Message Batches form
`{custom_id, params}` are converted to chat-completions lines (system first, a list of text blocks
joined with blank lines; params without an equivalent, or non-text blocks, are refused by name).
A result line (output or error file) is `{custom_id, response: {status_code, body}, error}`; every
field read is checked where it is read (providers/answers.py).
Usage: `prompt_tokens` include the cached ones, so input = prompt - cached and cache_read = cached,
which is how the price table (Anthropic's meaning of the token kinds) charges them.
"""

from __future__ import annotations

import secrets

import orjson

from batch_scheduler.providers.answers import ShapeError, custom_id_of, line_object, model_of, shown, tokens
from batch_scheduler.providers.base import TRANSIENT_ERROR_KINDS, Outcome, Usage

CHAT_URL = "/v1/chat/completions"
# endpoint -> the body field a request cannot do without
ENDPOINTS = {CHAT_URL: "messages", "/v1/responses": "input", "/v1/embeddings": "input",
             "/v1/completions": "prompt"}
# Messages params that have a chat-completions equivalent (name there)
_CONVERTIBLE = {"model": "model", "max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p",
                "stop_sequences": "stop"}


def text_of(content: object, where: str) -> tuple[str | None, str | None]:
    """(text, None) of a string or a list of text blocks; (None, error) for anything else."""
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        return None, f"{where} must be a string or a list of text blocks"
    parts = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            return None, (f"{where}[{i}] is a {kind!r} block: only text converts to the OpenAI form; "
                          f"write the line as {{custom_id, method, url, body}}")
        parts.append(block["text"])
    return "\n\n".join(parts), None


def chat_body_of(params: dict) -> tuple[dict | None, str | None]:
    """A chat-completions body from Messages params: system first, text contents joined."""
    for name in params:
        if name not in _CONVERTIBLE and name not in ("system", "messages"):
            return None, (f"params.{name} has no OpenAI equivalent here; write the line as "
                          f"{{custom_id, method, url, body}}")
    messages = []
    if params.get("system"):
        text, problem = text_of(params["system"], "params.system")
        if problem:
            return None, problem
        messages.append({"role": "system", "content": text})
    if not isinstance(params["messages"], list):
        return None, "params.messages must be a list"
    for i, msg in enumerate(params["messages"]):
        if not isinstance(msg, dict) or "role" not in msg:
            return None, f"params.messages[{i}] must be an object with role and content"
        text, problem = text_of(msg.get("content"), f"params.messages[{i}].content")
        if problem:
            return None, problem
        messages.append({"role": msg["role"], "content": text})
    body = {_CONVERTIBLE[k]: v for k, v in params.items() if k in _CONVERTIBLE}
    body["messages"] = messages
    return body, None


def endpoint_of(url: object, bare_urls: bool = False) -> str | None:
    """The batch endpoint a line's `url` names (`/v1/...`); with `bare_urls` also without `/v1` (Azure's
    lines say `/chat/completions` as well); None when it names none."""
    if isinstance(url, str) and bare_urls and not url.startswith("/v1/"):
        url = "/v1" + url
    return url if url in ENDPOINTS else None


def check_line(obj: dict, model: str | None, bare_urls: bool = False) -> tuple[dict | None, str | None]:
    """The body of a `{custom_id, method, url, body}` line, its model filled; or what is wrong."""
    if obj.get("method") != "POST":
        return None, f"method must be POST (got {obj.get('method')!r})"
    url = endpoint_of(obj.get("url"), bare_urls)
    if url is None:
        url = obj.get("url")
        return None, f"url {url!r} is not a batch endpoint: use one of {', '.join(ENDPOINTS)}"
    body = obj.get("body")
    if not isinstance(body, dict):
        return None, "body missing or not an object"
    if "model" not in body:
        if not model:
            return None, "body.model missing (give --model or OPENAI_MODEL to fill it)"
        body = {"model": model, **body}
    if not isinstance(body["model"], str) or not body["model"]:
        return None, "body.model must be a non-empty string"
    if ENDPOINTS[url] not in body:
        return None, f"body.{ENDPOINTS[url]} missing"
    if body.get("stream"):
        return None, "body.stream is not allowed in a batch"
    return body, None


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    """(body, content-type) of a multipart/form-data upload; bytes, so a retry can send it again."""
    boundary = secrets.token_hex(16)
    while boundary.encode() in data:  # pragma: no cover - 128 random bits
        boundary = secrets.token_hex(16)
    head = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items())
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
             f"Content-Type: application/jsonl\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _usage(u: dict, cid: str, where: str) -> Usage:
    """Chat/completions (`prompt_tokens`) or responses (`input_tokens`) usage; cached input apart."""
    prompt = tokens(u, "prompt_tokens" if "prompt_tokens" in u else "input_tokens", cid, where)
    output = tokens(u, "completion_tokens" if "completion_tokens" in u else "output_tokens", cid, where)
    details = u.get("prompt_tokens_details") or u.get("input_tokens_details") or {}
    cached = tokens(line_object(details, cid, f"{where}.prompt_tokens_details"), "cached_tokens", cid,
                    f"{where}.prompt_tokens_details")
    return Usage(input_tokens=max(0, prompt - cached), output_tokens=output, cache_read_tokens=cached)


def _body(response: dict, cid: str) -> dict:
    """`response.body`: an object, or a JSON string holding one (an OpenAI-compatible server sends that)."""
    body = response.get("body")
    if isinstance(body, str):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ShapeError(cid, f"response.body is {shown(body)}, expected an object") from None
    return line_object(body if body is not None else {}, cid, "response.body")


def classify_line(line: bytes) -> tuple[str, Outcome, Usage | None, str | None]:
    """Route and count one line of an output or error file (ValueError / answers.ShapeError: see common)."""
    doc, cid = custom_id_of(line)
    error = doc.get("error")
    if error:
        code = line_object(error, cid, "error").get("code")
        if code == "batch_expired":
            return cid, Outcome.EXPIRED, None, None
        if code == "batch_cancelled":
            return cid, Outcome.CANCELED, None, None
        return cid, (Outcome.ERRORED_TRANSIENT if code in TRANSIENT_ERROR_KINDS else Outcome.ERRORED), None, None
    response = line_object(doc.get("response"), cid, "response")
    status = response.get("status_code")
    if type(status) is not int:
        raise ShapeError(cid, f"response.status_code is {shown(status)}, expected an HTTP status")
    if status == 200:
        body = _body(response, cid)
        usage = _usage(line_object(body.get("usage") or {}, cid, "response.body.usage"), cid, "response.body.usage")
        return cid, Outcome.SUCCEEDED, usage, model_of(body.get("model"), cid, "response.body.model")
    if status == 429 or status >= 500:
        raw_usage = _body(response, cid).get("usage")
        billed = _usage(line_object(raw_usage, cid, "response.body.usage"), cid, "response.body.usage") if raw_usage else None
        return cid, Outcome.ERRORED_TRANSIENT, billed, None  # usage: it was billed
    return cid, Outcome.ERRORED, None, None
