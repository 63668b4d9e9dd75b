"""Token estimates before anything is sent: a heuristic for every request, an exact count for a sample.

The heuristic (`estimate_input_tokens`) counts the characters of text a request carries: Latin-script
and other text at about 3.5 characters a token (English prose runs about 4, code and other
languages fewer, so 3.5 leans high), and each CJK character (Han, kana, Hangul, full-width forms) as
one token, which is about what the Claude and OpenAI tokenizers give for Chinese and Japanese.
One estimator serves the dry run and --max-cost (see pricing.cost_range), so the two never disagree.

The exact count (`measure`) takes a reservoir sample of the accepted requests (`--count-sample`,
drawn with a fixed seed, so a dry run and a run pick the same ones) and counts them exactly with the
provider's `count_tokens` hook (providers.counting: Anthropic's free `POST /v1/messages/count_tokens`
when a key is configured, `tiktoken`, the optional extra `batch-scheduler[tiktoken]`, for OpenAI). Their ratio to the heuristic over the sample
scales every estimate of the job; the spread of the per-request ratios says how far to trust it.
tiktoken downloads its BPE files from the internet at first use: offline, or not installed, the
heuristic stands alone and the report says why. So does any failure of count_tokens.
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from batch_scheduler.core.settings import Settings
from batch_scheduler.providers import REGISTRY, body_field, headers_for, provider_class

CHARS_PER_TOKEN = 3.5
_TEXT_FIELDS = ("system", "messages", "input", "prompt")
_CJK_RUN = re.compile("[\u1100-\u11ff\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u31ff\u3200-\u4dbf"
                      "\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
                      "\U00020000-\U0003ffff]+")
SAMPLE_SEED = 0x5A3D1E


def text_weight(text: str) -> float:
    """A string's length in Latin characters: a CJK character weighs a whole token (3.5 of them)."""
    if text.isascii():
        return len(text)
    cjk = sum(map(len, _CJK_RUN.findall(text)))
    return len(text) + cjk * (CHARS_PER_TOKEN - 1)


def _chars(content: Any) -> float:
    """Weighted characters of text in a message content, a system prompt or an input: strings and text
    blocks count their text; any other block (image, tool use or result, ...) counts its JSON, which
    overstates images (their base64) but keeps the estimate from ignoring them."""
    kind = type(content)
    if kind is str:
        return text_weight(content)
    if kind is list or (kind is not dict and isinstance(content, list)):
        n = 0.0
        for item in content:
            if type(item) is str:
                n += text_weight(item)
            else:
                text = item.get("text") if type(item) is dict else None  # a text block: its text, directly
                n += text_weight(text) if type(text) is str else _chars(item)
        return n
    if isinstance(content, dict):
        text = content.get("text")
        if isinstance(text, str):
            return text_weight(text)
        if "content" in content and "role" in content:  # an OpenAI or Anthropic message
            return _chars(content["content"])
    elif content is None:
        return 0
    elif isinstance(content, str):
        return text_weight(content)
    return text_weight(json.dumps(content, ensure_ascii=False))


def estimate_input_tokens(params: dict) -> int:
    """Input tokens of one request, estimated without a tokenizer: the weighted characters of text in
    `system`, every message's content, the OpenAI `input` / `prompt` fields and the tools' JSON, over
    3.5, rounded up. The true count comes back in each result's usage."""
    chars = 0.0
    for name in _TEXT_FIELDS:
        value = params.get(name)
        if value is None:
            continue
        if type(value) is str:
            chars += text_weight(value)
        elif name == "messages" and type(value) is list:
            for msg in value:  # _chars of each message; a {role, content} one's content taken directly
                is_message = type(msg) is dict and "role" in msg and "content" in msg and "text" not in msg
                content = msg["content"] if is_message else msg
                chars += text_weight(content) if type(content) is str else _chars(content)
        else:
            chars += _chars(value)
    if params.get("tools"):
        chars += text_weight(json.dumps(params["tools"], ensure_ascii=False))
    return math.ceil(chars / CHARS_PER_TOKEN)


def params_of(obj: dict, provider_name: str | None) -> dict:
    """The request body of a line: `params` (Message Batches) or `body` (OpenAI, inline proxy)."""
    first, second = ("body", "params") if body_field(provider_name) == "body" else ("params", "body")
    params = obj.get(first)
    if not isinstance(params, dict):
        params = obj.get(second)
    return params if isinstance(params, dict) else {}


def estimate_request(obj: dict, provider_name: str | None = None) -> tuple[str | None, int, int]:
    """(model, estimated input tokens, most output tokens) of one request line, parsed.

    Understands the Message Batches form (`params`) and the `{method, url, body}` form of OpenAI and
    the inline proxy (`provider_name` says which to read first when a line has both); the output
    bound is `max_tokens`, else `max_completion_tokens` / `max_output_tokens` (0 when none is set).
    """
    cls = REGISTRY.get(provider_name) if provider_name else None
    view = cls.estimate_view if cls is not None else None
    params = params_of(view(obj) if view is not None else obj, provider_name)
    out = params.get("max_tokens") or params.get("max_completion_tokens") or params.get("max_output_tokens") or 0
    model = params.get("model")
    return (model if isinstance(model, str) else None), estimate_input_tokens(params), int(out)


@dataclass(slots=True)
class ModelTotals:
    requests: int = 0
    input_tokens: int = 0
    max_output_tokens: int = 0
    largest_input: int = 0  # the largest request's estimate (does it reach a long-context price?)


def tally(lines: Iterable[bytes], provider_name: str | None = None,
          into: dict[str | None, ModelTotals] | None = None) -> dict[str | None, ModelTotals]:
    """Per model (None: the request names none), the request lines' counts and token estimates."""
    sums: dict[str | None, list[int]] = {}  # model -> [requests, input tokens, max output tokens, largest]
    for obj in map(orjson.loads, lines):
        model, input_tokens, max_out = estimate_request(obj, provider_name)
        row = sums.get(model)
        if row is None:
            sums[model] = row = [0, 0, 0, 0]
        row[0] += 1
        row[1] += input_tokens
        row[2] += max_out
        if input_tokens > row[3]:
            row[3] = input_tokens
    by_model: dict[str | None, ModelTotals] = {} if into is None else into
    for model, (requests, input_tokens, max_out, largest) in sums.items():
        totals = by_model.setdefault(model, ModelTotals())
        totals.requests += requests
        totals.input_tokens += input_tokens
        totals.max_output_tokens += max_out
        totals.largest_input = max(totals.largest_input, largest)
    return by_model


# -- a sample, counted exactly ------------------------------------------------------------------------


class Reservoir:
    """A uniform sample of `size` lines from a stream of unknown length (algorithm R), seeded."""

    def __init__(self, size: int, seed: int = SAMPLE_SEED):
        self.size = size
        self.seen = 0
        self.lines: list[bytes] = []
        self._rng = random.Random(seed)

    def offer(self, lines: list[bytes]) -> None:
        for line in lines:
            self.seen += 1
            if len(self.lines) < self.size:
                self.lines.append(line)
            else:
                j = self._rng.randrange(self.seen)
                if j < self.size:
                    self.lines[j] = line


@dataclass
class Measured:
    """How the heuristic compares with exact counts over a sample of the job's requests."""

    method: str = "heuristic"  # or "count_tokens", "tiktoken"
    sample: int = 0  # requests counted exactly
    of: int = 0  # requests the sample was drawn from
    ratio: float = 1.0  # exact / heuristic over the sample: the factor every estimate is scaled by
    low: float | None = None  # the smallest and largest per-request ratio
    high: float | None = None
    stdev: float | None = None
    note: str | None = None  # why nothing was counted

    def describe(self) -> str:
        if not self.sample:
            return f"heuristic: about {CHARS_PER_TOKEN:g} characters a token, a CJK character one token"
        spread = f"per request x{self.low:.2f} to x{self.high:.2f}"
        if self.stdev is not None:
            spread += f", sd {self.stdev:.2f}"
        return (f"the heuristic x{self.ratio:.2f}: {self.sample:,} of {self.of:,} requests counted exactly "
                f"with {self.method}; {spread}")


def _ratios(exact: list[int], heuristic: list[int], method: str, of: int) -> Measured:
    per = [e / max(h, 1) for e, h in zip(exact, heuristic, strict=True)]
    return Measured(method=method, sample=len(exact), of=of, ratio=sum(exact) / max(sum(heuristic), 1),
                    low=min(per), high=max(per), stdev=statistics.stdev(per) if len(per) > 1 else None)


async def measure(settings: Settings, sample: list[bytes], of: int) -> Measured:
    """Count the sample exactly where the provider allows it; otherwise say why not (never raises)."""
    if not sample:
        return Measured(note="no request to count", of=of)
    objs = [orjson.loads(line) for line in sample]
    heuristic = [estimate_request(o, settings.provider)[1] for o in objs]
    provider = provider_class(settings.provider)
    if provider.token_count is None:
        return Measured(of=of, note=f"provider {settings.provider} has no token count")
    bodies = [params_of(o, settings.provider) for o in objs]
    exact, problem = await provider.count_tokens(settings, bodies, headers_for(settings))
    return _ratios(exact, heuristic, provider.token_count, of) if exact else Measured(of=of, note=problem)


# -- a survey of the whole job (before the first create, under --max-cost) ----------------------------


@dataclass
class Survey:
    """What every accepted request of a job asks for, per model, and a sample of them."""

    requests: int = 0
    by_model: dict[str | None, ModelTotals] = field(default_factory=dict)
    sample: list[bytes] = field(default_factory=list)

    def record(self, measured: Measured) -> dict[str, Any]:
        """The estimate as the ledger keeps it (meta `estimate`) and summary.json reports it."""
        heuristic = sum(t.input_tokens for t in self.by_model.values())
        return {"method": measured.method, "requests": self.requests, "heuristic_input_tokens": heuristic,
                "input_tokens": math.ceil(heuristic * measured.ratio),
                "max_output_tokens": sum(t.max_output_tokens for t in self.by_model.values()),
                "models": sorted(m or "" for m in self.by_model), "measured": asdict(measured)}


async def survey(chunks: AsyncIterator[Any], provider_name: str, sample_size: int) -> Survey:
    """Read every chunk a run would cut (`chunks`, from batcher.cut_chunks): totals and a sample."""
    found = Survey()
    reservoir = Reservoir(sample_size)
    async for chunk in chunks:
        found.requests += chunk.n
        tally(chunk.lines, provider_name, into=found.by_model)
        reservoir.offer(chunk.lines)
    found.sample = reservoir.lines
    return found


def against_usage(estimate: Mapping[str, Any] | None, counters: Mapping[str, float]) -> dict[str, Any] | None:
    """summary.json's `estimate`: the job's input-token estimate (made under --max-cost, kept in the
    ledger) beside the input tokens the results reported (input + cache writes + cache reads), so a user
    learns how good the estimate was. None when the job made no estimate (--dry-run shows one)."""
    if estimate is None:
        return None
    actual = int(sum(counters.get(k, 0) for k in ("input_tokens", "cache_write_tokens", "cache_read_tokens")))
    answered = int(counters.get("succeeded", 0))
    measured = estimate["measured"]
    return {"method": estimate["method"], "requests": estimate["requests"],
            "input_tokens": estimate["input_tokens"], "heuristic_input_tokens": estimate["heuristic_input_tokens"],
            "ratio": round(measured["ratio"], 4), "sample": measured["sample"],
            "spread": [measured["low"], measured["high"]] if measured["sample"] else None,
            "note": measured["note"],
            "actual_input_tokens": actual, "requests_answered": answered,
            # per request, so a job stopped half-way compares like with like
            "actual_over_estimate": (round((actual / answered) / (estimate["input_tokens"] / estimate["requests"]), 4)
                                     if answered and estimate["input_tokens"] else None)}
