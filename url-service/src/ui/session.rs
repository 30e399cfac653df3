//! Signing in and out of the web pages.
//!
//! - `GET /ui/login` shows a form with a `token` field. It also sets a short-lived
//!   `portail_login` cookie whose value the form repeats (a double-submit CSRF token: another
//!   site cannot read the cookie, so it cannot sign a browser in to an account of its choosing).
//! - `POST /ui/login` takes the API token. A good one opens a session stored in PostgreSQL
//!   (only the cookie's SHA-256) that expires after UI_SESSION_TTL, and sets the
//!   `portail_session` cookie: HttpOnly, SameSite=Strict, Path=/ui, and Secure when
//!   PUBLIC_BASE_URL is https. Attempts are limited per client address
//!   ([`LOGIN_ATTEMPTS`] a minute) and counted in `portail_url_ui_logins_total{result}`.
//! - A session is honoured only while its token is not revoked: revoking the token ends it.
//! - `POST /ui/logout` (with the CSRF token) deletes the session.
//!
//! [`Viewer`] is the signed-in caller; without a live session every page redirects to the
//! login page and shows nothing of the catalog.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use portail_core::catalog;
use serde::Deserialize;

use crate::audit::Client;
use crate::auth::{self, Caller};
use crate::ui::layout;
use crate::AppState;

/// The session cookie.
pub const SESSION_COOKIE: &str = "portail_session";
/// The sign-in form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "portail_login";
/// Sign-in attempts allowed per client address per minute.
pub const LOGIN_ATTEMPTS: u32 = 10;
/// `result` labels of `portail_url_ui_logins_total`.
pub const LOGIN_RESULTS: [&str; 4] = ["ok", "bad_token", "bad_csrf", "rate_limited"];

/// The signed-in caller: its API token (with the token's scopes) and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The token the session was opened with.
    pub caller: Caller,
    /// What every form of this session must carry.
    pub csrf: String,
}

impl Viewer {
    /// Whether `sent` is this session's CSRF token (if not, answer [`forbidden`]).
    pub fn csrf_ok(&self, sent: &str) -> bool {
        constant_time_eq(sent.as_bytes(), self.csrf.as_bytes())
    }
}

/// The 403 page for a form without the right CSRF token.
pub fn forbidden() -> Response {
    let page = layout(
        "Forbidden",
        None,
        html! { h1 { "403" } p.error { "This form is stale or was not sent by this site. Reload the page and try again." } },
    );
    (StatusCode::FORBIDDEN, page).into_response()
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_login = || Redirect::to("/ui/login").into_response();
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login());
        };
        match catalog::live_session(&state.pool, &auth::token_hash(&id)).await {
            Ok(Some(s)) => Ok(Viewer {
                caller: Caller(s.token),
                csrf: s.csrf,
            }),
            Ok(None) => Err(to_login()),
            Err(e) => Err(crate::ui::PageError(e.into()).into_response()),
        }
    }
}

/// A cookie's value from the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// `Set-Cookie` for one of ours: HttpOnly, SameSite=Strict, Path=/ui, Secure over https.
fn set_cookie(state: &AppState, name: &str, value: &str, max_age: Duration) -> String {
    let secure = if state.settings.public_base_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let age = max_age.as_secs();
    format!("{name}={value}; Path=/ui; Max-Age={age}; HttpOnly; SameSite=Strict{secure}")
}

/// `GET /ui/login`.
pub async fn login_form(State(state): State<AppState>) -> Response {
    let csrf = auth::generate_link_token();
    let cookie = set_cookie(&state, LOGIN_COOKIE, &csrf, Duration::from_secs(3600));
    (
        [(header::SET_COOKIE, cookie)],
        login_page(&csrf, None, StatusCode::OK),
    )
        .into_response()
}

fn login_page(csrf: &str, error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        h1 { "Sign in" }
        p { "Paste an API token (" code { "portail-url-service token create" } " makes one)." }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form.login action="/ui/login" method="post" {
            input type="hidden" name="csrf" value=(csrf);
            label for="token" { "API token" }
            input #token type="password" name="token" autocomplete="off" required autofocus;
            button type="submit" { "Sign in" }
        }
    };
    (status, layout("Sign in", None, body)).into_response()
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// The API token.
    pub token: String,
    /// The double-submit CSRF token.
    #[serde(default)]
    pub csrf: String,
}

/// `POST /ui/login`.
pub async fn login(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let count = |result: &str| state.metrics.ui_logins.with_label_values(&[result]).inc();
    let sent = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if form.csrf.is_empty() || !constant_time_eq(sent.as_bytes(), form.csrf.as_bytes()) {
        count("bad_csrf");
        return forbidden();
    }
    if !state.logins.allow(client.ip) {
        count("rate_limited");
        let msg = "Too many attempts from your address. Wait a minute and try again.";
        return login_page(&form.csrf, Some(msg), StatusCode::TOO_MANY_REQUESTS);
    }
    let token =
        match catalog::token_by_hash(&state.pool, &auth::token_hash(form.token.trim())).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                count("bad_token");
                let msg = "That token is unknown or revoked.";
                return login_page(&form.csrf, Some(msg), StatusCode::UNAUTHORIZED);
            }
            Err(e) => return crate::ui::PageError(e.into()).into_response(),
        };
    let id = auth::generate_link_token();
    let ttl = state.settings.ui_session_ttl.0;
    let expires = chrono::Utc::now() + ttl;
    let csrf = auth::generate_link_token();
    let hash = auth::token_hash(&id);
    if let Err(e) = catalog::create_session(&state.pool, &hash, token.id, &csrf, expires).await {
        return crate::ui::PageError(e.into()).into_response();
    }
    count("ok");
    let session = set_cookie(&state, SESSION_COOKIE, &id, ttl);
    let clear = set_cookie(&state, LOGIN_COOKIE, "", Duration::ZERO);
    let mut resp = Redirect::to("/ui/").into_response();
    for c in [session, clear] {
        if let Ok(v) = c.parse() {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The sign-out form.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: String,
}

/// `POST /ui/logout`.
pub async fn logout(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !viewer.csrf_ok(&form.csrf) {
        return forbidden();
    }
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = catalog::delete_session(&state.pool, &auth::token_hash(&id)).await {
            return crate::ui::PageError(e.into()).into_response();
        }
    }
    let clear = set_cookie(&state, SESSION_COOKIE, "", Duration::ZERO);
    ([(header::SET_COOKIE, clear)], Redirect::to("/ui/login")).into_response()
}

/// Sign-in attempts per client address in the current minute.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    seen: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

impl LoginLimiter {
    /// Counts an attempt; false past [`LOGIN_ATTEMPTS`] in a minute.
    pub fn allow(&self, ip: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if seen.len() > 100_000 {
            seen.retain(|_, (start, _)| now.duration_since(*start) < minute);
        }
        let entry = seen.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= minute {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= LOGIN_ATTEMPTS
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_allows_ten_a_minute_per_address() {
        let l = LoginLimiter::default();
        let a: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
        assert!((0..LOGIN_ATTEMPTS).all(|_| l.allow(a)));
        assert!(!l.allow(a));
        assert!(
            l.allow(Some("192.0.2.2".parse().unwrap())),
            "another address"
        );
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; portail_session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "nope"), None);
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }
}
