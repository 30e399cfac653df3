//! A page per file: `GET /ui/files/{id}` shows its metadata, its versions, a Download button
//! and its share links; `GET /ui/files/{id}/download` answers 303 to a fresh presigned URL
//! (`attachment`), recorded in the audit log with channel `ui`; `POST /ui/files/{id}/links`
//! creates a share link (shown once, with a copy button) and `POST /ui/links/{id}/revoke`
//! revokes one. Both POSTs need the session's CSRF token.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use portail_core::catalog::{self, FileStatus, FileWithBucket};
use serde::Deserialize;

use crate::audit::Client;
use crate::error::ApiError;
use crate::routes::content::attachment_url;
use crate::routes::files::{audit_outcome, ensure_servable, file_name, visible_file};
use crate::routes::links::{issue_link, revoke_visible_link, Issued};
use crate::routes::IdParam;
use crate::ui::session::{forbidden, Viewer};
use crate::ui::{human_size, layout, q, when, PageError};
use crate::AppState;

/// The lifetimes the share form offers, in seconds.
pub const LINK_LIFETIMES: [(i64, &str); 4] = [
    (3600, "1 hour"),
    (86_400, "1 day"),
    (7 * 86_400, "7 days"),
    (30 * 86_400, "30 days"),
];

/// `GET /ui/files/{id}`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    IdParam(id): IdParam,
) -> Result<Response, PageError> {
    let file = visible_file(&state, &viewer.caller, id).await?;
    Ok(render(&state, &viewer, &file, None).await?.into_response())
}

/// The file page, with a link just created (its URL is shown only then).
// Long by design: one page's markup (maud), read top to bottom as the page shows.
async fn render(
    state: &AppState,
    viewer: &Viewer,
    file: &FileWithBucket,
    new_link: Option<&str>,
) -> Result<Markup, PageError> {
    let versions = catalog::versions_of_file(&state.pool, file.file.id).await?;
    let links = catalog::links_of_file(&state.pool, file.file.id).await?;
    let f = &file.file;
    let dir = f.path.rsplit_once('/').map_or("", |(d, _)| d);
    let dir = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let csrf = &viewer.csrf;
    let body = html! {
        nav.crumbs { a href={ "/ui/?agent=" (q(&file.agent_name)) "&dir=" (q(&dir)) } { "← " (file.agent_name) "/" (dir) } }
        h1.filename { (file_name(file)) }
        @if f.status == FileStatus::Synced {
            p { a.button #download href={ "/ui/files/" (f.id) "/download" } { "Download" } }
        } @else {
            p.error { "This file is " (status_word(f.status)) ": it cannot be downloaded." }
        }
        table.meta {
            tr { th { "Path" } td { (f.path) } }
            tr { th { "Size" } td { (human_size(f.size_bytes)) " (" (f.size_bytes) " bytes)" } }
            tr { th { "Modified" } td { (when(f.mtime)) } }
            tr { th { "MD5" } td { code { (f.md5.as_deref().unwrap_or("")) } } }
            tr { th { "Content type" } td { (f.content_type.as_deref().unwrap_or("")) } }
            tr { th { "Status" } td { (status_word(f.status)) } }
        }
        h2 { "Share" }
        @if let Some(url) = new_link {
            p.created { "New link (shown only now): " input #new-link readonly value=(url);
                button type="button" data-copy="#new-link" { "Copy" } }
        }
        form.share action={ "/ui/files/" (f.id) "/links" } method="post" {
            input type="hidden" name="csrf" value=(csrf);
            label { "Expires in " select name="expires_in_seconds" {
                @for (s, label) in LINK_LIFETIMES { option value=(s) selected[s == 7 * 86_400] { (label) } }
            } }
            label { " Download limit " input type="number" name="max_downloads" min="1" placeholder="none"; }
            button type="submit" { "Create link" }
        }
        (links_table(&links, csrf))
        h2 { "History" }
        table.entries {
            thead { tr { th { "From" } th { "Until" } th { "Size" } th { "MD5" } th { "Event" } } }
            tbody { @for v in &versions {
                tr {
                    td { (when(v.valid_from)) }
                    td { @if let Some(t) = v.valid_to { (when(t)) } @else { "now" } }
                    td.num { (human_size(v.size_bytes)) }
                    td { code { (v.md5) } }
                    td { (v.event) @if let Some(e) = &v.ended_by { ", then " (e) } }
                }
            } }
        }
        p { a href={ "/ui/audit?file_id=" (f.id) } { "Downloads of this file (audit log)" } }
    };
    Ok(layout(file_name(file), Some(csrf), body))
}

fn links_table(links: &[catalog::ShareLink], csrf: &str) -> Markup {
    html! {
        @if !links.is_empty() {
            table.entries.links {
                thead { tr { th { "Link" } th { "Created" } th { "Expires" } th { "Clicks" } th { "State" } th {} } }
                tbody { @for l in links {
                    tr {
                        td { "#" (l.id) } td { (when(l.created_at)) } td { (when(l.expires_at)) }
                        td.num { (l.downloads) @if let Some(m) = l.max_downloads { " / " (m) } }
                        td { @if l.revoked_at.is_some() { "revoked" } @else if l.expires_at < chrono::Utc::now() { "expired" } @else { "live" } }
                        td { @if l.revoked_at.is_none() {
                            form action={ "/ui/links/" (l.id) "/revoke" } method="post" {
                                input type="hidden" name="csrf" value=(csrf);
                                button.revoke type="submit" { "Revoke" }
                            }
                        } }
                    }
                } }
            }
        }
    }
}

/// `GET /ui/files/{id}/download`: 303 to a fresh presigned URL; audited (channel `ui`).
pub async fn download(
    State(state): State<AppState>,
    viewer: Viewer,
    client: Client,
    IdParam(id): IdParam,
) -> Result<Response, PageError> {
    let answer = async {
        let file = visible_file(&state, &viewer.caller, id).await?;
        ensure_servable(&file)?;
        attachment_url(&state, &file).await
    }
    .await;
    let outcome = audit_outcome(answer.as_ref().map(|_| "issued"));
    let actor = viewer.caller.0.name.clone();
    state
        .audit
        .record(client.entry(Some(id), actor, "ui", outcome))
        .await;
    Ok(Redirect::to(&answer?).into_response())
}

/// The share form.
#[derive(Debug, Deserialize)]
pub struct ShareForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// One of [`LINK_LIFETIMES`].
    pub expires_in_seconds: i64,
    /// Empty: unlimited.
    #[serde(default)]
    pub max_downloads: String,
}

/// `POST /ui/files/{id}/links`.
pub async fn create_link(
    State(state): State<AppState>,
    viewer: Viewer,
    IdParam(id): IdParam,
    Form(form): Form<ShareForm>,
) -> Result<Response, PageError> {
    if !viewer.csrf_ok(&form.csrf) {
        return Ok(forbidden());
    }
    let bad = |m: &str| PageError(ApiError::BadRequest(m.into()));
    if !LINK_LIFETIMES
        .iter()
        .any(|(s, _)| *s == form.expires_in_seconds)
    {
        return Err(bad("choose one of the offered lifetimes"));
    }
    let max = match form.max_downloads.trim() {
        "" => None,
        n => Some(
            n.parse::<i32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad("the download limit must be a whole number of at least 1"))?,
        ),
    };
    let Issued { file, url, .. } =
        issue_link(&state, &viewer.caller, id, form.expires_in_seconds, max).await?;
    Ok(render(&state, &viewer, &file, Some(&url))
        .await?
        .into_response())
}

/// `POST /ui/links/{id}/revoke`: back to the file's page.
pub async fn revoke_link(
    State(state): State<AppState>,
    viewer: Viewer,
    IdParam(id): IdParam,
    Form(form): Form<crate::ui::session::CsrfForm>,
) -> Result<Response, PageError> {
    if !viewer.csrf_ok(&form.csrf) {
        return Ok(forbidden());
    }
    let link = revoke_visible_link(&state, &viewer.caller, id).await?;
    Ok(Redirect::to(&format!("/ui/files/{}", link.file_id)).into_response())
}

fn status_word(s: FileStatus) -> &'static str {
    match s {
        FileStatus::Pending => "pending",
        FileStatus::Synced => "synced",
        FileStatus::Deleted => "deleted",
        FileStatus::Error => "in error",
    }
}
