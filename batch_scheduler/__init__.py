"""batch-scheduler: very large LLM workloads through provider batch APIs, exactly once.

    import batch_scheduler

    result = batch_scheduler.run(inputs, out, **options)          # blocking
    result = await batch_scheduler.arun(inputs, out, **options)   # inside a running loop (Jupyter, apps)
    for line in batch_scheduler.read_results(out, order="input"):  # or order="shard" (fastest)
        ...
    batch_scheduler.job_status(out)                                # what `status DIR --json` prints
    df = batch_scheduler.to_pandas(out)   # or to_polars / to_arrow: a row per input row, answers beside
    batch_scheduler.export(out, "answers.parquet")                 # what the CLI's `export` writes
    batch_scheduler.rerun(out, where="status=errored|invalid")     # those rows again, in OUT.rerun-N

`result` is a `JobResult` (exit_code, ok, message, summary). The names are imported when first used,
so `import batch_scheduler.state.ledger.sqlite` (or the CLI's start) does not load the whole pipeline.
`batch_scheduler.testing.simulator()` serves the built-in simulator for your own tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["JobResult", "__version__", "arerun", "arun", "export", "job_status", "read_results", "rerun", "run",
           "to_arrow", "to_pandas", "to_polars"]

_FRAMES = ("to_arrow", "to_pandas", "to_polars", "export")

if TYPE_CHECKING:
    from batch_scheduler.core.version import __version__
    from batch_scheduler.job.api import arerun, arun, rerun, run
    from batch_scheduler.job.engine import JobResult
    from batch_scheduler.job.view.frames import export, to_arrow, to_pandas, to_polars
    from batch_scheduler.job.view.results import read_results
    from batch_scheduler.job.view.status import job_status


def __getattr__(name: str) -> Any:
    if name in ("run", "arun", "rerun", "arerun"):
        from batch_scheduler.job import api
        value = getattr(api, name)
    elif name == "JobResult":
        from batch_scheduler.job.engine import JobResult as value
    elif name == "read_results":
        from batch_scheduler.job.view.results import read_results as value
    elif name in _FRAMES:
        from batch_scheduler.job.view import frames
        value = getattr(frames, name)
    elif name == "job_status":
        from batch_scheduler.job.view.status import job_status as value
    elif name == "__version__":  # core.version's: `import batch_scheduler` alone still loads nothing else
        from batch_scheduler.core.version import __version__ as value
    else:
        raise AttributeError(f"module 'batch_scheduler' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
