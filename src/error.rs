//! The crate's error type.

use std::time::Duration;

use crate::health::kind::FailureKind;

/// What can go wrong when building a pool or checking a connection out.
///
/// Messages name nodes by their name and URLs with credentials masked; no
/// error ever contains a password or user name.
///
/// `Debug` is the message too, then each [`source`](std::error::Error::source)
/// the message does not already tell, so `?` out of a `main` that returns
/// `Result<(), Box<dyn std::error::Error>>` prints words, not a structure
/// (as `anyhow` does); `{:#?}` adds the variant's name.
#[derive(Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Every node is in the penalty box (or was boxed while this checkout
    /// tried it). Traffic resumes as soon as the prober lets one back in.
    #[error(
        "no healthy nodes: every node is in the penalty box \
         (ShardedPool::status shows each node's last error)"
    )]
    NoHealthyNodes,

    /// `build` found fewer healthy nodes than
    /// [`Builder::require_healthy`](crate::Builder::require_healthy) asks for.
    #[error("{healthy} of {required} required nodes are healthy; down: {}", describe(.down))]
    NotEnoughHealthy {
        /// Nodes that answered.
        healthy: usize,
        /// Nodes required.
        required: usize,
        /// Each node that did not answer, with its error (never credentials).
        down: Vec<(String, String)>,
    },

    /// The node's pool stayed busy for the whole checkout timeout. The node
    /// is not boxed for this: a busy node is not a failed one.
    #[error("timed out after {waited:?} waiting for a connection from node `{node}`")]
    Timeout {
        /// The node whose pool was busy.
        node: String,
        /// How long the checkout waited.
        waited: Duration,
    },

    /// The key's node is in the penalty box and the pool's failover policy
    /// is [`Failover::FailFast`](crate::Failover::FailFast).
    #[error("node `{node}` is in the penalty box (failover policy: fail fast)")]
    NodeDown {
        /// The key's node.
        node: String,
    },

    /// The node failed while this checkout waited on it, and was kept in
    /// rotation because the cap on boxed nodes
    /// ([`Builder::max_boxed_fraction`](crate::Builder::max_boxed_fraction))
    /// is reached.
    #[error(
        "node `{node}` failed ({failure}) and stays in rotation: too many nodes are boxed already"
    )]
    NodeFailed {
        /// The node that failed.
        node: String,
        /// How it failed.
        failure: FailureKind,
    },

    /// The pool was closed with [`ShardedPool::close`](crate::ShardedPool::close).
    #[error("the pool is closed")]
    Closed,

    /// A builder setting or node URL is invalid.
    #[error("invalid {setting}: {reason}")]
    Config {
        /// The setting or node at fault, e.g. `penalty_multiplier`.
        setting: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The fill of [`aside`](crate::ShardedPool::aside) returned this
    /// error of yours (any error that converts into
    /// `Box<dyn Error + Send + Sync>`, `anyhow::Error` included), kept as
    /// this error's [`source`](std::error::Error::source); nothing was
    /// stored, and the lease was given back.
    #[error("the fill failed: {0}")]
    Fill(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),

    /// A command fluster sent itself (in [`aside`](crate::ShardedPool::aside),
    /// `get_cached`, `publish`, `mget`, `mset`, `del`, a sharded pipeline,
    /// a transaction's `WATCH`) failed on the node `node`. `source` is
    /// `redis`'s own error, untouched: its `kind()`, `is_timeout()`,
    /// `is_connection_dropped()` and the rest answer as for any command
    /// (also through [`Error::redis_error`]).
    #[error("node `{node}`: {source}")]
    Command {
        /// The node the command was sent to.
        node: String,
        /// The command's error.
        source: redis::RedisError,
    },

    /// A node refused the pool's credentials when `build` (or
    /// [`add_node`](crate::ShardedPool::add_node)) probed it (with
    /// [`probe_at_build`](crate::Builder::probe_at_build), the default): a wrong
    /// password or user name (`WRONGPASS`, `NOAUTH`), or a TLS handshake
    /// that failed (a certificate the pool does not trust, a client
    /// certificate the server wants and refuses). A wrong password is not
    /// an outage: the pool is not built, whatever
    /// [`require_healthy`](crate::Builder::require_healthy) says. A node
    /// that merely cannot be reached starts in the penalty box instead.
    #[error("node `{node}` {}: {reason} ({})", refusal(.failure, .reason).0, refusal(.failure, .reason).1)]
    Credentials {
        /// The node that refused.
        node: String,
        /// [`FailureKind::Auth`](crate::FailureKind::Auth) or
        /// [`FailureKind::Tls`](crate::FailureKind::Tls).
        failure: crate::FailureKind,
        /// The node's or the TLS library's words (never credentials).
        reason: String,
    },

    /// [`drain_node`](crate::ShardedPool::drain_node) could not move the
    /// keys of `node` to `target` (`MIGRATE` connects server to server: a
    /// target the draining server cannot reach answers `IOERR`), or could
    /// not go on (no `target`: the draining node itself failed, or the
    /// drain was ruled out), or could not start (another drain runs, a
    /// warm window is open, or the last drain's moves are in doubt).
    /// Failed at its check, before any key moved, the node stays in the
    /// pool, serving.
    #[error("draining node `{node}`{}: {reason}", into_target(target.as_deref()))]
    Drain {
        /// The node being drained.
        node: String,
        /// The node its keys were going to, if the failure was that one's.
        target: Option<String>,
        /// What went wrong (the server's words).
        reason: String,
    },

    /// A Redis command failed; lets `?` carry `redis` errors in functions
    /// that return this type.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// What a refusal of the credentials was, and what to check.
fn refusal(failure: &crate::FailureKind, reason: &str) -> (&'static str, &'static str) {
    match failure {
        crate::FailureKind::Tls => (
            "failed the TLS handshake",
            "check its certificate and the pool's `tls_root_certificates` and \
             `tls_client_certificate`",
        ),
        _ if reason.contains("NOAUTH") => (
            "refused the credentials",
            "the server wants a password: give it in the node's URL, \
             `redis://[user]:password@host:port`",
        ),
        _ => ("refused the credentials", "check the user name and password in its URL"),
    }
}

/// So that `?` on [`redis::from_redis_value`] works in functions that
/// return this type.
impl From<redis::ParsingError> for Error {
    fn from(e: redis::ParsingError) -> Self {
        Error::Redis(e.into())
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let message = self.to_string();
        if f.alternate() {
            write!(f, "Error::{}: ", self.variant())?;
        }
        f.write_str(&message)?;
        let mut source = std::error::Error::source(self);
        let mut first = true;
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                f.write_str(if first { "\n\nCaused by:" } else { "" })?;
                write!(f, "\n    {text}")?;
                first = false;
            }
            source = cause.source();
        }
        Ok(())
    }
}

fn describe(down: &[(String, String)]) -> String {
    let each: Vec<String> =
        down.iter().map(|(node, error)| format!("`{node}` ({error})")).collect();
    each.join(", ")
}

impl Error {
    /// The node this error happened on, where fluster knows it: a
    /// command's node ([`Error::Command`]), or the node of a checkout
    /// ([`Error::Timeout`], [`Error::NodeDown`], [`Error::NodeFailed`]) or
    /// of a refusal ([`Error::Credentials`]).
    pub fn node(&self) -> Option<&str> {
        match self {
            Error::Command { node, .. }
            | Error::Credentials { node, .. }
            | Error::Timeout { node, .. }
            | Error::NodeDown { node }
            | Error::NodeFailed { node, .. } => Some(node),
            _ => None,
        }
    }

    /// `redis`'s own error, if this is one ([`Error::Redis`], or
    /// [`Error::Command`] with its node): so retry logic asks
    /// `is_timeout()`, `is_connection_dropped()` or `kind()` of it,
    /// whichever variant carried it.
    ///
    /// ```no_run
    /// # async fn run(pool: fluster::ShardedPool) {
    /// # use std::time::Duration;
    /// let fill = || async { Ok::<_, std::io::Error>("Ada".to_owned()) };
    /// match pool.aside("user:42", Duration::from_secs(300), fill).await {
    ///     Ok(name) => println!("{name}"),
    ///     Err(e) if e.redis_error().is_some_and(|r| r.is_timeout()) => {
    ///         eprintln!("slow node {:?}: {e}", e.node()) // e.g. node `cache-b`: timed out
    ///     }
    ///     Err(e) => eprintln!("{e}"),
    /// }
    /// # }
    /// ```
    pub fn redis_error(&self) -> Option<&redis::RedisError> {
        match self {
            Error::Command { source, .. } | Error::Redis(source) => Some(source),
            _ => None,
        }
    }

    fn variant(&self) -> &'static str {
        match self {
            Error::NoHealthyNodes => "NoHealthyNodes",
            Error::NotEnoughHealthy { .. } => "NotEnoughHealthy",
            Error::Timeout { .. } => "Timeout",
            Error::NodeDown { .. } => "NodeDown",
            Error::NodeFailed { .. } => "NodeFailed",
            Error::Closed => "Closed",
            Error::Config { .. } => "Config",
            Error::Fill(_) => "Fill",
            Error::Command { .. } => "Command",
            Error::Credentials { .. } => "Credentials",
            Error::Drain { .. } => "Drain",
            Error::Redis(_) => "Redis",
        }
    }

    /// A bad node URL's error, named by the node's place in the list (and
    /// its name): the URL itself may show little but its address.
    pub(crate) fn at_node(self, place: usize, total: usize, name: Option<&str>) -> Self {
        let name = name.map(|name| format!(", `{name}`")).unwrap_or_default();
        match self {
            Error::Config { setting, reason } => Error::Config {
                setting: format!("{setting} (node #{place} of {total}{name})"),
                reason,
            },
            other => other,
        }
    }

    pub(crate) fn config(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config { setting: setting.into(), reason: reason.into() }
    }

    /// What `build` or `add_node` fails with when its probe found `node`
    /// refusing what the pool was told to use ([`FailureKind::is_refusal`]):
    /// [`Error::Config`] for a database its server lacks, else
    /// [`Error::Credentials`] with `reason`, the node's words.
    pub(crate) fn refusal(node: &str, failure: FailureKind, reason: Option<&str>) -> Self {
        match failure {
            FailureKind::Database => Error::config(
                format!("database of node `{node}`"),
                "its server has fewer databases than the node URL's number asks for (`SELECT` \
                 answered `ERR DB index is out of range`): a server has `databases` of them \
                 (16 by default), numbered from 0",
            ),
            _ => Error::Credentials {
                node: node.to_owned(),
                failure,
                reason: reason.unwrap_or("no reason given").to_owned(),
            },
        }
    }
}

/// Names the node of a command fluster sent itself: `query.on(node)?`.
pub(crate) trait OnNode<T> {
    /// The command's error as [`Error::Command`] on `node`.
    fn on(self, node: &str) -> Result<T, Error>;
}

impl<T> OnNode<T> for redis::RedisResult<T> {
    fn on(self, node: &str) -> Result<T, Error> {
        self.map_err(|source| Error::Command { node: node.to_owned(), source })
    }
}

/// `Error::Drain`'s target, as its message names it.
fn into_target(target: Option<&str>) -> String {
    target.map(|target| format!(" into node `{target}`")).unwrap_or_default()
}
