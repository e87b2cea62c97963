//! Routing snapshots: the whole alias table (host → deployment → manifest) at one revision,
//! as the control plane publishes it to the store and streams it to edge nodes, plus the
//! small pointer object that names the newest snapshot.

use serde::{Deserialize, Serialize};

use crate::digest::Sha256;

/// Format tag and version of snapshots and pointers.
pub const SNAPSHOT_FORMAT: &str = "halo.routes";
/// Format tag of the pointer object.
pub const POINTER_FORMAT: &str = "halo.routes-pointer";
/// Current version of both.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Key of the pointer object in the store.
pub const POINTER_KEY: &str = "routes/latest.json";

/// One routable host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRoute {
    /// Normalised host.
    pub host: String,
    /// The ready deployment it serves.
    pub deployment_id: String,
    /// The deployment's version manifest (a blob).
    pub manifest: Sha256,
}

/// The alias table at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSnapshot {
    /// Always [`SNAPSHOT_FORMAT`].
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Alias-table revision.
    pub revision: u64,
    /// Every route, sorted by host.
    pub routes: Vec<SnapshotRoute>,
    /// Skew protection: the fallbacks of production deployments (absent when none, so
    /// snapshots without skew read as before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skew: Vec<SnapshotSkew>,
    /// Protected previews: the protection of every project that has one on (absent when
    /// none). Hashes only: an argon2id password hash, a SHA-256 of the bypass token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<SnapshotAccess>,
    /// Expired preview hosts, answering 410 Gone (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<String>,
}

/// One project's protection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotAccess {
    /// The project.
    pub project_id: String,
    /// Its protection.
    pub protection: crate::model::protection::Protection,
}

/// The former production deployments a production deployment falls back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSkew {
    /// The production deployment.
    pub deployment_id: String,
    /// Its fallbacks, newest first.
    pub fallbacks: Vec<SnapshotFallback>,
}

/// One fallback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFallback {
    /// The former production deployment.
    pub deployment_id: String,
    /// Its version manifest.
    pub manifest: Sha256,
    /// Milliseconds since the epoch when it stops being fallen back to.
    pub until: crate::model::Millis,
}

/// Names the newest snapshot and its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPointer {
    /// Always [`POINTER_FORMAT`].
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Revision of the snapshot it names.
    pub revision: u64,
    /// The snapshot's key in the store.
    pub key: String,
    /// SHA-256 of the snapshot's bytes.
    pub sha256: Sha256,
}

/// Why snapshot bytes cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not the expected JSON.
    #[error("malformed routing snapshot: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Another format or a newer version.
    #[error("unsupported routing snapshot format {0:?} version {1}")]
    Unsupported(String, u32),
    /// The bytes do not match the pointer's checksum.
    #[error("routing snapshot {key} does not match its checksum")]
    Checksum {
        /// The snapshot's key.
        key: String,
    },
}

impl RouteSnapshot {
    /// A snapshot of `routes` (sorted here) at `revision`.
    pub fn new(revision: u64, mut routes: Vec<SnapshotRoute>) -> Self {
        routes.sort_by(|a, b| a.host.cmp(&b.host));
        RouteSnapshot {
            format: SNAPSHOT_FORMAT.into(),
            version: SNAPSHOT_VERSION,
            revision,
            routes,
            skew: Vec::new(),
            access: Vec::new(),
            gone: Vec::new(),
        }
    }

    /// The key the snapshot of `revision` is stored under (zero-padded so keys sort).
    pub fn key(revision: u64) -> String {
        format!("routes/snapshots/{revision:020}.json")
    }

    /// Serialised bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a snapshot always serialises")
    }

    /// Parses bytes, refusing unknown formats and versions.
    pub fn from_bytes(data: &[u8]) -> Result<Self, SnapshotError> {
        let s: RouteSnapshot = serde_json::from_slice(data)?;
        if s.format != SNAPSHOT_FORMAT || s.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Unsupported(s.format, s.version));
        }
        Ok(s)
    }

    /// The pointer naming this snapshot, whose bytes are `bytes`.
    pub fn pointer(&self, bytes: &[u8]) -> SnapshotPointer {
        SnapshotPointer {
            format: POINTER_FORMAT.into(),
            version: SNAPSHOT_VERSION,
            revision: self.revision,
            key: Self::key(self.revision),
            sha256: Sha256::of(bytes),
        }
    }
}

impl SnapshotPointer {
    /// Parses pointer bytes.
    pub fn from_bytes(data: &[u8]) -> Result<Self, SnapshotError> {
        let p: SnapshotPointer = serde_json::from_slice(data)?;
        if p.format != POINTER_FORMAT || p.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Unsupported(p.format, p.version));
        }
        Ok(p)
    }

    /// Parses the snapshot the pointer names, checking its checksum first.
    pub fn open(&self, data: &[u8]) -> Result<RouteSnapshot, SnapshotError> {
        if Sha256::of(data) != self.sha256 {
            return Err(SnapshotError::Checksum {
                key: self.key.clone(),
            });
        }
        RouteSnapshot::from_bytes(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_are_checked() {
        let s = RouteSnapshot::new(
            7,
            vec![
                SnapshotRoute {
                    host: "b.x".into(),
                    deployment_id: "dpl_b".into(),
                    manifest: Sha256::of(b"b"),
                },
                SnapshotRoute {
                    host: "a.x".into(),
                    deployment_id: "dpl_a".into(),
                    manifest: Sha256::of(b"a"),
                },
            ],
        );
        assert_eq!(s.routes[0].host, "a.x");
        let bytes = s.to_bytes();
        let p = s.pointer(&bytes);
        assert_eq!(p.key, "routes/snapshots/00000000000000000007.json");
        let p = SnapshotPointer::from_bytes(&serde_json::to_vec(&p).unwrap()).unwrap();
        assert_eq!(p.open(&bytes).unwrap(), s);
        let mut bad = bytes.clone();
        bad[10] ^= 1;
        assert!(matches!(p.open(&bad), Err(SnapshotError::Checksum { .. })));
        let newer = String::from_utf8(bytes)
            .unwrap()
            .replace("\"version\":1", "\"version\":9");
        assert!(matches!(
            RouteSnapshot::from_bytes(newer.as_bytes()),
            Err(SnapshotError::Unsupported(_, 9))
        ));
    }
}
