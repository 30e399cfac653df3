//! The url-service's configuration.
//!
//! In: environment variables (see `.env.example`). Out: a [`UrlServiceConfig`], or a
//! `ConfigError` naming the variable (the binary exits with code 2).

use portail_core::config::{
    ConfigError, DatabaseConfig, FromEnv, HumanDuration, LogConfig, S3Config, ValueKind,
};
use serde::Deserialize;

/// Everything the url-service reads from its environment.
#[derive(Debug, Clone)]
pub struct UrlServiceConfig {
    /// The service's own settings.
    pub service: ServiceSettings,
    /// How to reach PostgreSQL.
    pub db: DatabaseConfig,
    /// How to reach S3 (only to sign URLs and to check readiness).
    pub s3: S3Config,
    /// Where logs go.
    pub log: LogConfig,
}

impl UrlServiceConfig {
    /// Reads and validates every section from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let cfg = UrlServiceConfig {
            service: ServiceSettings::from_env()?,
            db: DatabaseConfig::from_env()?,
            s3: S3Config::from_env()?,
            log: LogConfig::from_env()?,
        };
        cfg.s3.validate()?;
        cfg.service.validate()?;
        Ok(cfg)
    }
}

/// The url-service's own variables.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceSettings {
    /// LISTEN_ADDR: where the API (and `/metrics`) is served. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen_addr")]
    pub listen_addr: String,
    /// PUBLIC_BASE_URL: the address users reach the service at, used in share links.
    /// Default `http://LISTEN_ADDR`.
    pub public_base_url: Option<String>,
    /// DEFAULT_URL_TTL: lifetime of a presigned URL when the request names none. Default `15m`.
    #[serde(default = "default_url_ttl")]
    pub default_url_ttl: HumanDuration,
    /// LINK_PRESIGN_TTL: lifetime of the presigned URL a share-link click redirects to.
    /// Default `60s`.
    #[serde(default = "default_link_presign_ttl")]
    pub link_presign_ttl: HumanDuration,
    /// DEFAULT_LINK_TTL: lifetime of a share link when the request names none. Default `7d`.
    #[serde(default = "default_link_ttl")]
    pub default_link_ttl: HumanDuration,
    /// S3_PUBLIC_ENDPOINT_URL: the S3 address users reach, which presigned URLs are signed for
    /// (SigV4 signs the Host, so a URL cannot be rewritten after signing). Path-style follows
    /// AWS_FORCE_PATH_STYLE. Unset: the same as AWS_ENDPOINT_URL. `/readyz` and proxied
    /// downloads still use AWS_ENDPOINT_URL.
    pub s3_public_endpoint_url: Option<String>,
    /// HTTP_HEADER_TIMEOUT: the longest a client may take to send a request's headers, and the
    /// longest a keep-alive connection may sit idle; past it the connection is closed (so a
    /// half-sent request cannot hold a connection). Default `10s`.
    #[serde(default = "default_header_timeout")]
    pub http_header_timeout: HumanDuration,
    /// HTTP_BODY_TIMEOUT: the longest a client may take to send a request body. Default `30s`.
    #[serde(default = "default_body_timeout")]
    pub http_body_timeout: HumanDuration,
    /// HTTP_MAX_CONNECTIONS: connections served at once; at the cap, new ones wait in the
    /// kernel's backlog until one closes. Default 10000 (keep it under the process's file
    /// descriptor limit).
    #[serde(default = "default_max_connections")]
    pub http_max_connections: usize,
    /// DOWNLOAD_MODE: `redirect` (default) answers downloads with a 302 to a presigned URL;
    /// `proxy` streams the object through this service, for stores users cannot reach.
    #[serde(default)]
    pub download_mode: DownloadMode,
}

/// How downloads (`GET /v1/files/{id}/content`, `GET /l/{token}`) are answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownloadMode {
    /// 302 to a fresh presigned URL: the bytes go straight from S3 to the user.
    #[default]
    Redirect,
    /// The service streams the object itself (Range supported); costs its bandwidth.
    Proxy,
}

fn default_header_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}
fn default_body_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}
fn default_max_connections() -> usize {
    10_000
}
fn default_listen_addr() -> String {
    "127.0.0.1:8080".into()
}
fn default_url_ttl() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(900))
}
fn default_link_presign_ttl() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}
fn default_link_ttl() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(7 * 86_400))
}

impl FromEnv for ServiceSettings {
    const TYPED_VARS: &'static [(&'static str, ValueKind)] = &[
        ("DEFAULT_URL_TTL", ValueKind::Duration),
        ("LINK_PRESIGN_TTL", ValueKind::Duration),
        ("DEFAULT_LINK_TTL", ValueKind::Duration),
        ("DOWNLOAD_MODE", ValueKind::OneOf(&["redirect", "proxy"])),
        ("HTTP_HEADER_TIMEOUT", ValueKind::Duration),
        ("HTTP_BODY_TIMEOUT", ValueKind::Duration),
    ];
}

impl ServiceSettings {
    /// Settings with every value at its default.
    pub fn defaults() -> Self {
        ServiceSettings {
            listen_addr: default_listen_addr(),
            public_base_url: None,
            default_url_ttl: default_url_ttl(),
            link_presign_ttl: default_link_presign_ttl(),
            default_link_ttl: default_link_ttl(),
            s3_public_endpoint_url: None,
            download_mode: DownloadMode::Redirect,
            http_header_timeout: default_header_timeout(),
            http_body_timeout: default_body_timeout(),
            http_max_connections: default_max_connections(),
        }
    }

    /// The server's protections, from HTTP_HEADER_TIMEOUT, HTTP_BODY_TIMEOUT and
    /// HTTP_MAX_CONNECTIONS.
    pub fn server_limits(&self) -> crate::server::ServerLimits {
        crate::server::ServerLimits {
            header_timeout: self.http_header_timeout.0,
            body_timeout: self.http_body_timeout.0,
            max_connections: self.http_max_connections,
        }
    }

    /// Checks the values serde cannot: HTTP_MAX_CONNECTIONS is at least 1, and
    /// S3_PUBLIC_ENDPOINT_URL must be an http(s) URL with a
    /// host.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.http_max_connections == 0 {
            return Err(ConfigError::Invalid {
                var: "HTTP_MAX_CONNECTIONS".into(),
                reason: "must be at least 1".into(),
            });
        }
        let Some(url) = &self.s3_public_endpoint_url else {
            return Ok(());
        };
        let uri: Result<axum::http::Uri, _> = url.parse();
        let ok = uri.is_ok_and(|u| {
            matches!(u.scheme_str(), Some("http") | Some("https"))
                && u.host().is_some_and(|h| !h.is_empty())
        });
        if ok {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            var: "S3_PUBLIC_ENDPOINT_URL".into(),
            reason: "must be an http:// or https:// URL with a host, e.g. https://s3.example.com"
                .into(),
        })
    }

    /// The base of share-link URLs: PUBLIC_BASE_URL, or `http://LISTEN_ADDR`.
    pub fn public_base_url(&self) -> String {
        self.public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen_addr))
            .trim_end_matches('/')
            .to_string()
    }
}
