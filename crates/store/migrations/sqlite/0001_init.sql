CREATE TABLE credentials (
    access_key_id   TEXT PRIMARY KEY,
    role            TEXT NOT NULL,
    secret_envelope BLOB NOT NULL,
    description     TEXT,
    created_ms      INTEGER NOT NULL,
    revoked_ms      INTEGER
);

CREATE TABLE workload_identities (
    name        TEXT PRIMARY KEY,
    return_urls TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);

CREATE TABLE oauth2_providers (
    name            TEXT PRIMARY KEY,
    vendor          TEXT NOT NULL,
    config          TEXT NOT NULL,
    secret_envelope BLOB,
    callback_id     TEXT NOT NULL UNIQUE,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
);

CREATE TABLE api_key_providers (
    name            TEXT PRIMARY KEY,
    secret_envelope BLOB,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
);

CREATE TABLE tags (
    resource_arn TEXT NOT NULL,
    tag_key      TEXT NOT NULL,
    tag_value    TEXT NOT NULL,
    PRIMARY KEY (resource_arn, tag_key)
);

CREATE TABLE token_vaults (
    id          TEXT PRIMARY KEY,
    key_type    TEXT NOT NULL,
    kms_key_arn TEXT,
    updated_ms  INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    kid              TEXT PRIMARY KEY,
    private_envelope BLOB NOT NULL,
    created_ms       INTEGER NOT NULL,
    retired_ms       INTEGER
);

CREATE TABLE audit_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    time_ms    INTEGER NOT NULL,
    caller     TEXT,
    role       TEXT,
    workload   TEXT,
    user_id    TEXT,
    action     TEXT NOT NULL,
    target     TEXT,
    outcome    TEXT NOT NULL,
    detail     TEXT NOT NULL,
    prev_hash  BLOB,
    hash       BLOB
);
-- Events are appended in time order: `seq` ranges serve time queries without another index.
