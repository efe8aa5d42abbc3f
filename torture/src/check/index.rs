//! The history indexed once for every rule: operations joined with their
//! invocations, per-key orders of writes, the value → write map, views,
//! faults. Only acknowledged writes create obligations; any write, in any
//! outcome, explains a value seen.

use std::collections::{HashMap, HashSet};

use fluster::route::Router;

use super::member::Members;
pub(crate) use super::rec::{Order, Rec, Source};
use super::relay::RELAY_BOUND_MS;
use super::timeline::{Change, Faults, Intervals, NEVER, Views, ms};
use crate::history::{
    Entry, Fault, Fill, FillEnd, HARNESS, Kind, Op, Path, ProcessId, RunConfig, Sample,
};

/// What is known of one key.
#[derive(Debug, Default)]
pub(crate) struct Key {
    /// An `INCR` counter: values are numbers, out of the value rules.
    pub counter: bool,
    /// The key's home: its index in [`RunConfig::nodes`].
    pub home: Option<usize>,
    /// Acknowledged writes and deletes, any process.
    pub acked: Order,
    /// Deletes, any outcome: `[invoke, end]`.
    pub deletes: Intervals,
    /// Writes, deletes and expires whose effect the history does not fully
    /// know: not acknowledged, or the nemesis's (its `RENAME` keeps the
    /// source's TTL): `[invoke, end]`.
    pub uncertain: Intervals,
    /// Writes and expires that set a TTL: `[invoke + ttl, end]`.
    pub expiring: Intervals,
    /// Stand-in and gutter writes: `[invoke + cap, end]`.
    pub capped: Intervals,
    /// Stand-in and gutter writes a fleet with `invalidate_on_return` may
    /// relay as deletes on the home (a writer cut off alone from it: the
    /// README's "In a fleet"), landing up to the relay's trip after the
    /// write: `[invoke, end + RELAY_BOUND_MS]`.
    pub relayed: Intervals,
    /// Writes, deletes and expires, any outcome, `aside`'s own (fills'
    /// stores) excluded: `[invoke, end]`.
    pub touched: Intervals,
    /// Fills: `[start, end]` (index in [`History::fills`]).
    pub fills: Intervals,
    /// Fills whose process was killed while they ran: `[start, NEVER]`.
    pub killed_fills: Intervals,
}

/// The history, indexed.
pub(crate) struct History<'a> {
    /// The run's settings.
    pub config: &'a RunConfig,
    /// The run's first instant: excerpts count from it.
    pub t0: u64,
    /// Every operation on a key, and every unknown invocation and fill store.
    pub recs: Vec<Rec<'a>>,
    /// Per key.
    pub keys: HashMap<&'a str, Key>,
    /// `(key, value)` → the recs that wrote it (fills' stores included).
    pub values: HashMap<(&'a str, &'a str), Vec<usize>>,
    /// `(key, value)` of every invocation.
    pub invoked: HashSet<(&'a str, &'a str)>,
    /// Acknowledged writes and deletes by (process, key).
    pub own: HashMap<(ProcessId, &'a str), Order>,
    /// Every fill.
    pub fills: Vec<&'a Fill>,
    /// The faults.
    pub faults: Faults<'a>,
    /// The views.
    pub views: Views<'a>,
    /// The membership changes.
    pub members: Members<'a>,
    /// The samples.
    pub samples: Vec<&'a Sample>,
    /// The panics: (process, message, at).
    pub panics: Vec<(ProcessId, &'a str, u64)>,
    /// Memory samples: (process, rss, at).
    pub memory: Vec<(ProcessId, u64, u64)>,
}

impl<'a> History<'a> {
    /// Indexes `entries` (any order).
    pub(crate) fn new(config: &'a RunConfig, entries: &'a [Entry]) -> Self {
        let mut h = History {
            config,
            t0: entries.iter().map(entry_time).min().unwrap_or(0),
            recs: Vec::new(),
            keys: HashMap::new(),
            values: HashMap::new(),
            invoked: HashSet::new(),
            own: HashMap::new(),
            fills: Vec::new(),
            faults: Faults::default(),
            views: Views::default(),
            members: Members::default(),
            samples: Vec::new(),
            panics: Vec::new(),
            memory: Vec::new(),
        };
        let (mut faults, mut changes, mut invokes) = (Vec::new(), Vec::new(), Vec::new());
        let mut members = Vec::new();
        let mut completed: HashSet<(ProcessId, u64, &str)> = HashSet::new();
        for entry in entries {
            match entry {
                Entry::Invoke { process, id, kind, key, value, ttl_ms, at } => {
                    if let Some(value) = value {
                        h.invoked.insert((key, value));
                    }
                    invokes.push((
                        *process,
                        *id,
                        *kind,
                        key.as_str(),
                        value.as_deref(),
                        *ttl_ms,
                        *at,
                    ));
                }
                Entry::Op(op) => {
                    completed.insert((op.process, op.id, &op.key));
                    h.recs.push(from_op(op));
                }
                Entry::Fill(fill) => h.fills.push(fill),
                Entry::Fault(fault) => faults.push(fault),
                Entry::View { process, node, view, at } => {
                    changes.push(Change { process: *process, node, view: *view, at: *at });
                }
                Entry::Sample(sample) => h.samples.push(sample),
                Entry::Panic { process, message, at } => h.panics.push((*process, message, *at)),
                Entry::Memory { process, rss, at } => h.memory.push((*process, *rss, *at)),
                Entry::Member(m) => members.push(m),
                Entry::Reply { .. } => {} // judged as they are (`replies.rs`)
            }
        }
        // An invocation never completed (its process died) may have
        // happened at any time after it: a write, a delete or an expire
        // whose end is never (`Rec::end`).
        for (process, id, kind, key, value, ttl_ms, at) in invokes {
            if !completed.contains(&(process, id, key)) {
                h.recs.push(Rec {
                    source: Source::Invoke,
                    id,
                    process,
                    path: None,
                    kind,
                    key,
                    value,
                    ttl_ms,
                    node: None,
                    home: None,
                    invoke: at,
                    complete: NEVER,
                    outcome: None,
                });
            }
        }
        // A fill recorded when it began (`end` unknown) and again when it
        // ended is one fill.
        let ended: HashSet<(ProcessId, &str, u64)> = h
            .fills
            .iter()
            .filter(|f| f.end != NEVER)
            .map(|f| (f.process, &*f.key, f.start))
            .collect();
        h.fills.retain(|f| f.end != NEVER || !ended.contains(&(f.process, &*f.key, f.start)));
        h.fills.sort_by_key(|f| (f.start, f.end));
        for (i, f) in h.fills.iter().enumerate() {
            if let (FillEnd::Ok, Some(value)) = (f.result, &f.value) {
                h.recs.push(Rec {
                    source: Source::Fill(i),
                    id: 0,
                    process: f.process,
                    path: Some(Path::Aside),
                    kind: Kind::Write,
                    key: &f.key,
                    value: Some(value),
                    ttl_ms: Some(f.ttl_ms),
                    node: None,
                    home: None,
                    invoke: f.start,
                    complete: f.end,
                    outcome: None,
                });
            }
        }
        h.faults = Faults::new(faults);
        h.views = Views::new(changes);
        h.members = Members::new(config, members);
        h.index_keys();
        h
    }

    /// Builds the per-key and per-value indexes from `recs` and `fills`.
    fn index_keys(&mut self) {
        let router = Router::new(self.config.nodes.iter().map(|n| (n.as_str(), 1.0)));
        #[derive(Default)]
        struct Lists {
            acked: Vec<usize>,
            deletes: Vec<(u64, u64, usize)>,
            uncertain: Vec<(u64, u64, usize)>,
            expiring: Vec<(u64, u64, usize)>,
            capped: Vec<(u64, u64, usize)>,
            relayed: Vec<(u64, u64, usize)>,
            touched: Vec<(u64, u64, usize)>,
            fills: Vec<(u64, u64, usize)>,
            killed: Vec<(u64, u64, usize)>,
        }
        let mut lists: HashMap<&str, Lists> = HashMap::new();
        let mut own: HashMap<(ProcessId, &str), Vec<usize>> = HashMap::new();
        let mut counters: HashSet<&str> = HashSet::new();
        for (i, r) in self.recs.iter().enumerate() {
            let l = lists.entry(r.key).or_default();
            if r.kind == Kind::Incr {
                counters.insert(r.key);
            }
            if let (Kind::Write, Some(v)) = (r.kind, r.value) {
                self.values.entry((r.key, v)).or_default().push(i);
            }
            if let Source::Fill(_) = r.source {
                continue;
            }
            let span = (r.invoke, r.end(), i);
            if r.writes() || r.kind == Kind::Expire {
                if r.path != Some(Path::Aside) {
                    l.touched.push(span);
                }
                if !r.acked() || r.process == HARNESS {
                    l.uncertain.push(span);
                }
                if let Some(ttl) = r.ttl_ms {
                    l.expiring.push((r.invoke.saturating_add(ms(ttl)), r.end(), i));
                }
            }
            if r.kind == Kind::Delete {
                l.deletes.push(span);
            }
            if r.writes() && r.acked() {
                l.acked.push(i);
                own.entry((r.process, r.key)).or_default().push(i);
            }
        }
        for (i, f) in self.fills.iter().enumerate() {
            let l = lists.entry(&f.key).or_default();
            l.fills.push((f.start, f.end, i));
            if f.end == NEVER {
                l.killed.push((f.start, NEVER, i));
            }
        }
        // Stand-in caps need every key's home and the views.
        for (i, r) in self.recs.iter().enumerate() {
            if r.kind != Kind::Write || r.source == Source::Invoke {
                continue;
            }
            let home = router.home(r.key.as_bytes()).map(|h| self.config.nodes[h].as_str());
            let l = lists.get_mut(r.key).expect("listed above");
            if let Some(cap) = self.stand_in_cap(r, home) {
                l.capped.push((r.invoke.saturating_add(ms(cap)), r.end(), i));
            }
            let relays = self.config.fleet && self.config.invalidate_on_return;
            if relays && self.stand_in_write(r, home) {
                let trip = r.end().saturating_add(ms(RELAY_BOUND_MS));
                l.relayed.push((r.invoke, trip, i));
            }
        }
        for (key, l) in lists {
            let k = Key {
                counter: counters.contains(key),
                home: router.home(key.as_bytes()),
                acked: Order::new(&self.recs, l.acked),
                deletes: Intervals::new(l.deletes),
                uncertain: Intervals::new(l.uncertain),
                expiring: Intervals::new(l.expiring),
                capped: Intervals::new(l.capped),
                relayed: Intervals::new(l.relayed),
                touched: Intervals::new(l.touched),
                fills: Intervals::new(l.fills),
                killed_fills: Intervals::new(l.killed),
            };
            self.keys.insert(key, k);
        }
        self.own = own.into_iter().map(|(who, m)| (who, Order::new(&self.recs, m))).collect();
    }

    /// The cap fluster puts on `r`'s copy if it may be a stand-in's or a
    /// gutter's (ms), `None` if it is not one or nothing caps it: a write
    /// that says it was not home, or was served by a gutter, or whose
    /// process had the key's home boxed at some point while it ran (a
    /// `fan_out` write is never a stand-in's).
    pub(crate) fn stand_in_cap(&self, r: &Rec<'_>, home: Option<&str>) -> Option<u64> {
        if r.node.is_some_and(|n| self.is_gutter(n)) {
            return Some(self.gutter_cap());
        }
        if !self.stand_in_write(r, home) {
            return None;
        }
        match r.node {
            Some(_) => self.config.stand_in_ttl_ms,
            None if self.config.gutters.is_empty() => self.config.stand_in_ttl_ms,
            None => Some(
                self.config.stand_in_ttl_ms.map_or(self.gutter_cap(), |c| c.min(self.gutter_cap())),
            ),
        }
    }

    /// Whether `r` (a write of a key whose home is `home`) went to a
    /// stand-in or a gutter, not the home.
    pub(crate) fn stand_in_write(&self, r: &Rec<'_>, home: Option<&str>) -> bool {
        if r.node.is_some_and(|n| self.is_gutter(n)) {
            return true;
        }
        // A key the added node takes has another home while it is in:
        // only the write's own word counts then.
        let moved = self.members.in_era(r.key, r.invoke, r.seen_until());
        let boxed = !moved
            && home.is_some_and(|home| {
                self.views.boxed_during(r.process, home, r.invoke, r.seen_until())
            });
        r.path != Some(Path::FanOut) && (r.home == Some(false) || boxed)
    }

    /// The cap of a write on a gutter node (ms).
    pub(crate) fn gutter_cap(&self) -> u64 {
        self.config.stand_in_ttl_ms.unwrap_or(self.config.gutter_ttl_ms)
    }

    /// Whether `node` is a gutter node.
    pub(crate) fn is_gutter(&self, node: &str) -> bool {
        self.config.gutters.iter().any(|g| g == node)
    }

    /// The key's index, if it was ever touched.
    pub(crate) fn key(&self, key: &str) -> Option<&Key> {
        self.keys.get(key)
    }

    /// The name of the key's home node.
    pub(crate) fn home(&self, key: &str) -> Option<&'a str> {
        let home = match self.keys.get(key) {
            Some(k) => k.home,
            None => Router::new(self.config.nodes.iter().map(|n| (n.as_str(), 1.0)))
                .home(key.as_bytes()),
        };
        home.map(|h| self.config.nodes[h].as_str())
    }

    /// Whether `key` is an `INCR` counter.
    pub(crate) fn counter(&self, key: &str) -> bool {
        self.keys.get(key).is_some_and(|k| k.counter)
    }

    /// The write of `(key, value)` whose effect may land last (an
    /// indeterminate one if any), if any wrote it.
    pub(crate) fn writer(&self, key: &str, value: &str) -> Option<usize> {
        let recs = self.values.get(&(key, value))?;
        recs.iter().copied().max_by_key(|&i| (self.recs[i].end(), self.recs[i].complete))
    }

    /// A read through a fluster path whose value the value rules judge:
    /// completed, acknowledged, by a pool process, on a key that is not a
    /// counter.
    pub(crate) fn judged_read(&self, r: &Rec<'_>) -> bool {
        r.kind == Kind::Read
            && r.acked()
            && r.process != HARNESS
            && r.path != Some(Path::Outside)
            && !self.counter(r.key)
    }
}

/// A rec of an [`Op`].
fn from_op(op: &Op) -> Rec<'_> {
    Rec {
        source: Source::Op,
        id: op.id,
        process: op.process,
        path: Some(op.path),
        kind: op.kind,
        key: &op.key,
        value: op.value.as_deref(),
        ttl_ms: op.ttl_ms,
        node: op.node.as_deref(),
        home: op.home,
        invoke: op.invoke,
        complete: op.complete,
        outcome: Some(&op.outcome),
    }
}

/// The first instant an entry records.
fn entry_time(entry: &Entry) -> u64 {
    match entry {
        Entry::Invoke { at, .. }
        | Entry::View { at, .. }
        | Entry::Panic { at, .. }
        | Entry::Memory { at, .. }
        | Entry::Reply { at, .. } => *at,
        Entry::Op(op) => op.invoke,
        Entry::Fill(f) => f.start,
        Entry::Fault(Fault { start, .. }) => *start,
        Entry::Member(m) => m.start,
        Entry::Sample(s) => s.at,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::history::{Entry, Kind};

    #[test]
    fn a_completed_delete_is_not_in_flight() {
        // The delete's invocation is joined with its completion: done
        // before the own write, it explains no later miss.
        let done = delete(2, "k", 0, 1);
        let entries = vec![
            invoked(2, done.id, Kind::Delete, "k", None, 0),
            done.into(),
            write(1, "k", "p1:1", 2, 3).into(),
            read(1, "k", None, 100, 101).into(),
        ];
        let report = check(&config(), &entries);
        assert_eq!(report.count("read-your-writes"), 1, "{report}");
        assert_eq!(report.counts.unknown_outcome, 0);
    }

    #[test]
    fn an_invocation_without_a_kind_is_a_write() {
        // Histories kept before deletes were invoked name no kind.
        let line = r#"{"Invoke":{"process":1,"id":2,"key":"k","value":"p1:2","at":5}}"#;
        let entry: Entry = serde_json::from_str(line).unwrap();
        let Entry::Invoke { kind, value, ttl_ms, at, .. } = entry else { panic!("{entry:?}") };
        assert_eq!((kind, value.as_deref(), ttl_ms, at), (Kind::Write, Some("p1:2"), None, 5));
    }
}
