//! A node's command table read from its server: `COMMAND`, on the first
//! connection made in each of the node's epochs (its first connect, and
//! the first after each return, for a server that restarted may be
//! another version), in either flavour. What it knows beyond the vendored
//! table (`command/`) is what its connections' caps, fences and session
//! rules use from then on. A server that refuses `COMMAND` (renamed, or
//! denied by an ACL) leaves the vendored table in place; one that did not
//! answer is asked again at the next connect.

use redis::{RedisResult, Value};

use crate::command::specs::served;
use crate::command::table::Table;
use crate::health::cell::HealthCell;
use crate::health::failure::failure;
use crate::node::tracked::ConnectionAbilities;

/// After a connect in `epoch`: reads the server's table on `conn`, unless
/// another connection of the epoch did (or is doing it). Not Redis: the
/// vendored table stays.
pub(crate) async fn learn<C: ConnectionAbilities>(conn: &mut C, cell: &HealthCell, epoch: u64) {
    if !cell.commands.claim(epoch) {
        return;
    }
    let Some(redis) = conn.redis() else { return };
    let reply = redis.req_packed_command(&redis::cmd("COMMAND")).await;
    learned(&reply, cell, epoch);
}

/// [`learn`] on a blocking connection.
#[cfg(feature = "r2d2")]
pub(crate) fn learn_blocking(conn: &mut redis::Connection, cell: &HealthCell, epoch: u64) {
    if !cell.commands.claim(epoch) {
        return;
    }
    let reply = redis::cmd("COMMAND").query::<Value>(conn);
    learned(&reply, cell, epoch);
}

/// Takes the server's `reply` to `COMMAND` as the node's table.
fn learned(reply: &RedisResult<Value>, cell: &HealthCell, epoch: u64) {
    if failure(reply).is_some() {
        // Not an answer (the connection failed, the server is loading):
        // the next connect asks again; the failure is the next command's.
        cell.commands.unclaim(epoch);
        return;
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
}
