//! Deployment attribution from the tree's git checkout: branch, commit and author become
//! the deployment's `git_branch`, `git_commit` and `git_author` metadata (what the
//! dashboard shows beside each deployment), as the hosted platforms do for git deploys.

use std::path::Path;
use std::process::Command;

use serde_json::{Map, Value, json};

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.chars().take(500).collect())
}

/// The metadata of a deploy of `dir`: what git says (nothing outside a checkout, or
/// without git), then `extra` (`--meta K=V`) over it.
pub fn metadata(dir: &Path, extra: &[(String, String)]) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(commit) = git(dir, &["rev-parse", "HEAD"]) {
        m.insert("git_commit".into(), json!(commit));
        if let Some(branch) =
            git(dir, &["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD")
        {
            m.insert("git_branch".into(), json!(branch));
        }
        if let Some(author) = git(dir, &["log", "-1", "--format=%an"]) {
            m.insert("git_author".into(), json!(author));
        }
    }
    for (k, v) in extra {
        m.insert(k.clone(), json!(v));
    }
    m
}
