//! Stand-in writes (feature room of `stand_in_ttl` and
//! `invalidate_on_return`): the command table that names the keys a write
//! touches, the cap sent with them, and the journal that remembers them.

pub(crate) mod cap;
pub(crate) mod journal;
pub(crate) mod table;
pub(crate) mod writes;
