//! A node's command table read from its server: `COMMAND`, on the first
//! connection made in each of the node's epochs (its first connect, and
//! the first after each return, for a server that restarted may be
//! another version), in either flavour. What it knows beyond the vendored
//! table (`command/`) is what its connections' caps, fences and session
//! rules use from then on. A server that refuses `COMMAND` (renamed, or
//! denied by an ACL) leaves the vendored table in place.
//!
//! A read that does not end with the server's answer (the reply timed
//! out, the connection failed, the server is loading, or the read's
//! future was dropped) leaves the table as it was (the vendored one until
//! a read succeeds), and the next connect of the epoch asks again. A
//! connection whose `COMMAND` reply did not come is never used: the reply
//! may still be on its way, and the next command on it would wait behind
//! it (or, on a blocking connection, read it).

use std::time::Duration;

use redis::{RedisResult, Value};

use crate::command::specs::served;
use crate::command::table::{Known, Table};
use crate::health::cell::HealthCell;
use crate::health::failure::failure;
use crate::node::tracked::ConnectionAbilities;

/// After a connect in `epoch`: reads the server's table on `conn` within
/// `within` (the response timeout, which a connection of the user's own
/// may not have), unless another connection of the epoch did (or is doing
/// it). Not Redis: the vendored table stays. Returns whether `conn` may be
/// used: `false` if its `COMMAND` went unanswered (then drop it).
#[must_use = "a connection whose COMMAND went unanswered must be dropped"]
pub(crate) async fn learn<C: ConnectionAbilities>(
    conn: &mut C,
    cell: &HealthCell,
    epoch: u64,
    within: Duration,
) -> bool {
    let Some(claim) = Claim::new(&cell.commands, epoch) else { return true };
    let Some(redis) = conn.redis() else { return true };
    let command = redis::cmd("COMMAND");
    let reply = tokio::time::timeout(within, redis.req_packed_command(&command)).await;
    let reply = reply.unwrap_or_else(|_| Err(timed_out()));
    learned(&reply, cell, claim)
}

/// [`learn`] on a blocking connection (its reads time out on their own).
#[cfg(feature = "r2d2")]
#[must_use = "a connection whose COMMAND went unanswered must be dropped"]
pub(crate) fn learn_blocking(conn: &mut redis::Connection, cell: &HealthCell, epoch: u64) -> bool {
    let Some(claim) = Claim::new(&cell.commands, epoch) else { return true };
    let reply = redis::cmd("COMMAND").query::<Value>(conn);
    learned(&reply, cell, claim)
}

/// The epoch's read, claimed: given back unless the server's answer was
/// taken ([`Claim::done`]), also when the read's future is dropped.
struct Claim<'a> {
    known: &'a Known,
    epoch: u64,
    done: bool,
}

impl<'a> Claim<'a> {
    fn new(known: &'a Known, epoch: u64) -> Option<Self> {
        known.claim(epoch).then_some(Claim { known, epoch, done: false })
    }

    /// The read is over: the epoch's table is settled.
    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.known.unclaim(self.epoch);
        }
    }
}

fn timed_out() -> redis::RedisError {
    let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "COMMAND timed out");
    timeout.into()
}

/// Takes the server's `reply` to `COMMAND` as the node's table; whether
/// the connection it came on may be used.
fn learned(reply: &RedisResult<Value>, cell: &HealthCell, claim: Claim<'_>) -> bool {
    if failure(reply).is_some() {
        // Not an answer (the connection failed or timed out, the server is
        // loading): the claim is given back, so the next connect asks
        // again; this connection goes, as any that saw a failure does. The
        // failure is the next command's to report.
        return false;
    }
    match reply {
        Ok(Value::ServerError(_)) | Err(_) => {
            tracing::info!(
                node = %cell.name,
                "the server refuses COMMAND: its writes are read by the vendored Redis 7.0 table"
            );
            cell.commands.learn(Table::default());
        }
        Ok(reply) => cell.commands.learn(Table::with(served(reply))),
    }
    claim.done();
    true
}
