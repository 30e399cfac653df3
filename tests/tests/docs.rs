//! The README and `.env.example` are promises: every configuration variable the services read
//! must be documented in both. Field names are read from the config types themselves.

use portail_tests::config_vars::all_vars;
use portail_tests::{env_example_vars, repo_file};

#[test]
fn every_variable_is_in_env_example() {
    let (listed, compose_only) = env_example_vars();
    let read = all_vars();
    let missing: Vec<_> = read.difference(&listed).collect();
    assert!(missing.is_empty(), "not in .env.example: {missing:?}");
    let stale: Vec<_> = listed.difference(&read).collect();
    assert!(
        stale.is_empty(),
        "in .env.example but read by nothing: {stale:?}"
    );
    // The compose-only section is for docker-compose.yml; each entry must be used there.
    let compose = repo_file("docker-compose.yml");
    let unused: Vec<_> = compose_only
        .iter()
        .filter(|v| !compose.contains(&format!("${{{v}")))
        .collect();
    assert!(
        unused.is_empty(),
        "compose-only but unused by docker-compose.yml: {unused:?}"
    );
}

#[test]
fn every_variable_is_in_the_readme() {
    let readme = repo_file("README.md");
    let missing: Vec<_> = all_vars()
        .into_iter()
        .filter(|v| !readme.contains(&format!("`{v}`")))
        .collect();
    assert!(missing.is_empty(), "not in README.md: {missing:?}");
}

#[test]
fn every_metric_name_is_in_the_readme() {
    let readme = repo_file("README.md");
    let source = repo_file("core/src/metrics.rs");
    let names: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert!(names.len() > 10, "{names:?}");
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !readme.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "metrics not in README.md: {missing:?}");
}
