-- Authorization sessions of the 3-legged OAuth flow. Secrets (PKCE verifier, custom state
-- and parameters, the authorization code) are envelopes; `state_hash` is SHA-256 of the
-- OAuth `state` so the raw value is never stored.
CREATE TABLE auth_sessions (
    id               TEXT PRIMARY KEY,
    state_hash       TEXT NOT NULL UNIQUE,
    workload         TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    provider         TEXT NOT NULL,
    request          TEXT NOT NULL,
    secrets_envelope BLOB NOT NULL,
    code_envelope    BLOB,
    status           TEXT NOT NULL,
    failure          TEXT,
    created_ms       INTEGER NOT NULL,
    expires_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL
);
CREATE INDEX auth_sessions_expiry ON auth_sessions (expires_ms);

-- The token vault: one grant per (workload, user, provider). `version` is the fencing
-- token of the refresh lease (`lease_owner`, `lease_until_ms`).
CREATE TABLE grants (
    workload         TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    provider         TEXT NOT NULL,
    scopes           TEXT NOT NULL,
    resources        TEXT NOT NULL,
    token_type       TEXT NOT NULL,
    access_envelope  BLOB NOT NULL,
    refresh_envelope BLOB,
    expires_ms       INTEGER NOT NULL,
    needs_consent    INTEGER NOT NULL,
    version          INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_until_ms   INTEGER,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL,
    PRIMARY KEY (workload, user_id, provider)
);
CREATE INDEX grants_provider ON grants (provider);
