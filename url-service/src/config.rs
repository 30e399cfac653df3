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
    /// TRUSTED_PROXIES: the reverse proxies (addresses or CIDR ranges, comma-separated, e.g.
    /// `10.0.0.0/8, ::1`) whose X-Forwarded-For the audit log believes. Default none: the
    /// peer's own address is recorded.
    #[serde(default)]
    pub trusted_proxies: TrustedProxies,
    /// AUDIT_RETENTION: how long audit entries are kept; older ones are deleted hourly.
    /// Default `90d`.
    #[serde(default = "default_audit_retention")]
    pub audit_retention: HumanDuration,
    /// UI_SESSION_TTL: how long a sign-in to the web pages lasts. Default `12h`.
    #[serde(default = "default_ui_session_ttl")]
    pub ui_session_ttl: HumanDuration,
}

/// Addresses and CIDR ranges, parsed once from TRUSTED_PROXIES.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TrustedProxies(Vec<(std::net::IpAddr, u8)>);

impl TryFrom<String> for TrustedProxies {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for TrustedProxies {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (addr, bits) = item.split_once('/').unwrap_or((item, ""));
            let addr: std::net::IpAddr = addr
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or CIDR range"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                "" => max,
                b => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("{item:?}: the prefix length must be 0 to {max}"))?,
            };
            ranges.push((addr.to_canonical(), bits));
        }
        Ok(TrustedProxies(ranges))
    }
}

impl TrustedProxies {
    /// Whether `ip` is in one of the ranges (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let ip = ip.to_canonical();
        self.0.iter().any(|(net, bits)| match (net, ip) {
            (V4(n), V4(a)) => mask_eq(u32::from(*n).into(), u32::from(a).into(), *bits, 32),
            (V6(n), V6(a)) => mask_eq(u128::from(*n), u128::from(a), *bits, 128),
            _ => false,
        })
    }
}

/// Whether the first `bits` of two `width`-bit numbers agree.
fn mask_eq(a: u128, b: u128, bits: u8, width: u32) -> bool {
    let shift = width - u32::from(bits);
    shift >= width || (a >> shift) == (b >> shift)
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

fn default_ui_session_ttl() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(12 * 3600))
}
fn default_audit_retention() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(90 * 86_400))
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

fn check_proxies(s: &str) -> Result<(), String> {
    s.parse::<TrustedProxies>().map(|_| ())
}

impl FromEnv for ServiceSettings {
    const TYPED_VARS: &'static [(&'static str, ValueKind)] = &[
        ("DEFAULT_URL_TTL", ValueKind::Duration),
        ("LINK_PRESIGN_TTL", ValueKind::Duration),
        ("DEFAULT_LINK_TTL", ValueKind::Duration),
        ("DOWNLOAD_MODE", ValueKind::OneOf(&["redirect", "proxy"])),
        ("HTTP_HEADER_TIMEOUT", ValueKind::Duration),
        ("HTTP_BODY_TIMEOUT", ValueKind::Duration),
        ("AUDIT_RETENTION", ValueKind::Duration),
        ("UI_SESSION_TTL", ValueKind::Duration),
        ("TRUSTED_PROXIES", ValueKind::Parsed(check_proxies)),
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
            trusted_proxies: TrustedProxies::default(),
            audit_retention: default_audit_retention(),
            ui_session_ttl: default_ui_session_ttl(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_match_addresses_and_ranges() {
        let t: TrustedProxies = "10.0.0.0/8, 192.168.1.7,fd00::/8, 0.0.0.0/0"
            .parse()
            .unwrap();
        assert!(t.contains("10.200.3.4".parse().unwrap()));
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(!t.contains("fe80::1".parse().unwrap()));
        let t: TrustedProxies = "10.0.0.0/8, 192.168.1.7".parse().unwrap();
        assert!(t.contains("192.168.1.7".parse().unwrap()));
        assert!(!t.contains("192.168.1.8".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        // A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d.
        assert!(t.contains("::ffff:10.1.2.3".parse().unwrap()));
        let all: TrustedProxies = "::/0".parse().unwrap();
        assert!(all.contains("2001:db8::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.1/x"] {
            assert!(bad.parse::<TrustedProxies>().is_err(), "{bad}");
        }
        let e = ServiceSettings::from_vars([("TRUSTED_PROXIES".into(), "nope".into())]);
        assert!(e.unwrap_err().to_string().contains("TRUSTED_PROXIES"));
    }
}
