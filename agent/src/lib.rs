//! portail-agent: mirrors a local directory tree to S3 and records every file in PostgreSQL.
//!
//! The crate is a stack of layers. Each module imports only the layers below it, and a test
//! (`tests/tests/layers.rs`) fails on an import that climbs, or on two modules that import
//! each other. From the bottom up:
//!
//! | layer | modules | what it holds |
//! |---|---|---|
//! | [`model`] | `tree`, `guard`, `report` | the words: tree entries, guard outcomes, the report |
//! | [`metrics`] | | the metric handles every layer writes to |
//! | [`fs`] | `scan`, `hash` | the local tree: the walk, one path's inspection, the MD5 reads |
//! | [`store`] | `client` (the [`store::ObjectClient`] trait), `sdk`, `memory`, `faulty`, `read`, `write`, `multipart`, `download`, `metadata`, `bandwidth`, `error` | S3: every request, behind one trait |
//! | [`catalog`] | | the agent's handle on its rows ([`catalog::Catalog`]): below the app, the only caller of `portail_core::catalog`; it is the pass's row source, the store's multipart journal and the guards' store |
//! | [`policy`] | `delete_rules`, `guard`, `history` | what may happen: the delete rules, the guard session, history's keep and purge |
//! | [`agent`] | | the wired handles a run works with ([`Agent`]) |
//! | [`pass`] | `run` (the one entry, [`pass::run::sync`]), `batch`, `merge`, `jobs`, `file`, `record`, `delete`, `progress` | one pipeline of stages, for a full pass and for a watch batch |
//! | [`watch`] | `events`, `schedule`, `release` | watch mode: what the file system says, when a path is due, an operator's release, and the loop |
//! | [`ops`] | `verify`, `restore`, `recover`, `source` | the operations beside the pass |
//! | [`app`] | `config`, `cli`, `health` | the only reader of the configuration, and the wiring ([`Agent::start`]) |
//!
//! Policy is passed down, never called back up: the app opens the guard session
//! ([`policy::guard::Guards`]) once; each pass or batch loads it and settles it; a file job is
//! handed the change gate and the history keeper, and the delete executor asks the guards and
//! reports what it did.

pub mod model;

pub mod metrics;

pub mod fs;

pub mod store;

pub mod catalog;

pub mod policy;

pub mod agent;

pub mod pass;

pub mod watch;

pub mod ops;

pub mod app;

pub use agent::Agent;
pub use app::config::{AgentConfig, AgentSettings};
pub use model::report::SyncReport;
pub use pass::run::{sync_once, SyncOptions};
