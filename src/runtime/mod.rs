//! A pool at run time, whichever the flavour: the table of nodes and the
//! routing policy's steps over it (`table.rs`), the core (the current
//! table, the one routing driver, membership: `core.rs`), the prober
//! (`prober.rs`), and what `status()` reports (`status.rs`).

pub(crate) mod core;
pub(crate) mod drain;
pub(crate) mod prober;
pub(crate) mod status;
pub(crate) mod table;
pub(crate) mod warm;
