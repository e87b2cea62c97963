//! What the API reads as it is stored: listings, histories and look-ups that need no rule
//! of the control plane's, passed through with the metadata's errors typed for the API.

use super::{Control, ControlError};
use crate::digest::Sha256;
use crate::meta::{
    Alias, DeploymentFilter, DeploymentPage, HistoryEntry, HistoryFilter, Progress, Project,
    ProjectFilter, StoredResponse,
};
use crate::model::Millis;

impl Control {
    /// Projects matching a filter.
    pub async fn projects(&self, filter: &ProjectFilter) -> Result<Vec<Project>, ControlError> {
        Ok(self.meta.projects(filter).await?)
    }

    /// One page of deployments.
    pub async fn deployments(
        &self,
        filter: &DeploymentFilter,
    ) -> Result<DeploymentPage, ControlError> {
        Ok(self.meta.deployments(filter).await?)
    }

    /// The blobs a deployment still waits for.
    pub async fn deployment_missing(&self, id: &str) -> Result<Vec<Sha256>, ControlError> {
        Ok(self.meta.deployment_missing(id).await?)
    }

    /// The sizes the blob index knows of `blobs` (a blob without one is left out).
    pub async fn blob_sizes(
        &self,
        blobs: &[Sha256],
    ) -> Result<std::collections::HashMap<Sha256, u64>, ControlError> {
        let known = self.meta.known_blobs(blobs).await?;
        Ok(known
            .into_iter()
            .filter_map(|(b, size)| Some((b, size?)))
            .collect())
    }

    /// A deployment's upload and build progress.
    pub async fn progress(&self, id: &str) -> Result<Progress, ControlError> {
        Ok(self.meta.progress(id).await?)
    }

    /// A project's production deployments, newest first (deployment id, when promoted).
    pub async fn promotions(
        &self,
        project_id: &str,
        limit: u32,
    ) -> Result<Vec<(String, Millis)>, ControlError> {
        Ok(self.meta.promotions(project_id, limit).await?)
    }

    /// The alias of a host.
    pub async fn alias(&self, host: &str) -> Result<Option<Alias>, ControlError> {
        Ok(self.meta.alias(host).await?)
    }

    /// One page of aliases, optionally of one project or of a token's projects.
    pub async fn aliases(
        &self,
        project_id: Option<&str>,
        project_ids: Option<&[String]>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Alias>, ControlError> {
        Ok(self
            .meta
            .aliases(project_id, project_ids, after, limit)
            .await?)
    }

    /// One page of alias history, with the cursor of the next.
    pub async fn alias_history(
        &self,
        filter: &HistoryFilter,
    ) -> Result<(Vec<HistoryEntry>, Option<i64>), ControlError> {
        Ok(self.meta.alias_history(filter).await?)
    }

    /// The response stored under a token's idempotency key, if recorded since `since`.
    pub async fn idempotent_response(
        &self,
        token_id: &str,
        key: &str,
        since: Millis,
    ) -> Result<Option<StoredResponse>, ControlError> {
        Ok(self.meta.idempotent_response(token_id, key, since).await?)
    }

    /// Stores the response to an idempotency key (for effects with no transaction of
    /// their own); keys older than `expire_before` go.
    pub async fn store_idempotent_response(
        &self,
        token_id: &str,
        key: &str,
        response: &StoredResponse,
        expire_before: Millis,
    ) -> Result<(), ControlError> {
        Ok(self
            .meta
            .store_idempotent_response(token_id, key, response, expire_before)
            .await?)
    }
}
