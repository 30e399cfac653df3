//! Issue 15: the web pages in a real browser: headless Chromium through WebDriver, against the
//! url-service on its production server, real PostgreSQL and s3s-fs.
//!
//! With `PORTAIL_SCREENSHOTS=DIR`, each page is saved as a PNG in DIR (that is how
//! `docs/screenshots/` is made).
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::time::Duration;

use fantoccini::{Client, Locator};
use portail_tests::browser::Chrome;
use portail_tests::{TestEnv, TestUrlService};

const HOSTILE: &str = "<img src=x onerror=alert(1)>.txt";

async fn world() -> (TestEnv, TestUrlService) {
    let env = TestEnv::new().await;
    env.write("projects/apollo/plan.txt", b"the plan, exactly");
    env.write("projects/apollo/budget.ods", &vec![7u8; 30_000]);
    env.write("projects/gemini/notes.md", b"notes");
    env.write(&format!("projects/{HOSTILE}"), b"hostile");
    env.write("handbook.pdf", &vec![1u8; 120_000]);
    let agent = env.agent(env.settings()).await;
    assert!(env.sync(&agent).await.converged());
    let svc = env.spawn_url_service().await;
    (env, svc)
}

/// Saves a screenshot as `NAME.png` when PORTAIL_SCREENSHOTS names a directory.
async fn shot(c: &Client, name: &str) {
    if let Ok(dir) = std::env::var("PORTAIL_SCREENSHOTS") {
        let png = c.screenshot().await.unwrap();
        std::fs::write(format!("{dir}/{name}.png"), png).unwrap();
    }
}

/// Runs `action` (a click, a form submission) and waits (up to 10 s) until the next page has
/// loaded: WebDriver may answer a click before the navigation it starts is over.
async fn navigating<F: std::future::Future<Output = ()>>(c: &Client, action: F) {
    c.execute("window.portailOldPage = true", vec![])
        .await
        .unwrap();
    action.await;
    let loaded = "return window.portailOldPage === undefined && document.readyState === 'complete'";
    for _ in 0..200 {
        if c.execute(loaded, vec![]).await.is_ok_and(|v| v == true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no new page loaded after the action");
}

async fn click_link(c: &Client, text: &str) {
    let link = c.find(Locator::LinkText(text)).await.unwrap();
    navigating(c, async { link.click().await.unwrap() }).await;
}

async fn click(c: &Client, css: &str) {
    let button = c.find(Locator::Css(css)).await.unwrap();
    navigating(c, async { button.click().await.unwrap() }).await;
}

async fn submit(form: fantoccini::elements::Form, c: &Client) {
    navigating(c, async { form.submit().await.unwrap() }).await;
}

async fn body_text(c: &Client) -> String {
    c.find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Signs in through the form.
async fn sign_in(c: &Client, svc: &TestUrlService, token: &str) {
    c.goto(&svc.url("/ui/")).await.unwrap();
    wait_for_path(c, "/ui/login").await;
    let form = c.form(Locator::Css("form.login")).await.unwrap();
    form.set_by_name("token", token).await.unwrap();
    submit(form, c).await;
}

/// Waits (up to 10 s) until the browser shows a page whose path ends with `suffix`: a click or
/// a form submission returns before the next page has loaded.
async fn wait_for_path(c: &Client, suffix: &str) {
    for _ in 0..200 {
        let url = c.current_url().await.unwrap();
        let ready = c
            .execute("return document.readyState", vec![])
            .await
            .unwrap();
        if url.path().ends_with(suffix) && ready == "complete" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "never reached a page ending in {suffix}: at {}",
        c.current_url().await.unwrap()
    );
}

/// No dialog opened, and no element our page did not write (the hostile name's `<img>`).
async fn assert_nothing_ran(c: &Client) {
    assert!(c.get_alert_text().await.is_err(), "an alert is open");
    let imgs = c
        .execute("return document.images.length", vec![])
        .await
        .unwrap();
    assert_eq!(imgs, 0, "an <img> was injected");
}

#[tokio::test]
async fn a_person_signs_in_browses_searches_downloads_shares_and_signs_out() {
    let (env, svc) = world().await;
    let chrome = Chrome::start().await;
    let c = &chrome.client;
    c.goto(&svc.url("/ui/login")).await.unwrap();
    shot(c, "login").await;
    sign_in(c, &svc, &svc.token).await;
    let agent = env.settings().agent_name();
    click_link(c, &agent).await;
    click_link(c, "projects/").await;
    // The hostile name is shown as text, and runs nothing.
    assert!(body_text(c).await.contains(HOSTILE));
    assert_nothing_ran(c).await;
    let errors = chrome.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    // The console check can fail: an error written now is seen.
    c.execute("console.error('portail-probe')", vec![])
        .await
        .unwrap();
    let probe = chrome.console_errors().await;
    assert!(
        probe.iter().any(|m| m.contains("portail-probe")),
        "{probe:?}"
    );
    click_link(c, "apollo/").await;
    shot(c, "folder").await;
    let text = body_text(c).await;
    assert!(
        text.contains("plan.txt") && text.contains("budget.ods"),
        "{text}"
    );

    // Search from the header.
    let search = c.form(Locator::Css("form.search")).await.unwrap();
    search.set_by_name("q", "NOTES").await.unwrap();
    submit(search, c).await;
    shot(c, "search").await;
    let text = body_text(c).await;
    assert!(
        text.contains("projects/gemini/notes.md") && !text.contains("plan.txt"),
        "{text}"
    );

    // The file page; Download saves the exact bytes.
    c.goto(&svc.url(&format!("/ui/?agent={agent}&dir=projects/apollo/")))
        .await
        .unwrap();
    click_link(c, "plan.txt").await;
    shot(c, "file").await;
    // A download does not replace the page.
    c.find(Locator::LinkText("Download"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let saved = chrome.downloads.path().join("plan.txt");
    portail_tests::eventually(20, "the download", || async { saved.exists() }).await;
    assert_eq!(std::fs::read(&saved).unwrap(), b"the plan, exactly");

    share_follow_and_revoke(c, &svc).await;
    c.goto(&svc.url("/ui/audit")).await.unwrap();
    shot(c, "audit").await;
    assert!(body_text(c).await.contains("ui"));

    // Sign out: back to the login page, and the pages are closed.
    click(c, "header nav button").await;
    wait_for_path(c, "/ui/login").await;
    c.goto(&svc.url("/ui/")).await.unwrap();
    wait_for_path(c, "/ui/login").await;
    c.clone().close().await.unwrap();
}

/// On the open file page: creates a link, follows it in the browser, revokes it (410).
async fn share_follow_and_revoke(c: &Client, svc: &TestUrlService) {
    let file_page = c.current_url().await.unwrap();
    let form = c.form(Locator::Css("form.share")).await.unwrap();
    form.set_by_name("max_downloads", "3").await.unwrap();
    submit(form, c).await;
    shot(c, "share").await;
    let link = c.find(Locator::Id("new-link")).await.unwrap();
    let url = link.prop("value").await.unwrap().unwrap();
    let path = &url[url.find("/l/").unwrap()..];
    // Following the link in the browser: a redirect to S3, which shows the text file.
    c.goto(&svc.url(path)).await.unwrap();
    let shown = c.source().await.unwrap();
    assert!(shown.contains("the plan, exactly"), "{shown}");
    c.goto(file_page.as_str()).await.unwrap();
    assert!(body_text(c).await.contains("1 / 3"), "one click of three");
    click(c, "button.revoke").await;
    assert!(body_text(c).await.contains("revoked"));
    c.goto(&svc.url(path)).await.unwrap();
    let gone = c.source().await.unwrap();
    assert!(gone.contains("gone"), "{gone}");
}

#[tokio::test]
async fn an_expired_session_and_a_revoked_token_are_shown_the_login_page() {
    let (env, svc) = world().await;
    let chrome = Chrome::start().await;
    let c = &chrome.client;
    let token = env.create_token("browser", None, None).await;
    sign_in(c, &svc, &token).await;
    wait_for_path(c, "/ui/").await;
    sqlx::query("update ui_sessions set expires_at = now() - interval '1 second'")
        .execute(&env.db.pool)
        .await
        .unwrap();
    c.refresh().await.unwrap();
    wait_for_path(c, "/ui/login").await;
    sign_in(c, &svc, &token).await;
    wait_for_path(c, "/ui/").await;
    portail_core::catalog::revoke_token(&env.db.pool, "browser")
        .await
        .unwrap();
    c.refresh().await.unwrap();
    wait_for_path(c, "/ui/login").await;
    // And the revoked token cannot sign in again.
    sign_in(c, &svc, &token).await;
    let text = body_text(c).await;
    assert!(text.contains("unknown or revoked"), "{text}");
    c.clone().close().await.unwrap();
}
