//! A fault-injecting HTTP proxy for S3, in-process, between a client and s3s-fs.
//!
//! In: the upstream address and a [`Faults`] plan, changeable while it runs. Out: a loopback
//! endpoint that forwards every request untouched (method, path, headers, the Host header
//! included, so SigV4 signatures still verify upstream) unless the plan says otherwise. Per
//! request it can, with a probability or during a time window:
//! - answer `503 SlowDown` or `500 InternalError` without forwarding;
//! - reset the connection without forwarding;
//! - delay the request;
//! - forward a matching request, then hold its answer back (the store did the work, the
//!   client does not know yet: the moment a crash is most harmful);
//! - forward, then cut the response body after N bytes.
//!
//! Counters say what was injected, so a test can prove the faults really happened.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use rand::Rng;
use tokio::net::TcpListener;
use tokio::time::Instant;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What to inject. Probabilities are per request, checked in this order: outage, reset,
/// error, cut. All zero: a transparent proxy.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Probability of answering 503 SlowDown (half the time) or 500 InternalError.
    pub error_rate: f64,
    /// Probability of resetting the connection before forwarding.
    pub reset_rate: f64,
    /// Probability of cutting the forwarded response body after `cut_after` bytes.
    pub cut_rate: f64,
    /// Where a cut body ends.
    pub cut_after: usize,
    /// Delay added before forwarding every request.
    pub delay: Option<Duration>,
    /// Until then, every connection is reset: S3 is unreachable.
    pub outage_until: Option<Instant>,
    /// Requests this matches are forwarded, then their answer is held back this long.
    pub hold_answer: Option<(Matcher, Duration)>,
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matcher {
    /// CreateMultipartUpload: `POST ...?uploads`.
    CreateMultipartUpload,
}

impl Matcher {
    fn matches<B>(self, req: &Request<B>) -> bool {
        match self {
            Matcher::CreateMultipartUpload => {
                let query = req.uri().query().unwrap_or("");
                req.method() == hyper::Method::POST
                    && query.split('&').any(|p| p == "uploads" || p == "uploads=")
            }
        }
    }
}

/// How many faults of each kind were injected.
#[derive(Debug, Default)]
pub struct Injected {
    /// Requests forwarded untouched (including cut ones).
    pub forwarded: AtomicU64,
    /// 503/500 answers.
    pub errors: AtomicU64,
    /// Connections reset (outage included).
    pub resets: AtomicU64,
    /// Bodies cut short.
    pub cuts: AtomicU64,
    /// Answers held back after forwarding (counted when the hold starts).
    pub held: AtomicU64,
}

/// A running proxy. Dropping it stops it.
#[derive(Debug)]
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to use as the S3 endpoint.
    pub endpoint: String,
    faults: Arc<Mutex<Faults>>,
    /// What was injected so far.
    pub injected: Arc<Injected>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) with no faults.
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let faults = Arc::new(Mutex::new(Faults::default()));
        let injected = Arc::new(Injected::default());
        let upstream: Arc<str> = upstream.trim_end_matches('/').into();
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build_http();
        let (f, inj) = (faults.clone(), injected.clone());
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let (f, inj, client, upstream) =
                    (f.clone(), inj.clone(), client.clone(), upstream.clone());
                let service = hyper::service::service_fn(move |req| {
                    handle(
                        req,
                        f.clone(),
                        inj.clone(),
                        client.clone(),
                        upstream.clone(),
                    )
                });
                let conn = http
                    .serve_connection(TokioIo::new(socket), service)
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        FaultProxy {
            endpoint: format!("http://{addr}"),
            faults,
            injected,
            task,
        }
    }

    /// Replaces the fault plan.
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().expect("faults lock") = faults;
    }

    /// Makes S3 unreachable for `d` from now.
    pub fn outage(&self, d: Duration) {
        self.faults.lock().expect("faults lock").outage_until = Some(Instant::now() + d);
    }
}

fn full(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut r = Response::new(Full::new(Bytes::from(xml)).map_err(never).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/xml".parse().expect("header"));
    r
}

async fn handle(
    req: Request<Incoming>,
    faults: Arc<Mutex<Faults>>,
    injected: Arc<Injected>,
    client: Client<HttpConnector, Incoming>,
    upstream: Arc<str>,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let plan = faults.lock().expect("faults lock").clone();
    let (reset, error, cut) = {
        let mut rng = rand::thread_rng();
        let outage = plan.outage_until.is_some_and(|t| Instant::now() < t);
        (
            outage || rng.gen_bool(plan.reset_rate.clamp(0.0, 1.0)),
            rng.gen_bool(plan.error_rate.clamp(0.0, 1.0)),
            rng.gen_bool(plan.cut_rate.clamp(0.0, 1.0)),
        )
    };
    if reset {
        injected.resets.fetch_add(1, Ordering::Relaxed);
        // An error from the service makes hyper drop the connection mid-exchange.
        return Err("injected connection reset".into());
    }
    if error {
        injected.errors.fetch_add(1, Ordering::Relaxed);
        return Ok(if rand::thread_rng().gen_bool(0.5) {
            full(
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                "Please reduce your request rate.",
            )
        } else {
            full(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error. Please try again.",
            )
        });
    }
    if let Some(d) = plan.delay {
        tokio::time::sleep(d).await;
    }
    let hold = plan
        .hold_answer
        .filter(|(m, _)| m.matches(&req))
        .map(|(_, d)| d);
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = format!("{upstream}{path}").parse()?;
    let resp = client.request(Request::from_parts(parts, body)).await?;
    injected.forwarded.fetch_add(1, Ordering::Relaxed);
    if let Some(d) = hold {
        injected.held.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(d).await;
    }
    let (parts, body) = resp.into_parts();
    if !cut {
        return Ok(Response::from_parts(
            parts,
            body.map_err(Into::into).boxed(),
        ));
    }
    injected.cuts.fetch_add(1, Ordering::Relaxed);
    // Keep the upstream Content-Length, send fewer bytes, then fail the stream.
    let bytes = body.collect().await?.to_bytes();
    let keep = bytes.slice(..plan.cut_after.min(bytes.len()));
    let frames: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> = vec![
        Ok(Frame::data(keep)),
        Err("injected: body cut short".into()),
    ];
    let stream = StreamBody::new(futures::stream::iter(frames));
    Ok(Response::from_parts(parts, BodyExt::boxed(stream)))
}

/// Converts the `Infallible` error of [`Full`] bodies.
fn never(e: Infallible) -> Box<dyn std::error::Error + Send + Sync> {
    match e {}
}
