//! The catalog lost: what the bucket alone says about the tree and its history.
//!
//! In: a listing of the agent's prefix (the current objects, and the HISTORY=prefix copies
//! under HISTORY_PREFIX) and each object's metadata (a HEAD: `md5chksum`, `mtime`, `mode`,
//! `uid`, `gid`). Out: the versions the catalog would have recorded, for
//! `rebuild-catalog` (rows written to an empty catalog, so the next sync uploads nothing that
//! is unchanged) and for `restore --from-bucket` (the files as of a time, with no catalog).
//!
//! A current object's version began when it was written (LastModified). A history copy's
//! version began at the time in its key, and ended when the next version of its path began
//! (or, for the last one, when the copy was made: the file was deleted).
//!
//! With HISTORY=versioning the history is the bucket's own: ListObjectVersions gives every
//! version of every key, each current from its LastModified until the next version or delete
//! marker of its key. HISTORY_PREFIX copies (left by an earlier prefix mode) are not read then.

use std::collections::BTreeMap;

use crate::catalog::RebuiltVersion;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};

use crate::ops::source::Source;
use crate::policy::history::History;
use crate::store::metadata::ReadBack;
use crate::store::{content_type_for, ListedObject, ListedVersion, Transfer, TransferError};

/// One content of a path, as the bucket shows it (before its metadata is read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketVersion {
    /// Relative path.
    pub path: String,
    /// The object holding the bytes.
    pub key: String,
    /// When this content became current.
    pub valid_from: DateTime<Utc>,
    /// When it stopped being current (None: current).
    pub valid_to: Option<DateTime<Utc>>,
    /// Its S3 version, when the bucket keeps versions.
    pub version_id: Option<String>,
    /// The listing's ETag (the MD5 for a single-part object).
    pub etag: String,
    /// Its size and metadata, once [`refine`] has read them (so [`describe`] need not again).
    pub head: Option<(i64, ReadBack)>,
}

/// Every version under `prefix` by path (oldest first), from one listing: of the bucket's
/// versions when `versioned`, else of the objects and their HISTORY=prefix copies.
pub async fn bucket_versions(
    transfer: &Transfer,
    prefix: &str,
    history_dir: &str,
    versioned: bool,
) -> Result<BTreeMap<String, Vec<BucketVersion>>, TransferError> {
    if versioned {
        let listed = transfer.list_versions(prefix).await?;
        return Ok(versions_from_version_listing(listed, prefix, history_dir));
    }
    let objects = transfer.list_objects(prefix).await?;
    Ok(versions_from_listing(&objects, prefix, history_dir))
}

/// The pure part of [`bucket_versions`] for a versioned bucket: each key's entries in time
/// order, each version ending where the next entry (version or delete marker) begins, and the
/// latest one current unless it is a delete marker.
pub fn versions_from_version_listing(
    listed: Vec<ListedVersion>,
    prefix: &str,
    history_dir: &str,
) -> BTreeMap<String, Vec<BucketVersion>> {
    let mut by_key: BTreeMap<String, Vec<ListedVersion>> = BTreeMap::new();
    for v in listed {
        if !v.key.starts_with(history_dir) {
            by_key.entry(v.key.clone()).or_default().push(v);
        }
    }
    let mut by_path: BTreeMap<String, Vec<BucketVersion>> = BTreeMap::new();
    for (key, mut entries) in by_key {
        let Some(path) = key
            .strip_prefix(prefix)
            .filter(|p| !p.is_empty() && !p.ends_with('/'))
        else {
            continue;
        };
        // Within one second (the precision some stores list), the latest sorts last.
        entries.sort_by_key(|e| (e.modified, e.is_latest));
        let ends: Vec<_> = entries.iter().skip(1).map(|e| Some(e.modified)).collect();
        let versions = entries
            .iter()
            .zip(ends.into_iter().chain([None]))
            .filter(|(e, _)| !e.delete_marker)
            .map(|(e, valid_to)| BucketVersion {
                path: path.to_string(),
                key: key.clone(),
                valid_from: e.modified,
                valid_to,
                version_id: Some(e.version_id.clone()),
                etag: e.etag.clone(),
                head: None,
            })
            .collect();
        by_path.insert(path.to_string(), versions);
    }
    by_path
}

/// The pure part of [`bucket_versions`]: history keys parsed, each path's versions chained.
pub fn versions_from_listing(
    objects: &std::collections::HashMap<String, ListedObject>,
    prefix: &str,
    history_dir: &str,
) -> BTreeMap<String, Vec<BucketVersion>> {
    let mut by_path: BTreeMap<String, Vec<BucketVersion>> = BTreeMap::new();
    for (key, o) in objects {
        let modified = o.modified.unwrap_or_default();
        let (path, valid_from, valid_to) = match History::parse_key(history_dir, key) {
            Some((path, since)) => (path, since, Some(modified)),
            None if key.starts_with(history_dir) => continue, // not ours: no stamp
            None => match key.strip_prefix(prefix) {
                Some(path) if !path.is_empty() && !path.ends_with('/') => {
                    (path.to_string(), modified, None)
                }
                _ => continue,
            },
        };
        let etag = o.etag.clone();
        let v = BucketVersion {
            path: path.clone(),
            key: key.clone(),
            valid_from,
            valid_to,
            version_id: None,
            etag,
            head: None,
        };
        by_path.entry(path).or_default().push(v);
    }
    chain(&mut by_path);
    by_path
}

/// Orders each path's versions, and ends each replaced one where the next begins, so no
/// instant falls between them.
fn chain(by_path: &mut BTreeMap<String, Vec<BucketVersion>>) {
    for versions in by_path.values_mut() {
        versions.sort_by_key(|v| (v.valid_from, v.valid_to.is_none()));
        for i in 1..versions.len() {
            let next_from = versions[i].valid_from;
            let prev = &mut versions[i - 1];
            if prev.valid_to.is_some() {
                prev.valid_to = Some(next_from.max(prev.valid_from));
            }
        }
    }
}

/// A current object whose metadata was refreshed in place (a `touch`, a `chmod`) was
/// rewritten, so its LastModified is later than its content: its `portail-since` says when the
/// content began. HEADs the current objects written after `after` (all with `None`) and
/// corrects their start, then chains again. An object that cannot be read keeps LastModified.
pub async fn refine(
    transfer: &Transfer,
    by_path: &mut BTreeMap<String, Vec<BucketVersion>>,
    after: Option<DateTime<Utc>>,
    concurrency: usize,
) {
    let late: Vec<(String, String)> = by_path
        .iter()
        .filter_map(|(p, vs)| vs.last().map(|v| (p, v)))
        .filter(|(_, v)| v.valid_to.is_none() && after.is_none_or(|a| v.valid_from > a))
        .filter(|(_, v)| v.version_id.is_none()) // a version's LastModified is its own start
        .map(|(p, v)| (p.clone(), v.key.clone()))
        .collect();
    let heads: Vec<_> = stream::iter(late)
        .map(|(p, key)| async move { (p, transfer.head_metadata(&key, None).await) })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    for (path, head) in heads {
        let (Ok((size, meta)), Some(v)) =
            (head, by_path.get_mut(&path).and_then(|vs| vs.last_mut()))
        else {
            continue;
        };
        if let Some(since) = meta.since.filter(|s| *s < v.valid_from) {
            v.valid_from = since;
        }
        v.head = Some((size, meta));
    }
    chain(by_path);
}

/// The version of each path current at `at`, among `paths` (empty: all).
pub fn as_of(
    by_path: &BTreeMap<String, Vec<BucketVersion>>,
    at: DateTime<Utc>,
    paths: &[String],
) -> Vec<BucketVersion> {
    let selected = |p: &str| {
        paths.is_empty()
            || paths
                .iter()
                .any(|s| p == s || p.starts_with(&format!("{s}/")))
    };
    by_path
        .iter()
        .filter(|(p, _)| selected(p))
        .filter_map(|(_, vs)| {
            vs.iter()
                .find(|v| v.valid_from <= at && v.valid_to.is_none_or(|to| at < to))
                .cloned()
        })
        .collect()
}

/// Reads an object's metadata into what a restore or a catalog row needs. An object with no
/// `md5chksum` vouches for its bytes only by a single-part ETag.
pub async fn describe(transfer: &Transfer, v: &BucketVersion) -> Result<Source, String> {
    let (size, meta) = match v.head {
        Some(head) => head,
        None => transfer
            .head_metadata(&v.key, v.version_id.as_deref())
            .await
            .map_err(|e| e.to_string())?,
    };
    let etag_md5 = (v.etag.len() == 32 && !v.etag.contains('-')).then(|| v.etag.clone());
    let md5 = meta.md5.map(hex::encode).or(etag_md5).ok_or_else(|| {
        format!(
            "{} has no md5chksum and a multipart ETag: its content cannot be vouched for",
            v.key
        )
    })?;
    Ok(Source {
        path: v.path.clone(),
        key: v.key.clone(),
        version_id: v.version_id.clone(),
        md5,
        size,
        mtime: meta.mtime.unwrap_or(v.valid_from),
        mode: meta.mode,
        owner: meta.uid.zip(meta.gid),
    })
}

/// What `rebuild-catalog` did.
#[derive(Debug, Default)]
pub struct Rebuilt {
    /// Current files recorded as synced.
    pub files: u64,
    /// Past versions recorded (HISTORY=prefix copies).
    pub past_versions: u64,
    /// `key: reason` for objects that could not be recorded.
    pub skipped: Vec<String>,
}

/// Recreates an agent's rows from the bucket. Refused if the agent has rows: it is for a
/// catalog that was lost, not one to merge into.
pub async fn rebuild(agent: &crate::agent::Agent) -> anyhow::Result<Rebuilt> {
    let existing = agent.catalog.files_page(None, 1).await?;
    if !existing.is_empty() {
        anyhow::bail!(portail_core::config::ConfigError::Invalid {
            var: "AGENT_ID".into(),
            reason: format!(
                "agent {} already has rows in this catalog; rebuild-catalog only fills an empty one",
                agent.name
            ),
        });
    }
    let versioned = agent.history == History::Versioning;
    let mut by_path = bucket_versions(
        &agent.transfer,
        &agent.prefix,
        &agent.history_prefix,
        versioned,
    )
    .await?;
    let concurrency = agent.transfer.config().requests_in_flight;
    refine(&agent.transfer, &mut by_path, None, concurrency).await;
    let all: Vec<BucketVersion> = by_path.into_values().flatten().collect();
    let mut done = Rebuilt::default();
    // Current versions first: their rows are `synced`; a path with only history is `deleted`.
    let (current, past): (Vec<_>, Vec<_>) = all.into_iter().partition(|v| v.valid_to.is_none());
    for (batch, status) in [(current, "synced"), (past, "deleted")] {
        for chunk in batch.chunks(500) {
            let rows = describe_all(agent, chunk, &mut done.skipped).await;
            let rows: Vec<_> = rows
                .into_iter()
                .map(|(v, src)| rebuilt_row(&agent.prefix, v, src))
                .collect();
            let n = agent.catalog.record_rebuilt(status, &rows).await?;
            match status {
                "synced" => done.files += n,
                _ => done.past_versions += n,
            }
        }
    }
    Ok(done)
}

/// HEADs a batch of objects, UPLOAD_CONCURRENCY at a time; those that cannot be described are
/// added to `skipped`.
async fn describe_all<'a>(
    agent: &crate::agent::Agent,
    batch: &'a [BucketVersion],
    skipped: &mut Vec<String>,
) -> Vec<(&'a BucketVersion, Source)> {
    let described: Vec<_> = stream::iter(batch)
        .map(|v| async move { (v, describe(&agent.transfer, v).await) })
        .buffer_unordered(agent.transfer.config().requests_in_flight)
        .collect()
        .await;
    let mut rows = Vec::with_capacity(described.len());
    for (v, result) in described {
        match result {
            Ok(src) => rows.push((v, src)),
            Err(reason) => skipped.push(format!("{}: {reason}", v.key)),
        }
    }
    rows
}

fn rebuilt_row(prefix: &str, v: &BucketVersion, src: Source) -> RebuiltVersion {
    let current = v.valid_to.is_none();
    RebuiltVersion {
        s3_key: format!("{prefix}{}", v.path),
        history_key: (!current && v.version_id.is_none()).then(|| v.key.clone()),
        version_id: v.version_id.clone(),
        content_type: content_type_for(&v.path),
        path: v.path.clone(),
        size_bytes: src.size,
        md5: src.md5,
        mtime: src.mtime,
        mode: src.mode.map(|m| m as i32),
        uid: src.owner.map(|(u, _)| u.into()),
        gid: src.owner.map(|(_, g)| g.into()),
        valid_from: v.valid_from,
        valid_to: v.valid_to,
        etag: Some(v.etag.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn obj(modified: i64) -> ListedObject {
        ListedObject {
            size: 1,
            etag: "e".into(),
            storage_class: None,
            modified: Some(t(modified)),
        }
    }

    #[test]
    fn a_listing_chains_each_paths_versions_and_picks_the_one_current_at_a_time() {
        let h = "p/.portail-history/";
        let objects = HashMap::from([
            ("p/a.txt".to_string(), obj(300)),
            (History::key(h, "a.txt", t(100)), obj(199)),
            (History::key(h, "a.txt", t(200)), obj(299)),
            (History::key(h, "gone.txt", t(50)), obj(250)),
            ("p/.portail-history/stray".to_string(), obj(1)),
            ("p/dir/".to_string(), obj(1)),
        ]);
        let by_path = versions_from_listing(&objects, "p/", h);
        assert_eq!(by_path.len(), 2, "{by_path:?}");
        let a = &by_path["a.txt"];
        let spans: Vec<_> = a.iter().map(|v| (v.valid_from, v.valid_to)).collect();
        // Each replaced version ends where the next began, the last is current.
        assert_eq!(
            spans,
            vec![
                (t(100), Some(t(200))),
                (t(200), Some(t(300))),
                (t(300), None)
            ]
        );
        let keys = |at| -> Vec<String> {
            as_of(&by_path, t(at), &[])
                .into_iter()
                .map(|v| v.key)
                .collect()
        };
        assert_eq!(keys(50), vec![History::key(h, "gone.txt", t(50))]);
        assert_eq!(
            keys(150),
            vec![
                History::key(h, "a.txt", t(100)),
                History::key(h, "gone.txt", t(50))
            ]
        );
        assert_eq!(
            keys(260),
            vec![History::key(h, "a.txt", t(200))],
            "gone.txt was deleted at 250"
        );
        assert_eq!(keys(400), vec!["p/a.txt".to_string()]);
        assert!(as_of(&by_path, t(400), &["other".into()]).is_empty());
    }

    fn entry(key: &str, id: &str, at: i64, latest: bool, marker: bool) -> ListedVersion {
        ListedVersion {
            key: key.into(),
            version_id: id.into(),
            is_latest: latest,
            delete_marker: marker,
            modified: t(at),
            etag: "e".into(),
        }
    }

    #[test]
    fn a_version_listing_ends_each_version_at_the_next_entry_and_a_marker_ends_a_path() {
        let listed = vec![
            entry("p/a.txt", "a3", 300, true, false),
            entry("p/a.txt", "a1", 100, false, false),
            entry("p/gone.txt", "m", 250, true, true),
            entry("p/a.txt", "a2", 200, false, false),
            entry("p/gone.txt", "g1", 50, false, false),
            entry(
                "p/.portail-history/x/20200101T000000.000000Z",
                "h",
                1,
                true,
                false,
            ),
        ];
        let by_path = versions_from_version_listing(listed, "p/", "p/.portail-history/");
        let spans = |p: &str| -> Vec<_> {
            by_path[p]
                .iter()
                .map(|v| (v.version_id.clone().unwrap(), v.valid_from, v.valid_to))
                .collect()
        };
        assert_eq!(
            spans("a.txt"),
            vec![
                ("a1".into(), t(100), Some(t(200))),
                ("a2".into(), t(200), Some(t(300))),
                ("a3".into(), t(300), None)
            ]
        );
        assert_eq!(spans("gone.txt"), vec![("g1".into(), t(50), Some(t(250)))]);
        assert_eq!(by_path.len(), 2, "history copies are not read: {by_path:?}");
        let at = |s| {
            as_of(&by_path, t(s), &[])
                .into_iter()
                .map(|v| v.version_id.unwrap())
        };
        assert_eq!(at(150).collect::<Vec<_>>(), ["a1", "g1"]);
        assert_eq!(
            at(260).collect::<Vec<_>>(),
            ["a2"],
            "gone.txt was deleted at 250"
        );
    }
}
