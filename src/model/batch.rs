//! The batch upload format, shared by the API and the CLI: frames of a blob's SHA-256 (32
//! bytes), its length (8 bytes, big-endian), then its bytes, one after another until the
//! body ends. No envelope: a cut body loses only its partial last frame.

use crate::digest::Sha256;

/// Media type of a batch upload body.
pub const MEDIA_TYPE: &str = "application/vnd.halo.blobs";
/// Bytes of a frame's header.
pub const FRAME_HEAD: usize = 40;

/// Appends one frame to `out`.
pub fn frame(out: &mut Vec<u8>, digest: &Sha256, data: &[u8]) {
    out.extend_from_slice(digest.as_bytes());
    out.extend_from_slice(&(data.len() as u64).to_be_bytes());
    out.extend_from_slice(data);
}

/// A frame's header: the blob it names and its length.
pub fn head(bytes: &[u8; FRAME_HEAD]) -> (Sha256, u64) {
    let (digest, len) = bytes.split_at(32);
    (
        Sha256::from_bytes(digest.try_into().expect("32 bytes")),
        u64::from_be_bytes(len.try_into().expect("8 bytes")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back() {
        let mut out = Vec::new();
        frame(&mut out, &Sha256::of(b"abc"), b"abc");
        assert_eq!(out.len(), FRAME_HEAD + 3);
        let h: &[u8; FRAME_HEAD] = out[..FRAME_HEAD].try_into().unwrap();
        assert_eq!(head(h), (Sha256::of(b"abc"), 3));
        assert_eq!(&out[FRAME_HEAD..], b"abc");
    }
}
