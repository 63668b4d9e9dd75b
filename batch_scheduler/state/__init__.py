"""A job's durable state: the ledger (ledger/: one `Ledger` interface, ledger/base.py; an SQLite backend
for a job directory, sqlite.py, and a PostgreSQL one for a cluster job, postgres.py, sharing their
recipes, recipes.py, over named statements, sql/*.sql; beside them the cluster's shared admission
budget, budget.py, and an account's turns, turns.py), the shard writers (shards.py, object_shards.py),
the object stores (objects.py), who owns an output (owner.py), a job's identity and directory
(identity.py, jobdir.py), and the job stores that put these together (stores.py). Only this layer writes
SQL; it imports `core` alone.

`open_ledger(where)` is the one door: a path (or `sqlite:PATH`) opens SQLite, `postgresql://` PostgreSQL.
"""

from batch_scheduler.state.ledger import Ledger, open_ledger

__all__ = ["Ledger", "open_ledger"]
