//! Netlify-style `_headers`: path patterns, each followed by indented `Name: value` lines
//! that are added to responses for matching paths. Every matching block applies, in order.

use http::{HeaderName, HeaderValue};

use super::RulesError;
use super::pattern::PathPattern;

/// The file's name in a deployment.
pub const FILE: &str = "_headers";
/// More blocks than this fail the build (each response scans them).
pub const MAX_BLOCKS: usize = 1_000;

/// Headers that describe the bytes or the connection; a rule cannot set them.
const RESERVED: [&str; 8] = [
    "content-length",
    "content-encoding",
    "content-range",
    "transfer-encoding",
    "connection",
    "etag",
    "date",
    "accept-ranges",
];

/// One path pattern and its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    pattern: PathPattern,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Every block of a deployment's `_headers`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderRules {
    blocks: Vec<Block>,
}

impl HeaderRules {
    /// Parses a `_headers` file.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let mut blocks: Vec<Block> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let err = |message: String| RulesError {
                file: FILE,
                line: n + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let indented = raw.starts_with([' ', '\t']);
            if !indented && (line.starts_with('/') || line.contains("://")) {
                if blocks.len() == MAX_BLOCKS {
                    return Err(err(format!("more than {MAX_BLOCKS} path blocks")));
                }
                let pattern = PathPattern::parse(line).map_err(err)?;
                blocks.push(Block {
                    pattern,
                    headers: Vec::new(),
                });
                continue;
            }
            let Some(block) = blocks.last_mut() else {
                return Err(err(
                    "a header line must follow a path line (paths start with '/')".into(),
                ));
            };
            let Some((name, value)) = line.split_once(':') else {
                return Err(err(format!("expected 'Name: value', found {line:?}")));
            };
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| err(format!("{:?} is not a valid header name", name.trim())))?;
            if RESERVED.contains(&name.as_str()) {
                return Err(err(format!(
                    "{name} is set by the server and cannot be overridden"
                )));
            }
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| err(format!("the value of {name} is not a valid header value")))?;
            block.headers.push((name, value));
        }
        Ok(HeaderRules { blocks })
    }

    /// Whether there is no rule at all.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The header lists of every block matching `host` and the decoded `path`, in order.
    pub fn matching<'a>(
        &'a self,
        host: &str,
        path: &str,
    ) -> impl Iterator<Item = &'a [(HeaderName, HeaderValue)]> {
        self.blocks
            .iter()
            .filter(move |b| b.pattern.matches(host, path).is_some())
            .map(|b| b.headers.as_slice())
    }
}
