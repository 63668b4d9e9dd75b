"""Past one machine: any number of identical nodes over PostgreSQL and object storage.

It owns a node's lifecycle (`node`: claim, run, renew, settle; signals and the status API), one claimed
job on a node (`runner`: its settings under the one trust rule, the engine over a fenced store, its next
state by `job.outcome`), a claim kept alive (`lease`), the job queue (`queue`: submit, claim under a
lease, settle, cancel, status; its SQL lives in `state/`), a claim's fenced store (`store`), the local
paths a node may use (`places`, `--allow-root`) and its flags (`arguments`). It never imports `daemon/`.
"""
