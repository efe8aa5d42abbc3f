//! The keyspace every process draws from: small, so that processes,
//! paths and faults meet on the same keys.

/// Plain keys, read and written by every path.
pub const KEYS: [&str; 16] = [
    "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "{t0}.a", "{t0}.b", "{t1}.a", "{t1}.b",
    "{t2}.a", "{t2}.b", "{t3}.a", "{t3}.b",
];

/// Keys filled through `aside` (and read, deleted by the other paths).
pub const ASIDE_KEYS: [&str; 6] = ["a0", "a1", "a2", "a3", "a4", "a5"];

/// Counters (`INCR`): their values are numbers, not traced.
pub const COUNTERS: [&str; 2] = ["c0", "c1"];

/// Pub/sub channels.
pub const CHANNELS: [&str; 2] = ["ch0", "ch1"];

/// The hash-tagged pairs a transaction writes together.
pub const TAGGED: [(&str, &str); 4] =
    [("{t0}.a", "{t0}.b"), ("{t1}.a", "{t1}.b"), ("{t2}.a", "{t2}.b"), ("{t3}.a", "{t3}.b")];
