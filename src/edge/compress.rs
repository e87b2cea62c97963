//! `Accept-Encoding` negotiation and compressed variants of blobs. A variant is made once
//! per (blob, encoding): kept in the memory cache and written to the store under
//! `variants/<encoding>/<sha256>` (so restarts and other edge nodes reuse it), never
//! recomputed per request.

use std::io::Write;

use bytes::Bytes;
use http::HeaderValue;

/// A content coding the edge can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// The bytes as stored.
    Identity,
    /// `gzip`.
    Gzip,
    /// `br`.
    Brotli,
}

/// Blobs smaller than this are sent as they are: the framing would eat the gain.
pub const MIN_SIZE: u64 = 128;
/// Above this the faster compression levels are used (the variant is still made once).
const HIGH_QUALITY_MAX: usize = 1024 * 1024;
/// Stored variant objects start with this tag and a BLAKE3 of the payload, checked on read.
const VARIANT_MAGIC: &[u8; 8] = b"HALOVAR1";

impl Encoding {
    /// The `Content-Encoding` value.
    pub fn header(self) -> Option<HeaderValue> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some(HeaderValue::from_static("gzip")),
            Encoding::Brotli => Some(HeaderValue::from_static("br")),
        }
    }

    /// Short name used in ETags and store keys.
    pub fn tag(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gz",
            Encoding::Brotli => "br",
        }
    }
}

/// A quality value in thousandths (`q=0.5` → 500), or `None` when malformed.
fn parse_q(params: &str) -> Option<u16> {
    for p in params.split(';') {
        let p = p.trim();
        let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) else {
            continue;
        };
        let (int, frac) = v.split_once('.').unwrap_or((v, ""));
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
        return match int {
            "0" => Some(thousandths),
            "1" if thousandths == 0 => Some(1000),
            _ => None,
        };
    }
    Some(1000)
}

/// Picks the encoding for a compressible response from `Accept-Encoding` (RFC 9110
/// §12.5.3): highest q wins; brotli before gzip on a tie; identity when no coding is
/// acceptable or when the client ranks identity higher. No header means identity.
pub fn negotiate(accept: Option<&HeaderValue>) -> Encoding {
    let Some(value) = accept.and_then(|v| v.to_str().ok()) else {
        return Encoding::Identity;
    };
    let (mut br, mut gzip, mut identity, mut star): (_, _, Option<u16>, _) =
        (None, None, None, None);
    for item in value.split(',') {
        let (coding, params) = item.split_once(';').unwrap_or((item, ""));
        let Some(q) = parse_q(params) else { continue };
        let slot = match coding.trim().to_ascii_lowercase().as_str() {
            "br" => &mut br,
            "gzip" | "x-gzip" => &mut gzip,
            "identity" => &mut identity,
            "*" => &mut star,
            _ => continue,
        };
        *slot = Some(slot.map_or(q, |old: u16| old.max(q)));
    }
    let br = br.or(star).unwrap_or(0);
    let gzip = gzip.or(star).unwrap_or(0);
    let (best, q) = if br >= gzip {
        (Encoding::Brotli, br)
    } else {
        (Encoding::Gzip, gzip)
    };
    // Identity is always acceptable as a last resort (RFC 9110 lets a server send it rather
    // than 406); it wins over a coding only when the client ranks it higher explicitly.
    if q == 0 || identity.is_some_and(|i| i > q) {
        Encoding::Identity
    } else {
        best
    }
}

/// Compresses `data` (CPU-bound: call from a blocking thread).
pub fn compress(encoding: Encoding, data: &[u8]) -> Bytes {
    let small = data.len() <= HIGH_QUALITY_MAX;
    match encoding {
        Encoding::Identity => Bytes::copy_from_slice(data),
        Encoding::Gzip => {
            let level = if small { 9 } else { 6 };
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 3),
                flate2::Compression::new(level),
            );
            enc.write_all(data).expect("writing to a Vec cannot fail");
            Bytes::from(enc.finish().expect("writing to a Vec cannot fail"))
        }
        Encoding::Brotli => {
            let params = brotli::enc::BrotliEncoderParams {
                quality: if small { 9 } else { 5 },
                lgwin: 22,
                size_hint: data.len(),
                ..Default::default()
            };
            let mut out = Vec::with_capacity(data.len() / 3);
            brotli::BrotliCompress(&mut &data[..], &mut out, &params)
                .expect("compressing into a Vec cannot fail");
            Bytes::from(out)
        }
    }
}

/// Store key of a variant.
pub fn variant_key(encoding: Encoding, hex: &str) -> String {
    format!("variants/{}/{hex}", encoding.tag())
}

/// The stored form of a variant: tag, BLAKE3 of the payload, payload.
pub fn seal(payload: &Bytes) -> Bytes {
    let mut out = Vec::with_capacity(VARIANT_MAGIC.len() + 32 + payload.len());
    out.extend_from_slice(VARIANT_MAGIC);
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// The payload of a stored variant, or `None` if it is damaged or of another format.
pub fn unseal(stored: Bytes) -> Option<Bytes> {
    let head = VARIANT_MAGIC.len() + 32;
    if stored.len() < head || &stored[..VARIANT_MAGIC.len()] != VARIANT_MAGIC {
        return None;
    }
    let payload = stored.slice(head..);
    (blake3::hash(&payload).as_bytes() == &stored[VARIANT_MAGIC.len()..head]).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: &str) -> Encoding {
        negotiate(Some(&HeaderValue::from_str(v).unwrap()))
    }

    #[test]
    fn negotiation() {
        use Encoding::*;
        assert_eq!(negotiate(None), Identity);
        for (h, want) in [
            ("gzip, deflate, br, zstd", Brotli),
            ("gzip", Gzip),
            ("x-gzip", Gzip),
            ("br;q=0.5, gzip;q=0.8", Gzip),
            ("br;q=1.0, gzip;q=1", Brotli),
            ("gzip;q=0, br;q=0", Identity),
            ("*", Brotli),
            ("*;q=0.1, gzip;q=0.5", Gzip),
            ("identity", Identity),
            ("", Identity),
            ("deflate", Identity),
            ("gzip;q=0.5, identity;q=1", Identity),
            ("gzip;q=0.5, identity;q=0.4", Gzip),
            ("BR", Brotli),
            ("br;q=2", Identity),
            ("br;q=0.1234, gzip", Gzip),
            ("gzip ; q=0.7 , br ; q=0.6", Gzip),
        ] {
            assert_eq!(n(h), want, "{h:?}");
        }
    }

    #[test]
    fn variants_round_trip_and_detect_damage() {
        let data = Bytes::from("hello hello hello hello hello hello ".repeat(50));
        for enc in [Encoding::Gzip, Encoding::Brotli] {
            let c = compress(enc, &data);
            assert!(c.len() < data.len() / 4, "{enc:?}");
            let mut back = Vec::new();
            match enc {
                Encoding::Gzip => {
                    std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(&c[..]),
                        &mut back,
                    )
                    .unwrap();
                }
                _ => {
                    brotli::BrotliDecompress(&mut &c[..], &mut back).unwrap();
                }
            }
            assert_eq!(back, data);
            let sealed = seal(&c);
            assert_eq!(unseal(sealed.clone()), Some(c.clone()));
            let mut bad = sealed.to_vec();
            *bad.last_mut().unwrap() ^= 1;
            assert_eq!(unseal(Bytes::from(bad)), None);
        }
    }
}
