//! Custom aliases and atomic releases: host validation, and alias changes committed as
//! one revision and swapped into the edge table as one.

use super::{Control, ControlError};
use crate::meta::{Actor, AliasOp, AliasTarget, MetaError};

/// Longest host name DNS allows.
const HOST_MAX: usize = 253;

/// Validates and normalises a host a caller wants as an alias: IDNA to its ASCII
/// (punycode) form, lowercase, no trailing dot; at least two labels; no wildcard, port,
/// IP address or characters DNS cannot carry.
pub fn normalize_alias_host(raw: &str) -> Result<String, String> {
    if raw.contains('*') {
        return Err("wildcard hosts are not supported; add each host".into());
    }
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    if trimmed.is_empty() || trimmed.contains([':', '/', '@', '[']) {
        return Err(format!(
            "{raw:?} is not a host name (no scheme, port or path)"
        ));
    }
    let ascii = idna::domain_to_ascii_strict(trimmed)
        .map_err(|_| format!("{raw:?} is not a valid internationalised host name"))?;
    if ascii.len() > HOST_MAX {
        return Err(format!("host names are at most {HOST_MAX} bytes"));
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(format!("{raw:?} needs a domain: at least two labels"));
    }
    for l in &labels {
        let ok = !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-');
        if !ok {
            return Err(format!("{raw:?}: label {l:?} is not a valid DNS label"));
        }
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "{raw:?} looks like an IP address; aliases are host names"
        ));
    }
    Ok(ascii)
}

impl Control {
    /// Applies alias changes as one revision and one table swap, if the table is still at
    /// `expected` (when given). Returns the new revision.
    pub async fn alias_ops(
        &self,
        ops: &[AliasOp],
        expected: Option<u64>,
        actor: &Actor,
        action: &str,
    ) -> Result<u64, ControlError> {
        let release = self.router.begin().await;
        let mut routed = Vec::new();
        for op in ops {
            match op {
                AliasOp::Point {
                    target: AliasTarget::Deployment(id),
                    ..
                } => routed.push(id.clone()),
                AliasOp::Point {
                    target: AliasTarget::Production(project),
                    ..
                } => {
                    if let Some(p) = self.meta.project(project).await?
                        && let Some(id) = p.production_deployment_id
                    {
                        routed.push(id);
                    }
                }
                AliasOp::Remove { .. } => {}
            }
        }
        release.preload(routed).await?;
        let change = self
            .meta
            .alias_ops(ops, expected, actor, action)
            .await
            .map_err(|e| match e {
                MetaError::InvalidState(message) => ControlError::Conflict {
                    code: "deployment_not_ready",
                    message,
                },
                e => e.into(),
            })?;
        let revision = change.revision;
        release.apply(change).await;
        tracing::info!(revision, by = %actor.id, action, changes = ops.len(), "aliases changed");
        Ok(revision)
    }

    /// The alias table's revision now (what `If-Match` compares with).
    pub fn revision(&self) -> u64 {
        self.router.revision()
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_alias_host as n;

    #[test]
    fn hosts_are_normalised_or_refused() {
        assert_eq!(n("WWW.Example.COM.").unwrap(), "www.example.com");
        assert_eq!(n("bücher.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(n("xn--bcher-kva.example").unwrap(), "xn--bcher-kva.example");
        for bad in [
            "*.example.com",
            "example",
            "exa mple.com",
            "example.com:8080",
            "http://example.com",
            "-a.example.com",
            "a_b.example.com",
            "127.0.0.1",
            "",
            ".",
            "a..b",
        ] {
            assert!(n(bad).is_err(), "{bad:?} accepted");
        }
        assert!(n(&format!("{}.com", "a".repeat(64))).is_err());
    }
}
