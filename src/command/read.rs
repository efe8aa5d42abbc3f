//! What a command asks of a near cache: whether it is a read the cache
//! can answer, the keys it reads, and how one read of a key is told from
//! another (`HGET k a` from `HGET k b`). Pure.

use std::hash::Hasher;

/// Whether `name` is a read-only command whose one key is its first
/// argument and whose reply depends only on that key: what the near cache
/// answers (`EXISTS` only with one key; `MGET` is read key by key).
fn cacheable(name: &[u8]) -> bool {
    // No such command is longer than 16 bytes.
    let mut upper = [0u8; 16];
    let Some(upper) = upper.get_mut(..name.len()) else { return false };
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    matches!(
        &*upper,
        b"GET"
            | b"GETRANGE"
            | b"SUBSTR"
            | b"GETBIT"
            | b"BITCOUNT"
            | b"BITPOS"
            | b"BITFIELD_RO"
            | b"STRLEN"
            | b"EXISTS"
            | b"TYPE"
            | b"HGET"
            | b"HMGET"
            | b"HGETALL"
            | b"HEXISTS"
            | b"HKEYS"
            | b"HLEN"
            | b"HVALS"
            | b"HSTRLEN"
            | b"LINDEX"
            | b"LLEN"
            | b"LRANGE"
            | b"LPOS"
            | b"SCARD"
            | b"SISMEMBER"
            | b"SMEMBERS"
            | b"SMISMEMBER"
            | b"ZCARD"
            | b"ZCOUNT"
            | b"ZLEXCOUNT"
            | b"ZMSCORE"
            | b"ZRANGE"
            | b"ZRANGEBYLEX"
            | b"ZRANGEBYSCORE"
            | b"ZRANK"
            | b"ZREVRANGE"
            | b"ZREVRANGEBYLEX"
            | b"ZREVRANGEBYSCORE"
            | b"ZREVRANK"
            | b"ZSCORE"
            | b"GEODIST"
            | b"GEOHASH"
            | b"GEOPOS"
    )
}

/// What the near cache can do with a command: the keys it reads, and how
/// each is asked for.
#[derive(Debug, PartialEq)]
pub(crate) enum Read<'a> {
    /// A cacheable read of one key (the command's words, name first).
    One(&'a [u8]),
    /// `MGET`: each key read as a `GET`.
    Many(Vec<&'a [u8]>),
}

impl Read<'_> {
    /// The keys it reads.
    pub(crate) fn keys(&self) -> &[&[u8]] {
        match self {
            Read::One(key) => std::slice::from_ref(key),
            Read::Many(keys) => keys,
        }
    }
}

/// What a command asks of the near cache, from its words (name first).
pub(crate) fn read<'a>(words: &[&'a [u8]]) -> Option<Read<'a>> {
    let name = words.first()?;
    if name.eq_ignore_ascii_case(b"MGET") {
        return (words.len() > 1).then(|| Read::Many(words[1..].to_vec()));
    }
    let key = words.get(1)?;
    let one_key = !name.eq_ignore_ascii_case(b"EXISTS") || words.len() == 2;
    (one_key && cacheable(name)).then_some(Read::One(key))
}

/// How one read of a key is told from another read of it: the command's
/// words but the key, the name upper case, each with its length.
pub(crate) fn identity<'w>(words: impl Iterator<Item = &'w [u8]>) -> Box<[u8]> {
    let mut bytes = Vec::new();
    for (i, word) in words.enumerate().filter(|(i, _)| *i != 1) {
        bytes.extend_from_slice(&(word.len() as u32).to_le_bytes());
        let start = bytes.len();
        bytes.extend_from_slice(word);
        if i == 0 {
            bytes[start..].make_ascii_uppercase();
        }
    }
    bytes.into()
}

/// The [`identity`] of `GET key`, for any key: what the typed fast path
/// compares with, without the words.
pub(crate) const GET: &[u8] = b"\x03\x00\x00\x00GET";

/// A hash of an [`identity`], by which a key's many replies are found.
pub(crate) fn hash_of(identity: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(identity);
    hasher.finish()
}

/// The [`hash_of`] the [`identity`] of `words`, from the words themselves:
/// nothing allocated.
pub(crate) fn hash_of_words<'w>(words: impl Iterator<Item = &'w [u8]>) -> u64 {
    // The hasher reads a stream: its bytes fed in pieces hash as fed whole.
    let mut hasher = std::hash::DefaultHasher::new();
    for (i, word) in words.enumerate().filter(|(i, _)| *i != 1) {
        hasher.write(&(word.len() as u32).to_le_bytes());
        match i {
            0 => word.iter().for_each(|b| hasher.write(&[b.to_ascii_uppercase()])),
            _ => hasher.write(word),
        }
    }
    hasher.finish()
}

/// Whether `words` are the read `stored` identifies; nothing allocated.
pub(crate) fn same<'w>(mut stored: &[u8], words: impl Iterator<Item = &'w [u8]>) -> bool {
    for (i, word) in words.enumerate().filter(|(i, _)| *i != 1) {
        let Some((len, rest)) = stored.split_first_chunk::<4>() else { return false };
        let len = u32::from_le_bytes(*len) as usize;
        let Some((mine, rest)) = rest.split_at_checked(len) else { return false };
        let equal = if i == 0 { mine.eq_ignore_ascii_case(word) } else { mine == word };
        if !equal {
            return false;
        }
        stored = rest;
    }
    stored.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_of_get_is_the_constant() {
        for name in [&b"GET"[..], b"get", b"Get"] {
            assert_eq!(&*identity([name, b"some key"].into_iter()), GET);
            assert!(same(GET, [name, &b"k"[..]].into_iter()));
        }
        assert_ne!(&*identity([&b"GETEX"[..], b"k"].into_iter()), GET);
    }

    #[test]
    fn an_identity_hashes_alike_from_its_words_and_its_bytes() {
        let reads: [&[&[u8]]; 4] = [
            &[b"GET", b"k"],
            &[b"hget", b"k", b"field"],
            &[b"GetRange", b"other key", b"0", b"-1"],
            &[b"ZRANGE", b"k", b"0", b"10", b"WITHSCORES"],
        ];
        for words in reads {
            let bytes = identity(words.iter().copied());
            assert_eq!(hash_of(&bytes), hash_of_words(words.iter().copied()), "{words:?}");
        }
        assert_ne!(hash_of_words([&b"HGET"[..], b"k", b"a"].into_iter()), hash_of(GET));
    }
}
