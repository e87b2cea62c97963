//! Content addresses: the strict `Sha256` type users see, a streaming hasher, and blake3 helpers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest;

/// A SHA-256 content address: the public name of every blob.
///
/// Its only textual form is 64 lowercase hex digits; uppercase, prefixes or any other length
/// are refused so that one blob never has two names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256([u8; 32]);

/// Why a string is not a content address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a sha256 content address (64 lowercase hex digits expected): {0:?}")]
pub struct InvalidDigest(pub String);

impl Sha256 {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Wraps raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Sha256(bytes)
    }

    /// Hashes a byte slice in one go (small inputs: manifests, tests).
    pub fn of(data: &[u8]) -> Self {
        Sha256(sha2::Sha256::digest(data).into())
    }

    /// The 64-character lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Sha256 {
    type Err = InvalidDigest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            // Cap what we echo back: the input may be arbitrarily long.
            return Err(InvalidDigest(s.chars().take(80).collect()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| InvalidDigest(s.to_owned()))?;
        Ok(Sha256(out))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        // Cannot fail: the buffer is exactly twice the input.
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256 over a stream of chunks, so large files are never buffered whole.
#[derive(Default, Clone)]
pub struct Sha256Hasher {
    inner: sha2::Sha256,
    len: u64,
}

impl Sha256Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.inner.update(chunk);
        self.len += chunk.len() as u64;
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no byte was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The content address of everything fed.
    pub fn finish(self) -> Sha256 {
        Sha256(self.inner.finalize().into())
    }
}

/// Hashes a reader with SHA-256 in fixed-size chunks; returns the address and the length.
pub fn sha256_reader(mut r: impl std::io::Read) -> std::io::Result<(Sha256, u64)> {
    let mut h = Sha256Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let len = h.len();
    Ok((h.finish(), len))
}

/// A fast internal checksum (blake3), for integrity checks that never leave the process,
/// such as comparing what a store returns with what was put.
pub fn blake3_checksum(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_displays_round_trip() {
        let d: Sha256 = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Sha256::of(b""));
        assert_eq!(format!("{d:?}"), format!("Sha256({EMPTY})"));
    }

    #[test]
    fn refuses_anything_but_64_lowercase_hex() {
        for bad in [
            "",
            &EMPTY[..63],
            &format!("{EMPTY}0"),
            &EMPTY.to_uppercase(),
            &format!("sha256:{}", &EMPTY[7..]),
            &EMPTY.replace('e', "g"),
            &format!(" {}", &EMPTY[1..]),
        ] {
            assert!(bad.parse::<Sha256>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn streaming_hash_matches_one_shot() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7) as u8).collect();
        let mut h = Sha256Hasher::new();
        for chunk in data.chunks(4093) {
            h.update(chunk);
        }
        assert_eq!(h.len(), data.len() as u64);
        assert_eq!(h.finish(), Sha256::of(&data));
        let (d, n) = sha256_reader(&data[..]).unwrap();
        assert_eq!((d, n), (Sha256::of(&data), data.len() as u64));
    }

    #[test]
    fn serde_uses_the_hex_form_and_validates() {
        let d = Sha256::of(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Sha256>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Sha256>("\"ABC\"").is_err());
    }
}
