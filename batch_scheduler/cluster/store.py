"""A cluster job's store for one claim: the ledger in PostgreSQL, results as write-once objects in OUT.

`ClusterStore` is `state.stores.ObjectsStore` (what `run --out s3://` uses too) with the ledger of the
job in PostgreSQL, fenced by the claim's token: the engine runs over it unchanged. A fenced claim
publishes nothing. Like every store it claims OUT before anything is written there (state/owner.py).
"""

from __future__ import annotations

from batch_scheduler.core.settings import Settings
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.ledger.budget import Share, account_of
from batch_scheduler.state.ledger.postgres import PgLedger
from batch_scheduler.state.objects import Objects
from batch_scheduler.state.stores import ObjectsStore


class ClusterStore(ObjectsStore):
    """One claim on a cluster job: its ledger in PostgreSQL, fenced by the claim's token."""

    def __init__(self, url: str, job_id: int, name: str, token: str, out: str, *, work_root: str | None = None,
                 objects: Objects | None = None, share: Share | None = None):
        super().__init__(name, token, out, work_root=work_root, objects=objects)
        self.url = url
        self.job_id = job_id
        self.share = share  # the shared admission budget the job draws on (budget.py), if any

    def lock(self, owner: str) -> None:
        """None: the claim's lease is the lock (every ledger transaction checks it)."""
        return None

    def open_ledger(self, settings: Settings, inputs: list[str], remembered: dict) -> Ledger:
        prints = self.fingerprints(inputs)
        ledger = PgLedger(self.url, self.job_id, self.token, name=self.name)
        ledger.share = self.share
        if settings.api_key:  # what admission learns of this account's queues is every job's to start from
            ledger.account = account_of(settings.provider, settings.base_url, settings.api_key)
        return self._opened(ledger, settings, prints, remembered)
