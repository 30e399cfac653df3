//! What a failed S3 request becomes: a [`TransferError`] with a readable message and a bounded
//! [`FailureKind`] for metrics.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::model::report::FailureKind;

/// An S3 request that failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// S3 answered with an error, or could not be reached, after the SDK's retries.
    #[error("S3 {op} failed: {message}")]
    S3 {
        /// The operation, e.g. `PutObject`.
        op: &'static str,
        /// The S3 error code when there was one (`SlowDown`, `BadDigest`, ...).
        code: Option<String>,
        /// The error with its causes.
        message: String,
    },
    /// Reading the local file failed.
    #[error("reading the file failed: {0}")]
    Io(#[from] std::io::Error),
    /// Writing a downloaded object to disk failed (a full disk, a read-only target).
    #[error("writing the file failed: {0}")]
    Write(std::io::Error),
    /// The multipart journal could not be written, so the upload was not attempted.
    #[error("cannot journal the multipart upload: {0}")]
    Journal(String),
}

impl TransferError {
    /// Wraps an SDK error. A service error is best told by its code, message and status (the
    /// SDK's full context is a page of debug output); transport errors keep their cause chain.
    pub(crate) fn s3<E>(
        op: &'static str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let code = err.code().map(String::from);
        let message = match &err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                match (err.code(), err.message()) {
                    (Some(c), Some(m)) => format!("{c}: {m} (HTTP {status})"),
                    (Some(c), None) => format!("{c} (HTTP {status})"),
                    _ => format!("HTTP {status}"),
                }
            }
            _ => DisplayErrorContext(&err).to_string(),
        };
        TransferError::S3 { op, code, message }
    }

    /// An error found before any request was sent (a request that could not be built).
    pub(crate) fn invalid(op: &'static str, err: impl std::fmt::Display) -> Self {
        TransferError::S3 {
            op,
            code: None,
            message: err.to_string(),
        }
    }

    /// Every kind [`TransferError::kind`] returns.
    pub const KINDS: [FailureKind; 9] = [
        FailureKind::Io,
        FailureKind::Catalog,
        FailureKind::Throttled,
        FailureKind::BadDigest,
        FailureKind::Denied,
        FailureKind::NoSuchBucket,
        FailureKind::ServerError,
        FailureKind::S3Error,
        FailureKind::Unreachable,
    ];

    /// The bounded kind, for metrics.
    pub fn kind(&self) -> FailureKind {
        match self {
            TransferError::Io(_) | TransferError::Write(_) => FailureKind::Io,
            TransferError::Journal(_) => FailureKind::Catalog,
            TransferError::S3 { code: Some(c), .. } => match c.as_str() {
                "SlowDown" | "ServiceUnavailable" | "Throttling" => FailureKind::Throttled,
                "BadDigest" | "InvalidDigest" => FailureKind::BadDigest,
                "AccessDenied" | "SignatureDoesNotMatch" | "InvalidAccessKeyId" => {
                    FailureKind::Denied
                }
                "NoSuchBucket" => FailureKind::NoSuchBucket,
                "InternalError" => FailureKind::ServerError,
                _ => FailureKind::S3Error,
            },
            TransferError::S3 { code: None, .. } => FailureKind::Unreachable,
        }
    }
}
