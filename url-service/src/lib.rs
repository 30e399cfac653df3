//! portail-url-service: an authenticated HTTP API over the portail catalog that hands out
//! presigned S3 download URLs.
//!
//! [`router`] builds the whole API over an [`AppState`] (one pool, one S3 client, one metrics
//! registry per process); [`cli`] is what `main.rs` runs: the server, and token management.

pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod routes;
pub mod server;
pub mod ui;

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use portail_core::metrics::names;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};
use sqlx::PgPool;

pub use config::{ServiceSettings, UrlServiceConfig};

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The url-service's metrics.
#[derive(Debug, Clone)]
pub struct UrlMetrics {
    /// Requests by matched route, method and status.
    pub requests: IntCounterVec,
    /// Latency by matched route and method.
    pub duration: HistogramVec,
    /// Presigned URLs issued.
    pub presigned_issued: IntCounter,
    /// Share-link clicks by outcome.
    pub link_redirects: IntCounterVec,
    /// Bytes streamed to clients in proxy mode.
    pub proxied_bytes: IntCounter,
    /// Audit entries by result (`written`, `failed`).
    pub audit_entries: IntCounterVec,
    /// Web sign-in attempts by result.
    pub ui_logins: IntCounterVec,
}

impl UrlMetrics {
    /// Creates and registers the metrics.
    // Long by design: one registration per metric, as the list in docs/operations.md.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                names::URL_HTTP_REQUESTS,
                "HTTP requests by matched route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(names::URL_HTTP_DURATION, "HTTP request latency in seconds.")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
            &["route", "method"],
        )?;
        let presigned_issued =
            IntCounter::new(names::URL_PRESIGNED_ISSUED, "Presigned URLs issued.")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        let link_redirects = IntCounterVec::new(
            Opts::new(names::URL_LINK_REDIRECTS, "Share-link clicks by outcome."),
            &["outcome"],
        )?;
        let proxied_bytes = IntCounter::new(
            names::URL_PROXIED_BYTES,
            "Bytes streamed to clients in proxy mode (DOWNLOAD_MODE=proxy).",
        )?;
        registry.register(Box::new(presigned_issued.clone()))?;
        registry.register(Box::new(link_redirects.clone()))?;
        registry.register(Box::new(proxied_bytes.clone()))?;
        let audit_entries = IntCounterVec::new(
            Opts::new(
                names::URL_AUDIT_ENTRIES,
                "Audit entries (presigned URLs issued, share-link clicks) by result: written, failed.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(audit_entries.clone()))?;
        for result in ["written", "failed"] {
            audit_entries.with_label_values(&[result]);
        }
        let ui_logins = IntCounterVec::new(
            Opts::new(
                names::URL_UI_LOGINS,
                "Sign-in attempts on the web pages by result: ok, bad_token, bad_csrf, rate_limited.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(ui_logins.clone()))?;
        for result in ui::session::LOGIN_RESULTS {
            ui_logins.with_label_values(&[result]);
        }
        // A zero for every outcome, so a dashboard shows the series before the first click.
        for outcome in LINK_OUTCOMES {
            link_redirects.with_label_values(&[outcome]);
        }
        Ok(UrlMetrics {
            requests,
            duration,
            presigned_issued,
            link_redirects,
            proxied_bytes,
            audit_entries,
            ui_logins,
        })
    }
}

/// `outcome` labels of `portail_url_link_redirects_total`: `redirected` (302 to S3),
/// `proxied` (streamed, DOWNLOAD_MODE=proxy), `not_found`, `gone`, `error`.
pub const LINK_OUTCOMES: [&str; 5] = ["redirected", "proxied", "not_found", "gone", "error"];

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The catalog pool.
    pub pool: PgPool,
    /// The S3 client for AWS_ENDPOINT_URL: readiness checks and proxied downloads.
    pub s3: aws_sdk_s3::Client,
    /// Signs URLs for S3_PUBLIC_ENDPOINT_URL (the same client when unset). Signing is local
    /// HMAC: this client never sends a request.
    pub presigner: aws_sdk_s3::Client,
    /// AWS_BUCKET_NAME, checked by `/readyz`.
    pub bucket: String,
    /// The service's settings.
    pub settings: ServiceSettings,
    /// Metric handles.
    pub metrics: UrlMetrics,
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Where downloads are recorded.
    pub audit: audit::AuditLog,
    /// Sign-in attempts per client address.
    pub logins: std::sync::Arc<ui::session::LoginLimiter>,
    /// API tokens read from the catalog in the last second.
    pub tokens: std::sync::Arc<auth::TokenCache>,
}

impl AppState {
    /// Builds the state, registers the metrics on a fresh registry, and starts the audit
    /// writer (so it needs a Tokio runtime).
    pub fn new(
        pool: PgPool,
        s3: aws_sdk_s3::Client,
        bucket: String,
        settings: ServiceSettings,
    ) -> anyhow::Result<Self> {
        let registry = Registry::new();
        portail_core::metrics::register_build_info(&registry, "portail-url-service")?;
        let metrics = UrlMetrics::register(&registry)?;
        // The same settings (path style, credentials, region), another address.
        let presigner = match &settings.s3_public_endpoint_url {
            Some(url) => {
                aws_sdk_s3::Client::from_conf(s3.config().to_builder().endpoint_url(url).build())
            }
            None => s3.clone(),
        };
        let audit = audit::AuditLog::spawn(pool.clone(), metrics.audit_entries.clone());
        Ok(AppState {
            audit,
            logins: Default::default(),
            tokens: Default::default(),
            pool,
            presigner,
            s3,
            bucket,
            settings,
            metrics,
            registry,
        })
    }
}

async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    state
        .metrics
        .requests
        .with_label_values(&[&route, &method, &status])
        .inc();
    state
        .metrics
        .duration
        .with_label_values(&[&route, &method])
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let metrics = portail_core::metrics::router(state.registry.clone());
    Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/openapi.json", get(routes::openapi::openapi))
        .route("/v1/files", get(routes::files::list_files))
        .route("/v1/files/{id}", get(routes::files::get_file))
        .route("/v1/files/{id}/url", post(routes::files::create_url))
        .route(
            "/v1/files/{id}/versions",
            get(routes::versions::list_versions),
        )
        .route("/v1/files/{id}/content", get(routes::content::file_content))
        .route(
            "/v1/links",
            post(routes::links::create_link).get(routes::links::list_links),
        )
        .route("/v1/links/{id}", delete(routes::links::revoke_link))
        .route("/v1/audit", get(routes::audit::list_audit))
        .route("/l/{token}", get(routes::links::follow_link))
        .merge(ui::router())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .fallback(routes::fallback)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
        .merge(metrics)
}
