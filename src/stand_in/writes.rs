//! A stand-in's writes: what its connection needs to cap and remember
//! them (where each key lives, [`Homes`], data handed down with the table
//! the call was routed by; which writes are a stand-in's, [`Judge`]), and
//! what goes on the wire with the caller's commands, the same in both
//! flavours ([`StandIn::wrap`], [`Capped`]): each write's record before
//! it, its cap after it, and the caller's transaction followed so that
//! its replies are exactly its own.

use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, Pipeline, Value};

use super::journal::{Flight, Journal, expire};
use crate::command::session::{Turn, turn};
use crate::command::table::Reach;
use crate::command::words::words;
use crate::health::cell::HealthCell;
use crate::route::{Router, key_hash};

/// Where keys live: the pool's router and, by the same index, each node's
/// journal (of the nodes that hold keys) and health (of every node, gutter
/// nodes last). Built with each table of nodes; an index past the router's
/// is a gutter node's.
#[derive(Debug)]
pub(crate) struct Homes {
    pub(crate) router: Router,
    pub(crate) journals: Vec<Arc<Journal>>,
    pub(crate) cells: Vec<Arc<HealthCell>>,
}

/// A key a stand-in wrote, with its home's index in [`Homes`].
type Homed = (usize, Box<[u8]>);

/// Which of a connection's writes are a stand-in's, to be capped and
/// remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Judge {
    /// The connection was routed to this node for a key whose home is
    /// elsewhere (`get`, `get_shared`, the by-node split): every key it
    /// writes whose home is another node, whatever that node does later
    /// (a connection taken before the return and used after it still
    /// caps; once the home is back, its copy is deleted after the reply).
    Routed,
    /// The connection was taken for no key (`fan_out`): a key it writes is
    /// a stand-in's if its home is another node that does not serve it
    /// now (boxed, or warming up and not yet given this key; `warm`: the
    /// routing policy lets warming nodes take their keys gradually). On a
    /// gutter node, every key.
    Live { warm: bool },
}

/// The caller's transaction as its stand-in connection follows it: for
/// each command queued since its `MULTI`, whether it is the pool's own
/// (a record or a cap), so that `EXEC`'s reply goes back without them;
/// and the keys its queued writes remembered, each with its home, which
/// `EXEC` writes.
#[derive(Debug, Default)]
struct Queued {
    open: bool,
    ours: Vec<bool>,
    writes: Vec<Homed>,
}

/// What a connection to a stand-in (or a gutter node) needs to cap and
/// remember its writes of keys whose home is elsewhere (`stand_in_ttl`,
/// `invalidate_on_return`). Only such connections carry one.
#[derive(Debug)]
pub(crate) struct StandIn {
    homes: Arc<Homes>,
    /// The node serving, by index in `homes`.
    serving: usize,
    /// The key the connection was taken for, if one was.
    key: Option<Box<[u8]>>,
    ttl: Option<Duration>,
    remember: bool,
    judge: Judge,
    queued: Queued,
    /// Keys written here (run, not queued) whose home is back: their
    /// copies are deleted once the connection is quiet ([`StandIn::late`]).
    late: Vec<Box<[u8]>>,
}

/// What goes around one of the caller's commands: records before it (with
/// a fleet, each key's record on the stand-in, so that a return that reads
/// the record meanwhile finds the key before its copy exists), caps after
/// it (which need the copy written); and the keys it writes that are
/// remembered, each with its home.
#[derive(Debug, Default)]
struct Around {
    first: Vec<Cmd>,
    last: Vec<Cmd>,
    remembered: Vec<Homed>,
}

impl StandIn {
    /// What a connection to the node `serving` (in `homes`) needs, judging
    /// its writes by `judge`: caps of `ttl`, remembered if `remember`;
    /// `key` is the key it was taken for, if any.
    pub(crate) fn new(
        homes: Arc<Homes>,
        serving: usize,
        key: Option<&[u8]>,
        (ttl, remember): (Option<Duration>, bool),
        judge: Judge,
    ) -> Self {
        let key = key.map(Box::from);
        let (queued, late) = (Queued::default(), Vec::new());
        StandIn { homes, serving, key, ttl, remember, judge, queued, late }
    }

    /// The home of `key`, if a write of it here is a stand-in's.
    fn stands_in_for(&self, key: &[u8]) -> Option<usize> {
        let hash = key_hash(key);
        let home = self.homes.router.home_hashed(hash).filter(|&h| h != self.serving)?;
        match self.judge {
            Judge::Routed => Some(home),
            Judge::Live { warm } => {
                let gutter = self.serving >= self.homes.router.len();
                (gutter || !self.homes.cells[home].routable(hash, warm)).then_some(home)
            }
        }
    }

    /// The records and caps of one command (its words), each key it writes
    /// that is a stand-in's remembered, in one step with `flights` (the
    /// write is in flight from now until the reply is in).
    fn around(&self, words: &[&[u8]], flights: &mut Vec<Flight>) -> Around {
        let mut around = Around::default();
        // Its keys as the node it is sent to reads them.
        let (keys, reach) = self.homes.cells[self.serving].commands.written(words);
        let taken = self.key.as_deref().filter(|_| reach == Reach::More);
        for key in keys.into_iter().chain(taken) {
            let Some(home) = self.stands_in_for(key) else { continue };
            around.last.extend(self.ttl.map(|ttl| cap(key, ttl)));
            if self.remember {
                around.first.extend(self.homes.journals[home].record(key, self.ttl));
                around.remembered.push((home, key.into()));
            }
        }
        let departing = by_home(around.remembered.iter().cloned());
        // With a fleet, while this process alone has the home boxed: the
        // others are asked to delete the keys on it, before the reply.
        for (home, keys) in &departing {
            let (relay, cell) = (self.homes.journals[*home].relay(), &self.homes.cells[*home]);
            if let Some(relay) = relay.filter(|relay| relay.relaying(cell.is_up(), cell.epoch())) {
                around.first.extend(relay.publish(keys));
            }
        }
        self.depart(departing, flights);
        around
    }

    /// Whether the node `home` is back, and a write this connection ran
    /// of one of its keys was routed here before it returned: that
    /// return's deletes may be done, so the copy goes now (else a second
    /// failure of the home would serve it over later writes made there),
    /// once the caller's own commands are done with it ([`late`](Self::late)).
    fn is_back(&self, home: usize) -> bool {
        self.judge == Judge::Routed && self.homes.cells[home].is_back()
    }

    /// `departing`'s keys, by home, in flight until `flights` are dropped.
    fn depart(&self, departing: Vec<(usize, Vec<Box<[u8]>>)>, flights: &mut Vec<Flight>) {
        let depart = |(home, keys): (usize, _)| self.homes.journals[home].depart(keys);
        flights.extend(departing.into_iter().map(depart));
    }

    /// What goes on the wire for `cmds`, an atomic pipeline if `atomic`,
    /// whose caller wants `span` of the replies (as `req_packed_commands`
    /// takes them; each command's [`Turn`] followed): each write of a key that is a stand-in's with its
    /// record just before it and its cap just after it, so that both share
    /// its place, inside or outside a transaction, and its keys remembered
    /// as in flight until the replies are in. `None`: nothing to add,
    /// remember or follow; the commands go as they are.
    ///
    /// A transaction the caller sends a command at a time (`MULTI`, the
    /// writes, `EXEC`) queues the records and caps with its writes, so they
    /// apply together (and not if it is discarded or aborted); the
    /// connection notes which queued commands are the pool's, and
    /// [`replies`](Self::replies) takes their replies out of `EXEC`'s.
    pub(crate) fn wrap<'c>(
        &mut self,
        (cmds, atomic): (impl Iterator<Item = &'c Cmd>, bool),
        span: (usize, usize),
    ) -> Option<Capped> {
        let (mut flights, mut follow) = (Vec::new(), self.queued.open);
        // Whether a transaction is open at each command, the keys its
        // queued writes remembered (kept once its `MULTI` is answered, for
        // its `EXEC`), and the keys the round trip's commands write as they
        // run (`EXEC` its queued writes'), for [`late`](Self::late).
        let (mut open, mut queued, mut run) = (self.queued.open, Vec::new(), Vec::new());
        let mut each = Vec::new();
        for cmd in cmds {
            let words: Vec<&[u8]> = words(cmd).collect();
            let (mut around, turned) = (self.around(&words, &mut flights), turn(&words));
            match turned {
                Turn::Opens => open = true,
                Turn::Ends if open => {
                    // The writes queued before, which `EXEC` runs: in
                    // flight again until its reply, so that a return
                    // waits for it.
                    self.depart(by_home(self.queued.writes.iter().cloned()), &mut flights);
                    run.append(&mut self.queued.writes);
                    run.append(&mut queued);
                    open = false;
                }
                Turn::Other if open => queued.append(&mut around.remembered),
                _ => run.append(&mut around.remembered),
            }
            follow |= turned != Turn::Other;
            each.push((cmd, around, turned));
        }
        let bare = each.iter().all(|(_, a, _)| a.first.is_empty() && a.last.is_empty());
        if bare && flights.is_empty() && !follow && self.late.is_empty() {
            return None;
        }
        Some(Capped::new((each, atomic), span, flights, (queued, run)))
    }

    /// The caller's replies out of what the server sent back for
    /// `capped`, the caller's transaction followed through them.
    pub(crate) fn replies(&mut self, mut capped: Capped, mut values: Vec<Value>) -> Vec<Value> {
        for (home, key) in std::mem::take(&mut capped.run) {
            if self.is_back(home) {
                self.late.push(key);
            }
        }
        if capped.pipe.is_transaction() {
            // Sent whole: its `EXEC`'s reply holds every command's.
            if let Some(Value::Array(replies)) = values.last_mut() {
                keep_theirs(replies, &capped.ours);
            }
            return values;
        }
        let queued = &mut self.queued;
        let mut theirs = Vec::with_capacity(values.len());
        for ((ours, turn), mut value) in capped.ours.iter().zip(&capped.turns).zip(values) {
            match turn {
                Turn::Opens if value == Value::Okay => {
                    *queued = Queued { open: true, ..Queued::default() }
                }
                Turn::Ends => {
                    let layout = std::mem::take(queued);
                    if let Value::Array(replies) = &mut value
                        && layout.open
                        && layout.ours.len() == replies.len()
                    {
                        keep_theirs(replies, &layout.ours);
                    }
                }
                _ if queued.open && is_queued(&value) => queued.ours.push(*ours),
                _ => {}
            }
            if !ours {
                theirs.push(value);
            }
        }
        if queued.open {
            queued.writes.extend(capped.queued);
        }
        let (offset, count) = capped.span;
        theirs.into_iter().skip(offset).take(count).collect()
    }

    /// The connection's replies were lost (an error): the transaction it
    /// followed, if any, can no longer be.
    pub(crate) fn lost(&mut self) {
        self.queued = Queued::default();
    }

    /// The delete to send after the caller's round trip, on this
    /// connection, of the copies its writes left here for homes back
    /// since they were routed ([`is_back`](Self::is_back)): once it is
    /// `quiet` (no transaction open, no key watched: the delete aborts
    /// nothing and is not queued), else kept for then. Capped and
    /// remembered as every stand-in write, a copy whose delete is never
    /// sent (the connection lost) still expires, and goes at the next
    /// return.
    pub(crate) fn late(&mut self, quiet: bool) -> Option<Cmd> {
        if !quiet || self.late.is_empty() {
            return None;
        }
        // `UNLINK`: a large value is freed in the background, not on the
        // caller's time.
        let mut del = redis::cmd("UNLINK");
        for key in self.late.drain(..) {
            del.arg(&*key);
        }
        Some(del)
    }
}

/// Whether a reply says its command was queued in a transaction.
fn is_queued(value: &Value) -> bool {
    matches!(value, Value::SimpleString(s) if s == "QUEUED")
}

/// `replies` without those `ours` marks as the pool's.
fn keep_theirs(replies: &mut Vec<Value>, ours: &[bool]) {
    let mut marks = ours.iter();
    replies.retain(|_| !marks.next().copied().unwrap_or(false));
}

/// `keys`, each with its home, by home.
fn by_home(keys: impl Iterator<Item = Homed>) -> Vec<(usize, Vec<Box<[u8]>>)> {
    let mut homes: Vec<(usize, Vec<Box<[u8]>>)> = Vec::new();
    for (home, key) in keys {
        match homes.iter_mut().find(|(h, _)| *h == home) {
            Some((_, keys)) => keys.push(key),
            None => homes.push((home, vec![key])),
        }
    }
    homes
}

/// The cap of a stand-in's copy of `key`: its TTL becomes at most `ttl`
/// (`LT` never lengthens one, and sets one on a key without).
pub(crate) fn cap(key: &[u8], ttl: Duration) -> Cmd {
    let mut cmd = expire(key, ttl);
    cmd.arg("LT");
    cmd
}

/// What goes on the wire for the caller's commands with their records and
/// caps, in both flavours: each command between its own, inside its
/// `MULTI`/`EXEC` if it is an atomic pipeline (so they apply with its
/// writes, and not if it aborts); and how its own replies are taken back
/// ([`StandIn::replies`]). It holds the writes' [`Flight`]s until then.
pub(crate) struct Capped {
    /// The pipeline to send, and which of its replies to read (as
    /// `req_packed_commands` takes them).
    pub(crate) pipe: Pipeline,
    pub(crate) offset: usize,
    pub(crate) count: usize,
    /// For each command of `pipe`, whether it is the pool's, and what it
    /// does to a transaction.
    ours: Vec<bool>,
    turns: Vec<Turn>,
    /// The caller's span of its own commands' replies.
    span: (usize, usize),
    _flights: Vec<Flight>,
    /// The keys remembered by its writes queued in the caller's
    /// transaction, left open after it.
    queued: Vec<Homed>,
    /// The keys remembered by its writes that run with it (`EXEC`'s
    /// queued writes included), each with its home.
    run: Vec<Homed>,
}

impl Capped {
    /// The caller's commands, atomic or not (whose caller wants `span`),
    /// each with what goes around it and what it does to a transaction.
    fn new(
        (each, atomic): (Vec<(&Cmd, Around, Turn)>, bool),
        span: (usize, usize),
        flights: Vec<Flight>,
        (queued, run): (Vec<Homed>, Vec<Homed>),
    ) -> Self {
        let mut capped = Capped {
            pipe: redis::pipe(),
            offset: 0,
            count: 0,
            ours: Vec::new(),
            turns: Vec::new(),
            span,
            _flights: flights,
            queued,
            run,
        };
        for (cmd, Around { first, last, .. }, turn) in each {
            let ours = |cmd| (cmd, true, Turn::Other);
            let wire = first.into_iter().map(ours).chain([(cmd.clone(), false, turn)]);
            for (cmd, mine, turn) in wire.chain(last.into_iter().map(ours)) {
                capped.pipe.add_command(cmd);
                capped.ours.push(mine);
                capped.turns.push(turn);
            }
        }
        let added = capped.ours.iter().filter(|&&mine| mine).count();
        (capped.offset, capped.count) = if atomic {
            // An atomic pipeline packs `MULTI` before its commands and
            // `EXEC` after them; the replies to them all come in `EXEC`'s.
            capped.pipe.atomic();
            (span.0 + added, span.1)
        } else {
            // Every reply, to follow the caller's transaction through them.
            (0, capped.ours.len())
        };
        capped
    }
}
