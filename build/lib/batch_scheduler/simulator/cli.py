"""`batch-scheduler simulate` / `python -m batch_scheduler.simulator`: serve until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from batch_scheduler.simulator.config import SimConfig
from batch_scheduler.simulator.server import Simulator

EXIT_OK = 0

# flag -> SimConfig field, for the rate and timing flags (None = not given).
_FIELDS = {
    "processing_s": float, "fail_rate": float, "lost_create_rate": float, "errored_rate": float,
    "invalid_rate": float, "expired_rate": float, "cut_rate": float, "batch_fail_rate": float,
    "queue_limit": int, "seed": int,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free port)")
    parser.add_argument("--processing-s", type=float, help="seconds from create until a batch ends")
    parser.add_argument("--fail-rate", type=float, help="share of calls answered 429/500/503/529 or dropped")
    parser.add_argument("--lost-create-rate", type=float, help="share of creates whose answer is lost")
    parser.add_argument("--errored-rate", type=float, help="share of results errored (transient)")
    parser.add_argument("--invalid-rate", type=float, help="share of results errored (invalid_request_error)")
    parser.add_argument("--expired-rate", type=float, help="share of results expired")
    parser.add_argument("--cut-rate", type=float, help="share of results downloads cut short")
    parser.add_argument("--batch-fail-rate", type=float,
                        help="share of OpenAI batches failed as a whole (enqueued token limit reached)")
    parser.add_argument("--queue-limit", type=int, help="most requests processing across all batches")
    parser.add_argument("--keys", help="comma-separated API keys to accept (default: any key)")
    parser.add_argument("--seed", type=int, help="random seed, for reproducible faults")
    parser.add_argument("--faults", action="store_true",
                        help="turn every fault on (explicit rate flags still win)")


def config_from(args: argparse.Namespace) -> SimConfig:
    config = SimConfig.all_faults() if getattr(args, "faults", False) else SimConfig()
    for name in _FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            setattr(config, name, value)
    keys = getattr(args, "keys", None)
    if keys:
        config.valid_keys = {k.strip() for k in keys.split(",") if k.strip()}
    return config


async def serve(args: argparse.Namespace) -> int:
    sim = Simulator(config_from(args))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url = await sim.start(args.host, args.port)
    print(f"simulator listening on {url}", flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM, on the scheduler's event loop set-up (uvloop, GC thresholds)."""
    from batch_scheduler.core.loop import run_loop
    return run_loop(serve(args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batch_scheduler.simulator", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
