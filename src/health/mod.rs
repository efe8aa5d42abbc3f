//! A node's health, with no I/O: what a failure is (`kind.rs`, pure) and
//! the one classifier of an outcome (`failure.rs`, which reads redis's
//! errors), the penalty box's decisions as data with time passed in
//! (`penalty.rs`, pure), the events they send (`event.rs`), its metric
//! handles (`record.rs`), what a pool's nodes share (`pool_wide.rs`), and the
//! cell that holds one node's health and applies the verdicts (`cell.rs`,
//! which wakes waiters with tokio's `Notify`).

pub(crate) mod cell;
pub(crate) mod event;
pub(crate) mod failure;
pub(crate) mod kind;
pub(crate) mod penalty;
pub(crate) mod pool_wide;
pub(crate) mod record;
