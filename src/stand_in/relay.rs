//! The relay (a [`fleet`](crate::Builder::fleet) with
//! `invalidate_on_return`): a process that writes a key to a stand-in
//! while, as far as it knows, it alone has the key's home boxed asks the
//! fleet, in the same round trip as the write (a `PUBLISH` on the
//! stand-in, before the write's reply), to delete the key on the home.
//! Any process that reaches the home deletes it there, once per message
//! however many hear it (a marker on the home, set with the delete, tells
//! the others it was done). A delete is always safe in a cache: a
//! message, forged or not, can cost a miss of the keys it names, never a
//! lie.
//!
//! A message is bytes, not text (keys are binary):
//! `fluster1 delete <teller> <seq> <count> <len>:<home>` then, `count`
//! times, `<len>:<key>`; `teller` is the writer's id (hexadecimal, as in
//! the fleet's news), `seq` its count of relays for this home.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::health::record::RelayCounters;
use redis::Cmd;

const HEAD: &[u8] = b"fluster1 delete ";

/// The most keys one message names: a write of more sends more messages.
pub(crate) const KEYS: usize = 32;

/// The longest key relayed; a longer one is counted as dropped (left to
/// the return and `stand_in_ttl`).
pub(crate) const KEY_BYTES: usize = 512;

/// How long the marker of a message done lives on the home (ms): far
/// longer than any hearer takes to act on it.
const MARKER_MS: u64 = 5_000;

/// The longest a real message can be when no node's name is longer than
/// `name` bytes; a longer payload is dropped unread.
pub(crate) fn longest(name: usize) -> usize {
    HEAD.len() + 16 + 1 + 20 + 1 + 2 + 1 + (6 + name) + KEYS * (4 + KEY_BYTES)
}

/// One relay message, as read off the fleet's channel.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Relayed<'a> {
    pub(crate) teller: u64,
    pub(crate) home: &'a str,
    pub(crate) keys: Vec<&'a [u8]>,
}

/// `keys` of `home`, relayed by `teller` as its `seq`th message.
pub(crate) fn encode(teller: u64, seq: u64, home: &str, keys: &[&[u8]]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(64 + home.len() + keys.iter().map(|k| k.len() + 4).sum::<usize>());
    out.extend_from_slice(HEAD);
    out.extend_from_slice(format!("{teller:016x} {seq} {} ", keys.len()).as_bytes());
    for part in std::iter::once(home.as_bytes()).chain(keys.iter().copied()) {
        out.extend_from_slice(format!("{}:", part.len()).as_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// A relay message read off the channel, or `None` if `payload` is not
/// one (news, garbage, too many keys, a key too long, bytes left over).
pub(crate) fn parse(payload: &[u8]) -> Option<Relayed<'_>> {
    let rest = payload.strip_prefix(HEAD)?;
    let (teller, rest) = word(rest)?;
    let teller = u64::from_str_radix(std::str::from_utf8(teller).ok()?, 16).ok()?;
    let (seq, rest) = word(rest)?;
    std::str::from_utf8(seq).ok()?.parse::<u64>().ok()?;
    let (count, mut rest) = word(rest)?;
    let count: usize = std::str::from_utf8(count).ok()?.parse().ok()?;
    if count == 0 || count > KEYS {
        return None;
    }
    let home;
    (home, rest) = part(rest)?;
    let home = std::str::from_utf8(home).ok().filter(|home| !home.is_empty())?;
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        let key;
        (key, rest) = part(rest)?;
        if key.len() > KEY_BYTES {
            return None;
        }
        keys.push(key);
    }
    rest.is_empty().then_some(Relayed { teller, home, keys })
}

/// The bytes before the next space, and those after it.
fn word(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().take(21).position(|&b| b == b' ')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// A `<len>:<bytes>` part, and the bytes after it.
fn part(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().take(6).position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&bytes[..at]).ok()?.parse().ok()?;
    let rest = &bytes[at + 1..];
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// What deletes the keys of the relay message `payload` on its home,
/// unless another process already did (`fleet`'s marker of the message,
/// named by the message itself, set in the same step): its reply is the
/// count deleted, or -1 if it was done already.
pub(crate) fn delete_once(fleet: &str, payload: &[u8], keys: &[&[u8]]) -> Cmd {
    const SCRIPT: &str = "if redis.call('SET', KEYS[1], '', 'PX', ARGV[1], 'NX') then \
                          return redis.call('DEL', unpack(KEYS, 2)) end return -1";
    // Named by a hash of the message, not the message: a flood of long
    // forged messages leaves small markers on the home.
    let mut hasher = siphasher::sip128::SipHasher13::new();
    std::hash::Hasher::write(&mut hasher, payload);
    let hash = siphasher::sip128::Hasher128::finish128(&hasher).as_u128();
    let marker = format!("fluster:fleet:{fleet}:relayed:{hash:032x}");
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(SCRIPT).arg(1 + keys.len()).arg(marker);
    for key in keys {
        cmd.arg(*key);
    }
    cmd.arg(MARKER_MS);
    cmd
}

/// One home's relay in one process: who it is in the fleet, and whether
/// another process was heard to have the home boxed too during this stay
/// in the box (then the others do not reach it either, and nothing is
/// relayed).
#[derive(Debug)]
pub(crate) struct Relay {
    channel: Box<str>,
    home: Box<str>,
    teller: u64,
    seq: AtomicU64,
    /// The home's epoch (its stay in the box) in which another process
    /// was heard to agree; `u64::MAX`: none.
    agreed: AtomicU64,
    /// Relayed deletes: sent, deleted, repeated, dropped.
    counters: RelayCounters,
}

impl Relay {
    /// The relay of `home` for the pool `teller` of the fleet `fleet`.
    pub(crate) fn new(fleet: &str, home: &str, teller: u64, counters: RelayCounters) -> Self {
        Relay {
            channel: fleet.into(),
            home: home.into(),
            teller,
            seq: AtomicU64::new(0),
            agreed: AtomicU64::new(u64::MAX),
            counters,
        }
    }

    /// Another process has the home boxed too, in this process's stay
    /// `epoch` of it in the box: nothing more is relayed in that stay.
    pub(crate) fn agree(&self, epoch: u64) {
        self.agreed.store(epoch, Ordering::Release);
    }

    /// Another process let the home back in: this one may be alone now.
    pub(crate) fn doubt(&self) {
        self.agreed.store(u64::MAX, Ordering::Release);
    }

    /// Whether a stand-in write of the home's keys is relayed now, the
    /// home being `up` or not, in its stay `epoch`: boxed, and no other
    /// process heard to have it boxed too.
    pub(crate) fn relaying(&self, up: bool, epoch: u64) -> bool {
        !up && self.agreed.load(Ordering::Acquire) != epoch
    }

    /// The `PUBLISH`es that relay `keys` (a key too long is counted as
    /// dropped), each counted as sent.
    pub(crate) fn publish(&self, keys: &[Box<[u8]>]) -> Vec<Cmd> {
        let fits: Vec<&[u8]> = keys.iter().map(|k| &**k).filter(|k| k.len() <= KEY_BYTES).collect();
        self.counters.dropped.increment((keys.len() - fits.len()) as u64);
        self.counters.sent.increment(fits.len() as u64);
        let channel = &*self.channel;
        let publish = |batch: &[&[u8]]| {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let message = encode(self.teller, seq, &self.home, batch);
            redis::cmd("PUBLISH").arg(channel).arg(message).to_owned()
        };
        fits.chunks(KEYS).map(publish).collect()
    }

    /// Counts what became of `keys` relayed deletes heard by this process:
    /// `deleted` here, or done already by another (`repeated`).
    pub(crate) fn heard(&self, keys: usize, deleted: bool) {
        let counter = if deleted { &self.counters.deleted } else { &self.counters.repeated };
        counter.increment(keys as u64);
    }

    /// Counts `keys` relayed deletes this process could not do (no room,
    /// or the home failed).
    pub(crate) fn dropped(&self, keys: usize) {
        self.counters.dropped.increment(keys as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_back_as_it_was_sent() {
        let keys: [&[u8]; 3] = [b"user:1", b"with space", b"\x00\xff:7"];
        let m = encode(0xfeed, 9, "a node", &keys);
        assert_eq!(parse(&m), Some(Relayed { teller: 0xfeed, home: "a node", keys: keys.into() }));
        assert!(m.starts_with(b"fluster1 delete 000000000000feed 9 3 6:a node6:user:1"));
    }

    #[test]
    fn anything_else_is_not_a_relay() {
        let good = encode(1, 1, "a", &[b"k"]);
        for payload in [
            &b""[..],
            b"fluster1 boxed 01 1 a",
            b"fluster1 delete zz 1 1 1:a1:k",
            b"fluster1 delete 01 x 1 1:a1:k",
            b"fluster1 delete 01 1 0 1:a",
            b"fluster1 delete 01 1 33 1:a1:k",
            b"fluster1 delete 01 1 2 1:a1:k",
            b"fluster1 delete 01 1 1 1:a9:k",
            b"fluster1 delete 01 1 1 0:1:k",
            b"fluster1 delete 01 1 1 1:a1:kextra",
            b"fluster1 delete 01 1 1 99999999999:a",
            &good[..good.len() - 1],
        ] {
            assert_eq!(parse(payload), None, "{:?}", String::from_utf8_lossy(payload));
        }
        let long = vec![b'k'; KEY_BYTES + 1];
        assert_eq!(parse(&encode(1, 1, "a", &[&long])), None, "a key too long");
    }

    #[test]
    fn longest_fits_the_longest_real_message() {
        let key = vec![0u8; KEY_BYTES];
        let keys: Vec<&[u8]> = vec![&key; KEYS];
        let name = "n".repeat(300);
        assert!(encode(u64::MAX, u64::MAX, &name, &keys).len() <= longest(300));
    }
}
