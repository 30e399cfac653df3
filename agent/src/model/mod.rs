//! The words of the agent, below every stage: tree entries, guard outcomes, what a pass
//! reports, and what a catalog row vouches for (`row`). A leaf: it imports nothing of the crate but itself.

pub mod guard;
pub mod report;
pub mod row;
pub mod tree;
