"""`run --dry-run`: read and check every line exactly as a run would, count, estimate; send nothing.

The same sources, provider `check_request`, validator and batch cut as the engine, so the numbers
(requests, rejected lines, batches) are the ones a run would see. The provider is built with
`http=None` and needs no key; the one call a dry run may make is the free token count of a sample
(`--count-sample`, Anthropic's count_tokens when a key is set; tiktoken for openai: job.estimate),
which scales the heuristic estimate and reports its spread. Costs are estimates at batch prices,
per model: low = estimated input tokens only, high = input plus every request's max_tokens as output.
A model the price table does not know is listed as "unknown price", never guessed; with --max-cost
the dry run says a run would refuse the job.
"""

from __future__ import annotations

import math
import os
import sys
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import IO

from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input.batcher import BODY_WRAPPER_BYTES, cut_chunks
from batch_scheduler.job.input.reader import span_blocks
from batch_scheduler.job.input.sources import make_sources
from batch_scheduler.job.input.validate import Rejects, Validator
from batch_scheduler.job.money.budget import unpriced_models
from batch_scheduler.job.money.estimate import Measured, Reservoir, measure
from batch_scheduler.job.money.pricing import ModelTotals, PriceTable, cost_range, tally
from batch_scheduler.providers import make_provider

SHOW_MODELS = 20


@dataclass
class Estimate:
    requests: int = 0
    batches: int = 0
    rejected: int = 0
    by_model: dict[str | None, ModelTotals] = field(default_factory=dict)
    sample: list[bytes] = field(default_factory=list)  # accepted request lines, to count exactly

    @property
    def input_tokens(self) -> int:
        return sum(t.input_tokens for t in self.by_model.values())


def rejects_path(out: str | None) -> str | None:
    """Where the dry run writes rejected lines: `out/rejected.jsonl`, unless `out` already holds a job
    (then `rejected.dry-run.jsonl`, so the job's own list is not replaced)."""
    if not out:
        return None
    os.makedirs(out, mode=0o700, exist_ok=True)
    name = "rejected.dry-run.jsonl" if os.path.exists(os.path.join(out, "ledger.db")) else "rejected.jsonl"
    return os.path.join(out, name)


async def estimate(settings: Settings, inputs: list[str], rejects: Rejects, sample_size: int = 0) -> Estimate:
    """Validate and cut every line as a run would; count and estimate what was accepted (and keep a
    sample of `sample_size` accepted lines, the same a run would draw)."""
    provider = make_provider(settings, http=None)  # type: ignore[arg-type]  # providers never call it here
    sources = make_sources(inputs, settings)
    validator = Validator(provider, settings.batch_bytes - BODY_WRAPPER_BYTES)
    est = Estimate()
    reservoir = Reservoir(sample_size)
    chunks = cut_chunks(span_blocks(sources, (0, 0, 1), None), validator, rejects,
                        batch_size=settings.batch_size, batch_bytes=settings.batch_bytes,
                        overhead=provider.body_overhead, unit_of=lambda fi: sources[fi].unit)
    async with aclosing(chunks):  # closing the cut closes the reader and its files
        async for chunk in chunks:
            est.batches += 1
            est.requests += chunk.n
            tally(chunk.lines, provider.name, into=est.by_model)  # the estimator --max-cost uses too
            reservoir.offer(chunk.lines)
    est.rejected = rejects.count
    est.sample = reservoir.lines
    return est


def usd(x: float) -> str:
    return f"${x:,.6f}" if x < 1 else f"${x:,.4f}" if x < 100 else f"${x:,.2f}"


def report(est: Estimate, settings: Settings, prices: PriceTable, stream: IO[str],
           measured: Measured | None = None) -> None:
    """What a run would send and what it may cost, for the user (stdout)."""
    measured = measured or Measured()
    ratio = measured.ratio
    def say(text: str) -> None:
        print(text, file=stream)

    say(f"dry run ({settings.provider}): nothing was submitted")
    say(f"requests: {est.requests:,}")
    say(f"rejected lines: {est.rejected:,}")
    say(f"batches: {est.batches:,} (at most {settings.batch_size:,} requests and "
        f"{settings.batch_bytes / 1e6:,.0f} MB each)")
    say(f"estimated input tokens: {math.ceil(est.input_tokens * ratio):,} ({measured.describe()})")
    if measured.note:
        say(f"exact count: none ({measured.note})")
    low = high = 0.0
    unknown = 0
    lines = []
    models = sorted(est.by_model.items(), key=lambda kv: -kv[1].requests)
    for model, t in models:
        cost = cost_range(prices, model, t, ratio)
        head = (f"  {model or '(no model)'}: {t.requests:,} request(s), ~{math.ceil(t.input_tokens * ratio):,} input tokens, "
                f"up to {t.max_output_tokens:,} output tokens")
        if cost is None:
            unknown += t.requests
            lines.append(f"{head}: unknown price")
        else:
            low, high = low + cost[0], high + cost[1]
            lines.append(f"{head}: {usd(cost[0])} to {usd(cost[1])}")
    total = f"{usd(low)} to {usd(high)}" if unknown < est.requests or not est.requests else "unknown price"
    if unknown and unknown < est.requests:
        total += f", plus {unknown:,} request(s) at unknown price"
    say(f"estimated cost at batch prices: {total}")
    for text in lines[:SHOW_MODELS]:
        say(text)
    if len(lines) > SHOW_MODELS:
        say(f"  ... and {len(lines) - SHOW_MODELS} more model(s)")
    missing = unpriced_models(prices, est.by_model) if settings.max_cost_usd is not None else []
    if missing:
        say(f"--max-cost: a run would refuse this job (exit 2): no price for {', '.join(m or '(no model)' for m in missing)}; "
            f"give it with --prices FILE")


async def dry_run(settings: Settings, inputs: list[str], out: str | None) -> int:
    """Exit status: 0; 2 with --strict when any line is bad; 1 when a run would send nothing."""
    prices = PriceTable.load(settings.prices_file)
    rejects = Rejects(rejects_path(out), inputs)
    try:
        est = await estimate(settings, inputs, rejects, settings.count_sample)
    finally:
        rejects.close()
    measured = await measure(settings, est.sample, est.requests) if settings.count_sample else None
    report(est, settings, prices, sys.stdout, measured)
    rejects.report(sys.stderr)
    if settings.strict and rejects.count:
        print(f"batch-scheduler: --strict: {rejects.count:,} bad line(s); a run would refuse the whole job and "
              f"submit nothing", file=sys.stderr)
        return 2
    if not est.requests:
        print(f"batch-scheduler: a run would send nothing ({nothing_to_send(rejects.count)})", file=sys.stderr)
        return 1
    return 0


def nothing_to_send(rejected: int) -> str:
    """Why a job's input gives no request: every line rejected, or none at all."""
    return f"all {rejected:,} line(s) rejected" if rejected else "the input holds no request"
