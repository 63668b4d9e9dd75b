"""A faithful, fast stand-in for the provider batch APIs, faults and all.

    Simulator(config, clock)        the aiohttp server (server.py), in-process
    SimConfig                       what it does (config.py): limits, timing, fault rates
    add_arguments(parser), run(args) the `simulate` command (cli.py)
    process.SimulatorProcess         the simulator in a subprocess (benchmark, kill -9 tests)

Providers: Anthropic Message Batches (anthropic.py), OpenAI files + batches (openai.py), the
article's inline proxy (inline.py). Batches live in store.py; answers are built in responses.py.
"""

from batch_scheduler.simulator.cli import add_arguments, run
from batch_scheduler.simulator.config import SimConfig
from batch_scheduler.simulator.server import Simulator

__all__ = ["SimConfig", "Simulator", "add_arguments", "run"]
