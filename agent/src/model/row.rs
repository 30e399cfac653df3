//! What a catalog row says about an object: the vouching rule, written once.
//!
//! In: a row of `files`. Out: whether it is tracked (`synced`), and the MD5 it vouches for at a
//! key. A row vouches for content only when it is `synced`, has an MD5, and names that key:
//! the agent writes a row `synced` only after its object is stored and read back unchanged, so
//! such a row never claims bytes S3 does not hold. Every decision that trusts the catalog
//! instead of reading a file or an object (skip an unchanged file, touch instead of upload,
//! copy as a rename, count a change for the tripwire, check in `verify`) asks here.

use portail_core::catalog::{FileRow, FileStatus};

/// Whether the row is tracked: `synced`, so the guards count it and `verify` checks it.
pub fn is_tracked(row: &FileRow) -> bool {
    row.status == FileStatus::Synced
}

/// The MD5 the row vouches that the object at `key` holds, if it vouches for any.
pub fn vouched_md5<'a>(row: &'a FileRow, key: &str) -> Option<&'a str> {
    let md5 = row.md5.as_deref()?;
    (is_tracked(row) && row.s3_key == key).then_some(md5)
}

/// Whether the object at `key` holds content a version of `row` vouches for, so that writing
/// over it (or deleting it) ends that version. Unlike [`vouched_md5`], an `error` row counts:
/// a version is kept for whatever the object may hold, not trusted to skip a read.
pub fn holds_version(row: &FileRow, key: &str) -> bool {
    matches!(row.status, FileStatus::Synced | FileStatus::Error)
        && row.md5.is_some()
        && row.s3_key == key
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn row(status: FileStatus, md5: Option<&str>) -> FileRow {
        let now = Utc::now();
        FileRow {
            id: 1,
            agent_id: 1,
            path: "a".into(),
            s3_key: "p/a".into(),
            size_bytes: 1,
            mtime: now,
            md5: md5.map(String::from),
            etag: None,
            content_type: None,
            status,
            last_error: None,
            synced_at: None,
            deleted_at: None,
            created_at: now,
            updated_at: now,
            inode: None,
            ctime: None,
            encryption: None,
            storage_class: None,
            content_since: None,
        }
    }

    #[test]
    fn only_a_synced_row_with_an_md5_vouches_and_only_for_its_own_key() {
        let md5 = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            vouched_md5(&row(FileStatus::Synced, Some(md5)), "p/a"),
            Some(md5)
        );
        assert_eq!(
            vouched_md5(&row(FileStatus::Synced, Some(md5)), "p/b"),
            None
        );
        assert_eq!(vouched_md5(&row(FileStatus::Synced, None), "p/a"), None);
        for status in [FileStatus::Pending, FileStatus::Error, FileStatus::Deleted] {
            assert_eq!(
                vouched_md5(&row(status, Some(md5)), "p/a"),
                None,
                "{status:?}"
            );
            assert!(!is_tracked(&row(status, Some(md5))));
        }
    }
}
