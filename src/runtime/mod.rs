//! A pool at run time, whichever the flavour: the core (its table of
//! nodes, the one routing driver, membership: `core.rs`), the prober
//! (`prober.rs`), and what `status()` reports (`status.rs`).

pub(crate) mod core;
pub(crate) mod prober;
pub(crate) mod status;
