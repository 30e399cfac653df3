//! The pass: one pipeline of named stages, for a full pass and for a watch batch alike.
//!
//! [`run::sync`] is the one entry, over a [`run::Scope`]: everything (a full pass,
//! [`run::sync_once`]) or the paths a watch batch names ([`batch::Targeted`]). The stages, in
//! order:
//! 1. `fs::scan` walks SYNC_ROOT (a full pass), or watch mode names the paths;
//! 2. [`merge`]: the one lock-step merge of the walk with the catalog's rows, into
//!    `Unchanged | Work | Gone`;
//! 3. [`file`](mod@file): one file's job: hash → decide → store → confirm, through the change gate and
//!    the history keeper it is handed;
//!    [`jobs`] runs many of them at once;
//! 4. [`record`]: each outcome into metrics, a log line, the report and a batched catalog
//!    write;
//! 5. [`delete`]: after every upload, the delete executor, behind the guard session.
//!
//! [`progress`] draws the interactive progress line.

pub mod batch;
pub mod delete;
pub mod file;
pub mod jobs;
pub mod merge;
pub mod progress;
pub mod record;
pub mod run;
