"""Structured answers: a request that asks for JSON of a schema gets JSON that fits it.

What asks for it (the shape, read at create, kept per request in `batch.extra["shapes"]`):
    Messages      `output_config.format` {type: json_schema, schema}  -> the text is the JSON
                  `tool_choice` {type: tool, name} with that tool     -> a `tool_use` block, its input the JSON
    Chat          `response_format` {type: json_schema, json_schema}  -> the message content is the JSON
                  `tool_choice` {type: function, function: {name}}    -> a `tool_calls` entry, arguments the JSON

The JSON is made from the schema (objects with their properties, `$ref` into `$defs`, enums, arrays,
the scalar types), the same for the same custom_id. With `invalid_json_rate`, that share of answers (drawn
per batch and custom_id, so an answer sent again may fit) leaves out a required field or gives one the
wrong type: what a model that ignores the schema answers.
"""

from __future__ import annotations

import zlib
from typing import Any, NamedTuple

import orjson


class Shape(NamedTuple):
    kind: str  # "text": the answer's text is the JSON; "tool": a forced tool call carries it
    schema: dict
    tool: str = ""  # the tool's name (kind "tool")


def messages_shape(params: dict) -> Shape | None:
    """The shape a Messages request asks for, if any (output schema first, then a forced tool)."""
    config = params.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return Shape("text", fmt["schema"])
    choice = params.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool":
        for tool in params.get("tools") or ():
            if isinstance(tool, dict) and tool.get("name") == choice.get("name"):
                schema = tool.get("input_schema")
                return Shape("tool", schema if isinstance(schema, dict) else {}, tool["name"])
    return None


def chat_shape(body: dict) -> Shape | None:
    """The shape a Chat Completions body asks for, if any (`response_format` first, then a forced function)."""
    fmt = body.get("response_format")
    spec = fmt.get("json_schema") if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None
    if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
        return Shape("text", spec["schema"])
    choice = body.get("tool_choice")
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    for tool in body.get("tools") or ():
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and name is not None and fn.get("name") == name:
            schema = fn.get("parameters")
            return Shape("tool", schema if isinstance(schema, dict) else {}, name)
    return None


def shapes_of(items: list, key: str) -> dict[int, Shape]:
    """Request index -> the shape it asks for, for a Messages batch's `requests` (params under `key`)."""
    out: dict[int, Shape] = {}
    for i, item in enumerate(items):
        params = item.get(key) if isinstance(item, dict) else None
        if isinstance(params, dict) and (shape := messages_shape(params)) is not None:
            out[i] = shape
    return out


def answer_for(shape: Shape, cid: str, salt: str, invalid_rate: float) -> Any:
    """The JSON a request of `shape` gets: fitting its schema, or (a share `invalid_rate`) not."""
    value = fake(shape.schema, shape.schema, cid, 0)
    if invalid_rate and zlib.crc32(f"{salt}:{cid}".encode()) % 10_000 < invalid_rate * 10_000:
        return spoil(value, shape.schema)
    return value


def spoil(value: Any, schema: dict) -> Any:
    """`value` made not to fit: its first required field dropped (else a field of the wrong type)."""
    if not isinstance(value, dict):
        return {"unexpected": value}
    required = [k for k in schema.get("required") or () if k in value]
    if required:
        return {k: v for k, v in value.items() if k != required[0]}
    return {k: [v] for k, v in value.items()} or {"unexpected": True}


def fake(schema: Any, root: dict, cid: str, depth: int) -> Any:
    """A value that fits `schema` (refs resolved against `root`), made from `cid`."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return fake(target, root, cid, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return fake(next((o for o in options if o.get("type") != "null"), options[0]), root, cid, depth + 1)
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][zlib.crc32(cid.encode()) % len(schema["enum"])]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {name: fake(sub, root, f"{cid}.{name}", depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [fake(schema.get("items") or {}, root, f"{cid}.{i}", depth + 1) for i in range(2)]
    if kind == "integer":
        return zlib.crc32(cid.encode()) % 100
    if kind == "number":
        return zlib.crc32(cid.encode()) % 1000 / 10
    if kind == "boolean":
        return zlib.crc32(cid.encode()) % 2 == 0
    if kind == "null":
        return None
    return f"value of {cid}"


def messages_content(shape: Shape, data: Any) -> tuple[list[dict], str]:
    """(content blocks, stop_reason) of a Messages answer carrying `data`."""
    if shape.kind == "tool":
        return [{"type": "tool_use", "id": "toolu_sim", "name": shape.tool, "input": data}], "tool_use"
    return [{"type": "text", "text": orjson.dumps(data).decode(), "citations": None}], "end_turn"


def chat_message(shape: Shape, data: Any) -> tuple[dict, str]:
    """(message, finish_reason) of a chat completion carrying `data`."""
    text = orjson.dumps(data).decode()
    if shape.kind == "tool":
        call = {"id": "call_sim", "type": "function", "function": {"name": shape.tool, "arguments": text}}
        return {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}, "tool_calls"
    return {"role": "assistant", "content": text, "refusal": None, "annotations": []}, "stop"
