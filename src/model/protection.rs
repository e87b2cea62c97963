//! Protected previews: a project's access policy (none, password, bypass token), as stored
//! with the project, changed through the API, and carried to every edge in routing
//! snapshots. Only hashes are kept: an argon2id hash of the password, a SHA-256 of the
//! bypass token (a random secret shown once).

use serde::{Deserialize, Serialize};

use crate::digest::Sha256;

/// Shortest password accepted.
pub const PASSWORD_MIN: usize = 8;
/// Longest password accepted (argon2 takes any length; a bound keeps hashing cheap).
pub const PASSWORD_MAX: usize = 256;
/// Default lifetime of the access cookie.
pub const SESSION_SECS_DEFAULT: u64 = 12 * 3600;

/// What a visitor needs on a protected host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Nothing: the host is public.
    #[default]
    None,
    /// The project's password (a login page), or the bypass token.
    Password,
    /// The bypass token only (for CI and review links).
    Token,
}

/// A project's protection as stored (and as routing snapshots carry it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Protection {
    /// What is required.
    pub mode: Mode,
    /// Production and custom hosts too, not only preview hosts.
    pub production: bool,
    /// argon2id PHC string of the password (`mode: password`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// SHA-256 of the bypass token, when one was issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bypass_hash: Option<Sha256>,
    /// Bumped whenever a secret or the mode changes: cookies of an older epoch stop working.
    pub epoch: u64,
    /// How long the access cookie lasts, in seconds.
    pub session_secs: u64,
}

impl Protection {
    /// Whether any host of the project is protected.
    pub fn is_on(&self) -> bool {
        self.mode != Mode::None
    }

    /// The session lifetime in force (the default when unset).
    pub fn session(&self) -> u64 {
        if self.session_secs == 0 {
            SESSION_SECS_DEFAULT
        } else {
            self.session_secs
        }
    }
}

/// A change of protection (`PATCH /v1/projects/{id}` `{"protection": {…}}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtectionPatch {
    /// New mode.
    pub mode: Option<Mode>,
    /// Protect production and custom hosts too.
    pub production: Option<bool>,
    /// A new password (stored hashed; required to turn `password` on the first time).
    pub password: Option<String>,
    /// Issue a new bypass token (the old one stops working); it is shown once.
    pub rotate_bypass: bool,
    /// Cookie lifetime in seconds (1 s to 30 days).
    pub session_secs: Option<u64>,
}

/// What the API shows of a project's protection: never a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProtectionView {
    /// What is required.
    pub mode: Mode,
    /// Production and custom hosts too.
    pub production: bool,
    /// Whether a password is set.
    pub password: bool,
    /// Whether a bypass token was issued.
    pub bypass: bool,
    /// Cookie lifetime in seconds.
    pub session_secs: u64,
    /// The bypass token, only in the answer of the change that issued it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bypass_token: Option<String>,
}

impl ProtectionView {
    /// The view of `p`.
    pub fn new(p: &Protection) -> Self {
        ProtectionView {
            mode: p.mode,
            production: p.production,
            password: p.password_hash.is_some(),
            bypass: p.bypass_hash.is_some(),
            session_secs: p.session(),
            bypass_token: None,
        }
    }
}

/// Session lifetimes accepted.
pub const SESSION_RANGE: std::ops::RangeInclusive<u64> = 1..=30 * 24 * 3600;
