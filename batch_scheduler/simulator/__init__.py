"""A faithful, fast stand-in for the provider batch APIs, faults and all.

    Simulator(config, clock)        the aiohttp server (server.py), in-process
    SimConfig                       what it does (config.py): limits, timing, fault rates
    add_arguments(parser), run(args) the `simulate` command (cli.py)
    process.SimulatorProcess         the simulator in a subprocess (benchmark, kill -9 tests)

Providers, one folder per family as in `providers/`: Anthropic Message Batches and count_tokens
(anthropic/api.py) and the article's inline proxy (anthropic/inline.py); OpenAI batches (openai/api.py),
its files (openai/files.py), the answer bodies of each endpoint (openai/bodies.py) and the providers
served on them (Azure, Groq, Together, Mistral, xAI: openai/); Gemini and Vertex AI with Cloud Storage
(google/); Bedrock (aws/). The server core stays at the top. What the APIs share (config, clock, random draws, stats, store, prompt
cache, and the steps every handler takes with them) is one SimContext (context.py), built by the
server and handed to each API; no API module imports the server. A create's requests are read in
batches.py, their params checked per `anthropic-version` in validation.py, their tokens counted
(cache included) in counting.py; batches live in store.py; the faults of calls (failing answers,
ghost 404s, spend and billing limits) are in faults.py; answers and error bodies in each provider's
shape are built in responses.py.
"""

from typing import Any

from batch_scheduler.simulator.cli import add_arguments, run
from batch_scheduler.simulator.config import SimConfig

__all__ = ["SimConfig", "Simulator", "add_arguments", "run"]


def __getattr__(name: str) -> Any:
    if name == "Simulator":  # the server (aiohttp.web) only when asked for: the CLI's parser needs none of it
        from batch_scheduler.simulator.server import Simulator
        return Simulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
