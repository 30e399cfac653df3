//! portail-core: the pieces both portail services really share.
//!
//! In: environment variables, a PostgreSQL URL, S3 settings.
//! Out: typed configuration ([`config`]), the catalog's models and every SQL statement
//! ([`catalog`]), a correctly configured S3 client ([`s3`]), logging ([`telemetry`]) and the
//! Prometheus registry plus metric names ([`metrics`]), and clean shutdown on signals
//! ([`signal`]).

pub mod catalog;
pub mod config;
pub mod metrics;
pub mod s3;
pub mod signal;
pub mod telemetry;
