//! The README and `.env.example` are promises: every configuration variable the services read
//! must be documented in both. Field names are read from the config types themselves.

use std::collections::BTreeSet;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A deserializer that only records the field names a struct asks for.
struct FieldNames(Vec<&'static str>);

#[derive(Debug)]
struct Stop;
impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stop")
    }
}
impl std::error::Error for Stop {}
impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for &mut FieldNames {
    type Error = Stop;
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.0.extend_from_slice(fields);
        Err(Stop)
    }
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

fn vars_of<T: for<'de> Deserialize<'de>>() -> Vec<String> {
    let mut names = FieldNames(Vec::new());
    let _ = T::deserialize(&mut names);
    assert!(!names.0.is_empty());
    names.0.iter().map(|f| f.to_uppercase()).collect()
}

fn all_vars() -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    all.extend(vars_of::<portail_agent::AgentSettings>());
    all.extend(vars_of::<portail_core::config::DatabaseConfig>());
    all.extend(vars_of::<portail_core::config::S3Config>());
    all.extend(vars_of::<portail_core::config::LogConfig>());
    all.extend(vars_of::<portail_url_service::ServiceSettings>());
    all
}

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../{name}", env!("CARGO_MANIFEST_DIR"))).expect(name)
}

#[test]
fn every_variable_is_in_env_example() {
    let example = repo_file(".env.example");
    let listed: BTreeSet<String> = example
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .collect();
    let read = all_vars();
    let missing: Vec<_> = read.difference(&listed).collect();
    assert!(missing.is_empty(), "not in .env.example: {missing:?}");
    let stale: Vec<_> = listed.difference(&read).collect();
    assert!(
        stale.is_empty(),
        "in .env.example but read by nothing: {stale:?}"
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
