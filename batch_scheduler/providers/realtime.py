"""One request at a time through a provider's realtime endpoint, its answer in its batch results form.

    Messages (anthropic):   POST /v1/messages {params}          -> {"custom_id", "result": {"type": "succeeded",
                                                                    "message": <the Message>}}
    Chat Completions etc.:  POST <the line's url> {body}         -> {"id", "custom_id", "response": {"status_code":
                            (openai, and any OpenAI-compatible       200, "request_id", "body": <the answer>},
                            server at --base-url)                    "error": null}

So a realtime answer is classified, written to the shards and priced as a batch's answer would be.
A refusal of the request itself (a 400-class answer other than auth) becomes an errored line, final;
a transient failure the HTTP layer gave up on, a rate limit, a lost answer and a refused key raise
(the realtime lane decides: job.send.realtime).
"""

from __future__ import annotations

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import join_url
from batch_scheduler.providers.base import encode

MESSAGES_PATH = "/v1/messages"


def _refused(err: errors.RequestRejected) -> tuple[str, str]:
    return (err.kind or "invalid_request_error"), str(err)


async def messages_answer(http: HttpClient, base_url: str, line: bytes, seen: dict[str, str]) -> bytes:
    doc = orjson.loads(line)
    cid = doc["custom_id"]
    try:
        data = await http.call("POST", join_url(base_url, MESSAGES_PATH), "messages", body=encode(doc["params"]),
                               idempotent=False, seen=seen)
    except errors.RequestRejected as err:
        return messages_error_line(cid, *_refused(err))
    message = orjson.loads(data)
    if not isinstance(message, dict):
        raise errors.BadAnswer(f"messages answer for {cid}: expected an object")
    return encode({"custom_id": cid, "result": {"type": "succeeded", "message": message}})


def messages_error_line(custom_id: str, kind: str, message: str) -> bytes:
    return encode({"custom_id": custom_id, "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": kind, "message": message}}}})


async def openai_answer(http: HttpClient, base_url: str, line: bytes, seen: dict[str, str]) -> bytes:
    doc = orjson.loads(line)
    cid = doc["custom_id"]
    try:
        data = await http.call("POST", join_url(base_url, doc["url"]), "chat", body=encode(doc["body"]),
                               idempotent=False, seen=seen, headers={"content-type": "application/json"})
    except errors.RequestRejected as err:
        return openai_error_line(cid, *_refused(err))
    body = orjson.loads(data)
    if not isinstance(body, dict):
        raise errors.BadAnswer(f"chat answer for {cid}: expected an object")
    return encode({"id": f"realtime_{cid}", "custom_id": cid, "error": None,
                   "response": {"status_code": 200, "request_id": seen.get("x-request-id", ""), "body": body}})


def openai_error_line(custom_id: str, kind: str, message: str) -> bytes:
    return encode({"id": f"realtime_{custom_id}", "custom_id": custom_id, "response": None,
                   "error": {"code": kind, "message": message}})
