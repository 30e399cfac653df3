//! The words of the agent, below every stage: tree entries, guard outcomes, and what a pass
//! reports. A leaf: it imports nothing of the crate but itself.

pub mod guard;
pub mod report;
pub mod tree;
