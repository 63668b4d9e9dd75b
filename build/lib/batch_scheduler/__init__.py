"""batch-scheduler: very large LLM workloads through provider batch APIs, exactly once."""

__version__ = "0.1.0"
