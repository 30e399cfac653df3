//! Stage 3, hash: read a file once and compute its MD5.
//!
//! In: an absolute path and the metadata the scan saw. Out: a [`Hashed`] file (MD5, the
//! metadata observed while reading, and for small files the bytes themselves, so the upload
//! does not read the file a second time), or a [`HashError`].
//!
//! Blocking: run it on `spawn_blocking`. The file is opened with `O_NONBLOCK | O_NOFOLLOW`
//! and checked to be a regular file through its descriptor, so a FIFO or symlink that
//! replaced the file since the scan can never block or redirect the read.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use md5::{Digest, Md5};

use crate::model::report::FailureKind;
use crate::model::tree::FileMeta;

/// Read buffer for streaming hashes.
const BUF_SIZE: usize = 1 << 20;

/// A file's content identity after reading it.
#[derive(Debug)]
pub struct Hashed {
    /// The MD5 of the whole file.
    pub md5: [u8; 16],
    /// The metadata before reading; equal to the metadata after reading.
    pub meta: FileMeta,
    /// The whole content, when the file was at most the in-memory limit.
    pub bytes: Option<bytes::Bytes>,
}

/// Why a file could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The file disappeared since the scan.
    #[error("vanished before it could be read")]
    Vanished,
    /// The path no longer names a regular file (a FIFO, directory or symlink replaced it).
    #[error("no longer a regular file")]
    NotRegular,
    /// Size or times changed while the file was being read.
    #[error("changed while being read")]
    Changed,
    /// Any other I/O error, e.g. permission denied.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The blocking task that read the file panicked.
    #[error("the read task panicked: {0}")]
    Panicked(String),
}

impl HashError {
    /// The kinds [`HashError::kind`] returns in normal operation (a panic is not exported
    /// as a zero series).
    pub const KINDS: [FailureKind; 5] = [
        FailureKind::Vanished,
        FailureKind::NotRegular,
        FailureKind::Changed,
        FailureKind::PermissionDenied,
        FailureKind::Io,
    ];

    /// The bounded kind, for metrics.
    pub fn kind(&self) -> FailureKind {
        match self {
            HashError::Vanished => FailureKind::Vanished,
            HashError::NotRegular => FailureKind::NotRegular,
            HashError::Changed => FailureKind::Changed,
            HashError::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                FailureKind::PermissionDenied
            }
            HashError::Io(_) => FailureKind::Io,
            HashError::Panicked(_) => FailureKind::Panic,
        }
    }
}

/// Opens a regular file without following links or blocking, and returns it with its metadata.
pub fn open_regular(path: &Path) -> Result<(File, FileMeta), HashError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => HashError::Vanished,
            Some(libc::ELOOP) => HashError::NotRegular,
            _ => HashError::Io(e),
        })?;
    let m = file.metadata()?;
    if !m.is_file() {
        return Err(HashError::NotRegular);
    }
    Ok((file, FileMeta::from_metadata(&m)))
}

/// Reads the file and hashes it. Files of at most `keep_limit` bytes are kept in memory.
pub fn hash_file(path: &Path, keep_limit: u64) -> Result<Hashed, HashError> {
    let (mut file, meta) = open_regular(path)?;
    let mut hasher = Md5::new();
    let bytes = if meta.size <= keep_limit {
        let mut buf = Vec::with_capacity(meta.size as usize);
        file.read_to_end(&mut buf)?;
        hasher.update(&buf);
        Some(bytes::Bytes::from(buf))
    } else {
        let mut buf = vec![0u8; BUF_SIZE];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        None
    };
    let after = FileMeta::from_metadata(&file.metadata()?);
    let read = bytes.as_ref().map(|b| b.len() as u64);
    if after != meta || read.is_some_and(|n| n != meta.size) {
        return Err(HashError::Changed);
    }
    Ok(Hashed {
        md5: hasher.finalize().into(),
        meta,
        bytes,
    })
}

/// Reads the first `len` bytes of a file that may still be growing, twice, and returns them
/// hashed when both reads agree and the file is still at least `len` bytes long: the prefix
/// then is a state the file really had (a file that only grows keeps its prefix). When the
/// reads disagree the file was rewritten in place meanwhile: [`HashError::Changed`].
///
/// The metadata returned is what the file looked like when opened, with `len` as its size,
/// so the catalog records exactly what was read.
pub fn hash_prefix(path: &Path, keep_limit: u64) -> Result<Hashed, HashError> {
    let (file, meta) = open_regular(path)?;
    let len = meta.size;
    let first = read_prefix(&file, len, keep_limit)?;
    let second = read_prefix(&file, len, 0)?;
    let now = FileMeta::from_metadata(&file.metadata()?);
    if first.0 != second.0 || now.size < len {
        return Err(HashError::Changed);
    }
    Ok(Hashed {
        md5: first.0,
        meta,
        bytes: first.1,
    })
}

/// The MD5 of a file's first `len` bytes now: `Changed` when it is shorter than that.
pub fn prefix_md5(path: &Path, len: u64) -> Result<[u8; 16], HashError> {
    let (file, _) = open_regular(path)?;
    Ok(read_prefix(&file, len, 0)?.0)
}

/// The MD5 of bytes `0..len` (and the bytes, when `len <= keep_limit`); `Changed` when the
/// file is shorter than `len` now.
fn read_prefix(
    file: &File,
    len: u64,
    keep_limit: u64,
) -> Result<([u8; 16], Option<bytes::Bytes>), HashError> {
    use std::os::unix::fs::FileExt;
    let mut hasher = Md5::new();
    let mut kept = (len <= keep_limit).then(|| Vec::with_capacity(len as usize));
    let mut buf = vec![0u8; BUF_SIZE.min(len.max(1) as usize)];
    let mut offset = 0u64;
    while offset < len {
        let want = (len - offset).min(buf.len() as u64) as usize;
        let n = file.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            return Err(HashError::Changed);
        }
        hasher.update(&buf[..n]);
        if let Some(k) = kept.as_mut() {
            k.extend_from_slice(&buf[..n]);
        }
        offset += n as u64;
    }
    Ok((hasher.finalize().into(), kept.map(bytes::Bytes::from)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_known_content_in_memory_and_streamed() {
        let dir = std::env::temp_dir().join(format!("portail-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        let small = hash_file(&p, 1024).unwrap();
        assert_eq!(hex::encode(small.md5), "b1946ac92492d2347c6235b4d2611184");
        assert_eq!(small.bytes.as_deref(), Some(&b"hello\n"[..]));
        let streamed = hash_file(&p, 0).unwrap();
        assert_eq!(streamed.md5, small.md5);
        assert!(streamed.bytes.is_none());
        assert!(matches!(
            hash_file(&dir.join("nope"), 0),
            Err(HashError::Vanished)
        ));
        assert!(matches!(hash_file(&dir, 0), Err(HashError::NotRegular)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_prefix_is_the_bytes_present_at_open() {
        let dir = std::env::temp_dir().join(format!("portail-prefix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("log");
        std::fs::write(&p, b"line 1\nline 2\n").unwrap();
        for keep in [1024, 0] {
            let h = hash_prefix(&p, keep).unwrap();
            assert_eq!(h.meta.size, 14);
            assert_eq!(h.md5, hash_file(&p, 1024).unwrap().md5);
            assert_eq!(h.bytes.is_some(), keep > 0);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
