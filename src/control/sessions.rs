//! Dashboard sign-in: an API token is exchanged for a session whose row lives in the
//! database (every replica honours it); the session acts as its token, so the token's
//! scopes and project limits apply, and revoking or expiring the token ends it.

use std::sync::Arc;

use rand::RngCore;

use super::{Control, ControlError};
use crate::digest::Sha256;
use crate::meta::Token;
use crate::model::now_millis;
use crate::model::session::{BlobStats, LINK_TTL_MILLIS, SESSION_TTL_MILLIS, Session};

/// A session just opened: the cookie's secret (shown to the browser once) and its row.
pub struct SignedIn {
    /// The cookie value.
    pub secret: String,
    /// What it stands for.
    pub session: Session,
    /// The token it acts as.
    pub token: Arc<Token>,
}

fn random_hex() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

impl Control {
    /// Opens a session for the API token `token_secret`; `None` when the token is unknown,
    /// revoked or expired. A session never outlives its token's expiry.
    pub async fn sign_in(&self, token_secret: &str) -> Result<Option<SignedIn>, ControlError> {
        self.open_session(Sha256::of(token_secret.as_bytes())).await
    }

    async fn open_session(&self, token_hash: Sha256) -> Result<Option<SignedIn>, ControlError> {
        let Some(token) = self.authenticate_hash(token_hash).await? else {
            return Ok(None);
        };
        let secret = random_hex();
        let now = now_millis();
        let expires_at = token.expires_at.map_or(now + SESSION_TTL_MILLIS, |t| {
            t.min(now + SESSION_TTL_MILLIS)
        });
        let session = Session {
            id_hash: Sha256::of(secret.as_bytes()),
            token_hash,
            csrf: random_hex(),
            created_at: now,
            expires_at,
            link: false,
        };
        self.meta.create_session(&session).await?;
        Ok(Some(SignedIn {
            secret,
            session,
            token,
        }))
    }

    /// A one-time sign-in link's secret for the token `token_secret` (what `halo serve`
    /// prints for the admin on first start): redeemable once, within [`LINK_TTL_MILLIS`].
    pub async fn sign_in_link(&self, token_secret: &str) -> Result<String, ControlError> {
        let secret = random_hex();
        let now = now_millis();
        self.meta
            .create_session(&Session {
                id_hash: Sha256::of(secret.as_bytes()),
                token_hash: Sha256::of(token_secret.as_bytes()),
                csrf: String::new(),
                created_at: now,
                expires_at: now + LINK_TTL_MILLIS,
                link: true,
            })
            .await?;
        Ok(secret)
    }

    /// Redeems a sign-in link: a session for its token, once; `None` for a link unknown,
    /// used, expired, or whose token is gone.
    pub async fn redeem_link(&self, link: &str) -> Result<Option<SignedIn>, ControlError> {
        let id = Sha256::of(link.as_bytes());
        let Some(row) = self.meta.session(&id).await?.filter(|s| s.link) else {
            return Ok(None);
        };
        // Whoever removes the row redeems it; a second asker finds nothing to remove.
        if !self.meta.delete_session(&id).await? || row.expires_at <= now_millis() {
            return Ok(None);
        }
        self.open_session(row.token_hash).await
    }

    /// The live session whose cookie is `secret`, with the token it acts as. An expired
    /// session, or one whose token is gone, is removed and `None`.
    pub async fn session(
        &self,
        secret: &str,
    ) -> Result<Option<(Session, Arc<Token>)>, ControlError> {
        let id = Sha256::of(secret.as_bytes());
        // A sign-in link is not a session: it is redeemed, never presented.
        let Some(session) = self.meta.session(&id).await?.filter(|s| !s.link) else {
            return Ok(None);
        };
        let token = if session.expires_at > now_millis() {
            self.authenticate_hash(session.token_hash).await?
        } else {
            None
        };
        match token {
            Some(t) => Ok(Some((session, t))),
            None => {
                self.meta.delete_session(&id).await?;
                Ok(None)
            }
        }
    }

    /// Ends the session whose cookie is `secret`.
    pub async fn sign_out(&self, secret: &str) -> Result<(), ControlError> {
        self.meta
            .delete_session(&Sha256::of(secret.as_bytes()))
            .await?;
        Ok(())
    }

    /// What the blob index holds.
    pub async fn blob_stats(&self) -> Result<BlobStats, ControlError> {
        Ok(self.meta.blob_stats().await?)
    }
}
