//! API tokens: minted with scopes, optional project limits and expiry; the secret is shown
//! once and only its SHA-256 is stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use rand::RngCore;

use super::{Control, ControlError};
use crate::digest::Sha256;
use crate::meta::Token;
use crate::model::token::Scope;
use crate::model::{Millis, names, now_millis};

/// What a caller asks for when minting a token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// What it is for.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Limit to these projects.
    pub project_ids: Option<Vec<String>>,
    /// When it stops working.
    pub expires_at: Option<Millis>,
}

/// How long an authenticated token is trusted without reading it again: the bound on how
/// late a revocation through another replica takes effect here (documented in
/// `docs/api.md`).
pub const TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Tokens already authenticated, by secret hash (see [`Control::authenticate`]).
#[derive(Default)]
pub(super) struct TokenCache {
    entries: DashMap<Sha256, (Arc<Token>, std::time::Instant)>,
    /// Bumped by every revocation.
    epoch: AtomicU64,
}

fn invalid(message: impl Into<String>) -> ControlError {
    ControlError::Invalid {
        code: "invalid_field",
        message: message.into(),
    }
}

impl Control {
    /// The live token whose secret this is: unknown, revoked and expired secrets are `None`.
    ///
    /// PERF: known tokens are cached in memory, so a burst of uploads does not queue every
    /// request behind the metadata store's commits. Only this process changes tokens, and
    /// revocation drops the cache entry, so a revoked token still fails on its next request;
    /// unknown secrets are not cached, so guessing cannot fill memory.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Arc<Token>>, ControlError> {
        self.authenticate_hash(Sha256::of(secret.as_bytes())).await
    }

    /// [`Control::authenticate`] by the secret's hash (a dashboard session holds only that).
    pub(super) async fn authenticate_hash(
        &self,
        hash: Sha256,
    ) -> Result<Option<Arc<Token>>, ControlError> {
        // A cached token is trusted for [`TOKEN_TTL`]: a revocation made through another
        // replica (which cannot clear this cache) takes effect here within that bound.
        let cache = &self.tokens;
        let cached = cache
            .entries
            .get(&hash)
            .filter(|e| e.1.elapsed() < TOKEN_TTL)
            .map(|e| e.0.clone());
        let token = match cached {
            Some(t) => Some(t),
            None => {
                let epoch = cache.epoch.load(Ordering::SeqCst);
                match self.meta.token_by_secret(&hash).await? {
                    Some(t) => {
                        let t = Arc::new(t);
                        cache
                            .entries
                            .insert(hash, (t.clone(), std::time::Instant::now()));
                        // A revocation that committed after our read bumped the epoch:
                        // take back what we cached (it may be the revoked token).
                        if cache.epoch.load(Ordering::SeqCst) != epoch {
                            cache.entries.remove(&hash);
                        }
                        Some(t)
                    }
                    None => None,
                }
            }
        };
        Ok(token.filter(|t| t.expires_at.is_none_or(|at| at > now_millis())))
    }

    /// Mints a token; returns it with its secret, which is never shown again.
    pub async fn create_token(
        &self,
        req: TokenRequest,
        creator: &Token,
    ) -> Result<(Token, String), ControlError> {
        let name = req.name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(invalid("name must be 1 to 100 printable characters"));
        }
        let mut scopes = req.scopes;
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Err(invalid("scopes must name at least one scope"));
        }
        if let Some(ids) = &req.project_ids {
            if scopes.contains(&Scope::Admin) {
                return Err(invalid("an admin token cannot be limited to projects"));
            }
            if ids.is_empty() || ids.len() > 100 {
                return Err(invalid("project_ids must list 1 to 100 projects"));
            }
            for id in ids {
                if self.meta.project(id).await?.is_none() {
                    return Err(invalid(format!("project_ids: no project {id}")));
                }
            }
        }
        if req.expires_at.is_some_and(|at| at <= now_millis()) {
            return Err(invalid("expires_at must be in the future"));
        }
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        let secret = format!("halo_{}", hex::encode(raw));
        let token = Token {
            id: names::random_id("tok"),
            name: name.to_owned(),
            scopes,
            project_ids: req.project_ids,
            expires_at: req.expires_at,
            created_at: now_millis(),
            created_by: Some(creator.id.clone()),
        };
        self.meta
            .create_token(&token, &Sha256::of(secret.as_bytes()))
            .await?;
        tracing::info!(token = %token.id, by = %creator.id, "token created");
        Ok((token, secret))
    }

    /// Every token (never their secrets).
    pub async fn tokens(&self) -> Result<Vec<Token>, ControlError> {
        Ok(self.meta.tokens().await?)
    }

    /// Revokes a token: the next request made with it is refused.
    pub async fn revoke_token(&self, id: &str) -> Result<(), ControlError> {
        let deleted = self.meta.delete_token(id).await?;
        // After the delete commits: bump the epoch, then drop cached copies, so no lookup
        // that read the token before the commit can leave it cached (see `authenticate`).
        self.tokens.epoch.fetch_add(1, Ordering::SeqCst);
        self.tokens.entries.retain(|_, t| t.0.id != id);
        if deleted {
            tracing::info!(token = %id, "token revoked");
            Ok(())
        } else {
            Err(ControlError::NotFound(format!("token {id}")))
        }
    }
}
