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
//!   and fences every read the same way. A write queued in a transaction
//!   (`MULTI` ... `EXEC` sent one command at a time) runs at `EXEC`, which
//!   names no key: its fence is held by its connection until `EXEC`'s (or
//!   `DISCARD`'s) reply, or the connection's end.
//!
//! What the server never announces to a tracking client (`SWAPDB`) is
//! seen by the heartbeat's [`watch`](NearCache::watch); [`MAX_AGE`]
//! bounds the rest. The bound counts replies (one per distinct read of a
//! key), spread exactly over the shards ([`entries`](super::entries)).
//!
//! Pure data and locks: the connection that sends is the caller's.

use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use redis::{RedisResult, Value};

use crate::backend::entries::{Counts, Shard};
use crate::backend::resp2::Doubles;
use crate::command::read::{GET, Read, hash_of, hash_of_words, identity, same};
use crate::command::table::{Known, Reach};

/// How a node's tracking connection is made, by the manager that knows
/// how (only [`RedisManager`](crate::RedisManager) does), handed to the
/// node when it is made: the cache's bound, the connect (given the cache
/// its invalidations go to and the flag its closing sets), and the
/// heartbeat's question on it ([`NearCache::watch`]).
pub(crate) struct Tracking<M: bb8::ManageConnection> {
    pub(crate) entries: NonZeroUsize,
    pub(crate) connect: TrackingConnect<M>,
    pub(crate) watch: TrackingWatch<M>,
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

/// The heartbeat's question on a tracking connection: the server's
/// [`WATCHED`] section of `INFO`, which the cache given reads
/// ([`NearCache::watch`]); the reply, to be judged.
pub(crate) type TrackingWatch<M> = Box<
    dyn Fn(
            &<M as bb8::ManageConnection>::Connection,
            Arc<NearCache>,
        ) -> BoxFuture<'static, RedisResult<Value>>
        + Send
        + Sync,
>;

/// Locks the entries are spread over (at most; fewer for a small bound),
/// so tasks reading different keys do not wait on each other.
const SHARDS: usize = 16;

/// The longest an entry is kept without the server's word that it still
/// holds: a bound for a change no invalidation announces and the
/// heartbeat's [`watch`](NearCache::watch) cannot see (a server that
/// refuses `INFO`, a module's command).
const MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// The section of `INFO` the heartbeat asks a tracking connection for:
/// the server's count of [`UNANNOUNCED`] calls.
pub(crate) const WATCHED: &str = "commandstats";

/// The command that changes data without a word to tracking clients.
/// Redis 7.0 invalidates every entry on `FLUSHALL` and `FLUSHDB` (sync or
/// `ASYNC`), `DEBUG RELOAD` and a replica's full sync, and the keys of
/// `RESTORE`, `MOVE`, `COPY` and `DEBUG POPULATE`; not on `SWAPDB`.
const UNANNOUNCED: &str = "cmdstat_swapdb:calls=";

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
    /// The hash of [`GET`], the read most keys are read by.
    get: u64,
    /// Whether the server writes doubles the shortest way (Redis 7.2 and
    /// later), as its tracking connection found at its connect.
    shortest: AtomicBool,
    /// The server's calls of [`UNANNOUNCED`] as last seen (`u64::MAX`:
    /// not yet).
    unannounced: AtomicU64,
    /// The counts when last sampled, for the metrics.
    sampled: Mutex<Counts>,
    /// The node's command table: what a write fences.
    commands: Arc<Known>,
}

impl std::fmt::Debug for NearCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache").field("bound", &self.bound).finish_non_exhaustive()
    }
}

impl NearCache {
    /// A cache of at most `entries` replies (and as many keys), spread
    /// over at most [`SHARDS`] shards whose bounds add up to `entries`.
    pub(crate) fn new(entries: NonZeroUsize, commands: Arc<Known>) -> Self {
        let n = entries.get();
        // A power of two, for a mask picks the shard; none left empty.
        let count = 1 << SHARDS.min(n).ilog2();
        let shards =
            (0..count).map(|i| Mutex::new(Shard::new(n / count + usize::from(i < n % count))));
        NearCache {
            shards: shards.collect(),
            hasher: lru::DefaultHasher::default(),
            blind: AtomicUsize::new(0),
            fenced: AtomicUsize::new(0),
            bound: n,
            get: hash_of(GET),
            shortest: AtomicBool::new(false),
            unannounced: AtomicU64::new(u64::MAX),
            sampled: Mutex::default(),
            commands,
        }
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(key) as usize & (self.shards.len() - 1);
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
        let value = shard.reply(key, Instant::now(), || self.get, |id| id == GET)?;
        shard.counts.hits += 1;
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
            let hash = || hash_of_words(words.iter().copied());
            if let Some(value) = shard.reply(key, now, hash, |id| same(id, words.iter().copied())) {
                shard.counts.hits += 1;
                return Look::Hit(value);
            }
            shard.counts.misses += 1;
            return Look::Fill(vec![shard.ticket(key, now, now + MAX_AGE)]);
        }
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let mut shard = self.shard(key);
            if self.is_fenced(&shard, key) {
                return Look::Pass;
            }
            match shard.reply(key, now, || self.get, |id| id == GET) {
                Some(value) => values.push(value),
                None => break,
            }
        }
        if values.len() == keys.len() {
            self.shard(keys[0]).counts.hits += 1;
            return Look::Hit(Value::Array(values));
        }
        self.shard(keys[0]).counts.misses += 1;
        let mut tickets = Vec::with_capacity(keys.len());
        for key in keys {
            let mut shard = self.shard(key);
            if self.is_fenced(&shard, key) {
                return Look::Pass;
            }
            tickets.push(shard.ticket(key, now, now + MAX_AGE));
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
            Read::Many(keys) => (&keys[..], GET.into()),
        };
        let hash = hash_of(&id);
        for (((key, ticket), value), ttl) in keys.iter().zip(tickets).zip(replies).zip(ttls) {
            let dies = match ttl {
                _ if matches!(value, Value::ServerError(_)) => continue,
                // Milliseconds left; -1: none, -2: no such key.
                Value::Int(ms) if *ms > 0 => Some(now + Duration::from_millis(*ms as u64)),
                Value::Int(-1 | -2) => None,
                _ => continue,
            };
            let expires = dies.map_or(now + MAX_AGE, |dies| dies.min(now + MAX_AGE));
            self.shard(key).keep(key, *ticket, (id.clone(), hash), value, (expires, dies));
        }
    }

    /// When `key` expires on the server (`Some(None)`: never), as the
    /// `PTTL` sent with its kept reply said: `None` if no reply of it is
    /// kept. [`aside_early`](crate::ShardedPool::aside_early)'s expiry.
    pub(crate) fn dies(&self, key: &[u8]) -> Option<Option<Instant>> {
        self.shard(key).dies(key, Instant::now())
    }

    /// The server says `key` changed.
    pub(crate) fn invalidate(&self, key: &[u8]) {
        self.shard(key).drop_slot(key);
    }

    /// Drops every entry: the server said everything changed, or the
    /// tracking connection that kept them up to date is gone.
    pub(crate) fn clear(&self) {
        for mut shard in self.all() {
            shard.clear();
        }
    }

    /// How the server writes a double, as its tracking connection found.
    pub(crate) fn doubles(&self) -> Doubles {
        match self.shortest.load(Ordering::Relaxed) {
            true => Doubles::Shortest,
            false => Doubles::Printf,
        }
    }

    /// Notes how the server writes a double ([`Doubles::of_server`]).
    pub(crate) fn set_doubles(&self, doubles: Doubles) {
        self.shortest.store(doubles == Doubles::Shortest, Ordering::Relaxed);
    }

    /// Reads the server's [`WATCHED`] `INFO` (asked on the tracking
    /// connection at its connect and at each heartbeat): if its count of
    /// `SWAPDB` calls changed since it last looked (a `SWAPDB`, or a
    /// `CONFIG RESETSTAT`), every entry goes, for any may be stale. An
    /// entry filled before the swap was read before `INFO` on the same
    /// connection: it is dropped here, or its ticket is.
    pub(crate) fn watch(&self, info: &Value) {
        let text = match info {
            Value::BulkString(bytes) => String::from_utf8_lossy(bytes),
            Value::VerbatimString { text, .. } => text.into(),
            // Refused (an ACL, a renamed command): the age bounds the rest.
            _ => return,
        };
        let line = text.lines().find_map(|line| line.strip_prefix(UNANNOUNCED));
        let calls = line.and_then(|l| l.split(',').next()?.parse().ok()).unwrap_or(0);
        let before = self.unannounced.swap(calls, Ordering::AcqRel);
        if before != u64::MAX && before != calls {
            self.clear();
        }
    }

    /// Fences what the command of `words` writes until the returned guard
    /// is dropped (after its reply, or when the caller gave up on it;
    /// inside a transaction, after `EXEC`'s): `None` if it writes nothing.
    pub(crate) fn fence<'k>(self: &Arc<Self>, words: &[&'k [u8]]) -> Option<Fence<&'k [u8]>> {
        let (keys, reach) = self.commands.written(words);
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

    /// Hits, misses, replies invalidated and evicted since it was made, or
    /// (`sample`) since the last sample; the replies held; the bound.
    pub(crate) fn figures(&self, sample: bool) -> (Counts, u64, u64) {
        let (mut counts, mut held) = (Counts::default(), 0u64);
        for shard in self.all() {
            counts.add(shard.counts);
            held += shard.held() as u64;
        }
        if sample {
            let mut sampled = self.sampled.lock().unwrap_or_else(|e| e.into_inner());
            let since = counts.since(*sampled);
            *sampled = counts;
            counts = since;
        }
        (counts, held, self.bound as u64)
    }
}

/// A write's keys, fenced while it is in flight (`K` borrows them from
/// the command), or while the transaction it is queued in is open (`K`
/// owns them: [`held`](Self::held)).
pub(crate) struct Fence<K: AsRef<[u8]>> {
    cache: Arc<NearCache>,
    keys: Vec<K>,
    blind: bool,
}

/// The fence of a write queued in a transaction, kept by its connection.
pub(crate) type HeldFence = Fence<Box<[u8]>>;

impl<K: AsRef<[u8]>> Fence<K> {
    /// The same fence, its keys owned: it outlives the command's words.
    pub(crate) fn held(mut self) -> HeldFence {
        let keys = std::mem::take(&mut self.keys).into_iter().map(|k| k.as_ref().into()).collect();
        let blind = std::mem::replace(&mut self.blind, false);
        // `self` is left fencing nothing: its drop lifts nothing.
        HeldFence { cache: self.cache.clone(), keys, blind }
    }
}

impl<K: AsRef<[u8]>> Drop for Fence<K> {
    fn drop(&mut self) {
        let cache = &self.cache;
        if self.blind {
            cache.blind.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        if self.keys.is_empty() {
            return;
        }
        for key in &self.keys {
            let key = key.as_ref();
            let mut shard = cache.shard(key);
            if let Some(count) = shard.writing.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    shard.writing.remove(key);
                }
            }
        }
        cache.fenced.fetch_sub(self.keys.len(), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::specs::served;
    use crate::command::table::Table;

    /// `COMMAND`'s reply for `HSETEX` (Redis 8's, which the vendored table
    /// lacks): a write of its one key, at index 1 (key spec `RW update`).
    fn knows_hsetex() -> redis::Value {
        let reply = "*1\r\n*10\r\n$6\r\nhsetex\r\n:-6\r\n*1\r\n+write\r\n:1\r\n:1\r\n:1\r\n*0\r\n*0\r\n\
            *1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RW\r\n+update\r\n$12\r\nbegin_search\r\n\
            *4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n\
            $9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n\
            *6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n*0\r\n";
        redis::parse_redis_value(reply.as_bytes()).unwrap()
    }

    #[test]
    fn a_write_the_vendored_table_lacks_fences_the_keys_its_server_names() {
        let known = Arc::new(Known::default());
        let cache = Arc::new(NearCache::new(NonZeroUsize::new(16).unwrap(), known.clone()));
        let write: [&[u8]; 6] = [b"HSETEX", b"b", b"FIELDS", b"1", b"f", b"v"];
        let fence = cache.fence(&write).unwrap();
        assert!(fence.blind, "unknown to the vendored table: every key is fenced");
        drop(fence);
        known.learn(Table::with(served(&knows_hsetex())));
        let fence = cache.fence(&write).unwrap();
        assert!(!fence.blind, "known to the server: its keys alone");
        assert_eq!(fence.keys, [b"b"]);
    }
}
