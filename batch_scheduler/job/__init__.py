"""One job, from input files to sharded results, resumable at any instant.

The stages are sub-packages in the order a request meets them: `input/` (read, rows and templates,
validate, cut), `money/` (prices, estimates, the cost cap), `admit/` (may the next batch go), `send/`
(create exactly once, track), `collect/` (answers into the shards, or send again) and `view/` (status,
results, export, progress, summary). On top: `job` (a job directory), `producer` (what a run sends
next), `run` (one run: producer, sender and endings in one task group), `engine` (the runs of a
process), `dryrun`, `cancel`, `outcome` (what a run's result means for the job, for the daemon and the
cluster alike) and `api` (the library's entry points). docs/architecture.md draws it.
"""
