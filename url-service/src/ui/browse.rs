//! `GET /ui/`: the agents, a folder, or search results; `GET /ui/audit`: the audit log.
//!
//! - `GET /ui/` lists the agents the token may see (one, for an agent-scoped token).
//! - `GET /ui/?agent=NAME&dir=a/b/&sort=name|size|time&after=CURSOR` shows one folder:
//!   breadcrumbs, its subfolders (a skip scan: one index probe per subfolder), then its files,
//!   [`PAGE`] at a time with a "Next" link (keyset on the sort key), so a folder of 100 000
//!   files is never loaded whole. Sorting by size or time orders the folder's own files, in
//!   folders of up to [`SORTABLE`] files.
//! - `GET /ui/?q=TEXT&after=ID` lists files whose path contains TEXT, ignoring case, exactly as
//!   `GET /v1/files?q=` does.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use portail_core::catalog::{self, AuditQuery, FileQuery, FileWithBucket, FolderQuery};
use serde::Deserialize;

use crate::routes::split_page;
use crate::ui::session::Viewer;
use crate::ui::{human_size, layout, q, when, PageError};
use crate::AppState;

/// Rows per page (folders, files, search results, audit entries).
pub const PAGE: i64 = 1000;

/// Files counted per folder at most, and the largest folder sorted by size or time: those
/// sorts read every file of the folder (no index orders a folder by size or time: two more
/// indexes on `files` would cost every sync), so beyond this a folder is shown by name.
pub const SORTABLE: i64 = 10_000;

/// Query of `GET /ui/`.
#[derive(Debug, Default, Deserialize)]
pub struct BrowseParams {
    /// The agent whose tree to show.
    pub agent: Option<String>,
    /// The folder: '' or a path ending in '/'.
    pub dir: Option<String>,
    /// `name` (default), `size` or `time`.
    pub sort: Option<String>,
    /// The previous page's cursor.
    pub after: Option<String>,
    /// A search by name.
    pub q: Option<String>,
}

/// `GET /ui/`.
pub async fn index(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(p): Query<BrowseParams>,
) -> Result<Response, PageError> {
    let csrf = viewer.csrf.clone();
    if let Some(text) = p.q.as_deref().filter(|t| !t.trim().is_empty()) {
        let body = search(&state, &viewer, text, p.after.as_deref()).await?;
        return Ok(layout("Search", Some(&csrf), body).into_response());
    }
    let body = match p.agent.as_deref() {
        None => agents(&state, &viewer).await?,
        Some(agent) => folder(&state, &viewer, agent, &p).await?,
    };
    Ok(layout("Files", Some(&csrf), body).into_response())
}

async fn agents(state: &AppState, viewer: &Viewer) -> Result<Markup, PageError> {
    let scope = viewer.caller.0.agent_name.as_deref();
    let names: Vec<String> = catalog::agent_names(&state.pool)
        .await?
        .into_iter()
        .filter(|n| scope.is_none_or(|s| s == n))
        .collect();
    Ok(html! {
        h1 { "Agents" }
        @if names.is_empty() { p { "No agent has synced anything yet." } }
        ul.entries { @for n in &names {
            li { a.folder href={ "/ui/?agent=" (q(n)) "&dir=" } { (n) } }
        } }
    })
}

/// The folder the scope allows: an ancestor of the scope's prefix shows only the way down.
fn visible(dir: &str, scope: Option<&str>) -> bool {
    scope.is_none_or(|s| dir.starts_with(s) || s.starts_with(dir))
}

async fn folder(
    state: &AppState,
    viewer: &Viewer,
    agent: &str,
    p: &BrowseParams,
) -> Result<Markup, PageError> {
    let token = &viewer.caller.0;
    let not_found = || PageError(crate::error::ApiError::NotFound("folder"));
    let dir = p.dir.clone().unwrap_or_default();
    let scope = token.path_prefix.as_deref();
    if token.agent_name.as_deref().is_some_and(|a| a != agent)
        || !(dir.is_empty() || dir.ends_with('/'))
        || !visible(&dir, scope)
    {
        return Err(not_found());
    }
    let agent_id = catalog::agent_id_by_name(&state.pool, agent)
        .await?
        .ok_or_else(not_found)?;
    // Counted (up to SORTABLE + 1, 6 ms for a big folder) only to allow a sort by size or
    // time; by name a full page says "more than 1000".
    let wants = p.sort.as_deref().unwrap_or("name");
    let counted = match wants {
        "size" | "time" => {
            Some(catalog::folder_file_count(&state.pool, agent_id, &dir, SORTABLE + 1).await?)
        }
        _ => None,
    };
    let sort = match wants {
        "size" | "time" if counted.is_some_and(|c| c <= SORTABLE) => wants,
        _ => "name",
    };
    let after = p.after.as_deref().and_then(parse_cursor);
    let folders = if after.is_none() {
        let names = catalog::subfolders(&state.pool, agent_id, &dir, None, PAGE).await?;
        names
            .into_iter()
            .filter(|n| visible(&format!("{dir}{n}/"), scope))
            .collect()
    } else {
        Vec::new()
    };
    let query = FolderQuery {
        agent_id,
        dir: &dir,
        scope_prefix: scope,
        sort,
        after,
        limit: PAGE + 1,
    };
    let mut files = catalog::folder_files(&state.pool, &query).await?;
    let more = split_page(&mut files, PAGE);
    let next = more
        .then(|| files.last().map(|f| cursor(sort, f)))
        .flatten();
    let count = match counted {
        Some(c) if c > SORTABLE => Count::MoreThan(SORTABLE),
        Some(c) => Count::Exactly(c),
        None if more || p.after.is_some() => Count::MoreThan(PAGE),
        None => Count::Exactly(files.len() as i64),
    };
    Ok(folder_page(
        agent, &dir, sort, &folders, &files, count, next,
    ))
}

/// How many files a folder holds, as far as the page knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    Exactly(i64),
    MoreThan(i64),
}

/// The keyset cursor after `f` for a sort: `KEY|ID`.
fn cursor(sort: &str, f: &FileWithBucket) -> String {
    let key = match sort {
        "size" => f.file.size_bytes.to_string(),
        "time" => f.file.mtime.to_rfc3339(),
        _ => f.file.path.clone(),
    };
    format!("{key}|{}", f.file.id)
}

fn parse_cursor(c: &str) -> Option<(String, i64)> {
    let (key, id) = c.rsplit_once('|')?;
    Some((key.to_string(), id.parse().ok()?))
}

fn folder_page(
    agent: &str,
    dir: &str,
    sort: &str,
    folders: &[String],
    files: &[FileWithBucket],
    count: Count,
    next: Option<String>,
) -> Markup {
    let base = format!("/ui/?agent={}&dir={}", q(agent), q(dir));
    html! {
        nav.crumbs aria-label="Breadcrumbs" {
            a href="/ui/" { "Agents" } " / "
            a href={ "/ui/?agent=" (q(agent)) "&dir=" } { (agent) }
            @for (i, part) in dir.split_terminator('/').enumerate() {
                " / "
                a href={ "/ui/?agent=" (q(agent)) "&dir=" (q(&crumb(dir, i))) } { (part) }
            }
        }
        p.counts { (folders.len()) " folders, "
            @match count { Count::Exactly(n) => { (n) }, Count::MoreThan(n) => { "more than " (n) } }
            " files" }
        @if count == Count::MoreThan(SORTABLE) {
            p.sort { "Sorted by name (sorting by size or time is offered up to " (SORTABLE) " files a folder)." }
        } @else {
            p.sort { "Sort: "
                @for (key, label) in [("name", "name"), ("size", "size"), ("time", "time")] {
                    @if key == sort { strong { (label) } } @else { a href={ (base) "&sort=" (key) } { (label) } } " "
                }
            }
        }
        table.entries {
            thead { tr { th { "Name" } th { "Size" } th { "Modified" } } }
            tbody {
                @for f in folders {
                    tr { td { a.folder href={ (base) (q(f)) "/" } { (f) "/" } } td {} td {} }
                }
                @for f in files { (file_row(f, dir)) }
            }
        }
        @if let Some(n) = next { p { a.next href={ (base) "&sort=" (sort) "&after=" (q(&n)) } { "Next " (PAGE) " files →" } } }
    }
}

/// The folder path of the first `i + 1` segments of `dir`, with its trailing '/'.
fn crumb(dir: &str, i: usize) -> String {
    let parts: Vec<&str> = dir.split_terminator('/').take(i + 1).collect();
    format!("{}/", parts.join("/"))
}

fn file_row(f: &FileWithBucket, dir: &str) -> Markup {
    let name = f.file.path.strip_prefix(dir).unwrap_or(&f.file.path);
    html! {
        tr {
            td { a.file href={ "/ui/files/" (f.file.id) } { (name) } }
            td.num { (human_size(f.file.size_bytes)) }
            td { (when(f.file.mtime)) }
        }
    }
}

async fn search(
    state: &AppState,
    viewer: &Viewer,
    text: &str,
    after: Option<&str>,
) -> Result<Markup, PageError> {
    let token = &viewer.caller.0;
    let text: String = text
        .chars()
        .take(crate::routes::files::MAX_QUERY_CHARS)
        .collect();
    let text = text.replace('\0', "");
    let query = FileQuery {
        scope_agent: token.agent_name.as_deref(),
        scope_prefix: token.path_prefix.as_deref(),
        status: Some("synced"),
        q: Some(&text),
        after_id: after.and_then(|a| a.parse().ok()).unwrap_or(0),
        limit: PAGE + 1,
        ..Default::default()
    };
    let mut files = catalog::list_files(&state.pool, &query).await?;
    let more = split_page(&mut files, PAGE);
    Ok(html! {
        h1 { "Files matching “" (text) "”" }
        p.counts { (files.len()) @if more { "+" } " files" }
        table.entries {
            thead { tr { th { "Path" } th { "Agent" } th { "Size" } th { "Modified" } } }
            tbody { @for f in &files {
                tr {
                    td { a.file href={ "/ui/files/" (f.file.id) } { (f.file.path) } }
                    td { (f.agent_name) }
                    td.num { (human_size(f.file.size_bytes)) }
                    td { (when(f.file.mtime)) }
                }
            } }
        }
        @if more { @if let Some(last) = files.last() {
            p { a.next href={ "/ui/?q=" (q(&text)) "&after=" (last.file.id) } { "Next " (PAGE) " →" } }
        } }
    })
}

/// Query of `GET /ui/audit`.
#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    /// Only this file's entries.
    pub file_id: Option<i64>,
    /// The previous page's last id.
    pub after: Option<i64>,
}

/// `GET /ui/audit`: the audit log as the token may see it, newest first.
pub async fn audit(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(p): Query<AuditParams>,
) -> Result<Response, PageError> {
    let token = &viewer.caller.0;
    let query = AuditQuery {
        file_id: p.file_id,
        scope_agent: token.agent_name.as_deref(),
        scope_prefix: token.path_prefix.as_deref(),
        before_id: p.after.unwrap_or(0),
        limit: PAGE + 1,
        ..Default::default()
    };
    let mut entries = catalog::audit_page(&state.pool, &query).await?;
    let more = split_page(&mut entries, PAGE);
    let body = html! {
        h1 { "Audit log" }
        table.entries {
            thead { tr { th { "When" } th { "File" } th { "Actor" } th { "Channel" } th { "Outcome" } th { "Client" } th { "User agent" } } }
            tbody { @for e in &entries {
                tr {
                    td { (when(e.at)) }
                    td { @if let Some(id) = e.file_id { a href={ "/ui/files/" (id) } { (id) } } }
                    td { (e.actor) } td { (e.channel) } td { (e.outcome) }
                    td { (e.client_ip.as_deref().unwrap_or("")) }
                    td.ua { (e.user_agent.as_deref().unwrap_or("")) }
                }
            } }
        }
        @if more { @if let Some(last) = entries.last() {
            p { a.next href={ "/ui/audit?after=" (last.id) @if let Some(f) = p.file_id { "&file_id=" (f) } } { "Older →" } }
        } }
    };
    Ok(layout("Audit log", Some(&viewer.csrf), body).into_response())
}
