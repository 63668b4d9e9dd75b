"""Message Batches params become Gemini GenerateContentRequests field by field; what has no equivalent is named."""

from __future__ import annotations

import pytest

from batch_scheduler.providers.google.gemini_convert import gemini_request


def test_every_convertible_param_lands_where_gemini_reads_it():
    params = {
        "model": "gemini-2.5-flash", "max_tokens": 100, "temperature": 0.2, "top_p": 0.9, "top_k": 5,
        "stop_sequences": ["END"], "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather?"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                      "data": "AAAA"}}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "weather",
                                               "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "rain"}]},
        ],
        "tools": [{"name": "weather", "description": "looks it up",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "tool", "name": "weather"},
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
    }
    request, problem = gemini_request(params)
    assert problem is None
    assert request == {
        "contents": [
            {"role": "user", "parts": [{"text": "weather?"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"result": "rain"}}}]},
        ],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "tools": [{"functionDeclarations": [{"name": "weather", "description": "looks it up",
                                             "parameters": params["tools"][0]["input_schema"]}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}},
        "generationConfig": {"maxOutputTokens": 100, "temperature": 0.2, "topP": 0.9, "topK": 5,
                             "stopSequences": ["END"], "responseMimeType": "application/json",
                             "responseJsonSchema": {"type": "object"}},
    }


def test_a_plain_string_message_and_system():
    request, problem = gemini_request({"max_tokens": 5, "system": "sys", "messages": [{"role": "user", "content": "hi"}]})
    assert problem is None
    assert request == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                       "systemInstruction": {"parts": [{"text": "sys"}]},
                       "generationConfig": {"maxOutputTokens": 5}}


@pytest.mark.parametrize(("params", "message"), [
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "container": "c"},
     "params.container has no Gemini equivalent here"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "search_result"}]}]},
     "params.messages[0].content[0] is a 'search_result' block, which does not convert to Gemini"),
    ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
     "params.messages[0] must be an object with role user or assistant"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "z"}]}]},
     "params.messages[0].content[0].tool_use_id names no earlier tool_use"),
    ({"max_tokens": 5, "messages": []}, "params.messages must be a non-empty list"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "output_format": {"type": "x"}},
     "params.output_format must be {type: json_schema, schema: {...}}"),
    ("nope", "params missing or not an object"),
])
def test_what_does_not_convert_is_named(params, message):
    request, problem = gemini_request(params)
    assert request is None and problem is not None and problem.startswith(message)
