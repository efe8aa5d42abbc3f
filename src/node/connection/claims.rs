//! The keys moved here that the writes queued in a transaction opened by
//! hand (`MULTI` on a pooled connection) claimed on this node, kept by
//! the connection until the transaction ends (`node/warm.rs` has the
//! protocol). The writes run at `EXEC`, which may come after the claim's
//! guard expired ([`MARKER_MS`](crate::node::warm::MARKER_MS)) and a reader's marker landed: a queued
//! `APPEND` would edit the marker, which its reader then gives back, and
//! the write is lost. So the keys are claimed again
//! ([`Elder::reclaim`]) before `EXEC` is sent (`send.rs`).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use redis::RedisResult;

use crate::node::warm::{Elder, Moved};

/// The keys a transaction's queued writes claimed here, each with the
/// resize that claimed it. Empty unless a transaction opened by hand wrote
/// a moved key; dropped with the connection.
#[derive(Default, Clone)]
pub(crate) struct Claims(Vec<(Arc<dyn Elder>, Keys)>);

/// Keys, each its bytes.
type Keys = Vec<Vec<u8>>;

impl Claims {
    /// Whether none is kept.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps those of `keys` (a queued write's, just claimed by `elder`'s
    /// [`forget`](Elder::forget)) that moved here, once each.
    pub(crate) fn keep(&mut self, elder: &Arc<dyn Elder>, keys: &[Vec<u8>]) {
        let here = keys.iter().filter(|key| elder.moved(key) == Moved::Here);
        for key in here {
            let at = match self.0.iter().position(|(kept, _)| Arc::ptr_eq(kept, elder)) {
                Some(at) => at,
                None => {
                    self.0.push((Arc::clone(elder), Vec::new()));
                    self.0.len() - 1
                }
            };
            let kept = &mut self.0[at].1;
            if !kept.contains(key) {
                kept.push(key.clone());
            }
        }
    }

    /// Every kept key claimed again, in one future: the first refusal.
    pub(crate) fn again(&self) -> BoxFuture<'static, RedisResult<()>> {
        let claims: Vec<_> =
            self.0.iter().map(|(elder, keys)| elder.reclaim(keys.clone())).collect();
        Box::pin(async move {
            for claim in claims {
                claim.await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::warm::Stub;

    /// Keys that begin with `h` moved here; the others away.
    fn half() -> Arc<dyn Elder> {
        Arc::new(Stub(|key| if key.starts_with(b"h") { Moved::Here } else { Moved::Away }))
    }

    #[test]
    fn a_transaction_keeps_the_keys_moved_here_once_each_by_resize() {
        let (one, other) = (half(), half());
        let mut claims = Claims::default();
        claims.keep(&one, &[b"away".to_vec()]);
        assert!(claims.is_empty(), "a key moved away is not claimed here");
        claims.keep(&one, &[b"h1".to_vec(), b"away".to_vec(), b"h2".to_vec()]);
        claims.keep(&one, &[b"h1".to_vec()]);
        claims.keep(&other, &[b"h3".to_vec()]);
        let kept: Vec<_> = claims.0.iter().map(|(_, keys)| keys.clone()).collect();
        assert_eq!(kept, vec![vec![b"h1".to_vec(), b"h2".to_vec()], vec![b"h3".to_vec()]]);
    }
}
