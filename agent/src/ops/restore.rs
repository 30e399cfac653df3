//! `portail-agent restore`: writes the tree (or some paths of it) as it was at a time.
//!
//! In: the catalog's versions current at `--at` (keyset pages in path order, so memory stays
//! flat however large the tree), a target directory. Out: each file downloaded to a temporary
//! name beside its final one, MD5-checked, given its mtime and mode (and owner, as root), then
//! renamed into place; a [`RestoreReport`].
//!
//! Safe to run again: a file already in place with the right MD5 is skipped, so a restore
//! killed half-way completes when run again, and the temporary name is fixed per file, so
//! nothing piles up. It never writes into SYNC_ROOT unless told (`--in-place`), and never
//! replaces a file with other content unless told (`--overwrite`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::catalog::{Catalog, VersionQuery, VersionRow};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use portail_core::config::ConfigError;

use crate::ops::source::Source;
use crate::store::{Transfer, TransferError};

/// Versions read from the catalog per page.
const PAGE: i64 = 1000;

/// What to restore, and how.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Where the tree is written.
    pub to: PathBuf,
    /// The time the tree is restored as of.
    pub at: DateTime<Utc>,
    /// Paths or directories to restore; empty: everything.
    pub paths: Vec<String>,
    /// Only list what would be done.
    pub dry_run: bool,
    /// Replace files in `to` whose content differs.
    pub overwrite: bool,
    /// Allow `to` to be SYNC_ROOT, or inside it.
    pub in_place: bool,
    /// Downloads in flight.
    pub concurrency: usize,
}

impl RestoreOptions {
    /// Everything into `to` as of `at`, with the defaults: no dry run, no overwrite, not in
    /// place, 32 downloads in flight (what `restore` uses without flags).
    pub fn new(to: impl Into<PathBuf>, at: DateTime<Utc>) -> Self {
        RestoreOptions {
            to: to.into(),
            at,
            paths: Vec::new(),
            dry_run: false,
            overwrite: false,
            in_place: false,
            concurrency: 32,
        }
    }
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// Files written.
    pub restored: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Files already in place with the right content.
    pub present: u64,
    /// `path: reason` for each file that could not be restored.
    pub failed: Vec<String>,
    /// With `--dry-run`: what would be written.
    pub planned: Vec<String>,
}

impl RestoreReport {
    /// The one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "restore: {} files restored ({} bytes), {} already in place, {} failed",
            self.restored,
            self.bytes,
            self.present,
            self.failed.len()
        )
    }
}

/// Parses `--at`: RFC 3339, or an age such as `3h` (that long ago).
pub fn parse_at(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let age = humantime::parse_duration(s).map_err(|_| {
        format!("{s:?} is neither an RFC 3339 time (2026-11-20T10:00:00Z) nor an age (3h)")
    })?;
    let age = chrono::Duration::from_std(age).map_err(|e| e.to_string())?;
    Ok(Utc::now() - age)
}

/// A restore from the catalog.
#[derive(Debug, Clone)]
pub struct Restore<'a> {
    /// The catalog of the agent whose tree is restored.
    pub catalog: &'a Catalog,
    /// The S3 side (SSE-C key and BWLIMIT included).
    pub transfer: &'a Transfer,
    /// SYNC_ROOT, never written without `--in-place`.
    pub sync_root: &'a Path,
}

impl Restore<'_> {
    /// Checks the request, then restores page by page.
    pub async fn run(&self, opts: &RestoreOptions) -> anyhow::Result<RestoreReport> {
        check_target(&opts.to, self.sync_root, opts.in_place)?;
        self.check_request(opts).await?;
        let mut report = RestoreReport::default();
        let mut after: Option<String> = None;
        let progress = Counter::default();
        loop {
            let q = VersionQuery {
                agent_id: self.catalog.agent_id(),
                at: opts.at,
                paths: &opts.paths,
                after_path: after.as_deref(),
                limit: PAGE,
            };
            let page = self.catalog.versions_at(&q).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.path.clone());
            let mut sources = Vec::with_capacity(page.len());
            for v in page {
                sources.push(self.source(v).await?);
            }
            restore_all(
                self.transfer,
                sources.into_iter(),
                opts,
                &mut report,
                &progress,
            )
            .await;
        }
        make_durable(&opts.to, &mut report).await;
        Ok(report)
    }

    /// Where a version's bytes are. One that ended with a change of mtime or mode alone has
    /// no copy of its own: it shares the next copy of the same content (or, if the content
    /// never changed since, the object itself; the MD5 check tells).
    async fn source(&self, mut v: VersionRow) -> anyhow::Result<Source> {
        if v.valid_to.is_some() && v.history_key.is_none() && v.version_id.is_none() {
            v.history_key = self.catalog.shared_history_key(&v).await?;
        }
        Ok(Source::from(v))
    }

    /// `--at` before the first sync, and paths that never existed, are refused up front.
    async fn check_request(&self, opts: &RestoreOptions) -> anyhow::Result<()> {
        let first = self.catalog.first_version_at().await?;
        let refuse = |reason: String| ConfigError::Invalid {
            var: "--at".into(),
            reason,
        };
        match first {
            None => return Err(refuse("nothing was ever synced by this agent".into()).into()),
            Some(first) if opts.at < first => {
                return Err(refuse(format!(
                    "{} is before the first sync ({first}): there is nothing to restore",
                    opts.at
                ))
                .into())
            }
            Some(_) => {}
        }
        for p in &opts.paths {
            if !self.catalog.path_ever_existed(p).await? {
                return Err(ConfigError::Invalid {
                    var: "PATH".into(),
                    reason: format!("no file was ever synced at {p:?}, nor below it"),
                }
                .into());
            }
        }
        Ok(())
    }
}

/// `restore --from-bucket`: the same, with no catalog at all. What to restore comes from a
/// listing of the agent's prefix and its history ([`crate::ops::recover`]: the bucket's versions
/// when `versioned`, else the copies under `history_dir`); each file's MD5, mtime and mode
/// from its object's metadata.
pub async fn from_bucket(
    transfer: &Transfer,
    prefix: &str,
    history_dir: &str,
    versioned: bool,
    sync_root: &Path,
    opts: &RestoreOptions,
) -> anyhow::Result<RestoreReport> {
    check_target(&opts.to, sync_root, opts.in_place)?;
    let mut by_path =
        crate::ops::recover::bucket_versions(transfer, prefix, history_dir, versioned).await?;
    crate::ops::recover::refine(transfer, &mut by_path, Some(opts.at), opts.concurrency).await;
    refuse_what_the_bucket_lacks(&by_path, prefix, opts)?;
    let selected = crate::ops::recover::as_of(&by_path, opts.at, &opts.paths);
    drop(by_path);
    let (mut report, progress) = (RestoreReport::default(), Counter::default());
    for chunk in selected.chunks(PAGE as usize) {
        let described: Vec<_> = stream::iter(chunk)
            .map(|v| async move {
                (
                    v.path.clone(),
                    crate::ops::recover::describe(transfer, v).await,
                )
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        let mut sources = Vec::with_capacity(described.len());
        for (path, d) in described {
            match d {
                Ok(src) => sources.push(src),
                Err(reason) => report.failed.push(format!("{path}: {reason}")),
            }
        }
        restore_all(transfer, sources.into_iter(), opts, &mut report, &progress).await;
    }
    make_durable(&opts.to, &mut report).await;
    Ok(report)
}

/// Refuses, before anything is written, a restore the bucket cannot serve: nothing under the
/// prefix, `--at` before the oldest object, or a path never stored.
fn refuse_what_the_bucket_lacks(
    by_path: &std::collections::BTreeMap<String, Vec<crate::ops::recover::BucketVersion>>,
    prefix: &str,
    opts: &RestoreOptions,
) -> anyhow::Result<()> {
    let first = by_path.values().flatten().map(|v| v.valid_from).min();
    let refuse = |var: &str, reason: String| ConfigError::Invalid {
        var: var.into(),
        reason,
    };
    match first {
        None => anyhow::bail!(refuse(
            "S3_PREFIX",
            format!("no object under {prefix:?} in the bucket")
        )),
        Some(first) if opts.at < first => anyhow::bail!(refuse(
            "--at",
            format!(
                "{} is before the oldest object ({first}): there is nothing to restore",
                opts.at
            )
        )),
        Some(_) => {}
    }
    let ever = |p: &String| {
        by_path
            .keys()
            .any(|k| k == p || k.starts_with(&format!("{p}/")))
    };
    if let Some(p) = opts.paths.iter().find(|p| !ever(p)) {
        anyhow::bail!(refuse(
            "PATH",
            format!("no object was ever stored at {p:?}, nor below it")
        ));
    }
    Ok(())
}

/// Flushes the target's file system once (`sync -f`, i.e. syncfs), so that when a restore
/// reports success its files are on disk, without an fsync per file. A failure is reported.
async fn make_durable(to: &Path, report: &mut RestoreReport) {
    if report.restored == 0 {
        return;
    }
    let synced = tokio::process::Command::new("sync")
        .arg("-f")
        .arg(to)
        .status()
        .await;
    match synced {
        Ok(s) if s.success() => {}
        other => report.failed.push(format!(
            "{}: flushing to disk failed: {other:?}",
            to.display()
        )),
    }
}

/// Refuses a target inside SYNC_ROOT without `--in-place`.
fn check_target(to: &Path, sync_root: &Path, in_place: bool) -> anyhow::Result<()> {
    let (to_abs, root_abs) = (resolved(to), resolved(sync_root));
    if !in_place && to_abs.starts_with(&root_abs) {
        return Err(ConfigError::Invalid {
            var: "--to".into(),
            reason: format!(
                "{} is inside SYNC_ROOT ({}); restore elsewhere, or pass --in-place",
                to.display(),
                sync_root.display()
            ),
        }
        .into());
    }
    Ok(())
}

/// `p` made absolute with its existing part's symlinks resolved, so `./x`, `/srv/../srv/x`
/// and a link to SYNC_ROOT are all seen for what they are, even before `p` exists.
fn resolved(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = std::fs::canonicalize(cur) {
            return rest.iter().rev().fold(c, |acc, part| acc.join(part));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

/// Files and bytes restored so far, logged every few seconds.
#[derive(Debug, Default)]
struct Counter {
    files: AtomicU64,
    bytes: AtomicU64,
    logged: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Counter {
    fn add(&self, bytes: u64) {
        let files = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.is_none_or(|t| t.elapsed().as_secs() >= 5) {
            *logged = Some(std::time::Instant::now());
            tracing::info!(files, bytes, "restoring");
            eprintln!("restore: {files} files done, {bytes} bytes");
        }
    }
}

/// What happened to one file.
enum Done {
    Restored(u64),
    Present,
    Planned(String),
}

/// Restores a page of files, `opts.concurrency` at a time.
async fn restore_all(
    transfer: &Transfer,
    sources: impl Iterator<Item = Source>,
    opts: &RestoreOptions,
    report: &mut RestoreReport,
    progress: &Counter,
) {
    let results = stream::iter(sources.map(|s| async move {
        let path = s.path.clone();
        (path, restore_one(transfer, s, opts).await)
    }))
    .buffer_unordered(opts.concurrency.max(1))
    .collect::<Vec<_>>()
    .await;
    for (path, result) in results {
        match result {
            Ok(Done::Restored(bytes)) => {
                report.restored += 1;
                report.bytes += bytes;
                progress.add(bytes);
            }
            Ok(Done::Present) => report.present += 1,
            Ok(Done::Planned(line)) => report.planned.push(line),
            Err(reason) => report.failed.push(format!("{path}: {reason}")),
        }
    }
}

/// Restores one file: skip if present, refuse if different (unless `--overwrite`), else
/// download to the temporary name, check, set metadata, rename.
async fn restore_one(
    transfer: &Transfer,
    src: Source,
    opts: &RestoreOptions,
) -> Result<Done, String> {
    let dest = target_path(&opts.to, &src.path)?;
    if let Some(existing) = existing_md5(&dest).await? {
        if existing == src.md5 {
            return Ok(Done::Present);
        }
        if !opts.overwrite {
            return Err("a file with other content is in the way (pass --overwrite)".into());
        }
    }
    if opts.dry_run {
        return Ok(Done::Planned(format!(
            "restore {} ({} bytes, {})",
            src.path, src.size, src.mtime
        )));
    }
    let parent = dest.parent().ok_or("no parent directory")?;
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let temp = temp_path(&dest);
    let result = download_checked(transfer, &src, &temp).await;
    let result = match result {
        Ok(()) => finish(&src, &temp, &dest).await,
        Err(e) => Err(e),
    };
    if result.is_err() {
        // Never leave a partial file behind (a full disk, a bad MD5).
        let _ = tokio::fs::remove_file(&temp).await;
    }
    result.map(|()| Done::Restored(src.size.max(0) as u64))
}

/// `to/path`, refusing a path that could escape `to`.
fn target_path(to: &Path, path: &str) -> Result<PathBuf, String> {
    let safe = !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if !safe {
        return Err("refusing an unsafe path".into());
    }
    Ok(to.join(path))
}

/// The fixed temporary name beside `dest`: `.NAME.portail-restore`.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    dest.with_file_name(format!(".{name}.portail-restore"))
}

/// The MD5 of a regular file at `dest`; `None` if there is none. Anything else in the way
/// (a directory) is an error.
async fn existing_md5(dest: &Path) -> Result<Option<String>, String> {
    match tokio::fs::symlink_metadata(dest).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot inspect the target: {e}")),
        Ok(m) if !m.is_file() => return Err("something other than a file is in the way".into()),
        Ok(_) => {}
    }
    let p = dest.to_path_buf();
    let hashed = tokio::task::spawn_blocking(move || crate::fs::hash::hash_file(&p, 0))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read the file in the way: {e}"))?;
    Ok(Some(hex::encode(hashed.md5)))
}

/// Downloads into `temp` and checks the MD5.
async fn download_checked(transfer: &Transfer, src: &Source, temp: &Path) -> Result<(), String> {
    let md5 = transfer
        .download(
            &src.key,
            src.version_id.as_deref(),
            src.size.max(0) as u64,
            temp,
        )
        .await
        .map_err(|e| describe(&e, &src.key))?;
    if hex::encode(md5) != src.md5 {
        return Err(format!(
            "the object {} does not hold the recorded content (MD5 {} instead of {}): its history was not kept",
            src.key,
            hex::encode(md5),
            src.md5
        ));
    }
    Ok(())
}

/// Says what a failed download means for the person restoring.
fn describe(e: &TransferError, key: &str) -> String {
    match e {
        TransferError::S3 { code: Some(c), .. } if c == "InvalidObjectState" => {
            format!("{key} is archived (GLACIER, DEEP_ARCHIVE): run RestoreObject first")
        }
        TransferError::S3 { code: Some(c), .. } if c == "NoSuchKey" || c == "NoSuchVersion" => {
            format!("the object {key} is missing from S3")
        }
        other => other.to_string(),
    }
}

/// Sets mtime, owner (as root) and mode on `temp`, then renames it to `dest`.
async fn finish(src: &Source, temp: &Path, dest: &Path) -> Result<(), String> {
    let (src, temp2, dest2) = (src.clone(), temp.to_path_buf(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new().write(true).open(&temp2)?;
        file.set_modified(src.mtime.into())?;
        drop(file);
        // Only root may give a file away: for anyone else the files stay their own.
        if let Some((uid, gid)) = src.owner {
            match std::os::unix::fs::chown(&temp2, Some(uid), Some(gid)) {
                Err(e) if e.kind() != std::io::ErrorKind::PermissionDenied => return Err(e),
                _ => {}
            }
        }
        if let Some(mode) = src.mode {
            std::fs::set_permissions(&temp2, std::fs::Permissions::from_mode(mode & 0o7777))?;
        }
        std::fs::rename(&temp2, &dest2)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot finish {}: {e}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_takes_a_time_or_an_age() {
        let t = parse_at("2026-11-20T10:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-20T10:00:00+00:00");
        let age = parse_at("3h").unwrap();
        let expected = Utc::now() - chrono::Duration::hours(3);
        assert!((age - expected).num_seconds().abs() < 5);
        assert!(parse_at("yesterday-ish").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn paths_that_could_escape_the_target_are_refused() {
        let to = Path::new("/restore");
        assert_eq!(target_path(to, "a/b.txt").unwrap(), to.join("a/b.txt"));
        for bad in ["", "/etc/passwd", "a/../../x", "./a", "a//b"] {
            assert!(target_path(to, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_target_inside_sync_root_needs_in_place() {
        let root = tempfile::tempdir().unwrap();
        let inside = root.path().join("restore");
        assert!(check_target(&inside, root.path(), false).is_err());
        assert!(check_target(root.path(), root.path(), false).is_err());
        assert!(check_target(&inside, root.path(), true).is_ok());
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(check_target(elsewhere.path(), root.path(), false).is_ok());
    }

    #[test]
    fn the_temporary_name_is_fixed_and_hidden() {
        assert_eq!(
            temp_path(Path::new("/r/a/b.txt")),
            PathBuf::from("/r/a/.b.txt.portail-restore")
        );
    }
}
