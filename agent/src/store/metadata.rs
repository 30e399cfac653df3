//! The user metadata every object carries, so that other tools read our objects and a restore
//! needs nothing but the bucket.
//!
//! In: a file's MD5, content type and POSIX metadata. Out: `x-amz-meta-*` pairs in rclone's
//! names and formats, and back:
//! - `md5chksum`: the whole-file MD5, base64 (rclone's convention; the ETag of a multipart or
//!   SSE-KMS object is not an MD5);
//! - `mtime`: seconds since the epoch with up to 9 decimals (rclone reads and writes this);
//! - `mode`: `st_mode` in octal, type bits included (`100644`), as `rclone -M` writes it;
//! - `uid`, `gid`: decimal;
//! - `portail-since` (ours, only on an object whose metadata was refreshed in place): when its
//!   content became current, in `mtime`'s format. The refresh rewrites LastModified, and a
//!   restore from the bucket alone must still know the content is older.

use std::collections::HashMap;

use base64::Engine;
use chrono::{DateTime, Utc};

use crate::model::tree::FileMeta;

/// A file's POSIX metadata as stored on its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posix {
    /// Modification time (microseconds: what the scan and the catalog keep).
    pub mtime: DateTime<Utc>,
    /// `st_mode`, type bits included.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

impl From<&FileMeta> for Posix {
    fn from(m: &FileMeta) -> Self {
        Posix {
            mtime: m.mtime,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
        }
    }
}

/// Everything an object carries besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The whole-file MD5.
    pub md5: [u8; 16],
    /// The content type, from the extension.
    pub content_type: String,
    /// The file's POSIX metadata.
    pub posix: Posix,
    /// When the content became current, for a refresh of the metadata in place.
    pub since: Option<DateTime<Utc>>,
}

impl ObjectInfo {
    /// The user metadata to send (keys without the `x-amz-meta-` prefix).
    pub fn metadata(&self) -> HashMap<String, String> {
        let p = &self.posix;
        let mut meta = HashMap::from([
            ("md5chksum".to_string(), super::md5_base64(&self.md5)),
            ("mtime".to_string(), format_mtime(p.mtime)),
            ("mode".to_string(), format!("{:o}", p.mode)),
            ("uid".to_string(), p.uid.to_string()),
            ("gid".to_string(), p.gid.to_string()),
        ]);
        if let Some(since) = self.since {
            meta.insert(SINCE.to_string(), format_mtime(since));
        }
        meta
    }
}

/// Our metadata name for [`ObjectInfo::since`].
pub const SINCE: &str = "portail-since";

/// rclone's `mtime`: seconds, then the fraction with trailing zeros removed.
pub fn format_mtime(t: DateTime<Utc>) -> String {
    let nanos = t.timestamp_subsec_nanos();
    if nanos == 0 {
        return t.timestamp().to_string();
    }
    let frac = format!("{nanos:09}");
    format!("{}.{}", t.timestamp(), frac.trim_end_matches('0'))
}

/// Parses rclone's `mtime` (also RFC 3339, which older rclone versions wrote), truncated to
/// microseconds like the scan.
pub fn parse_mtime(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(truncate_micros(t.with_timezone(&Utc)));
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = format!("{frac:0<9}").parse().ok()?;
    DateTime::from_timestamp(secs, nanos).map(truncate_micros)
}

fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let micros = t.timestamp_subsec_micros();
    DateTime::from_timestamp(t.timestamp(), micros * 1000).unwrap_or(t)
}

/// What a restore or a catalog rebuild reads back from an object's metadata. Every field is
/// optional: objects written by other tools may carry none of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadBack {
    /// From `md5chksum`.
    pub md5: Option<[u8; 16]>,
    /// From `mtime`.
    pub mtime: Option<DateTime<Utc>>,
    /// From `mode` (octal).
    pub mode: Option<u32>,
    /// From `uid`.
    pub uid: Option<u32>,
    /// From `gid`.
    pub gid: Option<u32>,
    /// From `portail-since`.
    pub since: Option<DateTime<Utc>>,
}

/// Reads our metadata back; a malformed value counts as absent.
pub fn read_back(meta: Option<&HashMap<String, String>>) -> ReadBack {
    let Some(meta) = meta else {
        return ReadBack::default();
    };
    let md5 = meta.get("md5chksum").and_then(|b| {
        let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
        <[u8; 16]>::try_from(raw.as_slice()).ok()
    });
    ReadBack {
        md5,
        mtime: meta.get("mtime").and_then(|s| parse_mtime(s)),
        mode: meta
            .get("mode")
            .and_then(|s| u32::from_str_radix(s, 8).ok()),
        uid: meta.get("uid").and_then(|s| s.parse().ok()),
        gid: meta.get("gid").and_then(|s| s.parse().ok()),
        since: meta.get(SINCE).and_then(|s| parse_mtime(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtime_is_rclones_format_and_reads_back() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap();
        assert_eq!(format_mtime(t), "1700000000.123456");
        assert_eq!(parse_mtime("1700000000.123456"), Some(t));
        let whole = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(format_mtime(whole), "1700000000");
        assert_eq!(parse_mtime("1700000000"), Some(whole));
        // rclone writes nanoseconds; the catalog keeps microseconds.
        assert_eq!(parse_mtime("1700000000.123456789"), Some(t));
        assert_eq!(
            parse_mtime("2023-11-14T22:13:20.123456Z"),
            Some(t),
            "older rclone wrote RFC 3339"
        );
        for bad in ["", "x", "1.2.3", "1.-5", "1.1234567890"] {
            assert_eq!(parse_mtime(bad), None, "{bad}");
        }
    }

    #[test]
    fn metadata_round_trips() {
        let info = ObjectInfo {
            md5: [7; 16],
            content_type: "text/plain".into(),
            posix: Posix {
                mtime: DateTime::from_timestamp(1_600_000_000, 5_000).unwrap(),
                mode: 0o100640,
                uid: 1001,
                gid: 50,
            },
            since: DateTime::from_timestamp(1_500_000_000, 0),
        };
        let meta = info.metadata();
        assert_eq!(meta["mode"], "100640");
        assert_eq!(meta["uid"], "1001");
        let back = read_back(Some(&meta));
        assert_eq!(back.md5, Some([7; 16]));
        assert_eq!(back.mtime, Some(info.posix.mtime));
        assert_eq!(back.mode, Some(0o100640));
        assert_eq!((back.uid, back.gid), (Some(1001), Some(50)));
        assert_eq!(back.since, info.since);
        let junk = HashMap::from([("mode".to_string(), "9z".to_string())]);
        assert_eq!(read_back(Some(&junk)), ReadBack::default());
    }
}
