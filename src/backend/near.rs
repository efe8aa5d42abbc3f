//! The near cache (`near_cache`): a node's repeated reads answered from
//! process memory, filled through the node's tracking connection and
//! emptied by the server's invalidations and by the pool's own writes.
//!
//! Two races decide whether it tells the truth, and each has one rule:
//!
//! - **A read in flight when its key changes.** Its reply holds the old
//!   value, and the server's invalidation can be handled before the reader
//!   gets to keep it. So a fill takes a *ticket* when it starts (the key's
//!   slot, made empty if there was none); an invalidation, a write or a
//!   lost connection removes the slot; the reply is kept only if the slot
//!   with that ticket is still there when it lands.
//! - **This process's own write.** The server's invalidation of a write
//!   comes after the write's reply, so a read right after it could still
//!   hit the old entry. So every write through the pool, on any of the
//!   node's connections, *fences* its keys before it is sent: their slots go,
//!   and until its reply has come back reads of them go to the server and
//!   keep nothing. A write whose keys the command table cannot name
//!   (`FLUSHALL`, a script without declared keys) empties the whole cache
//!   and fences every read the same way.
//!
//! Pure data and locks: the connection that sends is the caller's.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use lru::LruCache;
use redis::Value;

use crate::backend::reads::{GET, Read, identity, same};
use crate::stand_in::table::{Reach, written};

/// How a node's tracking connection is made, by the manager that knows
/// how (only [`RedisManager`](crate::RedisManager) does), handed to the
/// node when it is made: the cache's bound, and the connect, given the
/// cache its invalidations go to and the flag its closing sets.
pub(crate) struct Tracking<M: bb8::ManageConnection> {
    pub(crate) entries: NonZeroUsize,
    pub(crate) connect: TrackingConnect<M>,
}

/// The connect of a [`Tracking`].
pub(crate) type TrackingConnect<M> = Box<
    dyn Fn(
            Arc<NearCache>,
            Arc<AtomicBool>,
        ) -> BoxFuture<
            'static,
            Result<<M as bb8::ManageConnection>::Connection, <M as bb8::ManageConnection>::Error>,
        > + Send
        + Sync,
>;

/// Locks the entries are spread over, so tasks reading different keys do
/// not wait on each other.
const SHARDS: usize = 16;

/// The longest an entry is kept without the server's word that it still
/// holds: a bound for the rare key whose expiry the server reports late.
const MAX_AGE: Duration = Duration::from_secs(30 * 60);

/// The answer to a read before anything is sent.
#[derive(Debug)]
pub(crate) enum Look {
    /// From memory.
    Hit(Value),
    /// Ask the server, and keep the reply under these tickets (one per key).
    Fill(Vec<u64>),
    /// Ask the server and keep nothing: a write of the key is in flight.
    Pass,
}

/// One key's entries: the replies to each read of it, and the ticket its
/// fills were started under.
struct Slot {
    ticket: u64,
    expires: Instant,
    replies: Vec<(Box<[u8]>, Value)>,
}

struct Shard {
    slots: LruCache<Box<[u8]>, Slot>,
    /// Keys with writes in flight, and how many.
    writing: HashMap<Box<[u8]>, usize>,
    tickets: u64,
    /// Hits, misses and entries dropped.
    counts: [u64; 3],
}

impl Shard {
    /// Removes `key`'s slot, counting its entries as dropped.
    fn drop_slot(&mut self, key: &[u8]) {
        if let Some(slot) = self.slots.pop(key) {
            self.counts[2] += slot.replies.len() as u64;
        }
    }

    /// The reply of `key`'s read that `is` the one asked, if it is kept
    /// and not expired.
    fn reply(&mut self, key: &[u8], now: Instant, is: impl Fn(&[u8]) -> bool) -> Option<Value> {
        let slot = self.slots.get(key).filter(|slot| slot.expires > now)?;
        slot.replies.iter().find(|(id, _)| is(id)).map(|(_, value)| value.clone())
    }

    /// The ticket for a fill of `key`: its slot's, made empty if there was
    /// none (or it had expired).
    fn ticket(&mut self, key: &[u8], now: Instant) -> u64 {
        match self.slots.get(key) {
            Some(slot) if slot.expires > now => slot.ticket,
            _ => {
                self.drop_slot(key);
                self.tickets += 1;
                let slot =
                    Slot { ticket: self.tickets, expires: now + MAX_AGE, replies: Vec::new() };
                self.slots.push(key.into(), slot);
                self.tickets
            }
        }
    }
}

/// One node's near cache. It lives as long as the node: emptied, not
/// replaced, when its tracking connection is, so the fences of writes in
/// flight stay where readers look.
pub(crate) struct NearCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: lru::DefaultHasher,
    /// Writes in flight whose keys are not known: while any is, every read
    /// goes to the server.
    blind: AtomicUsize,
    /// Keys fenced now, over every shard: readers look for theirs only
    /// when there are some.
    fenced: AtomicUsize,
    bound: usize,
    /// The counts when last sampled, for the metrics.
    sampled: Mutex<[u64; 3]>,
}

impl std::fmt::Debug for NearCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache").field("bound", &self.bound).finish_non_exhaustive()
    }
}

impl NearCache {
    /// A cache of at most `entries` keys.
    pub(crate) fn new(entries: NonZeroUsize) -> Self {
        let per_shard =
            NonZeroUsize::new(entries.get().div_ceil(SHARDS)).unwrap_or(NonZeroUsize::MIN);
        let shard = || {
            Mutex::new(Shard {
                slots: LruCache::new(per_shard),
                writing: HashMap::new(),
                tickets: 0,
                counts: [0; 3],
            })
        };
        NearCache {
            shards: (0..SHARDS).map(|_| shard()).collect(),
            hasher: lru::DefaultHasher::default(),
            blind: AtomicUsize::new(0),
            fenced: AtomicUsize::new(0),
            bound: entries.get(),
            sampled: Mutex::default(),
        }
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        // Nothing panics while a shard is held.
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn all(&self) -> impl Iterator<Item = MutexGuard<'_, Shard>> {
        self.shards.iter().map(|shard| shard.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The reply to `GET key` if it is held and no write of the key is in
    /// flight: a hit, counted; on anything else nothing is done (no
    /// ticket, no miss counted), for the caller goes the ordinary way,
    /// which [`look`](Self::look)s.
    pub(crate) fn hit(&self, key: &[u8]) -> Option<Value> {
        let mut shard = self.shard(key);
        if self.is_fenced(&shard, key) {
            return None;
        }
        let value = shard.reply(key, Instant::now(), |id| id == GET)?;
        shard.counts[0] += 1;
        Some(value)
    }

    /// What to do with `read` (its command's words `words`): answer it, or
    /// fill it, or pass it on.
    pub(crate) fn look(&self, read: &Read<'_>, words: &[&[u8]]) -> Look {
        let now = Instant::now();
        let keys = read.keys();
        // Whether a write is in flight is asked under each key's lock, which
        // a fence takes too: either the fence comes first and the read
        // passes, or the read's ticket is there for the fence to void.
        if let Read::One(key) = read {
            // The common case, under one lock.
            let mut shard = self.shard(key);
            if self.is_fenced(&shard, key) {
                return Look::Pass;
            }
            if let Some(value) = shard.reply(key, now, |id| same(id, words.iter().copied())) {
                shard.counts[0] += 1;
                return Look::Hit(value);
            }
            shard.counts[1] += 1;
            return Look::Fill(vec![shard.ticket(key, now)]);
        }
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let mut shard = self.shard(key);
            if self.is_fenced(&shard, key) {
                return Look::Pass;
            }
            match shard.reply(key, now, |id| same(id, [&b"GET"[..], key].into_iter())) {
                Some(value) => values.push(value),
                None => break,
            }
        }
        if values.len() == keys.len() {
            self.shard(keys[0]).counts[0] += 1;
            return Look::Hit(Value::Array(values));
        }
        self.shard(keys[0]).counts[1] += 1;
        let mut tickets = Vec::with_capacity(keys.len());
        for key in keys {
            let mut shard = self.shard(key);
            if self.is_fenced(&shard, key) {
                return Look::Pass;
            }
            tickets.push(shard.ticket(key, now));
        }
        Look::Fill(tickets)
    }

    /// Whether a write of `key` (whose shard is held) is in flight.
    fn is_fenced(&self, shard: &Shard, key: &[u8]) -> bool {
        self.blind.load(Ordering::Acquire) > 0
            || (self.fenced.load(Ordering::Acquire) > 0 && shard.writing.contains_key(key))
    }

    /// Keeps the server's `replies` to `read` (its words `words`), filled
    /// under `tickets`, with each key's `PTTL` in `ttls`: each only if its
    /// slot still holds its ticket, so nothing that changed meanwhile is
    /// kept.
    pub(crate) fn keep(
        &self,
        read: &Read<'_>,
        words: &[&[u8]],
        tickets: &[u64],
        replies: Vec<Value>,
        ttls: &[Value],
    ) {
        let now = Instant::now();
        let (keys, id) = match read {
            Read::One(key) => (std::slice::from_ref(key), identity(words.iter().copied())),
            Read::Many(keys) => (&keys[..], identity([&b"GET"[..], b""].into_iter())),
        };
        for (((key, ticket), value), ttl) in keys.iter().zip(tickets).zip(replies).zip(ttls) {
            let expires = match ttl {
                _ if matches!(value, Value::ServerError(_)) => continue,
                // Milliseconds left; -1: none, -2: no such key.
                Value::Int(ms) if *ms > 0 => now + Duration::from_millis(*ms as u64).min(MAX_AGE),
                Value::Int(-1 | -2) => now + MAX_AGE,
                _ => continue,
            };
            let mut shard = self.shard(key);
            let Some(slot) = shard.slots.peek_mut(*key).filter(|slot| slot.ticket == *ticket)
            else {
                continue;
            };
            slot.expires = slot.expires.min(expires);
            match slot.replies.iter_mut().find(|(stored, _)| *stored == id) {
                Some((_, stored)) => *stored = value,
                None => {
                    // Most keys are read one way: no room for three more.
                    slot.replies.reserve_exact(1);
                    slot.replies.push((id.clone(), value));
                }
            }
        }
    }

    /// The server says `key` changed.
    pub(crate) fn invalidate(&self, key: &[u8]) {
        self.shard(key).drop_slot(key);
    }

    /// Drops every entry: the server said everything changed, or the
    /// tracking connection that kept them up to date is gone.
    pub(crate) fn clear(&self) {
        for mut shard in self.all() {
            let dropped: usize = shard.slots.iter().map(|(_, slot)| slot.replies.len()).sum();
            shard.counts[2] += dropped as u64;
            shard.slots.clear();
        }
    }

    /// Fences what the command of `words` writes until the returned guard
    /// is dropped (after its reply, or when the caller gave up on it):
    /// `None` if it writes nothing.
    pub(crate) fn fence<'k>(self: &Arc<Self>, words: &[&'k [u8]]) -> Option<Fence<'k>> {
        let (keys, reach) = written(words);
        if reach != Reach::Listed {
            self.blind.fetch_add(1, Ordering::AcqRel);
            self.clear();
            return Some(Fence { cache: self.clone(), keys: Vec::new(), blind: true });
        }
        if keys.is_empty() {
            return None;
        }
        self.fenced.fetch_add(keys.len(), Ordering::AcqRel);
        for key in &keys {
            let mut shard = self.shard(key);
            *shard.writing.entry((*key).into()).or_default() += 1;
            shard.drop_slot(key);
        }
        Some(Fence { cache: self.clone(), keys, blind: false })
    }

    /// Hits, misses and entries dropped since it was made, or (`sample`)
    /// since the last sample; the entries held; the bound.
    pub(crate) fn figures(&self, sample: bool) -> ([u64; 3], u64, u64) {
        let (mut counts, mut held) = ([0u64; 3], 0u64);
        for shard in self.all() {
            counts.iter_mut().zip(shard.counts).for_each(|(sum, n)| *sum += n);
            held += shard.slots.iter().filter(|(_, slot)| !slot.replies.is_empty()).count() as u64;
        }
        if sample {
            let mut sampled = self.sampled.lock().unwrap_or_else(|e| e.into_inner());
            let since = std::array::from_fn(|i| counts[i].saturating_sub(sampled[i]));
            *sampled = counts;
            counts = since;
        }
        (counts, held, self.bound as u64)
    }
}

/// A write's keys, fenced while it is in flight.
pub(crate) struct Fence<'k> {
    cache: Arc<NearCache>,
    keys: Vec<&'k [u8]>,
    blind: bool,
}

impl Drop for Fence<'_> {
    fn drop(&mut self) {
        let cache = &self.cache;
        if self.blind {
            cache.blind.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        for key in &self.keys {
            let mut shard = cache.shard(key);
            if let Some(count) = shard.writing.get_mut(*key) {
                *count -= 1;
                if *count == 0 {
                    shard.writing.remove(*key);
                }
            }
        }
        cache.fenced.fetch_sub(self.keys.len(), Ordering::AcqRel);
    }
}
