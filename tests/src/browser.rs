//! Headless Chromium through WebDriver, for the tests of the web pages.
//!
//! In: `PORTAIL_CHROMEDRIVER`, the path of Debian's `chromedriver` (`scripts/test` installs
//! `chromium` and `chromium-driver` and sets it), else `/usr/bin/chromedriver`. Out: a
//! [`Chrome`] whose `client` drives a fresh headless browser that saves downloads into
//! `downloads`; chromedriver is stopped when it is dropped. No chromedriver is a loud failure,
//! never a skip.

use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use tokio::process::{Child, Command};

/// chromedriver's log endpoint (not in the W3C API): the browser console since the last call.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type": "browser"}"#.into()))
    }
}

/// A headless Chromium session.
#[derive(Debug)]
pub struct Chrome {
    /// The WebDriver client.
    pub client: Client,
    /// Where the browser saves downloads.
    pub downloads: tempfile::TempDir,
    _driver: Child,
}

impl Chrome {
    /// The console's errors since the last call (the browser's own request for /favicon.ico,
    /// which this service does not serve, aside).
    pub async fn console_errors(&self) -> Vec<String> {
        let log = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("browser log");
        log.as_array()
            .expect("a list of entries")
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .filter(|m| !m.contains("/favicon.ico"))
            .collect()
    }

    /// Starts chromedriver on a free port and opens a headless session.
    pub async fn start() -> Chrome {
        let bin = std::env::var("PORTAIL_CHROMEDRIVER")
            .unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let port = crate::free_addr()
            .rsplit(':')
            .next()
            .expect("port")
            .to_string();
        let driver = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}): run scripts/test, which installs chromium-driver")
            });
        let downloads = tempfile::tempdir().expect("download dir");
        let mut caps = serde_json::Map::new();
        let options = serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900"],
            "prefs": {
                "download.default_directory": downloads.path(),
                "download.prompt_for_download": false,
            }
        });
        caps.insert("goog:chromeOptions".into(), options);
        // Keep the console, for [`Chrome::console_errors`].
        caps.insert(
            "goog:loggingPrefs".into(),
            serde_json::json!({"browser": "ALL"}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            // Plain HTTP to a loopback chromedriver: no TLS stack needed.
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let builder = ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .to_owned();
            match builder.connect(&url).await {
                Ok(client) => {
                    return Chrome {
                        client,
                        downloads,
                        _driver: driver,
                    }
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver at {url} did not start a session: {last:?}");
    }
}
