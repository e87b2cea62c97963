//! Blobs held in memory to be stored together — a batch upload's frames, an archive's small
//! files: a group is one durable write in the store and one metadata transaction, and its
//! size bounds the memory a batch or an archive takes whatever its length.

use std::sync::Arc;

use bytes::Bytes;

use super::{Control, ControlError};
use crate::digest::Sha256;
use crate::store::PutOutcome;

/// A group is stored once it holds this many bytes, or this many blobs.
const GROUP_BYTES: usize = 8 << 20;
const GROUP_BLOBS: usize = 512;

/// Blobs waiting to be stored together.
#[derive(Default)]
pub struct BlobGroup {
    blobs: Vec<(Sha256, Bytes)>,
    bytes: usize,
}

/// Each blob of a stored group with its outcome, in order.
pub type GroupOutcomes = Vec<(Sha256, Result<PutOutcome, ControlError>)>;

impl BlobGroup {
    /// Adds a blob (verified when the group is stored).
    pub fn push(&mut self, digest: Sha256, data: Bytes) {
        self.bytes += data.len();
        self.blobs.push((digest, data));
    }

    /// Whether the group should be stored now.
    pub fn is_full(&self) -> bool {
        self.bytes >= GROUP_BYTES || self.blobs.len() >= GROUP_BLOBS
    }

    /// Stores the group ([`Control::put_blobs`]) and empties it.
    pub async fn store(&mut self, control: &Arc<Control>) -> Result<GroupOutcomes, ControlError> {
        if self.blobs.is_empty() {
            return Ok(Vec::new());
        }
        self.bytes = 0;
        let blobs = std::mem::take(&mut self.blobs);
        let digests: Vec<Sha256> = blobs.iter().map(|(d, _)| *d).collect();
        let outcomes = control.put_blobs(blobs).await?;
        Ok(digests.into_iter().zip(outcomes).collect())
    }
}
