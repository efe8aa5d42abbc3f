//! The journal (`invalidate_on_return`): the keys this process wrote
//! through stand-ins for one home node, bounded, until the home returns.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use metrics::Counter;

/// The most keys remembered per home node: writes past them are counted as
/// dropped and left to `stand_in_ttl`. About 100 bytes each with a short
/// key: a few megabytes per node at most.
pub(crate) const JOURNAL_KEYS: usize = 65_536;

/// The keys this process wrote through stand-ins for one home node: at
/// most [`JOURNAL_KEYS`] of them, and what became of them (counted, and
/// told to its `fluster_stand_in_writes_total` counters).
#[derive(Debug)]
pub(crate) struct Journal {
    keys: Mutex<HashSet<Box<[u8]>>>,
    /// Writes deleted at a return, and writes left to the TTL, so far.
    invalidated: AtomicU64,
    dropped: AtomicU64,
    /// Remembered, invalidated, dropped.
    counters: [Counter; 3],
}

impl Journal {
    /// A journal that tells `counters` (remembered, invalidated, dropped).
    pub(crate) fn new(counters: [Counter; 3]) -> Self {
        Journal {
            keys: Mutex::default(),
            invalidated: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            counters,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<Box<[u8]>>> {
        // Nothing panics while it is held.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers `key`, a write a stand-in took: whether it is new, or
    /// `None` if there is no room (then it is counted as dropped).
    pub(crate) fn remember(&self, key: &[u8]) -> Option<bool> {
        let remembered = self.keep(key);
        match remembered {
            Some(true) => self.counters[0].increment(1),
            Some(false) => {}
            None => self.settle(0, 1),
        }
        remembered
    }

    fn keep(&self, key: &[u8]) -> Option<bool> {
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

    /// Puts back what [`take`](Self::take) gave, as room allows; what
    /// finds none is counted as dropped.
    pub(crate) fn restore(&self, keys: Vec<Box<[u8]>>) {
        let lost = keys.iter().filter(|key| self.keep(key).is_none()).count();
        self.settle(0, lost);
    }

    /// Of the writes remembered, `invalidated` were deleted and `dropped`
    /// left to the TTL.
    pub(crate) fn settle(&self, invalidated: usize, dropped: usize) {
        self.invalidated.fetch_add(invalidated as u64, Ordering::Relaxed);
        self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        self.counters[1].increment(invalidated as u64);
        self.counters[2].increment(dropped as u64);
    }

    /// Writes invalidated and dropped so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.invalidated.load(Ordering::Relaxed), self.dropped.load(Ordering::Relaxed))
    }
}
