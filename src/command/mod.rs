//! What a command is, in one pure room: its words read once, whatever
//! carries them (`words.rs`); the keys a write touches and how far it
//! reaches, by a node's own command table over the vendored one
//! (`table.rs`, the server's key specs in `specs.rs`, Redis 7.0's
//! `commands.txt`); what a read asks of a near cache (`read.rs`); and what
//! a command does to a session (`session.rs`). Every other room asks here;
//! nothing here does I/O or knows the rooms above.

pub(crate) mod read;
pub(crate) mod session;
pub(crate) mod specs;
pub(crate) mod table;
pub(crate) mod words;
