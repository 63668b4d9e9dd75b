"""OpenAI batch endpoints: what each request body needs, and the response body each answers with.

Every body is shaped like the openai SDK's type for that endpoint (ChatCompletion, Response,
CreateEmbeddingResponse, Completion, ModerationCreateResponse, ImagesResponse, Video); the contract
test checks each against the SDK, field by field.
"""

from __future__ import annotations

from typing import Any

from batch_scheduler.simulator.store import Batch, output_tokens
from batch_scheduler.simulator.structured import answer_for, chat_message, chat_shape

# endpoint -> the body field that carries the input
ENDPOINTS = {
    "/v1/chat/completions": "messages", "/v1/responses": "input", "/v1/embeddings": "input",
    "/v1/completions": "prompt", "/v1/moderations": "input", "/v1/images/generations": "prompt",
    "/v1/images/edits": "prompt", "/v1/videos": "prompt",
}
# endpoints whose model may be left out, and what the API then uses
DEFAULT_MODELS = {"/v1/moderations": "omni-moderation-latest", "/v1/images/generations": "gpt-image-1",
                  "/v1/images/edits": "gpt-image-1", "/v1/videos": "sora-2"}
NO_OUTPUT_TOKENS = ("/v1/embeddings", "/v1/moderations")
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
_IMAGE_INPUTS = ("self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "violence",
                 "violence/graphic")
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
VIDEO_TTL_S = 24 * 3600


def model_of(endpoint: str, body: dict) -> str | None:
    model = body.get("model")
    if isinstance(model, str) and model:
        return model
    return DEFAULT_MODELS.get(endpoint)


def content_problem(endpoint: str, body: dict) -> str | None:
    """What the API would answer (400) to one request of the file; None when it runs."""
    if model_of(endpoint, body) is None:
        return "you must provide a model parameter"
    field = ENDPOINTS[endpoint]
    value = body.get(field)
    if value is None or value == [] or value == "":
        return f"Missing required parameter: '{field}'."
    if endpoint == "/v1/images/edits" and not (body.get("image") or body.get("images")):
        return "Missing required parameter: 'image'."
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        limit = body.get(name)
        if limit is not None and (type(limit) is not int or limit < 1):
            return f"Invalid '{name}': integer below minimum value."
    return None


def completion_tokens(endpoint: str, batch: Batch, i: int) -> int:
    if endpoint in NO_OUTPUT_TOKENS:
        return 0
    return output_tokens(batch.custom_ids[i], batch.max_tokens[i])


def _chat(ident: str, model: str, created: int, answer: str, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{ident}", "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer, "refusal": None,
                                             "annotations": []},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                "accepted_prediction_tokens": 0,
                                                "rejected_prediction_tokens": 0}},
        "service_tier": "default", "system_fingerprint": None,
    }


def _response(ident: str, model: str, created: int, answer: str, prompt: int, completion: int,
              max_output: int | None) -> dict[str, Any]:
    return {
        "id": f"resp_{ident}", "object": "response", "created_at": created, "status": "completed",
        "background": False, "completed_at": created, "error": None, "incomplete_details": None,
        "instructions": None, "max_output_tokens": max_output, "max_tool_calls": None, "model": model,
        "output": [{"type": "message", "id": f"msg_{ident}", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": answer, "annotations": [], "logprobs": []}]}],
        "parallel_tool_calls": True, "previous_response_id": None, "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None}, "safety_identifier": None, "service_tier": "default",
        "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto",
        "tools": [], "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled",
        "usage": {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                  "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": prompt + completion},
        "user": None, "metadata": {},
    }


def _moderation(ident: str, model: str) -> dict[str, Any]:
    result = {
        "flagged": False,
        "categories": dict.fromkeys(MODERATION_CATEGORIES, False),
        "category_scores": dict.fromkeys(MODERATION_CATEGORIES, 1e-06),
        "category_applied_input_types": {c: ["text", "image"] if c in _IMAGE_INPUTS else ["text"]
                                         for c in MODERATION_CATEGORIES},
    }
    return {"id": f"modr-{ident}", "model": model, "results": [result]}


def _images(created: int, body: dict, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "created": created, "data": [{"b64_json": PNG_1X1, "revised_prompt": None, "url": None}],
        "background": "opaque", "output_format": "png", "quality": body.get("quality") or "medium",
        "size": body.get("size") or "1024x1024",
        "usage": {"input_tokens": prompt, "input_tokens_details": {"image_tokens": 0, "text_tokens": prompt},
                  "output_tokens": completion, "output_tokens_details": {"image_tokens": completion,
                                                                        "text_tokens": 0},
                  "total_tokens": prompt + completion},
    }


def _video(ident: str, model: str, created: int, body: dict) -> dict[str, Any]:
    return {
        "id": f"video_{ident}", "object": "video", "created_at": created, "completed_at": created,
        "expires_at": created + VIDEO_TTL_S, "error": None, "model": model, "progress": 100,
        "prompt": body.get("prompt"), "remixed_from_video_id": None, "seconds": str(body.get("seconds") or "4"),
        "size": body.get("size") or "720x1280", "status": "completed",
    }


def response_body(endpoint: str, batch: Batch, i: int, created: int) -> dict[str, Any]:
    """The body of request `i`'s 200 answer (its `response.body` in the output file)."""
    cid, model = batch.custom_ids[i], batch.models[i]
    ident = f"{batch.extra['token']}{i:08x}"
    prompt = batch.in_tokens[i]
    completion = completion_tokens(endpoint, batch, i)
    answer = "answer:" + cid
    body = batch.extra.get("bodies", {}).get(i, {})
    if endpoint == "/v1/chat/completions":
        chat = _chat(ident, model, created, answer, prompt, completion)
        if (shape := chat_shape(body)) is not None:
            data = answer_for(shape, cid, batch.id, batch.extra.get("invalid_json_rate", 0.0))
            choice = chat["choices"][0]
            choice["message"], choice["finish_reason"] = chat_message(shape, data)
        return chat
    if endpoint == "/v1/responses":
        return _response(ident, model, created, answer, prompt, completion, body.get("max_output_tokens"))
    if endpoint == "/v1/completions":
        return {"id": f"cmpl-{ident}", "object": "text_completion", "created": created, "model": model,
                "choices": [{"text": answer, "index": 0, "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion},
                "system_fingerprint": None}
    if endpoint == "/v1/embeddings":
        return {"object": "list", "model": model,
                "data": [{"object": "embedding", "index": 0, "embedding": [0.0] * 8}],
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
    if endpoint == "/v1/moderations":
        return _moderation(ident, model)
    if endpoint == "/v1/videos":
        return _video(ident, model, created, body)
    return _images(created, body, prompt, completion)
