//! Hand-written histories for the rules' tests: times in ms, operations
//! acknowledged on the key's home unless told otherwise.

use std::sync::atomic::{AtomicU64, Ordering};

use fluster::route::Router;

pub(crate) use super::check;
use super::timeline::ms;
use crate::history::{
    Change, Entry, Fault, FaultKind, Fill, FillEnd, Kind, Member, Op, Outcome, Path, ProcessId,
    RunConfig, Sample, View,
};

/// Where the tests' clock starts (ns), so no time is near zero.
const BASE: u64 = 1_000_000_000_000;

/// A test time in ms as the history's ns.
pub(crate) fn t(at_ms: u64) -> u64 {
    BASE + ms(at_ms)
}

/// Two processes over nodes `a`, `b`, `c`, no feature on.
pub(crate) fn config() -> RunConfig {
    RunConfig {
        seed: 7,
        nodes: vec!["a".into(), "b".into(), "c".into()],
        gutters: vec![],
        processes: 2,
        sync_processes: vec![],
        near_cache: false,
        fleet: false,
        stand_in_ttl_ms: None,
        invalidate_on_return: false,
        gutter_ttl_ms: 10_000,
        lease_ms: 1_000,
        longest_fill_ms: 100,
        checkout_timeout_ms: 1_000,
        response_timeout_ms: 500,
        connect_timeout_ms: 1_000,
        heartbeat_ms: 1_000,
        penalty_max_wait_ms: 30_000,
        probe_timeout_ms: 1_000,
        extra: None,
        resize_warmup_ms: 0,
        sentinel: None,
    }
}

/// The name of `key`'s home under [`config`]'s nodes.
pub(crate) fn home_of(key: &str) -> String {
    let c = config();
    let router = Router::new(c.nodes.iter().map(|n| (n.as_str(), 1.0)));
    c.nodes[router.home(key.as_bytes()).unwrap()].clone()
}

/// A node that is not `key`'s home.
pub(crate) fn other_of(key: &str) -> String {
    let home = home_of(key);
    config().nodes.into_iter().find(|n| *n != home).unwrap()
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An acknowledged operation through `get` on the key's home.
pub(crate) fn op(p: ProcessId, kind: Kind, key: &str, value: Option<&str>, a: u64, b: u64) -> Op {
    Op {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        process: p,
        path: Path::Get,
        kind,
        key: key.into(),
        value: value.map(Into::into),
        ttl_ms: None,
        node: Some(home_of(key)),
        home: Some(true),
        invoke: t(a),
        complete: t(b),
        outcome: Outcome::Ok,
    }
}

/// A write of `value`.
pub(crate) fn write(p: ProcessId, key: &str, value: &str, a: u64, b: u64) -> Op {
    op(p, Kind::Write, key, Some(value), a, b)
}

/// A read that returned `value`.
pub(crate) fn read(p: ProcessId, key: &str, value: Option<&str>, a: u64, b: u64) -> Op {
    op(p, Kind::Read, key, value, a, b)
}

/// A delete.
pub(crate) fn delete(p: ProcessId, key: &str, a: u64, b: u64) -> Op {
    op(p, Kind::Delete, key, None, a, b)
}

/// Changes to a test operation.
pub(crate) trait OpExt {
    /// Through `path`.
    fn path(self, path: Path) -> Self;
    /// Served by `node` (`home` set from the key's home).
    fn on(self, node: &str) -> Self;
    /// Served by no node the path tells.
    fn nowhere(self) -> Self;
    /// With a TTL.
    fn ttl(self, ttl_ms: u64) -> Self;
    /// Failed.
    fn failed(self) -> Self;
    /// Hung.
    fn hung(self) -> Self;
}

impl OpExt for Op {
    fn path(self, path: Path) -> Self {
        Op { path, ..self }
    }
    fn on(self, node: &str) -> Self {
        Op { home: Some(home_of(&self.key) == node), node: Some(node.into()), ..self }
    }
    fn nowhere(self) -> Self {
        Op { node: None, home: None, ..self }
    }
    fn ttl(self, ttl_ms: u64) -> Self {
        Op { ttl_ms: Some(ttl_ms), ..self }
    }
    fn failed(self) -> Self {
        Op { outcome: Outcome::Failed("boom".into()), ..self }
    }
    fn hung(self) -> Self {
        let waited = (self.complete - self.invoke) / 1_000_000;
        Op { outcome: Outcome::Hung(waited), ..self }
    }
}

impl From<Op> for Entry {
    fn from(op: Op) -> Entry {
        Entry::Op(op)
    }
}

/// A write's invocation (whose completion may be missing).
pub(crate) fn invoke(p: ProcessId, id: u64, key: &str, value: &str, at: u64) -> Entry {
    invoked(p, id, Kind::Write, key, Some(value), at)
}

/// An invocation of `kind` (whose completion may be missing).
pub(crate) fn invoked(
    p: ProcessId,
    id: u64,
    kind: Kind,
    key: &str,
    value: Option<&str>,
    at: u64,
) -> Entry {
    let (key, value) = (key.into(), value.map(Into::into));
    Entry::Invoke { process: p, id, kind, key, value, ttl_ms: None, at: t(at) }
}

/// A fill with a 10 s TTL: `Ok` with a value, `Err` without.
pub(crate) fn fill(p: ProcessId, key: &str, value: Option<&str>, start: u64, end: u64) -> Entry {
    Entry::Fill(Fill {
        process: p,
        key: key.into(),
        value: value.map(Into::into),
        ttl_ms: 10_000,
        start: t(start),
        end: t(end),
        result: if value.is_some() { FillEnd::Ok } else { FillEnd::Err },
    })
}

/// A fault.
pub(crate) fn fault(
    kind: FaultKind,
    node: Option<&str>,
    process: Option<ProcessId>,
    start: u64,
    end: u64,
) -> Entry {
    Entry::Fault(Fault { kind, node: node.map(Into::into), process, start: t(start), end: t(end) })
}

/// A view change.
pub(crate) fn view(p: ProcessId, node: &str, view: View, at: u64) -> Entry {
    Entry::View { process: p, node: node.into(), view, at: t(at) }
}

/// A sample.
pub(crate) fn sample(node: &str, key: &str, value: &str, pttl_ms: i64, at: u64) -> Entry {
    Entry::Sample(Sample {
        node: node.into(),
        key: key.into(),
        value: value.into(),
        pttl_ms,
        sent: t(at),
        at: t(at),
    })
}

/// A membership call, acknowledged.
pub(crate) fn member(p: ProcessId, node: &str, change: Change, start: u64, end: u64) -> Entry {
    Entry::Member(Member {
        process: p,
        node: node.into(),
        change,
        start: t(start),
        end: t(end),
        outcome: Outcome::Ok,
        listed: None,
    })
}

/// A config with `n4` added at run time.
pub(crate) fn grown() -> RunConfig {
    let c = config();
    RunConfig { extra: Some("n4".into()), invalidate_on_return: true, fleet: true, ..c }
}

/// A key the added node takes, and one it does not.
pub(crate) fn keys() -> (String, String) {
    let c = grown();
    let m = super::member::Members::new(&c, Vec::new());
    let moved = (0..100).map(|i| format!("k{i}")).find(|k| m.moved(k)).unwrap();
    let stays = (0..100).map(|i| format!("k{i}")).find(|k| !m.moved(k)).unwrap();
    (moved, stays)
}
