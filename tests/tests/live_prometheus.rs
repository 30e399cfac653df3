//! Issue 16: a live Prometheus (Debian's `prometheus`) scrapes the real agent and url-service
//! after a real sync, presign and link click. Through its HTTP API, every dashboard panel query
//! and every alert expression evaluates without error, and every panel query returns a series.
//! Then a delete guard trips and `DeletesBlocked` goes pending or firing (a copy of the rules
//! with `for:` cut to 1 s, so the test need not wait minutes).
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use portail_tests::{eventually, free_addr, http_client, repo_file, TestEnv};
use serde_json::{json, Value};
use tokio::process::Command;

/// (panel title or alert name, PromQL expression).
type Queries = Vec<(String, String)>;

/// Every panel's queries and every alert's expression.
fn queries() -> (Queries, Queries) {
    let mut panels = Vec::new();
    for file in ["portail-agent.json", "portail-url-service.json"] {
        let dash: Value =
            serde_json::from_str(&repo_file(&format!("grafana/dashboards/{file}"))).unwrap();
        for p in dash["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                // What Grafana puts there: every instance, a window of several scrapes.
                let expr = expr
                    .replace("$instance", ".*")
                    .replace("$__rate_interval", "1m");
                panels.push((p["title"].as_str().unwrap().to_string(), expr));
            }
        }
    }
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&repo_file("prometheus/alerts.yml")).unwrap();
    let mut alerts = Vec::new();
    for g in rules["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().unwrap().to_string();
            alerts.push((name, r["expr"].as_str().unwrap().to_string()));
        }
    }
    (panels, alerts)
}

/// The alert rules with every `for:` cut to 1 s.
fn fast_rules() -> String {
    repo_file("prometheus/alerts.yml")
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: 1s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts Prometheus scraping `agent` and `url` every second; returns its address.
fn start_prometheus(
    dir: &std::path::Path,
    agent: &str,
    url: &str,
) -> (tokio::process::Child, String) {
    std::fs::write(dir.join("alerts.yml"), fast_rules()).unwrap();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         rule_files: [alerts.yml]\n\
         scrape_configs:\n\
         - job_name: portail-agent\n  static_configs: [{{targets: ['{agent}']}}]\n\
         - job_name: portail-url-service\n  static_configs: [{{targets: ['{url}']}}]\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let addr = free_addr();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run prometheus ({e}): scripts/test installs it"));
    (child, addr)
}

/// A call to Prometheus's HTTP API; `null` while it is not answering yet.
async fn api(prom: &str, path: &str, query: &[(&str, &str)]) -> Value {
    let sent = http_client()
        .get(format!("http://{prom}/api/v1/{path}"))
        .query(query)
        .send()
        .await;
    match sent {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

#[tokio::test]
async fn a_live_prometheus_evaluates_every_panel_and_alert_and_fires_deletes_blocked() {
    let env = TestEnv::new().await;
    for f in ["a.txt", "b.txt", "c.txt"] {
        env.write(f, f.as_bytes());
    }
    let agent_addr = free_addr();
    let _agent = env
        .agent_process("live", &["watch"], false)
        .env("METRICS_ADDR", &agent_addr)
        .env("SETTLE_TIME", "100ms")
        .env("DELETE_GRACE", "1s")
        .spawn()
        .unwrap();
    // Objects are stored before their rows are written: wait for both.
    eventually(30, "3 files synced, objects and rows", || async {
        env.mirrored_count(3).await
    })
    .await;
    let svc = env.spawn_url_service().await;
    let id: i64 = sqlx::query_scalar("select id from files where path = 'a.txt'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(
        svc.post(&format!("/v1/files/{id}/url"), json!({}))
            .await
            .status(),
        201
    );
    let link: Value = svc
        .post("/v1/links", json!({"file_id": id}))
        .await
        .json()
        .await
        .unwrap();
    let url = link["url"].as_str().unwrap();
    let click = http_client()
        .get(svc.url(&url[url.find("/l/").unwrap()..]))
        .send()
        .await
        .unwrap();
    assert_eq!(click.status(), 302);

    let dir = tempfile::tempdir().unwrap();
    let (_prom, prom) = start_prometheus(dir.path(), &agent_addr, &svc.addr.to_string());
    eventually(60, "both targets scraped a few times", || async {
        let r = api(&prom, "query", &[("query", "count_over_time(up[1m]) >= 3")]).await;
        r["data"]["result"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;

    let (panels, alerts) = queries();
    let mut empty = Vec::new();
    for (title, expr) in &panels {
        let r = api(&prom, "query", &[("query", expr)]).await;
        assert_eq!(r["status"], "success", "panel {title}: {expr}: {r}");
        if r["data"]["result"].as_array().is_none_or(|a| a.is_empty()) {
            empty.push(format!("{title}: {expr}"));
        }
    }
    assert!(empty.is_empty(), "panel queries with no series: {empty:#?}");
    for (name, expr) in &alerts {
        let r = api(&prom, "query", &[("query", expr)]).await;
        assert_eq!(r["status"], "success", "alert {name}: {expr}: {r}");
    }

    // Two of three files gone: more than MAX_DELETE_PERCENT=50, so the guard holds them.
    std::fs::remove_file(env.root.path().join("a.txt")).unwrap();
    std::fs::remove_file(env.root.path().join("b.txt")).unwrap();
    eventually(60, "DeletesBlocked pending or firing", || async {
        let r = api(&prom, "alerts", &[]).await;
        r["data"]["alerts"].as_array().is_some_and(|a| {
            a.iter().any(|al| {
                al["labels"]["alertname"] == "DeletesBlocked"
                    && al["labels"]["guard"] == "max_delete_percent"
                    && (al["state"] == "pending" || al["state"] == "firing")
            })
        })
    })
    .await;
    assert_eq!(env.keys().await.len(), 3, "nothing deleted");
}
