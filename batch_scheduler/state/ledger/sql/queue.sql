-- The cluster's job queue in PostgreSQL (cluster/queue.py), one statement per name, read once by
-- state/queries.py. Parameters are named (%(name)s). Times are the database's clock.

-- name: claim
UPDATE jobs SET state = 'running', claim_token = %(token)s, node_id = %(node)s,
       lease_until = clock_timestamp() + make_interval(secs => %(lease)s), claims = claims + 1, updated_at = now()
WHERE id = (SELECT id FROM jobs
            WHERE (state IN ('queued', 'paused') OR (state = 'running' AND lease_until < clock_timestamp()))
              AND (not_before IS NULL OR not_before <= clock_timestamp())
            ORDER BY submitted_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, name, spec, cancel_requested, claims, restarts

-- name: fewest
SELECT MIN((SELECT count(*) FROM jobs j WHERE j.node_id = n.node_id AND j.state = 'running'
                                       AND j.lease_until > clock_timestamp()))
FROM nodes n WHERE n.node_id <> %(node)s AND n.seen_at > clock_timestamp() - make_interval(secs => %(live_s)s)

-- name: lock_output
-- one submit per output at a time, to the end of its transaction: the check below and the insert cannot race
SELECT pg_advisory_xact_lock(hashtextextended(%(out)s, 0))

-- name: named
SELECT 1 FROM jobs WHERE name = %(name)s

-- name: output_owner
-- any job on the output, finished or not: a finished output is never reused
SELECT name, state FROM jobs WHERE rtrim(spec->>'out', '/') = %(out)s ORDER BY id LIMIT 1

-- name: submit
INSERT INTO jobs (name, state, spec) VALUES (%(name)s, 'queued', %(spec)s::jsonb) RETURNING id

-- name: hold_named
SELECT id, state FROM jobs WHERE name = %(name)s FOR UPDATE

-- name: cancel_requested
UPDATE jobs SET cancel_requested = TRUE, updated_at = now() WHERE id = %(job_id)s

-- name: in_flight
SELECT 1 FROM chunks WHERE job_id = %(job_id)s AND state IN ('submitted', 'submitting') LIMIT 1

-- name: cancel_now
UPDATE jobs SET state = 'cancelled', reason = 'cancelled before it ran', claim_token = NULL, node_id = NULL,
       lease_until = NULL
WHERE id = %(job_id)s

-- name: status
SELECT j.id, j.name, j.state, j.reason, j.node_id, j.spec, j.cancel_requested, j.claims,
       CASE WHEN j.state = 'running' THEN EXTRACT(EPOCH FROM j.lease_until - clock_timestamp()) END,
       EXTRACT(EPOCH FROM j.submitted_at), EXTRACT(EPOCH FROM j.updated_at),
       COALESCE((SELECT jsonb_object_agg(c.name, c.value) FROM counters c WHERE c.job_id = j.id), '{}'),
       (SELECT value FROM meta m WHERE m.job_id = j.id AND m.key = 'accepted_total')
FROM jobs j WHERE (%(name)s::text IS NULL OR j.name = %(name)s) ORDER BY j.submitted_at, j.id

-- name: register
INSERT INTO nodes (node_id, listen) VALUES (%(node)s, %(listen)s)
ON CONFLICT (node_id) DO UPDATE SET started_at = now(), seen_at = now(), listen = excluded.listen

-- name: heartbeat
UPDATE nodes SET seen_at = now() WHERE node_id = %(node)s

-- name: renew
UPDATE jobs SET lease_until = clock_timestamp() + make_interval(secs => %(lease)s)
WHERE id = %(job_id)s AND claim_token = %(token)s AND lease_until > clock_timestamp()
RETURNING cancel_requested

-- name: settle
UPDATE jobs SET state = %(state)s, reason = %(reason)s, claim_token = NULL, node_id = NULL, lease_until = NULL,
       not_before = CASE WHEN %(wait_s)s::float8 IS NULL THEN NULL
                         ELSE clock_timestamp() + make_interval(secs => %(wait_s)s::float8) END,
       restarts = COALESCE(%(restarts)s, restarts), updated_at = now()
WHERE id = %(job_id)s AND claim_token = %(token)s RETURNING id

-- name: batches_of_others
-- the batch ids every other job records (created or adopted) since a time: what a job must never adopt
SELECT batch_id FROM chunks WHERE job_id <> %(job_id)s AND batch_id IS NOT NULL AND submitted_at >= %(since)s
UNION SELECT batch_id FROM orphans WHERE job_id <> %(job_id)s

-- name: turn_lock
-- a provider account's turn to create and look for lost batches (state/turns.py): a session lock, first come
-- first served, given back by PostgreSQL when the session ends (a killed node)
SELECT pg_advisory_lock(%(space)s, hashtext(%(account)s))

-- name: turn_unlock
SELECT pg_advisory_unlock(%(space)s, hashtext(%(account)s))
