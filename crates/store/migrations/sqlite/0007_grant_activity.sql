-- What a user's connections page shows of each grant (issue 14): when the user last
-- consented, when the vault last refreshed it, and when a workload last received its token
-- (written at most once a minute per grant and replica). NULL: never (or before 0007).
ALTER TABLE grants ADD COLUMN consented_ms INTEGER;
ALTER TABLE grants ADD COLUMN refreshed_ms INTEGER;
ALTER TABLE grants ADD COLUMN last_used_ms INTEGER;
-- A user's grants are listed by principal (the connections page).
CREATE INDEX grants_user ON grants (user_kind, user_issuer, user_id);
