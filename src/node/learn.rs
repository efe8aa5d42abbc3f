//! A node's command table read from its server: `COMMAND`, on the first
//! connection made in each of the node's epochs (its first connect, and
//! the first after each return, for a server that restarted may be
//! another version), in either flavour. What it knows beyond the vendored
//! table (`command/`) is what its connections' caps, fences and session
//! rules use from then on. A server that refuses `COMMAND` (renamed, or
//! denied by an ACL) leaves the vendored table in place.
//!
//! A read that ends without the server's answer (the reply timed out,
//! the connection failed, the server is loading) leaves the table as it
//! was (the vendored one until a read succeeds), and the next connect of
//! the epoch asks again. A read whose future was dropped (its connect was
//! left by a checkout race, or a timeout around it) keeps the epoch's
//! claim: the vendored table stands until the node's next epoch. Giving
//! it back made every raced connect ask again, and parsing the ~90 KB
//! reply that often under load delayed every other task on the runtime
//! (`tests/chaos.rs` saw commands take 900 ms against a 250 ms timeout). A
//! connection whose `COMMAND` reply did not come is never used: the reply
//! may still be on its way, and the next command on it would wait behind
//! it (or, on a blocking connection, read it).

use std::time::Duration;

use redis::{RedisResult, Value};

use crate::command::specs::served;
use crate::command::table::Table;
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
    let Some(redis) = conn.redis() else { return true };
    if !cell.commands.claim(epoch) {
        return true;
    }
    let command = redis::cmd("COMMAND");
    let reply = tokio::time::timeout(within, redis.req_packed_command(&command)).await;
    let reply = reply.unwrap_or_else(|_| Err(timed_out()));
    learned(&reply, cell, epoch)
}

/// [`learn`] on a blocking connection (its reads time out on their own).
#[cfg(feature = "r2d2")]
#[must_use = "a connection whose COMMAND went unanswered must be dropped"]
pub(crate) fn learn_blocking(conn: &mut redis::Connection, cell: &HealthCell, epoch: u64) -> bool {
    if !cell.commands.claim(epoch) {
        return true;
    }
    let reply = redis::cmd("COMMAND").query::<Value>(conn);
    learned(&reply, cell, epoch)
}

fn timed_out() -> redis::RedisError {
    let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "COMMAND timed out");
    timeout.into()
}

/// Takes the server's `reply` to `COMMAND` as the node's table; whether
/// the connection it came on may be used.
fn learned(reply: &RedisResult<Value>, cell: &HealthCell, epoch: u64) -> bool {
    if failure(reply).is_some() {
        // Not an answer (the connection failed or timed out, the server is
        // loading): the claim is given back, so the next connect asks
        // again; this connection goes, as any that saw a failure does. The
        // failure is the next command's to report.
        cell.commands.unclaim(epoch);
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
    true
}
