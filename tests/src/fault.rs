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
//! - rewrite every ETag it returns (headers and listings) to a value that is not the MD5 of the
//!   bytes, as SSE-KMS and SSE-C stores do.
//!
//! Counters say what was injected, so a test can prove the faults really happened; every
//! request's method, path and headers are logged, so a test can check what a client sent.

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
    /// Replace every ETag in answers with one that is not the MD5 of the bytes.
    pub rewrite_etags: bool,
}

/// One request as the proxy received it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// `PUT`, `POST`, ...
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
}

impl Logged {
    fn of<B>(req: &Request<B>) -> Self {
        let text = |v: &hyper::header::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into();
        Logged {
            method: req.method().to_string(),
            target: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), text(v)))
                .collect(),
        }
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
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
    /// Every request received, in order.
    pub log: Mutex<Vec<Logged>>,
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

/// 503 SlowDown or 500 InternalError, at random.
fn server_error() -> Response<Body> {
    if rand::thread_rng().gen_bool(0.5) {
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
    injected
        .log
        .lock()
        .expect("log lock")
        .push(Logged::of(&req));
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
        return Ok(server_error());
    }
    if let Some(d) = plan.delay {
        tokio::time::sleep(d).await;
    }
    let hold = plan
        .hold_answer
        .filter(|(m, _)| m.matches(&req))
        .map(|(_, d)| d);
    let listing = req.uri().query().is_some_and(|q| q.contains("list-type=2"));
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
    let (mut parts, body) = resp.into_parts();
    if plan.rewrite_etags {
        return rewrite_etags(&mut parts, body, listing).await;
    }
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

/// A stand-in ETag: 32 hex digits, like an MD5, but not the MD5 of the bytes.
fn fake_etag(etag: &str) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(format!("kms:{etag}")))
}

/// Rewrites the ETag header, and in a listing every `<ETag>`, as an SSE-KMS store would answer.
async fn rewrite_etags(
    parts: &mut hyper::http::response::Parts,
    body: Incoming,
    listing: bool,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    if let Some(etag) = parts.headers.get("etag").and_then(|v| v.to_str().ok()) {
        let fake = format!("\"{}\"", fake_etag(etag.trim_matches('"')));
        parts.headers.insert("etag", fake.parse()?);
    }
    let bytes = body.collect().await?.to_bytes();
    let bytes = if listing {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(i) = rest.find("<ETag>") {
            let (head, tail) = rest.split_at(i + "<ETag>".len());
            out.push_str(head);
            let end = tail.find("</ETag>").unwrap_or(tail.len());
            let etag = tail[..end].replace("&quot;", "").replace('"', "");
            out.push_str(&format!("&quot;{}&quot;", fake_etag(&etag)));
            rest = &tail[end..];
        }
        out.push_str(rest);
        parts.headers.remove("content-length");
        Bytes::from(out)
    } else {
        bytes
    };
    Ok(Response::from_parts(
        parts.clone(),
        Full::new(bytes).map_err(never).boxed(),
    ))
}

/// Converts the `Infallible` error of [`Full`] bodies.
fn never(e: Infallible) -> Box<dyn std::error::Error + Send + Sync> {
    match e {}
}
