-- The SQLite ledger's statements (state/sqlite.py), one per name, read once by state/queries.py.
-- Parameters are named (:name); every statement of a recipe is given the same names as its
-- PostgreSQL twin in postgres.sql, which also filter by :job_id. {cols} is a chunk row's columns.

-- name: read_meta
SELECT key, value FROM meta

-- name: write_meta
INSERT OR REPLACE INTO meta VALUES (:key, :value)

-- name: chunks_of_root
SELECT {cols} FROM chunks WHERE root_seq = :seq ORDER BY skip, id

-- name: chunks_in
SELECT {cols} FROM chunks WHERE state IN (SELECT value FROM json_each(:states)) ORDER BY id

-- name: chunk
SELECT {cols} FROM chunks WHERE id = :id

-- name: all_chunks
SELECT {cols} FROM chunks ORDER BY id

-- name: claimed_batch_ids
SELECT batch_id FROM chunks WHERE batch_id IS NOT NULL

-- name: batch_ids_since
SELECT batch_id FROM chunks WHERE batch_id IS NOT NULL AND submitted_at >= :since

-- name: intent_again
UPDATE chunks SET state = :state, intent_at = :now, nbytes = :nbytes, est_cost = :est_cost, units = :units,
    queue_key = :queue_key, create_at = NULL WHERE id = :id

-- name: creating
UPDATE chunks SET create_at = :now WHERE id = :id AND state = :state

-- name: intent_new
INSERT INTO chunks (kind, root_seq, skip, take, start_file, start_pos, start_line, end_file, end_pos, nbytes,
    state, attempt, intent_at, est_cost, skipped, digest, units, queue_key)
VALUES (:kind, :root_seq, :skip, :take, :start_file, :start_pos, :start_line, :end_file, :end_pos, :nbytes,
    :state, :attempt, :now, :est_cost, :skipped, :digest, :units, :queue_key) RETURNING id

-- name: assign_retry
UPDATE retries SET chunk_id = :chunk_id, state = :state WHERE custom_id = :custom_id

-- name: move_retry
UPDATE retries SET chunk_id = :chunk_id WHERE custom_id = :custom_id

-- name: put_ids
INSERT OR REPLACE INTO chunk_ids VALUES (:chunk_id, :ids)

-- name: chunk_ids
SELECT ids FROM chunk_ids WHERE chunk_id = :chunk_id

-- name: submitted
UPDATE chunks SET state = :state, batch_id = :batch_id, adopted = :adopted, submitted_at = :now WHERE id = :id

-- name: set_state
UPDATE chunks SET state = :state, note = COALESCE(:note, note) WHERE id = :id

-- name: set_note
UPDATE chunks SET note = :note WHERE id = :id

-- name: disown
UPDATE chunks SET state = :state, batch_id = NULL, adopted = 0, note = :note WHERE id = :id

-- name: mark_ended
UPDATE chunks SET ended_at = COALESCE(ended_at, :ended_at) WHERE id = :id

-- name: split_half
INSERT INTO chunks (kind, root_seq, skip, take, start_file, start_pos, start_line, end_file, end_pos, nbytes,
    state, attempt, note, skipped, digest)
VALUES (:kind, :root_seq, :skip, :take, :start_file, :start_pos, :start_line, :end_file, :end_pos, :nbytes,
    :state, :attempt, :note, :skipped, :digest) RETURNING id

-- name: put_rejected
INSERT OR REPLACE INTO api_rejected VALUES (:custom_id, :root_seq, :message)

-- name: retry_done
UPDATE retries SET state = :state, chunk_id = NULL WHERE custom_id = :custom_id

-- name: api_rejected
SELECT custom_id, message FROM api_rejected

-- name: api_rejected_of_root
SELECT custom_id, message FROM api_rejected WHERE root_seq = :root_seq

-- name: retry_requests
SELECT custom_id, request, attempts FROM retries WHERE chunk_id = :chunk_id ORDER BY custom_id

-- name: pending_retries
SELECT custom_id, request, attempts FROM retries WHERE state = :state AND not_before <= :now
ORDER BY attempts, custom_id LIMIT :limit

-- name: next_retry_at
SELECT MIN(not_before) FROM retries WHERE state = :state

-- name: count_retries
SELECT COUNT(*) FROM retries WHERE state = :state

-- name: requeue
UPDATE retries SET state = :to, chunk_id = NULL WHERE state = :state

-- name: offsets
SELECT idx, offset FROM shards

-- name: put_offset
INSERT OR REPLACE INTO shards VALUES (:idx, :offset)

-- name: put_object
INSERT INTO result_objects VALUES (:key, :chunk_id, :shard, :nbytes, :lines)

-- name: park
INSERT INTO retries (custom_id, request, attempts, chunk_id, state, last_line, not_before)
VALUES (:custom_id, :request, :attempts, NULL, :state, :last_line, :not_before)
ON CONFLICT (custom_id) DO UPDATE SET request = excluded.request, attempts = excluded.attempts, chunk_id = NULL,
    state = excluded.state, last_line = excluded.last_line, not_before = excluded.not_before

-- name: add_count
INSERT INTO counters VALUES (:name, :value) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value

-- name: collected
UPDATE chunks SET state = :state, collected_at = :now, ended_at = COALESCE(ended_at, :now) WHERE id = :id

-- name: result_objects
SELECT key FROM result_objects ORDER BY key

-- name: counters
SELECT name, value FROM counters

-- name: retried_finals
SELECT custom_id, attempts FROM retries WHERE state = :state

-- name: retry_counts
SELECT state, COUNT(*) FROM retries GROUP BY state

-- name: is_cancelled
SELECT value FROM meta WHERE key = 'cancelled'
