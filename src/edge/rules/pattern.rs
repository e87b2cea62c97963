//! Path patterns shared by `_redirects` and `_headers`: literal segments, `:name`
//! placeholders (one segment each) and a trailing `*` splat, optionally bound to one host.

/// A compiled `from` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// Only requests to this (normalised) host match, when set.
    host: Option<Box<str>>,
    segments: Box<[Segment]>,
    /// A trailing `*`: matches the rest of the path, possibly nothing.
    splat: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Param(Box<str>),
}

/// What a match bound: placeholder values by name and the splat.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Captures<'a> {
    /// `(name, value)` for each placeholder matched, in pattern order.
    pub params: Vec<(&'a str, &'a str)>,
    /// What `*` matched (without its leading slash), if the pattern has one.
    pub splat: Option<&'a str>,
}

impl Captures<'_> {
    /// The value bound to `name` (`splat` names the splat).
    pub fn get(&self, name: &str) -> Option<&str> {
        if name == "splat" {
            return self.splat;
        }
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

/// Whether `name` can be a placeholder name.
pub fn is_placeholder_name(name: &str) -> bool {
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Splits a path into its segments, ignoring the leading slash and one trailing slash, so
/// `/blog` and `/blog/` are the same path to a rule (as on Netlify).
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let p = path.strip_prefix('/').unwrap_or(path);
    let p = p.strip_suffix('/').unwrap_or(p);
    p.split('/').filter(|s| !s.is_empty())
}

impl PathPattern {
    /// Parses `/path/:name/*` or `https://host/path…`. Returns why not.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let (host, path) = match pattern
            .strip_prefix("https://")
            .or_else(|| pattern.strip_prefix("http://"))
        {
            Some(rest) => {
                let (host, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, "/"),
                };
                let host = crate::edge::host::normalize_host(host)
                    .ok_or_else(|| format!("{host:?} is not a valid host"))?;
                (Some(host.into_owned().into_boxed_str()), path)
            }
            None => (None, pattern),
        };
        if !path.starts_with('/') {
            return Err(format!(
                "{pattern:?} must be a path starting with '/' or a full URL"
            ));
        }
        let parts: Vec<&str> = segments(path).collect();
        let mut splat = false;
        let mut out = Vec::with_capacity(parts.len());
        for (i, seg) in parts.iter().enumerate() {
            if *seg == "*" {
                if i + 1 != parts.len() {
                    return Err("a splat (*) may only be the last segment".into());
                }
                splat = true;
            } else if seg.contains('*') {
                return Err(format!(
                    "segment {seg:?}: a splat (*) must be a whole segment"
                ));
            } else if let Some(name) = seg.strip_prefix(':') {
                if !is_placeholder_name(name) {
                    return Err(format!("{seg:?} is not a valid placeholder"));
                }
                out.push(Segment::Param(name.into()));
            } else {
                out.push(Segment::Literal((*seg).into()));
            }
        }
        Ok(PathPattern {
            host,
            segments: out.into(),
            splat,
        })
    }

    /// The placeholder names this pattern binds.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(n) => Some(&**n),
            Segment::Literal(_) => None,
        })
    }

    /// Whether the pattern has a splat.
    pub fn has_splat(&self) -> bool {
        self.splat
    }

    /// Matches a normalised `host` and a decoded request `path`.
    pub fn matches<'a>(&'a self, host: &str, path: &'a str) -> Option<Captures<'a>> {
        if let Some(h) = &self.host
            && **h != *host
        {
            return None;
        }
        let p = path.strip_prefix('/').unwrap_or(path);
        let mut caps = Captures::default();
        let mut rest = p;
        for seg in self.segments.iter() {
            let (head, tail) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            if head.is_empty() {
                return None;
            }
            match seg {
                Segment::Literal(l) if **l == *head => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => caps.params.push((name, head)),
            }
            rest = tail;
        }
        if self.splat {
            caps.splat = Some(rest);
            return Some(caps);
        }
        // Nothing may be left but one trailing slash.
        rest.trim_end_matches('/').is_empty().then_some(caps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m<'a>(pat: &str, path: &'a str) -> Option<Captures<'a>> {
        // Leaked: captures borrow the pattern, and a test's patterns live for the run.
        let p: &'static PathPattern = Box::leak(Box::new(PathPattern::parse(pat).unwrap()));
        p.matches("site.test", path)
    }

    #[test]
    fn literals_placeholders_and_splats() {
        assert!(m("/about", "/about").is_some());
        assert!(m("/about", "/about/").is_some());
        assert!(m("/about/", "/about").is_some());
        assert!(m("/about", "/about/x").is_none());
        assert!(m("/about", "/abou").is_none());
        assert!(m("/", "/").is_some());
        assert!(m("/", "/x").is_none());
        let c = m("/blog/:year/:slug", "/blog/2024/hello").unwrap();
        assert_eq!(c.get("year"), Some("2024"));
        assert_eq!(c.get("slug"), Some("hello"));
        assert!(m("/blog/:year/:slug", "/blog/2024").is_none());
        assert!(m("/blog/:year", "/blog//x").is_none());
        let c = m("/news/*", "/news/2024/01/x.html").unwrap();
        assert_eq!(c.splat, Some("2024/01/x.html"));
        assert_eq!(m("/news/*", "/news").unwrap().splat, Some(""));
        assert_eq!(m("/*", "/").unwrap().splat, Some(""));
        assert!(m("/news/*", "/newsletter").is_none());
    }

    #[test]
    fn hosts() {
        let p = PathPattern::parse("https://Old.Example.com/*").unwrap();
        assert!(p.matches("old.example.com", "/x").is_some());
        assert!(p.matches("site.test", "/x").is_none());
    }

    #[test]
    fn refuses_bad_patterns() {
        for bad in ["about", "/a/*/b", "/a*", "/:1x", "/:", "https://bad host/"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
