"""Regenerate batch_scheduler/data/prices.json from the `genai-prices` package (a maintained price table).

    python3 -m venv /tmp/gp && /tmp/gp/bin/pip install genai-prices
    /tmp/gp/bin/python tools/update_prices.py 2026-12-01 > batch_scheduler/data/prices.json

genai-prices is a maintainer's tool here, not a dependency of the package (it brings pydantic and an
HTTP client, and its prices change with its version: a job's cap must not move when a library is
upgraded between two runs of it). This script reads its standard prices in force on DATE for the
Claude and OpenAI text models, checks its batch variants against our one batch discount (0.5), and
writes an explicit per-model `batch` entry where they differ (older OpenAI models bill cached input at
the batch input price). Check the result against the providers' pricing pages before committing.
"""

from __future__ import annotations

import datetime
import json
import sys
from decimal import Decimal

from genai_prices import __version__ as genai_version  # type: ignore[import-not-found]
from genai_prices.data import providers  # type: ignore[import-not-found]

DISCOUNT = Decimal("0.5")
FIELDS = {"input": "input_mtok", "output": "output_mtok", "cache_write": "cache_write_mtok",
          "cache_write_1h": "cache_write_1h_mtok", "cache_read": "cache_read_mtok"}
# genai-prices ids -> the model ids the APIs answer with (a key matches itself and its dated snapshots)
RENAME = {"claude-3-5-haiku-latest": ["claude-3-5-haiku"], "claude-3-7-sonnet-latest": ["claude-3-7-sonnet"],
          "claude-opus-4-0": ["claude-opus-4", "claude-opus-4-0"],
          "claude-sonnet-4-0": ["claude-sonnet-4", "claude-sonnet-4-0"]}
SKIP_ANTHROPIC = {"claude-2", "claude-v1", "claude-3-sonnet", "claude-3-opus-latest"}  # long retired
OPENAI_TEXT = ("gpt-3.5-turbo", "gpt-4", "gpt-5", "gpt-6", "o1", "o3", "o4", "text-embedding-")
OPENAI_SKIP = ("-audio", "-realtime", "-transcribe", "-tts", "-search", "-image", "-cyber", "-rosalind",
               "-deep-research", "gpt-4-vision", "gpt-4.5", "gpt-3.5-turbo-1106", "gpt-3.5-turbo-0613",
               "gpt-3.5-turbo-16k", "gpt-3.5-turbo-instruct", "gpt-4-32k", "gpt-4o:extended", "codex", ".ft-")


def in_force(prices, day: datetime.date):
    if not isinstance(prices, list):
        return prices
    found = None
    for conditional in prices:
        start = getattr(conditional.constraint, "start_date", None)
        if conditional.constraint is None or (start is not None and start <= day):
            found = conditional.prices
    return found


def split(value) -> tuple[Decimal | None, int | None, Decimal | None]:
    """(base, tier start, tier price) of a flat or tiered price."""
    if value is None:
        return None, None, None
    if hasattr(value, "tiers"):
        if len(value.tiers) != 1:
            raise SystemExit(f"more than one tier: {value}")
        return value.base, value.tiers[0].start, value.tiers[0].price
    return value, None, None


def entry(model, day: datetime.date, anthropic: bool) -> dict | None:
    std = in_force(model.prices, day)
    base, tier = {}, {}
    above = None
    for ours, theirs in FIELDS.items():
        price, start, high = split(getattr(std, theirs, None))
        if price is None:
            continue
        base[ours] = price
        if start is not None:
            above, tier[ours] = start, high
    if "input" not in base or "output" not in base and not model.id.startswith("text-embedding"):
        return None
    base.setdefault("output", Decimal(0))
    base.setdefault("cache_read", base["input"])  # no cached-input price: cached input costs input
    base.setdefault("cache_write", base["input"] * (Decimal("1.25") if anthropic else 1))
    base.setdefault("cache_write_1h", base["input"] * 2 if anthropic else base["cache_write"])
    out: dict = {k: float(base[k]) for k in FIELDS}
    if tier:
        tier.setdefault("cache_read", tier["input"])
        tier.setdefault("cache_write", tier["input"] * (Decimal("1.25") if anthropic else 1))
        tier.setdefault("cache_write_1h", tier["input"] * 2 if anthropic else tier["cache_write"])
        out["long_context"] = {"above_input_tokens": above, **{k: float(tier[k]) for k in FIELDS}}
    batch = [v for v in (getattr(model, "price_variants", None) or []) if v.when == {"processing": "batch"}]
    if batch:
        explicit = {}
        for ours, theirs in FIELDS.items():
            given, _, _ = split(getattr(batch[-1].prices, theirs, None))
            if given is None and ours == "cache_read" and getattr(std, theirs, None) is not None:
                given = base["input"] * DISCOUNT  # no batch cache-read price: billed as batch input
            if given is not None and given != base[ours] * DISCOUNT:
                explicit[ours] = float(given)
        if explicit:
            out["batch"] = explicit
    return out


def main(day_text: str) -> None:
    day = datetime.date.fromisoformat(day_text)
    models: dict[str, dict] = {}
    for provider in providers:
        if provider.id not in ("anthropic", "openai"):
            continue
        for model in provider.models:
            mid = model.id
            if provider.id == "anthropic" and mid in SKIP_ANTHROPIC:
                continue
            if provider.id == "openai" and (not mid.startswith(OPENAI_TEXT) or any(s in mid for s in OPENAI_SKIP)):
                continue
            doc = entry(model, day, provider.id == "anthropic")
            if doc is not None:
                for key in RENAME.get(mid, [mid]):
                    models[key] = doc
    head = {
        "_comment": "Standard (non-batch) USD per million tokens; batch_discount applies on top unless a model's "
                    "`batch` entry names its batch price. cache_write is the 5-minute TTL (1.25x input), "
                    "cache_write_1h the 1-hour TTL (2x), cache_read a cache hit. long_context: every token of a "
                    "request whose prompt (input + cache writes + cache reads) is above `above_input_tokens` is "
                    "billed at those prices. A model id matches a key exactly, or as the key plus a snapshot "
                    "date (-20250929, -2024-08-06, @20250929) or -latest; nothing else is guessed. Override "
                    "with --prices FILE (same shape; its models win).",
        "taken": day_text,
        "source": f"genai-prices {genai_version} (tools/update_prices.py), checked against the providers' "
                  f"pricing pages",
        "batch_discount": float(DISCOUNT),
    }
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()] + ['  "models": {']
    items = sorted(models.items())
    for i, (key, doc) in enumerate(items):
        lines.append(f"    {json.dumps(key)}: {json.dumps(doc)}" + ("," if i < len(items) - 1 else ""))
    lines += ["  }", "}"]
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else datetime.date.today().isoformat())
