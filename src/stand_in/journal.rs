//! The journal (`invalidate_on_return`): the keys this process wrote
//! through stand-ins for one home node, bounded, until the home returns;
//! the writes still in flight, which a return waits for; with a fleet,
//! also kept on the stand-ins themselves, where every process of the
//! fleet finds them (a dead one's too).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::{Cmd, Pipeline, Value};
use tokio::sync::Notify;

use super::relay::Relay;
use crate::health::record::{RelayCounters, StandInCounters};

/// The most keys remembered per home node: writes past them are counted as
/// dropped and left to `stand_in_ttl`. About 100 bytes each with a short
/// key: a few megabytes per node at most.
pub(crate) const JOURNAL_KEYS: usize = 65_536;

/// How long, at least, a fleet's records of stand-in writes outlive the
/// last look of a process that has their home boxed: each such process
/// stretches them to it at every count ([`keep_recorded`](Journal::keep_recorded),
/// about each second). Not the copies' cap: a home boxed for longer than
/// `stand_in_ttl` still has older copies of those keys, which its return
/// must delete even when the writers died meanwhile.
pub(crate) const RECORDS_OUTLIVE: Duration = Duration::from_secs(30);

/// What the journal keeps under its lock.
#[derive(Debug, Default)]
struct Kept {
    keys: HashSet<Box<[u8]>>,
    /// Stand-in writes in flight (sent, their replies not in), by the
    /// number each departed with: their keys.
    flights: BTreeMap<u64, Vec<Box<[u8]>>>,
    /// The number the next flight departs with.
    next: u64,
}

/// The keys this process wrote through stand-ins for one home node: at
/// most [`JOURNAL_KEYS`] of them, the writes of them still in flight, and
/// what became of them (counted, and told to its
/// `fluster_stand_in_writes_total` counters).
#[derive(Debug)]
pub(crate) struct Journal {
    kept: Mutex<Kept>,
    /// Told each time a flight lands.
    landed: Notify,
    /// Writes deleted at a return, and writes left to the TTL, so far.
    invalidated: AtomicU64,
    dropped: AtomicU64,
    /// Remembered, invalidated, dropped.
    counters: StandInCounters,
    /// With a fleet: the key of the set, on each stand-in, of the keys
    /// every process wrote there for this home.
    shared: Option<Box<[u8]>>,
    /// With a fleet: how many keys those sets held when last counted.
    counted: AtomicU64,
    /// With a fleet: the deletes relayed to the others while this process
    /// alone has the home boxed.
    relay: Option<Relay>,
}

/// A stand-in write in flight, from before its bytes are sent until its
/// reply is in (or its future dropped): until then its keys stay in the
/// journal whatever a return takes, and a return waits for it
/// ([`Journal::landed`]) before deleting, so that a write that reaches
/// its stand-in after a return's deletes is not forgotten by it.
#[derive(Debug)]
pub(crate) struct Flight {
    journal: Arc<Journal>,
    number: u64,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.journal.lock().flights.remove(&self.number);
        self.journal.landed.notify_waiters();
    }
}

impl Journal {
    /// The journal of the node `home`, which tells `counters`
    /// (remembered, invalidated, dropped) and, in the fleet named
    /// `fleet`, is kept on the stand-ins too and relays its writes (as the
    /// pool `teller`, telling `relayed`).
    pub(crate) fn new(
        counters: StandInCounters,
        fleet: Option<&str>,
        home: &str,
        (teller, relayed): (u64, RelayCounters),
    ) -> Self {
        Journal {
            kept: Mutex::default(),
            landed: Notify::new(),
            invalidated: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            counters,
            shared: fleet
                .map(|fleet| format!("fluster:fleet:{fleet}:journal:{home}").into_bytes().into()),
            counted: AtomicU64::new(0),
            relay: fleet.map(|fleet| Relay::new(fleet, home, teller, relayed)),
        }
    }

    /// With a fleet: the home's relay.
    pub(crate) fn relay(&self) -> Option<&Relay> {
        self.relay.as_ref()
    }

    /// With a fleet: what records `key` on the stand-in that writes it, in
    /// the same round trip. The set outlives the copies it lists by
    /// [`RECORDS_OUTLIVE`] at least (without a cap on the copies, it is
    /// kept as long as they are).
    pub(crate) fn record(&self, key: &[u8], ttl: Option<Duration>) -> impl Iterator<Item = Cmd> {
        let shared = self.shared.as_deref();
        let add = shared.map(|set| redis::cmd("SADD").arg(set).arg(key).to_owned());
        let expire = shared.zip(ttl).map(|(set, ttl)| expire(set, ttl.max(RECORDS_OUTLIVE)));
        add.into_iter().chain(expire)
    }

    /// With a fleet: what reads the keys every process recorded on one
    /// stand-in for this home, leaving them there (read back by
    /// [`recorded`](Self::recorded)): they are removed only once their
    /// copies are deleted ([`deletes`](Self::deletes)), so
    /// that another process returning the home meanwhile finds them too.
    pub(crate) fn read_recorded(&self) -> Option<Pipeline> {
        let mut pipe = redis::pipe();
        pipe.add_command(self.members()?);
        Some(pipe)
    }

    /// With a fleet: what reads the keys recorded on one stand-in for
    /// this home (its reply read back by [`keys_of`](Self::keys_of)).
    pub(crate) fn members(&self) -> Option<Cmd> {
        Some(redis::cmd("SMEMBERS").arg(self.shared.as_deref()?).to_owned())
    }

    /// What deletes `keys` on a node; with a fleet, on a stand-in where
    /// [`read_recorded`](Self::read_recorded) read `members`, it also
    /// removes them from its record in the same transaction (`MULTI` ...
    /// `EXEC`): a record goes only with its copies.
    pub(crate) fn deletes(&self, keys: &[Box<[u8]>], members: &[Box<[u8]>]) -> Pipeline {
        let mut pipe = redis::pipe();
        let set = self.shared.as_deref().filter(|_| !members.is_empty());
        if set.is_some() {
            pipe.cmd("MULTI");
        }
        for batch in keys.chunks(1_000) {
            pipe.cmd("DEL").arg(batch);
        }
        if let Some(set) = set {
            for batch in members.chunks(1_000) {
                pipe.cmd("SREM").arg(set).arg(batch);
            }
            pipe.cmd("EXEC");
        }
        pipe
    }

    /// With a fleet: what counts the keys recorded on one stand-in.
    pub(crate) fn count_recorded(&self) -> Option<Cmd> {
        Some(redis::cmd("SCARD").arg(self.shared.as_deref()?).to_owned())
    }

    /// With a fleet: what stretches the records on one stand-in to
    /// [`RECORDS_OUTLIVE`] from now, never shortening them, nor giving a
    /// TTL to records kept without one (`GT`): sent while the home is
    /// boxed, so records live as long as some process has it boxed.
    pub(crate) fn keep_recorded(&self) -> Option<Cmd> {
        let mut cmd = expire(self.shared.as_deref()?, RECORDS_OUTLIVE);
        cmd.arg("GT");
        Some(cmd)
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

    /// The keys in the replies to [`read_recorded`](Self::read_recorded).
    pub(crate) fn recorded(replies: Vec<Value>) -> Vec<Box<[u8]>> {
        replies.into_iter().next().map_or_else(Vec::new, Self::keys_of)
    }

    /// The keys in a reply to [`members`](Self::members).
    pub(crate) fn keys_of(reply: Value) -> Vec<Box<[u8]>> {
        let (Value::Array(members) | Value::Set(members)) = reply else { return Vec::new() };
        let key = |member| match member {
            Value::BulkString(key) => Some(key.into_boxed_slice()),
            _ => None,
        };
        members.into_iter().filter_map(key).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // Nothing panics while it is held.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A write of `keys` leaves for a stand-in: each is remembered, in one
    /// step with the flight (a return's [`take`](Self::take) sees both or
    /// neither), and stays so until the flight lands, whatever a return
    /// takes meanwhile. A key that finds no room is counted as dropped.
    pub(crate) fn depart(self: &Arc<Self>, keys: Vec<Box<[u8]>>) -> Flight {
        let mut kept = self.lock();
        let (mut new, mut lost) = (0, 0);
        for key in &keys {
            match Self::keep(&mut kept, key) {
                Some(true) => new += 1,
                Some(false) => {}
                None => lost += 1,
            }
        }
        let number = kept.next;
        kept.next += 1;
        kept.flights.insert(number, keys);
        drop(kept);
        self.counters.remembered.increment(new);
        self.settle(0, lost);
        Flight { journal: self.clone(), number }
    }

    /// The number the next flight will depart with: the flights before
    /// it are those in flight now.
    pub(crate) fn mark(&self) -> u64 {
        self.lock().next
    }

    /// Waits, at most `within`, until every flight that departed before
    /// `mark` has landed; whether they all did. One that did not is still
    /// remembered after any [`take`](Self::take).
    pub(crate) async fn landed(&self, mark: u64, within: Duration) -> bool {
        let all = async {
            loop {
                let landed = self.landed.notified();
                tokio::pin!(landed);
                // Registered before looking: a landing in between wakes it.
                landed.as_mut().enable();
                if self.lock().flights.first_key_value().is_none_or(|(&n, _)| n >= mark) {
                    return;
                }
                landed.await;
            }
        };
        tokio::time::timeout(within, all).await.is_ok()
    }

    fn keep(kept: &mut Kept, key: &[u8]) -> Option<bool> {
        if kept.keys.contains(key) {
            return Some(false);
        }
        (kept.keys.len() < JOURNAL_KEYS).then(|| kept.keys.insert(key.into()))
    }

    /// Keys remembered now.
    pub(crate) fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// The keys remembered now, left remembered.
    pub(crate) fn keys(&self) -> Vec<Box<[u8]>> {
        self.lock().keys.iter().cloned().collect()
    }

    /// Everything remembered, leaving in the journal only the keys of
    /// writes still in flight: deleted now, they may be written again when
    /// their bytes arrive, so the next return deletes them again.
    pub(crate) fn take(&self) -> Vec<Box<[u8]>> {
        let mut kept = self.lock();
        if kept.flights.is_empty() {
            return kept.keys.drain().collect();
        }
        let Kept { keys, flights, .. } = &mut *kept;
        let flying: HashSet<&[u8]> = flights.values().flatten().map(|key| &**key).collect();
        let taken: Vec<Box<[u8]>> = keys.iter().cloned().collect();
        keys.retain(|key| flying.contains(&**key));
        taken
    }

    /// Puts back what [`take`](Self::take) gave, as room allows; what
    /// finds none is counted as dropped.
    pub(crate) fn restore(&self, keys: Vec<Box<[u8]>>) {
        let lost = {
            let mut kept = self.lock();
            keys.iter().filter(|key| Self::keep(&mut kept, key).is_none()).count()
        };
        self.settle(0, lost);
    }

    /// Of the writes remembered, `invalidated` were deleted and `dropped`
    /// left to the TTL.
    pub(crate) fn settle(&self, invalidated: usize, dropped: usize) {
        self.invalidated.fetch_add(invalidated as u64, Ordering::Relaxed);
        self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        self.counters.invalidated.increment(invalidated as u64);
        self.counters.dropped.increment(dropped as u64);
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

#[cfg(test)]
mod tests;
