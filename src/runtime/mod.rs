//! A pool at run time, whichever the flavour: the table of nodes and the
//! routing policy's routes over it (`table.rs`), the core (the current
//! table, membership: `core.rs`), the one single step and the one batch
//! step every path takes (`step.rs`), the prober's schedule (`prober.rs`),
//! a boxed node's return (`comeback.rs`), what `status()` reports
//! (`status.rs`), and the sweep of an added node's old copies (`sweep.rs`);
//! a resize's commands to the other copies of moved keys (`copies.rs`);
//! a node added (`added.rs`), drained (`drain.rs`, its steps run by `draining.rs`; a
//! connection's side, `drained.rs`) or in its warm window (`warm.rs`).

pub(crate) mod added;
pub(crate) mod comeback;
pub(crate) mod copies;
pub(crate) mod core;
pub(crate) mod drain;
pub(crate) mod drained;
pub(crate) mod draining;
pub(crate) mod migrate;
pub(crate) mod prober;
pub(crate) mod status;
pub(crate) mod step;
pub(crate) mod sweep;
pub(crate) mod table;
pub(crate) mod warm;
