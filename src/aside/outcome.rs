//! How `aside`'s calls are counted: `fluster_aside_total{outcome}`.

use crate::health::record::ASIDE_OUTCOMES;
use crate::metrics::ASIDE_TOTAL;

/// What became of one `aside` call that did not hit, as counted: in the
/// order of [`ASIDE_OUTCOMES`].
#[derive(Clone, Copy)]
pub(super) enum Outcome {
    /// It held the lease and stored its value.
    Filled,
    /// It held the lease, but a `DEL` (or a take-over) voided it: its value
    /// was returned, not stored.
    Voided,
    /// It held the lease and its fill failed (returned an error or a value
    /// that cannot be stored, or panicked).
    Failed,
    /// It found a lease and got the value its holder stored.
    Waited,
    /// It found a lease that ended without a value, and took over.
    TookOver,
    /// `aside_early`: a background refill stored its value.
    Refreshed,
    /// `aside_early`: a background refill found the key written meanwhile
    /// (or gone), and stored nothing.
    RefreshVoided,
    /// `aside_early`: a background refill's fill failed, panicked, or
    /// outlived the lease: the key kept its value.
    RefreshFailed,
}

impl Outcome {
    /// Its `outcome` label, from the list the node's metrics register at
    /// zero.
    pub(super) fn as_str(self) -> &'static str {
        ASIDE_OUTCOMES[self as usize]
    }
}

pub(super) fn count(node: &str, outcome: Outcome) {
    metrics::counter!(ASIDE_TOTAL, "node" => node.to_owned(), "outcome" => outcome.as_str())
        .increment(1);
}
