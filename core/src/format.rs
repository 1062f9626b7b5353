//! Object format v1: the bytes of every object in the backend.
//!
//! ```text
//! offset  size  field
//! 0       6     magic "S3QLRS"
//! 6       1     format version (1)
//! 7       1     compression id (0 none, 1 zstd, 2 lzma, 3 bzip2, 4 zlib)
//! 8       1     encryption id (0 none, 1 AES-256-GCM)
//! 9       1     reserved, 0
//! 10      8     plaintext length, u64 little-endian (0 in encrypted objects)
//! plain objects (encryption id 0):
//! 18      n     payload (the plaintext, compressed with the given algorithm)
//! 18+n    32    SHA-256 of bytes 0..18+n
//! encrypted objects (encryption id 1):
//! 18      16    key seed (random); object key = HKDF-SHA256(master, seed)
//! 34      12    nonce (random)
//! 46      n+16  AES-256-GCM of (plaintext length u64 LE || payload), with its tag;
//!               authenticated data: bytes 0..46 and the object's name
//! ```
//! `docs/FORMAT.md` is the normative description. Decoding checks everything it can and
//! never returns bytes that do not match the header's promises.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use crate::crypto::{MasterKey, NONCE_LEN, TAG_LEN};

const MAGIC: &[u8; 6] = b"S3QLRS";
/// The object format version this build writes.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 18;
const TRAILER_LEN: usize = 32;
const ENCRYPTION_NONE: u8 = 0;
const ENCRYPTION_AES_GCM: u8 = 1;
const SEED_LEN: usize = 16;
const ENCRYPTED_HEADER_LEN: usize = HEADER_LEN + SEED_LEN + NONCE_LEN;

/// An object that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Too short, bad magic, or a checksum mismatch: the stored bytes were altered.
    #[error("object is corrupted: {0}")]
    Corrupted(&'static str),
    /// Written by a newer version of the format.
    #[error("object format version {0} is newer than this program supports ({FORMAT_VERSION})")]
    TooNew(u8),
    /// Uses an algorithm this build does not know.
    #[error("unknown {0} id {1}")]
    UnknownAlgorithm(&'static str, u8),
    /// An encrypted object failed authentication: altered, truncated, swapped or wrong key.
    #[error("object failed authentication (altered, truncated, swapped, or wrong key)")]
    Unauthentic,
    /// An object of an encrypted filesystem is not encrypted (or the reverse).
    #[error("object encryption does not match the filesystem's")]
    EncryptionMismatch,
    /// The compressed payload did not decompress to the promised length.
    #[error("decompression failed: {0}")]
    Decompress(String),
}

/// A compression algorithm with its level, as given to `--compress ALGO-LEVEL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Store as is.
    None,
    /// zstd, levels 1-19.
    Zstd(i32),
    /// xz/lzma, levels 0-9.
    Lzma(u32),
    /// bzip2, levels 1-9.
    Bzip2(u32),
    /// zlib (deflate), levels 0-9.
    Zlib(u32),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(3)
    }
}

/// A `--compress` value that is not `ALGO[-LEVEL]` with a known algorithm and level.
#[derive(Debug, thiserror::Error)]
#[error("invalid compression '{0}': expected none, zstd-1..19, lzma-0..9, bzip2-1..9 or zlib-0..9")]
pub struct BadCompression(String);

impl FromStr for Compression {
    type Err = BadCompression;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCompression(s.to_owned());
        let (algo, level) = match s.split_once('-') {
            Some((a, l)) => (a, Some(l.parse::<i32>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let in_range = |lo: i32, hi: i32, default: i32| {
            let l = level.unwrap_or(default);
            if (lo..=hi).contains(&l) {
                Ok(l)
            } else {
                Err(bad())
            }
        };
        Ok(match algo {
            "none" => {
                in_range(0, 9, 0)?;
                Compression::None
            }
            "zstd" => Compression::Zstd(in_range(1, 19, 3)?),
            "lzma" | "xz" => Compression::Lzma(in_range(0, 9, 6)? as u32),
            "bzip2" => Compression::Bzip2(in_range(1, 9, 6)? as u32),
            "zlib" => Compression::Zlib(in_range(0, 9, 6)? as u32),
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => write!(f, "none"),
            Compression::Zstd(l) => write!(f, "zstd-{l}"),
            Compression::Lzma(l) => write!(f, "lzma-{l}"),
            Compression::Bzip2(l) => write!(f, "bzip2-{l}"),
            Compression::Zlib(l) => write!(f, "zlib-{l}"),
        }
    }
}

impl Compression {
    fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd(_) => 1,
            Compression::Lzma(_) => 2,
            Compression::Bzip2(_) => 3,
            Compression::Zlib(_) => 4,
        }
    }

    /// The same algorithm at its cheapest level.
    fn fastest(self) -> Self {
        match self {
            Compression::None => Compression::None,
            Compression::Zstd(_) => Compression::Zstd(1),
            Compression::Lzma(_) => Compression::Lzma(0),
            Compression::Bzip2(_) => Compression::Bzip2(1),
            Compression::Zlib(_) => Compression::Zlib(1),
        }
    }

    fn compress(self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(data.to_vec()),
            Compression::Zstd(level) => zstd::bulk::compress(data, level),
            Compression::Lzma(level) => {
                let mut enc = liblzma::write::XzEncoder::new(Vec::new(), level);
                enc.write_all(data)?;
                enc.finish()
            }
            Compression::Bzip2(level) => {
                let mut enc =
                    bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(level));
                enc.write_all(data)?;
                enc.finish()
            }
            Compression::Zlib(level) => {
                let mut enc =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
                enc.write_all(data)?;
                enc.finish()
            }
        }
    }
}

/// The plaintext of `payload` (compressed with algorithm `id`); an uncompressed payload is
/// returned as it is, without copying.
fn decompress(id: u8, payload: Bytes, plain_len: usize) -> Result<Bytes, FormatError> {
    let out = match id {
        0 => Ok(payload),
        1 => zstd::bulk::decompress(&payload, plain_len).map(Bytes::from),
        2 => read_up_to(liblzma::read::XzDecoder::new(&payload[..]), plain_len),
        3 => read_up_to(bzip2::read::BzDecoder::new(&payload[..]), plain_len),
        4 => read_up_to(flate2::read::ZlibDecoder::new(&payload[..]), plain_len),
        other => return Err(FormatError::UnknownAlgorithm("compression", other)),
    };
    let out = out.map_err(|e| FormatError::Decompress(e.to_string()))?;
    if out.len() != plain_len {
        return Err(FormatError::Decompress(format!(
            "expected {plain_len} bytes, got {}",
            out.len()
        )));
    }
    Ok(out)
}

/// What `decoder` yields, up to one byte more than `plain_len` (enough to tell that it
/// yields too much).
fn read_up_to(decoder: impl Read, plain_len: usize) -> std::io::Result<Bytes> {
    let mut out = Vec::with_capacity(plain_len);
    decoder.take(plain_len as u64 + 1).read_to_end(&mut out)?;
    Ok(out.into())
}

/// Blocks at least this long are probed (see [`looks_incompressible`]) before being
/// compressed whole.
const PROBE_MIN_LEN: usize = 128 * 1024;
/// Number of slices sampled evenly across a probed block.
const PROBE_SLICES: usize = 8;
/// Length of each sampled slice.
const PROBE_SLICE_LEN: usize = 4096;

/// Whether compressing `plain` is not worth it: its evenly spread sample (8 slices of
/// 4 KiB) does not shrink by at least 2 % with the cheapest level of `compression`. Random,
/// encrypted or already compressed data then costs a fraction of 3 % of a full compression
/// instead of all of it.
fn looks_incompressible(plain: &[u8], compression: Compression) -> bool {
    if plain.len() < PROBE_MIN_LEN {
        return false;
    }
    let stride = (plain.len() - PROBE_SLICE_LEN) / (PROBE_SLICES - 1);
    let sample: Vec<u8> = (0..PROBE_SLICES)
        .flat_map(|i| &plain[i * stride..i * stride + PROBE_SLICE_LEN])
        .copied()
        .collect();
    compression
        .fastest()
        .compress(&sample)
        .map_or(true, |c| c.len() * 100 >= sample.len() * 98)
}

fn compress_for_storage(
    plain: &[u8],
    compression: Compression,
) -> (u8, std::borrow::Cow<'_, [u8]>) {
    let compressed = match compression {
        Compression::None => None,
        c if looks_incompressible(plain, c) => None,
        c => c.compress(plain).ok().filter(|c| c.len() < plain.len()),
    };
    match compressed {
        Some(c) => (compression.id(), c.into()),
        None => (Compression::None.id(), plain.into()),
    }
}

fn header(compression_id: u8, encryption_id: u8, plain_len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENCRYPTED_HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(compression_id);
    out.push(encryption_id);
    out.push(0);
    out.extend_from_slice(&plain_len.to_le_bytes());
    out
}

/// Turns plaintext into object bytes and back. An encrypted codec (with the master key)
/// writes only encrypted objects and refuses unencrypted ones; a plain codec refuses
/// encrypted objects.
#[derive(Debug, Clone, Default)]
pub struct Codec {
    key: Option<Arc<MasterKey>>,
}

impl Codec {
    /// A codec for an unencrypted filesystem.
    pub fn plain() -> Self {
        Codec { key: None }
    }

    /// A codec for an encrypted filesystem.
    pub fn encrypted(key: MasterKey) -> Self {
        Codec {
            key: Some(Arc::new(key)),
        }
    }

    /// Whether objects are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.key.is_some()
    }

    /// Encodes `plain` as object `name`. The payload is compressed with `compression`
    /// unless the compressed form is not smaller, then it is stored uncompressed.
    pub fn encode(&self, name: &str, plain: &[u8], compression: Compression) -> Vec<u8> {
        let (id, payload) = compress_for_storage(plain, compression);
        let Some(key) = &self.key else {
            let mut out = header(id, ENCRYPTION_NONE, plain.len() as u64);
            out.extend_from_slice(&payload);
            let digest = Sha256::digest(&out);
            out.extend_from_slice(&digest);
            return out;
        };
        let mut out = header(id, ENCRYPTION_AES_GCM, 0);
        let mut seed = [0u8; SEED_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut seed[..]);
        rand::fill(&mut nonce[..]);
        out.extend_from_slice(&seed);
        out.extend_from_slice(&nonce);
        let mut aad = out.clone();
        aad.extend_from_slice(name.as_bytes());
        out.reserve(8 + payload.len() + TAG_LEN);
        out.extend_from_slice(&(plain.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
        let tag = key
            .object_cipher(&seed)
            .seal(&nonce, &aad, &mut out[ENCRYPTED_HEADER_LEN..]);
        out.extend_from_slice(&tag);
        out
    }

    /// Decodes object `name`, verifying everything: magic, version, checksum or
    /// authentication tag (which also binds the name), and length. Nothing is copied that
    /// need not be: an encrypted object is decrypted in its own buffer unless `object` is
    /// shared (then into a new one, never altering the shared bytes), and an uncompressed
    /// payload is returned as a slice of that buffer.
    pub fn decode(&self, name: &str, object: Bytes) -> Result<Bytes, FormatError> {
        if object.len() < HEADER_LEN {
            return Err(FormatError::Corrupted("object is shorter than its header"));
        }
        if &object[..6] != MAGIC {
            return Err(FormatError::Corrupted("bad magic"));
        }
        let version = object[6];
        if version > FORMAT_VERSION || version == 0 {
            return Err(FormatError::TooNew(version));
        }
        match (object[8], &self.key) {
            (ENCRYPTION_NONE, None) => decode_plain(object),
            (ENCRYPTION_AES_GCM, Some(key)) => decode_encrypted(key, name, object),
            (ENCRYPTION_NONE | ENCRYPTION_AES_GCM, _) => Err(FormatError::EncryptionMismatch),
            (other, _) => Err(FormatError::UnknownAlgorithm("encryption", other)),
        }
    }
}

/// The little-endian length at the start of `bytes` (at least 8 bytes long).
fn plain_len(bytes: &[u8]) -> Result<usize, FormatError> {
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&bytes[..8]);
    usize::try_from(u64::from_le_bytes(len_bytes))
        .map_err(|_| FormatError::Corrupted("impossible length"))
}

fn decode_plain(object: Bytes) -> Result<Bytes, FormatError> {
    if object.len() < HEADER_LEN + TRAILER_LEN {
        return Err(FormatError::Corrupted("object is shorter than its header"));
    }
    let body_end = object.len() - TRAILER_LEN;
    if Sha256::digest(&object[..body_end]).as_slice() != &object[body_end..] {
        return Err(FormatError::Corrupted("checksum mismatch"));
    }
    let plain_len = plain_len(&object[10..HEADER_LEN])?;
    decompress(object[7], object.slice(HEADER_LEN..body_end), plain_len)
}

fn decode_encrypted(key: &MasterKey, name: &str, object: Bytes) -> Result<Bytes, FormatError> {
    // Every object this format writes holds at least the length and the tag.
    if object.len() < ENCRYPTED_HEADER_LEN + 8 + TAG_LEN {
        return Err(FormatError::Unauthentic);
    }
    let compression_id = object[7];
    let head = &object[..ENCRYPTED_HEADER_LEN];
    let cipher = key.object_cipher(&head[HEADER_LEN..HEADER_LEN + SEED_LEN]);
    let nonce = head[HEADER_LEN + SEED_LEN..].to_vec();
    let aad = [head, name.as_bytes()].concat();
    let mut own = object
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    let len = cipher
        .open(&nonce, &aad, &mut own[ENCRYPTED_HEADER_LEN..])
        .map_err(|_| FormatError::Unauthentic)?;
    let msg = own
        .freeze()
        .slice(ENCRYPTED_HEADER_LEN..ENCRYPTED_HEADER_LEN + len);
    let plain_len = plain_len(&msg)?;
    decompress(compression_id, msg.slice(8..), plain_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes `object` from a buffer of its own (decrypted in place) and from a shared
    /// one (which must stay unaltered); both must give the same result.
    fn decode(codec: &Codec, name: &str, object: &[u8]) -> Result<Bytes, FormatError> {
        let shared = Bytes::copy_from_slice(object);
        let kept = shared.clone();
        let from_shared = codec.decode(name, shared);
        assert_eq!(kept, object, "decoding altered a shared object");
        let own = codec.decode(name, Bytes::from(object.to_vec()));
        assert_eq!(own.as_ref().ok(), from_shared.as_ref().ok());
        own
    }

    fn codecs() -> [Codec; 2] {
        [Codec::plain(), Codec::encrypted(MasterKey::generate())]
    }

    fn all_algorithms() -> Vec<Compression> {
        let mut v = vec![Compression::None];
        v.extend((1..=19).map(Compression::Zstd));
        v.extend((0..=9).map(Compression::Lzma));
        v.extend((1..=9).map(Compression::Bzip2));
        v.extend((0..=9).map(Compression::Zlib));
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn round_trip(data in prop::collection::vec(any::<u8>(), 0..5000), repeat in 1usize..40) {
            let compressible: Vec<u8> = data.iter().flat_map(|b| std::iter::repeat_n(*b, repeat)).collect();
            for algo in all_algorithms() {
                for plain in [&data[..], &compressible[..], &[][..]] {
                    for codec in codecs() {
                        let obj = codec.encode("s3ql_data_7", plain, algo);
                        prop_assert_eq!(decode(&codec, "s3ql_data_7", &obj).unwrap(), plain);
                    }
                }
            }
        }
    }

    #[test]
    fn incompressible_is_stored_plain() {
        let data: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let codec = Codec::plain();
        let obj = codec.encode("x", &data, Compression::Zstd(3));
        assert!(obj.len() <= data.len() + HEADER_LEN + TRAILER_LEN);
        assert_eq!(decode(&codec, "x", &obj).unwrap(), data);
    }

    #[test]
    fn probe_skips_random_blocks_but_not_mixed_ones() {
        let mut random = vec![0u8; 1 << 20];
        rand::fill(&mut random[..]);
        let mut sentence = b"the quick brown fox jumps over the lazy dog. ".repeat(1 << 15);
        sentence.truncate(1 << 20);
        let mut mixed = random.clone();
        mixed[..1 << 19].copy_from_slice(&sentence[..1 << 19]);
        let algorithms = [
            Compression::Zstd(1),
            Compression::Zstd(19),
            Compression::Lzma(6),
            Compression::Bzip2(9),
            Compression::Zlib(1),
            Compression::Zlib(6),
        ];
        for algo in algorithms {
            assert!(looks_incompressible(&random, algo), "{algo}");
            assert!(!looks_incompressible(&sentence, algo), "{algo}");
            assert!(!looks_incompressible(&mixed, algo), "{algo}");
            let (id, _) = compress_for_storage(&mixed, algo);
            assert_eq!(id, algo.id(), "{algo}");
        }
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        for codec in codecs() {
            let obj = codec.encode("n", &[7u8; 10000], Compression::Zstd(3));
            for i in 0..obj.len() {
                let mut bad = obj.clone();
                bad[i] ^= 0x40;
                assert!(
                    decode(&codec, "n", &bad).is_err(),
                    "flip at {i} not detected"
                );
            }
            assert!(decode(&codec, "n", &obj[..obj.len() - 1]).is_err());
        }
    }

    #[test]
    fn encrypted_objects_are_bound_to_name_and_key() {
        let key = MasterKey::generate();
        let codec = Codec::encrypted(key);
        let obj = codec.encode("s3ql_data_1", b"secret file content", Compression::None);
        assert!(!obj.windows(6).any(|w| w == b"secret"));
        assert!(matches!(
            decode(&codec, "s3ql_data_2", &obj),
            Err(FormatError::Unauthentic)
        ));
        let other = Codec::encrypted(MasterKey::generate());
        assert!(matches!(
            decode(&other, "s3ql_data_1", &obj),
            Err(FormatError::Unauthentic)
        ));
        assert!(matches!(
            decode(&Codec::plain(), "s3ql_data_1", &obj),
            Err(FormatError::EncryptionMismatch)
        ));
        let plain = Codec::plain().encode("s3ql_data_1", b"x", Compression::None);
        assert!(matches!(
            decode(&codec, "s3ql_data_1", &plain),
            Err(FormatError::EncryptionMismatch)
        ));
    }

    #[test]
    fn uncompressed_payload_is_decoded_in_the_object_buffer() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        for codec in codecs() {
            let object = Bytes::from(codec.encode("n", &data, Compression::None));
            let range = object.as_ptr_range();
            let plain = codec.decode("n", object).unwrap();
            assert_eq!(plain, data);
            assert!(range.contains(&plain.as_ptr()), "the payload was copied");
        }
    }

    #[test]
    fn parses_s3ql_specs() {
        assert_eq!(
            "zstd-3".parse::<Compression>().unwrap(),
            Compression::Zstd(3)
        );
        assert_eq!("lzma".parse::<Compression>().unwrap(), Compression::Lzma(6));
        assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
        assert!("zstd-20".parse::<Compression>().is_err());
        assert!("gzip-3".parse::<Compression>().is_err());
        assert!("zlib-x".parse::<Compression>().is_err());
    }
}
