//! The S3 client of the tier: put a pack, read a byte range of one, read its footer, list
//! the packs under a prefix.
//!
//! Owns: the `aws_sdk_s3::Client` configuration (custom endpoint, path-style addressing,
//! checksums only when required, static credentials, no SDK-level retries: the uploader
//! retries with its own back-off and reads fail fast within `read_timeout`). Must never:
//! trust a response's length (a body longer than the range asked for is refused while it
//! streams in, before it is buffered; a listed object's size and key are checked before
//! they are used), or wait on S3 without a deadline.

use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use bytes::{Bytes, BytesMut};

use super::S3Options;
use super::pack::{self, PackEntry, TRAILER_LEN};

/// Why an S3 operation failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("S3 {op} of {key} timed out after {after:?}")]
    Timeout { op: &'static str, key: String, after: Duration },
    #[error("S3 {op} of {key}: {message}")]
    Request { op: &'static str, key: String, message: String },
    /// No answer from S3 (connection refused or broken, a timeout), or a 5xx: it may
    /// answer later.
    #[error("S3 {op} of {key} got no answer: {message}")]
    Unreachable { op: &'static str, key: String, message: String },
    #[error("S3 object {key} answered {found} bytes for a range of {expected}")]
    Length { key: String, found: u64, expected: u64 },
    #[error("S3 listing of {prefix} is malformed: {what}")]
    Listing { prefix: String, what: String },
    #[error("S3 object {key} has a bad pack footer: {source}")]
    Pack {
        key: String,
        #[source]
        source: pack::PackError,
    },
}

/// A bucket of packs.
#[derive(Clone)]
pub struct PackBucket {
    client: aws_sdk_s3::Client,
    bucket: String,
    read_timeout: Duration,
    upload_timeout: Duration,
}

impl PackBucket {
    pub fn new(opts: &S3Options) -> PackBucket {
        let creds = Credentials::new(opts.access_key.clone(), opts.secret_key.clone(), None, None, "tessera");
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(opts.read_timeout)
            .operation_timeout(opts.upload_timeout.max(opts.read_timeout))
            .build();
        let mut b = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(opts.region.clone()))
            .credentials_provider(creds)
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(endpoint) = &opts.endpoint {
            b = b.endpoint_url(endpoint.clone());
        }
        PackBucket {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: opts.bucket.clone(),
            read_timeout: opts.read_timeout,
            upload_timeout: opts.upload_timeout,
        }
    }

    /// Uploads a whole pack (one PUT), within the upload timeout.
    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), S3Error> {
        let req = self.client.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(body)).send();
        match tokio::time::timeout(self.upload_timeout, req).await {
            Err(_) => Err(S3Error::Timeout { op: "PUT", key: key.into(), after: self.upload_timeout }),
            Ok(Err(e)) => Err(request_error("PUT", key, e)),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Reads `len` bytes at `offset` of object `key`, within the read timeout.
    pub async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, S3Error> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        self.get(key, range, len).await
    }

    /// Reads `len` bytes from the end of object `key`.
    async fn get_suffix(&self, key: &str, len: u64) -> Result<Bytes, S3Error> {
        self.get(key, format!("bytes=-{len}"), len).await
    }

    async fn get(&self, key: &str, range: String, expected: u64) -> Result<Bytes, S3Error> {
        let fetch = async {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .range(range)
                .send()
                .await
                .map_err(|e| sdk_error("GET", key, e))?;
            if let Some(n) = out.content_length
                && u64::try_from(n).ok() != Some(expected)
            {
                return Err(S3Error::Length { key: key.into(), found: n.max(0) as u64, expected });
            }
            let mut body = out.body;
            let mut buf = BytesMut::new();
            // A body cut short: the connection broke.
            while let Some(piece) = body.try_next().await.map_err(|e| S3Error::Unreachable {
                op: "GET",
                key: key.into(),
                message: e.to_string(),
            })? {
                if (buf.len() + piece.len()) as u64 > expected {
                    return Err(S3Error::Length { key: key.into(), found: (buf.len() + piece.len()) as u64, expected });
                }
                buf.extend_from_slice(&piece);
            }
            if buf.len() as u64 != expected {
                return Err(S3Error::Length { key: key.into(), found: buf.len() as u64, expected });
            }
            Ok(buf.freeze())
        };
        match tokio::time::timeout(self.read_timeout, fetch).await {
            Err(_) => Err(S3Error::Timeout { op: "GET", key: key.into(), after: self.read_timeout }),
            Ok(r) => r,
        }
    }

    /// Reads and checks the footer of pack `key`: two ranged GETs (trailer, then entries).
    /// With the object's size known (from a listing), the trailer must describe exactly it.
    pub async fn read_footer(&self, key: &str, size: Option<u64>) -> Result<(pack::Trailer, Vec<PackEntry>), S3Error> {
        let bad = |source| S3Error::Pack { key: key.into(), source };
        if size.is_some_and(|s| s < TRAILER_LEN as u64) {
            return Err(bad(pack::PackError::Short));
        }
        let t = self.get_suffix(key, TRAILER_LEN as u64).await?;
        let trailer = pack::decode_trailer(&t).map_err(bad)?;
        if let Some(found) = size
            && found != trailer.pack_len()
        {
            return Err(bad(pack::PackError::ObjectLen { found, expected: trailer.pack_len() }));
        }
        let (start, end) = trailer.entries_range();
        let entries = self.get_range(key, start, end - start).await?;
        let entries = pack::decode_entries(&trailer, &entries).map_err(bad)?;
        Ok((trailer, entries))
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// Most objects one listing returns (a daemon writes tens of packs per GiB; this bounds
/// memory against a runaway or hostile listing).
pub const MAX_LISTED: usize = 10_000_000;
/// Longest object key S3 allows.
const MAX_KEY_LEN: usize = 1024;

impl PackBucket {
    /// Every object whose key starts with `prefix` (ListObjectsV2, page by page, each page
    /// within the read timeout). Each key and size is checked before it is kept.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, S3Error> {
        let malformed = |what: String| S3Error::Listing { prefix: prefix.into(), what };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).max_keys(1000);
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let page = match tokio::time::timeout(self.read_timeout, req.send()).await {
                Err(_) => return Err(S3Error::Timeout { op: "LIST", key: prefix.into(), after: self.read_timeout }),
                Ok(Err(e)) => return Err(request_error("LIST", prefix, e)),
                Ok(Ok(page)) => page,
            };
            for obj in page.contents() {
                let key = obj.key().ok_or_else(|| malformed("an object without a key".into()))?;
                if key.len() > MAX_KEY_LEN || !key.starts_with(prefix) {
                    return Err(malformed(format!("key {key:?} outside the prefix or too long")));
                }
                let size = obj
                    .size()
                    .and_then(|s| u64::try_from(s).ok())
                    .filter(|s| *s <= pack::MAX_PACK_LEN)
                    .ok_or_else(|| malformed(format!("object {key} has no valid size")))?;
                if out.len() >= MAX_LISTED {
                    return Err(malformed(format!("more than {MAX_LISTED} objects")));
                }
                out.push(Listed { key: key.to_string(), size });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) if token.as_deref() != Some(next) => token = Some(next.to_string()),
                (Some(true), _) => return Err(malformed("a truncated page without a new continuation token".into())),
                _ => return Ok(out),
            }
        }
    }
}

/// An SDK failure as `Unreachable` when S3 gave no answer (or a 5xx), `Request` otherwise.
fn sdk_error<E>(op: &'static str, key: &str, e: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> S3Error
where
    E: std::error::Error + 'static,
{
    use aws_sdk_s3::error::SdkError;
    let unreachable = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(_) => e.raw_response().is_some_and(|r| r.status().is_server_error()),
        _ => false,
    };
    match request_error(op, key, e) {
        S3Error::Request { op, key, message } if unreachable => S3Error::Unreachable { op, key, message },
        other => other,
    }
}

fn request_error<E: std::error::Error>(op: &'static str, key: &str, e: E) -> S3Error {
    // The SDK's Display is terse ("dispatch failure"); include the source chain.
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    S3Error::Request { op, key: key.into(), message }
}
