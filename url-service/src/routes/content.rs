//! Downloads: `GET /v1/files/{id}/content`, and the body of `GET /l/{token}` in proxy mode.
//!
//! In: a file the caller may see (or a share link that was just counted) and the request's
//! `Range`. Out, by DOWNLOAD_MODE:
//! - `redirect`: 302 to a fresh presigned URL (`attachment`), signed for
//!   S3_PUBLIC_ENDPOINT_URL; the bytes go straight from S3 to the user.
//! - `proxy`: the object streamed through this service from AWS_ENDPOINT_URL, never buffered
//!   whole, with `Content-Length`, `Content-Type`, `ETag`, `Content-Disposition` and
//!   `Accept-Ranges`. A client that disconnects drops the stream, which closes the S3 response.
//!
//! Range (proxy mode), as RFC 9110 allows: one `bytes=` range gets 206 with `Content-Range`;
//! a range that starts past the end (or any range of an empty file) gets 416 with
//! `Content-Range: bytes */SIZE`; a `bytes=` value that cannot be parsed gets 416 naming the
//! problem; several ranges, or a unit other than `bytes`, get the whole object (200).

use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use portail_core::catalog::FileWithBucket;

use crate::audit::Client;
use crate::auth::Caller;
use crate::config::DownloadMode;
use crate::error::ApiError;
use crate::routes::files::{
    audit_outcome, content_disposition, ensure_servable, file_name, presign, visible_file,
    Disposition,
};
use crate::routes::IdParam;
use crate::AppState;

/// What a `Range` header asks of an object of a known size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ByteRange {
    /// No range, several ranges, or another unit: the whole object.
    Whole,
    /// Bytes `first..=last`, both within the object.
    Part {
        /// The first byte served.
        first: u64,
        /// The last byte served (inclusive).
        last: u64,
    },
    /// Nothing of the object can be served: 416.
    Unsatisfiable(String),
}

/// Reads a `Range` header against an object of `size` bytes.
pub fn parse_range(value: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let bad = || ByteRange::Unsatisfiable(format!("malformed Range: bytes={spec}"));
    let Some((a, b)) = spec.trim().split_once('-') else {
        return bad();
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    let (first, last) = match (a.trim().is_empty(), b.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(b) {
            Some(n) if n > 0 && size > 0 => (size - n.min(size), size - 1),
            Some(_) => return ByteRange::Unsatisfiable(format!("no bytes in bytes={spec}")),
            None => return bad(),
        },
        // bytes=A-: from A to the end.
        (false, true) => match num(a) {
            Some(first) => (first, size.saturating_sub(1)),
            None => return bad(),
        },
        (false, false) => match (num(a), num(b)) {
            (Some(first), Some(last)) if first <= last => (first, last.min(size.saturating_sub(1))),
            _ => return bad(),
        },
        (true, true) => return bad(),
    };
    if first >= size {
        return ByteRange::Unsatisfiable(format!("the range starts past the end ({size} bytes)"));
    }
    ByteRange::Part { first, last }
}

/// `GET /v1/files/{id}/content`: the file's bytes, by DOWNLOAD_MODE. Recorded in the audit
/// log like `POST /v1/files/{id}/url` (outcome `redirected` or `proxied`).
pub async fn file_content(
    State(state): State<AppState>,
    caller: Caller,
    client: Client,
    IdParam(id): IdParam,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let answer = content(&state, &caller, id, &headers).await;
    let done = match state.settings.download_mode {
        DownloadMode::Redirect => "redirected",
        DownloadMode::Proxy => "proxied",
    };
    let outcome = audit_outcome(answer.as_ref().map(|_| done));
    let entry = client.entry(Some(id), caller.0.name.clone(), "api", outcome);
    state.audit.record(entry).await;
    answer
}

async fn content(
    state: &AppState,
    caller: &Caller,
    id: i64,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let file = visible_file(state, caller, id).await?;
    ensure_servable(&file)?;
    match state.settings.download_mode {
        DownloadMode::Redirect => Ok(redirect(attachment_url(state, &file).await?)),
        DownloadMode::Proxy => stream_object(state, &file, headers).await,
    }
}

/// A fresh presigned URL, valid DEFAULT_URL_TTL, that downloads the file under its own name
/// (`attachment`): the API's redirect mode and the page's Download button.
pub async fn attachment_url(state: &AppState, file: &FileWithBucket) -> Result<String, ApiError> {
    let disposition = content_disposition(Disposition::Attachment, file_name(file));
    let ttl = state.settings.default_url_ttl.0;
    Ok(presign(state, file, ttl, Some(disposition)).await?.url)
}

/// A 302 that no cache keeps (every click must mint a fresh URL).
pub fn redirect(url: String) -> Response {
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, url),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
    )
        .into_response()
}

/// Streams a file's object (or the asked range of it) from S3 to the client.
pub async fn stream_object(
    state: &AppState,
    file: &FileWithBucket,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let size = file.file.size_bytes.max(0) as u64;
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    );
    let mut req = state
        .s3
        .get_object()
        .bucket(&file.bucket)
        .key(&file.file.s3_key);
    match &range {
        ByteRange::Unsatisfiable(why) => return Ok(unsatisfiable(size, why)),
        ByteRange::Part { first, last } => req = req.range(format!("bytes={first}-{last}")),
        ByteRange::Whole => {}
    }
    let out = req.send().await.map_err(|e| {
        if e.code() == Some("NoSuchKey") {
            tracing::warn!(key = %file.file.s3_key, "object missing from S3");
            return ApiError::NotFound("object");
        }
        tracing::error!(key = %file.file.s3_key, error = %DisplayErrorContext(&e), "GetObject failed");
        ApiError::Unavailable
    })?;
    let mut resp = Response::builder()
        .status(match range {
            ByteRange::Part { .. } => StatusCode::PARTIAL_CONTENT,
            _ => StatusCode::OK,
        })
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, no-store");
    let content_type = file
        .file
        .content_type
        .clone()
        .or_else(|| out.content_type().map(String::from))
        .unwrap_or_else(|| "application/octet-stream".into());
    let disposition = content_disposition(Disposition::Attachment, file_name(file));
    let length = out.content_length().map(|n| n.to_string());
    let headers = [
        (header::CONTENT_TYPE, Some(content_type)),
        (header::CONTENT_DISPOSITION, Some(disposition)),
        (header::CONTENT_LENGTH, length),
        (header::ETAG, out.e_tag().map(String::from)),
        (header::CONTENT_RANGE, out.content_range().map(String::from)),
    ];
    for (name, value) in headers {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            resp = resp.header(name, v);
        }
    }
    let body = body_stream(out.body, state.metrics.proxied_bytes.clone());
    resp.body(Body::from_stream(body)).map_err(|e| {
        tracing::error!(error = %e, "building the download response");
        ApiError::Internal
    })
}

/// The S3 body as a stream of chunks, counted as they go out. Dropping it (the client went
/// away) drops the S3 response, which closes its connection: the download from S3 stops.
fn body_stream(
    body: aws_sdk_s3::primitives::ByteStream,
    counter: prometheus::IntCounter,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    futures::stream::unfold((body, counter), |(mut body, counter)| async move {
        // A stalled S3 read fails the stream (the client sees a cut body) instead of hanging.
        let next = tokio::time::timeout(Duration::from_secs(60), body.next()).await;
        match next {
            Ok(Some(Ok(chunk))) => {
                counter.inc_by(chunk.len() as u64);
                Some((Ok(chunk), (body, counter)))
            }
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), (body, counter))),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::other("S3 stopped sending for 60 s")),
                (body, counter),
            )),
        }
    })
}

/// 416 with the object's size, as RFC 9110 asks, and a JSON body that says why.
fn unsatisfiable(size: u64, why: &str) -> Response {
    let mut resp = (
        StatusCode::RANGE_NOT_SATISFIABLE,
        Json(serde_json::json!({"error": "range_not_satisfiable", "message": why})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
        resp.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(first: u64, last: u64) -> ByteRange {
        ByteRange::Part { first, last }
    }

    #[test]
    fn single_ranges_are_served_and_clamped_to_the_object() {
        assert_eq!(parse_range(Some("bytes=0-9"), 100), part(0, 9));
        assert_eq!(parse_range(Some("bytes=90-200"), 100), part(90, 99));
        assert_eq!(parse_range(Some("bytes=10-"), 100), part(10, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), part(90, 99));
        assert_eq!(parse_range(Some("bytes=-500"), 100), part(0, 99));
        assert_eq!(parse_range(Some("bytes=99-99"), 100), part(99, 99));
    }

    #[test]
    fn no_range_several_ranges_or_another_unit_mean_the_whole_object() {
        assert_eq!(parse_range(None, 100), ByteRange::Whole);
        assert_eq!(parse_range(Some("bytes=0-1,5-9"), 100), ByteRange::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 100), ByteRange::Whole);
    }

    #[test]
    fn ranges_past_the_end_or_malformed_are_unsatisfiable() {
        let unsat =
            |v: &str, size| matches!(parse_range(Some(v), size), ByteRange::Unsatisfiable(_));
        assert!(unsat("bytes=100-", 100));
        assert!(unsat("bytes=100-200", 100));
        assert!(unsat("bytes=-0", 100));
        assert!(unsat("bytes=0-", 0), "an empty file has no byte to serve");
        assert!(unsat("bytes=-5", 0));
        for bad in [
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=1",
            "bytes=--1",
        ] {
            match parse_range(Some(bad), 100) {
                ByteRange::Unsatisfiable(why) => assert!(why.contains("malformed"), "{bad}: {why}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
