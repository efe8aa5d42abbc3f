//! What a connection handed to a caller is to the send body: the wire its
//! commands go on, where their outcomes go, and what it needs of its
//! node (session, stand-in, near cache, warm window, command table).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, RedisError, RedisResult};

use crate::backend::near::{Fence, NearCache};
use crate::backend::resp2::Doubles;
use crate::command::session::{Effect, effect};
use crate::command::table::Known;
use crate::command::words::words;
use crate::health::failure::Failure;
use crate::node::tracked::{ConnectionAbilities, NodeManager};
use crate::node::warm::Elder;
use crate::stand_in::writes::{Capped, StandIn};

use super::claims::Claims;
use super::{Connection, SharedConnection};

/// What a pooled connection of either flavour (`conn`, its tracked
/// connection, whose session follows its commands and which is armed
/// while one is in flight; `stand_in`; `away`, its moved keys waiting for the end of a
/// transaction; `claims`, those its transaction claimed) answers the send
/// body, in one place for both.
macro_rules! pooled_parts {
    () => {
        fn admit<'c>(&mut self, cmds: impl Iterator<Item = &'c Cmd>) -> RedisResult<()> {
            self.conn.follow(cmds);
            Ok(())
        }
        fn arm(&mut self) {
            self.conn.in_flight = true;
        }
        fn stand_in(&mut self) -> Option<&mut StandIn> {
            self.stand_in.as_deref_mut()
        }
        fn near(&self) -> Option<&Arc<NearCache>> {
            self.conn.near.as_ref()
        }
        fn elder(&self) -> Option<Arc<dyn Elder>> {
            self.conn.resize.elder()
        }
        fn settle(&mut self, mut away: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
            self.away.append(&mut away);
            if self.conn.session.in_multi() { Vec::new() } else { std::mem::take(&mut self.away) }
        }
        fn in_transaction(&self) -> bool {
            self.conn.session.in_multi() || !self.away.is_empty()
        }
        fn quiet(&self) -> bool {
            self.conn.session.is_quiet()
        }
        #[inline]
        fn claims(&mut self) -> Option<(&mut $crate::node::connection::Claims, bool)> {
            Some((&mut self.claims, self.conn.session.in_multi()))
        }
        fn commands(&self) -> &Known {
            &self.conn.cell.commands
        }
    };
}
#[cfg(feature = "r2d2")]
pub(crate) use pooled_parts;

/// A connection handed to a caller: the wire its commands go on, and where
/// their outcomes go.
pub(crate) trait Observed: Send {
    type Wire: ConnectionLike + ConnectionAbilities + Send;
    fn wire(&mut self) -> &mut Self::Wire;
    /// Looks at the commands before they are sent: follows what they do to
    /// the session, or refuses them.
    fn admit<'c>(&mut self, cmds: impl Iterator<Item = &'c Cmd>) -> RedisResult<()>;
    /// A command is about to be sent: until [`observe`](Self::observe), the
    /// connection may hold a reply nobody will read.
    fn arm(&mut self);
    fn observe(&mut self, failure: Option<Failure<'_>>);
    /// What it needs to cap its writes, if it is a stand-in's.
    fn stand_in(&mut self) -> Option<&mut StandIn>;
    /// The near cache of its node, if it has one: its writes fence it.
    fn near(&self) -> Option<&Arc<NearCache>>;
    /// The resize its node is part of now, if any (one load if none),
    /// whenever the connection was taken.
    fn elder(&self) -> Option<Arc<dyn Elder>>;
    /// The keys moved away whose new homes' copies go now
    /// ([`Phase::After`](crate::node::warm::Phase)): `away`, and those of
    /// the transaction that just ended; none while one is open (its writes
    /// run at `EXEC`: they are kept till then).
    fn settle(&mut self, away: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        away
    }
    /// Whether a transaction sent one command at a time is open on it (or
    /// its keys are not yet settled): its writes are kept whether or not
    /// a resize is on, one may begin before its `EXEC`.
    fn in_transaction(&self) -> bool {
        false
    }
    /// Whether no transaction is open and no key watched on it
    /// ([`Session::is_quiet`](crate::node::session::Session::is_quiet)).
    fn quiet(&self) -> bool {
        true
    }
    /// The keys moved here that the writes queued in its transaction
    /// opened by hand claimed ([`Claims`]), and whether that transaction
    /// is open once the commands being sent are followed (if not, they
    /// end it): none on a connection that cannot open one.
    fn claims(&mut self) -> Option<(&mut Claims, bool)> {
        None
    }
    /// Its node's command table.
    fn commands(&self) -> &Known;
    /// Waits for one of the resize's own futures ([`Elder`]'s read of an
    /// old home, its deletes of other copies): in the caller's task here;
    /// a blocking connection has its pool's runtime run it, and waits.
    fn resized<T: Send + 'static>(
        &self,
        work: BoxFuture<'static, RedisResult<T>>,
    ) -> BoxFuture<'static, RedisResult<T>> {
        work
    }
    /// Whether its reads may be answered by that near cache: it is the
    /// node's tracking connection, whose invalidations keep it true.
    fn reads_near(&self) -> bool {
        false
    }
    /// What goes on the wire for `cmds` (atomic or not, the caller wanting
    /// `span` of the replies), if more than they: only a stand-in's
    /// connection looks at what it writes ([`StandIn::wrap`]).
    fn wrap<'c>(
        &mut self,
        cmds: (impl Iterator<Item = &'c Cmd>, bool),
        span: (usize, usize),
    ) -> Option<Capped> {
        self.stand_in()?.wrap(cmds, span)
    }
    /// Takes the fence of a write sent inside a transaction, which runs at
    /// `EXEC`: held until a reply after the transaction ended
    /// ([`observe`](Self::observe)). Any other fence is handed back, to be
    /// lifted at its own reply.
    fn queue<'k>(&mut self, fence: Fence<&'k [u8]>) -> Option<Fence<&'k [u8]>> {
        Some(fence)
    }
    /// How its replies reach the caller (and its near cache): a tracking
    /// connection's RESP3 in its RESP2 form, written so. `None`: as they come.
    fn resp2(&self) -> Option<Doubles> {
        self.near().filter(|_| self.reads_near()).map(|cache| cache.doubles())
    }
}

impl<M: NodeManager> Observed for Connection<M>
where
    M::Connection: ConnectionLike + Send,
{
    type Wire = M::Connection;
    fn wire(&mut self) -> &mut M::Connection {
        &mut self.conn.conn
    }
    /// A reply after the transaction ended (`EXEC`'s, `DISCARD`'s, or any
    /// later one: replies come in order) lifts its writes' fences.
    fn observe(&mut self, failure: Option<Failure<'_>>) {
        self.conn.in_flight = false;
        self.conn.observe(failure);
        if !self.queued.is_empty() && !self.conn.session.in_multi() {
            self.queued.clear();
        }
    }
    pooled_parts!();
    fn queue<'k>(&mut self, fence: Fence<&'k [u8]>) -> Option<Fence<&'k [u8]>> {
        if !self.conn.session.in_multi() {
            return Some(fence);
        }
        self.queued.push(fence.held());
        None
    }
}

impl<M: NodeManager> Observed for SharedConnection<M>
where
    M::Connection: ConnectionLike + Send,
{
    type Wire = M::Connection;
    fn wire(&mut self) -> &mut M::Connection {
        &mut self.conn
    }
    /// Refuses, unsent, what would change or block the connection every
    /// caller of the node shares. An atomic pipeline is sent whole, so its
    /// own `MULTI`/`EXEC` are safe; they are not among its commands here.
    /// A near-cached connection whose socket closed, or whose node was
    /// boxed since, is refused too: it would answer from entries no
    /// invalidation reaches, or of a node that is out.
    fn admit<'c>(&mut self, cmds: impl Iterator<Item = &'c Cmd>) -> RedisResult<()> {
        let mux = &self.mux;
        if mux.near.is_some() && !mux.is_live() {
            let gone =
                "the shared connection is gone, and its near cache with it: get_shared again";
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, gone).into());
        }
        for cmd in cmds {
            if effect(words(cmd), &mux.cell.commands) != Effect::None {
                let name = words(cmd).next().map(String::from_utf8_lossy).unwrap_or_default();
                let detail = format!(
                    "{} changes or blocks the connection that every get_shared caller of \
                     this node shares: send it on a connection from ShardedPool::get",
                    name.to_uppercase()
                );
                let refused = "command refused on a shared connection";
                return Err(RedisError::from((ErrorKind::Client, refused, detail)));
            }
        }
        Ok(())
    }
    // A multiplexed connection matches replies to requests itself: a
    // dropped request leaves nothing behind for the next caller.
    fn arm(&mut self) {}
    fn observe(&mut self, failure: Option<Failure<'_>>) {
        self.mux.observe(failure);
    }
    fn stand_in(&mut self) -> Option<&mut StandIn> {
        self.stand_in.as_deref_mut()
    }
    fn near(&self) -> Option<&Arc<NearCache>> {
        self.mux.near.as_ref()
    }
    fn elder(&self) -> Option<Arc<dyn Elder>> {
        self.mux.resize.elder()
    }
    fn commands(&self) -> &Known {
        &self.mux.cell.commands
    }
    fn reads_near(&self) -> bool {
        self.mux.near.is_some()
    }
}
