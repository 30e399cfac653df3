//! One file to write back, the word restore and recover share: where its bytes are (a key, a
//! version) and what they must be (MD5, size, mtime, mode, owner).
//!
//! In: a catalog version row, or what recover read from the bucket. Out: a [`Source`].

use crate::catalog::VersionRow;
use chrono::{DateTime, Utc};

/// One file to write: where its bytes are and what they must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Relative path.
    pub path: String,
    /// The object holding the bytes.
    pub key: String,
    /// Its S3 version, when the bucket keeps versions.
    pub version_id: Option<String>,
    /// Lowercase hex MD5 the bytes must have.
    pub md5: String,
    /// Size in bytes.
    pub size: i64,
    /// Modification time.
    pub mtime: DateTime<Utc>,
    /// `st_mode` (permission bits are applied), if known.
    pub mode: Option<u32>,
    /// Owner, if known (applied as root).
    pub owner: Option<(u32, u32)>,
}

impl From<VersionRow> for Source {
    /// A history copy is read by its key; otherwise the object itself, at its version.
    fn from(v: VersionRow) -> Self {
        let (key, version_id) = match v.history_key {
            Some(h) => (h, None),
            None => (v.s3_key, v.version_id),
        };
        let owner = v.uid.zip(v.gid).map(|(u, g)| (u as u32, g as u32));
        Source {
            path: v.path,
            key,
            version_id,
            md5: v.md5,
            size: v.size_bytes,
            mtime: v.mtime,
            mode: v.mode.map(|m| m as u32),
            owner,
        }
    }
}
