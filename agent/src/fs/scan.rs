//! Stage 1, scan: walk the root and describe every entry.
//!
//! In: the root directory, the key prefix and the EXCLUDE patterns.
//! Out: a [`ScanOutcome`]: regular files as [`LocalFile`]s in bytewise path order (the order of
//! the catalog's `collate "C"`), plus every entry that was skipped on purpose and every entry
//! that could not be read. Nothing is ever silently dropped.
//!
//! Symlinks are never followed, so loops are harmless. FIFOs, sockets and devices are skipped
//! without being opened (opening a FIFO blocks).

use std::cmp::Ordering;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use globset::{GlobSet, GlobSetBuilder};
use walkdir::{DirEntry, WalkDir};

use crate::model::tree::{FileMeta, LocalFile, SkipReason, Skipped};

/// The longest key S3 accepts, in bytes, prefix included.
pub const MAX_KEY_BYTES: usize = 1024;

/// An entry the scan could not read.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanFailure {
    /// The relative path (lossy), or the root's own path.
    pub path: String,
    /// The I/O error and its causes.
    pub error: String,
}

/// What one walk of the root found.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// Regular files, in bytewise path order.
    pub files: Vec<LocalFile>,
    /// Entries skipped on purpose.
    pub skipped: Vec<Skipped>,
    /// Entries that could not be read. Any of these disables deletes for the pass.
    pub failures: Vec<ScanFailure>,
}

/// Why a scan could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The root does not exist or is not a directory: an unmounted share looks like this.
    #[error("SYNC_ROOT {0} is missing or not a directory (is the share mounted?)")]
    RootMissing(PathBuf),
}

/// Compiled EXCLUDE patterns.
#[derive(Debug, Clone)]
pub struct Excludes {
    /// Patterns without a '/', matched against the entry's name at any depth.
    names: GlobSet,
    /// Patterns with a '/', matched against the whole relative path.
    paths: GlobSet,
}

impl Excludes {
    /// Compiles the patterns. `*` never crosses a '/'; `**` does.
    pub fn new(patterns: &[String]) -> Result<Self, globset::Error> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            let glob = globset::GlobBuilder::new(p.trim_start_matches('/'))
                .literal_separator(true)
                .build()?;
            if p.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        Ok(Excludes {
            names: names.build()?,
            paths: paths.build()?,
        })
    }

    /// Whether a path is excluded itself or lies below an excluded directory (for paths that
    /// come from file-system events rather than from a walk, which prunes excluded directories).
    pub fn covers(&self, rel: &str, is_dir: bool) -> bool {
        let mut end = 0;
        while let Some(i) = rel[end..].find('/') {
            end += i;
            if self.is_excluded(&rel[..end], true) {
                return true;
            }
            end += 1;
        }
        self.is_excluded(rel, is_dir)
    }

    /// Whether a relative path (a file, or a directory when `is_dir`) is excluded.
    pub fn is_excluded(&self, rel: &str, is_dir: bool) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if self.names.is_match(name) || self.paths.is_match(rel) {
            return true;
        }
        // `.git/**` should prune the directory `.git` itself.
        is_dir && self.paths.is_match(format!("{rel}/"))
    }
}

/// Why a non-directory entry is not synced, if it is not: the one rule shared by the walk and
/// by watch mode's per-path [`inspect`]. `utf8` says whether the relative path decoded.
/// The S3 key of a root-relative path: the prefix, then the path byte for byte (no escaping,
/// no normalisation: NFC and NFD names stay two keys). Refused when the name is not UTF-8 (a
/// key is UTF-8) or when the key would pass [`MAX_KEY_BYTES`].
pub fn object_key(prefix: &str, rel: &[u8]) -> Result<String, SkipReason> {
    let rel = std::str::from_utf8(rel).map_err(|_| SkipReason::NonUtf8Name)?;
    if prefix.len() + rel.len() > MAX_KEY_BYTES {
        return Err(SkipReason::KeyTooLong);
    }
    Ok(format!("{prefix}{rel}"))
}

/// The inverse of [`object_key`]: the relative path a key stands for under this prefix.
pub fn path_of_key<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    key.strip_prefix(prefix).filter(|p| !p.is_empty())
}

fn skip_reason(ft: std::fs::FileType, utf8: bool, prefix: &str, rel: &str) -> Option<SkipReason> {
    if ft.is_symlink() {
        Some(SkipReason::Symlink)
    } else if !ft.is_file() {
        // FIFOs, sockets, block and character devices: never opened.
        Some(SkipReason::SpecialFile)
    } else if !utf8 {
        Some(SkipReason::NonUtf8Name)
    } else {
        object_key(prefix, rel.as_bytes()).err()
    }
}

/// Sorts siblings so that the walk yields full paths in bytewise order: a directory sorts as
/// if its name ended with '/', which is where its children fall among its siblings.
fn byte_order(a: &DirEntry, b: &DirEntry) -> Ordering {
    let key = |e: &DirEntry| {
        let slash: &[u8] = if e.file_type().is_dir() { b"/" } else { b"" };
        (e.file_name().as_bytes().to_vec(), slash)
    };
    let (an, asl) = key(a);
    let (bn, bsl) = key(b);
    an.iter().chain(asl).cmp(bn.iter().chain(bsl))
}

/// Walks the root and collects every file. Blocking: call it from `spawn_blocking`.
pub fn scan(root: &Path, prefix: &str, excludes: &Excludes) -> Result<ScanOutcome, ScanError> {
    let mut files = Vec::new();
    let mut out = scan_with(root, prefix, excludes, |f| {
        files.push(f);
        true
    })?;
    out.files = files;
    Ok(out)
}

/// Walks the root, handing each regular file to `on_file` as it is found (in bytewise path
/// order) instead of collecting them, so memory does not grow with the tree. The walk stops
/// early when `on_file` returns false. The outcome's `files` stays empty. Blocking.
pub fn scan_with(
    root: &Path,
    prefix: &str,
    excludes: &Excludes,
    on_file: impl FnMut(LocalFile) -> bool,
) -> Result<ScanOutcome, ScanError> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        _ => return Err(ScanError::RootMissing(root.to_path_buf())),
    }
    Ok(walk(root, root, prefix, excludes, on_file))
}

/// Like [`scan_with`], but only below `sub` (a directory relative to the root). Paths stay
/// relative to the root, so EXCLUDE patterns anchored at the root still apply. Watch mode uses
/// it for a directory that appeared: files written before its watch existed are found too.
pub fn scan_subtree(
    root: &Path,
    sub: &str,
    prefix: &str,
    excludes: &Excludes,
    on_file: impl FnMut(LocalFile) -> bool,
) -> ScanOutcome {
    walk(root, &root.join(sub), prefix, excludes, on_file)
}

/// How many regular files a walk finds, and how many entries it cannot read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeCount {
    /// Regular files that would be synced.
    pub files: u64,
    /// Entries that could not be read.
    pub failures: u64,
}

/// Counts what a pass's walk would find now, without keeping it. Blocking.
pub fn count(root: &Path, prefix: &str, excludes: &Excludes) -> TreeCount {
    let mut files = 0;
    let out = walk(root, root, prefix, excludes, |_| {
        files += 1;
        true
    });
    TreeCount {
        files,
        failures: out.failures.len() as u64,
    }
}

/// What the walk makes of one entry.
enum Visit {
    File(LocalFile),
    Dir,
    /// An excluded directory: skip it and everything below.
    SkipDir(Skipped),
    Skipped(Skipped),
    Failed(ScanFailure),
    /// Gone between the directory listing and its read or stat (a folder removed while the
    /// walk was in it): not in the tree, and no error. Counting it as unreadable would hold
    /// every delete of the pass under `scan_errors`, for a tree that is only changing.
    Vanished,
}

/// Whether an error says the entry is no longer there.
fn vanished(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ENOTDIR)
}

fn walk(
    root: &Path,
    start: &Path,
    prefix: &str,
    excludes: &Excludes,
    mut on_file: impl FnMut(LocalFile) -> bool,
) -> ScanOutcome {
    let mut out = ScanOutcome::default();
    let mut walk = WalkDir::new(start)
        .follow_links(false)
        .sort_by(byte_order)
        .into_iter();
    while let Some(item) = walk.next() {
        let visit = match item {
            Ok(e) if e.depth() == 0 => continue,
            Ok(e) => visit(root, &e, prefix, excludes),
            Err(err) if err.io_error().is_some_and(vanished) => Visit::Vanished,
            Err(err) => Visit::Failed(ScanFailure {
                path: err
                    .path()
                    .map(|p| relative(root, p).0)
                    .unwrap_or_else(|| root.display().to_string()),
                error: err.to_string(),
            }),
        };
        match visit {
            Visit::File(file) => {
                if !on_file(file) {
                    break;
                }
            }
            Visit::Dir | Visit::Vanished => {}
            Visit::SkipDir(s) => {
                out.skipped.push(s);
                walk.skip_current_dir();
            }
            Visit::Skipped(s) => out.skipped.push(s),
            Visit::Failed(f) => out.failures.push(f),
        }
    }
    out
}

/// Classifies one entry of the walk.
fn visit(root: &Path, entry: &DirEntry, prefix: &str, excludes: &Excludes) -> Visit {
    let (rel, utf8) = relative(root, entry.path());
    let ft = entry.file_type();
    let excluded = |rel: String| Skipped {
        path: rel,
        raw_hex: None,
        reason: SkipReason::Excluded,
    };
    if ft.is_dir() {
        if utf8 && excludes.is_excluded(&rel, true) {
            return Visit::SkipDir(excluded(rel));
        }
        return Visit::Dir;
    }
    if utf8 && excludes.is_excluded(&rel, false) {
        return Visit::Skipped(excluded(rel));
    }
    if let Some(reason) = skip_reason(ft, utf8, prefix, &rel) {
        let raw_hex = (!utf8).then(|| hex::encode(relative_bytes(root, entry.path())));
        return Visit::Skipped(Skipped {
            path: rel,
            raw_hex,
            reason,
        });
    }
    match entry.metadata() {
        Ok(m) => Visit::File(LocalFile {
            key: format!("{prefix}{rel}"),
            path: rel,
            meta: FileMeta::from_metadata(&m),
        }),
        Err(err) if err.io_error().is_some_and(vanished) => Visit::Vanished,
        Err(err) => Visit::Failed(ScanFailure {
            path: rel,
            error: err.to_string(),
        }),
    }
}

fn relative_bytes<'a>(root: &Path, path: &'a Path) -> &'a [u8] {
    path.strip_prefix(root)
        .unwrap_or(path)
        .as_os_str()
        .as_bytes()
}

/// The relative path as text, and whether it was valid UTF-8.
fn relative(root: &Path, path: &Path) -> (String, bool) {
    let raw = relative_bytes(root, path);
    match std::str::from_utf8(raw) {
        Ok(s) => (s.to_string(), true),
        Err(_) => (String::from_utf8_lossy(raw).into_owned(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Excludes {
        Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn excludes_match_names_anywhere_and_paths_from_the_root() {
        let e = ex(&["*.tmp", ".git/**", "build/cache"]);
        assert!(e.is_excluded("a.tmp", false));
        assert!(e.is_excluded("deep/er/a.tmp", false));
        assert!(!e.is_excluded("a.tmpx", false));
        assert!(e.is_excluded(".git", true));
        assert!(e.is_excluded(".git/config", false));
        assert!(!e.is_excluded("sub/.git/config", false));
        assert!(e.is_excluded("build/cache", true));
        assert!(!e.is_excluded("build", true));
    }

    #[test]
    fn a_folder_removed_while_the_walk_is_in_it_is_gone_not_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.txt"), b"a").unwrap();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("b/c/d.txt"), b"d").unwrap();
        std::fs::write(root.join("z.txt"), b"z").unwrap();
        let mut seen = Vec::new();
        // The walk lists the root, then yields a.txt; the folder goes before it is read.
        let out = walk(root, root, "", &ex(&[]), |f| {
            if f.path == "a.txt" {
                std::fs::remove_dir_all(root.join("b")).unwrap();
            }
            seen.push(f.path);
            true
        });
        assert!(out.failures.is_empty(), "{:?}", out.failures);
        assert_eq!(seen, ["a.txt", "z.txt"]);
        // An entry that is really unreadable still is.
        std::fs::create_dir(root.join("locked")).unwrap();
        std::fs::write(root.join("locked/x"), b"x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("locked"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
        let denied = std::fs::read_dir(root.join("locked")).is_err(); // false as root
        let out = walk(root, root, "", &ex(&[]), |_| true);
        assert_eq!(
            out.failures.len(),
            usize::from(denied),
            "{:?}",
            out.failures
        );
        std::fs::set_permissions(root.join("locked"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }

    #[test]
    fn walk_order_is_bytewise_path_order() {
        let dir = tempfile_dir();
        for p in ["a-c", "a/b", "a.txt", "a/z/y", "B", "é", "a0"] {
            let full = dir.join(p);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, b"x").unwrap();
        }
        let out = scan(&dir, "", &ex(&[])).unwrap();
        let got: Vec<&str> = out.files.iter().map(|f| f.path.as_str()).collect();
        let mut want = got.clone();
        want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(got, want);
        assert_eq!(got.len(), 7);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn keys_up_to_1024_bytes_pass_and_longer_ones_are_refused() {
        let dir = tempfile_dir().join("keys");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a".repeat(24)), b"x").unwrap();
        std::fs::write(dir.join("b".repeat(25)), b"x").unwrap();
        let prefix = format!("{}/", "p".repeat(999));
        let out = scan(&dir, &prefix, &ex(&[])).unwrap();
        assert_eq!(out.files.len(), 1);
        assert_eq!(out.files[0].key.len(), 1024);
        assert_eq!(out.skipped.len(), 1);
        assert_eq!(out.skipped[0].reason, SkipReason::KeyTooLong);
        assert_eq!(out.skipped[0].path.len(), 25);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "portail-scan-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    proptest::proptest! {
        /// Any byte string either round-trips through the key or is refused for a reason
        /// that really holds.
        #[test]
        fn key_encoding_round_trips_or_refuses(
            prefix in "[a-z0-9/]{0,40}",
            rel in proptest::collection::vec(proptest::num::u8::ANY, 1..1100),
        ) {
            match object_key(&prefix, &rel) {
                Ok(key) => {
                    proptest::prop_assert_eq!(&key.as_bytes()[..prefix.len()], prefix.as_bytes());
                    proptest::prop_assert_eq!(&key.as_bytes()[prefix.len()..], &rel[..]);
                    proptest::prop_assert!(key.len() <= MAX_KEY_BYTES);
                    let back = path_of_key(&prefix, &key).map(|p| p.as_bytes().to_vec());
                    proptest::prop_assert_eq!(back, Some(rel.clone()));
                }
                Err(SkipReason::NonUtf8Name) => {
                    proptest::prop_assert!(std::str::from_utf8(&rel).is_err());
                }
                Err(SkipReason::KeyTooLong) => {
                    proptest::prop_assert!(std::str::from_utf8(&rel).is_ok());
                    proptest::prop_assert!(prefix.len() + rel.len() > MAX_KEY_BYTES);
                }
                Err(other) => proptest::prop_assert!(false, "unexpected refusal {:?}", other),
            }
        }

        /// Valid UTF-8 names of any script round-trip exactly.
        #[test]
        fn utf8_names_round_trip(prefix in "[a-z]{0,10}/?", rel in "\\PC{1,200}") {
            let key = object_key(&prefix, rel.as_bytes()).unwrap();
            proptest::prop_assert_eq!(path_of_key(&prefix, &key), Some(rel.as_str()));
        }
    }
}

/// What one path (from a file-system event) is now.
#[derive(Debug)]
pub enum PathState {
    /// A regular file to sync.
    File(LocalFile),
    /// A directory: walk it with [`scan_subtree`].
    Dir,
    /// Nothing there any more.
    Missing,
    /// Something not to sync: a symlink, special file, excluded, or a bad name/key.
    Skipped(Skipped),
    /// It could not be inspected.
    Failed(ScanFailure),
}

/// Classifies one relative path the way the walk would. Blocking (one `lstat`).
pub fn inspect(root: &Path, rel: &str, prefix: &str, excludes: &Excludes) -> PathState {
    let meta = match std::fs::symlink_metadata(root.join(rel)) {
        Ok(m) => m,
        Err(e) if vanished(&e) => return PathState::Missing,
        Err(e) => {
            return PathState::Failed(ScanFailure {
                path: rel.to_string(),
                error: e.to_string(),
            })
        }
    };
    let ft = meta.file_type();
    let skipped = |reason| {
        PathState::Skipped(Skipped {
            path: rel.to_string(),
            raw_hex: None,
            reason,
        })
    };
    if excludes.covers(rel, ft.is_dir()) {
        return skipped(SkipReason::Excluded);
    }
    if ft.is_dir() {
        return PathState::Dir;
    }
    if let Some(reason) = skip_reason(ft, true, prefix, rel) {
        return skipped(reason);
    }
    PathState::File(LocalFile {
        key: format!("{prefix}{rel}"),
        path: rel.to_string(),
        meta: FileMeta::from_metadata(&meta),
    })
}

/// The relative, '/'-separated UTF-8 path of an absolute one under the root, if it has one.
pub fn relative_utf8(root: &Path, abs: &Path) -> Option<String> {
    let rel = abs.strip_prefix(root).ok()?;
    let s = rel.to_str()?;
    (!s.is_empty()).then(|| s.to_string())
}
