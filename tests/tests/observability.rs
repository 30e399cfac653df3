//! No dead panel: every metric a Grafana panel or an alert rule queries is exported by a real
//! service. Both services are scraped over HTTP after a real sync, a presign and a link click,
//! and the scrapes pass `promtool check metrics`; every panel expression parses as PromQL.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use portail_tests::{eventually, free_addr, get_text, http_client, repo_file, TestEnv};
use serde_json::{json, Value};

/// Every PromQL expression in the dashboards, with the panel title.
fn dashboard_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in ["portail-agent.json", "portail-url-service.json"] {
        let dash: Value =
            serde_json::from_str(&repo_file(&format!("grafana/dashboards/{file}"))).unwrap();
        let panels = dash["panels"].as_array().unwrap();
        assert!(panels.len() >= 8, "{file}: {} panels", panels.len());
        for p in panels {
            let title = p["title"].as_str().unwrap().to_string();
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file}: panel {title} has no query");
            for t in targets {
                out.push((title.clone(), t["expr"].as_str().unwrap().to_string()));
            }
        }
    }
    out
}

/// Every alert rule's expression, with its name.
fn alert_exprs() -> Vec<(String, String)> {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&repo_file("prometheus/alerts.yml")).unwrap();
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            out.push((
                rule["alert"].as_str().unwrap().to_string(),
                rule["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// The `portail_*` metric names an expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("portail_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The sample names in a text-format scrape.
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

fn promtool() -> Command {
    let found = Command::new("promtool").arg("--version").output().is_ok();
    assert!(
        found,
        "promtool is missing: install Debian's `prometheus` package (scripts/test does)"
    );
    Command::new("promtool")
}

/// `promtool check metrics` on a scrape: Prometheus naming and exposition lint.
fn promtool_check_metrics(service: &str, scrape: &str) {
    let mut child = promtool()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics on {service}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn every_dashboard_and_alert_metric_is_exported() {
    let env = TestEnv::new().await;
    env.write("docs/a.txt", b"alpha");
    env.write("docs/b.txt", b"bravo");
    env.write("img/c.bin", &[7u8; 5000]);
    let fifo = env.root.path().join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());

    // The agent as operators run it: the real binary in watch mode, scraped over HTTP.
    let addr = free_addr();
    let logs = tempfile::tempdir().unwrap();
    let mut agent = env
        .agent_process("observed", &["watch"], false)
        .env("METRICS_ADDR", &addr)
        .env("SETTLE_TIME", "100ms")
        .env("LOG_METHOD", "file")
        .env("LOG_PATH", logs.path())
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "debug")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pool = env.db.pool.clone();
    eventually(30, "3 files synced", || async {
        let n: i64 = sqlx::query_scalar("select count(*) from files where status = 'synced'")
            .fetch_one(&pool)
            .await
            .unwrap();
        n == 3
    })
    .await;
    // A change seen by the watcher, so the watch-mode path also runs.
    env.write("docs/a.txt", b"alpha, edited");
    eventually(30, "edit synced", || async {
        let md5: Option<String> =
            sqlx::query_scalar("select md5 from files where path = 'docs/a.txt'")
                .fetch_one(&pool)
                .await
                .unwrap();
        md5.as_deref() == Some(portail_tests::md5_hex(b"alpha, edited").as_str())
    })
    .await;
    let http = http_client();
    let agent_scrape = get_text(&format!("http://{addr}/metrics")).await;
    agent.start_kill().unwrap();
    agent.wait().await.unwrap();

    // Logs: daily files under LOG_PATH, one JSON object per line, never the S3 secret.
    let mut lines = 0;
    for entry in std::fs::read_dir(logs.path()).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(
            !text.contains(portail_tests::SECRET_KEY),
            "secret in the log"
        );
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(v["level"].is_string(), "{line}");
            lines += 1;
        }
    }
    assert!(lines > 10, "only {lines} log lines");

    // The url-service: a presign, a share link and a click on it, then its /metrics.
    let svc = env.spawn_url_service().await;
    let id: i64 = sqlx::query_scalar("select id from files where path = 'docs/b.txt'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    let r = svc.post(&format!("/v1/files/{id}/url"), json!({})).await;
    assert_eq!(r.status(), 201);
    let r = svc.post("/v1/links", json!({"file_id": id})).await;
    assert_eq!(r.status(), 201);
    let link: Value = r.json().await.unwrap();
    let url = link["url"].as_str().unwrap();
    let click = http
        .get(svc.url(&url[url.find("/l/").unwrap()..]))
        .send()
        .await
        .unwrap();
    assert_eq!(click.status(), 302);
    let url_scrape = get_text(&svc.url("/metrics")).await;

    // Values that prove the scrapes saw the real work, not just registered names.
    assert!(
        agent_scrape.contains("portail_agent_files_uploaded_total 4"),
        "{agent_scrape}"
    );
    assert!(
        agent_scrape.contains("portail_agent_files_skipped_total{reason=\"special_file\"} 1"),
        "{agent_scrape}"
    );
    assert!(
        url_scrape.contains("portail_url_presigned_urls_issued_total 2"),
        "{url_scrape}"
    );
    assert!(
        url_scrape.contains("portail_url_link_redirects_total{outcome=\"redirected\"} 1"),
        "{url_scrape}"
    );

    promtool_check_metrics("portail-agent", &agent_scrape);
    promtool_check_metrics("portail-url-service", &url_scrape);

    let mut have = exported(&agent_scrape);
    have.extend(exported(&url_scrape));
    let mut dead = Vec::new();
    let mut used = BTreeSet::new();
    for (owner, expr) in dashboard_exprs().into_iter().chain(alert_exprs()) {
        for name in metric_names(&expr) {
            if !have.contains(&name) {
                dead.push(format!("{owner}: {name}"));
            }
            used.insert(name);
        }
    }
    assert!(dead.is_empty(), "queried but not exported: {dead:#?}");
    // Every metric docs/operations.md promises is shown somewhere (histograms through _bucket/_sum).
    let unshown: Vec<_> = portail_names()
        .into_iter()
        .filter(|n| !used.iter().any(|u| u.starts_with(n.as_str())))
        .collect();
    assert!(unshown.is_empty(), "exported but on no panel: {unshown:?}");
}

/// Every metric name declared in `portail_core::metrics::names`.
fn portail_names() -> Vec<String> {
    repo_file("core/src/metrics.rs")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .map(String::from)
        .collect()
}

/// Every panel expression is valid PromQL: promtool parses it as a recording rule (Grafana's
/// `$__rate_interval` and `$instance` replaced by what Grafana would put there).
#[test]
fn dashboard_queries_parse() {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (i, (_, expr)) in dashboard_exprs().iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:expr{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let path = dir.path().join("dashboards.rules.yml");
    std::fs::write(&path, rules).unwrap();
    let out = promtool()
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
