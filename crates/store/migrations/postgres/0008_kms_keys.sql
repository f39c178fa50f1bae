-- Key-encryption keys wrapped by AWS KMS (issue 15: key_provider = "aws-kms"). Each row is
-- one KEK: 32 random bytes from KMS GenerateDataKey, stored only as KMS's ciphertext (its
-- encryption context names the deployment and the key id). The active KEK is the one with
-- the highest generation; a generation is unique, so two replicas creating the first key or
-- two rotations racing cannot both win. Unused with the key file provider.
CREATE TABLE key_encryption_keys (
    id          TEXT PRIMARY KEY,
    generation  BIGINT NOT NULL UNIQUE,
    wrapped     BYTEA NOT NULL,
    kms_key_arn TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);
