//! The tamper-evident audit chain: the keyed hash of each block, the audit key that makes
//! it, and the names of the faults verification reports. Storage lives in
//! `latchkey-store`; this module holds the rules and the key, and knows no SQL.
//!
//! Each block (one row of events) gets a sequence number and a hash:
//!
//! `hash = HMAC-SHA256(audit key, canonical(block))` where the canonical bytes are
//! `"latchkey-audit-block-v1\0" | len u8 | key id | prev_hash[32] | first_time_ms i64 |
//! last_time_ms i64 | event_count i64 | len u64 | events (the stored JSON text) | seq i64`
//! (integers big-endian). `prev_hash` is the hash of the block before, or 32 zero bytes for
//! the chain's first block. The sequence number comes last so a verifier can find, from one
//! prefix, the position a misplaced block was written at (see [`ChainKey::written_at`]).
//!
//! The audit key is 32 random bytes, never stored in the clear: the database holds it
//! envelope-encrypted under the key-encryption key (associated data [`audit_key_aad`]),
//! together with the sequence number where its chain starts, so the start cannot be moved
//! either. Key-encryption-key rotation re-wraps that envelope like any other; the audit key
//! itself does not change, so the chain stays verifiable across rotations.

use std::fmt;

use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use crate::crypto::{self, CryptoError, KeyProvider};

/// Length of a block hash.
pub const HASH_LEN: usize = 32;

/// The previous hash of the chain's first block.
pub const GENESIS: [u8; HASH_LEN] = [0u8; HASH_LEN];

const LABEL: &[u8] = b"latchkey-audit-block-v1\0";

/// The associated data the audit key's envelope is sealed with.
pub fn audit_key_aad(kid: &str) -> String {
    format!("audit-key:{kid}")
}

/// The stored parts of one block, except its own sequence number and hash.
#[derive(Debug, Clone, Copy)]
pub struct BlockContent<'a> {
    pub key_id: &'a str,
    pub prev_hash: &'a [u8],
    pub first_time_ms: i64,
    pub last_time_ms: i64,
    pub event_count: i64,
    /// The events exactly as stored (a JSON array).
    pub events: &'a str,
}

/// An opened audit key: its id, the sequence number its chain starts at, and the HMAC key.
pub struct ChainKey {
    kid: String,
    start_seq: i64,
    key: hmac::Key,
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainKey")
            .field("kid", &self.kid)
            .field("start_seq", &self.start_seq)
            .finish_non_exhaustive()
    }
}

impl ChainKey {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The sequence number of the first block hashed with this key.
    pub fn start_seq(&self) -> i64 {
        self.start_seq
    }

    /// Create a new audit key whose chain starts at `start_seq`; returns the key and its
    /// envelope (sealed under `keys`' active key-encryption key) for storage.
    pub async fn create(
        keys: &dyn KeyProvider,
        start_seq: i64,
    ) -> Result<(Self, Vec<u8>), CryptoError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(secret.as_mut()).map_err(|_| CryptoError::Random)?;
        let mut suffix = [0u8; 8];
        aws_lc_rs::rand::fill(&mut suffix).map_err(|_| CryptoError::Random)?;
        let kid = format!("audit-{}", hex::encode(suffix));
        let mut payload = Zeroizing::new(Vec::with_capacity(40));
        payload.extend_from_slice(&start_seq.to_be_bytes());
        payload.extend_from_slice(secret.as_ref());
        let envelope = crypto::encrypt(keys, audit_key_aad(&kid).as_bytes(), &payload).await?;
        Ok((Self::from_parts(kid, start_seq, secret.as_ref()), envelope))
    }

    /// Open a stored audit key.
    pub async fn open(
        keys: &dyn KeyProvider,
        kid: &str,
        envelope: &[u8],
    ) -> Result<Self, CryptoError> {
        let payload = crypto::decrypt(keys, audit_key_aad(kid).as_bytes(), envelope).await?;
        if payload.len() != 40 {
            return Err(CryptoError::Malformed);
        }
        let (start, secret) = payload.split_at(8);
        let start_seq = i64::from_be_bytes(start.try_into().map_err(|_| CryptoError::Malformed)?);
        Ok(Self::from_parts(kid.to_string(), start_seq, secret))
    }

    fn from_parts(kid: String, start_seq: i64, secret: &[u8]) -> Self {
        Self {
            kid,
            start_seq,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The HMAC state over everything but the sequence number.
    fn prefix(&self, block: &BlockContent<'_>) -> hmac::Context {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(LABEL);
        let kid = block.key_id.as_bytes();
        ctx.update(&[kid.len().min(255) as u8]);
        ctx.update(&kid[..kid.len().min(255)]);
        ctx.update(&(block.prev_hash.len() as u64).to_be_bytes());
        ctx.update(block.prev_hash);
        ctx.update(&block.first_time_ms.to_be_bytes());
        ctx.update(&block.last_time_ms.to_be_bytes());
        ctx.update(&block.event_count.to_be_bytes());
        ctx.update(&(block.events.len() as u64).to_be_bytes());
        ctx.update(block.events.as_bytes());
        ctx
    }

    /// The hash of `block` at sequence number `seq`.
    pub fn hash(&self, block: &BlockContent<'_>, seq: i64) -> [u8; HASH_LEN] {
        let mut ctx = self.prefix(block);
        ctx.update(&seq.to_be_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; HASH_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `hash` is this key's hash of `block` at `seq` (constant time).
    pub fn is_authentic(&self, block: &BlockContent<'_>, seq: i64, hash: &[u8]) -> bool {
        let mut ctx = self.prefix(block);
        ctx.update(&seq.to_be_bytes());
        hash.len() == HASH_LEN
            && aws_lc_rs::constant_time::verify_slices_are_equal(ctx.sign().as_ref(), hash).is_ok()
    }

    /// The sequence number in `candidates` at which `block` was written with `hash`, if
    /// any: a block found at the wrong place still tells where it belongs.
    pub fn written_at(
        &self,
        block: &BlockContent<'_>,
        hash: &[u8],
        candidates: impl IntoIterator<Item = i64>,
    ) -> Option<i64> {
        if hash.len() != HASH_LEN {
            return None;
        }
        let prefix = self.prefix(block);
        candidates.into_iter().find(|seq| {
            let mut ctx = prefix.clone();
            ctx.update(&seq.to_be_bytes());
            aws_lc_rs::constant_time::verify_slices_are_equal(ctx.sign().as_ref(), hash).is_ok()
        })
    }
}

/// What verification found wrong with the first bad block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The block's contents or hash changed: its hash does not match.
    Altered,
    /// Blocks are missing: a gap in the sequence, or a block written further on found here.
    Removed,
    /// A block the chain does not contain: its hash fails and the chain goes on past it,
    /// or it is a copy of an earlier block.
    Inserted,
    /// A genuine block out of place: it does not follow the block before it.
    Reordered,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Altered => "altered",
            Self::Removed => "removed",
            Self::Inserted => "inserted",
            Self::Reordered => "reordered",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first bad block: where, what kind, and a sentence for the operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainFault {
    /// The sequence number where the chain first breaks.
    pub seq: i64,
    pub kind: FaultKind,
    pub message: String,
}

impl fmt::Display for ChainFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "block {}: {}: {}", self.seq, self.kind, self.message)
    }
}

/// The result of a verification pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainReport {
    /// The first block checked (`None`: no chained block).
    pub first_seq: Option<i64>,
    /// The newest block checked.
    pub last_seq: Option<i64>,
    /// Blocks checked.
    pub checked: u64,
    /// Blocks written before the chain began (by a version without it): not covered.
    pub unchained: u64,
    /// The newest block's hash, hex: record it outside the database to notice later that
    /// blocks were removed from the end (nothing inside the database can show that).
    pub head_hash: Option<String>,
    /// Whether the whole chain was checked (`false`: only the newest blocks).
    pub complete: bool,
    /// The first bad block, if any.
    pub fault: Option<ChainFault>,
}

impl ChainReport {
    pub fn is_intact(&self) -> bool {
        self.fault.is_none()
    }
}

/// The id of one token vend, shared by the identity service's `GetResourceOauth2Token`
/// audit event and the agent's tool-call record: the first 128 bits of SHA-256 over the
/// vended access token, hex. Both sides hold the token, so no new wire field is needed;
/// the token itself never appears, and a 128-bit digest of a high-entropy token does not
/// help to find it.
pub fn vend_id(access_token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    format!("vend-{}", hex::encode(&digest.as_ref()[..16]))
}

/// A non-secret reference to an authorization session for audit events: the session id is
/// part of a bearer value (`sessionUri`) until the session completes, so events carry the
/// first 128 bits of its SHA-256 instead. Anyone holding the `sessionUri` can compute it.
pub fn session_ref(session_id: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, session_id.as_bytes());
    format!("sess-{}", hex::encode(&digest.as_ref()[..16]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("file provider should not pend"),
        }
    }

    fn content<'a>(events: &'a str, prev: &'a [u8]) -> BlockContent<'a> {
        BlockContent {
            key_id: "audit-1",
            prev_hash: prev,
            first_time_ms: 1,
            last_time_ms: 2,
            event_count: 1,
            events,
        }
    }

    #[test]
    fn hash_covers_every_part_and_the_key() {
        let keys = crypto::FileKeyProvider::generate().unwrap();
        let (key, envelope) = block_on(ChainKey::create(&keys, 7)).unwrap();
        let b = content("[1]", &GENESIS);
        let h = key.hash(&b, 7);
        assert!(key.is_authentic(&b, 7, &h));
        assert!(!key.is_authentic(&b, 8, &h));
        assert!(!key.is_authentic(&content("[2]", &GENESIS), 7, &h));
        assert!(!key.is_authentic(&content("[1]", &[1u8; 32]), 7, &h));
        assert!(!key.is_authentic(
            &BlockContent {
                last_time_ms: 3,
                ..b
            },
            7,
            &h
        ));
        assert_eq!(key.written_at(&b, &h, 0..100), Some(7));
        // The stored envelope opens to the same key and start; another key file cannot.
        let opened = block_on(ChainKey::open(&keys, key.kid(), &envelope)).unwrap();
        assert_eq!(opened.start_seq(), 7);
        assert!(opened.is_authentic(&b, 7, &h));
        let other = crypto::FileKeyProvider::generate().unwrap();
        assert!(block_on(ChainKey::open(&other, key.kid(), &envelope)).is_err());
        // The envelope is bound to its key id.
        assert!(block_on(ChainKey::open(&keys, "audit-other", &envelope)).is_err());
        // A different audit key gives a different hash.
        let (key2, _) = block_on(ChainKey::create(&keys, 7)).unwrap();
        assert!(!key2.is_authentic(&b, 7, &h));
    }

    #[test]
    fn vend_and_session_ids_are_digests() {
        let id = vend_id("gho_token");
        assert_eq!(id.len(), "vend-".len() + 32);
        assert_eq!(id, vend_id("gho_token"));
        assert_ne!(id, vend_id("gho_token2"));
        assert!(!id.contains("gho_token"));
        assert!(session_ref("abc").starts_with("sess-"));
    }
}
