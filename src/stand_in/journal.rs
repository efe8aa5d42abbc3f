//! The journal (`invalidate_on_return`): the keys this process wrote
//! through stand-ins for one home node, bounded, until the home returns.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The most keys remembered per home node: writes past them are counted as
/// dropped and left to `stand_in_ttl`. About 100 bytes each with a short
/// key: a few megabytes per node at most.
pub(crate) const JOURNAL_KEYS: usize = 65_536;

/// The keys this process wrote through stand-ins for one home node: at
/// most [`JOURNAL_KEYS`] of them.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    keys: Mutex<HashSet<Box<[u8]>>>,
    /// Writes deleted at a return, and writes left to the TTL, so far.
    invalidated: AtomicU64,
    dropped: AtomicU64,
}

impl Journal {
    fn lock(&self) -> MutexGuard<'_, HashSet<Box<[u8]>>> {
        // Nothing panics while it is held.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers `key`: whether it is new, or `None` if there is no room.
    pub(crate) fn remember(&self, key: &[u8]) -> Option<bool> {
        let mut keys = self.lock();
        if keys.contains(key) {
            return Some(false);
        }
        (keys.len() < JOURNAL_KEYS).then(|| keys.insert(key.into()))
    }

    /// Keys remembered now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Everything remembered, leaving the journal empty.
    pub(crate) fn take(&self) -> Vec<Box<[u8]>> {
        self.lock().drain().collect()
    }

    /// Puts back what [`take`](Self::take) gave, as room allows; returns
    /// how many found none.
    pub(crate) fn restore(&self, keys: Vec<Box<[u8]>>) -> usize {
        keys.iter().filter(|key| self.remember(key).is_none()).count()
    }

    /// Counts `n` writes invalidated, or (`dropped`) left to the TTL.
    pub(crate) fn count(&self, n: usize, dropped: bool) {
        let counter = if dropped { &self.dropped } else { &self.invalidated };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Writes invalidated and dropped so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.invalidated.load(Ordering::Relaxed), self.dropped.load(Ordering::Relaxed))
    }
}
