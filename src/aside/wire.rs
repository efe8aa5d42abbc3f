//! What `aside` sends: its scripts, their arguments, what their replies
//! mean, and what a fill's value must be to be stored.

use std::time::Duration;

use redis::{Cmd, ErrorKind, RedisError, ToRedisArgs, Value};

use crate::error::Error;
use crate::node::lease::{MARK, marked};

/// What a miss finds, in one round trip: `{1, value}` if the key holds a
/// value; `{2}` if it holds a lease (a string beginning with the mark,
/// `ARGV[2]`, that ends within a lease time, `ARGV[3]` ms); otherwise the
/// caller's lease `ARGV[1]` is set and `{0}` returned. A mark with no TTL,
/// or a longer one, is no lease (a client wrote it): it is filled over,
/// so nobody waits on it longer than a lease.
pub(super) const TAKE: &str = "local v = redis.call('GET', KEYS[1]) \
    if v then \
        if string.sub(v, 1, #ARGV[2]) ~= ARGV[2] then return {1, v} end \
        local left = redis.call('PTTL', KEYS[1]) \
        if left > 0 and left <= tonumber(ARGV[3]) then return {2} end \
    end \
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3]) return {0}";

/// Stores the value if the caller's lease is still the key's value: the
/// compare-and-set of a fill (a `DEL` meanwhile voids it). Sent as `EVAL`
/// (once per fill, so the script's text costs little, and needs no
/// `SCRIPT LOAD` on a node that restarted). For `aside_early`, the fill's
/// time (`ARGV[4]`, ms) goes to its companion key (`KEYS[2]`) with the
/// same TTL, unless that key holds another type (a user's data, kept).
pub(super) const STORE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) \
    if KEYS[2] then local t = redis.call('TYPE', KEYS[2]).ok \
        if t == 'none' or t == 'string' then \
            redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[3]) end end \
    return 1 end return 0";

/// Deletes the key if the caller's lease is still its value: a fill that
/// failed gives its lease back, so the next caller fills at once.
pub(super) const GIVE_BACK: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// `script` on `key` with the caller's lease `token` first among its
/// arguments.
pub(super) fn eval(script: &str, key: &[u8], token: &[u8]) -> Cmd {
    eval_on(script, &[key], token)
}

/// `script` on `keys` with the caller's `token` first among its arguments.
pub(super) fn eval_on(script: &str, keys: &[&[u8]], token: &[u8]) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys).arg(token);
    cmd
}

/// What [`TAKE`] found.
pub(super) enum Found {
    Value(Value),
    Lease,
    Taken,
}

/// [`TAKE`]'s reply.
pub(super) fn found(reply: Vec<Value>) -> Result<Found, Error> {
    match <[Value; 2]>::try_from(reply) {
        Ok([Value::Int(1), value]) => Ok(Found::Value(value)),
        Ok(other) => Err(odd(&other)),
        Err(reply) => match reply.as_slice() {
            [Value::Int(0)] => Ok(Found::Taken),
            [Value::Int(2)] => Ok(Found::Lease),
            other => Err(odd(other)),
        },
    }
}

fn odd(reply: &[Value]) -> Error {
    let detail = format!("{reply:?}");
    Error::Redis(RedisError::from((ErrorKind::UnexpectedReturnType, "aside's read", detail)))
}

/// The error of a fill whose value `V` `aside` cannot store as it is.
pub(super) fn unstorable<V>(why: &str) -> Error {
    let detail = format!("a `{}` {why}", std::any::type_name::<V>());
    Error::Redis(RedisError::from((ErrorKind::Client, "aside cannot store this value", detail)))
}

/// `value` as the one Redis argument `aside` stores, or the error that
/// refuses it.
pub(super) fn storable<V: ToRedisArgs>(value: &V) -> Result<Vec<u8>, Error> {
    let mut args = value.to_redis_args();
    match args.as_slice() {
        [arg] if marked(arg) => Err(unstorable::<V>(
            "begins with the lease mark (\"\\0fluster:lease:\"), which fluster reserves: \
             its readers would take it for a lease",
        )),
        [_] => Ok(args.remove(0)),
        args => Err(unstorable::<V>(&format!(
            "writes {} Redis arguments, and a cached value must be exactly one (a string, \
             bytes or a number): encode it as one, e.g. with serde_json::to_string",
            args.len()
        ))),
    }
}

/// A lease's value: its mark and a random token.
pub(super) fn token() -> Vec<u8> {
    let random = crate::random::random();
    let mut token = MARK.to_vec();
    token.extend_from_slice(format!("{random:016x}").as_bytes());
    token
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
