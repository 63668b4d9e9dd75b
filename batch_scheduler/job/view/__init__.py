"""Read-back: what a job looks like from outside while it runs and after it ends.

It owns the job's status from its ledger (`status`), its results read back as they lie or in input
order (`results`), `export` to JSONL/CSV/Parquet (`export`), the progress a user sees (`progress`), and
summary.json, the account of a run (`summary`). Nothing here sends anything.
"""
