//! The house keeps its shape: the agent's layers import downward only, and no two modules of
//! `agent/`, `core/` or `url-service/` import each other, directly or through others.
//!
//! In: the source files of the three crates, read as text. Out: a failure naming every import
//! that climbs a layer and every cycle. Imports are the `crate::` paths a file names (in `use`
//! lines, groups included, and inline paths); a file's `#[cfg(test)]` part is left out, since
//! unit tests may borrow a sibling's fixtures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The agent's layers, from the bottom up. A module may import only its own layer's modules and
/// those listed before it.
const AGENT_LAYERS: &[&str] = &[
    "model", "metrics", "fs", "store", "catalog", "policy", "agent", "pass", "watch", "ops", "app",
];

/// One source file: its path under `src/` and its text.
struct Source {
    rel: PathBuf,
    text: String,
}

fn sources(krate: &str) -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src");
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.expect("walk the sources");
        if entry.path().extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(entry.path()).expect("read a source");
            let rel = entry
                .path()
                .strip_prefix(&src)
                .expect("under src")
                .to_path_buf();
            out.push(Source { rel, text });
        }
    }
    assert!(out.len() > 3, "no sources found under {}", src.display());
    out
}

/// The module a file belongs to, `depth` levels deep (`pass/file.rs` is `pass` at depth 1 and
/// `pass::file` at depth 2). The crate roots belong to none.
fn module_of(rel: &Path, depth: usize) -> Option<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        return None;
    }
    parts.truncate(depth);
    (parts.len() == depth).then(|| parts.join("::"))
}

/// The code of a file without its comments and its `#[cfg(test)]` part.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path a file names below `crate::`, as `a::b` (groups expanded one level).
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // portail_core::… or $crate::…
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top(&group[..end]) {
                out.push(path_head(item.trim()));
            }
        } else {
            out.push(path_head(rest));
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

/// The first two segments of a path (`pass::file::Outcome` → `pass::file`).
fn path_head(s: &str) -> String {
    let ident = |s: &str| -> usize {
        s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    let first = &s[..ident(s)];
    match s[first.len()..].strip_prefix("::") {
        Some(more) if !more.starts_with('{') => format!("{first}::{}", &more[..ident(more)]),
        _ => first.to_string(),
    }
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The imports between modules `depth` levels deep: from → the modules it names.
fn graph(files: &[Source], depth: usize) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(from) = module_of(&f.rel, depth) else {
            continue;
        };
        let entry = g.entry(from.clone()).or_default();
        for path in crate_paths(&code(&f.text)) {
            let to: Vec<&str> = path.split("::").take(depth).collect();
            // Only modules of this depth count: a crate-root item (`crate::Agent`) is its own
            // node at depth 1; at depth 2, only paths inside the same top-level module.
            if to.len() < depth || (depth > 1 && !from.starts_with(&format!("{}::", to[0]))) {
                if depth == 1 {
                    entry.insert(to.join("::"));
                }
                continue;
            }
            let to = to.join("::");
            if to != from {
                entry.insert(to);
            }
        }
    }
    g
}

/// The imports that climb: a module naming one of a later layer, or something not in a layer.
fn upward(g: &BTreeMap<String, BTreeSet<String>>, layers: &[&str]) -> Vec<String> {
    let rank = |m: &str| layers.iter().position(|l| *l == m);
    let mut bad = Vec::new();
    for (from, tos) in g {
        let Some(rf) = rank(from) else {
            bad.push(format!("{from} is in no layer (add it to AGENT_LAYERS)"));
            continue;
        };
        for to in tos {
            match rank(to) {
                Some(rt) if rt <= rf => {}
                Some(_) => bad.push(format!("{from} imports {to}, a layer above it")),
                None => bad.push(format!("{from} imports crate::{to}, which is in no layer")),
            }
        }
    }
    bad
}

/// Every cycle of the graph, each named once by its members.
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let reach = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.to_string()];
        while let Some(m) = todo.pop() {
            for next in g.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let mut found = BTreeSet::new();
    for m in g.keys() {
        let from_m = reach(m);
        if from_m.contains(m) {
            let members: BTreeSet<String> = from_m
                .iter()
                .filter(|o| reach(o).contains(m))
                .cloned()
                .collect();
            found.insert(members.into_iter().collect::<Vec<_>>().join(" <-> "));
        }
    }
    found.into_iter().collect()
}

#[test]
fn the_agent_imports_downward_only() {
    let files = sources("agent");
    let g = graph(&files, 1);
    let bad = upward(&g, AGENT_LAYERS);
    assert!(bad.is_empty(), "imports that climb:\n{}", bad.join("\n"));
    assert!(
        g["pass"].contains("policy") && g["app"].contains("agent"),
        "the check sees the imports: {g:?}"
    );
}

#[test]
fn no_two_modules_import_each_other_in_any_crate() {
    for krate in ["agent", "core", "url-service"] {
        let files = sources(krate);
        for depth in [1, 2] {
            let found = cycles(&graph(&files, depth));
            assert!(
                found.is_empty(),
                "{krate}: modules that import each other (depth {depth}):\n{}",
                found.join("\n")
            );
        }
    }
}

#[test]
fn a_planted_upward_import_and_a_planted_cycle_are_caught() {
    let mut files = sources("agent");
    let tree = files
        .iter_mut()
        .find(|f| f.rel == Path::new("model/tree.rs"))
        .expect("model/tree.rs");
    tree.text
        .push_str("\nuse crate::app::config::AgentSettings;\n");
    let bad = upward(&graph(&files, 1), AGENT_LAYERS);
    assert_eq!(bad, vec!["model imports app, a layer above it".to_string()]);

    let files = vec![
        Source {
            rel: "a.rs".into(),
            text: "use crate::{b::{X, Y}, c};\n".into(),
        },
        Source {
            rel: "b/mod.rs".into(),
            text: "fn f() { crate::a::g() } // crate::c only in a comment\n".into(),
        },
        Source {
            rel: "c.rs".into(),
            text: "#[cfg(test)]\nmod tests { use crate::a; }\n".into(),
        },
    ];
    let g = graph(&files, 1);
    assert_eq!(g["a"], BTreeSet::from(["b".into(), "c".into()]));
    assert_eq!(g["b"], BTreeSet::from(["a".into()]));
    assert!(g["c"].is_empty(), "a test module's imports do not count");
    assert_eq!(cycles(&g), vec!["a <-> b".to_string()]);
}

/// The modules of the agent, other than `catalog` and `app` (which builds the handle), that
/// call a function of `portail_core::catalog`: the layers below the app reach the catalog only
/// through `crate::catalog::Catalog`. Its types (`FileRow` and the like) are shared words.
fn direct_catalog_calls(files: &[Source]) -> Vec<String> {
    let mut found = Vec::new();
    for f in files {
        let top = module_of(&f.rel, 1);
        if matches!(top.as_deref(), Some("catalog" | "app") | None) {
            continue;
        }
        let code: String = code(&f.text).split_whitespace().collect();
        let imports_module = code.contains("useportail_core::catalog;")
            || code.contains("useportail_core::catalog::{self");
        let calls = code.match_indices("catalog::").any(|(i, _)| {
            let rest = &code[i + "catalog::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let qualified = code[..i].ends_with("portail_core::");
            let is_fn = name.starts_with(|c: char| c.is_ascii_lowercase())
                && rest[name.len()..].starts_with('(');
            is_fn && (qualified || imports_module)
        });
        if calls {
            found.push(f.rel.display().to_string());
        }
    }
    found.sort();
    found
}

#[test]
fn below_the_app_only_the_catalog_handle_calls_the_catalog() {
    let files = sources("agent");
    assert_eq!(direct_catalog_calls(&files), Vec::<String>::new());
    // A planted direct call is caught, through the module or fully qualified.
    let mut planted = sources("agent");
    let run = planted
        .iter_mut()
        .find(|f| f.rel == Path::new("pass/run.rs"))
        .expect("pass/run.rs");
    run.text = format!(
        "use portail_core::catalog;\nfn f() {{ catalog::ping(&pool); }}\n{}",
        run.text
    );
    let verify = planted
        .iter_mut()
        .find(|f| f.rel == Path::new("ops/verify.rs"))
        .expect("ops/verify.rs");
    verify.text = format!(
        "fn g() {{ portail_core::catalog::files_of_agent(&pool, 1); }}\n{}",
        verify.text
    );
    assert_eq!(
        direct_catalog_calls(&planted),
        vec!["ops/verify.rs".to_string(), "pass/run.rs".to_string()]
    );
}
