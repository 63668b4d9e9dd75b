"""A job's durable state: the ledger (one `Ledger` interface, ledger.py; an SQLite backend for a job
directory, sqlite.py, and a PostgreSQL one for a cluster job, postgres.py, sharing their recipes,
recipes.py, over named statements, sql/*.sql), the shard writers (shards.py, object_shards.py), the
object stores (objects.py), the job stores that put these together (stores.py) and the cluster's shared
admission budget (budget.py). Only this layer writes SQL; it imports `core` alone.

`open_ledger(where)` is the one door: a path (or `sqlite:PATH`) opens SQLite, `postgresql://` PostgreSQL.
"""

from batch_scheduler.state.ledger import Ledger, open_ledger

__all__ = ["Ledger", "open_ledger"]
