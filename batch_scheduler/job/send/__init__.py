"""The sending stage: a chunk becomes a batch at the provider, exactly once, and is tracked there.

It owns creating batches with the write-ahead intent and adopting a create whose answer was lost
(`submitter`), what the run does at create (`sender`: resend, parts, a full queue as a value, the
provider's spend limit), the batches in flight and the room they hold (`flights`), whose batch is whose
across every job of the process (`claims`, one registry), and one poll loop over every batch in flight
(`poller`).
"""
