//! Keys: the filesystem's master key, its wrapping by a passphrase, and the per-object keys
//! derived from it.
//!
//! The master key is 32 random bytes made at mkfs. It is stored in the backend only
//! wrapped: AES-256-GCM under a key derived from the passphrase by argon2id (salt and cost
//! parameters stored beside it). Each object is encrypted under
//! HKDF-SHA256(master, salt = the object's random seed, info = [`OBJECT_KEY_INFO`]).

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// HKDF `info` of object keys.
const OBJECT_KEY_INFO: &[u8] = b"s3ql-rs object key v1";
/// Authenticated data of a wrapped master key.
const WRAP_AAD: &[u8] = b"s3ql-rs wrapped master key v1";
const MASTER_KEY_LEN: usize = 32;
/// Length of an AES-GCM nonce.
pub(crate) const NONCE_LEN: usize = 12;
/// Length of the AES-GCM authentication tag, which follows the ciphertext.
pub(crate) const TAG_LEN: usize = 16;
/// argon2id cost: 64 MiB, 3 passes, 1 lane (OWASP's recommended minimum is 19 MiB, 2 passes).
const ARGON2_M_COST_KIB: u32 = 64 * 1024;
const ARGON2_T_COST: u32 = 3;
const ARGON2_P_COST: u32 = 1;

/// A key problem.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The passphrase does not unwrap the master key.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// A master key given as text is not base64 of 32 bytes.
    #[error(
        "invalid master key: expected 44 base64 characters (32 bytes), as mkfs.s3ql printed it"
    )]
    BadMasterKey,
    /// The wrapped key object cannot be parsed.
    #[error("the passphrase object is damaged: {0}")]
    Damaged(String),
}

/// The filesystem's master key. Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// An AES-256-GCM key (ring's implementation: several times faster than RustCrypto's on
/// CPUs with VAES). Sealed data is the ciphertext followed by the 16-byte tag.
pub(crate) struct Cipher(LessSafeKey);

/// Authentication failed: wrong key, nonce or authenticated data, or altered bytes.
#[derive(Debug)]
pub(crate) struct Unauthentic;

impl Cipher {
    fn new(key: &[u8; 32]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, key).expect("AES-256 keys are 32 bytes long");
        Cipher(LessSafeKey::new(key))
    }

    /// Encrypts `in_out` in place under `nonce` (12 bytes, never reused with this key) and
    /// returns the tag that authenticates it together with `aad`.
    pub(crate) fn seal(&self, nonce: &[u8], aad: &[u8], in_out: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("nonces are 12 bytes long");
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce, Aad::from(aad), in_out)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        tag.as_ref()
            .try_into()
            .expect("AES-GCM tags are 16 bytes long")
    }

    /// Decrypts `sealed` (ciphertext then tag) in place and returns the plaintext length:
    /// the plaintext is `sealed[..len]`. Nothing is returned unless the tag matches.
    pub(crate) fn open(
        &self,
        nonce: &[u8],
        aad: &[u8],
        sealed: &mut [u8],
    ) -> Result<usize, Unauthentic> {
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unauthentic)?;
        self.0
            .open_in_place(nonce, Aad::from(aad), sealed)
            .map(|plain| plain.len())
            .map_err(|_| Unauthentic)
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b[..]);
    b
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Self {
        MasterKey(random_bytes())
    }

    /// The key as S3QL prints it: base64, in space-separated groups of four characters.
    pub fn to_text(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.0);
        b64.as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Parses the text of [`MasterKey::to_text`]; whitespace is ignored.
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| KeyError::BadMasterKey)?;
        let key: [u8; MASTER_KEY_LEN] = bytes.try_into().map_err(|_| KeyError::BadMasterKey)?;
        Ok(MasterKey(key))
    }

    /// The AES-256-GCM cipher of the object with this seed.
    pub(crate) fn object_cipher(&self, seed: &[u8]) -> Cipher {
        let mut okm = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(Some(seed), &self.0)
            .expand(OBJECT_KEY_INFO, &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Cipher::new(&okm)
    }
}

/// A master key wrapped by a passphrase, as stored in the `s3ql_passphrase` objects.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WrappedKey {
    kdf: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
    nonce: String,
    ciphertext: String,
}

fn derive_wrapping_key(
    passphrase: &[u8],
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Cipher, KeyError> {
    let params =
        argon2::Params::new(m, t, p, Some(32)).map_err(|e| KeyError::Damaged(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    argon
        .hash_password_into(passphrase, salt, &mut key)
        .map_err(|e| KeyError::Damaged(e.to_string()))?;
    Ok(Cipher::new(&key))
}

/// Wraps `key` with `passphrase`; the result is the body of a passphrase object.
pub fn wrap(key: &MasterKey, passphrase: &[u8]) -> Vec<u8> {
    let salt: [u8; 16] = random_bytes();
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let cipher = derive_wrapping_key(
        passphrase,
        &salt,
        ARGON2_M_COST_KIB,
        ARGON2_T_COST,
        ARGON2_P_COST,
    )
    .expect("built-in argon2 parameters are valid");
    let mut ciphertext = key.0.to_vec();
    let tag = cipher.seal(&nonce, WRAP_AAD, &mut ciphertext);
    ciphertext.extend_from_slice(&tag);
    let wrapped = WrappedKey {
        kdf: "argon2id".into(),
        m_cost_kib: ARGON2_M_COST_KIB,
        t_cost: ARGON2_T_COST,
        p_cost: ARGON2_P_COST,
        salt: hex::encode(salt),
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ciphertext),
    };
    serde_json::to_vec(&wrapped).expect("serializing a plain struct cannot fail")
}

/// Unwraps the master key from a passphrase object body.
pub fn unwrap(body: &[u8], passphrase: &[u8]) -> Result<MasterKey, KeyError> {
    let w: WrappedKey =
        serde_json::from_slice(body).map_err(|e| KeyError::Damaged(e.to_string()))?;
    if w.kdf != "argon2id" {
        return Err(KeyError::Damaged(format!(
            "unknown key derivation {}",
            w.kdf
        )));
    }
    let bad = |e: hex::FromHexError| KeyError::Damaged(e.to_string());
    let salt = hex::decode(&w.salt).map_err(bad)?;
    let nonce = hex::decode(&w.nonce).map_err(bad)?;
    let mut sealed = hex::decode(&w.ciphertext).map_err(bad)?;
    if nonce.len() != NONCE_LEN {
        return Err(KeyError::Damaged("bad nonce length".into()));
    }
    let cipher = derive_wrapping_key(passphrase, &salt, w.m_cost_kib, w.t_cost, w.p_cost)?;
    let len = cipher
        .open(&nonce, WRAP_AAD, &mut sealed)
        .map_err(|_| KeyError::WrongPassphrase)?;
    let key: [u8; MASTER_KEY_LEN] = sealed[..len]
        .try_into()
        .map_err(|_| KeyError::Damaged("bad key length".into()))?;
    Ok(MasterKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_round_trip_and_wrong_passphrase() {
        let key = MasterKey::generate();
        let body = wrap(&key, b"correct horse");
        assert_eq!(unwrap(&body, b"correct horse").unwrap(), key);
        assert!(matches!(
            unwrap(&body, b"wrong"),
            Err(KeyError::WrongPassphrase)
        ));
    }

    #[test]
    fn text_round_trip() {
        let key = MasterKey::generate();
        let text = key.to_text();
        assert_eq!(text.split(' ').count(), 11);
        assert_eq!(MasterKey::from_text(&text).unwrap(), key);
        assert!(MasterKey::from_text("abcd").is_err());
    }
}
