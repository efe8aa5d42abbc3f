//! The documented allowances: stale reads the README expects, counted with
//! their staleness instead of as violations.

use super::index::{History, Rec};
use super::timeline::{VIEW_SLACK, rewrites_data};
use crate::history::{Fault, HARNESS, Path};

/// Without `invalidate_on_return` a stand-in's copy stays after the return
/// (README, "No replication": stale duplicates).
pub const STALE_DUPLICATES: &str = "stale duplicates (invalidate_on_return off)";

/// Without a fleet each process invalidates only what it wrote (README,
/// "Invalidation is per process without a fleet").
pub const PER_PROCESS: &str = "per-process invalidation (no fleet)";

/// The nemesis rewrote a node behind the pools' backs (`SWAPDB`,
/// `REPLICAOF`, `FLUSHALL`, or its own clients writing a node the read did
/// not go to).
pub const OUTSIDE_REWRITE: &str = "outside rewrite";

/// Another process's write reaches a near cache by the server's
/// invalidation, after a trip (README's near-cache row).
pub const NEAR_CACHE_TRIP: &str = "near cache invalidation trip";

/// Two processes saw the key's node differently for a while (README, "No
/// consensus between processes": a fleet's news trip).
pub const VIEWS_DIFFER: &str = "views differ";

/// A process cut off from a node alone keeps its own view for as long as
/// it lasts (README, "No consensus between processes"): what it reads;
/// what the others read after its writes is bounded by its relay
/// (`relay.rs`), unless another process had the node boxed too.
pub const CUT_OFF_ALONE: &str = "cut off alone";

/// Two nodes of a key's ranking were boxed at once in some process: a
/// stand-in that was unreachable at the home's return keeps its older
/// copies of the home's keys, which reads reach if the home fails again,
/// until they expire (README, "What it does not promise": `stand_in_ttl`
/// bounds them).
pub const SEVERAL_DOWN: &str = "several nodes down";

/// The bound of [`SEVERAL_DOWN`] (ms): a stand-in's copy lives at most
/// its cap, plus slack.
pub(crate) fn several_down_bound(c: &crate::history::RunConfig) -> Option<u64> {
    c.stand_in_ttl_ms.map(|ttl| ttl + 500)
}

/// Two processes' node lists differed for a while around `add_node`,
/// `remove_node` or `drain_node` (each process changes its own list, a few
/// milliseconds apart, and a call may fail in one process and not in
/// another): a key the added node takes, or one it stands in for (one
/// operation of the key went to it, another to a node it ranks before), is routed differently
/// by the two (README, "No consensus between processes": "two processes may
/// briefly route a key differently"). Bounded by
/// [`LISTS_DIFFER_MS`](super::member::LISTS_DIFFER_MS), as the views' trip is.
pub const LISTS_DIFFER: &str = "node lists differ (add/remove skew)";

/// A plain `remove_node` moves no data: the removed node's keys go to their
/// next node "at once" (its rustdoc), which serves what it kept from before
/// the node was added, older than the writes the removed node took (guide,
/// "What it is for": "Nothing is replicated or re-balanced"; `drain_node`
/// is the call that moves them). A read by a process that has begun its
/// `remove_node`, of a key the node took, not served by the removed node,
/// after a newer write that went to the removed node (or to an unknown
/// node) while some process still had it: no bound; but not once the add's
/// sweep ended clean, for a value from before the add (see below).
///
/// This and [`DRAIN_NOT_YET_MOVED`] excuse an old home's copy that the
/// add's sweep deletes (`docs/resize.md`, "The sweep"): neither applies to
/// a read invoked more than [`VIEW_SLACK`] after some process saw its sweep
/// end clean ([`Change::Swept`](crate::history::Change::Swept), `Ok`), of
/// a value acknowledged before that process's `add_node` began
/// (`member.rs`). Without such a record, as above.
pub const REMOVED_UNMOVED: &str = "removed without moving (remove_node)";

/// While a process drains the added node, a key it took is served by its
/// new home (the node it had before the add) before that key's batch is
/// `MIGRATE`d over: that node may still hold the value it had before the
/// add (a cold `add_node` leaves it; so does a warm window whose delete
/// failed), and serves it until the batch's `REPLACE` lands
/// (`docs/resize.md`, "Draining a node", limits). A read by a process
/// during its own `drain_node`, of a key the node took, not served by the
/// drained node, of a value acknowledged before the first `add_node`
/// began: bounded by that drain's end, and by the add's sweep's clean end
/// as [`REMOVED_UNMOVED`] says.
pub const DRAIN_NOT_YET_MOVED: &str = "drain in progress (old home's pre-add copy)";

/// A Sentinel shard's master was killed and its replica named master: the
/// writes the old master had acknowledged but not yet sent to its replica
/// are lost (Redis's replication is asynchronous; README: a Sentinel
/// failover "never moves its keys", and promises nothing of writes the
/// replica never got). A read after the kill, of a key of the shard, older
/// than a write to the shard acknowledged at most [`FAILOVER_LAG_MS`]
/// before the kill: no bound (the write is gone).
pub const FAILOVER_LOST: &str = "failover's lost writes (Sentinel)";

/// How long before a master's kill a write it acknowledged may still have
/// been missing on its replica (ms).
pub(crate) const FAILOVER_LAG_MS: u64 = 1_000;

/// Whether `r` reading a value older than `w` is [`FAILOVER_LOST`].
pub(crate) fn failover_lost(h: &History<'_>, r: &Rec<'_>, w: &Rec<'_>) -> bool {
    let Some(shard) = h.config.sentinel.as_deref() else { return false };
    if h.home(r.key) != Some(shard) || w.node.is_some_and(|n| n != shard) {
        return false;
    }
    let lag = super::timeline::ms(FAILOVER_LAG_MS);
    h.faults
        .find(w.complete, r.invoke, |f| {
            f.kind == crate::history::FaultKind::FailOver
                && f.node.as_deref() == Some(shard)
                && w.complete.saturating_add(lag) >= f.start
                && f.start <= r.invoke
        })
        .is_some()
}

/// A value `fan_out` wrote on every node: its copies off the key's home are
/// the writer's own duplicates, which no return deletes (they are not a
/// stand-in's).
pub const FAN_OUT_COPY: &str = "fan_out copies";

/// A fault that rewrites data (`SwapDb`, `Replica`, `FlushAll`) overlapping
/// `[a, b]` on one of `nodes` or on the key's home; every node counts when
/// one of `nodes` is unknown.
pub(crate) fn outside_rewrite<'a>(
    h: &History<'a>,
    key: &str,
    a: u64,
    b: u64,
    nodes: &[Option<&str>],
) -> Option<&'a Fault> {
    let home = h.home(key);
    let anywhere = nodes.iter().any(Option::is_none);
    h.faults.find(a, b, |f| {
        rewrites_data(f.kind)
            && match f.node.as_deref() {
                None => true,
                Some(n) => anywhere || home == Some(n) || nodes.contains(&Some(n)),
            }
    })
}

/// Whether `w` is the nemesis's own write on a node `r` did not read (the
/// pools never saw it: a foreign copy, not an obligation).
pub(crate) fn foreign_write(h: &History<'_>, r: &Rec<'_>, w: &Rec<'_>) -> bool {
    w.process == HARNESS
        && match (r.node, w.node) {
            (Some(rn), Some(wn)) => rn != wn,
            (None, Some(wn)) => h.home(w.key) != Some(wn),
            (_, None) => false,
        }
}

/// Whether `r`'s value was written by a `fan_out` on a node other than the
/// key's home that `r` may have read (that node, or an unknown one); on a
/// key the run's added node takes, written while some process may have had
/// that node in, any other node is off the home.
pub(crate) fn fan_out_copy(h: &History<'_>, r: &Rec<'_>) -> bool {
    let Some(writers) = r.value.and_then(|v| h.values.get(&(r.key, v))) else { return false };
    let home = h.home(r.key);
    writers.iter().map(|&i| &h.recs[i]).any(|w| {
        // While the run's added node is in, it is the home of the keys it
        // takes: a copy on their old home is off the home then.
        let off = |n: &str| {
            home != Some(n)
                || h.members.in_era(r.key, w.invoke, w.seen_until()) && h.members.extra != Some(n)
        };
        w.path == Some(Path::FanOut)
            && w.node.is_some_and(|n| off(n) && r.node.is_none_or(|rn| rn == n))
    })
}

/// Whether `r` and the reader's own write `w` may have been served by
/// different nodes: both known (every node of a `fan_out`) and `r`'s not
/// among `w`'s; or one unknown while the reader had the key's home boxed at
/// some instant of `[w.invoke, r.complete + 50 ms]` (its routing changed;
/// a view is recorded a little after the change; for a key the added node
/// takes, while it is in, the added node is its home), or a membership
/// call overlapped that span on such a key.
pub(crate) fn apart(h: &History<'_>, r: &Rec<'_>, w: &Rec<'_>) -> bool {
    let siblings: Vec<Option<&str>> = match (w.path, w.value) {
        (Some(Path::FanOut), Some(v)) => h.values[&(w.key, v)]
            .iter()
            .map(|&i| &h.recs[i])
            .filter(|s| (s.process, s.id) == (w.process, w.id))
            .map(|s| s.node)
            .collect(),
        _ => vec![w.node],
    };
    match r.node {
        Some(rn) if siblings.iter().all(Option::is_some) => !siblings.contains(&Some(rn)),
        // A membership change may have moved the key between them.
        _ if h.members.changed(r.key, w.invoke, r.complete) => true,
        _ => {
            let until = r.complete.saturating_add(VIEW_SLACK);
            let boxed = |node: &str| h.views.boxed_during(r.process, node, w.invoke, until);
            // While the added node is in, a key it takes has it for home.
            h.home(r.key).is_some_and(boxed)
                || (h.members.in_era(r.key, w.invoke, r.complete)
                    && h.members.extra.is_some_and(boxed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::history::{FaultKind, RunConfig};

    fn fleet() -> RunConfig {
        RunConfig { invalidate_on_return: true, fleet: true, ..config() }
    }

    #[test]
    fn a_sentinel_failovers_lost_writes_are_allowed_only_near_the_kill() {
        let shard = home_of("k");
        let c = RunConfig { sentinel: Some(shard.clone()), ..fleet() };
        let lost = |acked: u64| {
            vec![
                write(1, "k", "p1:1", 0, 1).into(),
                write(2, "k", "p2:1", acked - 1, acked).into(),
                fault(FaultKind::FailOver, Some(&shard), None, 3_000, 5_500),
                read(1, "k", Some("p1:1"), 6_000, 6_001).into(),
            ]
        };
        let report = check(&c, &lost(2_900));
        assert_eq!(report.violations(), 0, "{report}");
        assert_eq!(report.staleness[FAILOVER_LOST].samples, vec![3_100]);
        // Acknowledged 1.5 s before the kill: the replica had it.
        assert_eq!(check(&c, &lost(1_500)).count("no-stale-read"), 1);
        // Not a Sentinel shard: no failover excuses it.
        assert_eq!(check(&fleet(), &lost(2_900)).count("no-stale-read"), 1);
    }
}
