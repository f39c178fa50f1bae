-- Audit events are stored in blocks: each batch the writer flushes is one row holding its
-- events as a JSON array, in order. One insert per batch instead of one per event, and
-- the tamper-evident chain (prev_hash, hash) links blocks.
CREATE TABLE audit_blocks (
    seq           BIGSERIAL PRIMARY KEY,
    first_time_ms BIGINT NOT NULL,
    last_time_ms  BIGINT NOT NULL,
    event_count   BIGINT NOT NULL,
    events        TEXT NOT NULL,
    prev_hash     BYTEA,
    hash          BYTEA
);
INSERT INTO audit_blocks (first_time_ms, last_time_ms, event_count, events)
SELECT time_ms, time_ms, 1, json_build_array(json_build_object(
    'id', id, 'time_ms', time_ms, 'caller', caller, 'role', role, 'workload', workload,
    'user_id', user_id, 'action', action, 'target', target, 'outcome', outcome, 'detail', detail::json))::text
FROM audit_events ORDER BY seq;
DROP TABLE audit_events;
-- Blocks are large JSON texts: lz4 compresses them several times faster than pglz (where
-- the server supports it; otherwise the default stays).
DO $$
BEGIN
    EXECUTE 'ALTER TABLE audit_blocks ALTER COLUMN events SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
    NULL;
END
$$;
