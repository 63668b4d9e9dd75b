"""The ledger: one interface (base.py: `Ledger`, the write-ahead order, and `open_ledger`, the one
door), its SQLite and PostgreSQL backends (sqlite.py; postgres.py, over pg.py's connections and schema),
the state changes both make the same way (recipes.py) over named statements per dialect (queries.py,
sql/*.sql: the only SQL in the package), the rows they hand out (rows.py), and the cluster's shared
tables beside the ledger's (budget.py: the admission budget; turns.py: an account's turns to create).
"""

from batch_scheduler.state.ledger.base import Ledger, open_ledger

__all__ = ["Ledger", "open_ledger"]
