//! Stand-in writes (the room of `stand_in_ttl` and `invalidate_on_return`):
//! the caps sent with them (their keys named by the serving node's command
//! table, in `command/`) and where they go on the wire, the caller's
//! transaction followed (`writes.rs`), and the journal that remembers them,
//! in flight and after, until their home returns (`journal.rs`), and with a
//! fleet the deletes relayed to the others while it alone has the home
//! boxed (`relay.rs`).

pub(crate) mod journal;
pub(crate) mod relay;
pub(crate) mod writes;
