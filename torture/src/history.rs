//! What a run records: one [`Entry`] a line (JSON), from every process and
//! from the harness itself, on one clock ([`now`]: Linux's monotonic clock,
//! which every process of the machine shares).
//!
//! Multi-key operations (`mget`, `mset`, a pipeline, a transaction) are
//! recorded as one [`Op`] per key, sharing the operation's `id`, times and
//! outcome. Every operation that can change a key (a write, a delete, an
//! expire, an `INCR`, an `aside` call, whose fill may store) and every
//! publish is recorded twice: an [`Entry::Invoke`] before it is sent (so
//! that a process killed mid-operation still leaves it known) and its
//! [`Entry::Op`] when it completes; an invocation with no completion is an
//! operation whose outcome is unknown: it may have happened, at any time
//! after its invocation.

use serde::{Deserialize, Serialize};

/// Nanoseconds on the machine's monotonic clock (`CLOCK_MONOTONIC`), the
/// same in every process.
pub fn now() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Who did something: a pool process (`1..`), or the harness (`0`: the
/// nemesis's own clients, the sampler).
pub type ProcessId = u32;

/// The harness's own process id.
pub const HARNESS: ProcessId = 0;

/// The path a user takes, as the report counts operations.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Path {
    /// `pool.get(key)` and one command.
    Get,
    /// `pool.get_shared(key)` and one command.
    GetShared,
    /// `pool.get_cached(key)`.
    GetCached,
    /// `pool.pipeline()`.
    Pipeline,
    /// `pool.transaction(key, watched, ..)`.
    Transaction,
    /// `MULTI`, the commands and `EXEC` sent one at a time on a `get` connection.
    MultiByHand,
    /// `pool.mget`.
    Mget,
    /// `pool.mset`.
    Mset,
    /// `pool.del`.
    Del,
    /// `pool.fan_out` writing one key on every node.
    FanOut,
    /// A Lua script with `KEYS`, through `get`.
    Script,
    /// `pool.aside`.
    Aside,
    /// `pool.publish` / a `Subscription`.
    PubSub,
    /// The sync flavour's `get` and one command.
    SyncGet,
    /// The sync flavour's `MULTI`..`EXEC` sent one at a time.
    SyncMultiByHand,
    /// A client outside fluster (the nemesis), straight to one node.
    Outside,
}

/// What an operation did to its key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Read the key's value (`value` is what it returned; `None`: a miss).
    Read,
    /// Wrote `value` to the key (with `ttl_ms` if it set one).
    Write,
    /// Deleted the key.
    Delete,
    /// Set the key's TTL to `ttl_ms` (its value unchanged).
    Expire,
    /// Added to a counter (`INCR`): values are numbers, not traced.
    Incr,
    /// Published `value` on channel `key`.
    Publish,
    /// Received `value` on channel `key`.
    Receive,
}

impl Kind {
    /// [`Kind::Write`] (serde's default for an invocation's kind).
    pub fn write() -> Kind {
        Kind::Write
    }
}

/// How an operation ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: it happened.
    Ok,
    /// It failed with this error; for a write, it may or may not have run.
    Failed(String),
    /// The harness gave up on it after this many milliseconds (a hang).
    Hung(u64),
}

/// One operation on one key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Op {
    /// The operation's id, unique in its process (a multi-key operation's
    /// keys share it).
    pub id: u64,
    /// Who ran it.
    pub process: ProcessId,
    /// How.
    pub path: Path,
    /// What it did to `key`.
    pub kind: Kind,
    /// The key (or channel).
    pub key: String,
    /// The value written, or read (`None`: a miss, or nothing written).
    /// Values are written as `p<process>:<counter>`, unique in the run.
    pub value: Option<String>,
    /// A write's or an expire's TTL in milliseconds, if it set one.
    pub ttl_ms: Option<u64>,
    /// The node that served it, where the path tells (`conn.node()`).
    pub node: Option<String>,
    /// Whether that node is the key's home (`conn.is_home()`), where the
    /// path tells.
    pub home: Option<bool>,
    /// When it was invoked ([`now`]).
    pub invoke: u64,
    /// When it completed ([`now`]).
    pub complete: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// How a fill of `aside` ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillEnd {
    /// It returned a value (stored, unless a delete voided its lease).
    Ok,
    /// It returned an error (the lease is given back).
    Err,
    /// It panicked.
    Panicked,
    /// The caller's future was dropped while it ran (a timeout around `aside`).
    Cancelled,
}

/// One run of an `aside` fill: the database asked for `key`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Fill {
    /// Who ran it.
    pub process: ProcessId,
    /// The key filled.
    pub key: String,
    /// The value the fill returned (`Ok` only).
    pub value: Option<String>,
    /// The TTL `aside` was called with, in milliseconds.
    pub ttl_ms: u64,
    /// When the fill began and ended ([`now`]); `end` is `u64::MAX` when
    /// its process was killed first.
    pub start: u64,
    /// See `start`.
    pub end: u64,
    /// How it ended.
    pub result: FillEnd,
}

/// A fault the nemesis injected.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// `kill -9` of a node, restarted empty at the fault's end.
    Kill,
    /// `SIGSTOP` of a node, `SIGCONT` at the end (it keeps its data).
    Pause,
    /// A node's network made slow (every chunk 20 to 60 ms late), for every
    /// process: drawn around another node's return, it slows the return's
    /// deletes on the stand-ins.
    Slow,
    /// One pool process cut off from one node by the proxy, sockets kept open.
    Partition,
    /// Every process cut off from one node, sockets kept open.
    Blackhole,
    /// `CLIENT KILL` of the pools' connections on a node.
    ClientKill,
    /// The node made a replica (`REPLICAOF` an unreachable master): `READONLY`.
    Replica,
    /// `DEBUG SLEEP` on a node: it answers nothing for the fault's length.
    Sleep,
    /// A node killed and restarted several times in a row.
    Flap,
    /// `FLUSHALL` on a node by an outside client.
    FlushAll,
    /// `SWAPDB 0 1` on a node by an outside client (and back at the end).
    SwapDb,
    /// A pool process killed with `kill -9` (maybe mid-fill, holding a lease).
    KillProcess,
    /// A pool process stopped (`SIGSTOP`) for a moment, as by a long pause
    /// of its runtime or a starved CPU: drawn around a node's return, it
    /// stretches every step of the return in the process it stops.
    PauseProcess,
    /// Garbage and forged messages published on the fleet's channel.
    ForgedNews,
    /// The master of a Sentinel shard killed with `kill -9` and kept down
    /// until Sentinel has named its replica master, then started again
    /// as the new master's replica (`torture/src/sentinel.rs`).
    FailOver,
}

/// A fault, from its start to its end.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// The node it hit, if any.
    pub node: Option<String>,
    /// The pool process it hit, if any.
    pub process: Option<ProcessId>,
    /// When it began ([`now`]).
    pub start: u64,
    /// When it ended ([`now`]; a process kill ends at once).
    pub end: u64,
}

/// A pool's view of a node changed (from its `events()`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// The pool boxed the node.
    Boxed,
    /// The pool let the node back in.
    Returned,
}

/// What the sampler found on a node: a key's value and its TTL.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Sample {
    /// The node read (straight, not through a pool).
    pub node: String,
    /// The key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// Its `PTTL` (`-1`: none).
    pub pttl_ms: i64,
    /// When the read was sent ([`now`]): the server read the TTL after.
    pub sent: u64,
    /// When its reply came ([`now`]): the value was written before.
    pub at: u64,
}

/// A change of a pool's node list at run time (`torture/src/member.rs`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Change {
    /// `add_node`, with the `resize_warmup` window on (`warm`) or off.
    Add {
        /// The pool was built with `resize_warmup`.
        warm: bool,
    },
    /// `remove_node`: the node's keys go to their next node, unmoved.
    Remove,
    /// `drain_node`: the node's keys moved off with `MIGRATE` first.
    Drain,
    /// Not a call: the sweep that the pool's `add_node` started ended
    /// (`status()`'s `sweep_end`), between `start` (the last look that saw
    /// it running) and `end` (the first that saw it ended); `Ok` for
    /// `SweepEnd::Clean` (no old home keeps a copy of the node's keys from
    /// before the add), `Failed(reason)` for `SweepEnd::Incomplete`.
    Swept,
}

/// One pool's call of `add_node`, `remove_node` or `drain_node`, or the
/// end of its sweep ([`Change::Swept`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Member {
    /// The pool's process.
    pub process: ProcessId,
    /// The node added or taken out.
    pub node: String,
    /// What.
    pub change: Change,
    /// When the call began ([`now`]).
    pub start: u64,
    /// When it returned ([`now`]).
    pub end: u64,
    /// What it returned.
    pub outcome: Outcome,
    /// Whether the node was in the pool's list (`nodes()`) when the call
    /// returned: a call that failed may have changed the list or not (a
    /// `drain_node` that fails at its check keeps the node, one that fails
    /// after its switch has removed it). `None`: not looked (a
    /// [`Change::Swept`], a call that hung and may still go on, a history
    /// from before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed: Option<bool>,
}

/// One line of the history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Entry {
    /// An operation that can change a key, about to be sent: known even
    /// if its process dies before the completion.
    Invoke {
        /// The process.
        process: ProcessId,
        /// The operation's id.
        id: u64,
        /// What it will do to `key` (histories written before deletes were
        /// invoked too name no kind: writes).
        #[serde(default = "Kind::write")]
        kind: Kind,
        /// The key.
        key: String,
        /// The value to be written (`None` for a delete or an expire).
        value: Option<String>,
        /// The TTL it sets, if it sets one (ms).
        #[serde(default)]
        ttl_ms: Option<u64>,
        /// When.
        at: u64,
    },
    /// An operation on one key, completed.
    Op(Op),
    /// A fill of `aside`.
    Fill(Fill),
    /// A fault.
    Fault(Fault),
    /// A pool's view of a node changed.
    View {
        /// The pool's process.
        process: ProcessId,
        /// The node.
        node: String,
        /// What it became.
        view: View,
        /// When the event was received ([`now`]).
        at: u64,
    },
    /// A sampled key on a node.
    Sample(Sample),
    /// A process panicked where no panic was asked for.
    Panic {
        /// The process.
        process: ProcessId,
        /// The panic's message.
        message: String,
        /// When.
        at: u64,
    },
    /// A reply that is not what the commands sent call for (checked where
    /// the workload knows the shape: `EXEC` of one queued `SET` is `[OK]`).
    Reply {
        /// The process.
        process: ProcessId,
        /// The path.
        path: Path,
        /// What the reply should have been.
        expected: String,
        /// What it was.
        got: String,
        /// When.
        at: u64,
    },
    /// A pool's node list changed (or a change was refused).
    Member(Member),
    /// A process's resident memory, sampled.
    Memory {
        /// The process.
        process: ProcessId,
        /// Resident set size in bytes.
        rss: u64,
        /// When.
        at: u64,
    },
}

/// The settings of one run that the rules depend on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunConfig {
    /// The seed everything was drawn from.
    pub seed: u64,
    /// The names of the nodes that hold keys (weight 1 each).
    pub nodes: Vec<String>,
    /// The names of the gutter nodes.
    pub gutters: Vec<String>,
    /// How many pool processes.
    pub processes: u32,
    /// Which processes use the sync flavour.
    pub sync_processes: Vec<ProcessId>,
    /// `near_cache` on.
    pub near_cache: bool,
    /// `fleet` on.
    pub fleet: bool,
    /// `stand_in_ttl`, if set (ms).
    pub stand_in_ttl_ms: Option<u64>,
    /// `invalidate_on_return` on.
    pub invalidate_on_return: bool,
    /// The cap of a write on a gutter node without `stand_in_ttl` (ms).
    pub gutter_ttl_ms: u64,
    /// `lease` (ms).
    pub lease_ms: u64,
    /// The longest fill the workload runs (ms).
    pub longest_fill_ms: u64,
    /// `checkout_timeout` (ms).
    pub checkout_timeout_ms: u64,
    /// `response_timeout` (ms).
    pub response_timeout_ms: u64,
    /// `connect_timeout` (ms).
    pub connect_timeout_ms: u64,
    /// `heartbeat` (ms; 0: off).
    pub heartbeat_ms: u64,
    /// `penalty_max_wait` (ms).
    pub penalty_max_wait_ms: u64,
    /// `probe_timeout` (ms).
    pub probe_timeout_ms: u64,
    /// The node the pools add at run time, if they add one (not in
    /// `nodes`: the keys it takes are those it would be home to).
    #[serde(default)]
    pub extra: Option<String>,
    /// `resize_warmup` (ms; 0: off).
    #[serde(default)]
    pub resize_warmup_ms: u64,
    /// The node that is a Sentinel shard (a master, its replica and a
    /// sentinel), if one is.
    #[serde(default)]
    pub sentinel: Option<String>,
}
