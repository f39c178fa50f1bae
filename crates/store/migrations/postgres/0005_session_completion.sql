-- The one-time completion URN issued at the callback (issue 12, item 1): only the browser
-- that came back from the provider holds it, and `CompleteResourceTokenAuth` accepts only
-- it (never the polling `sessionUri`). It is a bearer capability, so only its SHA-256 is
-- stored; NULL until the callback.
ALTER TABLE auth_sessions ADD COLUMN completion_hash TEXT;
CREATE UNIQUE INDEX auth_sessions_completion ON auth_sessions (completion_hash);
