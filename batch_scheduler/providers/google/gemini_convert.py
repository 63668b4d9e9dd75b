"""Message Batches params -> a Gemini `GenerateContentRequest` (shared by `--provider gemini` and Vertex's
Gemini models).

    messages            -> contents (role assistant -> model; text, base64 images and documents, tool_use
                           -> functionCall, tool_result -> functionResponse named after its tool_use)
    system              -> systemInstruction {parts: [{text}]}
    max_tokens          -> generationConfig.maxOutputTokens
    temperature, top_p, top_k, stop_sequences -> generationConfig.temperature, topP, topK, stopSequences
    tools               -> tools [{functionDeclarations: [{name, description, parameters}]}]
    tool_choice         -> toolConfig.functionCallingConfig (auto AUTO, any ANY, tool ANY + its name, none NONE)
    output_config.format / output_format {type: json_schema, schema}
                        -> generationConfig.responseMimeType application/json + responseJsonSchema
    thinking {budget_tokens} -> generationConfig.thinkingConfig.thinkingBudget (disabled: 0)

`model` is not part of the request (Gemini names it in the path; callers place it), `metadata`,
`service_tier` and blocks' `cache_control` have no Gemini meaning and are left out (Gemini caches
implicitly). Any other param, or a block of another type, is refused by name: the line can be written
in Gemini's own form instead. Every function returns (value, None) or (None, what is wrong).
"""

from __future__ import annotations

from typing import Any

Problem = str | None

_CONFIG = {"max_tokens": "maxOutputTokens", "temperature": "temperature", "top_p": "topP", "top_k": "topK",
           "stop_sequences": "stopSequences"}
_DROPPED = frozenset({"model", "metadata", "service_tier", "stream"})
_HANDLED = frozenset({"messages", "system", "tools", "tool_choice", "output_config", "output_format", "thinking"})
_ROLES = {"user": "user", "assistant": "model"}
OWN_FORM = "write the line in Gemini's own form ({key, request: GenerateContentRequest})"


def text_parts(content: Any, where: str) -> tuple[list[dict] | None, Problem]:
    """`[{text}]` parts of a string or a list of text blocks (a system prompt)."""
    if isinstance(content, str):
        return [{"text": content}], None
    if not isinstance(content, list):
        return None, f"{where} must be a string or a list of text blocks"
    parts = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            return None, f"{where}[{i}] must be a text block"
        parts.append({"text": block["text"]})
    return parts, None


def _source_part(block: dict, where: str) -> tuple[dict | None, Problem]:
    """An image or document block with a base64 source -> inlineData; a URL source -> fileData."""
    source = block.get("source")
    if not isinstance(source, dict):
        return None, f"{where}.source must be an object"
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        mime = source.get("media_type")
        if not isinstance(mime, str) or not mime:
            return None, f"{where}.source.media_type must be a string"
        return {"inlineData": {"mimeType": mime, "data": source["data"]}}, None
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"fileData": {"fileUri": source["url"]}}, None
    return None, f"{where}.source: only base64 and url sources convert to Gemini; {OWN_FORM}"


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n\n".join(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
    return ""


def _block_part(block: Any, where: str, tool_names: dict[str, str]) -> tuple[dict | None, Problem]:
    """One content block as a Gemini part (`tool_names`: tool_use id -> name, filled as they come)."""
    if not isinstance(block, dict):
        return None, f"{where} must be a content block (an object)"
    kind = block.get("type")
    if kind == "text":
        return ({"text": block["text"]}, None) if isinstance(block.get("text"), str) else \
            (None, f"{where}.text must be a string")
    if kind in ("image", "document"):
        return _source_part(block, where)
    if kind == "tool_use":
        name, args = block.get("name"), block.get("input", {})
        if not isinstance(name, str) or not name or not isinstance(args, dict):
            return None, f"{where}: a tool_use needs a name and an input object"
        if isinstance(block.get("id"), str):
            tool_names[block["id"]] = name
        return {"functionCall": {"name": name, "args": args}}, None
    if kind == "tool_result":
        name = tool_names.get(block.get("tool_use_id"))  # type: ignore[arg-type]
        if name is None:
            return None, f"{where}.tool_use_id names no earlier tool_use (Gemini answers a function by its name)"
        key = "error" if block.get("is_error") else "result"
        return {"functionResponse": {"name": name, "response": {key: _result_text(block.get("content"))}}}, None
    return None, f"{where} is a {kind!r} block, which does not convert to Gemini; {OWN_FORM}"


def contents_of(messages: Any, where: str = "params.messages") -> tuple[list[dict] | None, Problem]:
    """Messages -> contents."""
    if not isinstance(messages, list) or not messages:
        return None, f"{where} must be a non-empty list"
    contents, tool_names = [], {}  # type: ignore[var-annotated]
    for i, msg in enumerate(messages):
        at = f"{where}[{i}]"
        if not isinstance(msg, dict) or msg.get("role") not in _ROLES:
            return None, f"{at} must be an object with role user or assistant"
        content = msg.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            return None, f"{at}.content must be a string or a list of blocks"
        parts = []
        for j, block in enumerate(blocks):
            part, problem = _block_part(block, f"{at}.content[{j}]", tool_names)
            if problem:
                return None, problem
            parts.append(part)
        contents.append({"role": _ROLES[msg["role"]], "parts": parts})
    return contents, None


def tools_of(tools: Any, where: str = "params.tools") -> tuple[list[dict] | None, Problem]:
    """Client tools -> one `functionDeclarations` tool; server tools (no input_schema) are refused."""
    if not isinstance(tools, list):
        return None, f"{where} must be a list"
    declarations = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) \
                or not isinstance(tool.get("input_schema"), dict):
            return None, f"{where}[{i}] must be a tool with a name and an input_schema; {OWN_FORM}"
        declaration = {"name": tool["name"], "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            declaration["description"] = tool["description"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}], None


def tool_config_of(choice: Any, where: str = "params.tool_choice") -> tuple[dict | None, Problem]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("auto", "any", "none"):
        return {"functionCallingConfig": {"mode": kind.upper()}}, None
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice["name"]]}}, None
    return None, f"{where} must be {{type: auto|any|none}} or {{type: tool, name}}"


def schema_of(params: dict) -> tuple[dict | None, Problem]:
    """The JSON schema an `output_config.format` (or the older `output_format`) asks for; None for none."""
    config = params.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else params.get("output_format")
    if fmt is None:
        return None, None
    where = "params.output_config.format" if isinstance(config, dict) else "params.output_format"
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        return None, f"{where} must be {{type: json_schema, schema: {{...}}}}"
    return fmt["schema"], None


def generation_config(params: dict) -> tuple[dict | None, Problem]:
    config = {_CONFIG[k]: params[k] for k in _CONFIG if params.get(k) is not None}
    schema, problem = schema_of(params)
    if problem:
        return None, problem
    if schema is not None:
        config.update(responseMimeType="application/json", responseJsonSchema=schema)
    thinking = params.get("thinking")
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
        if kind == "disabled":
            config["thinkingConfig"] = {"thinkingBudget": 0}
        elif kind == "enabled" and type(budget) is int:
            config["thinkingConfig"] = {"thinkingBudget": budget}
        else:
            return None, "params.thinking must be {type: enabled, budget_tokens: N} or {type: disabled}"
    return config, None


def estimate_params(request: dict, model: Any) -> dict:
    """A GenerateContentRequest as the Messages-like params the estimates read (job.money.estimate): its
    system instruction, its contents' parts, its tools and its most output tokens, under `model`."""
    config, system, contents = request.get("generationConfig"), request.get("systemInstruction"), request.get("contents")
    messages = [{"role": c.get("role"), "content": c.get("parts")} for c in contents if isinstance(c, dict)] \
        if isinstance(contents, list) else None
    return {"model": model, "system": system.get("parts") if isinstance(system, dict) else None,
            "messages": messages, "tools": request.get("tools"),
            "max_tokens": config.get("maxOutputTokens") if isinstance(config, dict) else None}


def gemini_request(params: Any) -> tuple[dict | None, Problem]:
    """A GenerateContentRequest (without `model`) from Message Batches params."""
    if not isinstance(params, dict):
        return None, "params missing or not an object"
    for name in params:
        if name not in _CONFIG and name not in _DROPPED and name not in _HANDLED:
            return None, f"params.{name} has no Gemini equivalent here; {OWN_FORM}"
    contents, problem = contents_of(params.get("messages"))
    if problem:
        return None, problem
    request: dict[str, Any] = {"contents": contents}
    if params.get("system"):
        parts, problem = text_parts(params["system"], "params.system")
        if problem:
            return None, problem
        request["systemInstruction"] = {"parts": parts}
    if params.get("tools"):
        request["tools"], problem = tools_of(params["tools"])
        if problem:
            return None, problem
    if params.get("tool_choice") is not None:
        request["toolConfig"], problem = tool_config_of(params["tool_choice"])
        if problem:
            return None, problem
    config, problem = generation_config(params)
    if problem:
        return None, problem
    if config:
        request["generationConfig"] = config
    return request, None
