//! PKCE (RFC 7636) with `S256`: a code verifier that is used once.
//!
//! [`PkceVerifier`] is neither `Clone` nor printable (its `Debug` is redacted), is zeroized
//! when dropped, and leaves this type only by value ([`PkceVerifier::into_secret`]), when
//! it is sent with the code exchange.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};

/// Random bytes in a generated verifier (43 base64url characters, RFC 7636's minimum
/// length and 256 bits).
pub const VERIFIER_BYTES: usize = 32;

/// A PKCE code verifier.
pub struct PkceVerifier(SecretString);

impl fmt::Debug for PkceVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PkceVerifier([REDACTED])")
    }
}

/// The random source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the random number generator failed")]
pub struct RandomError;

impl PkceVerifier {
    /// A fresh verifier: [`VERIFIER_BYTES`] random bytes, base64url without padding.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = zeroize::Zeroizing::new([0u8; VERIFIER_BYTES]);
        aws_lc_rs::rand::fill(bytes.as_mut()).map_err(|_| RandomError)?;
        Ok(Self(SecretString::from(
            URL_SAFE_NO_PAD.encode(bytes.as_ref()),
        )))
    }

    /// A verifier read back from sealed storage (the gateway's login cookie, the identity
    /// service's session record).
    pub fn from_stored(verifier: SecretString) -> Self {
        Self(verifier)
    }

    /// The `S256` challenge sent in the authorization request.
    pub fn challenge(&self) -> String {
        code_challenge(self.0.expose_secret())
    }

    /// The verifier, to store sealed.
    pub fn expose_for_storage(&self) -> &str {
        self.0.expose_secret()
    }

    /// The verifier itself, consumed: sent once with the code exchange.
    pub fn into_secret(self) -> SecretString {
        self.0
    }
}

/// `#[serde(with = "latchkey_authn::pkce::stored")]` for a [`PkceVerifier`] field of a
/// record that is sealed before it is stored: the verifier is written as its plain string
/// (through [`PkceVerifier::expose_for_storage`]) and read back with
/// [`PkceVerifier::from_stored`], so the stored form is that of a `String` field.
pub mod stored {
    use secrecy::SecretString;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::PkceVerifier;

    /// Writes the verifier as a string.
    pub fn serialize<S: Serializer>(verifier: &PkceVerifier, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(verifier.expose_for_storage())
    }

    /// Reads a verifier written by [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PkceVerifier, D::Error> {
        String::deserialize(d).map(|v| PkceVerifier::from_stored(SecretString::from(v)))
    }
}

/// The `S256` code challenge of a verifier: base64url(SHA-256(verifier)), no padding.
pub fn code_challenge(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_example() {
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let stored = PkceVerifier::from_stored(SecretString::from(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        ));
        assert_eq!(
            stored.challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn generated_verifiers_are_fresh_long_and_redacted() {
        let a = PkceVerifier::generate().expect("random");
        let b = PkceVerifier::generate().expect("random");
        assert_eq!(a.expose_for_storage().len(), 43);
        assert_ne!(a.expose_for_storage(), b.expose_for_storage());
        assert!(!format!("{a:?}").contains(a.expose_for_storage()));
        let secret = a.into_secret();
        assert_eq!(secret.expose_secret().len(), 43);
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Sealed {
        #[serde(with = "stored")]
        verifier: PkceVerifier,
    }

    #[test]
    fn stored_form_is_the_plain_string() {
        let sealed = Sealed {
            verifier: PkceVerifier::from_stored(SecretString::from("abc-DEF_123")),
        };
        let json = serde_json::to_string(&sealed).expect("serialize");
        assert_eq!(json, r#"{"verifier":"abc-DEF_123"}"#);
        let back: Sealed = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.verifier.expose_for_storage(), "abc-DEF_123");
        assert!(serde_json::from_str::<Sealed>(r#"{"verifier":7}"#).is_err());
    }
}
