//! One shard of a near cache: its keys in LRU order, each key's replies
//! (one per distinct read of it, found by a hash of the read, in LRU order
//! too), the fences of writes in flight, and the bound: at most
//! `capacity` replies, and as many keys. Pure data; the cache holds each
//! shard behind a lock.

use std::collections::HashMap;
use std::time::Instant;

use lru::LruCache;
use redis::Value;

use crate::command::read::hash_of;

/// A shard's counts: reads answered, reads that went to the server,
/// replies dropped because their key changed or their connection went,
/// replies dropped to make room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) invalidated: u64,
    pub(crate) evicted: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, other: Counts) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.invalidated += other.invalidated;
        self.evicted += other.evicted;
    }

    /// Hits, misses, invalidated, evicted: the metrics' order.
    pub(crate) fn to_array(self) -> [u64; 4] {
        [self.hits, self.misses, self.invalidated, self.evicted]
    }

    pub(crate) fn since(&self, before: Counts) -> Counts {
        Counts {
            hits: self.hits.saturating_sub(before.hits),
            misses: self.misses.saturating_sub(before.misses),
            invalidated: self.invalidated.saturating_sub(before.invalidated),
            evicted: self.evicted.saturating_sub(before.evicted),
        }
    }
}

/// A key's replies: most keys are read one way, and keep that reply
/// inline; a key read several ways keeps its replies by the hash of the
/// read, least recently used first out.
enum Replies {
    None,
    One(Box<[u8]>, Value),
    Many(LruCache<u64, (Box<[u8]>, Value)>),
}

impl Replies {
    fn len(&self) -> usize {
        match self {
            Replies::None => 0,
            Replies::One(..) => 1,
            Replies::Many(replies) => replies.len(),
        }
    }
}

/// One key: its replies, and the ticket its fills were started under.
struct Slot {
    ticket: u64,
    expires: Instant,
    /// When the key itself expires on the server, as its last kept reply's
    /// `PTTL` said (`None`: it has no TTL).
    dies: Option<Instant>,
    replies: Replies,
}

/// One shard.
pub(crate) struct Shard {
    slots: LruCache<Box<[u8]>, Slot>,
    /// Keys with writes in flight, and how many.
    pub(crate) writing: HashMap<Box<[u8]>, usize>,
    tickets: u64,
    /// The most replies (and keys) it holds.
    capacity: usize,
    /// The replies it holds.
    held: usize,
    pub(crate) counts: Counts,
}

impl Shard {
    /// An empty shard of at most `capacity` replies (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Shard {
            // Bounded here, not by the LRU, which would make room for its
            // bound up front.
            slots: LruCache::unbounded(),
            writing: HashMap::new(),
            tickets: 0,
            capacity: capacity.max(1),
            held: 0,
            counts: Counts::default(),
        }
    }

    /// The replies it holds.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Removes `key`'s slot, counting its replies as invalidated.
    pub(crate) fn drop_slot(&mut self, key: &[u8]) {
        if let Some(slot) = self.slots.pop(key) {
            self.held -= slot.replies.len();
            self.counts.invalidated += slot.replies.len() as u64;
        }
    }

    /// Drops every slot, counting their replies as invalidated.
    pub(crate) fn clear(&mut self) {
        self.counts.invalidated += self.held as u64;
        self.held = 0;
        self.slots.clear();
    }

    /// The reply of `key`'s read that `is` the one asked (whose identity
    /// hashes to `hash()`), if it is kept and not expired.
    pub(crate) fn reply(
        &mut self,
        key: &[u8],
        now: Instant,
        hash: impl FnOnce() -> u64,
        is: impl Fn(&[u8]) -> bool,
    ) -> Option<Value> {
        let slot = self.slots.get_mut(key).filter(|slot| slot.expires > now)?;
        match &mut slot.replies {
            Replies::One(id, value) if is(id) => Some(value.clone()),
            Replies::Many(replies) => {
                replies.get(&hash()).filter(|(id, _)| is(id)).map(|(_, value)| value.clone())
            }
            _ => None,
        }
    }

    /// When `key` expires on the server (`Some(None)`: never), if a reply
    /// of it is kept and not expired.
    pub(crate) fn dies(&mut self, key: &[u8], now: Instant) -> Option<Option<Instant>> {
        let slot = self.slots.peek(key).filter(|slot| slot.expires > now)?;
        (slot.replies.len() > 0).then_some(slot.dies)
    }

    /// The ticket for a fill of `key`: its slot's, made empty if there was
    /// none (or it had expired); a new slot may evict the least recently
    /// used key.
    pub(crate) fn ticket(&mut self, key: &[u8], now: Instant, expires: Instant) -> u64 {
        match self.slots.get(key) {
            Some(slot) if slot.expires > now => slot.ticket,
            _ => {
                self.drop_slot(key);
                self.tickets += 1;
                let slot =
                    Slot { ticket: self.tickets, expires, dies: None, replies: Replies::None };
                self.slots.push(key.into(), slot);
                if self.slots.len() > self.capacity {
                    self.evict_key();
                }
                self.tickets
            }
        }
    }

    /// Keeps `value`, the reply to the read `id` (whose hash is `hash`) of
    /// `key`, if `key`'s slot still holds `ticket`; the reply expires at
    /// `expires` at the latest, and the key on the server at `dies`. Makes room by evicting the least recently
    /// used keys, or this key's least recently used replies.
    pub(crate) fn keep(
        &mut self,
        key: &[u8],
        ticket: u64,
        (id, hash): (Box<[u8]>, u64),
        value: Value,
        (expires, dies): (Instant, Option<Instant>),
    ) {
        let Some(slot) = self.slots.get_mut(key).filter(|slot| slot.ticket == ticket) else {
            return;
        };
        slot.expires = slot.expires.min(expires);
        slot.dies = dies;
        let added = match std::mem::replace(&mut slot.replies, Replies::None) {
            Replies::None => {
                slot.replies = Replies::One(id, value);
                true
            }
            Replies::One(old, _) if old == id => {
                slot.replies = Replies::One(id, value);
                false
            }
            Replies::One(old, old_value) => {
                let mut replies = LruCache::unbounded();
                replies.put(hash_of(&old), (old, old_value));
                let added = replies.put(hash, (id, value)).is_none();
                slot.replies = Replies::Many(replies);
                added
            }
            Replies::Many(mut replies) => {
                let added = replies.put(hash, (id, value)).is_none();
                slot.replies = Replies::Many(replies);
                added
            }
        };
        if added {
            self.held += 1;
        }
        while self.held > self.capacity {
            // The slot just kept is the most recently used: the least
            // recently used is another key, unless it is the only one.
            match self.slots.peek_lru() {
                Some((lru, _)) if &**lru != key => self.evict_key(),
                _ => self.evict_reply(key),
            }
        }
    }

    /// Evicts the least recently used key, with its replies.
    fn evict_key(&mut self) {
        if let Some((_, slot)) = self.slots.pop_lru() {
            self.held -= slot.replies.len();
            self.counts.evicted += slot.replies.len() as u64;
        }
    }

    /// Evicts `key`'s least recently used reply.
    fn evict_reply(&mut self, key: &[u8]) {
        let Some(slot) = self.slots.peek_mut(key) else { return };
        let evicted = match &mut slot.replies {
            Replies::Many(replies) => usize::from(replies.pop_lru().is_some()),
            replies => std::mem::replace(replies, Replies::None).len(),
        };
        self.held -= evicted;
        self.counts.evicted += evicted as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::read::identity;
    use std::time::Duration;

    fn read(words: &[&str]) -> (Box<[u8]>, u64) {
        let id = identity(words.iter().map(|w| w.as_bytes()));
        let hash = hash_of(&id);
        (id, hash)
    }

    #[test]
    fn the_bound_counts_replies_and_finds_each_by_its_read() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut shard = Shard::new(100);
        let ticket = shard.ticket(b"h", now, later);
        for i in 0..3_000 {
            let field = i.to_string();
            shard.keep(b"h", ticket, read(&["HGET", "h", &field]), Value::Int(i), (later, None));
            assert!(shard.held() <= 100);
        }
        assert_eq!(shard.held(), 100);
        assert_eq!(shard.counts.evicted, 2_900);
        // The last hundred are kept, each found by its own read.
        for i in 2_900..3_000 {
            let (id, hash) = read(&["HGET", "h", &i.to_string()]);
            assert_eq!(shard.reply(b"h", now, || hash, |s| *s == *id), Some(Value::Int(i)));
        }
        let (id, hash) = read(&["HGET", "h", "0"]);
        assert_eq!(shard.reply(b"h", now, || hash, |s| *s == *id), None);
        // Other keys push the old ones out, whole.
        for key in 0..150 {
            let key = key.to_string();
            let ticket = shard.ticket(key.as_bytes(), now, later);
            shard.keep(key.as_bytes(), ticket, read(&["GET", &key]), Value::Int(0), (later, None));
        }
        assert_eq!(shard.held(), 100);
        assert_eq!(shard.counts.evicted, 3_050);
        shard.clear();
        assert_eq!((shard.held(), shard.counts.invalidated), (0, 100));
    }
}
