//! What a pass says about itself: the [`SyncReport`], each file's [`Failure`], and the bounded
//! words for where ([`Stage`]) and why ([`FailureKind`]) something failed. Both words are the
//! labels of `portail_agent_errors_total{stage, kind}`.

use std::time::Duration;

use crate::model::guard::Blocked;
use crate::model::tree::Skipped;

/// Where in the pipeline something failed: the `stage` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The walk could not read an entry.
    Scan,
    /// Reading a file for its MD5 failed.
    Hash,
    /// Writing to S3 failed, or the file kept changing while it was written.
    Transfer,
    /// Deleting an object failed.
    Delete,
    /// A whole watch-mode pass or batch failed (PostgreSQL or S3 unreachable); it is retried.
    Pass,
}

impl Stage {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Scan => "scan",
            Stage::Hash => "hash",
            Stage::Transfer => "transfer",
            Stage::Delete => "delete",
            Stage::Pass => "pass",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Why something failed: the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Any other I/O error.
    Io,
    /// The agent may not read the file.
    PermissionDenied,
    /// The file disappeared since the scan.
    Vanished,
    /// A FIFO, directory or symlink replaced the file since the scan.
    NotRegular,
    /// The file changed while it was read.
    Changed,
    /// The file kept changing over every attempt; it is left pending.
    Changing,
    /// A blocking read task panicked.
    Panic,
    /// The multipart journal could not be written.
    Catalog,
    /// S3 asked us to slow down.
    Throttled,
    /// S3 refused the bytes: their MD5 did not match `Content-MD5`.
    BadDigest,
    /// S3 refused the credentials or the signature.
    Denied,
    /// The bucket does not exist.
    NoSuchBucket,
    /// S3 answered InternalError.
    ServerError,
    /// Any other S3 error code.
    S3Error,
    /// S3 could not be reached (no error code at all).
    Unreachable,
    /// A watch-mode full reconcile failed.
    FullReconcile,
    /// A watch-mode batch failed.
    Batch,
}

impl FailureKind {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Io => "io",
            FailureKind::PermissionDenied => "permission_denied",
            FailureKind::Vanished => "vanished",
            FailureKind::NotRegular => "not_regular",
            FailureKind::Changed => "changed",
            FailureKind::Changing => "changing",
            FailureKind::Panic => "panic",
            FailureKind::Catalog => "catalog",
            FailureKind::Throttled => "throttled",
            FailureKind::BadDigest => "bad_digest",
            FailureKind::Denied => "denied",
            FailureKind::NoSuchBucket => "no_such_bucket",
            FailureKind::ServerError => "server_error",
            FailureKind::S3Error => "s3_error",
            FailureKind::Unreachable => "unreachable",
            FailureKind::FullReconcile => "full_reconcile",
            FailureKind::Batch => "batch",
        }
    }
}

/// A file that could not be synced in this pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The relative path.
    pub path: String,
    /// Where it failed.
    pub stage: Stage,
    /// The error with its causes.
    pub error: String,
}

/// Everything one pass did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Regular files found.
    pub scanned: u64,
    /// Files whose metadata matched the catalog: not read.
    pub unchanged: u64,
    /// Files read and hashed.
    pub hashed: u64,
    /// Files whose bytes were uploaded.
    pub uploaded: u64,
    /// Files whose catalog row changed but whose content did not (a `touch`).
    pub metadata_only: u64,
    /// Files copied server-side from a vanished twin.
    pub renamed: u64,
    /// Rows marked deleted (objects deleted, or kept with DELETE_MODE=keep).
    pub deleted: u64,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Entries skipped on purpose.
    pub skipped: Vec<Skipped>,
    /// Files that could not be synced.
    pub failed: Vec<Failure>,
    /// Files that vanished between scan and read: the next pass handles them.
    pub vanished: Vec<String>,
    /// Why deletes were refused, if they were.
    pub deletes_blocked: Option<Blocked>,
    /// Changed files whose upload the mass-change tripwire held.
    pub changes_held: u64,
    /// With --dry-run: the actions a real pass would take, one per line.
    pub planned: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl SyncReport {
    /// Whether S3 and the catalog now match the tree: nothing failed, nothing refused or held,
    /// no name that could not be synced.
    pub fn converged(&self) -> bool {
        self.failed.is_empty()
            && self.deletes_blocked.is_none()
            && self.changes_held == 0
            && !self.skipped.iter().any(|s| s.reason.is_problem())
    }

    /// The one-line summary printed at the end of a pass.
    pub fn summary(&self) -> String {
        format!(
            "scanned {} unchanged {} hashed {} uploaded {} updated {} renamed {} deleted {} skipped {} failed {} bytes {} in {:.2}s",
            self.scanned,
            self.unchanged,
            self.hashed,
            self.uploaded,
            self.metadata_only,
            self.renamed,
            self.deleted,
            self.skipped.len(),
            self.failed.len(),
            self.bytes_uploaded,
            self.elapsed.as_secs_f64()
        )
    }
}
