//! Conditional and range request logic (RFC 9110 §13, §14): pure decisions over headers.

use std::ops::Range;
use std::time::SystemTime;

use http::HeaderMap;
use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, RANGE};

/// What to send for a file, given the request's conditional and range headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// 200 with the whole file.
    Full,
    /// 304: the client's copy is current.
    NotModified,
    /// 206 with these bytes.
    Partial(Range<u64>),
    /// 416: no byte of the range exists.
    Unsatisfiable,
}

/// Decides how to answer a GET/HEAD for a representation of `size` bytes tagged `etag`
/// and last modified at `modified` (whole seconds).
pub fn plan(headers: &HeaderMap, etag: &[u8], size: u64, modified: SystemTime) -> Plan {
    match headers.get(IF_NONE_MATCH) {
        Some(inm) if etag_list_matches(inm.as_bytes(), etag) => return Plan::NotModified,
        Some(_) => {}
        // If-Modified-Since counts only without If-None-Match (RFC 9110 §13.1.3).
        None => {
            if let Some(since) = headers
                .get(IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok())
                && modified <= since
            {
                return Plan::NotModified;
            }
        }
    }
    let Some(range) = headers.get(RANGE) else {
        return Plan::Full;
    };
    // If-Range with a different validator means "send it all", never a stale piece.
    if let Some(ir) = headers.get(IF_RANGE)
        && ir.as_bytes() != etag
    {
        return Plan::Full;
    }
    match parse_range(range.as_bytes(), size) {
        RangeSpec::Ignore => Plan::Full,
        RangeSpec::Unsatisfiable => Plan::Unsatisfiable,
        RangeSpec::Bytes(r) => Plan::Partial(r),
    }
}

/// Weak comparison against an `If-None-Match` list (`*`, `"a", W/"b"`).
fn etag_list_matches(list: &[u8], etag: &[u8]) -> bool {
    let Ok(list) = std::str::from_utf8(list) else {
        return false;
    };
    let ours = std::str::from_utf8(etag).unwrap_or("");
    list.split(',').map(str::trim).any(|t| {
        t == "*" || t.strip_prefix("W/").unwrap_or(t) == ours.strip_prefix("W/").unwrap_or(ours)
    })
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Absent in effect: malformed, several ranges, or another unit. Serve the whole file.
    Ignore,
    Unsatisfiable,
    Bytes(Range<u64>),
}

/// Parses one `bytes=` range against `size`. Multi-range requests are answered whole,
/// which RFC 9110 allows and which saves building multipart bodies.
fn parse_range(value: &[u8], size: u64) -> RangeSpec {
    let Ok(value) = std::str::from_utf8(value) else {
        return RangeSpec::Ignore;
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            None => RangeSpec::Ignore,
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if size == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Bytes(size.saturating_sub(n)..size),
        },
        (start, end) => {
            let Some(start) = num(start) else {
                return RangeSpec::Ignore;
            };
            let end = if end.is_empty() {
                size
            } else {
                match num(end) {
                    Some(e) if e >= start => e.saturating_add(1).min(size),
                    // RFC 9110 §14.1.1: last < first is an invalid range, answered 416.
                    Some(_) => return RangeSpec::Unsatisfiable,
                    None => return RangeSpec::Ignore,
                }
            };
            if start >= size {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(start..end)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TAG: &[u8] = b"\"abc\"";

    fn plan_with(pairs: &[(http::HeaderName, &str)], size: u64) -> Plan {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        plan(
            &h,
            TAG,
            size,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        )
    }

    #[test]
    fn if_modified_since() {
        let at = |t: u64| {
            httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t))
        };
        assert_eq!(
            plan_with(&[(IF_MODIFIED_SINCE, &at(1_700_000_000))], 10),
            Plan::NotModified
        );
        assert_eq!(
            plan_with(&[(IF_MODIFIED_SINCE, &at(1_800_000_000))], 10),
            Plan::NotModified
        );
        assert_eq!(
            plan_with(&[(IF_MODIFIED_SINCE, &at(1_600_000_000))], 10),
            Plan::Full
        );
        assert_eq!(
            plan_with(&[(IF_MODIFIED_SINCE, "yesterday")], 10),
            Plan::Full
        );
        // An ETag that does not match wins over a date that would.
        assert_eq!(
            plan_with(
                &[
                    (IF_MODIFIED_SINCE, &at(1_800_000_000)),
                    (IF_NONE_MATCH, "\"x\"")
                ],
                10
            ),
            Plan::Full
        );
    }

    #[test]
    fn if_none_match() {
        assert_eq!(
            plan_with(&[(IF_NONE_MATCH, "\"abc\"")], 10),
            Plan::NotModified
        );
        assert_eq!(
            plan_with(&[(IF_NONE_MATCH, "\"x\", W/\"abc\"")], 10),
            Plan::NotModified
        );
        assert_eq!(plan_with(&[(IF_NONE_MATCH, "*")], 10), Plan::NotModified);
        assert_eq!(plan_with(&[(IF_NONE_MATCH, "\"abcd\"")], 10), Plan::Full);
    }

    #[test]
    fn ranges() {
        let r = |v: &str, size| plan_with(&[(RANGE, v)], size);
        assert_eq!(r("bytes=0-3", 10), Plan::Partial(0..4));
        assert_eq!(r("bytes=5-", 10), Plan::Partial(5..10));
        assert_eq!(r("bytes=-3", 10), Plan::Partial(7..10));
        assert_eq!(r("bytes=-30", 10), Plan::Partial(0..10));
        assert_eq!(r("bytes=8-100", 10), Plan::Partial(8..10));
        assert_eq!(r("bytes=10-", 10), Plan::Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), Plan::Unsatisfiable);
        assert_eq!(r("bytes=0-0", 0), Plan::Unsatisfiable);
        assert_eq!(r("bytes=3-1", 10), Plan::Unsatisfiable);
        assert_eq!(r("bytes=0-1,4-5", 10), Plan::Full);
        assert_eq!(r("items=0-1", 10), Plan::Full);
        assert_eq!(r("bytes=x-1", 10), Plan::Full);
        assert_eq!(r("bytes=+1-2", 10), Plan::Full);
    }

    #[test]
    fn if_range_guards_the_range() {
        assert_eq!(
            plan_with(&[(RANGE, "bytes=0-1"), (IF_RANGE, "\"abc\"")], 10),
            Plan::Partial(0..2)
        );
        assert_eq!(
            plan_with(&[(RANGE, "bytes=0-1"), (IF_RANGE, "\"old\"")], 10),
            Plan::Full
        );
    }
}
