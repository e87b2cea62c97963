//! Dashboard sessions: a browser signs in with an API token once and holds an opaque
//! cookie; the row that cookie names (by hash) lives in the database, so every replica
//! honours it and revoking the token ends it.

use crate::digest::Sha256;
use crate::model::Millis;

/// How long a session lasts from sign-in (a working day; sign in again after).
pub const SESSION_TTL_MILLIS: Millis = 12 * 3600 * 1000;

/// One signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the cookie's secret (the secret itself is never stored).
    pub id_hash: Sha256,
    /// SHA-256 of the API token it signed in with: the session acts as that token, and
    /// ends when the token is revoked or expires.
    pub token_hash: Sha256,
    /// The anti-CSRF value every change made with this session must echo in a header.
    pub csrf: String,
    /// Sign-in time.
    pub created_at: Millis,
    /// When it stops working.
    pub expires_at: Millis,
    /// A one-time sign-in link, not yet a session: it opens one session when redeemed and
    /// is gone then; it never authenticates a request itself.
    pub link: bool,
}

/// How long the sign-in link `halo serve` prints on first start stays redeemable.
pub const LINK_TTL_MILLIS: Millis = 3600 * 1000;

/// What the blob index holds (the storage view).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BlobStats {
    /// Distinct blobs stored.
    pub blobs: u64,
    /// Their bytes, where the index knows the size.
    pub bytes: u64,
    /// Blobs whose size the index does not know (stored before sizes were kept).
    pub unsized_blobs: u64,
}
