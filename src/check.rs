//! What a probe asks once connected, beyond the manager's own `is_valid`:
//! the question that boxed the node, and the user's own check.

use std::any::Any;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Pipeline, RedisFuture, RedisResult, Value};

use crate::failure::{ClassifyFailure, FailureKind, connect_failure, one_line};

/// What a probe found: nothing wrong, or the failure and what to log.
pub(crate) type Probe = Result<(), (FailureKind, String)>;

/// A check added with [`Builder::probe_with`](crate::Builder::probe_with).
pub(crate) type ProbeCheck<C> =
    std::sync::Arc<dyn for<'c> Fn(&'c mut C) -> RedisFuture<'c, ()> + Send + Sync>;

/// An error as a probe reports it: every error there is a failure.
pub(crate) fn failed<E: ClassifyFailure>(e: &E) -> (FailureKind, String) {
    (connect_failure(e).0, one_line(e))
}

/// The questions that re-test a node: `ROLE` when a replica's refusal
/// boxed it (`master`), then a real read, which a server still loading
/// refuses and one that answers `PING` but hangs real commands never
/// answers (within the response timeout).
pub(crate) fn questions(master: bool) -> Pipeline {
    let mut pipe = redis::pipe();
    if master {
        pipe.cmd("ROLE");
    }
    pipe.cmd("EXISTS").arg("fluster:probe");
    pipe
}

/// The verdict on the [`questions`]' replies.
pub(crate) fn answers(replies: RedisResult<Vec<Value>>, master: bool) -> Probe {
    let replies = replies.map_err(|e| failed(&e))?;
    for reply in &replies {
        if let Value::ServerError(e) = reply
            && let Some(kind) = e.failure_kind()
        {
            return Err((kind, one_line(e)));
        }
    }
    let role = match replies.first() {
        Some(Value::Array(role)) if master => match role.first() {
            Some(Value::BulkString(name)) => String::from_utf8_lossy(name).into_owned(),
            _ => "nothing".into(),
        },
        _ => return Ok(()),
    };
    if role == "master" {
        return Ok(());
    }
    Err((FailureKind::ReadOnly, format!("not a master yet: ROLE says {role}")))
}

/// `conn` as a connection redis-rs multiplexes, if it is one
/// (`RedisManager`'s, bb8-redis's): what the pool's own commands to a node
/// (re-tests, invalidations) need. Another manager's connection is opaque
/// to the pool: it gets only its manager's `is_valid`.
pub(crate) fn redis_of<C: Any>(conn: &mut C) -> Option<&mut MultiplexedConnection> {
    (conn as &mut dyn Any).downcast_mut()
}

/// Whether connections of type `C` are ones [`redis_of`] finds.
pub(crate) fn speaks_redis<C: Any>() -> bool {
    std::any::TypeId::of::<C>() == std::any::TypeId::of::<MultiplexedConnection>()
}

/// Re-tests a node on a probe's connection `conn`: the [`questions`] if it
/// is a Redis one, then `check`.
pub(crate) async fn retest<C: Any + Send>(
    conn: &mut C,
    master: bool,
    check: Option<&ProbeCheck<C>>,
) -> Probe {
    if let Some(redis) = redis_of(conn) {
        let pipe = questions(master);
        answers(redis.req_packed_commands(&pipe, 0, pipe.len()).await, master)?;
    }
    match check {
        Some(check) => ask(check, conn).await,
        None => Ok(()),
    }
}

/// The user's `check` on `conn`: any error is its verdict,
/// [`FailureKind::Check`].
pub(crate) async fn ask<C>(check: &ProbeCheck<C>, conn: &mut C) -> Probe {
    check(conn).await.map_err(|e| (FailureKind::Check, one_line(&e)))
}
