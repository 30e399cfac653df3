//! Logging setup for both services.
//!
//! In: a [`LogConfig`] (LOG_METHOD, LOG_PATH, LOG_LEVEL, LOG_FORMAT) and the service name.
//! Out: a global tracing subscriber, plus a guard that must live as long as the program so
//! buffered file output is flushed on exit.

use anyhow::Context;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat, LogMethod};

/// Installs the global subscriber. With LOG_METHOD=file, lines go to
/// `LOG_PATH/<service>.log.YYYY-MM-DD`, rotated daily.
pub fn init(cfg: &LogConfig, service: &str) -> anyhow::Result<WorkerGuard> {
    let filter = EnvFilter::try_new(&cfg.log_level)
        .with_context(|| format!("LOG_LEVEL is invalid: {:?}", cfg.log_level))?;
    let (writer, guard) = match cfg.log_method {
        LogMethod::Stdout => tracing_appender::non_blocking(std::io::stdout()),
        LogMethod::File => {
            std::fs::create_dir_all(&cfg.log_path)
                .with_context(|| format!("LOG_PATH {:?} cannot be created", cfg.log_path))?;
            let appender =
                tracing_appender::rolling::daily(&cfg.log_path, format!("{service}.log"));
            tracing_appender::non_blocking(appender)
        }
    };
    let ansi =
        cfg.log_method == LogMethod::Stdout && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match cfg.log_format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("a log subscriber is already installed: {e}"))?;
    Ok(guard)
}

/// Formats an error with its whole cause chain on one line, for log fields.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let s = cause.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = cause.source();
    }
    out
}
