//! The file jobs of a stream of work: each file hashed, stored and recorded, as many in flight
//! as requests, for a full pass and a watch batch alike.
//!
//! In: work items (a file and the row it replaces), the rename sources, the busy paths. Out:
//! each outcome handed to the [`Recorder`].

use std::collections::HashSet;

use futures::stream::StreamExt;

use crate::agent::Agent;
use crate::pass::file::{self, ReadMode, RenameSources};
use crate::pass::merge::Work;
use crate::pass::record::Recorder;

/// Hashes, stores and records a stream of work items, as many files in flight as requests
/// (UPLOAD_CONCURRENCY), so that small files alone can fill every request slot. Every file must
/// be settled: unchanged while it is read and stored.
pub async fn transfer_files(
    agent: &Agent,
    work: impl futures::Stream<Item = Work>,
    sources: &RenameSources,
    rec: &mut Recorder<'_>,
) -> anyhow::Result<()> {
    transfer_files_busy(agent, work, sources, &HashSet::new(), rec).await
}

/// The same, with the paths in `busy` read as [`ReadMode::Busy`] (watch mode's
/// MAX_SYNC_DELAY is up for them, so the prefix of a growing file is stored).
pub async fn transfer_files_busy(
    agent: &Agent,
    work: impl futures::Stream<Item = Work>,
    sources: &RenameSources,
    busy: &HashSet<String>,
    rec: &mut Recorder<'_>,
) -> anyhow::Result<()> {
    let files_in_flight = agent.transfer.config().requests_in_flight;
    let mode = |w: &Work| match busy.contains(&w.local.path) {
        true => ReadMode::Busy,
        false => ReadMode::Settled,
    };
    let mut outcomes = std::pin::pin!(work
        .map(|w| {
            let m = mode(&w);
            file::sync_file(agent, w, sources, m)
        })
        .buffer_unordered(files_in_flight));
    while let Some((hashes, outcome)) = outcomes.next().await {
        rec.file(hashes, outcome).await?;
    }
    Ok(())
}
