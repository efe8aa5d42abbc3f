//! A stand-in's writes: what its connection needs to cap and remember
//! them (where each key lives, [`Homes`], data handed down with the table
//! the call was routed by), the caps for the commands it sends
//! ([`StandIn::caps`]), and where they go on the wire, the same in both
//! flavours ([`Capped`]).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisResult, Value};

use super::journal::{Journal, expire};
use super::table::{Reach, written};
use crate::route::Router;

/// Where keys live: the pool's router and, by the same index, each node's
/// journal. Built with each table of nodes.
#[derive(Debug)]
pub(crate) struct Homes {
    pub(crate) router: Router,
    pub(crate) journals: Vec<Arc<Journal>>,
}

/// What a connection to a stand-in needs to cap and remember its writes
/// of keys whose home is elsewhere (`stand_in_ttl`,
/// `invalidate_on_return`). Only such connections carry one.
#[derive(Debug)]
pub(crate) struct StandIn {
    pub(crate) homes: Arc<Homes>,
    /// The node serving, by index in `homes`.
    pub(crate) serving: usize,
    /// The key the connection was taken for, if one was.
    pub(crate) key: Option<Box<[u8]>>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) remember: bool,
}

/// What a stand-in sends with a caller's commands: `first` before them
/// (with a fleet, each key's record on the stand-in, so that a return
/// that reads the record meanwhile finds the key before its copy exists),
/// `last` after them (the caps, which need the copies written).
#[derive(Debug, Default)]
pub(crate) struct Caps {
    pub(crate) first: Vec<Cmd>,
    pub(crate) last: Vec<Cmd>,
}

impl StandIn {
    /// What to send with `cmds` (each its words), for each key they write
    /// whose home is not the serving node: its cap, and if the home's
    /// return invalidates, its record, each key remembered first so that a
    /// return that invalidates meanwhile sees it. `None`: nothing to send
    /// (no write of a key homed elsewhere), the commands go as they are.
    pub(crate) fn caps<'w, W: AsRef<[&'w [u8]]>>(
        &self,
        cmds: impl IntoIterator<Item = W>,
    ) -> Option<Caps> {
        let mut caps = Caps::default();
        for words in cmds {
            let (keys, reach) = written(words.as_ref());
            let taken = self.key.as_deref().filter(|_| reach == Reach::More);
            for key in keys.into_iter().chain(taken) {
                let Some(home) = self.homes.router.home(key).filter(|&h| h != self.serving) else {
                    continue;
                };
                caps.last.extend(self.ttl.map(|ttl| cap(key, ttl)));
                if self.remember {
                    let journal = &self.homes.journals[home];
                    journal.remember(key);
                    caps.first.extend(journal.record(key, self.ttl));
                }
            }
        }
        (!caps.first.is_empty() || !caps.last.is_empty()).then_some(caps)
    }
}

/// The cap of a stand-in's copy of `key`: its TTL becomes at most `ttl`
/// (`LT` never lengthens one, and sets one on a key without).
pub(crate) fn cap(key: &[u8], ttl: Duration) -> Cmd {
    let mut cmd = expire(key, ttl);
    cmd.arg("LT");
    cmd
}

/// What goes on the wire for a pipeline whose stand-in writes need
/// `caps`, in both flavours: the caps after its commands, inside its
/// `MULTI`/`EXEC` if it is a transaction, so they apply with its writes
/// (and not if it aborts); and how its own replies are taken back.
pub(crate) struct Capped {
    /// The pipeline to send, and where the caller's replies are in its
    /// replies (as `req_packed_commands` takes them).
    pub(crate) pipe: Pipeline,
    pub(crate) offset: usize,
    pub(crate) count: usize,
    /// How many commands came before the caller's, and after.
    caps: (usize, usize),
}

impl Capped {
    /// `pipeline`, whose caller wants `count` replies from `offset`, with
    /// `caps`.
    pub(crate) fn new(pipeline: &Pipeline, (offset, count): (usize, usize), caps: Caps) -> Self {
        let (first, last) = (caps.first.len(), caps.last.len());
        let mut pipe = redis::pipe();
        if pipeline.is_transaction() {
            pipe.atomic();
        }
        for cmd in caps.first.into_iter().chain(pipeline.cmd_iter().cloned()).chain(caps.last) {
            pipe.add_command(cmd);
        }
        // An atomic pipeline packs `EXEC` after its commands, caps
        // included; the replies to them all come inside `EXEC`'s.
        let (offset, count) = if pipe.is_transaction() {
            (offset + first + last, count)
        } else {
            (offset + first, count + last)
        };
        Capped { pipe, offset, count, caps: (first, last) }
    }

    /// `pipeline`, whose caller wants `span` of its replies, with `caps`,
    /// in one round trip on `wire`: the caller's replies.
    pub(crate) async fn send<W: ConnectionLike>(
        wire: &mut W,
        pipeline: &Pipeline,
        span: (usize, usize),
        caps: Caps,
    ) -> RedisResult<Vec<Value>> {
        let capped = Capped::new(pipeline, span, caps);
        let values = wire.req_packed_commands(&capped.pipe, capped.offset, capped.count).await?;
        Ok(capped.replies(values))
    }

    /// The caller's replies out of what the server sent back.
    pub(crate) fn replies(&self, mut values: Vec<Value>) -> Vec<Value> {
        let (first, last) = self.caps;
        if !self.pipe.is_transaction() {
            values.truncate(values.len().saturating_sub(last));
        } else if let Some(Value::Array(replies)) = values.last_mut() {
            replies.truncate(replies.len().saturating_sub(last));
            replies.drain(..first.min(replies.len()));
        }
        values
    }
}

/// The pipeline packed in `bytes` (as a blocking connection gets it),
/// atomic if it is wrapped in `MULTI` and `EXEC`: what the synchronous
/// flavour hands to [`Capped`].
#[cfg(feature = "r2d2")]
pub(crate) fn unpacked(commands: Vec<Vec<&[u8]>>) -> Pipeline {
    let word = |c: Option<&Vec<&[u8]>>, name: &[u8]| {
        c.and_then(|c| c.first()).is_some_and(|w| w.eq_ignore_ascii_case(name))
    };
    let atomic =
        commands.len() >= 2 && word(commands.first(), b"MULTI") && word(commands.last(), b"EXEC");
    let inner = if atomic { &commands[1..commands.len() - 1] } else { &commands[..] };
    let mut pipe = redis::pipe();
    if atomic {
        pipe.atomic();
    }
    for words in inner {
        let mut cmd = Cmd::new();
        for word in words {
            cmd.arg(*word);
        }
        pipe.add_command(cmd);
    }
    pipe
}
