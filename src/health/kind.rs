//! What a failure is: [`FailureKind`], the kinds a node can fail by. Pure
//! (nothing but `std`): the crate's error type (`error.rs`) names it here
//! rather than through the crate root; the classifier that finds one in an
//! outcome is `failure.rs`, which re-exports it.

use std::fmt;

/// Why a node was judged to have failed.
///
/// Only these count against a node's health. A checkout that waited on a
/// busy pool and ordinary error replies (`WRONGTYPE`, `OOM`, `ERR ...`) do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The node refused the TCP connection: nothing listens there.
    Refused,
    /// An open connection was reset or closed by the node.
    Dropped,
    /// Any other I/O error.
    Io,
    /// The TLS handshake failed: an untrusted or invalid certificate, or
    /// a server that does not speak TLS.
    Tls,
    /// A connect or response timeout. A slow node is not a dead node: these
    /// box the node only after several in a row.
    Timeout,
    /// The node rejected the credentials (AUTH or ACL), or answered `NOAUTH`.
    Auth,
    /// The node has no database of the URL's number: the connection's
    /// `SELECT` was answered `ERR DB index is out of range` (a server has
    /// `databases` of them, 16 by default, numbered from 0). A wrong
    /// setting, as [`Auth`](Self::Auth) is.
    Database,
    /// The node answered `LOADING`: it is still loading its data set.
    Loading,
    /// The node answered `MASTERDOWN`: its master link is down.
    MasterDown,
    /// The node answered `READONLY`: it is a replica now (a failed-over
    /// master that came back, or a node reconfigured under the pool).
    ReadOnly,
    /// A connection could not be made, for a reason the connection manager
    /// did not classify further.
    Connect,
    /// The node answered with bytes that are not the protocol: not a Redis
    /// server, or a corrupted stream.
    Protocol,
    /// A probe's own check ([`Builder::probe_with`](crate::Builder::probe_with))
    /// kept the node out, or the node refused to delete the stand-in
    /// copies of its keys before its return (`invalidate_on_return`).
    Check,
}

impl FailureKind {
    /// Every kind, in label order: what the metrics create at zero.
    pub const ALL: [FailureKind; 13] = [
        FailureKind::Refused,
        FailureKind::Dropped,
        FailureKind::Io,
        FailureKind::Tls,
        FailureKind::Timeout,
        FailureKind::Auth,
        FailureKind::Database,
        FailureKind::Loading,
        FailureKind::MasterDown,
        FailureKind::ReadOnly,
        FailureKind::Connect,
        FailureKind::Protocol,
        FailureKind::Check,
    ];

    /// The label value used in metrics and logs, e.g. `"refused"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Dropped => "dropped",
            FailureKind::Io => "io",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Auth => "auth",
            FailureKind::Database => "database",
            FailureKind::Loading => "loading",
            FailureKind::MasterDown => "masterdown",
            FailureKind::ReadOnly => "readonly",
            FailureKind::Connect => "connect",
            FailureKind::Protocol => "protocol",
            FailureKind::Check => "check",
        }
    }

    /// Whether a node boxed for this is let back in only as a master: it
    /// refused as a replica does.
    pub(crate) fn wants_master(self) -> bool {
        matches!(self, FailureKind::ReadOnly | FailureKind::MasterDown)
    }

    /// Whether this failure boxes the node only after several in a row.
    pub fn is_timeout(self) -> bool {
        self == FailureKind::Timeout
    }

    /// Whether the node refused what the pool was told to use: its
    /// credentials ([`Auth`](Self::Auth), [`Tls`](Self::Tls)) or its URL's
    /// database ([`Database`](Self::Database)): a wrong setting, not an
    /// outage. `build` and `add_node` fail on it; at run time it is logged
    /// at `error` level, once per stay in the box.
    pub fn is_refusal(self) -> bool {
        matches!(self, FailureKind::Auth | FailureKind::Tls | FailureKind::Database)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
