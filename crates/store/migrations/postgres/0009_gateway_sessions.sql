-- Gateway sessions shared by every gateway replica (issue 15: gateway session_store =
-- "database"). A row is one signed-in browser: its tokens and claims sealed with the
-- gateway's cookie key (AES-256-GCM, bound to the row), never in clear. The session id
-- itself is not stored: only its SHA-256. `version` changes with the sealed value (a token
-- refresh); `refresh_until_ms` is the lease of the replica refreshing the tokens, so a
-- session is refreshed once across replicas.
CREATE TABLE gateway_sessions (
    id_hash          TEXT PRIMARY KEY,
    sealed           BYTEA NOT NULL,
    version          BIGINT NOT NULL,
    created_secs     BIGINT NOT NULL,
    last_seen_secs   BIGINT NOT NULL,
    refresh_until_ms BIGINT
);
CREATE INDEX gateway_sessions_seen ON gateway_sessions (last_seen_secs);
