"""The program's version, in one place below every layer: the root package re-exports it, the providers
send it in their User-Agent, the CLI prints it. pyproject.toml states the same number (a test compares)."""

from __future__ import annotations

__version__ = "0.1.0"
USER_AGENT = f"batch-scheduler/{__version__}"  # who is calling, for the providers' and proxies' support
