"""The one place the event loop is chosen (uvloop when importable), and the process set-up of the CLI.

    new_event_loop()   a loop of the chosen kind, nothing else changed: the library API runs on it
    run_loop(coro)     for process entry points only (the CLI's commands, the daemon, the simulator's
                       own process): tunes the garbage collector and malloc's arenas for the whole
                       process, then runs `coro`

`batch_scheduler.run()` never calls `run_loop`: a library must not change the process it is imported
into (GC thresholds, the event-loop policy, signal handlers), so it runs on `new_event_loop` alone.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
from collections.abc import Callable, Coroutine, Iterable
from typing import Any


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when importable, else asyncio's; no policy is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def tune_gc() -> None:
    """The hot loops allocate container objects by the thousand (parsed lines, a batch's usage tuples) that
    die young by reference counting; at the default gen-0 threshold (700) the cycle collector ran ~2,500
    times on 1,000,000 requests (0.83 s, ~4.5% of the CPU). Objects from start-up are frozen out of it.
    Process-wide: entry points only."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


M_ARENA_MAX = -8  # glibc's mallopt parameters
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 512 << 10


def limit_malloc_arenas(arenas: int = 2, mmap_threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> None:
    """glibc gives each thread that allocates an arena of its own (up to 8 per core), and each keeps what
    was freed in it: the reader's, the ledger's and the executor's threads held ~50 MiB more RSS than the
    live heap at 200,000 requests (229 -> 180 MiB peak with two arenas, the same CPU).

    Blocks from `mmap_threshold_bytes` up (a bucket input's 4 MiB ranges, a long line joined) are mapped
    apart and unmapped when freed; the reader's blocks and a create's body pieces (256 KiB) stay under it, so
    their buffers are used again rather than mapped and zeroed afresh. glibc's own threshold rises to the largest block freed, so those
    blocks came from the heap, and the request lines and answers allocated around them kept the heap
    from shrinking: at 1,000,000 requests the heap held 40-60 MiB free and the peak RSS was 156 MiB,
    141 MiB with the threshold fixed. Process-wide: entry points only; nothing where the C library has
    no mallopt."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_ARENA_MAX, arenas)
    mallopt(M_MMAP_THRESHOLD, mmap_threshold_bytes)


def run_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` to its end as a process entry point: GC tuned (`tune_gc`), on `new_event_loop`."""
    tune_gc()
    limit_malloc_arenas()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coro)


def signal_handlers(sigs: Iterable[int], handler: Callable[[int], None], *, install: bool) -> None:
    """handler(sig) on the running loop for each of sigs (install), or the loop's handlers removed."""
    loop = asyncio.get_running_loop()
    for sig in sigs:
        if install:
            loop.add_signal_handler(sig, handler, sig)
        else:
            loop.remove_signal_handler(sig)
