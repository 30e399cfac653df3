//! Metrics plumbing: every metric name in one place, the build-info gauge, and the exporter.
//!
//! In: a `prometheus::Registry` owned by each process. Out: the text exposition format, served
//! at `/metrics` by [`router`]. Labels are always bounded (stage, outcome, reason), never a path.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

/// Every metric name portail exports. docs/operations.md lists them; dashboards and alerts use them.
pub mod names {
    /// Gauge, always 1, labelled with `service` and `version`.
    pub const BUILD_INFO: &str = "portail_build_info";

    /// Counter: regular files seen by a scan.
    pub const AGENT_FILES_SCANNED: &str = "portail_agent_files_scanned_total";
    /// Counter: files whose bytes were uploaded.
    pub const AGENT_FILES_UPLOADED: &str = "portail_agent_files_uploaded_total";
    /// Counter: bytes uploaded.
    pub const AGENT_BYTES_UPLOADED: &str = "portail_agent_bytes_uploaded_total";
    /// Counter: files deleted from S3 (or marked deleted with DELETE_MODE=keep).
    pub const AGENT_FILES_DELETED: &str = "portail_agent_files_deleted_total";
    /// Counter: files renamed server-side.
    pub const AGENT_FILES_RENAMED: &str = "portail_agent_files_renamed_total";
    /// Counter by `reason`: entries not synced on purpose (special files, excluded, bad names).
    pub const AGENT_FILES_SKIPPED: &str = "portail_agent_files_skipped_total";
    /// Counter by `stage` and `kind`: errors.
    pub const AGENT_ERRORS: &str = "portail_agent_errors_total";
    /// Histogram: seconds per file upload.
    pub const AGENT_UPLOAD_DURATION: &str = "portail_agent_upload_duration_seconds";
    /// Counter: bytes read to compute MD5s.
    pub const AGENT_HASH_BYTES: &str = "portail_agent_hash_bytes_total";
    /// Gauge: files known to need work after the last pass.
    pub const AGENT_PENDING_FILES: &str = "portail_agent_pending_files";
    /// Gauge: files the catalog tracks as synced.
    pub const AGENT_TRACKED_FILES: &str = "portail_agent_tracked_files";
    /// Gauge: bytes the catalog tracks as synced.
    pub const AGENT_TRACKED_BYTES: &str = "portail_agent_tracked_bytes";
    /// Gauge: Unix time of the last completed full scan.
    pub const AGENT_LAST_FULL_SCAN: &str = "portail_agent_last_full_scan_timestamp_seconds";
    /// Gauge: Unix time of the last pass that converged with no error.
    pub const AGENT_LAST_SUCCESS: &str = "portail_agent_last_success_timestamp_seconds";
    /// Counter by `cause` (`startup`, `interval`, `overflow`, `watch_error`, `forced`): full
    /// reconciles run by watch mode.
    pub const AGENT_WATCH_RESCANS: &str = "portail_agent_watch_rescans_total";
    /// Gauge: age in seconds of the oldest change watch mode has seen but not yet synced.
    pub const AGENT_SYNC_LAG: &str = "portail_agent_sync_lag_seconds";
    /// Gauge: files watch mode synced by MAX_SYNC_DELAY rather than by settling, and that are
    /// still changing (a growing log, a recording).
    pub const AGENT_BUSY_FILES: &str = "portail_agent_busy_files";
    /// Counter: S3 requests retried by the SDK (5xx, SlowDown, timeouts, resets), one per retry.
    pub const AGENT_S3_RETRIES: &str = "portail_agent_s3_retries_total";
    /// Counter by `guard`: passes whose deletes a safety guard refused.
    pub const AGENT_DELETES_BLOCKED: &str = "portail_agent_deletes_blocked_total";
    /// Gauge: deletes a guard holds now, until released (`portail-agent release-deletes`).
    pub const AGENT_DELETES_HELD: &str = "portail_agent_deletes_held";
    /// Gauge: changed files whose upload the mass-change tripwire holds now, until released
    /// (`portail-agent release-changes`).
    pub const AGENT_CHANGES_HELD: &str = "portail_agent_changes_held";
    /// Counter: times the mass-change tripwire tripped (MAX_CHANGE_PERCENT within
    /// CHANGE_WINDOW).
    pub const AGENT_TRIPWIRE_TRIPS: &str = "portail_agent_tripwire_trips_total";
    /// Gauge: the upload bandwidth limit now (BWLIMIT or BWLIMIT_FILE, after the timetable),
    /// bytes per second; 0 when there is none.
    pub const AGENT_BWLIMIT: &str = "portail_agent_bwlimit_bytes_per_second";
    /// Counter: BWLIMIT_FILE edits that could not be read or parsed.
    pub const AGENT_BWLIMIT_FILE_ERRORS: &str = "portail_agent_bwlimit_file_errors_total";
    /// Counter: objects copied under HISTORY_PREFIX before an overwrite or a delete
    /// (HISTORY=prefix).
    pub const AGENT_HISTORY_COPIES: &str = "portail_agent_history_copies_total";
    /// Counter: history objects (copies, or noncurrent versions) purged after
    /// HISTORY_RETENTION.
    pub const AGENT_HISTORY_PURGED: &str = "portail_agent_history_purged_total";

    /// Counter by `route`, `method`, `status`: HTTP requests served by the url-service.
    pub const URL_HTTP_REQUESTS: &str = "portail_url_http_requests_total";
    /// Histogram by `route`, `method`: request latency.
    pub const URL_HTTP_DURATION: &str = "portail_url_http_request_duration_seconds";
    /// Counter: presigned URLs issued (by the API and by share-link clicks).
    pub const URL_PRESIGNED_ISSUED: &str = "portail_url_presigned_urls_issued_total";
    /// Counter by `outcome` (`redirected`, `proxied`, `not_found`, `gone`, `error`):
    /// share-link clicks.
    pub const URL_LINK_REDIRECTS: &str = "portail_url_link_redirects_total";
    /// Counter: bytes streamed to clients in proxy mode (DOWNLOAD_MODE=proxy).
    pub const URL_PROXIED_BYTES: &str = "portail_url_proxied_bytes_total";
    /// Audit entries written or failed (`result`).
    pub const URL_AUDIT_ENTRIES: &str = "portail_url_audit_entries_total";
    /// Counter by `result` (`ok`, `bad_token`, `bad_csrf`, `rate_limited`): sign-in attempts on
    /// the web pages.
    pub const URL_UI_LOGINS: &str = "portail_url_ui_logins_total";
}

/// Registers `portail_build_info{service,version} 1`.
pub fn register_build_info(registry: &Registry, service: &str) -> prometheus::Result<()> {
    let gauge = IntGaugeVec::new(
        Opts::new(names::BUILD_INFO, "Build information; always 1."),
        &["service", "version"],
    )?;
    gauge
        .with_label_values(&[service, env!("CARGO_PKG_VERSION")])
        .set(1);
    registry.register(Box::new(gauge))
}

/// Renders every metric in the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metrics; an empty body is the fallback.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// A router serving `GET /metrics` from the registry.
pub fn router(registry: Registry) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let body = render(&registry);
            async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response() }
        }),
    )
}
