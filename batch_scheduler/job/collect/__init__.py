"""The collecting stage: an ended batch's answers into the shards, exactly once.

It owns streaming a batch's results into the shards and accounting for every request (`collector`),
and what a run does with an ended batch: collect it, or send its requests again (`ended`). The shard
files themselves are state (`state.shards`).
"""
