//! A deployment's rules files (`_redirects`, `_headers`), parsed once when it is built or
//! loaded into one matcher; never parsed per request and never served as files.

pub mod headers;
pub mod pattern;
pub mod redirects;

#[cfg(test)]
mod tests;

pub use headers::HeaderRules;
pub use redirects::{Action, Redirects};

/// A rules file that cannot be used: the build fails with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {message}")]
pub struct RulesError {
    /// `_redirects` or `_headers` (or `halo.json`).
    pub file: &'static str,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Everything a deployment's rules files say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rules {
    /// `_redirects`.
    pub redirects: Redirects,
    /// `_headers`.
    pub headers: HeaderRules,
}

/// Whether a manifest path is a rules or settings file, which the edge never serves.
pub fn is_control_file(path: &str) -> bool {
    matches!(
        path,
        redirects::FILE | headers::FILE | crate::model::settings::FILE
    )
}
