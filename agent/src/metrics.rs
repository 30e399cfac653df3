//! The agent's metrics, registered on the process registry.
//!
//! In: a `prometheus::Registry`. Out: typed handles the stages update. The names live in
//! `portail_core::metrics::names`; every label is bounded (reason, stage, kind, guard).

use portail_core::metrics::names;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

/// Handles to every agent metric.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    /// Regular files seen by scans.
    pub files_scanned: IntCounter,
    /// Files whose bytes were uploaded.
    pub files_uploaded: IntCounter,
    /// Bytes uploaded.
    pub bytes_uploaded: IntCounter,
    /// Files deleted (or marked deleted with DELETE_MODE=keep).
    pub files_deleted: IntCounter,
    /// Files renamed server-side.
    pub files_renamed: IntCounter,
    /// Entries skipped, by reason.
    pub files_skipped: IntCounterVec,
    /// Errors, by stage and kind.
    pub errors: IntCounterVec,
    /// Seconds per upload.
    pub upload_duration: Histogram,
    /// Bytes read to compute MD5s.
    pub hash_bytes: IntCounter,
    /// Files needing work after the last pass.
    pub pending_files: IntGauge,
    /// Files tracked as synced.
    pub tracked_files: IntGauge,
    /// Bytes tracked as synced.
    pub tracked_bytes: IntGauge,
    /// Unix time of the last completed full scan.
    pub last_full_scan: IntGauge,
    /// Unix time of the last pass that converged.
    pub last_success: IntGauge,
    /// Deletes refused by a guard, by guard.
    pub deletes_blocked: IntCounterVec,
    /// Full reconciles in watch mode, by cause.
    pub watch_rescans: IntCounterVec,
    /// Age of the oldest unsynced change seen by watch mode.
    pub sync_lag: prometheus::Gauge,
    /// S3 requests retried by the SDK.
    pub s3_retries: IntCounter,
    /// Files whose last sync in watch mode was forced by MAX_SYNC_DELAY (still changing).
    pub busy_files: IntGauge,
    /// The production controls: what the guards hold, the bandwidth limit.
    pub controls: ControlMetrics,
    /// History kept and purged.
    pub history: HistoryMetrics,
}

/// What history costs: copies made before overwrites and deletes, and what the purge removed.
#[derive(Debug, Clone)]
pub struct HistoryMetrics {
    /// Objects copied under HISTORY_PREFIX.
    pub copies: IntCounter,
    /// History objects purged after HISTORY_RETENTION.
    pub purged: IntCounter,
}

impl HistoryMetrics {
    fn register(r: &Reg) -> prometheus::Result<Self> {
        Ok(HistoryMetrics {
            copies: r.counter(
                names::AGENT_HISTORY_COPIES,
                "Objects copied under HISTORY_PREFIX before an overwrite or a delete.",
            )?,
            purged: r.counter(
                names::AGENT_HISTORY_PURGED,
                "History objects purged after HISTORY_RETENTION.",
            )?,
        })
    }
}

/// The production controls' metrics: guards over time and the bandwidth limit.
#[derive(Debug, Clone)]
pub struct ControlMetrics {
    /// Deletes held now.
    pub deletes_held: IntGauge,
    /// Changed files whose upload is held now.
    pub changes_held: IntGauge,
    /// Times the mass-change tripwire tripped.
    pub tripwire_trips: IntCounter,
    /// The upload limit now, bytes per second; 0 when there is none.
    pub bwlimit: IntGauge,
    /// BWLIMIT_FILE edits that could not be read or parsed.
    pub bwlimit_file_errors: IntCounter,
}

impl ControlMetrics {
    fn register(r: &Reg) -> prometheus::Result<Self> {
        Ok(ControlMetrics {
            deletes_held: r.gauge(
                names::AGENT_DELETES_HELD,
                "Deletes a guard holds until an operator releases them.",
            )?,
            changes_held: r.gauge(
                names::AGENT_CHANGES_HELD,
                "Changed files whose upload the mass-change tripwire holds until released.",
            )?,
            tripwire_trips: r.counter(
                names::AGENT_TRIPWIRE_TRIPS,
                "Times the mass-change tripwire tripped.",
            )?,
            bwlimit: r.gauge(
                names::AGENT_BWLIMIT,
                "Upload bandwidth limit now (BWLIMIT), bytes per second; 0: no limit.",
            )?,
            bwlimit_file_errors: r.counter(
                names::AGENT_BWLIMIT_FILE_ERRORS,
                "BWLIMIT_FILE edits that could not be read or parsed (the previous limit stays).",
            )?,
        })
    }
}

/// Seconds per file upload: 14 buckets from 1 ms, each 2.5 times the last (to about 150 s).
fn upload_duration(r: &Reg) -> prometheus::Result<Histogram> {
    let buckets = exponential_buckets(0.001, 2.5, 14)?;
    r.add(Histogram::with_opts(
        HistogramOpts::new(names::AGENT_UPLOAD_DURATION, "Seconds per file upload.")
            .buckets(buckets),
    )?)
}

impl AgentMetrics {
    /// Creates and registers every metric.
    // Long by design: one registration per metric, in the order of the struct, so the list
    // reads like the metrics table in docs/operations.md; splitting it would scatter it.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let r = Reg(registry);
        let metrics = AgentMetrics {
            files_scanned: r.counter(names::AGENT_FILES_SCANNED, "Regular files seen by scans.")?,
            files_uploaded: r.counter(
                names::AGENT_FILES_UPLOADED,
                "Files whose bytes were uploaded.",
            )?,
            bytes_uploaded: r.counter(names::AGENT_BYTES_UPLOADED, "Bytes uploaded.")?,
            files_deleted: r.counter(
                names::AGENT_FILES_DELETED,
                "Files deleted from S3 or marked deleted.",
            )?,
            files_renamed: r.counter(
                names::AGENT_FILES_RENAMED,
                "Files renamed with a server-side copy.",
            )?,
            files_skipped: r.vec(
                names::AGENT_FILES_SKIPPED,
                "Entries not synced, by reason.",
                &["reason"],
            )?,
            errors: r.vec(
                names::AGENT_ERRORS,
                "Errors, by pipeline stage and kind.",
                &["stage", "kind"],
            )?,
            upload_duration: upload_duration(&r)?,
            hash_bytes: r.counter(names::AGENT_HASH_BYTES, "Bytes read to compute MD5s.")?,
            pending_files: r.gauge(
                names::AGENT_PENDING_FILES,
                "Files not synced after the last pass.",
            )?,
            tracked_files: r.gauge(
                names::AGENT_TRACKED_FILES,
                "Files the catalog tracks as synced.",
            )?,
            tracked_bytes: r.gauge(
                names::AGENT_TRACKED_BYTES,
                "Bytes the catalog tracks as synced.",
            )?,
            last_full_scan: r.gauge(
                names::AGENT_LAST_FULL_SCAN,
                "Unix time of the last completed full scan.",
            )?,
            last_success: r.gauge(
                names::AGENT_LAST_SUCCESS,
                "Unix time of the last pass that converged.",
            )?,
            watch_rescans: r.vec(
                names::AGENT_WATCH_RESCANS,
                "Full reconciles run by watch mode, by cause.",
                &["cause"],
            )?,
            sync_lag: r.add(prometheus::Gauge::new(
                names::AGENT_SYNC_LAG,
                "Age in seconds of the oldest change seen but not yet synced.",
            )?)?,
            s3_retries: r.counter(
                names::AGENT_S3_RETRIES,
                "S3 requests retried by the SDK (5xx, SlowDown, timeouts, resets).",
            )?,
            busy_files: r.gauge(
                names::AGENT_BUSY_FILES,
                "Files synced by MAX_SYNC_DELAY rather than by settling, still changing.",
            )?,
            deletes_blocked: r.vec(
                names::AGENT_DELETES_BLOCKED,
                "Passes whose deletes a guard refused, by guard.",
                &["guard"],
            )?,
            controls: ControlMetrics::register(&r)?,
            history: HistoryMetrics::register(&r)?,
        };
        Ok(metrics)
    }
}

/// Registers metrics on one registry.
struct Reg<'a>(&'a Registry);

impl Reg<'_> {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, m: M) -> prometheus::Result<M> {
        self.0.register(Box::new(m.clone()))?;
        Ok(m)
    }

    fn counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        self.add(IntCounter::new(name, help)?)
    }

    fn gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        self.add(IntGauge::new(name, help)?)
    }

    fn vec(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels)?)
    }
}
