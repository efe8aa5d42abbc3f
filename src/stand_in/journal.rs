//! The journal (`invalidate_on_return`): the keys this process wrote
//! through stand-ins for one home node, bounded, until the home returns;
//! with a fleet, also kept on the stand-ins themselves, where every
//! process of the fleet finds them (a dead one's too).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use metrics::Counter;
use redis::{Cmd, Pipeline, Value};

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
    /// With a fleet: the key of the set, on each stand-in, of the keys
    /// every process wrote there for this home.
    shared: Option<Box<[u8]>>,
    /// With a fleet: how many keys those sets held when last counted.
    counted: AtomicU64,
}

impl Journal {
    /// The journal of the node `home`, which tells `counters`
    /// (remembered, invalidated, dropped) and, in the fleet named
    /// `fleet`, is kept on the stand-ins too.
    pub(crate) fn new(counters: [Counter; 3], fleet: Option<&str>, home: &str) -> Self {
        Journal {
            keys: Mutex::default(),
            invalidated: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            counters,
            shared: fleet
                .map(|fleet| format!("fluster:fleet:{fleet}:journal:{home}").into_bytes().into()),
            counted: AtomicU64::new(0),
        }
    }

    /// With a fleet: what records `key` on the stand-in that writes it, in
    /// the same round trip (the set's TTL follows the copies' cap, the
    /// latest write's being the longest-lived).
    pub(crate) fn record(&self, key: &[u8], ttl: Option<Duration>) -> impl Iterator<Item = Cmd> {
        let shared = self.shared.as_deref();
        let add = shared.map(|set| redis::cmd("SADD").arg(set).arg(key).to_owned());
        let expire = shared.zip(ttl).map(|(set, ttl)| expire(set, ttl));
        add.into_iter().chain(expire)
    }

    /// With a fleet: what takes, at once, the keys every process recorded
    /// on one stand-in for this home (`MULTI`, `SMEMBERS`, `DEL`, `EXEC`:
    /// a write recorded meanwhile lands in a set of its own, for the next
    /// return), read back by [`recorded`](Self::recorded).
    pub(crate) fn take_recorded(&self) -> Option<Pipeline> {
        let set = self.shared.as_deref()?;
        let mut pipe = redis::pipe();
        pipe.cmd("MULTI").cmd("SMEMBERS").arg(set).cmd("DEL").arg(set).cmd("EXEC");
        Some(pipe)
    }

    /// With a fleet: what counts the keys recorded on one stand-in.
    pub(crate) fn count_recorded(&self) -> Option<Cmd> {
        Some(redis::cmd("SCARD").arg(self.shared.as_deref()?).to_owned())
    }

    /// Notes how many keys the stand-ins hold records of, all told.
    pub(crate) fn counted(&self, keys: u64) {
        self.counted.store(keys, Ordering::Relaxed);
    }

    /// With a fleet: the keys the stand-ins held records of when last
    /// counted.
    pub(crate) fn recorded_len(&self) -> Option<u64> {
        self.shared.as_ref().map(|_| self.counted.load(Ordering::Relaxed))
    }

    /// The keys in the replies to [`take_recorded`](Self::take_recorded).
    pub(crate) fn recorded(replies: Vec<Value>) -> Vec<Box<[u8]>> {
        let Some(Value::Array(exec)) = replies.into_iter().last() else { return Vec::new() };
        let Some(Value::Array(members) | Value::Set(members)) = exec.into_iter().next() else {
            return Vec::new();
        };
        let key = |member| match member {
            Value::BulkString(key) => Some(key.into_boxed_slice()),
            _ => None,
        };
        members.into_iter().filter_map(key).collect()
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

/// `key`'s TTL becomes `ttl`, longer or shorter.
pub(crate) fn expire(key: &[u8], ttl: Duration) -> Cmd {
    let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut cmd = redis::cmd("PEXPIRE");
    cmd.arg(key).arg(millis);
    cmd
}
