//! No Docker engine runs here, so the deployment files are checked for what would break a
//! `docker compose up`, a `systemctl start` or a `kubectl apply`: missing services, variables
//! `.env.example` does not define, mounts of paths that do not exist, and ports that disagree
//! with the Prometheus scrape configuration.
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use portail_tests::compose::{compose, environment, interpolate, service};
use portail_tests::config_vars::all_vars;
use portail_tests::{env_example_vars, repo_file};
use serde::Deserialize;
use serde_yaml::Value;

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn repo_path(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn compose_runs_the_whole_stack() {
    let c = compose();
    for name in [
        "postgres",
        "minio",
        "minio-init",
        "agent",
        "url-service",
        "prometheus",
        "grafana",
    ] {
        service(&c, name);
    }
    for (name, svc) in c["services"].as_mapping().unwrap() {
        if let Some(image) = svc["image"].as_str() {
            // Our own image is built from the Dockerfile; every other one is pinned.
            if svc["build"].is_null() {
                let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
                assert!(
                    !tag.is_empty() && tag != "latest",
                    "{name:?}: image {image} is not pinned to a tag"
                );
            }
        }
    }
    let pg = service(&c, "postgres");
    assert!(
        pg["healthcheck"]["test"].is_sequence(),
        "postgres healthcheck"
    );
    assert!(
        service(&c, "minio")["image"]
            .as_str()
            .unwrap()
            .contains(":RELEASE."),
        "minio must be pinned to a release"
    );
    let init = service(&c, "minio-init");
    assert!(format!("{:?}", init["entrypoint"]).contains("mc mb --ignore-existing"));

    let agent = service(&c, "agent");
    let env = environment(agent);
    assert_eq!(env["SYNC_ROOT"], "/data");
    let mounts: Vec<&str> = agent["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        mounts.contains(&"./data:/data:ro"),
        "agent must mount ./data read-only: {mounts:?}"
    );
    assert_eq!(
        agent["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );
    assert_eq!(
        agent["depends_on"]["minio-init"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
    assert!(
        service(&c, "url-service")["ports"].is_sequence(),
        "url-service publishes its port"
    );

    let grafana = environment(service(&c, "grafana"));
    assert_eq!(grafana["GF_AUTH_ANONYMOUS_ENABLED"], "false");
    for var in ["GF_SECURITY_ADMIN_USER", "GF_SECURITY_ADMIN_PASSWORD"] {
        assert!(
            grafana[var].starts_with("${"),
            "{var} must come from the environment, not the compose file"
        );
    }
}

#[test]
fn compose_uses_only_variables_from_env_example() {
    let text = repo_file("docker-compose.yml");
    let (service_vars, compose_vars) = env_example_vars();
    let mut used = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("${") {
        // `$${X}` is a literal `${X}` for the container's shell, not compose's.
        let escaped = i > 0 && rest.as_bytes()[i - 1] == b'$';
        let tail = &rest[i + 2..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap();
        if !escaped {
            used.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    assert!(used.len() > 5, "{used:?}");
    let unknown: Vec<_> = used
        .iter()
        .filter(|v| !service_vars.contains(*v) && !compose_vars.contains(*v))
        .collect();
    assert!(unknown.is_empty(), "not in .env.example: {unknown:?}");

    // What our services get through `environment:` must be a variable they actually read.
    let c = compose();
    let known = all_vars();
    for name in ["agent", "url-service"] {
        let svc = service(&c, name);
        let files: Vec<&str> = svc["env_file"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            files.first(),
            Some(&".env.example"),
            "{name} reads .env.example"
        );
        for key in environment(svc).keys() {
            assert!(known.contains(key), "{name}: {key} is read by no service");
        }
    }
}

#[test]
fn compose_mounts_exist_in_the_repo() {
    let c = compose();
    let mut checked = 0;
    for (name, svc) in c["services"].as_mapping().unwrap() {
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let spec = v.as_str().unwrap();
            let host = spec.split(':').next().unwrap();
            if let Some(rel) = host.strip_prefix("./") {
                assert!(repo_path(rel).exists(), "{name:?} mounts missing ./{rel}");
                checked += 1;
            }
        }
        for f in svc["env_file"].as_sequence().into_iter().flatten() {
            let required = f["required"].as_bool().unwrap_or(true);
            let path = f["path"].as_str().unwrap();
            assert!(
                !required || repo_path(path).exists(),
                "{name:?}: env_file {path} missing"
            );
        }
        if let Some(ctx) = svc["build"].as_str() {
            assert!(repo_path(ctx).join("Dockerfile").exists());
        }
    }
    assert!(checked >= 4, "only {checked} bind mounts checked");
}

#[test]
fn prometheus_scrapes_the_ports_compose_serves() {
    let c = compose();
    let prom: Value = serde_yaml::from_str(&repo_file("prometheus/prometheus.yml")).unwrap();
    // Where each of our services listens inside the stack.
    let listens: BTreeMap<&str, u16> = [
        (
            "agent",
            port_of(&environment(service(&c, "agent"))["METRICS_ADDR"]),
        ),
        (
            "url-service",
            port_of(&environment(service(&c, "url-service"))["LISTEN_ADDR"]),
        ),
    ]
    .into();
    let mut scraped = BTreeSet::new();
    for job in prom["scrape_configs"].as_sequence().unwrap() {
        for sc in job["static_configs"].as_sequence().unwrap() {
            for t in sc["targets"].as_sequence().unwrap() {
                let (host, port) = t.as_str().unwrap().split_once(':').unwrap();
                service(&c, host);
                assert_eq!(
                    listens.get(host).copied(),
                    Some(port.parse::<u16>().unwrap()),
                    "scrape target {host}:{port} does not match where {host} listens"
                );
                scraped.insert(host.to_string());
            }
        }
    }
    assert_eq!(scraped.len(), 2, "both services are scraped: {scraped:?}");
    for rules in prom["rule_files"].as_sequence().unwrap() {
        assert!(repo_path("prometheus")
            .join(rules.as_str().unwrap())
            .exists());
    }
    // The Prometheus config directory is what compose mounts at /etc/prometheus.
    let mounts = format!("{:?}", service(&c, "prometheus")["volumes"]);
    assert!(mounts.contains("./prometheus:/etc/prometheus"), "{mounts}");

    // Grafana's datasource points at the compose Prometheus, with the uid the dashboards use.
    let ds: Value = serde_yaml::from_str(&repo_file(
        "grafana/provisioning/datasources/prometheus.yml",
    ))
    .unwrap();
    let ds = &ds["datasources"][0];
    assert_eq!(ds["url"].as_str(), Some("http://prometheus:9090"));
    let prom_ports = format!("{:?}", service(&c, "prometheus")["ports"]);
    assert!(prom_ports.contains(":9090"), "{prom_ports}");
    let uid = ds["uid"].as_str().unwrap();
    for file in ["portail-agent.json", "portail-url-service.json"] {
        let dash: serde_json::Value =
            serde_json::from_str(&repo_file(&format!("grafana/dashboards/{file}"))).unwrap();
        for p in dash["panels"].as_array().unwrap() {
            assert_eq!(p["datasource"]["uid"].as_str(), Some(uid), "{file}");
        }
    }
}

#[test]
fn dockerfile_builds_both_binaries_and_runs_as_non_root() {
    let d = repo_file("Dockerfile");
    assert!(d.matches("\nFROM ").count() + usize::from(d.starts_with("FROM ")) >= 2);
    for bin in ["portail-agent", "portail-url-service"] {
        assert!(d.contains(&format!("--bin {bin}")), "{bin} not built");
    }
    let user = d
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
}

#[test]
fn systemd_and_kubernetes_examples_use_the_same_settings() {
    let unit = repo_file("deploy/portail-agent.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/portail-agent watch"));
    assert!(unit.contains("Restart=on-failure"));
    assert!(
        unit.contains("ProtectSystem=strict"),
        "read-only file system"
    );
    assert!(unit.contains("EnvironmentFile="));

    let known = all_vars();
    let mut sidecar_seen = false;
    for file in ["fileserver-with-agent.yaml", "url-service.yaml"] {
        let text = repo_file(&format!("deploy/k8s/{file}"));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc = Value::deserialize(doc).unwrap();
            if doc["kind"] == "ConfigMap" {
                for key in doc["data"].as_mapping().unwrap().keys() {
                    let key = key.as_str().unwrap();
                    assert!(known.contains(key), "{file}: {key} is read by no service");
                }
            }
            if doc["kind"] == "Deployment" {
                let containers = doc["spec"]["template"]["spec"]["containers"]
                    .as_sequence()
                    .unwrap();
                if let Some(agent) = containers.iter().find(|c| c["name"] == "portail-agent") {
                    // The sidecar shares the data volume with the file server, read-only.
                    assert!(
                        containers.len() >= 2,
                        "the agent runs next to a file server"
                    );
                    let mount = &agent["volumeMounts"][0];
                    assert_eq!(mount["readOnly"].as_bool(), Some(true));
                    let vol = mount["name"].as_str().unwrap();
                    assert!(containers
                        .iter()
                        .filter(|c| c["name"] != "portail-agent")
                        .any(|c| format!("{:?}", c["volumeMounts"]).contains(vol)));
                    sidecar_seen = true;
                }
            }
        }
    }
    assert!(sidecar_seen);
}

/// The url-service reaches MinIO as `minio:9000`, a name only the compose network knows: its
/// links must be signed for an address the host reaches (a published MinIO port), or served
/// through the url-service itself (proxy mode).
#[test]
fn compose_links_open_from_the_host() {
    let c = compose();
    let url = environment(service(&c, "url-service"));
    let internal = &url["AWS_ENDPOINT_URL"];
    let public = url.get("S3_PUBLIC_ENDPOINT_URL");
    let proxy = url.get("DOWNLOAD_MODE").is_some_and(|m| m == "proxy");
    assert!(
        proxy || public.is_some_and(|p| p != internal),
        "url-service presigns for {internal}, which no browser on the host can reach: set S3_PUBLIC_ENDPOINT_URL or DOWNLOAD_MODE=proxy"
    );
    if let Some(public) = public.filter(|_| !proxy) {
        // With compose's defaults (no .env), as a new user first runs it.
        let defaults = BTreeMap::new();
        let public = interpolate(public, &defaults);
        let port = public.rsplit(':').next().unwrap();
        let published: Vec<String> = service(&c, "minio")["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| interpolate(p.as_str().unwrap(), &defaults))
            .collect();
        assert!(
            published
                .iter()
                .any(|p| p.starts_with(port) && p.ends_with(":9000")),
            "S3_PUBLIC_ENDPOINT_URL {public} must be MinIO's published S3 port, got {published:?}"
        );
        assert!(public.starts_with("http://localhost:"), "{public}");
    }
}
