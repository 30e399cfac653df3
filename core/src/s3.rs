//! The S3 client builder both services use.
//!
//! In: an [`S3Config`]. Out: an `aws_sdk_s3::Client` that works against AWS, MinIO and s3s.
//!
//! Why each setting:
//! - Checksums are `WhenRequired` both ways: since early 2025 the SDK sends CRC32 and
//!   `aws-chunked` bodies by default, which many S3-compatible stores reject or mishandle.
//!   portail sends `Content-MD5` itself instead.
//! - Path-style addressing is the default whenever a custom endpoint is set, because MinIO and
//!   s3s serve buckets as paths, not subdomains.
//! - Explicit connect/read timeouts, so a dead server fails a request instead of hanging it,
//!   and the SDK's standard retry (exponential backoff with jitter, S3_MAX_ATTEMPTS attempts in
//!   all) for 5xx, SlowDown, timeouts and reset connections. [`count_retries`] makes every
//!   retry visible in a metric.

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::Client;

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::client::retries::RequestAttempts;

use crate::config::S3Config;

/// Builds the S3 client. Only when no static keys are configured does it consult the AWS
/// default credential chain (which may probe instance metadata).
pub async fn build_client(cfg: &S3Config) -> Client {
    let path_style = cfg
        .aws_force_path_style
        .unwrap_or(cfg.aws_endpoint_url.is_some());
    let mut builder = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(cfg.aws_region.clone()))
        .force_path_style(path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(cfg.s3_connect_timeout.0)
                .read_timeout(cfg.s3_read_timeout.0)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(cfg.s3_max_attempts));
    if let Some(endpoint) = &cfg.aws_endpoint_url {
        builder = builder.endpoint_url(endpoint);
    }
    match (&cfg.aws_access_key_id, &cfg.aws_secret_access_key) {
        (Some(key), Some(secret)) => {
            builder = builder.credentials_provider(Credentials::new(
                key,
                secret.expose(),
                None,
                None,
                "portail-env",
            ));
        }
        _ => {
            let chain =
                aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                    .region(Region::new(cfg.aws_region.clone()))
                    .build()
                    .await;
            builder = builder.credentials_provider(chain);
        }
    }
    Client::from_conf(builder.build())
}

/// Returns the client with an interceptor that adds one to `retries` for every attempt after
/// the first (the SDK retries 5xx, SlowDown, timeouts and resets on its own, silently).
pub fn count_retries(client: &Client, retries: prometheus::IntCounter) -> Client {
    let conf = client
        .config()
        .to_builder()
        .interceptor(RetryCounter(retries))
        .build();
    Client::from_conf(conf)
}

#[derive(Debug)]
struct RetryCounter(prometheus::IntCounter);

impl Intercept for RetryCounter {
    fn name(&self) -> &'static str {
        "portail-retry-counter"
    }

    fn read_before_attempt(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        if cfg
            .load::<RequestAttempts>()
            .is_some_and(|a| a.attempts() > 1)
        {
            self.0.inc();
        }
        Ok(())
    }
}
