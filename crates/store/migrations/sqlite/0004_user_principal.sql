-- Users are (kind, issuer, subject): a user id asserted by a trusted caller
-- (`…ForUserId`, kind 'user-id', issuer '') and the subject of a token from each inbound
-- issuer (kind 'jwt', issuer = the token's `iss`) are separate users. Before this
-- migration grants and sessions were keyed by the subject alone, so the same `sub` at two
-- issuers shared one grant.
--
-- Sessions: the issuer a JWT-started session came from was recorded in its request
-- (`user_issuer`), and only for JWT users, so existing sessions map exactly.
ALTER TABLE auth_sessions ADD COLUMN user_kind TEXT NOT NULL DEFAULT 'user-id';
ALTER TABLE auth_sessions ADD COLUMN user_issuer TEXT NOT NULL DEFAULT '';
UPDATE auth_sessions
SET user_kind = 'jwt', user_issuer = json_extract(request, '$.user_issuer')
WHERE json_type(request, '$.user_issuer') = 'text' AND json_extract(request, '$.user_issuer') <> '';

-- Grants: an existing row cannot say which issuer (if any) its subject came from. Fail
-- closed: every existing grant belongs to the user-id namespace. A user id keeps its
-- grants (it could read them before); a JWT user finds none and is asked to consent again,
-- so no user of one issuer can ever receive a token consented to under another issuer.
-- (The envelopes' associated data for user-id grants is unchanged, so they still open.)
CREATE TABLE grants_by_principal (
    workload         TEXT NOT NULL,
    user_kind        TEXT NOT NULL,
    user_issuer      TEXT NOT NULL,
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
    PRIMARY KEY (workload, user_kind, user_issuer, user_id, provider)
);
INSERT INTO grants_by_principal (workload, user_kind, user_issuer, user_id, provider, scopes, resources,
    token_type, access_envelope, refresh_envelope, expires_ms, needs_consent, version, lease_owner,
    lease_until_ms, created_ms, updated_ms)
SELECT workload, 'user-id', '', user_id, provider, scopes, resources, token_type, access_envelope,
    refresh_envelope, expires_ms, needs_consent, version, lease_owner, lease_until_ms, created_ms, updated_ms
FROM grants;
DROP TABLE grants;
ALTER TABLE grants_by_principal RENAME TO grants;
CREATE INDEX grants_provider ON grants (provider);
