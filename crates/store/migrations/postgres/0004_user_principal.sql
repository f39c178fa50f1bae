-- Users are (kind, issuer, subject): a user id asserted by a trusted caller
-- (`…ForUserId`, kind 'user-id', issuer '') and the subject of a token from each inbound
-- issuer (kind 'jwt', issuer = the token's `iss`) are separate users. Before this
-- migration grants and sessions were keyed by the subject alone, so the same `sub` at two
-- issuers shared one grant.
--
-- Sessions: the issuer a JWT-started session came from was recorded in its request
-- (`user_issuer`), and only for JWT users, so existing sessions map exactly.
ALTER TABLE auth_sessions
    ADD COLUMN user_kind TEXT NOT NULL DEFAULT 'user-id',
    ADD COLUMN user_issuer TEXT NOT NULL DEFAULT '';
UPDATE auth_sessions
SET user_kind = 'jwt', user_issuer = request::jsonb ->> 'user_issuer'
WHERE jsonb_typeof(request::jsonb -> 'user_issuer') = 'string' AND request::jsonb ->> 'user_issuer' <> '';

-- Grants: an existing row cannot say which issuer (if any) its subject came from. Fail
-- closed: every existing grant belongs to the user-id namespace. A user id keeps its
-- grants (it could read them before); a JWT user finds none and is asked to consent again,
-- so no user of one issuer can ever receive a token consented to under another issuer.
-- (The envelopes' associated data for user-id grants is unchanged, so they still open.)
ALTER TABLE grants
    ADD COLUMN user_kind TEXT NOT NULL DEFAULT 'user-id',
    ADD COLUMN user_issuer TEXT NOT NULL DEFAULT '';
ALTER TABLE grants
    ALTER COLUMN user_kind DROP DEFAULT,
    ALTER COLUMN user_issuer DROP DEFAULT;
ALTER TABLE grants DROP CONSTRAINT grants_pkey;
ALTER TABLE grants ADD PRIMARY KEY (workload, user_kind, user_issuer, user_id, provider);
