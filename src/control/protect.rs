//! Protected previews on the control plane: a project's protection changed by a patch
//! (rules here, hashing off the async threads), committed as a routing-table change so
//! every edge and replica enforces it with the table it serves.

use rand::RngCore;

use super::{Control, ControlError};
use crate::digest::Sha256;
use crate::meta::{Actor, Project};
use crate::model::protection::{
    self, Mode, PASSWORD_MAX, PASSWORD_MIN, Protection, ProtectionPatch,
};

fn invalid(message: impl Into<String>) -> ControlError {
    ControlError::Invalid {
        code: "invalid_protection",
        message: message.into(),
    }
}

/// argon2id with the crate's default parameters (19 MiB, 2 passes), a fresh salt.
fn hash_password(password: &str) -> Result<String, ControlError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    let salt = SaltString::encode_b64(&raw)
        .map_err(|e| ControlError::Internal(format!("password salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ControlError::Internal(format!("password hashing failed: {e}")))
}

/// `p` with `patch` applied, and the bypass token if one was issued. Pure but for the
/// randomness of the token and the password's salt.
fn patched(
    p: &Protection,
    patch: &ProtectionPatch,
) -> Result<(Protection, Option<String>), ControlError> {
    let mut next = p.clone();
    if let Some(mode) = patch.mode {
        next.mode = mode;
    }
    if let Some(production) = patch.production {
        next.production = production;
    }
    if let Some(s) = patch.session_secs {
        if !protection::SESSION_RANGE.contains(&s) {
            return Err(invalid(format!(
                "protection.session_secs must be between {} and {}",
                protection::SESSION_RANGE.start(),
                protection::SESSION_RANGE.end()
            )));
        }
        next.session_secs = s;
    }
    if let Some(pw) = &patch.password {
        let n = pw.chars().count();
        if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
            return Err(invalid(format!(
                "protection.password must have {PASSWORD_MIN} to {PASSWORD_MAX} characters"
            )));
        }
        next.password_hash = Some(hash_password(pw)?);
    }
    if next.mode == Mode::None {
        // Off: no secret outlives it; turning it on again starts afresh.
        next.password_hash = None;
        next.bypass_hash = None;
        if patch.password.is_some() || patch.rotate_bypass {
            return Err(invalid(
                "protection.mode is none: a password or bypass token has nothing to protect",
            ));
        }
    }
    if next.mode == Mode::Password && next.password_hash.is_none() {
        return Err(invalid(
            "protection.password is required to turn password protection on",
        ));
    }
    let mut token = None;
    if patch.rotate_bypass || (next.mode == Mode::Token && next.bypass_hash.is_none()) {
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        let t = format!("hbp_{}", hex::encode(raw));
        next.bypass_hash = Some(Sha256::of(t.as_bytes()));
        token = Some(t);
    }
    if next != *p {
        // Every cookie issued under the old policy stops working.
        next.epoch = p.epoch + 1;
    }
    Ok((next, token))
}

impl Control {
    /// Changes a project's protection; returns the project and, when one was issued, the
    /// bypass token (shown this once). Committed as a routing change: served by this
    /// table, then by every edge following it.
    pub async fn protect(
        &self,
        id: &str,
        patch: &ProtectionPatch,
        actor: &Actor,
    ) -> Result<(Project, Option<String>), ControlError> {
        let p = self.project(id).await?;
        let (current, patch) = (p.protection.clone(), patch.clone());
        let (next, token) = tokio::task::spawn_blocking(move || patched(&current, &patch))
            .await
            .map_err(|e| ControlError::Internal(format!("password hashing failed: {e}")))??;
        if next == p.protection {
            return Ok((p, token));
        }
        let release = self.router.begin().await;
        let change = self.meta.set_protection(id, &next, actor).await?;
        release.apply(change).await;
        drop(release);
        Ok((self.project(id).await?, token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: &str) -> ProtectionPatch {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn rules_of_a_protection_change() {
        let off = Protection::default();
        // Password mode needs a password, of a sane length.
        assert!(patched(&off, &patch(r#"{"mode":"password"}"#)).is_err());
        assert!(patched(&off, &patch(r#"{"mode":"password","password":"short"}"#)).is_err());
        let (on, token) = patched(
            &off,
            &patch(r#"{"mode":"password","password":"correct horse"}"#),
        )
        .unwrap();
        assert!(token.is_none() && on.epoch == 1);
        assert!(
            on.password_hash
                .as_deref()
                .unwrap()
                .starts_with("$argon2id$")
        );
        // Token mode issues a bypass token once, and a rotation a new one.
        let (tok, t1) = patched(&on, &patch(r#"{"mode":"token"}"#)).unwrap();
        let t1 = t1.unwrap();
        assert_eq!(tok.bypass_hash, Some(Sha256::of(t1.as_bytes())));
        assert!(
            patched(&tok, &patch(r#"{"mode":"token"}"#))
                .unwrap()
                .1
                .is_none()
        );
        let (rot, t2) = patched(&tok, &patch(r#"{"rotate_bypass":true}"#)).unwrap();
        assert_ne!(t2.unwrap(), t1);
        assert!(rot.epoch > tok.epoch);
        // Off drops every secret; secrets for nothing are refused.
        let (none, _) = patched(&rot, &patch(r#"{"mode":"none"}"#)).unwrap();
        assert!(none.password_hash.is_none() && none.bypass_hash.is_none());
        assert!(patched(&none, &patch(r#"{"rotate_bypass":true}"#)).is_err());
        assert!(patched(&off, &patch(r#"{"session_secs":0}"#)).is_err());
        // No change, no new epoch.
        assert_eq!(patched(&on, &patch("{}")).unwrap().0, on);
    }
}
