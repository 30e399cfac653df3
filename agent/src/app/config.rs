//! The agent's configuration.
//!
//! In: environment variables (see `.env.example`). Out: an [`AgentConfig`] holding the shared
//! sections from `portail-core` plus the agent's own [`AgentSettings`], or a `ConfigError`
//! naming the variable (the binary exits with code 2).

use std::path::PathBuf;

use portail_core::config::{
    ByteSize, ConfigError, DatabaseConfig, FromEnv, HumanDuration, LogConfig, S3Config, ValueKind,
};
use serde::Deserialize;

use crate::policy::delete_rules::DeleteMode;
use crate::policy::history::HistorySetting;

/// Everything the agent reads from its environment.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent's own settings.
    pub agent: AgentSettings,
    /// How to reach PostgreSQL.
    pub db: DatabaseConfig,
    /// How to reach S3.
    pub s3: S3Config,
    /// Where logs go.
    pub log: LogConfig,
}

impl AgentConfig {
    /// Reads and validates every section from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let cfg = AgentConfig {
            agent: AgentSettings::from_env()?,
            db: DatabaseConfig::from_env()?,
            s3: S3Config::from_env()?,
            log: LogConfig::from_env()?,
        };
        cfg.s3.validate()?;
        cfg.agent.validate()?;
        Ok(cfg)
    }
}

/// The agent's own variables.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentSettings {
    /// SYNC_ROOT: the directory mirrored to S3. Required.
    pub sync_root: PathBuf,
    /// AGENT_ID: this agent's unique name in the catalog. Default: the host name.
    pub agent_id: Option<String>,
    /// S3_PREFIX: prepended to every key. A trailing `/` is added when missing, so
    /// `S3_PREFIX=host1` stores `a/b.txt` as `host1/a/b.txt`. Default: empty.
    #[serde(default)]
    pub s3_prefix: String,
    /// S3_SSE: server-side encryption of every object written: `AES256` or `aws:kms`.
    /// Default: the bucket's own setting.
    pub s3_sse: Option<String>,
    /// S3_SSE_KMS_KEY_ID: the KMS key for S3_SSE=aws:kms (default: the account's S3 key).
    pub s3_sse_kms_key_id: Option<String>,
    /// S3_SSE_CUSTOMER_KEY: SSE-C, 32 bytes in base64 (`openssl rand -base64 32`), sent with
    /// every write and read. Lose it and the objects are lost. Not with S3_SSE.
    pub s3_sse_customer_key: Option<portail_core::config::Secret>,
    /// S3_STORAGE_CLASS: the storage class of every object written (e.g. `STANDARD_IA`).
    /// Default: the bucket's default (STANDARD).
    pub s3_storage_class: Option<String>,
    /// S3_OBJECT_TAGS: tags on every object written, `k=v&k2=v2` (at most 10; keys up to 128
    /// characters, values up to 256), for lifecycle and replication rules.
    pub s3_object_tags: Option<String>,
    /// METRICS_ADDR: where `/metrics`, `/healthz` and `/readyz` are served.
    /// Default `127.0.0.1:9101`.
    #[serde(default = "default_metrics_addr")]
    pub metrics_addr: String,
    /// UPLOAD_CONCURRENCY: S3 requests in flight at once (see
    /// [`crate::store::TransferConfig::requests_in_flight`]). Default 16.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: usize,
    /// MULTIPART_THRESHOLD: files at least this large use multipart upload. Default `64MiB`.
    #[serde(default = "default_multipart_threshold")]
    pub multipart_threshold: ByteSize,
    /// MULTIPART_PART_SIZE: the size of each part (S3 needs at least 5 MiB, except the last).
    /// Default `5MiB` (as rclone): on a 1 GiB file against a local server it beat 8 and 16 MiB
    /// (8.4-9.2 s vs 9.5-9.6 s and 9.95 s) and holds less in memory. Raised automatically when
    /// a file would need more than 10 000 parts.
    #[serde(default = "default_part_size")]
    pub multipart_part_size: ByteSize,
    /// EXCLUDE: comma-separated glob patterns, matched against the relative path, e.g.
    /// `*.tmp,.git/**`. A pattern matching a directory skips everything below it.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// MAX_DELETE: refuse a pass that would delete more files than this. Default: no cap.
    pub max_delete: Option<u64>,
    /// MAX_DELETE_PERCENT: refuse a pass that would delete more than this percentage of the
    /// tracked files. Default 50; 100 disables the guard.
    #[serde(default = "default_max_delete_percent")]
    pub max_delete_percent: u32,
    /// BWLIMIT: the most bytes per second all uploads together may send, in rclone's syntax: a
    /// rate (`10M`, `512k`; a bare number is KiB/s; `off`), or a weekly timetable of
    /// `TIME,RATE` entries in local time, such as `08:00,512k 18:00,off` or
    /// `Mon-08:00,1M Sat-00:00,off`. Default: no limit.
    pub bwlimit: Option<crate::store::Timetable>,
    /// BWLIMIT_FILE: a file holding a BWLIMIT value (one entry per line allowed, `#` comments),
    /// re-read within seconds of a change, so the limit changes without a restart. A bad edit
    /// is logged and counted, and the previous limit stays. Not with BWLIMIT.
    pub bwlimit_file: Option<PathBuf>,
    /// DELETE_WINDOW: MAX_DELETE and MAX_DELETE_PERCENT count every delete within this rolling
    /// window (against the files tracked at its start), not only one pass's or batch's, so
    /// deletes spread over time are held like one big one. Default `1h`; `0s` counts per pass.
    #[serde(default = "default_delete_window")]
    pub delete_window: HumanDuration,
    /// MAX_CHANGE_PERCENT: the mass-change tripwire. When more than this percentage of the
    /// tracked files change content within CHANGE_WINDOW, uploads of changed files are held
    /// until released (new files still upload). Default 50; 100 disables the tripwire.
    #[serde(default = "default_max_change_percent")]
    pub max_change_percent: u32,
    /// CHANGE_WINDOW: the rolling window of MAX_CHANGE_PERCENT. Default `10m`.
    #[serde(default = "default_change_window")]
    pub change_window: HumanDuration,
    /// CHANGE_MIN_FILES: the tripwire never trips on this many changed files or fewer within
    /// the window, so editing most of a small tree is not an alarm. Default 20.
    #[serde(default = "default_change_min_files")]
    pub change_min_files: u64,
    /// ALLOW_EMPTY_ROOT: let a pass over an empty SYNC_ROOT delete the tracked files.
    /// Default false: an empty root usually means an unmounted share.
    #[serde(default)]
    pub allow_empty_root: bool,
    /// DELETE_MODE: `delete` (default) removes the object of a vanished file; `keep` only marks
    /// its row deleted and leaves the object in place.
    #[serde(default = "default_delete_mode")]
    pub delete_mode: DeleteMode,
    /// HISTORY: how the content an overwrite or a delete replaces stays restorable.
    /// `versioning` (the bucket keeps versions; the catalog records each VersionId), `prefix`
    /// (the old object is first copied server-side under HISTORY_PREFIX), `off`, or `auto`
    /// (default): `versioning` when the bucket says versioning is Enabled, else `prefix`.
    #[serde(default = "default_history")]
    pub history: HistorySetting,
    /// HISTORY_PREFIX: where `prefix` history goes, inside the agent's S3_PREFIX. Local files
    /// below it are not synced, and `verify` does not count its objects as orphans.
    /// Default `.portail-history/`.
    #[serde(default = "default_history_prefix")]
    pub history_prefix: String,
    /// HISTORY_RETENTION: how long replaced and deleted content stays restorable; older history
    /// is purged (every hour in watch mode, or by `portail-agent history purge`). Default `30d`.
    #[serde(default = "default_history_retention")]
    pub history_retention: HumanDuration,
    /// SETTLE_TIME (watch mode): a file is synced once it has been unchanged this long, so a
    /// half-written file is never recorded. Default `500ms`.
    #[serde(default = "default_settle_time")]
    pub settle_time: HumanDuration,
    /// MAX_SYNC_DELAY (watch mode): a file that keeps changing (never quiet for SETTLE_TIME) is
    /// synced at least this often. A file that only grows gets the prefix it had when read (a
    /// state it really had); one rewritten in place is never stored torn and stays pending.
    /// Default `60s`.
    #[serde(default = "default_max_sync_delay")]
    pub max_sync_delay: HumanDuration,
    /// RESCAN_INTERVAL (watch mode): a full reconcile runs this often, to catch anything the
    /// watcher missed. Default `10m`.
    #[serde(default = "default_rescan_interval")]
    pub rescan_interval: HumanDuration,
    /// DELETE_GRACE (watch mode): a vanished file is deleted only if it is still absent after
    /// this long, so atomic saves and moves never delete then re-upload. Default `30s`.
    #[serde(default = "default_delete_grace")]
    pub delete_grace: HumanDuration,
    /// SHUTDOWN_TIMEOUT (watch mode): on SIGTERM/SIGINT, how long in-flight work may take
    /// before the agent exits anyway. Default `30s`.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: HumanDuration,
}

fn default_history() -> HistorySetting {
    HistorySetting::Auto
}
fn default_history_prefix() -> String {
    ".portail-history/".into()
}
fn default_history_retention() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30 * 86_400))
}
fn default_settle_time() -> HumanDuration {
    HumanDuration(std::time::Duration::from_millis(500))
}
fn default_max_sync_delay() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}
fn default_rescan_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(600))
}
fn default_delete_grace() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}
fn default_shutdown_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}

fn default_max_delete_percent() -> u32 {
    50
}
fn default_delete_window() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(3600))
}
fn default_max_change_percent() -> u32 {
    50
}
fn default_change_window() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(600))
}
fn default_change_min_files() -> u64 {
    20
}
fn default_delete_mode() -> DeleteMode {
    DeleteMode::Delete
}

fn default_metrics_addr() -> String {
    "127.0.0.1:9101".into()
}
fn default_upload_concurrency() -> usize {
    16
}
fn default_multipart_threshold() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_part_size() -> ByteSize {
    ByteSize(5 << 20)
}

fn check_storage_class(s: &str) -> Result<(), String> {
    crate::store::write::storage_class(s).map(|_| ())
}
fn check_tags(s: &str) -> Result<(), String> {
    crate::store::write::tags(s).map(|_| ())
}

impl FromEnv for AgentSettings {
    const TYPED_VARS: &'static [(&'static str, ValueKind)] = &[
        ("MULTIPART_THRESHOLD", ValueKind::Size),
        ("MULTIPART_PART_SIZE", ValueKind::Size),
        ("DELETE_MODE", ValueKind::OneOf(&["delete", "keep"])),
        ("SETTLE_TIME", ValueKind::Duration),
        ("MAX_SYNC_DELAY", ValueKind::Duration),
        ("RESCAN_INTERVAL", ValueKind::Duration),
        ("DELETE_GRACE", ValueKind::Duration),
        ("SHUTDOWN_TIMEOUT", ValueKind::Duration),
        ("DELETE_WINDOW", ValueKind::Duration),
        ("CHANGE_WINDOW", ValueKind::Duration),
        ("HISTORY_RETENTION", ValueKind::Duration),
        (
            "HISTORY",
            ValueKind::OneOf(&["auto", "versioning", "prefix", "off"]),
        ),
        ("BWLIMIT", ValueKind::Parsed(crate::store::bandwidth::check)),
        ("S3_SSE", ValueKind::OneOf(&["AES256", "aws:kms"])),
        ("S3_STORAGE_CLASS", ValueKind::Parsed(check_storage_class)),
        ("S3_OBJECT_TAGS", ValueKind::Parsed(check_tags)),
    ];
}

impl AgentSettings {
    /// Settings for a root, with every other value at its default. Handy for tests and tools.
    pub fn for_root(root: impl Into<PathBuf>) -> Self {
        AgentSettings {
            sync_root: root.into(),
            agent_id: None,
            s3_prefix: String::new(),
            s3_sse: None,
            s3_sse_kms_key_id: None,
            s3_sse_customer_key: None,
            s3_storage_class: None,
            s3_object_tags: None,
            metrics_addr: default_metrics_addr(),
            upload_concurrency: default_upload_concurrency(),
            multipart_threshold: default_multipart_threshold(),
            multipart_part_size: default_part_size(),
            exclude: Vec::new(),
            max_delete: None,
            max_delete_percent: default_max_delete_percent(),
            bwlimit: None,
            bwlimit_file: None,
            delete_window: default_delete_window(),
            max_change_percent: default_max_change_percent(),
            change_window: default_change_window(),
            change_min_files: default_change_min_files(),
            allow_empty_root: false,
            delete_mode: DeleteMode::Delete,
            history: default_history(),
            history_prefix: default_history_prefix(),
            history_retention: default_history_retention(),
            settle_time: default_settle_time(),
            max_sync_delay: default_max_sync_delay(),
            rescan_interval: default_rescan_interval(),
            delete_grace: default_delete_grace(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |var: &str, reason: &str| {
            Err(ConfigError::Invalid {
                var: var.into(),
                reason: reason.into(),
            })
        };
        if self.upload_concurrency == 0 {
            return invalid("UPLOAD_CONCURRENCY", "must be at least 1");
        }
        if self.max_delete_percent > 100 {
            return invalid("MAX_DELETE_PERCENT", "must be between 0 and 100");
        }
        self.bandwidth()?;
        self.write_options()?;
        if self.max_change_percent > 100 {
            return invalid("MAX_CHANGE_PERCENT", "must be between 0 and 100");
        }
        if self.multipart_part_size.0 < 5 << 20 {
            return invalid("MULTIPART_PART_SIZE", "S3 needs parts of at least 5MiB");
        }
        if self.multipart_part_size.0 > 5 << 30 {
            return invalid("MULTIPART_PART_SIZE", "S3 allows parts of at most 5GiB");
        }
        if self.key_prefix().len() > 512 {
            return invalid(
                "S3_PREFIX",
                "longer than 512 bytes leaves too little of the 1024-byte key",
            );
        }
        let hp = self.history_prefix.trim_matches('/');
        if hp.is_empty() || hp.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return invalid(
                "HISTORY_PREFIX",
                "must be a relative key prefix such as .portail-history/",
            );
        }
        crate::fs::scan::Excludes::new(&self.exclude)
            .map(|_| ())
            .map_err(|e| ConfigError::Invalid {
                var: "EXCLUDE".into(),
                reason: e.to_string(),
            })
    }

    /// How the transfer stage uses S3. Built once, when the agent starts.
    pub fn transfer(&self) -> crate::store::TransferConfig {
        crate::store::TransferConfig {
            multipart_threshold: self.multipart_threshold.0,
            part_size: self.multipart_part_size.0,
            requests_in_flight: self.upload_concurrency,
            parts_per_file: crate::store::TransferConfig::PARTS_PER_FILE,
        }
    }

    /// The delete guards these settings describe.
    pub fn delete_guards(&self) -> crate::policy::delete_rules::DeleteGuards {
        crate::policy::delete_rules::DeleteGuards {
            max_delete: self.max_delete,
            max_delete_percent: self.max_delete_percent,
            allow_empty_root: self.allow_empty_root,
            window: self.delete_window.0,
        }
    }

    /// What every write carries: encryption, storage class, tags. Checked once, at start.
    pub fn write_options(&self) -> Result<crate::store::WriteOptions, ConfigError> {
        use crate::store::write;
        let invalid = |(var, reason): (&str, String)| ConfigError::Invalid {
            var: var.into(),
            reason,
        };
        let sse = write::sse(
            self.s3_sse.as_deref(),
            self.s3_sse_kms_key_id.as_deref(),
            self.s3_sse_customer_key.as_ref().map(|k| k.expose()),
        )
        .map_err(invalid)?;
        let storage_class = match &self.s3_storage_class {
            Some(c) => Some(write::storage_class(c).map_err(|e| invalid(("S3_STORAGE_CLASS", e)))?),
            None => None,
        };
        let tags = match &self.s3_object_tags {
            Some(t) => Some(write::tags(t).map_err(|e| invalid(("S3_OBJECT_TAGS", e)))?),
            None => None,
        };
        Ok(crate::store::WriteOptions {
            sse,
            storage_class,
            tags,
        })
    }

    /// The bandwidth timetable to start with: BWLIMIT, or what BWLIMIT_FILE holds now.
    pub fn bandwidth(&self) -> Result<Option<crate::store::Timetable>, ConfigError> {
        let invalid = |var: &str, reason: String| ConfigError::Invalid {
            var: var.into(),
            reason,
        };
        match (&self.bwlimit, &self.bwlimit_file) {
            (Some(_), Some(_)) => Err(invalid(
                "BWLIMIT_FILE",
                "set BWLIMIT or BWLIMIT_FILE, not both".into(),
            )),
            (Some(t), None) => Ok(Some(t.clone())),
            (None, Some(path)) => crate::store::LimitFile { path: path.clone() }
                .read()
                .map(Some)
                .map_err(|e| invalid("BWLIMIT_FILE", e)),
            (None, None) => Ok(None),
        }
    }

    /// The mass-change tripwire these settings describe.
    pub fn change_tripwire(&self) -> crate::policy::guard::ChangeLimit {
        crate::policy::guard::ChangeLimit {
            max_percent: self.max_change_percent,
            window: self.change_window.0,
            min_files: self.change_min_files,
        }
    }

    /// HISTORY_PREFIX relative to the agent's prefix, with one trailing `/`.
    pub fn history_dir(&self) -> String {
        format!("{}/", self.history_prefix.trim_matches('/'))
    }

    /// Where history copies live: S3_PREFIX + HISTORY_PREFIX (the one place it is built).
    pub fn history_key_prefix(&self) -> String {
        format!("{}{}", self.key_prefix(), self.history_dir())
    }

    /// The agent's name in the catalog: AGENT_ID, else the host name.
    pub fn agent_name(&self) -> String {
        self.agent_id.clone().unwrap_or_else(hostname_or_unknown)
    }

    /// S3_PREFIX normalised: no leading `/`, and a trailing `/` unless empty.
    pub fn key_prefix(&self) -> String {
        let p = self.s3_prefix.trim_start_matches('/');
        if p.is_empty() || p.ends_with('/') {
            p.to_string()
        } else {
            format!("{p}/")
        }
    }
}

/// The host name, or `unknown-host` when the OS will not say.
pub fn hostname_or_unknown() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_normalised() {
        let mut s = AgentSettings::for_root("/x");
        assert_eq!(s.key_prefix(), "");
        s.s3_prefix = "host1".into();
        assert_eq!(s.key_prefix(), "host1/");
        s.s3_prefix = "/a/b/".into();
        assert_eq!(s.key_prefix(), "a/b/");
    }

    #[test]
    fn env_parsing_names_bad_variables() {
        let vars = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let err = AgentSettings::from_vars(vars(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "SYNC_ROOT is required but not set (see .env.example)"
        );
        let err =
            AgentSettings::from_vars(vars(&[("SYNC_ROOT", "/d"), ("MULTIPART_THRESHOLD", "big")]))
                .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("MULTIPART_THRESHOLD is invalid"));
        let s = AgentSettings::from_vars(vars(&[
            ("SYNC_ROOT", "/d"),
            ("EXCLUDE", "*.tmp,.git/**"),
            ("UPLOAD_CONCURRENCY", "4"),
        ]))
        .unwrap();
        assert_eq!(s.exclude, vec!["*.tmp", ".git/**"]);
        assert_eq!(s.upload_concurrency, 4);
        s.validate().unwrap();
        let mut s = s;
        s.multipart_part_size = ByteSize(1024);
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("MULTIPART_PART_SIZE"));
    }

    #[test]
    fn bandwidth_settings_are_checked_at_start_and_name_the_variable() {
        let vars = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let err = AgentSettings::from_vars(vars(&[("SYNC_ROOT", "/d"), ("BWLIMIT", "08:00,fast")]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("BWLIMIT is invalid"), "{err}");
        assert!(err.contains("not a rate"), "{err}");
        let s = AgentSettings::from_vars(vars(&[
            ("SYNC_ROOT", "/d"),
            ("BWLIMIT", "Mon-08:00,1M Sat-00:00,off"),
        ]))
        .unwrap();
        assert_eq!(s.bandwidth().unwrap(), s.bwlimit);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bwlimit");
        let mut s = s;
        s.bwlimit_file = Some(file.clone());
        let both = s.validate().unwrap_err().to_string();
        assert!(both.contains("not both"), "{both}");
        s.bwlimit = None;
        let missing = s.validate().unwrap_err().to_string();
        assert!(missing.starts_with("BWLIMIT_FILE is invalid"), "{missing}");
        std::fs::write(&file, "# office hours\n08:00,512k\n18:00,off\n").unwrap();
        s.validate().unwrap();
        std::fs::write(&file, "08:00,512k 08:00,off").unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("same time"));
    }

    #[test]
    fn write_options_name_the_bad_variable() {
        let vars = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            let mut all = vec![("SYNC_ROOT".to_string(), "/d".to_string())];
            all.extend(v.iter().map(|(a, b)| (a.to_string(), b.to_string())));
            all
        };
        for (var, value) in [
            ("S3_SSE", "rot13"),
            ("S3_STORAGE_CLASS", "COLD"),
            ("S3_OBJECT_TAGS", "novalue"),
        ] {
            let err = AgentSettings::from_vars(vars(&[(var, value)])).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("{var} is invalid")),
                "{err}"
            );
        }
        let s = AgentSettings::from_vars(vars(&[("S3_SSE_KMS_KEY_ID", "k")])).unwrap();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.starts_with("S3_SSE_KMS_KEY_ID is invalid"), "{err}");
        let s = AgentSettings::from_vars(vars(&[("S3_SSE_CUSTOMER_KEY", "c2hvcnQ=")])).unwrap();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.starts_with("S3_SSE_CUSTOMER_KEY is invalid"), "{err}");
        assert!(
            !format!("{s:?}").contains("c2hvcnQ="),
            "the key never shows in Debug"
        );
        let s = AgentSettings::from_vars(vars(&[
            ("S3_SSE", "aws:kms"),
            ("S3_STORAGE_CLASS", "GLACIER_IR"),
            ("S3_OBJECT_TAGS", "team=ops"),
        ]))
        .unwrap();
        let w = s.write_options().unwrap();
        assert_eq!(w.tags.as_deref(), Some("team=ops"));
        assert_eq!(
            w.storage_class.map(|c| c.as_str().to_string()),
            Some("GLACIER_IR".into())
        );
    }
}
