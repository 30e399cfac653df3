//! Issue 15: the web pages over HTTP, as a browser without JavaScript uses them: a cookie jar,
//! forms, redirects followed by hand. Real PostgreSQL, s3s-fs, the production server.
//! (`ui_browser.rs` drives the same pages in headless Chromium.)
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::HashMap;

use portail_tests::{TestEnv, TestUrlService};
use reqwest::{header, Response, StatusCode};

/// A minimal browser: keeps cookies, never follows redirects by itself.
struct Browser<'a> {
    svc: &'a TestUrlService,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl<'a> Browser<'a> {
    fn new(svc: &'a TestUrlService) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Browser {
            svc,
            http,
            cookies: HashMap::new(),
        }
    }

    fn keep_cookies(&mut self, r: &Response) {
        for c in r.headers().get_all(header::SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (pair, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.into(), v.into());
            }
        }
    }

    fn cookie_header(&self) -> String {
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join("; ")
    }

    async fn get(&mut self, path: &str) -> Response {
        let r = self
            .http
            .get(self.svc.url(path))
            .header(header::COOKIE, self.cookie_header());
        let r = r.send().await.unwrap();
        self.keep_cookies(&r);
        r
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Response {
        let r = self
            .http
            .post(self.svc.url(path))
            .header(header::COOKIE, self.cookie_header());
        let r = r.form(form).send().await.unwrap();
        self.keep_cookies(&r);
        r
    }

    /// GET, expecting a page: its status and HTML.
    async fn page(&mut self, path: &str) -> (StatusCode, String) {
        let r = self.get(path).await;
        (r.status(), r.text().await.unwrap())
    }

    /// Signs in with `token`; returns the answer to the form.
    async fn sign_in(&mut self, token: &str) -> Response {
        let (_, form) = self.page("/ui/login").await;
        let csrf = hidden(&form, "csrf");
        self.post("/ui/login", &[("token", token), ("csrf", &csrf)])
            .await
    }
}

/// The value of the hidden input `name` in a page.
fn hidden(html: &str, name: &str) -> String {
    let at = html.find(&format!("name=\"{name}\" value=\"")).unwrap();
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn location(r: &Response) -> String {
    r.headers()[header::LOCATION].to_str().unwrap().to_string()
}

/// The id in the first `/ui/files/ID` link of a page after `after`.
fn file_link(html: &str, after: &str) -> String {
    let from = html.find(after).unwrap();
    let at = html[..from].rfind("/ui/files/").unwrap();
    let rest = &html[at..];
    rest[..rest.find('"').unwrap()].to_string()
}

const HOSTILE: &str = "<img src=x onerror=alert(1)>.txt";

async fn world() -> (TestEnv, TestUrlService) {
    let env = TestEnv::new().await;
    env.write("docs/guide/intro.txt", b"the intro");
    env.write("docs/readme.md", b"readme bytes");
    env.write(&format!("docs/{HOSTILE}"), b"hostile");
    env.write("private/secret.txt", b"secret");
    let agent = env.agent(env.settings()).await;
    assert!(env.sync(&agent).await.converged());
    let svc = env.spawn_url_service().await;
    (env, svc)
}

#[tokio::test]
async fn without_a_session_every_page_leads_to_the_login_page_and_shows_nothing() {
    let (env, svc) = world().await;
    let mut b = Browser::new(&svc);
    for path in [
        "/ui/",
        "/ui/?agent=test&dir=docs/",
        "/ui/files/1",
        "/ui/audit",
        "/ui/?q=secret",
    ] {
        let r = b.get(path).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&r), "/ui/login", "{path}");
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("secret") && !body.contains("docs"),
            "{path}: {body}"
        );
    }
    let r = b.post("/ui/logout", &[("csrf", "x")]).await;
    assert_eq!(location(&r), "/ui/login");
    // The login page itself, with its headers.
    let r = b.get("/ui/login").await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    drop(env);
}

#[tokio::test]
async fn sign_in_needs_the_form_token_a_good_api_token_and_is_rate_limited() {
    let (_env, svc) = world().await;
    let mut b = Browser::new(&svc);
    // No CSRF token, or one that is not the cookie's: 403.
    let r = b
        .post("/ui/login", &[("token", svc.token.as_str()), ("csrf", "")])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    b.get("/ui/login").await;
    let r = b
        .post(
            "/ui/login",
            &[("token", svc.token.as_str()), ("csrf", "forged")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A bad token: the form again, with a message.
    let r = b.sign_in("nope").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("unknown or revoked"));
    // A good one: a session cookie, HttpOnly and SameSite=Strict, then the agents page.
    let r = b.sign_in(&svc.token).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set: Vec<_> = r.headers().get_all(header::SET_COOKIE).iter().collect();
    let session = set
        .iter()
        .map(|c| c.to_str().unwrap())
        .find(|c| c.starts_with("portail_session="))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(!session.contains("Secure"), "http here: {session}");
    let (status, home) = b.page("/ui/").await;
    assert_eq!(status, 200);
    assert!(home.contains("Sign out"));
    // Eleven attempts a minute from one address: the eleventh is refused.
    let mut other = Browser::new(&svc);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(other.sign_in("wrong").await.status().as_u16());
    }
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    let r = other.sign_in(&svc.token).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let metrics = portail_tests::get_text(&svc.url("/metrics")).await;
    assert!(
        metrics.contains("portail_url_ui_logins_total{result=\"rate_limited\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn browse_search_download_share_revoke_and_sign_out() {
    let (env, svc) = world().await;
    let mut b = Browser::new(&svc);
    b.sign_in(&svc.token).await;
    let agent = env.settings().agent_name();
    let (_, home) = b.page("/ui/").await;
    assert!(home.contains(&format!("?agent={agent}&amp;dir=")), "{home}");
    // Two levels down: the root, docs/, docs/guide/.
    let (_, root) = b.page(&format!("/ui/?agent={agent}&dir=")).await;
    assert!(
        root.contains(">docs/<") && root.contains(">private/<"),
        "{root}"
    );
    let (_, docs) = b.page(&format!("/ui/?agent={agent}&dir=docs/")).await;
    assert!(
        docs.contains(">guide/<") && docs.contains(">readme.md<"),
        "{docs}"
    );
    assert!(docs.contains("1 folders, 2 files"), "{docs}");
    // The hostile name is text, never markup.
    assert!(
        docs.contains("&lt;img src=x onerror=alert(1)&gt;.txt"),
        "{docs}"
    );
    assert!(!docs.contains("<img"));
    let (_, guide) = b.page(&format!("/ui/?agent={agent}&dir=docs/guide/")).await;
    let intro = file_link(&guide, ">intro.txt<");
    // Search, ignoring case.
    let (_, found) = b.page("/ui/?q=README").await;
    assert!(
        found.contains("docs/readme.md") && !found.contains("intro.txt"),
        "{found}"
    );
    // The file page, and Download: the exact bytes.
    let (status, page) = b.page(&intro).await;
    assert_eq!(status, 200);
    assert!(page.contains("docs/guide/intro.txt") && page.contains("Download"));
    let r = b.get(&format!("{intro}/download")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let bytes = reqwest::get(location(&r))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"the intro");
    // Share: create (shown once), follow, revoke (410).
    let csrf = hidden(&page, "csrf");
    let form = [
        ("csrf", csrf.as_str()),
        ("expires_in_seconds", "3600"),
        ("max_downloads", ""),
    ];
    let r = b.post(&format!("{intro}/links"), &form).await;
    assert_eq!(r.status(), 200);
    let shared = r.text().await.unwrap();
    let at = shared.find("/l/").unwrap();
    let token = &shared[at + 3..at + 3 + 64];
    let r = b.get(&format!("/l/{token}")).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let bytes = reqwest::get(location(&r))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"the intro");
    let (_, page) = b.page(&intro).await;
    assert!(page.contains("live"), "{page}");
    let revoke_at = page.find("/revoke").unwrap();
    let revoke = &page[page[..revoke_at].rfind("/ui/links/").unwrap()..revoke_at + 7];
    assert_eq!(b.post(revoke, &[("csrf", "wrong")]).await.status(), 403);
    assert_eq!(b.post(revoke, &[("csrf", &csrf)]).await.status(), 303);
    assert_eq!(
        b.get(&format!("/l/{token}")).await.status(),
        StatusCode::GONE
    );
    // The audit page shows the UI download and the link's clicks.
    portail_tests::eventually(10, "audit entries", || async {
        let (_, audit) = Browser {
            cookies: b.cookies.clone(),
            ..Browser::new(&svc)
        }
        .page("/ui/audit")
        .await;
        audit.contains(">ui<") && audit.contains(">redirected<") && audit.contains(">gone<")
    })
    .await;
    // Sign out: the session is gone.
    assert_eq!(b.post("/ui/logout", &[("csrf", &csrf)]).await.status(), 303);
    assert_eq!(location(&b.get("/ui/").await), "/ui/login");
}

#[tokio::test]
async fn scopes_hold_and_a_revoked_token_or_an_expired_session_ends_the_session() {
    let (env, svc) = world().await;
    let scoped = env.create_token("docs-only", Some("docs/"), None).await;
    let mut b = Browser::new(&svc);
    b.sign_in(&scoped).await;
    let agent = env.settings().agent_name();
    let (_, root) = b.page(&format!("/ui/?agent={agent}&dir=")).await;
    assert!(
        root.contains(">docs/<") && !root.contains("private"),
        "{root}"
    );
    let (status, _) = b.page(&format!("/ui/?agent={agent}&dir=private/")).await;
    assert_eq!(status, 404);
    let (_, found) = b.page("/ui/?q=secret").await;
    assert!(!found.contains("private/secret.txt"), "{found}");
    let secret: i64 = sqlx::query_scalar("select id from files where path = 'private/secret.txt'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(b.page(&format!("/ui/files/{secret}")).await.0, 404);
    assert_eq!(
        b.get(&format!("/ui/files/{secret}/download"))
            .await
            .status(),
        404
    );

    // Revoking the token ends its sessions.
    portail_core::catalog::revoke_token(&env.db.pool, "docs-only")
        .await
        .unwrap();
    assert_eq!(location(&b.get("/ui/").await), "/ui/login");
    // An expired session is shown the login page.
    let mut b = Browser::new(&svc);
    b.sign_in(&svc.token).await;
    assert_eq!(b.get("/ui/").await.status(), 200);
    sqlx::query("update ui_sessions set expires_at = now() - interval '1 second'")
        .execute(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(location(&b.get("/ui/").await), "/ui/login");
}

/// Catalog rows written directly (the pages read only the catalog): `paths` as synced files.
async fn add_rows(env: &TestEnv, agent_id: i64, paths: &[String]) {
    sqlx::query(
        "insert into files (agent_id, path, s3_key, size_bytes, mtime, status, md5)
         select $1, p, p, length(p), now() - length(p) * interval '1 second', 'synced',
                md5(p)
         from unnest($2::text[]) p",
    )
    .bind(agent_id)
    .bind(paths)
    .execute(&env.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_big_folder_pages_and_subfolders_are_listed_once_whatever_their_names() {
    let (env, svc) = world().await;
    let agent = env.settings().agent_name();
    let agent_id = portail_core::catalog::agent_id_by_name(&env.db.pool, &agent)
        .await
        .unwrap()
        .unwrap();
    let many: Vec<String> = (0..1005).map(|i| format!("many/f{i:05}.bin")).collect();
    // Names that sort around '/': a file "x" next to folders "x-y/", "x.d/" and "x/".
    let tricky = [
        "t/x",
        "t/x.txt",
        "t/x-y/1",
        "t/x.d/2",
        "t/x/3",
        "t/x/deep/4",
        "t/z/5",
    ];
    add_rows(&env, agent_id, &many).await;
    add_rows(&env, agent_id, &tricky.map(String::from)).await;
    let mut b = Browser::new(&svc);
    b.sign_in(&svc.token).await;

    let (_, first) = b.page(&format!("/ui/?agent={agent}&dir=many/")).await;
    assert!(first.contains("more than 1000 files"), "{first}");
    let next_at = first.find("class=\"next\" href=\"").unwrap() + 19;
    let next = first[next_at..first[next_at..].find('"').unwrap() + next_at].replace("&amp;", "&");
    let (_, second) = b.page(&next).await;
    let names = |page: &str| -> Vec<String> {
        page.match_indices(">f0")
            .map(|(i, _)| page[i + 1..i + 11].to_string())
            .collect()
    };
    let mut all = names(&first);
    all.extend(names(&second));
    let expected: Vec<String> = many.iter().map(|p| p[5..].to_string()).collect();
    assert_eq!(all, expected, "every file once, in order, over two pages");
    // By size (1005 files is sortable): largest first, an exact count.
    let (_, by_size) = b
        .page(&format!("/ui/?agent={agent}&dir=many/&sort=size"))
        .await;
    assert!(by_size.contains("1005 files") && by_size.contains("<strong>size</strong>"));

    let (_, t) = b.page(&format!("/ui/?agent={agent}&dir=t/")).await;
    for folder in ["x-y/", "x.d/", "x/", "z/"] {
        assert_eq!(
            t.matches(&format!(">{folder}<")).count(),
            1,
            "{folder} in {t}"
        );
    }
    assert!(t.contains("4 folders, 2 files"), "{t}");
}
