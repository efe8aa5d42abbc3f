//! Stand-in writes (the room of `stand_in_ttl` and `invalidate_on_return`):
//! the command table that names the keys a write touches (`table.rs`), the
//! caps sent with them and where they go on the wire (`writes.rs`), and the
//! journal that remembers them until their home returns (`journal.rs`).

pub(crate) mod journal;
pub(crate) mod table;
pub(crate) mod writes;
