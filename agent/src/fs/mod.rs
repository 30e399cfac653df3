//! The local file system: the walk of SYNC_ROOT and the inspection of one path ([`scan`]), and
//! the reads that hash a file ([`hash`]). Above the model only; blocking calls, run on
//! blocking threads by the callers.

pub mod hash;
pub mod scan;
