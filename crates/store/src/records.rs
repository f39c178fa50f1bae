//! Plain records as stored. Secrets appear only as envelopes (`Vec<u8>`).

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{StoreError, StoreResult};

/// A record read from a row whose columns are its fields, in order.
pub(crate) trait FromRow: Sized {
    fn from_row(r: &AnyRow) -> StoreResult<Self>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    pub access_key_id: String,
    pub role: String,
    pub secret_envelope: Vec<u8>,
    pub description: Option<String>,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

impl FromRow for CredentialRecord {
    fn from_row(r: &AnyRow) -> StoreResult<Self> {
        Ok(Self {
            access_key_id: r.try_get(0)?,
            role: r.try_get(1)?,
            secret_envelope: r.try_get(2)?,
            description: r.try_get(3)?,
            created_ms: r.try_get(4)?,
            revoked_ms: r.try_get(5)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRecord {
    pub name: String,
    pub return_urls: Vec<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl FromRow for WorkloadRecord {
    fn from_row(r: &AnyRow) -> StoreResult<Self> {
        let urls: String = r.try_get(1)?;
        Ok(Self {
            name: r.try_get(0)?,
            return_urls: serde_json::from_str(&urls)
                .map_err(|e| StoreError::Database(format!("corrupt return_urls: {e}")))?,
            created_ms: r.try_get(2)?,
            updated_ms: r.try_get(3)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Oauth2ProviderRecord {
    pub name: String,
    pub vendor: String,
    /// Non-secret configuration (JSON).
    pub config: serde_json::Value,
    pub secret_envelope: Option<Vec<u8>>,
    pub callback_id: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl FromRow for Oauth2ProviderRecord {
    fn from_row(r: &AnyRow) -> StoreResult<Self> {
        let config: String = r.try_get(2)?;
        Ok(Self {
            name: r.try_get(0)?,
            vendor: r.try_get(1)?,
            config: serde_json::from_str(&config)
                .map_err(|e| StoreError::Database(format!("corrupt provider config: {e}")))?,
            secret_envelope: r.try_get(3)?,
            callback_id: r.try_get(4)?,
            created_ms: r.try_get(5)?,
            updated_ms: r.try_get(6)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyProviderRecord {
    pub name: String,
    pub secret_envelope: Option<Vec<u8>>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl FromRow for ApiKeyProviderRecord {
    fn from_row(r: &AnyRow) -> StoreResult<Self> {
        Ok(Self {
            name: r.try_get(0)?,
            secret_envelope: r.try_get(1)?,
            created_ms: r.try_get(2)?,
            updated_ms: r.try_get(3)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenVaultRecord {
    pub id: String,
    pub key_type: String,
    pub kms_key_arn: Option<String>,
    pub updated_ms: i64,
}

impl FromRow for TokenVaultRecord {
    fn from_row(r: &AnyRow) -> StoreResult<Self> {
        Ok(Self {
            id: r.try_get(0)?,
            key_type: r.try_get(1)?,
            kms_key_arn: r.try_get(2)?,
            updated_ms: r.try_get(3)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub private_envelope: Vec<u8>,
    pub created_ms: i64,
    pub retired_ms: Option<i64>,
}
