//! Operations beside the pass: [`verify`] (the merge, read-only, against S3), [`restore`] (the
//! tree as of a time, from the catalog or from the bucket alone) and [`recover`] (the catalog
//! rebuilt from the bucket). Above the pass and watch mode; below the app.

pub mod recover;
pub mod restore;
pub mod source;
pub mod verify;
