-- The PostgreSQL ledger's statements (state/postgres.py), one per name, read once by state/queries.py.
-- Parameters are named (%(name)s), the same names as their SQLite twins in sqlite.sql; every table is
-- keyed by the job (%(job_id)s). {cols} is a chunk row's columns.

-- name: read_meta
SELECT key, value FROM meta WHERE job_id = %(job_id)s

-- name: write_meta
INSERT INTO meta (job_id, key, value) VALUES (%(job_id)s, %(key)s, %(value)s::jsonb)
ON CONFLICT (job_id, key) DO UPDATE SET value = excluded.value

-- name: chunks_of_root
SELECT {cols} FROM chunks WHERE job_id = %(job_id)s AND root_seq = %(seq)s ORDER BY skip, id

-- name: chunks_in
SELECT {cols} FROM chunks WHERE job_id = %(job_id)s AND state = ANY(%(states)s) ORDER BY id

-- name: chunk
SELECT {cols} FROM chunks WHERE job_id = %(job_id)s AND id = %(id)s

-- name: all_chunks
SELECT {cols} FROM chunks WHERE job_id = %(job_id)s ORDER BY id

-- name: claimed_batch_ids
SELECT batch_id FROM chunks WHERE job_id = %(job_id)s AND batch_id IS NOT NULL
UNION SELECT batch_id FROM orphans WHERE job_id = %(job_id)s

-- name: batch_ids_since
SELECT batch_id FROM chunks WHERE job_id = %(job_id)s AND batch_id IS NOT NULL AND submitted_at >= %(since)s

-- name: intent_again
UPDATE chunks SET state = %(state)s, intent_at = %(now)s, nbytes = %(nbytes)s, est_cost = %(est_cost)s,
    units = %(units)s, queue_key = %(queue_key)s, create_at = NULL WHERE job_id = %(job_id)s AND id = %(id)s

-- name: creating
UPDATE chunks SET create_at = %(now)s WHERE job_id = %(job_id)s AND id = %(id)s AND state = %(state)s

-- name: intent_new
INSERT INTO chunks (job_id, kind, root_seq, skip, take, start_file, start_pos, start_line, end_file, end_pos,
    nbytes, state, attempt, intent_at, est_cost, skipped, digest, units, queue_key)
VALUES (%(job_id)s, %(kind)s, %(root_seq)s, %(skip)s, %(take)s, %(start_file)s, %(start_pos)s, %(start_line)s,
    %(end_file)s, %(end_pos)s, %(nbytes)s, %(state)s, %(attempt)s, %(now)s, %(est_cost)s, %(skipped)s,
    %(digest)s, %(units)s, %(queue_key)s) RETURNING id

-- name: assign_retry
UPDATE retries SET chunk_id = %(chunk_id)s, state = %(state)s WHERE job_id = %(job_id)s AND custom_id = %(custom_id)s

-- name: move_retry
UPDATE retries SET chunk_id = %(chunk_id)s WHERE job_id = %(job_id)s AND custom_id = %(custom_id)s

-- name: put_ids
INSERT INTO chunk_ids VALUES (%(chunk_id)s, %(ids)s) ON CONFLICT (chunk_id) DO UPDATE SET ids = excluded.ids

-- name: chunk_ids
SELECT i.ids FROM chunk_ids i JOIN chunks k ON k.id = i.chunk_id
WHERE k.job_id = %(job_id)s AND i.chunk_id = %(chunk_id)s

-- name: submitted
UPDATE chunks SET state = %(state)s, batch_id = %(batch_id)s, adopted = %(adopted)s, submitted_at = %(now)s
WHERE job_id = %(job_id)s AND id = %(id)s

-- name: set_state
UPDATE chunks SET state = %(state)s, note = COALESCE(%(note)s, note) WHERE job_id = %(job_id)s AND id = %(id)s

-- name: set_note
UPDATE chunks SET note = %(note)s WHERE job_id = %(job_id)s AND id = %(id)s

-- name: disown
UPDATE chunks SET state = %(state)s, batch_id = NULL, adopted = 0, note = %(note)s
WHERE job_id = %(job_id)s AND id = %(id)s

-- name: mark_ended
UPDATE chunks SET ended_at = COALESCE(ended_at, %(ended_at)s) WHERE job_id = %(job_id)s AND id = %(id)s

-- name: split_half
INSERT INTO chunks (job_id, kind, root_seq, skip, take, start_file, start_pos, start_line, end_file, end_pos,
    nbytes, state, attempt, note, skipped, digest)
VALUES (%(job_id)s, %(kind)s, %(root_seq)s, %(skip)s, %(take)s, %(start_file)s, %(start_pos)s, %(start_line)s,
    %(end_file)s, %(end_pos)s, %(nbytes)s, %(state)s, %(attempt)s, %(note)s, %(skipped)s, %(digest)s) RETURNING id

-- name: put_rejected
INSERT INTO api_rejected VALUES (%(job_id)s, %(custom_id)s, %(root_seq)s, %(message)s)
ON CONFLICT (job_id, custom_id) DO UPDATE SET root_seq = excluded.root_seq, message = excluded.message

-- name: retry_done
UPDATE retries SET state = %(state)s, chunk_id = NULL WHERE job_id = %(job_id)s AND custom_id = %(custom_id)s

-- name: api_rejected
SELECT custom_id, message FROM api_rejected WHERE job_id = %(job_id)s

-- name: api_rejected_of_root
SELECT custom_id, message FROM api_rejected WHERE job_id = %(job_id)s AND root_seq = %(root_seq)s

-- name: retry_requests
SELECT custom_id, request, attempts FROM retries WHERE job_id = %(job_id)s AND chunk_id = %(chunk_id)s
ORDER BY custom_id

-- name: pending_retries
SELECT custom_id, request, attempts FROM retries WHERE job_id = %(job_id)s AND state = %(state)s
AND not_before <= %(now)s ORDER BY attempts, custom_id LIMIT %(limit)s

-- name: next_retry_at
SELECT MIN(not_before) FROM retries WHERE job_id = %(job_id)s AND state = %(state)s

-- name: count_retries
SELECT COUNT(*) FROM retries WHERE job_id = %(job_id)s AND state = %(state)s

-- name: requeue
UPDATE retries SET state = %(to)s, chunk_id = NULL WHERE job_id = %(job_id)s AND state = %(state)s

-- name: offsets
SELECT idx, "offset" FROM shards WHERE job_id = %(job_id)s

-- name: put_offset
INSERT INTO shards VALUES (%(job_id)s, %(idx)s, %(offset)s)
ON CONFLICT (job_id, idx) DO UPDATE SET "offset" = excluded."offset"

-- name: put_object
INSERT INTO result_objects VALUES (%(job_id)s, %(key)s, %(chunk_id)s, %(shard)s, %(nbytes)s, %(lines)s)

-- name: park
INSERT INTO retries (job_id, custom_id, request, attempts, chunk_id, state, last_line, not_before)
VALUES (%(job_id)s, %(custom_id)s, %(request)s, %(attempts)s, NULL, %(state)s, %(last_line)s, %(not_before)s)
ON CONFLICT (job_id, custom_id) DO UPDATE SET request = excluded.request, attempts = excluded.attempts,
    chunk_id = NULL, state = excluded.state, last_line = excluded.last_line, not_before = excluded.not_before

-- name: add_count
INSERT INTO counters (job_id, name, value) VALUES (%(job_id)s, %(name)s, %(value)s)
ON CONFLICT (job_id, name) DO UPDATE SET value = counters.value + excluded.value

-- name: collected
UPDATE chunks SET state = %(state)s, collected_at = %(now)s, ended_at = COALESCE(ended_at, %(now)s)
WHERE job_id = %(job_id)s AND id = %(id)s

-- name: result_objects
SELECT key FROM result_objects WHERE job_id = %(job_id)s ORDER BY key

-- name: counters
SELECT name, value FROM counters WHERE job_id = %(job_id)s

-- name: retried_finals
SELECT custom_id, attempts FROM retries WHERE job_id = %(job_id)s AND state = %(state)s

-- name: retry_counts
SELECT state, COUNT(*) FROM retries WHERE job_id = %(job_id)s GROUP BY state

-- PostgreSQL's own: the fence, the cancel mark on the job's row, orphans, what an account learned

-- name: fence
SELECT 1 FROM jobs WHERE id = %(job_id)s AND claim_token = %(token)s AND lease_until > clock_timestamp() FOR SHARE

-- name: is_cancelled
SELECT cancel_requested FROM jobs WHERE id = %(job_id)s

-- name: set_cancelled
UPDATE jobs SET cancel_requested = %(cancelled)s WHERE id = %(job_id)s

-- name: hold_job
SELECT 1 FROM jobs WHERE id = %(job_id)s FOR UPDATE

-- name: has_batch
SELECT 1 FROM chunks WHERE job_id = %(job_id)s AND batch_id = %(batch_id)s

-- name: is_orphan
SELECT 1 FROM orphans WHERE job_id = %(job_id)s AND batch_id = %(batch_id)s

-- name: put_orphan
INSERT INTO orphans (job_id, batch_id) VALUES (%(job_id)s, %(batch_id)s) ON CONFLICT DO NOTHING

-- name: own_queue_limits
SELECT value FROM meta WHERE job_id = %(job_id)s AND key = 'queue_limits'

-- name: learned
SELECT queue_key, doc FROM learned WHERE account = %(account)s

-- name: learn
INSERT INTO learned (account, queue_key, doc) VALUES (%(account)s, %(queue_key)s, %(doc)s::jsonb)
ON CONFLICT (account, queue_key) DO UPDATE SET doc = excluded.doc, updated_at = clock_timestamp()
