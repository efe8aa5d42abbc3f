//! The one classifier of what an operation's outcome says about its node:
//! errors *and* error replies, as a [`FailureKind`] (what a failure is:
//! `kind.rs`, re-exported here).
//!
//! redis 1.x hands an error reply back as `Ok(Value::ServerError)` from
//! `req_packed_command` (and one per command inside a pipeline's replies),
//! so [`failure`] looks inside the `Ok` too: a node answering `LOADING` to
//! every command is boxed by ordinary traffic, not only by a probe.

use std::fmt;
use std::time::Duration;

use redis::{ErrorKind, RedisError, RedisResult, ServerError, Value};

pub use super::kind::FailureKind;
use crate::route::NodeName;

/// What the `error` event of a refusal ([`FailureKind::is_refusal`]) says:
/// met by the probe of `build` or `add_node` (`at_start`), which then
/// fails and serves no key elsewhere, or at run time.
pub(crate) fn refusal(kind: FailureKind, at_start: bool) -> &'static str {
    match (kind, at_start) {
        (FailureKind::Database, false) => {
            "the node has no database of its URL's number \
            (`SELECT` answered `ERR DB index is out of range`); its keys are served by other \
            nodes until it has"
        }
        (FailureKind::Database, true) => {
            "the node has no database of its URL's number \
            (`SELECT` answered `ERR DB index is out of range`); `build` (or `add_node`) fails \
            with Error::Config"
        }
        (_, false) => {
            "the node refuses the pool's credentials (password, user name or TLS \
            certificate); its keys are served by other nodes until they work again"
        }
        (_, true) => {
            "the node refuses the pool's credentials (password, user name or TLS \
            certificate); `build` (or `add_node`) fails with Error::Credentials"
        }
    }
}

/// The event of a node just boxed by `kind` (`error`, the failure in one
/// line), seen where `seen` says, staying out `wait` at `level`: a
/// refusal at `error` level, saying what follows ([`refusal`]); any other
/// failure at `warn`.
pub(crate) fn boxed(
    node: &NodeName,
    (kind, error): (FailureKind, &str),
    seen: Seen,
    (wait, level): (Duration, u32),
) {
    let at_start = seen == Seen::AtStart;
    let start = if at_start { "node down at start; boxed" } else { "node boxed" };
    let refused = refusal(kind, at_start);
    match kind {
        _ if kind.is_refusal() && at_start => {
            tracing::error!(%node, failure = %kind, %error, "node refused at start: {refused}");
        }
        _ if kind.is_refusal() => {
            tracing::error!(%node, failure = %kind, %error, ?wait, level, "{start}: {refused}");
        }
        FailureKind::Protocol => tracing::warn!(%node, failure = %kind, %error, ?wait, level,
            "{start}: it answered bytes that are not the Redis protocol (no Redis server at the \
            node URL's address, or a corrupted stream)"),
        _ => tracing::warn!(%node, failure = %kind, %error, ?wait, level, "{start}"),
    }
}

/// Where a failure was seen: how much evidence boxes the node, and what
/// the log says of it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Seen {
    /// On a connection of a running pool: timeouts count toward the threshold.
    Running,
    /// By a check of an up node (a fleet's news): one timeout is enough.
    Checked,
    /// By the probe of `build` or `add_node`: one timeout is enough, and a
    /// refusal fails the call ([`Error::Credentials`](crate::Error::Credentials)).
    AtStart,
}

/// Tells which errors of a connection manager are node failures.
///
/// Implemented for [`redis::RedisError`], so [`RedisManager`](crate::RedisManager),
/// `bb8_redis::RedisConnectionManager` and any manager whose error is a
/// `RedisError` can be sharded, and for [`std::io::Error`]. Implement it for
/// your own manager's error type to shard other connections.
///
/// Return `None` for errors that say nothing about the node's health, such
/// as ordinary error replies. Every error while *connecting* counts as a
/// failure; `None` there is recorded as [`FailureKind::Connect`].
pub trait ClassifyFailure: fmt::Display {
    /// The kind of node failure this error shows, if any.
    fn failure_kind(&self) -> Option<FailureKind>;
}

/// For managers whose connections are plain sockets.
impl ClassifyFailure for std::io::Error {
    fn failure_kind(&self) -> Option<FailureKind> {
        use std::io::ErrorKind as K;
        Some(match self.kind() {
            K::ConnectionRefused => FailureKind::Refused,
            K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::NotConnected => FailureKind::Dropped,
            K::TimedOut | K::WouldBlock => FailureKind::Timeout,
            _ => FailureKind::Io,
        })
    }
}

/// A failure as reported: its kind and what to log.
pub(crate) type Failure<'a> = (FailureKind, &'a dyn fmt::Display);

/// An error's text on one line, for status and logs: some errors (a reply
/// that is not RESP, say) quote the bytes they met, line breaks and all.
pub(crate) fn one_line(error: &dyn fmt::Display) -> String {
    error.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a failed connect (or probe) reports: every error there is a
/// failure, [`FailureKind::Connect`] when the manager did not say which.
pub(crate) fn connect_failure<E: ClassifyFailure>(e: &E) -> Failure<'_> {
    (e.failure_kind().unwrap_or(FailureKind::Connect), e)
}

/// The failure an error reply's code shows, if it is one of a node's.
/// `OOM`, `WRONGTYPE`, `ERR` and the rest say nothing about its health.
fn reply_kind(code: &str) -> Option<FailureKind> {
    match code {
        "LOADING" => Some(FailureKind::Loading),
        "MASTERDOWN" => Some(FailureKind::MasterDown),
        "READONLY" => Some(FailureKind::ReadOnly),
        "NOAUTH" | "WRONGPASS" => Some(FailureKind::Auth),
        _ => None,
    }
}

impl ClassifyFailure for RedisError {
    fn failure_kind(&self) -> Option<FailureKind> {
        if self.is_connection_refusal() {
            Some(FailureKind::Refused)
        } else if self.is_timeout() {
            Some(FailureKind::Timeout)
        } else if self.kind() == ErrorKind::AuthenticationFailed {
            Some(FailureKind::Auth)
        } else if self.kind() == ErrorKind::Parse {
            // Only the wire reaches here: conversions of a reply to a
            // caller's type fail after the pool has seen the reply.
            Some(FailureKind::Protocol)
        } else if let Some(kind) = self.code().and_then(reply_kind) {
            Some(kind)
        } else if is_missing_database(self) {
            Some(FailureKind::Database)
        } else if is_tls_failure(self) {
            Some(FailureKind::Tls)
        } else if self.is_connection_dropped() {
            Some(FailureKind::Dropped)
        } else if self.is_io_error() {
            Some(FailureKind::Io)
        } else {
            None
        }
    }
}

impl ClassifyFailure for ServerError {
    fn failure_kind(&self) -> Option<FailureKind> {
        reply_kind(self.code())
    }
}

/// Whether the error is `redis`'s for a connection whose `SELECT` of the
/// URL's database was answered `ERR DB index is out of range`: its words,
/// not only the reply's (a caller's own `SELECT 99` is an ordinary error
/// reply, never a node's failure).
fn is_missing_database(e: &RedisError) -> bool {
    e.detail().is_some_and(|detail| detail.starts_with("DB index is out of range"))
        && e.to_string().starts_with("Redis server refused to switch database")
}

/// The replies an operation returned: one, or a pipeline's.
pub(crate) trait Replies {
    /// Every reply, in order.
    fn replies(&self) -> &[Value];
    /// The same, to change.
    fn replies_mut(&mut self) -> &mut [Value];
}

impl Replies for Value {
    fn replies(&self) -> &[Value] {
        std::slice::from_ref(self)
    }
    fn replies_mut(&mut self) -> &mut [Value] {
        std::slice::from_mut(self)
    }
}

impl Replies for Vec<Value> {
    fn replies(&self) -> &[Value] {
        self
    }
    fn replies_mut(&mut self) -> &mut [Value] {
        self
    }
}

/// The node failure a Redis operation's outcome shows, with what to log:
/// its error, or the first error reply inside its `Ok` that is a node's.
pub(crate) fn failure<V: Replies>(result: &RedisResult<V>) -> Option<Failure<'_>> {
    match result {
        Err(e) => e.failure_kind().map(|kind| (kind, e as &dyn fmt::Display)),
        Ok(values) => values.replies().iter().find_map(|value| match value {
            Value::ServerError(e) => e.failure_kind().map(|kind| (kind, e as &dyn fmt::Display)),
            _ => None,
        }),
    }
}

/// Whether the error is a TLS failure (a handshake or certificate problem):
/// a `rustls::Error` somewhere in its chain of causes. `redis` keeps I/O
/// errors as `Arc<dyn Error>`, which has to be looked through by hand.
#[cfg(feature = "tls")]
fn is_tls_failure(e: &RedisError) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut cause = std::error::Error::source(e);
    while let Some(error) = cause {
        let error: &(dyn std::error::Error + 'static) = match error.downcast_ref::<Shared>() {
            Some(shared) => &**shared,
            None => error,
        };
        let inner = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        if error.is::<rustls::Error>() || inner.is_some_and(|i| i.is::<rustls::Error>()) {
            return true;
        }
        cause = error.source();
    }
    false
}

#[cfg(not(feature = "tls"))]
fn is_tls_failure(_: &RedisError) -> bool {
    false
}
