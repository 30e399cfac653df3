//! The web pages under `/ui/`: sign in with an API token, browse folder by folder, search by
//! name, a page per file (metadata, history, download, share links), the audit log.
//!
//! In: a browser, with the session cookie that [`session`] hands out. Out: server-rendered
//! HTML (maud, which escapes every value by default), working without JavaScript; one small
//! script of ours (`/ui/static/app.js`) adds copy-to-clipboard. Every page answers with a
//! Content-Security-Policy that allows no inline script and no framing, `nosniff`, and
//! `no-store`. Every state-changing form carries the session's CSRF token; a POST without it
//! gets 403. A token's scopes hold here exactly as in the API: the pages call the same catalog
//! functions with the same scope.

pub mod browse;
pub mod file;
pub mod session;

use axum::extract::{Path, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};

use crate::error::ApiError;
use crate::AppState;

/// The pages' Content-Security-Policy: only our own script and style, no framing, forms post
/// only to us.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The `/ui/` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(browse::index))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/files/{id}", get(file::page))
        .route("/ui/files/{id}/download", get(file::download))
        .route("/ui/files/{id}/links", post(file::create_link))
        .route("/ui/links/{id}/revoke", post(file::revoke_link))
        .route("/ui/audit", get(browse::audit))
        .route("/ui/static/{name}", get(static_file))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Adds the security headers to every `/ui/` answer.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The embedded stylesheet and script (no build chain: two files in `url-service/static/`).
async fn static_file(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "style.css" => (include_str!("../../static/style.css"), "text/css"),
        "app.js" => (include_str!("../../static/app.js"), "text/javascript"),
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    let cache = "public, max-age=3600";
    (
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, cache)],
        body,
    )
        .into_response()
}

/// A whole page: the layout around `body`. `signed_in` shows the navigation and sign-out form
/// (which needs the session's CSRF token).
pub fn layout(title: &str, signed_in: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · portail" }
                link rel="stylesheet" href="/ui/static/style.css";
                script src="/ui/static/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/ui/" { "portail" }
                    @if let Some(csrf) = signed_in {
                        form.search action="/ui/" method="get" {
                            input type="search" name="q" placeholder="Search by name" aria-label="Search by name";
                            button type="submit" { "Search" }
                        }
                        nav {
                            a href="/ui/audit" { "Audit log" }
                            form action="/ui/logout" method="post" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A failure shown as a page, with the API's status (404 outside the token's scope, ...).
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl From<sqlx::Error> for PageError {
    fn from(e: sqlx::Error) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, _) = self.0.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self.0, "page failed");
        }
        let page = layout(
            "Error",
            None,
            html! { h1 { (status.as_u16()) } p.error { (self.0.to_string()) } p { a href="/ui/" { "Back to the files" } } },
        );
        (status, page).into_response()
    }
}

/// A human size: 1.2 MiB.
pub fn human_size(bytes: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// A time as the pages show it (UTC, to the second).
pub fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `text` encoded for a query string value.
pub fn q(text: &str) -> String {
    url_encode(text)
}

fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_query_values_read_well() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 << 30), "5.0 GiB");
        assert_eq!(q("a b&c/é"), "a%20b%26c/%C3%A9");
    }

    #[test]
    fn a_hostile_name_is_text_in_the_page() {
        let page = layout(
            "x",
            None,
            html! { p { ("<img src=x onerror=alert(1)>.txt") } },
        );
        let page = page.into_string();
        assert!(
            page.contains("&lt;img src=x onerror=alert(1)&gt;.txt"),
            "{page}"
        );
        assert!(!page.contains("<img"));
    }
}
