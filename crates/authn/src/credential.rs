//! A service's Latchkey credential: `ACCESS_KEY_ID:SECRET`.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A service's own Latchkey credential (the binding service's `binding` role, the agent's
/// `workload:<name>` role): `ACCESS_KEY_ID:SECRET`, sent to the identity service as a
/// bearer key.
///
/// `Debug` shows the access key id only; the secret is a [`SecretString`] and leaves this
/// type only as the bearer key given to `latchkey-client`.
#[derive(Clone)]
pub struct ServiceCredential {
    access_key_id: String,
    secret: SecretString,
}

impl fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceCredential")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// Why a credential text was refused. Never contains the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the credential must have the form ACCESS_KEY_ID:SECRET")]
    Shape,
    #[error("the access key id must be 1 to 128 ASCII letters and digits")]
    AccessKeyId,
    #[error("the secret must be 1 to 1024 printable ASCII characters without spaces")]
    Secret,
}

impl ServiceCredential {
    /// Parse `ACCESS_KEY_ID:SECRET` (surrounding whitespace, such as a file's final
    /// newline, is ignored).
    pub fn parse(text: &str) -> Result<Self, CredentialError> {
        let (id, secret) = text.trim().split_once(':').ok_or(CredentialError::Shape)?;
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CredentialError::AccessKeyId);
        }
        if secret.is_empty() || secret.len() > 1024 || !secret.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(CredentialError::Secret);
        }
        Ok(Self {
            access_key_id: id.to_string(),
            secret: SecretString::from(secret.to_string()),
        })
    }

    /// The access key id (not secret; fine to log).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// `ACCESS_KEY_ID:SECRET`, the bearer key for `latchkey_client::ClientBuilder::bearer`.
    pub fn bearer(&self) -> SecretString {
        SecretString::from(format!(
            "{}:{}",
            self.access_key_id,
            self.secret.expose_secret()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_parses_and_redacts() {
        let c = ServiceCredential::parse("LKABCDEF:s3cr3t-value\n").expect("credential");
        assert_eq!(c.access_key_id(), "LKABCDEF");
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert_eq!(c.bearer().expose_secret(), "LKABCDEF:s3cr3t-value");
        assert_eq!(
            ServiceCredential::parse("nocolon").err(),
            Some(CredentialError::Shape)
        );
        assert_eq!(
            ServiceCredential::parse(":x").err(),
            Some(CredentialError::AccessKeyId)
        );
        assert_eq!(
            ServiceCredential::parse("LK:").err(),
            Some(CredentialError::Secret)
        );
        assert_eq!(
            ServiceCredential::parse("LK:a b").err(),
            Some(CredentialError::Secret)
        );
    }
}
