//! Configuration helpers shared by both services.
//!
//! In: the process environment (or any `(name, value)` iterator, for tests).
//! Out: typed sections ([`DatabaseConfig`], [`S3Config`], [`LogConfig`]) deserialized with envy,
//! or one [`ConfigError`] that names the offending variable and never echoes a secret.
//!
//! Durations are written like `500ms`, `30s`, `10m`; sizes as bytes or `64MiB`, `1GB`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use sqlx::postgres::PgConnectOptions;

/// A configuration problem. The binaries print it and exit with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("{0} is required but not set (see .env.example)")]
    Missing(String),
    /// A variable is set to something that cannot be used.
    #[error("{var} is invalid: {reason}")]
    Invalid {
        /// The variable's name, e.g. `SETTLE_TIME`.
        var: String,
        /// Why the value was refused. Never contains a secret's value.
        reason: String,
    },
}

/// What kind of value a variable holds, for the checks that run before envy.
#[derive(Debug, Clone, Copy)]
pub enum ValueKind {
    /// A [`HumanDuration`].
    Duration,
    /// A [`ByteSize`].
    Size,
    /// One of a fixed set of words (an enum).
    OneOf(&'static [&'static str]),
    /// A value of a custom type; the function says why a value is not one.
    Parsed(fn(&str) -> Result<(), String>),
}

/// A configuration section read from environment variables.
pub trait FromEnv: DeserializeOwned {
    /// Variables holding durations or sizes. They are checked first, by name, because serde
    /// errors from custom types do not say which variable was wrong.
    const TYPED_VARS: &'static [(&'static str, ValueKind)] = &[];

    /// Reads the section from the process environment.
    fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the section from an explicit list of variables (used by tests).
    fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        // Empty values count as unset, like in most .env tooling.
        let vars: Vec<(String, String)> = vars.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        for (name, kind) in Self::TYPED_VARS {
            if let Some((_, value)) = vars.iter().find(|(k, _)| k == name) {
                let result = match kind {
                    ValueKind::Duration => value.parse::<HumanDuration>().map(|_| ()),
                    ValueKind::Size => value.parse::<ByteSize>().map(|_| ()),
                    ValueKind::OneOf(words) if words.contains(&value.as_str()) => Ok(()),
                    ValueKind::OneOf(words) => Err(format!("must be one of: {}", words.join(", "))),
                    ValueKind::Parsed(check) => check(value),
                };
                if let Err(reason) = result {
                    return Err(ConfigError::Invalid {
                        var: (*name).to_string(),
                        reason,
                    });
                }
            }
        }
        envy::from_iter(vars).map_err(|e| match e {
            envy::Error::MissingValue(field) => ConfigError::Missing(field.to_uppercase()),
            envy::Error::Custom(msg) => {
                // envy's parse errors end with "provided by VAR"; keep the name, drop the value.
                match msg.rsplit_once(" provided by ") {
                    Some((_, var)) => ConfigError::Invalid {
                        var: var.to_string(),
                        reason: "not a valid number or boolean".into(),
                    },
                    None => ConfigError::Invalid {
                        var: "environment".into(),
                        reason: msg,
                    },
                }
            }
        })
    }
}

/// A duration written like `500ms`, `30s`, `10m` or `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|_| format!("expected a duration such as 500ms, 30s or 10m, got {s:?}"))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
}

/// A size in bytes, written as a plain number or with a unit: `64MiB`, `8MB`, `1GiB`, `512k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected a size such as 1048576, 64MiB or 1GB, got {s:?}");
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(bad)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A secret value: its `Debug` and `Display` never show it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The real value, for the one place that must send it somewhere.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How to reach PostgreSQL. `DATABASE_URL` wins when set; otherwise the `DB_*` parts are used.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    /// DATABASE_URL: a full `postgres://` URL. Wins over the `DB_*` variables.
    pub database_url: Option<Secret>,
    /// DB_HOST: host name, or a directory holding the Unix socket. Default `localhost`.
    #[serde(default = "default_db_host")]
    pub db_host: String,
    /// DB_PORT: default 5432.
    #[serde(default = "default_db_port")]
    pub db_port: u16,
    /// DB_NAME: default `portail`.
    #[serde(default = "default_db_name")]
    pub db_name: String,
    /// DB_USER: default `portail`.
    #[serde(default = "default_db_name")]
    pub db_user: String,
    /// DB_PASSWORD: optional.
    pub db_password: Option<Secret>,
    /// DB_MAX_CONNECTIONS: size of the connection pool. Default 10.
    #[serde(default = "default_db_max_connections")]
    pub db_max_connections: u32,
    /// DB_ACQUIRE_TIMEOUT: longest wait for a pooled connection (including connecting) before a
    /// request fails. While PostgreSQL is down, the url-service answers 503 after this long and
    /// the agent retries later. Default `5s`.
    #[serde(default = "default_db_acquire_timeout")]
    pub db_acquire_timeout: HumanDuration,
}

fn default_db_host() -> String {
    "localhost".into()
}
fn default_db_port() -> u16 {
    5432
}
fn default_db_name() -> String {
    "portail".into()
}
fn default_db_max_connections() -> u32 {
    10
}
fn default_db_acquire_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

impl FromEnv for DatabaseConfig {
    const TYPED_VARS: &'static [(&'static str, ValueKind)] =
        &[("DB_ACQUIRE_TIMEOUT", ValueKind::Duration)];
}

impl DatabaseConfig {
    /// Connection options, built without ever formatting the password into a string.
    pub fn connect_options(&self) -> Result<PgConnectOptions, ConfigError> {
        if let Some(url) = &self.database_url {
            return url.expose().parse().map_err(|_| ConfigError::Invalid {
                var: "DATABASE_URL".into(),
                reason: "not a valid postgres:// URL".into(),
            });
        }
        let mut opts = PgConnectOptions::new()
            .host(&self.db_host)
            .port(self.db_port)
            .database(&self.db_name)
            .username(&self.db_user);
        if let Some(pw) = &self.db_password {
            opts = opts.password(pw.expose());
        }
        Ok(opts)
    }
}

/// How to reach S3 or an S3-compatible store.
#[derive(Debug, Clone, Deserialize)]
pub struct S3Config {
    /// AWS_REGION: default `us-east-1`.
    #[serde(default = "default_region")]
    pub aws_region: String,
    /// AWS_BUCKET_NAME: the bucket holding the mirror. Required.
    pub aws_bucket_name: String,
    /// AWS_ACCESS_KEY_ID: static credentials. Without it, the AWS default chain is used
    /// (web identity, ECS, instance profile).
    pub aws_access_key_id: Option<String>,
    /// AWS_SECRET_ACCESS_KEY: goes with AWS_ACCESS_KEY_ID.
    pub aws_secret_access_key: Option<Secret>,
    /// AWS_ENDPOINT_URL: the endpoint of MinIO or another S3-compatible store.
    pub aws_endpoint_url: Option<String>,
    /// AWS_FORCE_PATH_STYLE: path-style addressing. Default: true when AWS_ENDPOINT_URL is set.
    pub aws_force_path_style: Option<bool>,
    /// S3_CONNECT_TIMEOUT: time to establish a connection. Default `5s`.
    #[serde(default = "default_connect_timeout")]
    pub s3_connect_timeout: HumanDuration,
    /// S3_READ_TIMEOUT: longest wait for the next bytes of a response. Default `60s`.
    #[serde(default = "default_read_timeout")]
    pub s3_read_timeout: HumanDuration,
    /// S3_MAX_ATTEMPTS: attempts per request, including the first, with exponential backoff
    /// and jitter between them. Default 5.
    #[serde(default = "default_max_attempts")]
    pub s3_max_attempts: u32,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_read_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_max_attempts() -> u32 {
    5
}

impl FromEnv for S3Config {
    const TYPED_VARS: &'static [(&'static str, ValueKind)] = &[
        ("S3_CONNECT_TIMEOUT", ValueKind::Duration),
        ("S3_READ_TIMEOUT", ValueKind::Duration),
    ];
}

impl S3Config {
    /// Checks what serde cannot: credentials come in pairs, attempts are at least one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.aws_access_key_id, &self.aws_secret_access_key) {
            (Some(_), None) => Err(ConfigError::Missing("AWS_SECRET_ACCESS_KEY".into())),
            (None, Some(_)) => Err(ConfigError::Missing("AWS_ACCESS_KEY_ID".into())),
            _ if self.s3_max_attempts == 0 => Err(ConfigError::Invalid {
                var: "S3_MAX_ATTEMPTS".into(),
                reason: "must be at least 1".into(),
            }),
            _ => Ok(()),
        }
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogMethod {
    /// To standard output.
    Stdout,
    /// To a daily-rotated file under LOG_PATH.
    File,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
pub struct LogConfig {
    /// LOG_METHOD: `stdout` (default) or `file`.
    #[serde(default = "default_log_method")]
    pub log_method: LogMethod,
    /// LOG_PATH: the directory for log files when LOG_METHOD=file. Default `./logs`.
    #[serde(default = "default_log_path")]
    pub log_path: String,
    /// LOG_LEVEL: a tracing filter such as `info` or `portail_agent=debug,info`.
    /// Default `info,sqlx=warn` (sqlx logs every server notice at info).
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// LOG_FORMAT: `text` (default) or `json`.
    #[serde(default = "default_log_format")]
    pub log_format: LogFormat,
}

fn default_log_method() -> LogMethod {
    LogMethod::Stdout
}
fn default_log_path() -> String {
    "./logs".into()
}
fn default_log_level() -> String {
    "info,sqlx=warn".into()
}
fn default_log_format() -> LogFormat {
    LogFormat::Text
}

impl FromEnv for LogConfig {
    const TYPED_VARS: &'static [(&'static str, ValueKind)] = &[
        ("LOG_METHOD", ValueKind::OneOf(&["stdout", "file"])),
        ("LOG_FORMAT", ValueKind::OneOf(&["text", "json"])),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(
            "500ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            "10m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(600)
        );
        assert!("10 parsecs".parse::<HumanDuration>().is_err());
        assert_eq!("64MiB".parse::<ByteSize>().unwrap().0, 64 << 20);
        assert_eq!("8MB".parse::<ByteSize>().unwrap().0, 8_000_000);
        assert_eq!("1234".parse::<ByteSize>().unwrap().0, 1234);
        assert!("12XB".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
        assert!("99999999999999999999GiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn missing_variable_is_named() {
        let err = S3Config::from_vars(vars(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "AWS_BUCKET_NAME is required but not set (see .env.example)"
        );
    }

    #[test]
    fn bad_duration_is_named() {
        let err = S3Config::from_vars(vars(&[
            ("AWS_BUCKET_NAME", "b"),
            ("S3_READ_TIMEOUT", "soon"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().starts_with("S3_READ_TIMEOUT is invalid"),
            "{err}"
        );
    }

    #[test]
    fn bad_enum_is_named_with_the_choices() {
        let err = LogConfig::from_vars(vars(&[("LOG_METHOD", "syslog")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "LOG_METHOD is invalid: must be one of: stdout, file"
        );
    }

    #[test]
    fn bad_number_is_named_without_its_value() {
        let err = DatabaseConfig::from_vars(vars(&[("DB_PORT", "hunter2")])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("DB_PORT is invalid"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let cfg = S3Config::from_vars(vars(&[
            ("AWS_BUCKET_NAME", "b"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "topsecretvalue"),
        ]))
        .unwrap();
        assert!(!format!("{cfg:?}").contains("topsecretvalue"));
        cfg.validate().unwrap();
    }

    #[test]
    fn half_a_credential_pair_is_refused() {
        let cfg = S3Config::from_vars(vars(&[
            ("AWS_BUCKET_NAME", "b"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
        ]))
        .unwrap();
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            ConfigError::Missing("AWS_SECRET_ACCESS_KEY".into()).to_string()
        );
    }

    #[test]
    fn database_url_wins_and_parts_work() {
        let cfg = DatabaseConfig::from_vars(vars(&[
            ("DATABASE_URL", "postgres://u:p@h:1/d"),
            ("DB_HOST", "elsewhere"),
        ]))
        .unwrap();
        let opts = cfg.connect_options().unwrap();
        assert_eq!(opts.get_host(), "h");
        assert_eq!(opts.get_port(), 1);
        let cfg =
            DatabaseConfig::from_vars(vars(&[("DB_HOST", "db"), ("DB_PORT", "6543")])).unwrap();
        let opts = cfg.connect_options().unwrap();
        assert_eq!((opts.get_host(), opts.get_port()), ("db", 6543));
        assert_eq!(opts.get_database(), Some("portail"));
    }
}
