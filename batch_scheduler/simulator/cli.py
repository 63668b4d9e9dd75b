"""`batch-scheduler simulate` / `python -m batch_scheduler.simulator`: serve until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from batch_scheduler.simulator.config import FAULT_KINDS, SimConfig

EXIT_OK = 0
PRESETS = {"real": SimConfig.real_faults, "classic": SimConfig.all_faults}

# (flag, SimConfig field, type, help); a flag not given leaves the field as the preset has it.
FLAGS: tuple[tuple[str, type, str], ...] = (
    ("processing-s", float, "seconds from create until a batch ends, whatever its size"),
    ("processing-jitter", float, "each batch takes processing-s x (1 ± this), e.g. 0.5 = ±50%%"),
    ("fail-rate", float, "share of calls answered 429/500/504/409/529 (OpenAI 503) or dropped"),
    ("lost-create-rate", float, "share of creates whose answer is lost (the batch exists)"),
    ("ghost-404-s", float, "retrieve / results answer 404 for this long after a batch's create"),
    ("errored-rate", float, "share of results errored (transient: api_error, overloaded_error)"),
    ("invalid-rate", float, "share of results errored (invalid_request_error)"),
    ("expired-rate", float, "share of results expired"),
    ("missing-rate", float, "share of requests left out of their batch's results"),
    ("request-timeout-rate", float, "share of OpenAI requests answered with a request_timeout error line"),
    ("cut-rate", float, "share of results downloads cut short mid-line"),
    ("invalid-json-rate", float, "share of answers asked for JSON of a schema (an output schema, a forced tool, "
                                 "response_format) that do not fit it"),
    ("batch-fail-rate", float, "share of OpenAI batches failed at random as over the enqueued token limit"),
    ("queue-limit", int, "Anthropic / inline: most requests queued across all batches (429 at create)"),
    ("enqueued-token-limit", int, "OpenAI: most input tokens enqueued per model (the batch fails while "
                                  "validating with token_limit_exceeded)"),
    ("spend-cap", int, "requests created after which every create gets the spend-limit 429"),
    ("retry-after-s", int, "the retry-after of a 429, whole seconds (default 1)"),
    ("seed", int, "random seed, for reproducible faults"),
    ("realtime-rpm", int, "realtime calls (/v1/messages, /v1/chat/completions) per key per window (429 over it)"),
    ("realtime-latency-s", float, "seconds each realtime call takes to answer"),
    ("realtime-window-s", float, "the span --realtime-rpm counts over (default 60: per minute)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free port)")
    for flag, kind, text in FLAGS:
        parser.add_argument(f"--{flag}", type=kind, help=text)
    parser.add_argument("--params-at-create", action="store_true",
                        help="Anthropic: refuse bad params at create (400 naming requests.N), as some proxies "
                             "do, instead of as errored results")
    parser.add_argument("--cache-as-measured", action="store_true",
                        help="prompt cache as measured on the real API: a write is readable only once its request "
                             "completed (a batch's requests never read each other's writes)")
    parser.add_argument("--billing-error", action="store_true", help="answer every call 402 billing_error")
    parser.add_argument("--keys", help="comma-separated API keys to accept (default: any key)")
    parser.add_argument("--faults", nargs="?", const="real", choices=PRESETS, metavar="real|classic",
                        help="turn on a set of faults (explicit flags still win). real (the default): 5%% of "
                             "calls failing (409 among them), 2%% of create answers lost, 3%% errored, 1%% "
                             "expired, 10%% of downloads cut, a 1 s ghost 404 after each create, 0.5%% of "
                             "requests missing from results, 1%% OpenAI request timeouts; no spend cap. "
                             "classic: the same without 409, ghost 404s, missing requests and timeouts")
    parser.add_argument("--fail-kinds", help="comma-separated kinds --fail-rate draws from (default all: "
                                             + ",".join(FAULT_KINDS) + ")")


def config_from(args: argparse.Namespace) -> SimConfig:
    preset = getattr(args, "faults", None)
    config = PRESETS[preset]() if preset else SimConfig()
    for flag, _, _ in FLAGS:
        name = flag.replace("-", "_")
        value = getattr(args, name, None)
        if value is not None:
            setattr(config, name, value)
    for name in ("params_at_create", "billing_error", "cache_as_measured"):
        if getattr(args, name, False):
            setattr(config, name, True)
    kinds = getattr(args, "fail_kinds", None)
    if kinds:
        config.fail_kinds = [k.strip() for k in kinds.split(",") if k.strip()]
        unknown = sorted(set(config.fail_kinds) - set(FAULT_KINDS))
        if unknown:
            raise SystemExit(f"--fail-kinds: unknown kind(s) {', '.join(unknown)}; known: {', '.join(FAULT_KINDS)}")
    keys = getattr(args, "keys", None)
    if keys:
        config.valid_keys = {k.strip() for k in keys.split(",") if k.strip()}
    return config


async def serve(args: argparse.Namespace) -> int:
    from batch_scheduler.simulator.server import Simulator  # not needed to build the CLI's parser
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
