//! The crate's error type.

use std::time::Duration;

/// What can go wrong when building a pool or checking a connection out.
///
/// Messages name nodes by their name and URLs with credentials masked; no
/// error ever contains a password or user name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Every node is in the penalty box (or was boxed while this checkout
    /// tried it). Traffic resumes as soon as the reaper lets one back in.
    #[error("no healthy nodes: every node is in the penalty box")]
    NoHealthyNodes,

    /// The node's pool stayed busy for the whole checkout timeout. The node
    /// is not boxed for this: a busy node is not a failed one.
    #[error("timed out after {waited:?} waiting for a connection from node `{node}`")]
    Timeout {
        /// The node whose pool was busy.
        node: String,
        /// How long the checkout waited.
        waited: Duration,
    },

    /// A builder setting or node URL is invalid.
    #[error("invalid {setting}: {reason}")]
    Config {
        /// The setting or node at fault, e.g. `penalty_multiplier`.
        setting: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A Redis command failed; lets `?` carry `redis` errors in functions
    /// that return this type.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

impl Error {
    pub(crate) fn config(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}
