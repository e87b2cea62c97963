//! What changed between two deployments' file lists: added, changed and removed paths, in
//! path order (the dashboard's promote confirmation, `halo diff`).

use std::collections::HashMap;

use serde::Serialize;

use crate::digest::Sha256;

/// How one path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the newer.
    Added,
    /// In both, other bytes.
    Changed,
    /// Only in the older.
    Removed,
}

/// One differing path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathChange {
    /// The path.
    pub path: String,
    /// How it differs.
    pub change: Change,
    /// Its content in the newer deployment (absent when removed).
    pub sha256: Option<Sha256>,
    /// Its content in the older deployment (absent when added).
    pub previous: Option<Sha256>,
}

/// Every difference from `from` to `to`, in path order, and how many paths are the same.
pub fn diff(from: Vec<(String, Sha256)>, to: Vec<(String, Sha256)>) -> (Vec<PathChange>, u64) {
    let mut old: HashMap<String, Sha256> = from.into_iter().collect();
    let mut out = Vec::new();
    let mut same = 0;
    for (path, sha) in to {
        match old.remove(&path) {
            Some(prev) if prev == sha => same += 1,
            prev => out.push(PathChange {
                change: if prev.is_some() {
                    Change::Changed
                } else {
                    Change::Added
                },
                path,
                sha256: Some(sha),
                previous: prev,
            }),
        }
    }
    out.extend(old.into_iter().map(|(path, prev)| PathChange {
        path,
        change: Change::Removed,
        sha256: None,
        previous: Some(prev),
    }));
    out.sort_by(|a, b| a.path.cmp(&b.path));
    (out, same)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_changed_removed_in_path_order() {
        let h = |b: &[u8]| Sha256::of(b);
        let from = vec![
            ("a.html".into(), h(b"1")),
            ("b.css".into(), h(b"2")),
            ("z.js".into(), h(b"3")),
        ];
        let to = vec![
            ("b.css".into(), h(b"2*")),
            ("a.html".into(), h(b"1")),
            ("c.png".into(), h(b"4")),
        ];
        let (changes, same) = diff(from, to);
        let got: Vec<(&str, Change)> = changes
            .iter()
            .map(|c| (c.path.as_str(), c.change))
            .collect();
        assert_eq!(
            got,
            [
                ("b.css", Change::Changed),
                ("c.png", Change::Added),
                ("z.js", Change::Removed)
            ]
        );
        assert_eq!(same, 1);
        assert_eq!(changes[0].previous, Some(h(b"2")));
        assert_eq!(changes[0].sha256, Some(h(b"2*")));
    }
}
