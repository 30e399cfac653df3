//! Guard outcomes: which delete guard refused, and the refusal an operator reads.
//!
//! In: nothing (the words only). Out: [`Guard`] (the `guard` label of the delete metrics, and
//! the name a hold is stored under) and [`Blocked`], the refusal with the message that says how
//! to proceed. The rules that produce them are in `policy::delete_rules`.

/// Which guard refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The scan hit I/O errors: what looks gone may just be unreadable.
    ScanErrors,
    /// The root is empty but the catalog tracks files: an unmounted or wiped share.
    EmptyRoot,
    /// More deletes than MAX_DELETE.
    MaxDelete,
    /// More deletes than MAX_DELETE_PERCENT of the tracked files.
    MaxDeletePercent,
}

impl Guard {
    /// Every guard, so the metric exports a zero for each before one fires.
    pub const ALL: [Guard; 4] = [
        Guard::ScanErrors,
        Guard::EmptyRoot,
        Guard::MaxDelete,
        Guard::MaxDeletePercent,
    ];

    /// The guard a metric label names.
    pub fn from_label(label: &str) -> Option<Guard> {
        Guard::ALL.into_iter().find(|g| g.label() == label)
    }

    /// Whether the guard counts deletes (MAX_DELETE, MAX_DELETE_PERCENT): those hold until
    /// released or raised. The others hold while the tree looks wrong.
    pub fn counts(self) -> bool {
        matches!(self, Guard::MaxDelete | Guard::MaxDeletePercent)
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Guard::ScanErrors => "scan_errors",
            Guard::EmptyRoot => "empty_root",
            Guard::MaxDelete => "max_delete",
            Guard::MaxDeletePercent => "max_delete_percent",
        }
    }
}

/// A refusal, with the message that tells the operator how to override it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The guard.
    pub guard: Guard,
    /// What happened and how to proceed.
    pub message: String,
}
