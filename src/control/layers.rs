//! Layered deployments: a delta deploy is recorded as its changes over a full base
//! deployment (rows, manifest and loaded site alike), so its cost follows the change, not
//! the site. A delta of a delta is layered over the same full base; past half the base's
//! size the layers are folded into a full deployment.

use std::collections::BTreeMap;

use super::{Control, ControlError};
use crate::digest::Sha256;
use crate::model::Status;

/// What a new deployment records: its file rows, over a base or not (not to be confused
/// with `site::Files`, a built version's files as the edge reads them).
#[derive(Debug, Default)]
pub(super) struct Rows {
    /// path → blob: every file, or with `base` the changed ones.
    pub files: BTreeMap<String, Sha256>,
    /// The full deployment the rows are layered over.
    pub base: Option<String>,
    /// With `base`: its paths left out.
    pub removed: Vec<String>,
    /// Files of the version, layers resolved.
    pub count: u64,
}

impl Rows {
    /// A full deployment of `files`.
    pub fn full(files: BTreeMap<String, Sha256>) -> Self {
        Rows {
            count: files.len() as u64,
            files,
            ..Rows::default()
        }
    }
}

/// Over this many changed paths, a layer is folded into a full deployment when it
/// reaches half of its base (a small site gains nothing from layers).
const FOLD_MIN: usize = 256;

impl Control {
    /// The files of a deployment based on `base` (of project `project_id`, not deleted) with
    /// `removed` left out and `changed` over them: layered over `base`'s full deployment
    /// when that is built and the change is small beside it, else whole.
    pub(super) async fn delta_over(
        &self,
        base: &str,
        project_id: &str,
        changed: BTreeMap<String, Sha256>,
        removed: &[String],
    ) -> Result<Rows, ControlError> {
        let refused = |why: &str| ControlError::Invalid {
            code: "base_not_found",
            message: format!("base deployment {base} {why}"),
        };
        let d = match self.meta.deployment(base).await? {
            Some(d) if d.project_id == project_id => d,
            _ => return Err(refused("does not exist in this project")),
        };
        if d.status == Status::Deleted {
            // Its blobs may already be collected.
            return Err(refused("is deleted"));
        }
        // The full deployment at the bottom, and the layer `base` already has over it.
        let (root, mut layer) = match &d.base_id {
            Some(root) => (root.clone(), self.meta.deployment_files(base).await?),
            None if d.status == Status::Ready => (d.id.clone(), Vec::new()),
            // Not built yet: no site to layer over, so the rows are copied.
            None => return self.folded(&d.id, Vec::new(), changed, removed).await,
        };
        layer.extend(removed.iter().map(|p| (p.clone(), None)));
        layer.extend(changed.into_iter().map(|(p, h)| (p, Some(h))));
        let layer: BTreeMap<String, Option<Sha256>> = layer.into_iter().collect();
        let site = self.router.site(&root).await?;
        if layer.len() > FOLD_MIN && layer.len() > site.len() / 2 {
            return self
                .folded(&root, layer.into_iter().collect(), BTreeMap::new(), &[])
                .await;
        }
        let mut out = Rows {
            base: Some(root),
            count: site.len() as u64,
            ..Rows::default()
        };
        for (path, digest) in layer {
            let under = site.entry(&path).map(|(d, _)| d);
            match (digest, under) {
                // Unchanged over the base, or removing what it lacks: no row.
                (Some(d), Some(u)) if d == u => {}
                (None, None) => {}
                (Some(d), under) => {
                    out.count += u64::from(under.is_none());
                    out.files.insert(path, d);
                }
                (None, Some(_)) => {
                    out.count -= 1;
                    out.removed.push(path);
                }
            }
        }
        Ok(out)
    }

    /// The whole file list of `root` with `layer`, then `removed` and `changed`, applied.
    async fn folded(
        &self,
        root: &str,
        layer: Vec<(String, Option<Sha256>)>,
        changed: BTreeMap<String, Sha256>,
        removed: &[String],
    ) -> Result<Rows, ControlError> {
        let mut files: BTreeMap<String, Sha256> =
            self.deployment_files(root).await?.into_iter().collect();
        apply(&mut files, layer);
        for path in removed {
            files.remove(path);
        }
        files.extend(changed);
        Ok(Rows::full(files))
    }

    /// A deployment's files (path → blob, sorted by path), its layers resolved.
    pub async fn deployment_files(&self, id: &str) -> Result<Vec<(String, Sha256)>, ControlError> {
        let d = self.deployment(id).await?;
        let own = self.meta.deployment_files(id).await?;
        let Some(base) = d.base_id else {
            return Ok(own.into_iter().filter_map(|(p, h)| Some((p, h?))).collect());
        };
        let mut files: BTreeMap<String, Sha256> = self
            .meta
            .deployment_files(&base)
            .await?
            .into_iter()
            .filter_map(|(p, h)| Some((p, h?)))
            .collect();
        apply(&mut files, own);
        Ok(files.into_iter().collect())
    }
}

/// Applies a layer's rows to a full file list: a blob replaces or adds, `None` removes.
fn apply(files: &mut BTreeMap<String, Sha256>, layer: Vec<(String, Option<Sha256>)>) {
    for (path, digest) in layer {
        match digest {
            Some(d) => files.insert(path, d),
            None => files.remove(&path),
        };
    }
}
