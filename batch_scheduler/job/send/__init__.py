"""The sending stage: a chunk becomes a batch at the provider, exactly once, and is tracked there.

It owns creating batches with the write-ahead intent and adopting a create whose answer was lost
(`submitter`), whose batch is whose across the jobs of a process (`claims`), and one poll loop over
every batch in flight (`poller`).
"""
