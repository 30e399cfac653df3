//! Policy: what may happen, decided below the pass and handed down to it.
//!
//! - [`delete_rules`]: the pure delete rules (scan errors, empty root, MAX_DELETE,
//!   MAX_DELETE_PERCENT) and DELETE_MODE;
//! - [`guard`]: the guard session of one agent: the delete guards over DELETE_WINDOW, the
//!   mass-change tripwire, and their holds;
//! - [`history`]: HISTORY's mode, the copy kept before an overwrite or delete, and the purge.
//!
//! Above the model, the metrics, the file system and the store; never sees the pass.

pub mod delete_rules;
pub mod guard;
pub mod history;
