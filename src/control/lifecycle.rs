//! Changing projects and deployments after creation: attribution, metadata, settings and
//! retention; cancel; delete.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Control, ControlError};
use crate::meta::{Actor, Deployment, MetaError, Project, ProjectUpdate, Retention};
use crate::model::Status;
use crate::model::owner::{self, Attribution, AttributionPatch, Metadata};
use crate::model::settings::{SettingsPatch, SiteSettings};

/// A `PATCH /v1/projects/{id}` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectPatch {
    /// URL conventions to change.
    #[serde(default)]
    pub settings: Option<SettingsPatch>,
    /// Attribution fields to set or clear (top-level in the body; the API splits them off,
    /// as serde cannot both flatten and deny unknown fields).
    #[serde(skip)]
    pub attribution: AttributionPatch,
    /// Metadata keys to set, or remove with `null`.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, Option<String>>>,
    /// A new retention policy, or `null` for none.
    #[serde(default, deserialize_with = "owner::patch_field")]
    pub retention: Option<Option<Retention>>,
    /// Protected previews (applied by [`Control::protect`]).
    #[serde(default)]
    pub protection: Option<crate::model::protection::ProtectionPatch>,
}

/// A `PATCH /v1/deployments/{id}` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentPatch {
    /// Attribution fields to set or clear (top-level in the body; the API splits them off,
    /// as serde cannot both flatten and deny unknown fields).
    #[serde(skip)]
    pub attribution: AttributionPatch,
    /// Metadata keys to set, or remove with `null`.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, Option<String>>>,
    /// Keep it whatever retention and preview expiry say.
    #[serde(default)]
    pub pinned: Option<bool>,
}

/// Checks attribution and metadata against their limits.
/// Refuses settings no deployment could be built with.
pub(super) fn validate_settings(s: &SiteSettings) -> Result<(), ControlError> {
    s.validate().map_err(|message| ControlError::Invalid {
        code: "invalid_settings",
        message,
    })
}

pub(super) fn validate_owner(a: &Attribution, m: &Metadata) -> Result<(), ControlError> {
    a.validate()
        .and_then(|()| owner::validate_metadata(m))
        .map_err(|message| ControlError::Invalid {
            code: "invalid_field",
            message,
        })
}

fn refused(e: MetaError) -> ControlError {
    match e {
        MetaError::NotFound(what) => ControlError::NotFound(what),
        e => e.into(),
    }
}

impl Control {
    /// Applies a patch to a project's mutable fields.
    pub async fn update_project(
        &self,
        id: &str,
        patch: &ProjectPatch,
    ) -> Result<Project, ControlError> {
        let p = self.project(id).await?;
        let update = ProjectUpdate {
            settings: match &patch.settings {
                Some(s) => p.settings.patched(s),
                None => p.settings.clone(),
            },
            attribution: patch.attribution.apply(&p.attribution),
            metadata: match &patch.metadata {
                Some(m) => owner::patch_metadata(&p.metadata, m),
                None => p.metadata.clone(),
            },
            retention: match patch.retention {
                Some(r) => r.unwrap_or_default(),
                None => p.retention,
            },
        };
        validate_owner(&update.attribution, &update.metadata)?;
        validate_settings(&update.settings)?;
        if update.retention.preview_ttl_secs == Some(0) {
            return Err(ControlError::Invalid {
                code: "invalid_field",
                message: "retention.preview_ttl_secs must be at least 1".into(),
            });
        }
        if update.retention.keep_last == Some(0) {
            return Err(ControlError::Invalid {
                code: "invalid_field",
                message: "retention.keep_last must be at least 1".into(),
            });
        }
        Ok(self.meta.update_project(&p.id, &update).await?)
    }

    /// Applies a patch to a deployment's attribution, metadata and pin.
    pub async fn update_deployment(
        &self,
        id: &str,
        patch: &DeploymentPatch,
    ) -> Result<Deployment, ControlError> {
        let d = self.deployment(id).await?;
        let attribution = patch.attribution.apply(&d.attribution);
        let metadata = match &patch.metadata {
            Some(m) => owner::patch_metadata(&d.metadata, m),
            None => d.metadata.clone(),
        };
        validate_owner(&attribution, &metadata)?;
        Ok(self
            .meta
            .update_deployment(
                &d.id,
                &attribution,
                &metadata,
                patch.pinned.unwrap_or(d.pinned),
            )
            .await?)
    }

    /// Stops a queued or building deployment for good.
    pub async fn cancel(&self, id: &str, actor: &Actor) -> Result<Deployment, ControlError> {
        let d = self.meta.cancel_deployment(id).await.map_err(refused)?;
        tracing::info!(deployment = %id, by = %actor.id, "canceled");
        self.status_event(id, Status::Canceled, &format!("canceled by {}", actor.name))
            .await;
        Ok(d)
    }

    /// Deletes a deployment: unroutes every host serving it in one table swap.
    pub async fn delete_deployment(
        &self,
        id: &str,
        actor: &Actor,
    ) -> Result<Deployment, ControlError> {
        let was = self.deployment(id).await?;
        {
            let release = self.router.begin().await;
            let change = self
                .meta
                .delete_deployment(id, actor)
                .await
                .map_err(refused)?;
            release.apply(change).await;
        }
        if was.status != Status::Deleted {
            tracing::info!(deployment = %id, by = %actor.id, "deleted");
            self.status_event(id, Status::Deleted, &format!("deleted by {}", actor.name))
                .await;
        }
        self.router.forget(id);
        self.deployment(id).await
    }
}
