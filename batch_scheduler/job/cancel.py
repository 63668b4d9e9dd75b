"""Cancelling a job's batches in flight: `cancel DIR` and the daemon's POST /jobs/NAME/cancel.

The job is marked cancelled in its ledger first, so a run going on sends no new batch (it asks before
each one) and neither does the next run until `--retry-cancelled`. Then the provider is asked to cancel
each batch in flight. A run collects what those batches finished; the requests they did not get to
come back `canceled` and are parked as cancelled.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import RetryPolicy, Settings
from batch_scheduler.providers import headers_for, make_provider
from batch_scheduler.state.ledger import open_ledger
from batch_scheduler.state.ledger.sqlite import ChunkState


@dataclass
class Cancelled:
    requested: list[tuple[str, str | None]] = field(default_factory=list)  # (batch id, provider's status)
    problems: list[str] = field(default_factory=list)  # "<batch id>: <why>" of each batch not cancelled
    refused: errors.AuthRefused | None = None  # the key was refused: no further batch was asked


async def cancel_batches(out_dir: str, settings: Settings | None, *, retry: RetryPolicy | None = None,
                         ledger: Any = None) -> Cancelled:
    """Mark the job in out_dir cancelled and ask the provider to cancel each of its batches in flight.

    Without settings or a key the job is only marked (a run sends nothing new; its batches run on).
    `ledger`: the job's ledger when it is not DIR/ledger.db (a cluster job's); the caller closes it.
    """
    own = ledger is None
    if own:
        ledger = await asyncio.to_thread(open_ledger, os.path.join(out_dir, "ledger.db"))
    out = Cancelled()
    try:
        await ledger.set_cancelled(True)
        rows = await ledger.chunks_in(ChunkState.SUBMITTED)
        if not rows or settings is None or not settings.api_key:
            return out
        async with HttpClient(headers_for(settings), retry or settings.retry, secret=settings.api_key) as http:
            provider = make_provider(settings, http)
            for r in rows:
                batch_id = r.batch_id or ""
                try:
                    info = await provider.cancel(batch_id)
                except errors.ProviderError as err:
                    out.problems.append(f"{batch_id}: {http.redact(str(err))}")
                    if isinstance(err, errors.AuthRefused):
                        out.refused = err
                        break
                    continue
                await ledger.set_note(r.id, f"cancel requested: {info.state.value}")
                out.requested.append((batch_id, info.raw.get("processing_status") or info.raw.get("status")))
    finally:
        if own:
            await asyncio.to_thread(ledger.close)
    return out
