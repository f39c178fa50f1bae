//! The associated data every stored envelope is sealed with, in one place: the handlers
//! and services that seal and open, and key rotation (`crate::rotation`), which re-wraps
//! envelopes without knowing what they hold, all take their strings from here.

use latchkey_store::GrantKey;

/// An access credential's secret (`credentials.secret_envelope`).
pub fn credential(access_key_id: &str) -> String {
    format!("credential:{access_key_id}")
}

/// An OAuth2 credential provider's client secret.
pub fn oauth2_provider(name: &str) -> String {
    format!("oauth2-provider:{name}")
}

/// An API-key credential provider's key.
pub fn api_key_provider(name: &str) -> String {
    format!("apikey-provider:{name}")
}

/// A WAT signing key's private half.
pub fn signing_key(kid: &str) -> String {
    format!("signing-key:{kid}")
}

/// The sealed secrets of an authorization session (state, PKCE verifier, custom values).
pub fn session_secrets(id: &str) -> String {
    format!("auth-session:{id}")
}

/// The authorization code an authorization session received at its callback.
pub fn session_code(id: &str) -> String {
    format!("auth-session-code:{id}")
}

/// The associated data of a grant's envelopes (`part`: `access` or `refresh`): the whole
/// key. A user id's grant keeps the three-part form it had before users had kinds (rows
/// migrated into the user-id namespace still open); a JWT user's adds kind and issuer, so
/// a row moved to another namespace or issuer in the database does not open.
pub fn grant(key: &GrantKey, part: &str) -> String {
    // JSON keeps the parts unambiguous whatever characters they hold.
    let parts = match key.user.issuer() {
        None => serde_json::json!([key.workload, key.user.subject(), key.provider]),
        Some(issuer) => serde_json::json!([
            key.workload,
            key.user.subject(),
            key.provider,
            key.user.kind().as_str(),
            issuer
        ]),
    };
    format!("grant:{parts}:{part}")
}
