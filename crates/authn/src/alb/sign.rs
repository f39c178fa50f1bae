//! Signing `x-amzn-oidc-data` the way an ALB does (the gateway's side of the format that
//! [`super::verify`] checks).

use std::path::Path;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::{Map, Value, json};

/// Why the signing key could not be loaded or created. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("the random number generator failed")]
    Random,
}

/// Signs `x-amzn-oidc-data` the way an ALB does: ES256, every part base64url with padding.
pub struct AlbSigner {
    pair: EcdsaKeyPair,
    kid: String,
    public_pem: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for AlbSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlbSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl AlbSigner {
    /// The key in the PEM file at `path` (PKCS#8 or SEC1).
    pub fn load(path: &Path) -> Result<Self, SignerError> {
        let file_error = |why: &dyn std::fmt::Display| SignerError::File {
            path: path.display().to_string(),
            why: why.to_string(),
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(&e))?;
        let pair = parse_private_pem(&text).map_err(|why| file_error(&why))?;
        Self::from_pair(pair).map_err(|why| file_error(&why))
    }

    /// A fresh P-256 key as a PKCS#8 PEM document (what [`Self::load`] reads).
    pub fn generate_pkcs8_pem() -> Result<String, SignerError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| SignerError::Random)?;
        let b64 = STANDARD.encode(doc.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).map_err(|_| SignerError::Random)?);
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    /// A fresh key (tests, and a gateway without a key file).
    pub fn generate() -> Result<Self, SignerError> {
        Self::from_pair(Self::generate_pair()?).map_err(|_| SignerError::Random)
    }

    fn generate_pair() -> Result<EcdsaKeyPair, SignerError> {
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| SignerError::Random)
    }

    fn from_pair(pair: EcdsaKeyPair) -> Result<Self, &'static str> {
        let spki: PublicKeyX509Der = pair
            .public_key()
            .as_der()
            .map_err(|_| "cannot encode the public key")?;
        // The key id is derived from the key, so replicas sharing a key file agree on it.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki.as_ref());
        let hex: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let kid = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        let b64 = STANDARD.encode(spki.as_ref());
        let mut public_pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            public_pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            public_pem.push('\n');
        }
        public_pem.push_str("-----END PUBLIC KEY-----\n");
        Ok(Self {
            pair,
            kid,
            public_pem,
            rng: SystemRandom::new(),
        })
    }

    /// The key id in every header (`[0-9a-f-]`, uuid-shaped).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a PEM `PUBLIC KEY` document.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// A compact JWS: header `{typ, kid, alg: ES256, iss, client, signer, exp}`, payload
    /// `claims` (with `exp` and `iss` set), every part base64url WITH padding, as ALBs send.
    pub fn sign(
        &self,
        issuer: &str,
        client_id: &str,
        signer: &str,
        exp: i64,
        mut claims: Map<String, Value>,
    ) -> Option<String> {
        let header = json!({
            "typ": "JWT",
            "kid": self.kid,
            "alg": "ES256",
            "iss": issuer,
            "client": client_id,
            "signer": signer,
            "exp": exp,
        });
        claims.insert("exp".into(), json!(exp));
        claims.insert("iss".into(), json!(issuer));
        let header = URL_SAFE.encode(serde_json::to_vec(&header).ok()?);
        let payload = URL_SAFE.encode(serde_json::to_vec(&Value::Object(claims)).ok()?);
        let signing_input = format!("{header}.{payload}");
        let signature = self.pair.sign(&self.rng, signing_input.as_bytes()).ok()?;
        Some(format!(
            "{signing_input}.{}",
            URL_SAFE.encode(signature.as_ref())
        ))
    }
}

fn parse_private_pem(text: &str) -> Result<EcdsaKeyPair, &'static str> {
    let text = text.trim();
    for (label, pkcs8) in [("PRIVATE KEY", true), ("EC PRIVATE KEY", false)] {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        if let Some(body) = text
            .strip_prefix(begin.as_str())
            .and_then(|rest| rest.strip_suffix(end.as_str()))
        {
            let b64: String = body.split_ascii_whitespace().collect();
            let der = STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| "the PEM body is not base64")?;
            let pair = if pkcs8 {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            } else {
                EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            };
            return pair.map_err(|_| "not a P-256 private key");
        }
    }
    Err("not a PEM PRIVATE KEY or EC PRIVATE KEY document")
}
