//! S3 blob store on `aws-sdk-s3` (AWS, R2, MinIO, Ceph, Garage): checksummed PUTs, streamed
//! multipart uploads for large blobs, ranged GETs, and errors mapped to "unavailable".
//!
//! Key layout under the prefix: `blobs/sha256/ab/abcd…` (the first byte of the hash as a
//! shard, which spreads keys over S3's partitions). Version manifests are blobs like any
//! other, named by their own sha256.

use std::io;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{Blob, BlobBody, BlobStore, ByteStream, PutOutcome, StoreError};
use crate::digest::{Sha256, Sha256Hasher};

/// Blobs up to this size are read whole; larger ones stream.
const WHOLE_READ_MAX: u64 = 256 * 1024;
/// S3's smallest allowed multipart part (but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// Everything needed to reach a bucket. Credentials come from the environment or flags.
#[derive(Clone)]
pub struct S3Settings {
    /// `http://127.0.0.1:3900` for Garage, `None` for AWS's own endpoints.
    pub endpoint: Option<String>,
    /// Region name (`garage`, `us-east-1`, …).
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Key prefix, so several installations can share a bucket.
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most self-hosted servers need.
    pub force_path_style: bool,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Optional session token (temporary AWS credentials).
    pub session_token: Option<String>,
    /// Blobs larger than this go up as multipart uploads.
    pub multipart_threshold: u64,
    /// Size of each multipart part (at least 5 MiB).
    pub part_size: u64,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of one attempt of one S3 call.
    pub attempt_timeout: Duration,
    /// Attempts per call, retries with exponential backoff and jitter between them.
    pub max_attempts: u32,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SECURITY: never print the secret.
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("force_path_style", &self.force_path_style)
            .finish_non_exhaustive()
    }
}

/// A blob store in an S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    multipart_threshold: u64,
    part_size: u64,
}

fn unavailable<E, R>(op: &str, e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable(format!("S3 {op}: {}", DisplayErrorContext(&e)))
}

fn b64(digest: &Sha256) -> String {
    base64::engine::general_purpose::STANDARD.encode(digest.as_bytes())
}

impl S3Store {
    /// A store for `settings`; makes no request until used.
    pub fn new(settings: &S3Settings) -> Self {
        let creds = Credentials::new(
            settings.access_key_id.clone(),
            settings.secret_access_key.clone(),
            settings.session_token.clone(),
            None,
            "halo",
        );
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(creds)
            .force_path_style(settings.force_path_style)
            // We send our own SHA-256 on every PUT; no need for the SDK to add a CRC as well.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.connect_timeout)
                    .operation_attempt_timeout(settings.attempt_timeout)
                    .build(),
            );
        if let Some(ep) = &settings.endpoint {
            b = b.endpoint_url(ep.clone());
        }
        let mut prefix = settings.prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            prefix.push('/');
        }
        S3Store {
            client: Client::from_conf(b.build()),
            bucket: settings.bucket.clone(),
            prefix,
            multipart_threshold: settings.multipart_threshold.max(MIN_PART_SIZE),
            part_size: settings.part_size.max(MIN_PART_SIZE),
        }
    }

    /// The object key of a blob.
    pub fn key(&self, digest: &Sha256) -> String {
        let hex = digest.to_hex();
        format!("{}blobs/sha256/{}/{}", self.prefix, &hex[..2], hex)
    }

    /// The underlying client (tests inspect the bucket with it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put_small(&self, key: &str, digest: &Sha256, data: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(data.len() as i64)
            .checksum_sha256(b64(digest))
            .body(S3Body::from(data))
            .send()
            .await
            .map_err(|e| unavailable("PutObject", e))?;
        Ok(())
    }

    /// Streams `first` and the rest of `body` up as a multipart upload; aborts it on any
    /// failure (including a hash mismatch) so nothing partial ever becomes visible.
    async fn put_multipart(
        &self,
        key: &str,
        digest: &Sha256,
        hasher: Sha256Hasher,
        first: BytesMut,
        body: ByteStream,
    ) -> Result<(), StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .map_err(|e| unavailable("CreateMultipartUpload", e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                StoreError::Unavailable("S3 CreateMultipartUpload: no upload id".into())
            })?
            .to_owned();
        let result = self
            .upload_parts(key, &upload_id, digest, hasher, first, body)
            .await;
        if result.is_err() {
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(e) = abort {
                tracing::warn!(key, error = %DisplayErrorContext(&e), "aborting a failed multipart upload failed; the bucket's lifecycle rules must clean it");
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        digest: &Sha256,
        mut hasher: Sha256Hasher,
        mut buf: BytesMut,
        mut body: ByteStream,
    ) -> Result<(), StoreError> {
        let part_size = self.part_size as usize;
        let mut parts = Vec::new();
        let mut ended = false;
        loop {
            while !ended && buf.len() < part_size {
                match body.next().await {
                    Some(chunk) => {
                        let chunk = chunk.map_err(StoreError::Body)?;
                        hasher.update(&chunk);
                        buf.extend_from_slice(&chunk);
                    }
                    None => ended = true,
                }
            }
            if buf.is_empty() {
                break;
            }
            let part = buf.split_to(buf.len().min(part_size)).freeze();
            let number = parts.len() as i32 + 1;
            let part_digest = b64(&Sha256::of(&part));
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(part.len() as i64)
                .checksum_sha256(part_digest.clone())
                .body(S3Body::from(part))
                .send()
                .await
                .map_err(|e| unavailable("UploadPart", e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .checksum_sha256(part_digest)
                    .build(),
            );
            if ended && buf.is_empty() {
                break;
            }
        }
        let actual = hasher.finish();
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| unavailable("CompleteMultipartUpload", e))?;
        Ok(())
    }

    async fn read(
        &self,
        digest: &Sha256,
        range: Option<Range<u64>>,
    ) -> Result<Option<Blob>, StoreError> {
        if let Some(r) = &range
            && r.start >= r.end
        {
            return Err(StoreError::InvalidRange {
                start: r.start,
                end: r.end,
                len: 0,
            });
        }
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(digest));
        match &range {
            Some(r) => req = req.range(format!("bytes={}-{}", r.start, r.end - 1)),
            // The store checks the bytes it sends against the checksum stored with the
            // object (the SHA-256 every PUT carries) where it supports that; the SDK then
            // fails the body on a mismatch. A ranged GET has no whole-object checksum.
            None => req = req.checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled),
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => return Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                let (start, end) = range.map_or((0, 0), |r| (r.start, r.end));
                let len = self.size(digest).await?.unwrap_or(0);
                return Err(StoreError::InvalidRange { start, end, len });
            }
            Err(e) => return Err(unavailable("GetObject", e)),
        };
        let len = out.content_length().unwrap_or(0).max(0) as u64;
        let total = match (&range, out.content_range()) {
            (Some(_), Some(cr)) => cr
                .rsplit('/')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(len),
            _ => len,
        };
        if let Some(r) = &range
            && r.end > total
        {
            return Err(StoreError::InvalidRange {
                start: r.start,
                end: r.end,
                len: total,
            });
        }
        let mut s3body = out.body;
        let body = if len <= WHOLE_READ_MAX {
            let data = s3body
                .collect()
                .await
                .map_err(|e| StoreError::Unavailable(format!("S3 GetObject body: {e}")))?;
            BlobBody::Full(data.into_bytes())
        } else {
            BlobBody::Stream(Box::pin(futures_util::stream::poll_fn(move |cx| {
                std::pin::Pin::new(&mut s3body)
                    .poll_next(cx)
                    .map(|o| o.map(|r| r.map_err(io::Error::other)))
            })))
        };
        Ok(Some(Blob { len, total, body }))
    }
}

#[async_trait]
impl BlobStore for S3Store {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn put(&self, digest: &Sha256, mut body: ByteStream) -> Result<PutOutcome, StoreError> {
        if self.exists(digest).await? {
            return Ok(PutOutcome::AlreadyPresent);
        }
        let key = self.key(digest);
        let mut hasher = Sha256Hasher::new();
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StoreError::Body)?;
            hasher.update(&chunk);
            buf.extend_from_slice(&chunk);
            if buf.len() as u64 > self.multipart_threshold {
                self.put_multipart(&key, digest, hasher, buf, body).await?;
                return Ok(PutOutcome::Created);
            }
        }
        // Small blob: verified in full before a single byte is sent.
        let actual = hasher.finish();
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        self.put_small(&key, digest, buf.freeze()).await?;
        Ok(PutOutcome::Created)
    }

    async fn get(&self, digest: &Sha256) -> Result<Option<Blob>, StoreError> {
        self.read(digest, None).await
    }

    async fn get_range(
        &self,
        digest: &Sha256,
        range: Range<u64>,
    ) -> Result<Option<Blob>, StoreError> {
        self.read(digest, Some(range)).await
    }

    async fn size(&self, digest: &Sha256) -> Result<Option<u64>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(digest))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(None),
            Err(e) => Err(unavailable("HeadObject", e)),
        }
    }

    async fn delete(&self, digest: &Sha256) -> Result<bool, StoreError> {
        let existed = self.exists(digest).await?;
        if existed {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(self.key(digest))
                .send()
                .await
                .map_err(|e| unavailable("DeleteObject", e))?;
        }
        Ok(existed)
    }

    async fn put_object(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let digest = Sha256::of(&data);
        self.put_small(&format!("{}{key}", self.prefix), &digest, data)
            .await
    }

    async fn get_object(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let key = format!("{}{key}", self.prefix);
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => {
                let data = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("S3 GetObject body: {e}")))?;
                Ok(Some(data.into_bytes()))
            }
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => Ok(None),
            Err(e) => Err(unavailable("GetObject", e)),
        }
    }

    async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(format!("{}{key}", self.prefix))
            .send()
            .await
            .map_err(|e| unavailable("DeleteObject", e))?;
        Ok(())
    }
}
