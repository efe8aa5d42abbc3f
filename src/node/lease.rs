//! What fluster's readers see of a lease of
//! [`aside`](crate::ShardedPool::aside): nothing. While a fill runs, the
//! lease is the key's own value (a string that begins with [`MARK`]); every
//! reply of a connection fluster hands out passes through [`unmark`], so a
//! read through any fluster path sees a miss (nil), never the lease.
//! Pure.

use redis::{RedisResult, Value};

use crate::health::failure::Replies;

/// What a lease's value begins with. fluster reserves it: `aside` stores
/// no value that begins with it, and fluster's readers never see one.
pub(crate) const MARK: &[u8] = b"\0fluster:lease:";

/// Whether `bytes` begin with the lease's mark.
pub(crate) fn marked(bytes: &[u8]) -> bool {
    bytes.starts_with(MARK)
}

/// `value` as fluster's readers see it: a string that begins with the
/// mark reads as nil, alone or inside an array (`MGET`, `EXEC`), at any
/// depth. Nothing else changes, and nothing is allocated.
pub(crate) fn unmark(value: &mut Value) {
    match value {
        Value::BulkString(bytes) if marked(bytes) => *value = Value::Nil,
        Value::Array(items) => items.iter_mut().for_each(unmark),
        _ => {}
    }
}

/// A command's outcome as fluster's readers see it: each of its replies
/// [`unmark`]ed.
pub(crate) fn unmarked<V: Replies>(mut result: RedisResult<V>) -> RedisResult<V> {
    if let Ok(replies) = &mut result {
        replies.replies_mut().iter_mut().for_each(unmark);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(bytes: &[u8]) -> Value {
        Value::BulkString(bytes.to_vec())
    }

    #[test]
    fn a_lease_reads_as_nil_alone_and_inside_arrays() {
        let lease = bulk(b"\0fluster:lease:0123456789abcdef");
        let mut alone = lease.clone();
        unmark(&mut alone);
        assert_eq!(alone, Value::Nil);
        let mut nested = Value::Array(vec![
            bulk(b"kept"),
            Value::Array(vec![lease.clone(), Value::Int(1)]),
            lease,
        ]);
        unmark(&mut nested);
        let expected = Value::Array(vec![
            bulk(b"kept"),
            Value::Array(vec![Value::Nil, Value::Int(1)]),
            Value::Nil,
        ]);
        assert_eq!(nested, expected);
    }

    #[test]
    fn other_values_are_left_as_they_are() {
        for value in [bulk(b"\0fluster:lease"), bulk(b"x\0fluster:lease:"), bulk(b""), Value::Nil] {
            let mut seen = value.clone();
            unmark(&mut seen);
            assert_eq!(seen, value);
        }
    }
}
