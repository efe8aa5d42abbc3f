//! The torture run's parts that need no server: the history a run records
//! and the checker that judges it against the README's Guarantees.
//!
//! The program itself (`src/main.rs`) starts the world, drives the
//! workload and the nemesis, and hands the history to [`check::check`].

#![deny(missing_docs)]

pub mod check;
pub mod history;
