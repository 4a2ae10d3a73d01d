//! The S3 client of the tier: put a pack, read a byte range of one, read its footer.
//!
//! Owns: the `aws_sdk_s3::Client` configuration (custom endpoint, path-style addressing,
//! checksums only when required, static credentials, no SDK-level retries: the uploader
//! retries with its own back-off and reads fail fast within `read_timeout`). Must never:
//! trust a response's length (a body longer than the range asked for is refused while it
//! streams in, before it is buffered), or wait on S3 without a deadline.

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
    #[error("S3 object {key} answered {found} bytes for a range of {expected}")]
    Length { key: String, found: u64, expected: u64 },
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
                .map_err(|e| request_error("GET", key, e))?;
            if let Some(n) = out.content_length
                && u64::try_from(n).ok() != Some(expected)
            {
                return Err(S3Error::Length { key: key.into(), found: n.max(0) as u64, expected });
            }
            let mut body = out.body;
            let mut buf = BytesMut::new();
            while let Some(piece) = body.try_next().await.map_err(|e| S3Error::Request {
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
    pub async fn read_footer(&self, key: &str) -> Result<(pack::Trailer, Vec<PackEntry>), S3Error> {
        let bad = |source| S3Error::Pack { key: key.into(), source };
        let t = self.get_suffix(key, TRAILER_LEN as u64).await?;
        let trailer = pack::decode_trailer(&t).map_err(bad)?;
        let (start, end) = trailer.entries_range();
        let entries = self.get_range(key, start, end - start).await?;
        let entries = pack::decode_entries(&trailer, &entries).map_err(bad)?;
        Ok((trailer, entries))
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
