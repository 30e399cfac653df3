//! Reads `docker-compose.yml` the way compose does, for the tests that check or reproduce the
//! stack without a Docker engine: merge keys resolved, `environment:` as a map, and `${VAR}`,
//! `${VAR:-default}` interpolation.

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::repo_file;

/// The compose file, with `<<: *anchor` merge keys resolved.
pub fn compose() -> Value {
    let mut v: Value =
        serde_yaml::from_str(&repo_file("docker-compose.yml")).expect("docker-compose.yml parses");
    v.apply_merge().expect("merge keys resolve");
    v
}

/// One service; panics when it is missing.
pub fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let s = &compose["services"][name];
    assert!(!s.is_null(), "docker-compose.yml has no service {name}");
    s
}

/// A service's `environment:` as a map (nested merge keys resolved too), values uninterpolated.
pub fn environment(svc: &Value) -> BTreeMap<String, String> {
    fn add(map: &mut BTreeMap<String, String>, v: &Value) {
        let Some(m) = v.as_mapping() else {
            return;
        };
        for (k, v) in m {
            let k = k.as_str().expect("string keys");
            if k == "<<" {
                add(map, v);
                continue;
            }
            let v = match v {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .expect("yaml")
                    .trim()
                    .to_string(),
            };
            map.insert(k.to_string(), v);
        }
    }
    let mut map = BTreeMap::new();
    add(&mut map, &svc["environment"]);
    map
}

/// Interpolates `${VAR}` and `${VAR:-default}` as compose does, with `vars` as the shell
/// environment (an unset or empty variable takes the default).
pub fn interpolate(value: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .expect("closing brace");
        let inner = &rest[start + 2..end];
        let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
        match vars.get(name).filter(|v| !v.is_empty()) {
            Some(v) => out.push_str(v),
            None => out.push_str(default),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}
