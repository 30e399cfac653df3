//! Tree entries: what the walk of SYNC_ROOT, and an inspection of one path, say about a file.
//!
//! In: an `lstat` ([`FileMeta::from_metadata`]). Out: the words every layer above speaks about
//! the local tree: a [`LocalFile`] with its [`FileMeta`], or a [`Skipped`] entry and its
//! [`SkipReason`] (the `reason` label). Nothing here touches the disk.

use std::os::unix::fs::MetadataExt;

use chrono::{DateTime, Utc};

/// A regular file found by the scan.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalFile {
    /// Relative to the root, '/'-separated.
    pub path: String,
    /// The S3 key: prefix + path.
    pub key: String,
    /// What the file looked like when it was seen.
    pub meta: FileMeta,
}

/// The identity of a file's content as far as the file system tells: when all of it matches
/// the catalog, the file is not read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, truncated to microseconds (what PostgreSQL stores).
    pub mtime: DateTime<Utc>,
    /// Inode number.
    pub inode: i64,
    /// Status change time, truncated to microseconds.
    pub ctime: DateTime<Utc>,
    /// `st_mode`: the file type and permission bits (written to S3 as `mode`, in octal).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

impl FileMeta {
    /// Reads the identity from `std::fs::Metadata`.
    pub fn from_metadata(m: &std::fs::Metadata) -> Self {
        FileMeta {
            size: m.len(),
            mtime: unix_micros(m.mtime(), m.mtime_nsec()),
            inode: m.ino() as i64,
            ctime: unix_micros(m.ctime(), m.ctime_nsec()),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
        }
    }
}

fn unix_micros(secs: i64, nsec: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, (nsec as u32 / 1000) * 1000).unwrap_or_default()
}

/// Why an entry was deliberately not synced. Each is counted under this label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// A symlink; links are not followed.
    Symlink,
    /// A FIFO, socket or device.
    SpecialFile,
    /// Matched an EXCLUDE pattern.
    Excluded,
    /// The name is not valid UTF-8, so it cannot be an S3 key.
    NonUtf8Name,
    /// Prefix plus path exceed 1024 bytes.
    KeyTooLong,
}

impl SkipReason {
    /// Every reason, so the metric exports a zero for each before one happens.
    pub const ALL: [SkipReason; 5] = [
        SkipReason::Symlink,
        SkipReason::SpecialFile,
        SkipReason::Excluded,
        SkipReason::NonUtf8Name,
        SkipReason::KeyTooLong,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::Symlink => "symlink",
            SkipReason::SpecialFile => "special_file",
            SkipReason::Excluded => "excluded",
            SkipReason::NonUtf8Name => "non_utf8_name",
            SkipReason::KeyTooLong => "key_too_long",
        }
    }

    /// Whether the skip is a problem the operator must hear about (as opposed to a choice).
    pub fn is_problem(self) -> bool {
        matches!(self, SkipReason::NonUtf8Name | SkipReason::KeyTooLong)
    }
}

/// An entry that was skipped on purpose.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// The relative path, lossily decoded for display.
    pub path: String,
    /// The raw bytes of the relative path in hex, for names that are not UTF-8.
    pub raw_hex: Option<String>,
    /// Why.
    pub reason: SkipReason,
}
