//! API token scopes: what a token may do, and which scopes imply which.

use serde::{Deserialize, Serialize};

/// One permission a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// List and read projects, their promotions and aliases.
    #[serde(rename = "projects:read")]
    ProjectsRead,
    /// Create and change projects.
    #[serde(rename = "projects:write")]
    ProjectsWrite,
    /// List and read deployments, their files, events and logs.
    #[serde(rename = "deployments:read")]
    DeploymentsRead,
    /// Create, change, promote, cancel and delete deployments.
    #[serde(rename = "deployments:write")]
    DeploymentsWrite,
    /// Upload blobs and ask which are missing.
    #[serde(rename = "files:write")]
    FilesWrite,
    /// Create, move and delete aliases; atomic releases.
    #[serde(rename = "aliases:write")]
    AliasesWrite,
    /// Everything, including tokens, routes and garbage collection.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// Every scope, in the order the API documents them.
    pub const ALL: [Scope; 7] = [
        Scope::ProjectsRead,
        Scope::ProjectsWrite,
        Scope::DeploymentsRead,
        Scope::DeploymentsWrite,
        Scope::FilesWrite,
        Scope::AliasesWrite,
        Scope::Admin,
    ];

    /// The wire form, e.g. `projects:read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ProjectsRead => "projects:read",
            Scope::ProjectsWrite => "projects:write",
            Scope::DeploymentsRead => "deployments:read",
            Scope::DeploymentsWrite => "deployments:write",
            Scope::FilesWrite => "files:write",
            Scope::AliasesWrite => "aliases:write",
            Scope::Admin => "admin",
        }
    }

    /// Whether holding `self` grants `needed`: `admin` grants everything, and a resource's
    /// `write` grants its `read` (a CI job that deploys may also watch its deployment).
    pub fn grants(self, needed: Scope) -> bool {
        self == needed
            || self == Scope::Admin
            || matches!(
                (self, needed),
                (Scope::ProjectsWrite, Scope::ProjectsRead)
                    | (Scope::DeploymentsWrite, Scope::DeploymentsRead)
            )
    }
}

/// Whether any of `held` grants `needed`.
pub fn granted(held: &[Scope], needed: Scope) -> bool {
    held.iter().any(|s| s.grants(needed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_grants_all_and_write_grants_read_only_for_its_resource() {
        for s in Scope::ALL {
            assert!(Scope::Admin.grants(s));
            assert!(s.grants(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<Scope>(&json).unwrap(), s);
        }
        assert!(Scope::ProjectsWrite.grants(Scope::ProjectsRead));
        assert!(!Scope::ProjectsRead.grants(Scope::ProjectsWrite));
        assert!(!Scope::DeploymentsWrite.grants(Scope::ProjectsRead));
        assert!(!Scope::AliasesWrite.grants(Scope::Admin));
        assert!(!granted(&[Scope::FilesWrite], Scope::DeploymentsRead));
    }
}
