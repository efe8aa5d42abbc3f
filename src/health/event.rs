//! [`NodeEvent`]: a change in a node's state, as `events()` sends it.

use std::time::Duration;

use crate::health::failure::FailureKind;
use crate::route::NodeName;

/// A change in a node's state, from [`events`](crate::ShardedPool::events).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The node entered the penalty box.
    #[non_exhaustive]
    Boxed {
        /// The node.
        node: NodeName,
        /// The failure that boxed it.
        kind: FailureKind,
        /// How long before it is probed.
        wait: Duration,
        /// The back-off level of this stay (above 0 for a node that flaps).
        level: u32,
    },
    /// A probe of the boxed node failed; it stays boxed for `wait` more.
    #[non_exhaustive]
    ProbeFailed {
        /// The node.
        node: NodeName,
        /// What the probe saw.
        kind: FailureKind,
        /// How long before the next probe.
        wait: Duration,
    },
    /// The node answered a probe and is back in rotation (its keys come
    /// home over the warm-up, if there is one).
    #[non_exhaustive]
    Returned {
        /// The node.
        node: NodeName,
    },
    /// Before the node's return, the copies this process wrote through
    /// stand-ins for its keys were deleted (`invalidate_on_return`).
    #[non_exhaustive]
    Invalidated {
        /// The node.
        node: NodeName,
        /// Keys deleted.
        keys: usize,
    },
    /// The node's warm-up is over: all its keys go to it again.
    #[non_exhaustive]
    Warm {
        /// The node.
        node: NodeName,
    },
    /// The node joined the pool.
    #[non_exhaustive]
    Added {
        /// The node.
        node: NodeName,
    },
    /// The node left the pool.
    #[non_exhaustive]
    Removed {
        /// The node.
        node: NodeName,
    },
    /// Another process of the fleet ([`fleet`](crate::Builder::fleet))
    /// told news of the node that this process did not know, and it
    /// checks for itself: a probe soon for [`News::Returned`] while it has
    /// the node boxed, a check (its own evidence) for [`News::Boxed`]
    /// while it has the node up.
    #[non_exhaustive]
    Heard {
        /// The node the news is about.
        node: NodeName,
        /// What was told.
        news: News,
    },
    /// This process deleted `keys` keys on the node that another process
    /// of the fleet, which alone has the node boxed, wrote to stand-ins
    /// and relayed (with `invalidate_on_return`): readers of the node now
    /// miss them instead of reading older values.
    #[non_exhaustive]
    Relayed {
        /// The node the keys were deleted on (their home).
        node: NodeName,
        /// Keys deleted.
        keys: usize,
    },
}

/// What one process of a fleet tells the others about a node: a hint,
/// never a verdict (each process checks for itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum News {
    /// The teller boxed the node.
    Boxed,
    /// The teller let the node back in.
    Returned,
}

impl News {
    /// The news as the `news` label of `fluster_fleet_news_total` shows
    /// it, and as it travels: `"boxed"` or `"returned"`.
    pub fn as_str(self) -> &'static str {
        match self {
            News::Boxed => "boxed",
            News::Returned => "returned",
        }
    }
}
