//! The audit log: every presigned URL issued (API or UI) and every share-link click, whatever
//! its outcome, with the client's address and user agent.
//!
//! In: [`NewAuditEntry`] values from the handlers, through [`AuditLog::record`]. Out: rows in
//! `audit_log`, written by one background task in batches (one INSERT per batch, up to
//! [`BATCH`] entries), so the write costs a presign no database round trip of its own; and
//! `portail_url_audit_entries_total{result}` (`written`, `failed`).
//!
//! The queue holds [`QUEUE`] entries; when it is full, handlers wait (no entry is dropped).
//! At shutdown, after the last request, [`AuditLog::close`] writes what is queued. A batch the
//! database refuses is logged and counted as `failed`; a crash loses what was queued (at most
//! the entries of the last moments).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use portail_core::catalog::{self, NewAuditEntry};
use prometheus::IntCounterVec;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::TrustedProxies;
use crate::AppState;

/// Entries written per INSERT at most.
pub const BATCH: usize = 500;
/// Entries queued at most before handlers wait.
pub const QUEUE: usize = 10_000;
/// The longest User-Agent kept, in bytes.
const MAX_USER_AGENT: usize = 512;

/// The handle handlers record through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<NewAuditEntry>,
    stop: Arc<watch::Sender<bool>>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
    entries: IntCounterVec,
}

impl AuditLog {
    /// Starts the writer task (needs a Tokio runtime).
    pub fn spawn(pool: PgPool, entries: IntCounterVec) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop, stopped) = watch::channel(false);
        let writer = tokio::spawn(write_loop(pool, rx, stopped, entries.clone()));
        AuditLog {
            tx,
            stop: Arc::new(stop),
            writer: Arc::new(Mutex::new(Some(writer))),
            entries,
        }
    }

    /// Queues an entry; waits while the queue is full.
    pub async fn record(&self, entry: NewAuditEntry) {
        if self.tx.send(entry).await.is_err() {
            tracing::error!("audit entry after the audit writer stopped");
            self.entries.with_label_values(&["failed"]).inc();
        }
    }

    /// Writes what is queued, then stops the writer. Call after the last request.
    pub async fn close(&self) {
        let _ = self.stop.send(true);
        let writer = self.writer.lock().map(|mut w| w.take()).unwrap_or(None);
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

/// Deletes entries older than `retention` (AUDIT_RETENTION), and expired web sessions, at
/// start and then hourly. A failed purge is logged and tried again an hour later.
pub fn spawn_purge(pool: PgPool, retention: std::time::Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            every.tick().await;
            let before = chrono::Utc::now() - retention;
            match catalog::purge_audit(&pool, before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(entries = n, "audit entries past AUDIT_RETENTION deleted"),
                Err(e) => tracing::error!(error = %e, "audit purge failed"),
            }
            // Expired web sessions are refused already; this only keeps the table small.
            if let Err(e) = catalog::purge_sessions(&pool).await {
                tracing::error!(error = %e, "session purge failed");
            }
        }
    })
}

/// Waits for entries, gathers those already queued (up to [`BATCH`]) and writes them together.
async fn write_loop(
    pool: PgPool,
    mut rx: mpsc::Receiver<NewAuditEntry>,
    mut stopped: watch::Receiver<bool>,
    entries: IntCounterVec,
) {
    loop {
        let first = tokio::select! {
            e = rx.recv() => e,
            _ = stopped.changed() => None,
        };
        let mut batch: Vec<NewAuditEntry> = first.into_iter().collect();
        let stopping = batch.is_empty();
        while let Ok(e) = rx.try_recv() {
            batch.push(e);
            if batch.len() == BATCH {
                write(&pool, &mut batch, &entries).await;
            }
        }
        write(&pool, &mut batch, &entries).await;
        if stopping {
            return;
        }
    }
}

async fn write(pool: &PgPool, batch: &mut Vec<NewAuditEntry>, entries: &IntCounterVec) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    match catalog::record_audit(pool, batch).await {
        Ok(()) => entries.with_label_values(&["written"]).inc_by(n),
        Err(e) => {
            tracing::error!(error = %e, entries = n, "audit entries could not be written");
            entries.with_label_values(&["failed"]).inc_by(n);
        }
    }
    batch.clear();
}

/// Who is asking, as the audit log records it: the client's address and user agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    /// The peer's address, or the one its trusted proxy forwarded.
    pub ip: Option<IpAddr>,
    /// The User-Agent header, cut to 512 bytes.
    pub user_agent: Option<String>,
}

impl Client {
    /// An entry for this client.
    pub fn entry(
        &self,
        file_id: Option<i64>,
        actor: String,
        channel: &'static str,
        outcome: &'static str,
    ) -> NewAuditEntry {
        NewAuditEntry {
            at: chrono::Utc::now(),
            file_id,
            actor,
            channel,
            outcome,
            client_ip: self.ip,
            user_agent: self.user_agent.clone(),
            counts_click: None,
        }
    }
}

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string())
            .map(|ua| truncate(ua, MAX_USER_AGENT));
        Ok(Client {
            ip: peer.map(|p| client_ip(p, &forwarded, &state.settings.trusted_proxies)),
            user_agent,
        })
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then, walking
/// X-Forwarded-For from the right (the hop nearest to us), the first address that is not a
/// trusted proxy. An address a client wrote itself further left is never believed.
pub fn client_ip(peer: IpAddr, forwarded: &str, trusted: &TrustedProxies) -> IpAddr {
    let mut ip = peer;
    if !trusted.contains(ip) {
        return ip;
    }
    for hop in forwarded.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(hop) => {
                ip = hop;
                if !trusted.contains(hop) {
                    break;
                }
            }
            Err(_) => break, // garbage: keep the last address we could trust
        }
    }
    ip
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let trusted: TrustedProxies = "10.0.0.0/8, ::1".parse().unwrap();
        let xff = "6.6.6.6, 203.0.113.7, 10.0.0.2";
        // From an untrusted peer, the header is the client's own words.
        assert_eq!(
            client_ip(ip("198.51.100.1"), xff, &trusted),
            ip("198.51.100.1")
        );
        // From the proxy, the nearest untrusted hop; the spoofed one on the left is ignored.
        assert_eq!(client_ip(ip("10.0.0.1"), xff, &trusted), ip("203.0.113.7"));
        assert_eq!(
            client_ip(ip("::1"), "203.0.113.9", &trusted),
            ip("203.0.113.9")
        );
        // Garbage, or no header: the last trusted address.
        assert_eq!(
            client_ip(ip("10.0.0.1"), "nonsense", &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(client_ip(ip("10.0.0.1"), "", &trusted), ip("10.0.0.1"));
        let none = TrustedProxies::default();
        assert_eq!(client_ip(ip("10.0.0.1"), xff, &none), ip("10.0.0.1"));
    }

    #[test]
    fn a_long_user_agent_is_cut_on_a_character_boundary() {
        assert_eq!(truncate("é".repeat(300), 511).len(), 510);
        assert_eq!(truncate("abc".into(), 512), "abc");
    }
}
