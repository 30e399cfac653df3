//! One file's way through the hash and transfer stages, as named steps:
//!
//! 1. **hash**: read the file once for its MD5 (small files are kept in memory for the upload);
//! 2. **decide**: with the MD5 known, upload it, copy a vanished twin server-side (a rename),
//!    or only update the row (a `touch`);
//! 3. **store**: do that in S3;
//! 4. **confirm unchanged**: the object holds the bytes we hashed only if the file still looks
//!    as it did, else try again (up to [`ATTEMPTS`]);
//! 5. **row**: describe the result for the catalog.
//!
//! In: a [`Work`] item from the merge and the rename sources. Out: an [`Outcome`], which
//! [`crate::pass::record::Recorder`] turns into metrics, a log line, the report and a catalog write.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::catalog::{EventKind, FileRow, FileStatus, PendingFile, PosixIds, SyncedFile};
use serde_json::json;

use crate::agent::Agent;
use crate::fs::hash::{self, HashError, Hashed};
use crate::model::report::{Failure, FailureKind, Stage};
use crate::model::row::{is_tracked, vouched_md5};
use crate::model::tree::FileMeta;
use crate::pass::merge::Work;
use crate::store::{content_type_for, ObjectInfo, Posix, Stored, TransferError};

/// Files up to this size are read into memory once, hashed and uploaded from that buffer.
pub const IN_MEMORY_LIMIT: u64 = 4 << 20;
/// Attempts per file when it keeps changing while being read or uploaded.
pub const ATTEMPTS: usize = 3;

/// What to do with a file once its MD5 is known.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// S3 already holds these bytes under this key: update the catalog row only (a `touch`).
    MetadataOnly,
    /// A vanished file had the same size and MD5: copy its object server-side (a rename).
    Copy {
        /// The row of the vanished file whose object is the copy source.
        from: Box<FileRow>,
    },
    /// Upload the bytes.
    Upload,
}

/// Vanished rows by (size, MD5): the candidates for a server-side copy.
pub type RenameSources = HashMap<(i64, String), FileRow>;

/// Indexes vanished rows by (size, md5), the key for rename detection. Only rows whose object
/// is known to hold that content (`synced`) can be copy sources.
pub fn rename_sources(gone: &[FileRow]) -> RenameSources {
    let mut index = HashMap::new();
    for row in gone {
        if let Some(md5) = vouched_md5(row, &row.s3_key) {
            index
                .entry((row.size_bytes, md5.to_string()))
                .or_insert_with(|| row.clone());
        }
    }
    index
}

/// Picks the action for a hashed file.
pub fn decide(work: &Work, md5_hex: &str, sources: &RenameSources) -> Decision {
    if let Some(prev) = &work.previous {
        if vouched_md5(prev, &work.local.key) == Some(md5_hex)
            && prev.size_bytes == work.local.meta.size as i64
        {
            return Decision::MetadataOnly;
        }
    }
    // An empty file costs nothing to upload; copying it would only invent a rename.
    if work.local.meta.size > 0 {
        if let Some(from) = sources.get(&(work.local.meta.size as i64, md5_hex.to_string())) {
            return Decision::Copy {
                from: Box::new(from.clone()),
            };
        }
    }
    Decision::Upload
}

/// What happened to one file.
#[derive(Debug)]
pub enum Outcome {
    /// S3 holds the file's bytes under its key; the row says so.
    Synced {
        /// The row to write.
        row: SyncedFile,
        /// Bytes uploaded, when the bytes were uploaded.
        uploaded_bytes: Option<u64>,
        /// The vanished path it was copied from, for a rename.
        renamed_from: Option<String>,
    },
    /// It could not be synced.
    Failed {
        /// Where and why.
        failure: Failure,
        /// The bounded kind, for metrics.
        kind: FailureKind,
        /// Its row before this pass, if any.
        previous: Option<FileRow>,
        /// What the file looked like.
        meta: FileMeta,
    },
    /// The file is gone. With a [`PendingFile`] when this pass had already written its object.
    Vanished(String, Option<PendingFile>),
    /// The file kept changing while read; its object may hold any of its versions.
    Unstable(PendingFile),
    /// Its content changed, and the mass-change tripwire holds the upload; its row and object
    /// keep the previous content until the tripwire is released.
    Held(String),
}

/// How to read a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// The file must not change while it is read and stored (else: try again, then pending).
    Settled,
    /// Watch mode's MAX_SYNC_DELAY is up for a file that keeps changing: store the prefix that
    /// existed when it was opened, if the file only grew (a log, a recording). A file rewritten
    /// in place is never stored torn: it stays pending (`changing`).
    Busy,
}

/// Syncs one file: returns the number of hashes computed and the outcome.
pub async fn sync_file(
    agent: &Agent,
    work: Work,
    sources: &RenameSources,
    mode: ReadMode,
) -> (u64, Outcome) {
    let mut job = FileJob {
        mode,
        abs: agent.root.join(&work.local.path),
        content_type: content_type_for(&work.local.path),
        agent,
        work,
        hashes: 0,
        wrote: false,
        replaced: None,
    };
    let outcome = job.run(sources).await;
    (job.hashes, outcome)
}

/// One file in progress.
struct FileJob<'a> {
    agent: &'a Agent,
    mode: ReadMode,
    work: Work,
    abs: PathBuf,
    content_type: String,
    hashes: u64,
    /// Set once an attempt wrote the object: from then on the key must stay tracked.
    wrote: bool,
    /// Where the content this file replaces under its key was copied (HISTORY=prefix). Copied
    /// once: a second attempt must not copy the first attempt's bytes over it.
    replaced: Option<String>,
}

/// CopyObject's limit: a larger object's metadata cannot be refreshed by a copy onto itself.
const MAX_COPY: u64 = 5 << 30;

/// What the file looks like after the object was written.
enum Confirmed {
    Unchanged,
    Changed,
    Vanished,
}

impl FileJob<'_> {
    async fn run(&mut self, sources: &RenameSources) -> Outcome {
        for _ in 0..ATTEMPTS {
            let hashed = match self.hash().await {
                Ok(h) => h,
                Err(HashError::Changed) => continue,
                Err(HashError::Vanished) => return self.vanished(),
                Err(e) => return self.failed(Stage::Hash, e.kind(), e.to_string(), None),
            };
            let md5_hex = hex::encode(hashed.md5);
            let decision = decide(&self.work, &md5_hex, sources);
            if self.content_changed(&decision, &md5_hex)
                && !self.agent.guards.admit_change(&self.work.local.path)
            {
                return Outcome::Held(self.work.local.path.clone());
            }
            let stored = match self.store(&decision, &hashed).await {
                Ok(s) => s,
                Err(e) => {
                    let (kind, msg) = (e.kind(), e.to_string());
                    return self.failed(Stage::Transfer, kind, msg, Some(hashed.meta));
                }
            };
            match self.confirm_unchanged(&hashed) {
                Confirmed::Unchanged => return self.row(decision, &hashed, md5_hex, stored),
                Confirmed::Changed => continue,
                Confirmed::Vanished => return self.vanished(),
            }
        }
        Outcome::Unstable(self.pending())
    }

    /// Whether this is a tracked file whose content changed: what the tripwire counts.
    fn content_changed(&self, decision: &Decision, md5_hex: &str) -> bool {
        match self.work.previous.as_ref().filter(|r| is_tracked(r)) {
            Some(prev) => {
                !matches!(decision, Decision::MetadataOnly) && prev.md5.as_deref() != Some(md5_hex)
            }
            None => false,
        }
    }

    /// Step 1: reads the file on a blocking thread for its MD5 (a busy file: its prefix).
    async fn hash(&mut self) -> Result<Hashed, HashError> {
        let (p, mode) = (self.abs.clone(), self.mode);
        let hashed = tokio::task::spawn_blocking(move || match mode {
            ReadMode::Settled => hash::hash_file(&p, IN_MEMORY_LIMIT),
            ReadMode::Busy => hash::hash_prefix(&p, IN_MEMORY_LIMIT),
        })
        .await
        .map_err(|e| HashError::Panicked(e.to_string()))??;
        self.hashes += 1;
        self.agent.metrics.hash_bytes.inc_by(hashed.meta.size);
        Ok(hashed)
    }

    /// Step 3: writes to S3 what the decision asks for (first keeping the content it replaces,
    /// with HISTORY=prefix). `None` when nothing was written.
    async fn store(
        &mut self,
        decision: &Decision,
        hashed: &Hashed,
    ) -> Result<Option<Stored>, TransferError> {
        let (transfer, key) = (&self.agent.transfer, &self.work.local.key);
        let mut info = ObjectInfo {
            md5: hashed.md5,
            content_type: self.content_type.clone(),
            posix: Posix::from(&hashed.meta),
            since: None,
        };
        if *decision == Decision::MetadataOnly {
            info.since = self.work.previous.as_ref().and_then(|p| p.content_since);
        }
        let replaces = self
            .work
            .previous
            .as_ref()
            .filter(|p| crate::model::row::holds_version(p, key));
        if let (Some(prev), false, None) = (
            replaces,
            *decision == Decision::MetadataOnly,
            &self.replaced,
        ) {
            self.replaced = self
                .agent
                .history
                .keep(&self.agent.transfer, &self.agent.metrics.history, prev)
                .await?;
        }
        let timer = std::time::Instant::now();
        let stored = match decision {
            // The same bytes: only the object's mtime and mode change, by a copy onto itself.
            Decision::MetadataOnly if hashed.meta.size <= MAX_COPY => {
                transfer.copy(key, key, Some(&info)).await?
            }
            Decision::MetadataOnly => return Ok(None),
            Decision::Copy { from } => transfer.copy(&from.s3_key, key, Some(&info)).await?,
            Decision::Upload => match &hashed.bytes {
                Some(body) => transfer.put_bytes(key, body.clone(), &info).await?,
                None => {
                    let size = hashed.meta.size;
                    transfer.put_file(key, &self.abs, size, &info).await?
                }
            },
        };
        // A metadata refresh wrote the same bytes: the version it holds lives on.
        self.wrote |= *decision != Decision::MetadataOnly;
        if *decision == Decision::Upload {
            let secs = timer.elapsed().as_secs_f64();
            self.agent.metrics.upload_duration.observe(secs);
        }
        Ok(Some(stored))
    }

    /// Step 4: the bytes S3 holds are the ones we hashed only if the file still looks the same
    /// (a busy file: if its prefix still has the MD5 we stored, so no part was torn).
    fn confirm_unchanged(&self, hashed: &Hashed) -> Confirmed {
        if self.mode == ReadMode::Busy {
            return match hash::prefix_md5(&self.abs, hashed.meta.size) {
                Ok(md5) if md5 == hashed.md5 => Confirmed::Unchanged,
                Err(HashError::Vanished) => Confirmed::Vanished,
                _ => Confirmed::Changed,
            };
        }
        match std::fs::symlink_metadata(&self.abs) {
            Ok(m) if FileMeta::from_metadata(&m) == hashed.meta => Confirmed::Unchanged,
            Ok(_) => Confirmed::Changed,
            Err(_) => Confirmed::Vanished,
        }
    }

    /// The event a stored file gets: uploaded (first content), updated, or renamed; its
    /// details; and the rename's source path.
    fn event(
        &self,
        decision: &Decision,
        hashed: &Hashed,
        md5: &str,
        stored: &Option<Stored>,
    ) -> (EventKind, serde_json::Value, Option<String>) {
        let size = hashed.meta.size;
        let first = (self.work.previous.as_ref()).is_none_or(|p| p.status == FileStatus::Deleted);
        match decision {
            Decision::MetadataOnly => (
                EventKind::Updated,
                json!({"metadata_only": true, "size": size}),
                None,
            ),
            Decision::Copy { from } => (
                EventKind::Renamed,
                json!({"from": from.path, "md5": md5}),
                Some(from.path.clone()),
            ),
            Decision::Upload => {
                let kind = if first {
                    EventKind::Uploaded
                } else {
                    EventKind::Updated
                };
                let etag = stored.as_ref().and_then(|s| s.etag.clone());
                let multipart = stored.as_ref().is_some_and(|s| s.multipart);
                let busy = self.mode == ReadMode::Busy;
                let details = json!({"size": size, "md5": md5, "etag": etag, "multipart": multipart, "busy": busy});
                (kind, details, None)
            }
        }
    }

    /// Step 5: the catalog row and event for what was stored.
    fn row(
        &self,
        decision: Decision,
        hashed: &Hashed,
        md5: String,
        stored: Option<Stored>,
    ) -> Outcome {
        let meta = hashed.meta;
        let (event, details, renamed_from) = self.event(&decision, hashed, &md5, &stored);
        // Written now: as the write options say. Metadata only: as it was.
        let (encryption, storage_class) = match (&stored, &self.work.previous) {
            (Some(_), _) => (
                self.agent.transfer.encryption().map(String::from),
                self.agent.transfer.storage_class().map(String::from),
            ),
            (None, prev) => prev.as_ref().map_or((None, None), |r| {
                (r.encryption.clone(), r.storage_class.clone())
            }),
        };
        let row = SyncedFile {
            posix: Some(PosixIds {
                mode: meta.mode as i32,
                uid: meta.uid.into(),
                gid: meta.gid.into(),
            }),
            version_id: stored.as_ref().and_then(|s| s.version_id.clone()),
            history_key: self.replaced.clone(),
            storage_class,
            path: self.work.local.path.clone(),
            s3_key: self.work.local.key.clone(),
            size_bytes: meta.size as i64,
            mtime: meta.mtime,
            md5,
            etag: stored.and_then(|s| s.etag),
            content_type: self.content_type.clone(),
            inode: Some(meta.inode),
            ctime: Some(meta.ctime),
            encryption,
            event,
            details,
        };
        let uploaded_bytes = (decision == Decision::Upload).then_some(meta.size);
        Outcome::Synced {
            row,
            uploaded_bytes,
            renamed_from,
        }
    }

    fn failed(
        &self,
        stage: Stage,
        kind: FailureKind,
        error: String,
        meta: Option<FileMeta>,
    ) -> Outcome {
        Outcome::Failed {
            failure: Failure {
                path: self.work.local.path.clone(),
                stage,
                error,
            },
            kind,
            previous: self.work.previous.clone(),
            meta: meta.unwrap_or(self.work.local.meta),
        }
    }

    fn vanished(&self) -> Outcome {
        let written = self.wrote.then(|| self.pending());
        Outcome::Vanished(self.work.local.path.clone(), written)
    }

    /// A row for an object whose content we cannot vouch for (see [`PendingFile`]).
    fn pending(&self) -> PendingFile {
        PendingFile {
            path: self.work.local.path.clone(),
            s3_key: self.work.local.key.clone(),
            size_bytes: self.work.local.meta.size as i64,
            mtime: self.work.local.meta.mtime,
            reason: "vanished after its upload".into(),
            wrote: self.wrote,
            history_key: self.replaced.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pass::merge::tests::{local, row, synced, MD5_A};

    const MD5_B: &str = "92eb5ffee6ae2fec3ad71c777531578f";

    #[test]
    fn decide_metadata_only_when_content_is_the_same() {
        let w = Work {
            local: local("a", 1, 11),
            previous: Some(synced("a", 1, 10, MD5_A)),
        };
        assert_eq!(decide(&w, MD5_A, &HashMap::new()), Decision::MetadataOnly);
        assert_eq!(decide(&w, MD5_B, &HashMap::new()), Decision::Upload);
    }

    #[test]
    fn decide_uploads_when_previous_row_cannot_vouch() {
        for status in [FileStatus::Pending, FileStatus::Error, FileStatus::Deleted] {
            let w = Work {
                local: local("a", 1, 11),
                previous: Some(row("a", 1, 10, status, Some(MD5_A))),
            };
            assert_eq!(
                decide(&w, MD5_A, &HashMap::new()),
                Decision::Upload,
                "{status:?}"
            );
        }
        let mut prev = synced("a", 1, 10, MD5_A);
        prev.s3_key = "old-prefix/a".into();
        let w = Work {
            local: local("a", 1, 11),
            previous: Some(prev),
        };
        assert_eq!(decide(&w, MD5_A, &HashMap::new()), Decision::Upload);
    }

    #[test]
    fn decide_copy_for_a_vanished_twin() {
        let gone = vec![
            synced("old", 5, 10, MD5_A),
            row("pend", 5, 10, FileStatus::Pending, Some(MD5_B)),
        ];
        let sources = rename_sources(&gone);
        assert_eq!(sources.len(), 1, "only synced rows are copy sources");
        let w = Work {
            local: local("new", 5, 20),
            previous: None,
        };
        assert_eq!(
            decide(&w, MD5_A, &sources),
            Decision::Copy {
                from: Box::new(gone[0].clone())
            }
        );
        assert_eq!(decide(&w, MD5_B, &sources), Decision::Upload);
        let other_size = Work {
            local: local("new", 6, 20),
            previous: None,
        };
        assert_eq!(decide(&other_size, MD5_A, &sources), Decision::Upload);
    }

    #[test]
    fn empty_files_are_uploaded_not_copied() {
        let empty_md5 = "d41d8cd98f00b204e9800998ecf8427e";
        let sources = rename_sources(&[synced("old", 0, 10, empty_md5)]);
        let w = Work {
            local: local("new", 0, 20),
            previous: None,
        };
        assert_eq!(decide(&w, empty_md5, &sources), Decision::Upload);
    }

    proptest::proptest! {
        #[test]
        fn same_bytes_under_the_same_key_are_never_uploaded_again(
            size in 0u64..3, mtime in 0i64..3, row_mtime in 0i64..3,
        ) {
            let w = Work {
                local: local("a", size, mtime),
                previous: Some(synced("a", size as i64, row_mtime, MD5_A)),
            };
            proptest::prop_assert_eq!(decide(&w, MD5_A, &HashMap::new()), Decision::MetadataOnly);
            proptest::prop_assert_eq!(decide(&w, MD5_B, &HashMap::new()), Decision::Upload);
        }
    }
}
