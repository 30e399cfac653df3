//! Releases: an operator's `release-deletes` / `release-changes`, seen by a running agent.
//!
//! In: the catalog's guard holds, polled every RELEASE_POLL while a guard holds something.
//! Out: `true` once per release that has allowance left, so the loop runs one full pass that
//! lets the held files through.

use std::time::Duration;

use crate::agent::Agent;
use crate::policy::guard;

/// How often watch mode looks for a release while a guard holds something.
const RELEASE_POLL: Duration = Duration::from_secs(2);

/// Looks for an operator's release while a guard holds something.
pub(super) struct ReleasePoll {
    pub(super) interval: tokio::time::Interval,
    /// Each release starts one full pass, however long what it released stays held otherwise.
    last: Option<chrono::DateTime<chrono::Utc>>,
}

impl ReleasePoll {
    pub(super) fn new() -> Self {
        let mut interval = tokio::time::interval(RELEASE_POLL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ReleasePoll {
            interval,
            last: None,
        }
    }

    /// Whether a release newer than the last one acted on waits, with allowance to use.
    pub(super) async fn released(&mut self, agent: &Agent) -> bool {
        for kind in [guard::Kind::Deletes, guard::Kind::Changes] {
            match agent.catalog.guard_hold(kind.label()).await {
                Ok(Some(h)) if h.allowance > 0 && h.released_at != self.last => {
                    tracing::warn!(kind = kind.label(), held = h.held, by = ?h.released_by, "released by an operator; letting the held files through");
                    self.last = h.released_at;
                    return true;
                }
                Ok(_) => {}
                // The next batch reports a catalog outage; here it only delays the release.
                Err(e) => tracing::debug!(error = %e, "cannot read the guard holds"),
            }
        }
        false
    }
}
