//! Progress of a running pass, for people watching it.
//!
//! In: counters the pass bumps as it goes. Out: a live line on stderr when stderr is a terminal
//! (files scanned, files done, bytes, rate), or a log line every 10 s otherwise. A pass streams,
//! so there is no known total to draw a bar against.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters shared between a pass and its reporter.
#[derive(Debug, Default)]
pub struct Progress {
    /// Regular files found by the walk.
    pub scanned: AtomicU64,
    /// Files whose work finished (uploaded, updated, renamed or failed).
    pub done: AtomicU64,
    /// Bytes uploaded.
    pub bytes: AtomicU64,
}

impl Progress {
    fn line(&self, started: Instant) -> String {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        format!(
            "scanned {} files, synced {} files, {} uploaded ({}/s)",
            self.scanned.load(Ordering::Relaxed),
            self.done.load(Ordering::Relaxed),
            indicatif::HumanBytes(bytes),
            indicatif::HumanBytes((bytes as f64 / secs) as u64),
        )
    }
}

/// Reports progress until dropped.
#[derive(Debug)]
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    bar: Option<indicatif::ProgressBar>,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Starts reporting on `progress`: a live line on a terminal, periodic log lines otherwise.
pub fn report(progress: Arc<Progress>) -> Reporter {
    let started = Instant::now();
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(200));
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                b.set_message(progress.line(started));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Reporter {
            task,
            bar: Some(bar),
        }
    } else {
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                tracing::info!("progress: {}", progress.line(started));
            }
        });
        Reporter { task, bar: None }
    }
}
