//! Envelope encryption of every stored secret.
//!
//! Each record gets a fresh 256-bit data key (DEK). The secret is sealed with AES-256-GCM
//! under the DEK with the record's *associated data* (for example `oauth2-provider:github`),
//! so a ciphertext moved to another record fails to open. The DEK is itself sealed by the
//! active key-encryption key (KEK) of a [`KeyProvider`], and the KEK's id travels inside the
//! envelope so keys can be rotated: old envelopes keep opening with their own key id.
//!
//! Envelope layout (version 1):
//! `0x01 | len(kek_id) u8 | kek_id | wrap_nonce[12] | wrapped_dek[48] | nonce[12] | ciphertext+tag`

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use zeroize::Zeroizing;

/// Errors of the envelope layer. Messages never contain key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("unknown key-encryption key id {0:?}")]
    UnknownKey(String),
    #[error("envelope is malformed")]
    Malformed,
    #[error("envelope failed authentication (wrong key or associated data, or tampered)")]
    Authentication,
    #[error("random number generator failed")]
    Random,
    #[error("key provider failed: {0}")]
    Provider(String),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Holds key-encryption keys. The key-file provider is local; a KMS provider implements the
/// same calls over the network (hence the futures).
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// The id new envelopes are sealed with.
    fn active_key_id(&self) -> String;
    /// Seal a data key under `key_id`. Returns `(nonce, wrapped)`.
    fn wrap_data_key<'a>(
        &'a self,
        key_id: &'a str,
        dek: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, CryptoError>>;
    /// Open a data key sealed under `key_id`.
    fn unwrap_data_key<'a>(
        &'a self,
        key_id: &'a str,
        wrapped: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, CryptoError>>;
}

fn random<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| CryptoError::Random)?;
    Ok(out)
}

fn seal(key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| CryptoError::Malformed)?);
    let nonce_bytes: [u8; NONCE_LEN] = random()?;
    let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
    buf.extend_from_slice(&nonce_bytes);
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce_bytes),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| CryptoError::Malformed)?;
    buf.extend_from_slice(&body);
    Ok(buf)
}

fn open(key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(CryptoError::Malformed);
    }
    let key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| CryptoError::Malformed)?);
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Malformed)?;
    let mut body = Zeroizing::new(body.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .map_err(|_| CryptoError::Authentication)?
        .len();
    body.truncate(len);
    Ok(body)
}

fn dek_aad(record_aad: &[u8]) -> Vec<u8> {
    let mut aad = b"latchkey-dek\0".to_vec();
    aad.extend_from_slice(record_aad);
    aad
}

/// Seal `plaintext` for the record identified by `aad`.
pub async fn encrypt(
    provider: &dyn KeyProvider,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let dek = Zeroizing::new(random::<32>()?);
    let key_id = provider.active_key_id();
    check_key_id(&key_id)?;
    let wrapped = provider
        .wrap_data_key(&key_id, dek.as_ref(), &dek_aad(aad))
        .await?;
    if wrapped.len() > u16::MAX as usize {
        return Err(CryptoError::Provider("wrapped key too large".into()));
    }
    let body = seal(dek.as_ref(), aad, plaintext)?;
    Ok(assemble(&key_id, &wrapped, &body))
}

fn check_key_id(key_id: &str) -> Result<(), CryptoError> {
    if key_id.is_empty() || key_id.len() > 255 {
        return Err(CryptoError::Provider(
            "active key id must be 1..255 bytes".into(),
        ));
    }
    Ok(())
}

fn assemble(key_id: &str, wrapped: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key_id.len() + wrapped.len() + body.len());
    out.push(1u8);
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&(wrapped.len() as u16).to_be_bytes());
    out.extend_from_slice(wrapped);
    out.extend_from_slice(body);
    out
}

/// Re-wrap an envelope's data key under the provider's active key (key rotation).
///
/// Returns `Ok(None)` when the envelope is already sealed under the active key. Otherwise
/// the data key is opened with the envelope's own key (with the same record binding as
/// [`decrypt`], so an envelope copied to another record does not re-wrap either) and
/// sealed again under the active key; the sealed body is kept byte for byte, so the
/// secret itself is never decrypted.
pub async fn rewrap(
    provider: &dyn KeyProvider,
    aad: &[u8],
    envelope: &[u8],
) -> Result<Option<Vec<u8>>, CryptoError> {
    let (key_id, wrapped, body) = parse(envelope)?;
    let active = provider.active_key_id();
    if key_id == active {
        return Ok(None);
    }
    check_key_id(&active)?;
    let dek_aad = dek_aad(aad);
    let dek = provider.unwrap_data_key(key_id, wrapped, &dek_aad).await?;
    let rewrapped = provider.wrap_data_key(&active, &dek, &dek_aad).await?;
    if rewrapped.len() > u16::MAX as usize {
        return Err(CryptoError::Provider("wrapped key too large".into()));
    }
    Ok(Some(assemble(&active, &rewrapped, body)))
}

/// Check that the provider opens an envelope's data key (with the same record binding as
/// [`decrypt`]) without decrypting the secret: whether a key file is the one the envelope
/// was sealed with.
pub async fn open_data_key(
    provider: &dyn KeyProvider,
    aad: &[u8],
    envelope: &[u8],
) -> Result<(), CryptoError> {
    let (key_id, wrapped, _) = parse(envelope)?;
    provider
        .unwrap_data_key(key_id, wrapped, &dek_aad(aad))
        .await
        .map(drop)
}

/// The key id an envelope was sealed with (for rotation bookkeeping).
pub fn envelope_key_id(envelope: &[u8]) -> Result<&str, CryptoError> {
    parse(envelope).map(|p| p.0)
}

fn parse(envelope: &[u8]) -> Result<(&str, &[u8], &[u8]), CryptoError> {
    let (&version, rest) = envelope.split_first().ok_or(CryptoError::Malformed)?;
    if version != 1 {
        return Err(CryptoError::Malformed);
    }
    let (&id_len, rest) = rest.split_first().ok_or(CryptoError::Malformed)?;
    let id_len = id_len as usize;
    if rest.len() < id_len + 2 {
        return Err(CryptoError::Malformed);
    }
    let (id, rest) = rest.split_at(id_len);
    let key_id = std::str::from_utf8(id).map_err(|_| CryptoError::Malformed)?;
    let (len, rest) = rest.split_at(2);
    let wrapped_len = u16::from_be_bytes([len[0], len[1]]) as usize;
    if rest.len() < wrapped_len {
        return Err(CryptoError::Malformed);
    }
    let (wrapped, body) = rest.split_at(wrapped_len);
    Ok((key_id, wrapped, body))
}

/// Open an envelope sealed for the record identified by `aad`.
pub async fn decrypt(
    provider: &dyn KeyProvider,
    aad: &[u8],
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let (key_id, wrapped, body) = parse(envelope)?;
    let dek = provider
        .unwrap_data_key(key_id, wrapped, &dek_aad(aad))
        .await?;
    open(&dek, aad, body)
}

/// Convenience: open an envelope that holds UTF-8 text as a [`SecretString`].
pub async fn decrypt_string(
    provider: &dyn KeyProvider,
    aad: &[u8],
    envelope: &[u8],
) -> Result<SecretString, CryptoError> {
    let bytes = decrypt(provider, aad, envelope).await?;
    let text = std::str::from_utf8(&bytes).map_err(|_| CryptoError::Malformed)?;
    Ok(SecretString::from(text.to_owned()))
}

/// The root of the key hierarchy when it is a KMS key (`key_provider = "aws-kms"`): what
/// `SetTokenVaultCMK` and `ResetTokenVaultKeyMaterial` drive. The key-encryption keys are
/// held in memory; these calls change only which KMS key wraps their stored copies.
pub trait KmsRoot: Send + Sync + fmt::Debug {
    /// The KMS key configured for this deployment (`kms_key_id`): the "service managed" key.
    fn service_key(&self) -> &str;
    /// What KMS says of `key` (an id, ARN or alias).
    fn describe_key<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<KmsKeyInfo, CryptoError>>;
    /// Wrap every key-encryption key (from memory) under `key` and store those copies;
    /// later keys are created under it too. Returns the key's ARN.
    fn wrap_keys_under<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<String, CryptoError>>;
}

/// A KMS key as `DescribeKey` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsKeyInfo {
    pub arn: String,
    pub state: KmsKeyState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsKeyState {
    Enabled,
    Disabled,
    PendingDeletion,
    /// KMS does not know the key (deleted, or never existed in this account and region).
    NotFound,
    /// Another state (`PendingImport`, `Unavailable`…), as KMS names it; or a key that is
    /// not a symmetric encryption key.
    Other(String),
}

type Kek = SecretBox<[u8; 32]>;

/// Key-encryption keys kept in a local file (JSON, mode 0600):
/// `{"active": "<id>", "keys": {"<id>": "<base64 32 bytes>", ...}}`.
pub struct FileKeyProvider {
    active: String,
    keys: BTreeMap<String, Kek>,
}

impl fmt::Debug for FileKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKeyProvider")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyFile {
    active: String,
    keys: BTreeMap<String, String>,
}

impl FileKeyProvider {
    /// A provider holding one freshly generated key.
    pub fn generate() -> Result<Self, CryptoError> {
        let id = new_key_id()?;
        let mut keys = BTreeMap::new();
        keys.insert(id.clone(), SecretBox::new(Box::new(random::<32>()?)));
        Ok(Self { active: id, keys })
    }

    /// A provider holding `keys` (id, 32 bytes), `active` among them: keys that came from
    /// elsewhere than a file (unwrapped by a KMS).
    pub fn from_keys(
        active: &str,
        keys: impl IntoIterator<Item = (String, Zeroizing<[u8; 32]>)>,
    ) -> Result<Self, CryptoError> {
        let keys: BTreeMap<String, Kek> = keys
            .into_iter()
            .map(|(id, k)| (id, SecretBox::new(Box::new(*k))))
            .collect();
        if !keys.contains_key(active) {
            return Err(CryptoError::Provider(format!(
                "active key {active:?} is not among the keys"
            )));
        }
        Ok(Self {
            active: active.to_string(),
            keys,
        })
    }

    /// Parse the key file's contents.
    pub fn from_json(text: &str) -> Result<Self, CryptoError> {
        let file: KeyFile = serde_json::from_str(text).map_err(|e| {
            CryptoError::Provider(format!("key file is not valid JSON: {}", e.classify_name()))
        })?;
        let mut keys = BTreeMap::new();
        for (id, b64) in file.keys {
            let raw = Zeroizing::new(
                STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|_| CryptoError::Provider(format!("key {id:?} is not base64")))?,
            );
            let arr: [u8; 32] = raw
                .as_slice()
                .try_into()
                .map_err(|_| CryptoError::Provider(format!("key {id:?} is not 32 bytes")))?;
            keys.insert(id, SecretBox::new(Box::new(arr)));
        }
        if !keys.contains_key(&file.active) {
            return Err(CryptoError::Provider(format!(
                "active key {:?} is not in the key file",
                file.active
            )));
        }
        Ok(Self {
            active: file.active,
            keys,
        })
    }

    /// Serialize for writing to the key file (contains key material: write it 0600).
    pub fn to_json(&self) -> Zeroizing<String> {
        let file = KeyFile {
            active: self.active.clone(),
            keys: self
                .keys
                .iter()
                .map(|(id, k)| (id.clone(), STANDARD.encode(k.expose_secret())))
                .collect(),
        };
        Zeroizing::new(serde_json::to_string_pretty(&file).unwrap_or_default())
    }

    /// Add a new key and make it active (old keys stay for decryption). Returns the new id.
    pub fn rotate(&mut self) -> Result<String, CryptoError> {
        let id = new_key_id()?;
        self.keys
            .insert(id.clone(), SecretBox::new(Box::new(random::<32>()?)));
        self.active = id.clone();
        Ok(id)
    }

    pub fn key_ids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    /// Whether the file holds a key with this id.
    pub fn has_key(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// Remove a key that is no longer used (after every envelope was re-wrapped). The
    /// active key cannot be removed. Returns whether a key was removed.
    pub fn retire(&mut self, id: &str) -> Result<bool, CryptoError> {
        if id == self.active {
            return Err(CryptoError::Provider(format!(
                "key {id:?} is the active key and cannot be retired"
            )));
        }
        Ok(self.keys.remove(id).is_some())
    }

    /// Copy in the keys of `previous` that this provider lacks, for opening only (the
    /// active key stays this provider's). A process that reloads its key file keeps keys
    /// retired from the file while it runs, so envelopes it read or cached before a
    /// rotation still open.
    pub fn keep_keys_from(&mut self, previous: &FileKeyProvider) {
        for (id, key) in &previous.keys {
            if !self.keys.contains_key(id) {
                self.keys
                    .insert(id.clone(), SecretBox::new(Box::new(*key.expose_secret())));
            }
        }
    }

    /// Add (or replace) a key, for opening; the active key stays.
    pub fn insert_key(&mut self, id: String, key: Zeroizing<[u8; 32]>) {
        self.keys.insert(id, SecretBox::new(Box::new(*key)));
    }

    /// Make `id`, which must be held, the key new envelopes are sealed with.
    pub fn set_active(&mut self, id: &str) -> Result<(), CryptoError> {
        if !self.keys.contains_key(id) {
            return Err(CryptoError::UnknownKey(id.to_string()));
        }
        self.active = id.to_string();
        Ok(())
    }

    /// A copy of one key's material, to wrap it under another root key (KMS).
    pub fn export_key(&self, id: &str) -> Option<Zeroizing<[u8; 32]>> {
        self.keys
            .get(id)
            .map(|k| Zeroizing::new(*k.expose_secret()))
    }

    /// A copy holding the same keys and active key.
    pub fn duplicate(&self) -> Self {
        let mut copy = Self {
            active: self.active.clone(),
            keys: BTreeMap::new(),
        };
        copy.keep_keys_from(self);
        copy
    }

    fn key(&self, id: &str) -> Result<&Kek, CryptoError> {
        self.keys
            .get(id)
            .ok_or_else(|| CryptoError::UnknownKey(id.to_string()))
    }
}

fn new_key_id() -> Result<String, CryptoError> {
    let suffix: [u8; 6] = random()?;
    Ok(format!("file-{}", hex::encode(suffix)))
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}
impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        }
    }
}

impl KeyProvider for FileKeyProvider {
    fn active_key_id(&self) -> String {
        self.active.clone()
    }

    fn wrap_data_key<'a>(
        &'a self,
        key_id: &'a str,
        dek: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, CryptoError>> {
        Box::pin(async move { seal(self.key(key_id)?.expose_secret(), aad, dek) })
    }

    fn unwrap_data_key<'a>(
        &'a self,
        key_id: &'a str,
        wrapped: &'a [u8],
        aad: &'a [u8],
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, CryptoError>> {
        Box::pin(async move { open(self.key(key_id)?.expose_secret(), aad, wrapped) })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn block<F: Future>(f: F) -> F::Output {
        // The file provider never awaits anything real; poll once on a no-op waker.
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("file provider should not pend"),
        }
    }

    #[test]
    fn round_trip_and_binding() {
        let p = FileKeyProvider::generate().unwrap();
        let env = block(encrypt(&p, b"apikey:a", b"hunter2")).unwrap();
        assert!(
            !env.windows(7).any(|w| w == b"hunter2"),
            "plaintext must not appear in envelope"
        );
        assert_eq!(&*block(decrypt(&p, b"apikey:a", &env)).unwrap(), b"hunter2");
        // Moved to another record: fails.
        assert!(matches!(
            block(decrypt(&p, b"apikey:b", &env)),
            Err(CryptoError::Authentication)
        ));
        // Tampered ciphertext: fails.
        let mut bad = env.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            block(decrypt(&p, b"apikey:a", &bad)),
            Err(CryptoError::Authentication)
        ));
        // Fresh DEK and nonce per record: same plaintext encrypts differently.
        let env2 = block(encrypt(&p, b"apikey:a", b"hunter2")).unwrap();
        assert_ne!(env, env2);
    }

    #[test]
    fn rotation_keeps_old_envelopes_readable() {
        let mut p = FileKeyProvider::generate().unwrap();
        let old_id = p.active_key_id();
        let env = block(encrypt(&p, b"r", b"v")).unwrap();
        let new_id = p.rotate().unwrap();
        assert_ne!(old_id, new_id);
        assert_eq!(envelope_key_id(&env).unwrap(), old_id);
        assert_eq!(&*block(decrypt(&p, b"r", &env)).unwrap(), b"v");
        let env2 = block(encrypt(&p, b"r", b"v")).unwrap();
        assert_eq!(envelope_key_id(&env2).unwrap(), new_id);
        let reloaded = FileKeyProvider::from_json(&p.to_json()).unwrap();
        assert_eq!(&*block(decrypt(&reloaded, b"r", &env)).unwrap(), b"v");
    }

    #[test]
    fn wrong_key_file_cannot_open() {
        let a = FileKeyProvider::generate().unwrap();
        let b = FileKeyProvider::generate().unwrap();
        let env = block(encrypt(&a, b"r", b"v")).unwrap();
        assert!(matches!(
            block(decrypt(&b, b"r", &env)),
            Err(CryptoError::UnknownKey(_))
        ));
        assert!(
            !format!("{a:?}").contains(&STANDARD.encode(a.key(&a.active).unwrap().expose_secret()))
        );
    }

    #[test]
    fn rewrap_moves_envelopes_to_the_active_key() {
        let mut p = FileKeyProvider::generate().unwrap();
        let old_id = p.active_key_id();
        let env = block(encrypt(&p, b"apikey-provider:a", b"hunter2")).unwrap();
        // Already on the active key: nothing to do.
        assert!(
            block(rewrap(&p, b"apikey-provider:a", &env))
                .unwrap()
                .is_none()
        );

        let new_id = p.rotate().unwrap();
        let re = block(rewrap(&p, b"apikey-provider:a", &env))
            .unwrap()
            .expect("rewrapped");
        assert_eq!(envelope_key_id(&re).unwrap(), new_id);
        // The sealed body is kept byte for byte; only the header and wrapped key change.
        let (_, _, old_body) = parse(&env).unwrap();
        let (_, _, new_body) = parse(&re).unwrap();
        assert_eq!(old_body, new_body);
        assert!(
            block(rewrap(&p, b"apikey-provider:a", &re))
                .unwrap()
                .is_none()
        );

        // Same record binding as before.
        assert_eq!(
            &*block(decrypt(&p, b"apikey-provider:a", &re)).unwrap(),
            b"hunter2"
        );
        assert!(matches!(
            block(decrypt(&p, b"apikey-provider:b", &re)),
            Err(CryptoError::Authentication)
        ));
        // An envelope copied to another record does not re-wrap (nor open) there.
        assert!(matches!(
            block(rewrap(&p, b"apikey-provider:b", &env)),
            Err(CryptoError::Authentication)
        ));

        // The old key retired: the re-wrapped envelope still opens, the original does not.
        assert!(
            p.retire(&new_id).is_err(),
            "the active key cannot be retired"
        );
        assert!(p.retire(&old_id).unwrap());
        assert!(!p.has_key(&old_id));
        let reloaded = FileKeyProvider::from_json(&p.to_json()).unwrap();
        assert_eq!(reloaded.key_ids(), vec![new_id.clone()]);
        assert_eq!(
            &*block(decrypt(&reloaded, b"apikey-provider:a", &re)).unwrap(),
            b"hunter2"
        );
        assert!(matches!(
            block(decrypt(&reloaded, b"apikey-provider:a", &env)),
            Err(CryptoError::UnknownKey(id)) if id == old_id
        ));
        // Without the old key, an old envelope cannot be re-wrapped.
        assert!(matches!(
            block(rewrap(&reloaded, b"apikey-provider:a", &env)),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn keep_keys_from_retains_old_keys_for_opening() {
        let mut p = FileKeyProvider::generate().unwrap();
        let env = block(encrypt(&p, b"r", b"v")).unwrap();
        let before = FileKeyProvider::from_json(&p.to_json()).unwrap();
        let old_id = p.active_key_id();
        let new_id = p.rotate().unwrap();
        p.retire(&old_id).unwrap();
        let mut reloaded = FileKeyProvider::from_json(&p.to_json()).unwrap();
        reloaded.keep_keys_from(&before);
        assert_eq!(reloaded.active_key_id(), new_id);
        assert_eq!(&*block(decrypt(&reloaded, b"r", &env)).unwrap(), b"v");
    }

    #[test]
    fn malformed_envelopes() {
        let p = FileKeyProvider::generate().unwrap();
        for bad in [&b""[..], &[2u8, 0][..], &[1u8, 200, 1][..]] {
            assert!(block(decrypt(&p, b"r", bad)).is_err());
        }
    }
}
