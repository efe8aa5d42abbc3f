//! What a probe asks once connected, beyond the manager's own `is_valid`:
//! the question that boxed the node, and the user's own check.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;

use redis::{RedisFuture, Value};

use crate::health::failure::{ClassifyFailure, FailureKind, connect_failure, failure, one_line};
use crate::node::tracked::ConnectionAbilities;

/// What a probe found: nothing wrong, or the failure and what to log.
pub(crate) type Probe = Result<(), (FailureKind, String)>;

/// A check added with [`Builder::probe_with`](crate::Builder::probe_with).
pub(crate) type ProbeCheck<C> =
    std::sync::Arc<dyn for<'c> Fn(&'c mut C) -> RedisFuture<'c, ()> + Send + Sync>;

/// An error as a probe reports it: every error there is a failure.
pub(crate) fn failed<E: ClassifyFailure>(e: &E) -> (FailureKind, String) {
    (connect_failure(e).0, one_line(e))
}

/// Re-tests a node on a probe's connection: `ROLE` if a replica's refusal
/// boxed it (`master`), and a real read, which a server still loading
/// refuses and one that answers `PING` but hangs real commands does not
/// answer (within the response timeout); then the user's `check`, whose
/// every error is a [`FailureKind::Check`].
pub(crate) async fn retest<C: ConnectionAbilities + Send>(
    conn: &mut C,
    master: bool,
    check: Option<&ProbeCheck<C>>,
) -> Probe {
    if let Some(redis) = conn.redis() {
        let mut pipe = redis::pipe();
        if master {
            pipe.cmd("ROLE");
        }
        pipe.cmd("EXISTS").arg("fluster:probe");
        let replies = redis.req_packed_commands(&pipe, 0, pipe.len()).await;
        if let Some((kind, e)) = failure(&replies) {
            return Err((kind, one_line(e)));
        }
        let replies = replies.map_err(|e| failed(&e))?;
        if let Some(Value::Array(role)) = replies.first().filter(|_| master) {
            let role = match role.first() {
                Some(Value::BulkString(name)) => String::from_utf8_lossy(name).into_owned(),
                _ => "nothing".into(),
            };
            if role != "master" {
                return Err((FailureKind::ReadOnly, format!("not a master yet: ROLE says {role}")));
            }
        }
    }
    let Some(check) = check else { return Ok(()) };
    // A check that panics fails like one that errs: the probe still ends,
    // so the node is probed again on schedule (an unfinished probe would
    // keep it out for good).
    match AssertUnwindSafe(async { check(conn).await }).catch_unwind().await {
        Ok(outcome) => outcome.map_err(|e| (FailureKind::Check, one_line(&e))),
        Err(panic) => {
            Err((FailureKind::Check, format!("the probe check panicked: {}", said(&*panic))))
        }
    }
}

/// What a panic said, if it said it in words.
fn said(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or(panic.downcast_ref::<String>().map(String::as_str));
    one_line(&text.unwrap_or("(no message)"))
}

/// The one judgement of a probe's attempt, whichever the flavour: `None`
/// if it ran out of `timeout`, else its outcome.
pub(crate) fn judge<C>(
    outcome: Option<Result<C, (FailureKind, String)>>,
    timeout: Duration,
) -> Result<C, (FailureKind, String)> {
    outcome.unwrap_or_else(|| Err(timed_out(timeout)))
}

/// The failure of a check that did not answer within `timeout`.
pub(crate) fn timed_out(timeout: Duration) -> (FailureKind, String) {
    (FailureKind::Timeout, format!("no answer within {timeout:?}"))
}
