//! A node's health, knowing nothing of tokio, bb8 or redis but the kinds of
//! failure: what a failure is (`kind.rs`) and the one classifier of an
//! outcome (`failure.rs`), the penalty box's decisions as data with time passed in
//! (`penalty.rs`), the events they send (`event.rs`), and the cell that
//! holds one node's health and applies the verdicts (`cell.rs`).

pub(crate) mod cell;
pub(crate) mod commons;
pub(crate) mod event;
pub(crate) mod failure;
pub(crate) mod kind;
pub(crate) mod penalty;
pub(crate) mod record;
