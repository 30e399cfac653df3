//! The docs are promises, and a house of their own. Every configuration variable the services
//! read is documented in `.env.example` and in `docs/configuration.md` (field names are read
//! from the config types themselves); every metric name in `docs/operations.md`; the README is
//! a front page that links every page of `docs/`; and every relative link, anchors included,
//! leads somewhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

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
fn every_variable_is_in_the_configuration_page() {
    let page = repo_file("docs/configuration.md");
    let missing: Vec<_> = all_vars()
        .into_iter()
        .filter(|v| !page.contains(&format!("`{v}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md: {missing:?}"
    );
}

#[test]
fn every_metric_name_is_in_the_operations_page() {
    let page = repo_file("docs/operations.md");
    let source = repo_file("core/src/metrics.rs");
    let names: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert!(names.len() > 10, "{names:?}");
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !page.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics not in docs/operations.md: {missing:?}"
    );
}

/// The README is a front page: short, and a door to every page of the reference.
#[test]
fn the_readme_is_a_front_page_that_links_every_docs_page() {
    let readme = repo_file("README.md");
    assert!(
        readme.len() < 15 * 1024,
        "README.md is {} bytes; the reference belongs in docs/",
        readme.len()
    );
    let pages = docs_pages();
    assert!(pages.len() >= 6, "{pages:?}");
    let unlinked: Vec<_> = pages
        .iter()
        .map(|p| format!("docs/{}", p.file_name().unwrap().to_string_lossy()))
        .filter(|p| !readme.contains(&format!("]({p})")))
        .collect();
    assert!(
        unlinked.is_empty(),
        "docs pages the README does not link: {unlinked:?}"
    );
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        assert!(text.starts_with("# "), "{page:?} has no title");
    }
}

/// Every relative link in the README, the changelog and `docs/` names a file that exists, and
/// its `#anchor`, if any, a heading of that file (GitHub's slugs).
#[test]
fn every_relative_link_and_anchor_resolves() {
    let root = repo_root();
    let mut files = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    files.extend(docs_pages());
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in links(&text) {
            if let Err(why) = resolve(file, &target) {
                broken.push(format!("{}: ({target}): {why}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_checker_finds_a_broken_anchor_and_a_missing_file() {
    let page = repo_root().join("docs/commands.md");
    assert!(resolve(&page, "configuration.md#configuration").is_ok());
    assert!(resolve(&page, "#watch-mode").is_ok());
    assert!(resolve(&page, "#no-such-heading").is_err());
    assert!(resolve(&page, "no-such-page.md").is_err());
    assert_eq!(
        slug("Downloads: redirect or proxy"),
        "downloads-redirect-or-proxy"
    );
    assert_eq!(slug("`portail-agent`"), "portail-agent");
    assert_eq!(
        links("see [a](x.md#b) and ![c](d.png), not [e](https://f)"),
        ["x.md#b", "d.png"]
    );
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Markdown pages of `docs/`.
fn docs_pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo_root().join("docs"))
        .expect("docs/ is readable")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    pages
}

/// The targets of `[text](target)` links that are neither absolute URLs nor mail addresses.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        if !target.contains("://") && !target.starts_with("mailto:") && !target.contains(' ') {
            out.push(target.to_string());
        }
        rest = &rest[end..];
    }
    out
}

fn resolve(from: &Path, target: &str) -> Result<(), String> {
    let (file, anchor) = match target.split_once('#') {
        Some((f, a)) => (f, Some(a)),
        None => (target, None),
    };
    let path = if file.is_empty() {
        from.to_path_buf()
    } else {
        from.parent().expect("a file has a parent").join(file)
    };
    if !path.exists() {
        return Err(format!("{} does not exist", path.display()));
    }
    let Some(anchor) = anchor else { return Ok(()) };
    let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let slugs: BTreeSet<String> = headings(&text).map(slug).collect();
    if slugs.contains(anchor) {
        Ok(())
    } else {
        Err(format!("no heading #{anchor}; it has {slugs:?}"))
    }
}

/// The headings of a Markdown text, outside fenced code.
fn headings(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter_map(move |l| {
        if l.starts_with("```") {
            fenced = !fenced;
        }
        let title = l.trim_start_matches('#');
        (!fenced && l.starts_with('#') && title.starts_with(' ')).then(|| title.trim())
    })
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces made hyphens.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}
