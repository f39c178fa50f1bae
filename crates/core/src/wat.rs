//! Workload access tokens (WAT): compact ES256 JWTs that bind a workload (`sub`) and,
//! optionally, a user (`latchkey:user`). Signed and verified with aws-lc-rs directly — the
//! format is ours and fixed, so there is no algorithm negotiation to get wrong: the header
//! must say ES256 and name a key we hold.

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::user::UserPrincipal;

/// Why a WAT was refused. Never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatError {
    #[error("workload access token is malformed")]
    Malformed,
    #[error("workload access token uses an unexpected algorithm or type")]
    Algorithm,
    #[error("workload access token is signed by an unknown key")]
    UnknownKey,
    #[error("workload access token signature is invalid")]
    Signature,
    #[error("workload access token was issued for another issuer or audience")]
    Issuer,
    #[error(
        "workload access token names its user without the user's kind and issuer (request a new one)"
    )]
    User,
    #[error("workload access token has expired")]
    Expired,
    #[error("workload access token is not valid yet")]
    NotYetValid,
    #[error("key error: {0}")]
    Key(String),
}

/// The claims of a verified WAT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatClaims {
    pub iss: String,
    pub aud: String,
    /// The workload identity name.
    pub sub: String,
    /// The user the workload acts for (absent for `GetWorkloadAccessToken`).
    pub user: Option<UserPrincipal>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

impl WatClaims {
    /// The user's subject (for logs and audit events).
    pub fn user_subject(&self) -> Option<&str> {
        self.user.as_ref().map(UserPrincipal::subject)
    }
}

/// The claims as signed. The user is three claims: `latchkey:user` (the subject),
/// `latchkey:user_source` (`jwt` or `user-id`) and, for `jwt`, `latchkey:user_iss`.
#[derive(Debug, Serialize, Deserialize)]
struct WireClaims {
    iss: String,
    aud: String,
    sub: String,
    #[serde(
        rename = "latchkey:user",
        skip_serializing_if = "Option::is_none",
        default
    )]
    user: Option<String>,
    #[serde(
        rename = "latchkey:user_source",
        skip_serializing_if = "Option::is_none",
        default
    )]
    user_source: Option<String>,
    #[serde(
        rename = "latchkey:user_iss",
        skip_serializing_if = "Option::is_none",
        default
    )]
    user_issuer: Option<String>,
    iat: i64,
    exp: i64,
    jti: String,
}

impl WireClaims {
    fn from_claims(c: &WatClaims) -> Self {
        Self {
            iss: c.iss.clone(),
            aud: c.aud.clone(),
            sub: c.sub.clone(),
            user: c.user.as_ref().map(|u| u.subject().to_string()),
            user_source: c.user.as_ref().map(|u| u.kind().as_str().to_string()),
            user_issuer: c.user.as_ref().and_then(|u| u.issuer()).map(str::to_string),
            iat: c.iat,
            exp: c.exp,
            jti: c.jti.clone(),
        }
    }

    /// Fail closed: a user must come with its kind, and a JWT user with its issuer (a WAT
    /// without them, e.g. one minted before issuers were recorded, names no user we can
    /// tell apart from another issuer's, so it is refused rather than read as a user id).
    fn into_claims(self) -> Result<WatClaims, WatError> {
        let user = match (self.user, self.user_source, self.user_issuer) {
            (None, None, None) => None,
            (Some(subject), Some(kind), issuer) => Some(
                UserPrincipal::from_parts(&kind, issuer.as_deref().unwrap_or(""), &subject)
                    .map_err(|_| WatError::User)?,
            ),
            _ => return Err(WatError::User),
        };
        Ok(WatClaims {
            iss: self.iss,
            aud: self.aud,
            sub: self.sub,
            user,
            iat: self.iat,
            exp: self.exp,
            jti: self.jti,
        })
    }
}

/// A P-256 signing key with its key id.
pub struct WatKey {
    kid: String,
    pair: EcdsaKeyPair,
}

impl fmt::Debug for WatKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl WatKey {
    /// Generate a new key. Returns the key and its PKCS#8 document (secret; store encrypted).
    pub fn generate(kid: String) -> Result<(Self, Zeroizing<Vec<u8>>), WatError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|e| WatError::Key(e.to_string()))?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        Ok((Self::from_pkcs8(kid, &pkcs8)?, pkcs8))
    }

    pub fn from_pkcs8(kid: String, pkcs8: &[u8]) -> Result<Self, WatError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|e| WatError::Key(e.to_string()))?;
        Ok(Self { kid, pair })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The uncompressed public point (0x04 || x || y).
    pub fn public_point(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }
}

/// The public half of a WAT key, as published in the JWKS.
#[derive(Debug, Clone)]
pub struct WatPublicKey {
    pub kid: String,
    pub point: Vec<u8>,
}

impl WatPublicKey {
    pub fn jwk(&self) -> serde_json::Value {
        let (x, y) = if self.point.len() == 65 {
            (&self.point[1..33], &self.point[33..65])
        } else {
            (&[][..], &[][..])
        };
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "kid": self.kid, "x": B64.encode(x), "y": B64.encode(y),
        })
    }
}

#[derive(Deserialize)]
struct Header<'a> {
    alg: &'a str,
    #[serde(default)]
    typ: Option<&'a str>,
    kid: &'a str,
}

const TYP: &str = "latchkey-wat+jwt";

/// Issues and verifies WATs for one issuer (this service's public URL).
pub struct WatAuthority {
    issuer: String,
    signing: WatKey,
    header_b64: String,
    verify_keys: HashMap<String, WatPublicKey>,
    rng: SystemRandom,
}

impl fmt::Debug for WatAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatAuthority")
            .field("issuer", &self.issuer)
            .field("signing_kid", &self.signing.kid)
            .finish_non_exhaustive()
    }
}

impl WatAuthority {
    /// `extra_public` are older keys still accepted for verification (rotation).
    pub fn new(issuer: String, signing: WatKey, extra_public: Vec<WatPublicKey>) -> Self {
        let header = serde_json::json!({"alg": "ES256", "typ": TYP, "kid": signing.kid});
        let header_b64 = B64.encode(header.to_string());
        let mut verify_keys: HashMap<String, WatPublicKey> = extra_public
            .into_iter()
            .map(|k| (k.kid.clone(), k))
            .collect();
        verify_keys.insert(
            signing.kid.clone(),
            WatPublicKey {
                kid: signing.kid.clone(),
                point: signing.public_point(),
            },
        );
        Self {
            issuer,
            signing,
            header_b64,
            verify_keys,
            rng: SystemRandom::new(),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JSON Web Key Set served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        let mut keys: Vec<_> = self.verify_keys.values().collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        serde_json::json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
    }

    /// Sign a new token.
    pub fn issue(
        &self,
        workload: &str,
        user: Option<&UserPrincipal>,
        now: i64,
        ttl_seconds: i64,
    ) -> Result<(String, WatClaims), WatError> {
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|e| WatError::Key(e.to_string()))?;
        let claims = WatClaims {
            iss: self.issuer.clone(),
            aud: self.issuer.clone(),
            sub: workload.to_string(),
            user: user.cloned(),
            iat: now,
            exp: now + ttl_seconds,
            jti: B64.encode(jti),
        };
        let payload = serde_json::to_vec(&WireClaims::from_claims(&claims))
            .map_err(|e| WatError::Key(e.to_string()))?;
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&self.header_b64);
        token.push('.');
        B64.encode_string(&payload, &mut token);
        let sig = self
            .signing
            .pair
            .sign(&self.rng, token.as_bytes())
            .map_err(|e| WatError::Key(e.to_string()))?;
        token.push('.');
        B64.encode_string(sig.as_ref(), &mut token);
        Ok((token, claims))
    }

    /// Verify signature, issuer, audience and lifetime (`leeway` seconds for clock skew on `iat`).
    pub fn verify(&self, token: &str, now: i64) -> Result<WatClaims, WatError> {
        let mut parts = token.splitn(4, '.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(WatError::Malformed);
        };
        let header_bytes = B64.decode(h).map_err(|_| WatError::Malformed)?;
        let header: Header<'_> =
            serde_json::from_slice(&header_bytes).map_err(|_| WatError::Malformed)?;
        if header.alg != "ES256" || header.typ != Some(TYP) {
            return Err(WatError::Algorithm);
        }
        let key = self
            .verify_keys
            .get(header.kid)
            .ok_or(WatError::UnknownKey)?;
        let sig = B64.decode(s).map_err(|_| WatError::Malformed)?;
        let signed = &token[..h.len() + 1 + p.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key.point)
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| WatError::Signature)?;
        let payload = B64.decode(p).map_err(|_| WatError::Malformed)?;
        let wire: WireClaims = serde_json::from_slice(&payload).map_err(|_| WatError::Malformed)?;
        if wire.iss != self.issuer || wire.aud != self.issuer {
            return Err(WatError::Issuer);
        }
        let claims = wire.into_claims()?;
        if claims.exp <= now {
            return Err(WatError::Expired);
        }
        if claims.iat > now + 60 {
            return Err(WatError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn authority(issuer: &str) -> WatAuthority {
        let (key, _) = WatKey::generate("k1".into()).unwrap();
        WatAuthority::new(issuer.into(), key, vec![])
    }

    #[test]
    fn issue_and_verify() {
        let a = authority("https://id.example");
        let (t, c) = a
            .issue("wl", Some(&alice_at("https://idp.example")), 1000, 900)
            .unwrap();
        let v = a.verify(&t, 1001).unwrap();
        assert_eq!(v, c);
        assert_eq!(v.user, Some(alice_at("https://idp.example")));
        assert_eq!(v.user_subject(), Some("alice"));
        assert_eq!(v.exp - v.iat, 900);
    }

    fn alice_at(issuer: &str) -> UserPrincipal {
        UserPrincipal::jwt(issuer, "alice").unwrap()
    }

    /// Sign any payload with `a`'s real key (as an older Latchkey would have).
    fn sign_raw(a: &WatAuthority, payload: &serde_json::Value) -> String {
        let mut token = format!("{}.{}", a.header_b64, B64.encode(payload.to_string()));
        let sig = a.signing.pair.sign(&a.rng, token.as_bytes()).unwrap();
        token.push('.');
        token.push_str(&B64.encode(sig.as_ref()));
        token
    }

    #[test]
    fn user_kind_and_issuer_are_signed_claims() {
        let a = authority("https://id.example");
        let id = UserPrincipal::user_id("alice").unwrap();
        let (t, _) = a.issue("wl", Some(&id), 1000, 900).unwrap();
        let payload: serde_json::Value =
            serde_json::from_slice(&B64.decode(t.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(payload["latchkey:user"], "alice");
        assert_eq!(payload["latchkey:user_source"], "user-id");
        assert!(payload.get("latchkey:user_iss").is_none());
        assert_eq!(a.verify(&t, 1001).unwrap().user, Some(id));
        let (t, _) = a
            .issue("wl", Some(&alice_at("https://b.example")), 1000, 900)
            .unwrap();
        let payload: serde_json::Value =
            serde_json::from_slice(&B64.decode(t.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(payload["latchkey:user_source"], "jwt");
        assert_eq!(payload["latchkey:user_iss"], "https://b.example");
    }

    #[test]
    fn a_user_without_kind_or_issuer_is_refused() {
        let a = authority("https://id.example");
        let base = serde_json::json!({
            "iss": "https://id.example", "aud": "https://id.example", "sub": "wl",
            "iat": 1000, "exp": 1900, "jti": "j",
        });
        let with = |extra: serde_json::Value| {
            let mut p = base.clone();
            for (k, v) in extra.as_object().unwrap() {
                p[k] = v.clone();
            }
            sign_raw(&a, &p)
        };
        // The shapes that must not name a user: a JWT user without its issuer (a WAT
        // minted before issuers were recorded), a user without a kind, an unknown kind, a
        // user id with an issuer, an issuer or kind without a user.
        for extra in [
            serde_json::json!({"latchkey:user": "alice", "latchkey:user_source": "jwt"}),
            serde_json::json!({"latchkey:user": "alice"}),
            serde_json::json!({"latchkey:user": "alice", "latchkey:user_source": "legacy"}),
            serde_json::json!({"latchkey:user": "alice", "latchkey:user_source": "user-id", "latchkey:user_iss": "https://b.example"}),
            serde_json::json!({"latchkey:user_source": "jwt", "latchkey:user_iss": "https://b.example"}),
        ] {
            assert_eq!(
                a.verify(&with(extra.clone()), 1001),
                Err(WatError::User),
                "{extra}"
            );
        }
        // Well-formed ones still verify.
        let ok = a
            .verify(
                &with(serde_json::json!({"latchkey:user": "alice", "latchkey:user_source": "jwt", "latchkey:user_iss": "https://b.example"})),
                1001,
            )
            .unwrap();
        assert_eq!(ok.user, Some(alice_at("https://b.example")));
        assert_eq!(
            a.verify(&with(serde_json::json!({})), 1001).unwrap().user,
            None
        );
    }

    #[test]
    fn rejects_expired_future_foreign_and_tampered() {
        let a = authority("https://id.example");
        let (t, _) = a.issue("wl", None, 1000, 900).unwrap();
        assert_eq!(a.verify(&t, 1900), Err(WatError::Expired));
        assert_eq!(a.verify(&t, 900), Err(WatError::NotYetValid));
        // Another authority (another key) with the same kid: signature fails.
        let b = authority("https://id.example");
        assert_eq!(b.verify(&t, 1001), Err(WatError::Signature));
        // Same key, other issuer.
        let (key, _) = WatKey::generate("k1".into()).unwrap();
        let c = WatAuthority::new("https://other".into(), key, vec![]);
        let (t2, _) = c.issue("wl", None, 1000, 900).unwrap();
        let c2 = WatAuthority::new(
            "https://id.example".into(),
            WatKey::generate("k9".into()).unwrap().0,
            vec![WatPublicKey {
                kid: "k1".into(),
                point: c.signing.public_point(),
            }],
        );
        assert_eq!(c2.verify(&t2, 1001), Err(WatError::Issuer));
        // Payload swapped to another workload, signature kept.
        let parts: Vec<&str> = t.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = "other-workload".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(claims.to_string()),
            parts[2]
        );
        assert_eq!(a.verify(&forged, 1001), Err(WatError::Signature));
    }

    #[test]
    fn rejects_alg_none_and_hs256() {
        let a = authority("https://id.example");
        let (t, _) = a.issue("wl", None, 1000, 900).unwrap();
        let payload = t.split('.').nth(1).unwrap();
        for alg in ["none", "HS256", "ES384"] {
            let h = B64.encode(format!(r#"{{"alg":"{alg}","typ":"{TYP}","kid":"k1"}}"#));
            assert_eq!(
                a.verify(&format!("{h}.{payload}."), 1001),
                Err(WatError::Algorithm)
            );
            assert_eq!(
                a.verify(&format!("{h}.{payload}.AAAA"), 1001),
                Err(WatError::Algorithm)
            );
        }
        assert_eq!(a.verify("abc", 1001), Err(WatError::Malformed));
    }

    #[test]
    fn jwks_lists_public_keys_only() {
        let (key, pkcs8) = WatKey::generate("k1".into()).unwrap();
        let a = WatAuthority::new("i".into(), key, vec![]);
        let jwks = a.jwks().to_string();
        assert!(jwks.contains("\"kid\":\"k1\""));
        assert!(!jwks.contains("\"d\""));
        assert!(!jwks.contains(&B64.encode(&pkcs8[..])));
    }
}
