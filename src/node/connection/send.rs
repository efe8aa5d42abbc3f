//! The one body of both connections' `ConnectionLike`: a command's
//! stand-in caps, near-cache fences and reads, a warm window's read-through,
//! sent on the wire, its outcome reported and its replies made what
//! fluster's readers see.

use std::sync::Arc;

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::backend::near::{Fence, Look};
use crate::backend::resp2::{self};
use crate::command::read::{self, Read};
use crate::command::words::words;
use crate::health::failure::{Replies, failure};
use crate::node::lease::unmarked;
use crate::node::tracked::{ConnectionAbilities, NodeManager};
use crate::node::warm::{self, Elder, Moved, Phase, Plan};
use crate::stand_in::writes::Capped;

use super::claims::Claims;
use super::observed::Observed;
use super::{Connection, SharedConnection, only_reply, own_reply};

/// The stand-in's `capped` commands in one round trip (see [`Capped`]);
/// the caller's own replies.
async fn capped<O: Observed>(conn: &mut O, capped: Capped) -> RedisResult<Vec<Value>> {
    let values = conn.wire().req_packed_commands(&capped.pipe, capped.offset, capped.count).await;
    let quiet = conn.quiet();
    // `capped` came from the connection's stand-in, which is still there.
    let Some(stand_in) = conn.stand_in() else { return values };
    match values {
        Ok(values) => {
            let replies = stand_in.replies(capped, values);
            if let Some(late) = stand_in.late(quiet) {
                // Its copies are capped and remembered: a delete lost
                // here leaves them to those.
                let _ = conn.wire().send_packed(&late).await;
            }
            Ok(replies)
        }
        Err(e) => {
            stand_in.lost();
            Err(e)
        }
    }
}

/// Sends `cmd` (with its stand-in's records and caps), and reports the
/// outcome.
async fn send<O: Observed>(conn: &mut O, cmd: &Cmd) -> RedisResult<Value> {
    let wrapped = conn.wrap((std::iter::once(cmd), false), (0, 1));
    conn.arm();
    let result = match wrapped {
        None => conn.wire().send_packed(cmd).await,
        // Rare, and kept out of the common path's future (boxed).
        Some(wrapped) => Box::pin(capped(conn, wrapped)).await.and_then(only_reply),
    };
    let result = judged(conn, result);
    // Read once the reply is in, not when the command was sent: a write
    // in flight across a resize's switch sees it.
    let elder = conn.elder();
    if elder.is_some() || conn.in_transaction() {
        Box::pin(after(conn, elder.as_deref(), std::iter::once(cmd))).await;
    }
    result.map(|value| resp2::reply(cmd, value, conn.resp2()))
}

/// Once the replies of `cmds` are in, while keys move: the keys they wrote
/// that moved away from this node have their new homes' copies deleted
/// before the caller sees the replies (a connection taken before the
/// switch, or a command in flight across it, wrote the old home: a copy
/// read through earlier must not outlive the write); inside a transaction,
/// once it ends, its commands queued before the switch included (kept
/// without a resize, judged at the end). A write that names no key ends
/// the read-through. Whatever the outcome: a write that timed out may
/// have landed.
async fn after<'c, O: Observed>(
    conn: &mut O,
    elder: Option<&dyn Elder>,
    cmds: impl Iterator<Item = &'c Cmd>,
) {
    let mut away = Vec::new();
    for cmd in cmds {
        let words: smallvec::SmallVec<[&[u8]; 4]> = words(cmd).collect();
        let Some(elder) = elder else {
            let (keys, _) = conn.commands().written(&words);
            away.extend(keys.into_iter().map(<[u8]>::to_vec));
            continue;
        };
        match warm::plan(&words, elder, conn.commands(), Phase::After) {
            Plan::Write(keys) => away.extend(keys),
            Plan::Unnamed => elder.end(),
            Plan::Get(_) | Plan::Plain => {}
        }
    }
    let away = conn.settle(away);
    // A transaction that ended with no resize on: nothing to forget.
    let Some(elder) = elder else { return };
    let away: Vec<Vec<u8>> =
        away.into_iter().filter(|key| elder.moved(key) == Moved::Away).collect();
    if !away.is_empty() {
        // The write landed: what it can do now is delete the copies.
        let _ = conn.resized(elder.forget(away)).await;
    }
}

/// The end of every command sent for a caller: its outcome reported to
/// its node, its replies as fluster's readers see them (an `aside` lease
/// reads as a miss: see [`lease`](crate::node::lease)).
fn judged<O: Observed, V: Replies>(conn: &mut O, result: RedisResult<V>) -> RedisResult<V> {
    conn.observe(failure(&result));
    unmarked(result)
}

/// One command, admitted (and, with a near cache, looked up or fenced)
/// before its future is built: a connection without a near cache sends it
/// in one future, and a near-cache hit is answered by a future that holds
/// nothing but the value.
pub(crate) fn one<'a, O: Observed>(conn: &'a mut O, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
    if let Err(refused) = conn.admit(std::iter::once(cmd)) {
        return Box::pin(std::future::ready(Err(refused)));
    }
    if let Some((claims, false)) = conn.claims()
        && !claims.is_empty()
    {
        // Rare: the end of a transaction opened by hand whose writes
        // claimed moved keys, whether or not the resize is still on.
        let claims = std::mem::take(claims);
        return Box::pin(ends(conn, claims, cmd));
    }
    if let Some(elder) = conn.elder() {
        // Rare (keys moving: a node added warm, in its window, or
        // drained): kept out of the common path.
        return Box::pin(warmed(conn, elder, cmd));
    }
    admitted(conn, cmd)
}

/// The command that ends a transaction opened by hand whose queued writes
/// claimed keys moved here (`claims`): before `EXEC` goes, they are
/// claimed again, so the guard is fresh when the writes run however long
/// ago they were queued (a reader's marker set meanwhile is deleted, and
/// none is set until they ran); `DISCARD` runs none of them.
async fn ends<O: Observed>(conn: &mut O, claims: Claims, cmd: &Cmd) -> RedisResult<Value> {
    let discards = words(cmd).next().is_some_and(|name| name.eq_ignore_ascii_case(b"DISCARD"));
    if !discards {
        reclaimed(conn, &claims).await?;
    }
    match conn.elder() {
        Some(elder) => Box::pin(warmed(conn, elder, cmd)).await,
        None => admitted(conn, cmd).await,
    }
}

/// `claims` made again before the transaction they were made for runs.
/// If they cannot be, the transaction is discarded instead (`DISCARD`
/// sent in place of what would run it): none of its writes runs, and the
/// caller gets the claim's error.
async fn reclaimed<O: Observed>(conn: &mut O, claims: &Claims) -> RedisResult<()> {
    // Armed meanwhile: the session already follows the commands not yet
    // sent (an `EXEC`), so a caller that drops this future leaves a
    // connection its pool must not hand on (its transaction still open).
    conn.arm();
    let Err(refused) = conn.resized(claims.again()).await else { return Ok(()) };
    let discarded = conn.wire().send_packed(&redis::cmd("DISCARD")).await;
    let _ = judged(conn, discarded);
    Err(refused)
}

/// [`one`] once admitted.
fn admitted<'a, O: Observed>(conn: &'a mut O, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
    let Some(cache) = conn.near() else { return Box::pin(send(conn, cmd)) };
    let words: smallvec::SmallVec<[&[u8]; 4]> = words(cmd).collect();
    if conn.reads_near()
        && let Some(read) = read::read(&words)
    {
        return match cache.look(&read, &words) {
            // Counted against Tokio's budget, as a socket read is: a task
            // looping over hits still lets the others run.
            Look::Hit(value) => Box::pin(async move {
                tokio::task::coop::consume_budget().await;
                Ok(value)
            }),
            Look::Pass => Box::pin(send(conn, cmd)),
            Look::Fill(tickets) => Box::pin(fill(conn, cmd, read, words.to_vec(), tickets)),
        };
    }
    // A write's keys are fenced until its reply is in (or its future is
    // dropped); a write queued in a transaction, until the transaction's.
    let fence = cache.fence(&words);
    let fence = fence.and_then(|fence| conn.queue(fence));
    Box::pin(async move {
        let _fence = fence;
        send(conn, cmd).await
    })
}

/// One command on a connection while keys move (a node added warm, in
/// its window, or a drain): a plain `GET` of a key moved here that misses
/// is read through from its old home; a write of keys moved here deletes
/// their old copies first; a write that names no key ends the
/// read-through (`node/warm.rs`); a write of keys moved away is
/// [`send`]'s, after the reply. A moved key's `GET` passes the near cache
/// by.
async fn warmed<O: Observed>(conn: &mut O, elder: Arc<dyn Elder>, cmd: &Cmd) -> RedisResult<Value> {
    let words: smallvec::SmallVec<[&[u8]; 4]> = words(cmd).collect();
    match warm::plan(&words, &*elder, conn.commands(), Phase::Before) {
        Plan::Plain => admitted(conn, cmd).await,
        Plan::Write(keys) => {
            moved_first(conn, &elder, keys).await?;
            admitted(conn, cmd).await
        }
        Plan::Unnamed => {
            elder.end();
            admitted(conn, cmd).await
        }
        Plan::Get(key) => {
            let value = send(conn, cmd).await?;
            if value != Value::Nil {
                return Ok(value);
            }
            Box::pin(read_through(conn, &*elder, key)).await
        }
    }
}

/// Before a write of `keys` moved here, their old copies moved or deleted
/// ([`Elder::forget`]). Queued in a transaction opened by hand, its keys
/// are kept, to be claimed again at its `EXEC`.
async fn moved_first<O: Observed>(
    conn: &mut O,
    elder: &Arc<dyn Elder>,
    keys: Vec<Vec<u8>>,
) -> RedisResult<()> {
    let queued = matches!(conn.claims(), Some((_, true))).then(|| keys.clone());
    conn.resized(elder.forget(keys)).await?;
    if let (Some(keys), Some((claims, _))) = (queued, conn.claims()) {
        claims.keep(elder, &keys);
    }
    Ok(())
}

/// A moved key's miss on its new home: a marker there, the old home's
/// value and TTL, then the copy if the marker is still there. The value
/// read is returned whether or not it was copied; any failure of the
/// read-through reads as the miss it started from.
async fn read_through<O: Observed>(
    conn: &mut O,
    elder: &dyn Elder,
    key: &[u8],
) -> RedisResult<Value> {
    let token = warm::token();
    // The clock starts before the marker's round trip to the new home, so
    // the copy's TTL below also loses that trip: the copy's own `SET`
    // reaches the new home later than the old home answered by at most
    // the new home's one-way trip, which the marker's round trip bounds.
    let asked = std::time::Instant::now();
    let marked = own(conn, &warm::marker(key, &token), key).await?;
    // The old home is asked now, after the marker: a write that could not
    // delete its copy there has ruled it out before our marker went in.
    let Some(read) = elder.read(key) else {
        if marked != Value::Nil {
            own(conn, &warm::copy(key, &token, None), key).await?;
        }
        return Ok(Value::Nil);
    };
    let (value, ttl) = conn.resized(read).await.unwrap_or((Value::Nil, -2));
    if marked == Value::Nil && value != Value::Nil {
        // Another reader's marker, or a write since the miss: return what
        // the old home held then, copy nothing.
        return Ok(value);
    }
    // What was left when asked, less the time since the marker was sent:
    // the copy never outlives the original (a stand-in's capped copy
    // keeps its cap).
    let left = if ttl > 0 { ttl - asked.elapsed().as_millis() as i64 } else { ttl };
    let copied = match &value {
        Value::BulkString(bytes) if left == -1 || left > 0 => Some((bytes.as_slice(), left)),
        _ => None,
    };
    let copy = own(conn, &warm::copy(key, &token, copied), key).await?;
    Ok(match (copied, copy) {
        // Nothing to copy, and the key holds something else than the
        // marker (or never held it): what it holds now. A writer may have
        // moved the old value here (`MIGRATE`) after the miss and before
        // the old home was read: the old home's nil is not the value.
        (None, now @ (Value::Nil | Value::BulkString(_) | Value::ServerError(_))) => now,
        _ => value,
    })
}

/// One of the pool's own commands on `key` (a marker, a copy) on the
/// caller's connection: the key fenced in the near cache while it is in
/// flight, the outcome judged.
async fn own<O: Observed>(conn: &mut O, cmd: &Cmd, key: &[u8]) -> RedisResult<Value> {
    let _fence = conn.near().and_then(|cache| cache.fence(&[b"DEL".as_slice(), key]));
    conn.arm();
    let result = conn.wire().send_packed(cmd).await;
    judged(conn, result)
}

/// A near-cache miss: `cmd` and each key's `PTTL` in one round trip, the
/// replies kept under `tickets`.
async fn fill<O: Observed>(
    conn: &mut O,
    cmd: &Cmd,
    read: Read<'_>,
    words: Vec<&[u8]>,
    tickets: Vec<u64>,
) -> RedisResult<Value> {
    let mut pipe = redis::pipe();
    pipe.add_command(cmd.clone());
    for key in read.keys() {
        pipe.cmd("PTTL").arg(key);
    }
    conn.arm();
    let result = conn.wire().req_packed_commands(&pipe, 0, pipe.len()).await;
    let mut values = judged(conn, result)?;
    let ttls = values.split_off(1);
    let value = resp2::reply(cmd, values.pop().unwrap_or(Value::Nil), conn.resp2());
    let replies = match (&read, &value) {
        (Read::Many(_), Value::Array(items)) => items.clone(),
        (Read::Many(_), _) => Vec::new(),
        (Read::One(_), value) => vec![value.clone()],
    };
    if let Some(cache) = conn.near() {
        cache.keep(&read, &words, &tickets, replies, &ttls);
    }
    own_reply(value)
}

/// A pipeline: sent with its caps, each write fenced in the near cache
/// while it is in flight (reads inside a pipeline go to the server).
pub(crate) async fn many<O: Observed>(
    conn: &mut O,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    conn.admit(pipeline.cmd_iter())?;
    if let Some((claims, open)) = conn.claims()
        && !claims.is_empty()
    {
        // A transaction opened by hand whose writes claimed moved keys:
        // the pipeline may hold its `EXEC`, so they are claimed again
        // first (kept while it stays open).
        let claims = if open { claims.clone() } else { std::mem::take(claims) };
        reclaimed(conn, &claims).await?;
    }
    if let Some(elder) = conn.elder() {
        let mut moved: Vec<Vec<u8>> = Vec::new();
        for cmd in pipeline.cmd_iter() {
            let words: Vec<_> = words(cmd).collect();
            match warm::plan(&words, &*elder, conn.commands(), Phase::Before) {
                Plan::Write(keys) => moved.extend(keys),
                Plan::Unnamed => elder.end(),
                Plan::Get(_) | Plan::Plain => {}
            }
        }
        if !moved.is_empty() {
            moved_first(conn, &elder, moved).await?;
        }
    }
    let fences: Vec<Fence<&[u8]>> = match conn.near() {
        Some(cache) => pipeline
            .cmd_iter()
            .filter_map(|cmd| cache.fence(&words(cmd).collect::<Vec<_>>()))
            .collect(),
        None => Vec::new(),
    };
    let _fences: Vec<_> = fences.into_iter().filter_map(|fence| conn.queue(fence)).collect();
    let wrapped = conn.wrap((pipeline.cmd_iter(), pipeline.is_transaction()), (offset, count));
    conn.arm();
    let result = match wrapped {
        None => conn.wire().req_packed_commands(pipeline, offset, count).await,
        Some(wrapped) => capped(conn, wrapped).await,
    };
    let result = judged(conn, result);
    let elder = conn.elder();
    if elder.is_some() || conn.in_transaction() {
        after(conn, elder.as_deref(), pipeline.cmd_iter()).await;
    }
    result.map(|values| resp2::replies(pipeline, offset, values, conn.resp2()))
}

/// The one body of both connections' [`ConnectionLike`]: sends on the
/// wire and reports the outcome.
macro_rules! connection_like {
    ($($conn:ident),*) => {$(
        impl<M> ConnectionLike for $conn<M>
        where
            M: NodeManager,
            M::Connection: ConnectionLike + Send,
        {
            fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
                one(self, cmd)
            }

            fn req_packed_commands<'a>(
                &'a mut self,
                pipeline: &'a Pipeline,
                offset: usize,
                count: usize,
            ) -> RedisFuture<'a, Vec<Value>> {
                Box::pin(many(self, pipeline, offset, count))
            }

            fn get_db(&self) -> i64 {
                self.conn.get_db()
            }
        }
    )*};
}

connection_like!(Connection, SharedConnection);
