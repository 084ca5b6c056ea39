//! Secrets at rest: envelope encryption with AES-256-GCM, shared by every service that stores
//! a secret (svc-models' provider keys, svc-tools' integration secrets).
//!
//! Every secret gets a fresh random 256-bit data key (DEK) and a random 96-bit nonce; the DEK is
//! itself sealed ("wrapped") under a key-encryption key (KEK) from config, whose id is stored next
//! to it. Rotating means configuring a new current KEK and keeping the old one under `previous`
//! until every stored row has been re-wrapped ([`KeyEncryption::rewrap`]). Both layers are bound
//! to the owner through the associated data, so a row copied to another owner does not open.
//!
//! A secret is never logged: [`Secret`] prints as `Secret(***)`, and no [`CryptoError`] message
//! carries key material (neither a secret nor a KEK).

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// AES-256: KEKs and DEKs are 32 bytes.
const KEY_LEN: usize = 32;
/// AES-GCM's 96-bit nonce.
const NONCE_LEN: usize = 12;
/// AES-GCM's authentication tag.
const TAG_LEN: usize = 16;
const MAX_KEK_ID_LEN: usize = 64;
/// The id of [`KeyEncryption::dev_default`]'s KEK.
pub const DEV_KEK_ID: &str = "dev-insecure";
/// Public, so it protects nothing: for the local dev stack only.
const DEV_KEK: [u8; KEY_LEN] = *b"personal-agent-dev-insecure-kek!";

/// Domain separation between the two layers' associated data. KEK ids cannot hold a newline, so
/// `kek_id` and the caller's AAD cannot be confused either.
fn secret_aad(aad: &str) -> String {
    format!("pa-keys/v1/secret\n{aad}")
}

fn dek_aad(kek_id: &str, aad: &str) -> String {
    format!("pa-keys/v1/dek\n{kek_id}\n{aad}")
}

/// Best-effort wipe without `unsafe`: the `black_box` keeps the writes from being optimised away
/// as dead stores.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(&*bytes);
}

fn random<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
    Ok(bytes)
}

// ------------------------------------------------------------------------------------------------
// Secret

/// A plaintext provider key. Prints as `Secret(***)`; its bytes are overwritten when dropped.
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The key itself, for the one place that needs it: the request to the provider.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The last 4 characters, to tell keys apart in a UI. A short key shows fewer, never more
    /// than a third of it (a key under 3 characters shows nothing), so the hint cannot give the
    /// whole key away.
    pub fn last4(&self) -> String {
        let count = self.0.chars().count();
        let shown = (count / 3).min(4);
        self.0.chars().skip(count - shown).collect()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        wipe(&mut bytes);
        // Also zero the spare capacity, which may hold an older copy: resizing within the
        // capacity writes zeros there without reallocating.
        let capacity = bytes.capacity();
        bytes.resize(capacity, 0);
        wipe(&mut bytes);
    }
}

// ------------------------------------------------------------------------------------------------
// KEKs, DEKs and sealing

/// A key-encryption key and its id. `Debug` shows the id only; the key is wiped on drop.
pub struct Kek {
    id: String,
    key: [u8; KEY_LEN],
}

impl Kek {
    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.key).into())
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for Kek {
    fn drop(&mut self) {
        wipe(&mut self.key);
    }
}

/// A data key: one per sealed secret. Wiped on drop.
struct Dek([u8; KEY_LEN]);

impl Dek {
    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.0).into())
    }
}

impl Drop for Dek {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// A secret sealed by [`KeyEncryption::seal`]: what is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The KEK that wraps the DEK.
    pub kek_id: String,
    /// The DEK sealed under the KEK (32 bytes + 16-byte tag).
    pub wrapped_dek: Vec<u8>,
    pub dek_nonce: Vec<u8>,
    /// The secret sealed under the DEK.
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
}

/// Seals and opens secrets under the configured KEKs: `current` seals, `current` and `previous`
/// open.
pub struct KeyEncryption {
    current: Kek,
    previous: Vec<Kek>,
}

impl fmt::Debug for KeyEncryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEncryption")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self
                    .previous
                    .iter()
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn validate_kek_id(id: &str) -> Result<(), CryptoError> {
    if id.is_empty() {
        return Err(CryptoError::Config("a KEK id must not be empty".into()));
    }
    if id.len() > MAX_KEK_ID_LEN
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(CryptoError::Config(format!(
            "KEK id {id:?} must be 1-{MAX_KEK_ID_LEN} characters of A-Z, a-z, 0-9, '.', '_' or '-'"
        )));
    }
    Ok(())
}

/// Never puts `b64` (or the base64 crate's error, which may quote a byte of it) in a message.
fn parse_kek(id: &str, b64: &str) -> Result<Kek, CryptoError> {
    validate_kek_id(id)?;
    let mut bytes = BASE64
        .decode(b64.trim())
        .map_err(|_| CryptoError::Config(format!("KEK {id:?} is not valid (standard) base64")))?;
    let result = <[u8; KEY_LEN]>::try_from(bytes.as_slice())
        .map(|key| Kek {
            id: id.to_string(),
            key,
        })
        .map_err(|_| {
            CryptoError::Config(format!(
                "KEK {id:?} must be {KEY_LEN} bytes (a base64 256-bit key), not {}",
                bytes.len()
            ))
        });
    wipe(&mut bytes);
    result
}

impl KeyEncryption {
    /// `current_b64` is the base64 (standard alphabet) of a 32-byte key; `previous` is a
    /// comma-separated list of `id:base64` KEKs still accepted for opening ("" = none).
    pub fn from_config(
        current_id: &str,
        current_b64: &str,
        previous: &str,
    ) -> Result<Self, CryptoError> {
        let current = parse_kek(current_id, current_b64)?;
        let mut keks: Vec<Kek> = Vec::new();
        for (index, entry) in previous.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            // The entry holds a key: name it by position only.
            let Some((id, b64)) = entry.split_once(':') else {
                return Err(CryptoError::Config(format!(
                    "previous KEK entry #{} is not of the form id:base64",
                    index + 1
                )));
            };
            let kek = parse_kek(id.trim(), b64)?;
            if kek.id == current.id || keks.iter().any(|k| k.id == kek.id) {
                return Err(CryptoError::Config(format!(
                    "KEK id {:?} is configured more than once",
                    kek.id
                )));
            }
            keks.push(kek);
        }
        Ok(Self {
            current,
            previous: keks,
        })
    }

    /// A fixed, publicly known KEK (id [`DEV_KEK_ID`]) for the local dev stack only: keys sealed
    /// under it are as good as plaintext. The caller warns when it uses this.
    pub fn dev_default() -> Self {
        Self {
            current: Kek {
                id: DEV_KEK_ID.to_string(),
                key: DEV_KEK,
            },
            previous: Vec::new(),
        }
    }

    /// The id of the KEK new secrets are sealed under.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    fn kek(&self, id: &str) -> Result<&Kek, CryptoError> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownKek(id.to_string()))
    }

    /// Seals `secret` under a fresh DEK, and the DEK under the current KEK, both bound to `aad`
    /// (the owner, e.g. `user-key/{tenant}/{user}/{provider}`).
    pub fn seal(&self, secret: &Secret, aad: &str) -> Result<Sealed, CryptoError> {
        let dek = Dek(random()?);
        let nonce: [u8; NONCE_LEN] = random()?;
        let ciphertext = dek
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: secret_aad(aad).as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let (wrapped_dek, dek_nonce) = wrap_dek(&self.current, &dek, aad)?;
        Ok(Sealed {
            kek_id: self.current.id.clone(),
            wrapped_dek,
            dek_nonce,
            ciphertext,
            nonce: nonce.to_vec(),
        })
    }

    /// Opens what [`seal`](Self::seal) sealed for the same `aad`, under whichever configured KEK
    /// it names.
    pub fn open(&self, sealed: &Sealed, aad: &str) -> Result<Secret, CryptoError> {
        let dek = unwrap_dek(self.kek(&sealed.kek_id)?, sealed, aad)?;
        open_secret(&dek, sealed, aad)
    }

    /// Re-wraps the DEK under the current KEK (the ciphertext stays as it is), after checking the
    /// whole thing opens. `None` when it is under the current KEK already.
    pub fn rewrap(&self, sealed: &Sealed, aad: &str) -> Result<Option<Sealed>, CryptoError> {
        if sealed.kek_id == self.current.id {
            return Ok(None);
        }
        let dek = unwrap_dek(self.kek(&sealed.kek_id)?, sealed, aad)?;
        drop(open_secret(&dek, sealed, aad)?);
        let (wrapped_dek, dek_nonce) = wrap_dek(&self.current, &dek, aad)?;
        Ok(Some(Sealed {
            kek_id: self.current.id.clone(),
            wrapped_dek,
            dek_nonce,
            ciphertext: sealed.ciphertext.clone(),
            nonce: sealed.nonce.clone(),
        }))
    }
}

fn nonce_of(bytes: &[u8]) -> Result<&Nonce<aes_gcm::aead::consts::U12>, CryptoError> {
    // `Nonce::from_slice` panics on a wrong length; a stored row may be damaged.
    if bytes.len() != NONCE_LEN {
        return Err(CryptoError::Decrypt);
    }
    Ok(Nonce::from_slice(bytes))
}

fn wrap_dek(kek: &Kek, dek: &Dek, aad: &str) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
    let nonce: [u8; NONCE_LEN] = random()?;
    let wrapped = kek
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &dek.0,
                aad: dek_aad(&kek.id, aad).as_bytes(),
            },
        )
        .map_err(|_| CryptoError::Encrypt)?;
    Ok((wrapped, nonce.to_vec()))
}

fn unwrap_dek(kek: &Kek, sealed: &Sealed, aad: &str) -> Result<Dek, CryptoError> {
    if sealed.wrapped_dek.len() != KEY_LEN + TAG_LEN {
        return Err(CryptoError::Decrypt);
    }
    let mut plain = kek
        .cipher()
        .decrypt(
            nonce_of(&sealed.dek_nonce)?,
            Payload {
                msg: &sealed.wrapped_dek,
                aad: dek_aad(&kek.id, aad).as_bytes(),
            },
        )
        .map_err(|_| CryptoError::Decrypt)?;
    let dek = <[u8; KEY_LEN]>::try_from(plain.as_slice())
        .map(Dek)
        .map_err(|_| CryptoError::Decrypt);
    wipe(&mut plain);
    dek
}

fn open_secret(dek: &Dek, sealed: &Sealed, aad: &str) -> Result<Secret, CryptoError> {
    let plain = dek
        .cipher()
        .decrypt(
            nonce_of(&sealed.nonce)?,
            Payload {
                msg: &sealed.ciphertext,
                aad: secret_aad(aad).as_bytes(),
            },
        )
        .map_err(|_| CryptoError::Decrypt)?;
    match String::from_utf8(plain) {
        Ok(text) => Ok(Secret(text)),
        Err(err) => {
            wipe(&mut err.into_bytes());
            Err(CryptoError::Decrypt)
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Errors

/// What can go wrong sealing and opening. No message carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The KEK configuration is unusable (startup).
    #[error("invalid key-encryption key configuration: {0}")]
    Config(String),
    /// A stored secret names a KEK that is not configured (any more).
    #[error("key-encryption key {0:?} is not configured")]
    UnknownKek(String),
    /// Authentication failed: wrong KEK, wrong owner, or a damaged row. Deliberately no detail.
    #[error("a stored key could not be decrypted")]
    Decrypt,
    #[error("a key could not be encrypted")]
    Encrypt,
    #[error("the system random number generator failed")]
    Random,
}

impl From<CryptoError> for crate::PaError {
    fn from(err: CryptoError) -> Self {
        crate::PaError::internal(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AAD: &str = "user-key/t1/u1/openai";
    const KEY: &str = "sk-test-0123456789abcdefWXYZ";

    fn b64(key: &[u8; KEY_LEN]) -> String {
        BASE64.encode(key)
    }

    fn enc(id: &str, key: &[u8; KEY_LEN], previous: &str) -> KeyEncryption {
        KeyEncryption::from_config(id, &b64(key), previous).unwrap()
    }

    fn flip(bytes: &mut [u8]) {
        bytes[0] ^= 0x01;
    }

    #[test]
    fn seal_open_round_trip() {
        let enc = enc("k1", &[7; 32], "");
        let sealed = enc.seal(&Secret::new(KEY), AAD).unwrap();
        assert_eq!(sealed.kek_id, "k1");
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert_eq!(sealed.dek_nonce.len(), NONCE_LEN);
        assert_eq!(sealed.wrapped_dek.len(), KEY_LEN + TAG_LEN);
        assert_eq!(sealed.ciphertext.len(), KEY.len() + TAG_LEN);
        assert_eq!(enc.open(&sealed, AAD).unwrap().expose(), KEY);
        let dev = KeyEncryption::dev_default();
        assert_eq!(dev.current_id(), "dev-insecure");
        let sealed = dev.seal(&Secret::new(KEY), AAD).unwrap();
        assert_eq!(dev.open(&sealed, AAD).unwrap().expose(), KEY);
    }

    #[test]
    fn wrong_aad_fails() {
        let enc = enc("k1", &[7; 32], "");
        let sealed = enc.seal(&Secret::new(KEY), AAD).unwrap();
        for aad in [
            "user-key/t1/u2/openai",
            "user-key/t2/u1/openai",
            "",
            "user-key/t1/u1/x",
        ] {
            assert!(matches!(enc.open(&sealed, aad), Err(CryptoError::Decrypt)));
        }
    }

    #[test]
    fn tampering_fails() {
        let enc = enc("k1", &[7; 32], "");
        let sealed = enc.seal(&Secret::new(KEY), AAD).unwrap();
        let tampers: [fn(&mut Sealed); 8] = [
            |s| flip(&mut s.ciphertext),
            |s| flip(&mut s.wrapped_dek),
            |s| flip(&mut s.nonce),
            |s| flip(&mut s.dek_nonce),
            |s| s.nonce.truncate(8),
            |s| s.dek_nonce.push(0),
            |s| s.wrapped_dek.clear(),
            |s| s.ciphertext.truncate(TAG_LEN - 1),
        ];
        for (i, tamper) in tampers.iter().enumerate() {
            let mut bad = sealed.clone();
            tamper(&mut bad);
            assert!(
                matches!(enc.open(&bad, AAD), Err(CryptoError::Decrypt)),
                "tamper #{i} was not detected"
            );
        }
        // Same id, different key material.
        let other = self::enc("k1", &[8; 32], "");
        assert!(matches!(
            other.open(&sealed, AAD),
            Err(CryptoError::Decrypt)
        ));
    }

    #[test]
    fn unknown_kek_fails() {
        let enc = enc("k1", &[7; 32], "");
        let mut sealed = enc.seal(&Secret::new(KEY), AAD).unwrap();
        sealed.kek_id = "k0".into();
        match enc.open(&sealed, AAD) {
            Err(CryptoError::UnknownKek(id)) => assert_eq!(id, "k0"),
            other => panic!("expected UnknownKek, got {other:?}"),
        }
        assert!(matches!(
            enc.rewrap(&sealed, AAD),
            Err(CryptoError::UnknownKek(_))
        ));
    }

    #[test]
    fn rotation_and_rewrap() {
        let (old_key, new_key) = ([1u8; 32], [2u8; 32]);
        let old = enc("k1", &old_key, "");
        let sealed = old.seal(&Secret::new(KEY), AAD).unwrap();

        let rotated = enc("k2", &new_key, &format!("k1:{}", b64(&old_key)));
        assert_eq!(rotated.current_id(), "k2");
        assert_eq!(rotated.open(&sealed, AAD).unwrap().expose(), KEY);

        let moved = rotated.rewrap(&sealed, AAD).unwrap().unwrap();
        assert_eq!(moved.kek_id, "k2");
        assert_eq!(moved.ciphertext, sealed.ciphertext);
        assert_ne!(moved.wrapped_dek, sealed.wrapped_dek);
        assert_eq!(rotated.open(&moved, AAD).unwrap().expose(), KEY);
        assert!(rotated.rewrap(&moved, AAD).unwrap().is_none());

        // Once everything is moved the old KEK can go.
        let new_only = enc("k2", &new_key, "");
        assert_eq!(new_only.open(&moved, AAD).unwrap().expose(), KEY);
        assert!(matches!(
            new_only.open(&sealed, AAD),
            Err(CryptoError::UnknownKek(_))
        ));
        // A rewrapped row is bound to its owner as before.
        assert!(matches!(
            rotated.open(&moved, "user-key/t1/u2/openai"),
            Err(CryptoError::Decrypt)
        ));
    }

    #[test]
    fn seals_are_randomized() {
        let enc = enc("k1", &[7; 32], "");
        let a = enc.seal(&Secret::new(KEY), AAD).unwrap();
        let b = enc.seal(&Secret::new(KEY), AAD).unwrap();
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_ne!(a.wrapped_dek, b.wrapped_dek);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.dek_nonce, b.dek_nonce);
    }

    #[test]
    fn secret_never_prints() {
        let secret = Secret::new(KEY);
        for shown in [
            format!("{secret:?}"),
            format!("{secret}"),
            format!("{secret:#?}"),
            format!("{:?}", Some(&secret)),
        ] {
            assert!(!shown.contains(KEY), "{shown}");
            assert!(shown.contains("Secret(***)"));
        }
        let enc = enc("k1", &[7; 32], "");
        let shown = format!("{enc:?}");
        assert!(shown.contains("k1"));
        assert!(!shown.contains(&b64(&[7; 32])));
        assert!(!shown.contains("7, 7"), "{shown}");
    }

    #[test]
    fn last4() {
        assert_eq!(Secret::new(KEY).last4(), "WXYZ");
        assert_eq!(Secret::new("sk-test-1234").last4(), "1234");
        assert_eq!(Secret::new("abcdefgh").last4(), "gh");
        assert_eq!(Secret::new("abc").last4(), "c");
        assert_eq!(Secret::new("ab").last4(), "");
        assert_eq!(Secret::new("").last4(), "");
        assert_eq!(Secret::new("ключ-ключ-ключ-ÄÖÜß").last4(), "ÄÖÜß");
    }

    #[test]
    fn from_config_rejects_bad_input() {
        let good = b64(&[3; 32]);
        let short = BASE64.encode([3u8; 16]);
        let secretish = "c2VjcmV0LXNlY3JldC1zZWNyZXQ*";
        let cases: Vec<(&str, String, String, &str)> = vec![
            ("", good.clone(), String::new(), "empty"),
            ("k 1", good.clone(), String::new(), "characters"),
            ("k1", secretish.into(), String::new(), "base64"),
            ("k1", short.clone(), String::new(), "32 bytes"),
            ("k1", String::new(), String::new(), "32 bytes"),
            ("k1", good.clone(), format!("k1:{good}"), "more than once"),
            (
                "k1",
                good.clone(),
                format!("k0:{good},k0:{good}"),
                "more than once",
            ),
            ("k1", good.clone(), format!(":{good}"), "empty"),
            ("k1", good.clone(), format!("k0:{secretish}"), "base64"),
            ("k1", good.clone(), format!("k0:{short}"), "32 bytes"),
            ("k1", good.clone(), good.clone(), "id:base64"),
        ];
        for (id, current, previous, expect) in cases {
            let err = KeyEncryption::from_config(id, &current, &previous).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, CryptoError::Config(_)));
            assert!(message.contains(expect), "{message:?} lacks {expect:?}");
            assert!(!message.contains(&good) && !message.contains(secretish));
            assert!(!message.contains(&short), "{message}");
        }
        // Whitespace around entries, a trailing comma and a newline after the key are fine.
        let enc = KeyEncryption::from_config(
            "k2",
            &format!("{good}\n"),
            &format!(" k0:{} , k1:{good} ,", b64(&[4; 32])),
        )
        .unwrap();
        assert_eq!(enc.current_id(), "k2");
        assert_eq!(enc.previous.len(), 2);
    }
}
