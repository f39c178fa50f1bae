-- The tamper-evident audit chain. The writer now assigns each block's sequence number
-- (the next after the newest, under the audit_lock row, so replicas never fork the chain)
-- and its hash; key_id names the audit key (audit_keys, sealed under the key-encryption
-- key) the hash was made with. Blocks written before this migration keep NULL hashes: they
-- come before the chain's first block and are reported as not covered.
-- first_time_ms/last_time_ms now hold the earliest and latest event time of the block.
ALTER TABLE audit_blocks ADD COLUMN key_id TEXT;
CREATE INDEX audit_blocks_last_time ON audit_blocks (last_time_ms);
CREATE TABLE audit_keys (
    kid          TEXT PRIMARY KEY,
    key_envelope BLOB NOT NULL,
    created_ms   INTEGER NOT NULL
);
CREATE TABLE audit_lock (
    id      INTEGER PRIMARY KEY,
    appends INTEGER NOT NULL
);
INSERT INTO audit_lock (id, appends) VALUES (1, 0);
