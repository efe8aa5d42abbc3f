//! The synchronous flavour's connection: checked out of a node's r2d2
//! pool, blocking, its replies checked like the async flavour's; while
//! its node's keys move (a node added warm, or drained), each command goes
//! through the async flavour's own send body, its futures ready at once.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use redis::{Cmd, ConnectionLike, ErrorKind, RedisError, RedisResult, Value};
use tokio::runtime::Handle;

use crate::backend::manager::RedisManager;
use crate::backend::near::NearCache;
use crate::command::session::effect;
use crate::command::table::Known;
use crate::command::words::{packed, unpacked};
use crate::health::failure::{Failure, failure};
use crate::node::blocking::{R2d2, timed_out};
use crate::node::clock::Clock;
use crate::node::connection::{Claims, Observed, many, one, only_reply, pooled_parts};
use crate::node::lease::unmarked;
use crate::node::tracked::{Tracked, TrackedConn};
use crate::node::warm::Elder;
use crate::node::{CheckoutError, Node};
use crate::runtime::step::{Take, at_once};
use crate::stand_in::writes::{Capped, StandIn};

use super::run;

/// Checked out of the node's r2d2 pool, blocking: its future is ready at
/// once, so the single step runs [`at_once`].
pub(super) struct Blocking;

/// What a checkout gave, before it is a [`Connection`] of its pool.
pub(super) struct Taken(r2d2::PooledConnection<Tracked<RedisManager>>, bool, Option<Box<StandIn>>);

impl Take<RedisManager, R2d2> for Blocking {
    type Raw = r2d2::PooledConnection<Tracked<RedisManager>>;
    type Conn = Taken;
    fn take<'a>(
        node: &'a Node<RedisManager, R2d2>,
        clock: &'a Clock,
    ) -> impl Future<Output = Result<Self::Raw, CheckoutError>> + Send + 'a {
        std::future::ready(node.checkout_blocking(clock))
    }
    fn into_conn(conn: Self::Raw, home: bool, stand_in: Option<Box<StandIn>>) -> Taken {
        Taken(conn, home, stand_in)
    }
}

/// A connection checked out of one node's pool; it goes back when dropped.
///
/// Implements [`redis::ConnectionLike`], so [`redis::Commands`] work on it,
/// with every reply checked like the async
/// [`Connection`](crate::Connection)'s. (It does not deref to the inner
/// [`redis::Connection`]: `redis` would then route commands around the
/// checks; [`inner_mut`](Self::inner_mut) gives it for the rare need.)
pub struct Connection {
    conn: r2d2::PooledConnection<Tracked<RedisManager>>,
    home: bool,
    stand_in: Option<Box<StandIn>>,
    /// Its pool's runtime: where a resize's reads and deletes run.
    runtime: Handle,
    /// The keys its open transaction writes that moved away from its node
    /// (`node/warm.rs`): their new homes' copies go once it ends.
    away: Vec<Vec<u8>>,
    /// The keys moved here that its open transaction's writes claimed
    /// (`connection/claims.rs`): claimed again when its `EXEC` is sent.
    claims: Claims,
}

impl Connection {
    pub(super) fn new(Taken(conn, home, stand_in): Taken, runtime: &Handle) -> Self {
        let (runtime, away, claims) = (runtime.clone(), Vec::new(), Claims::default());
        Connection { conn, home, stand_in, runtime, away, claims }
    }

    /// Whether its commands go through the async flavour's send body: its
    /// node's keys move, or its transaction claimed some that did.
    #[inline]
    fn moving(&self) -> bool {
        self.conn.resize.elder().is_some() || !self.claims.is_empty()
    }

    /// The name of the node this connection belongs to.
    pub fn node(&self) -> &str {
        &self.conn.cell.name
    }

    /// Whether this node is the key's home; see
    /// [`Connection::is_home`](crate::Connection::is_home).
    pub fn is_home(&self) -> bool {
        self.home
    }

    /// The underlying connection, for what `ConnectionLike` does not cover
    /// (pub/sub, say). Commands sent through it are not checked: a failure
    /// there does not count against the node, and the connection is closed
    /// when dropped rather than handed on.
    pub fn inner_mut(&mut self) -> &mut redis::Connection {
        self.conn.session.taint();
        &mut self.conn.conn
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("sync::Connection").field("node", &self.node()).finish_non_exhaustive()
    }
}

impl Connection {
    /// What goes on the wire for the packed `cmd` with its stand-in's
    /// records and caps, placed as the async flavour places them
    /// ([`StandIn::wrap`]), if more than `cmd`.
    fn capped(&mut self, cmd: &[u8], span: (usize, usize)) -> Option<Capped> {
        let stand_in = self.stand_in.as_mut()?;
        let pipeline = unpacked(cmd, span);
        stand_in.wrap((pipeline.cmd_iter(), pipeline.is_transaction()), span)
    }

    /// Follows what the commands packed in `cmd` do to the session.
    fn follow(&mut self, cmd: &[u8]) {
        let conn = &mut self.conn;
        let known = conn.cell.commands.clone();
        packed(cmd, |words| effect(words, &known)).for_each(|e| conn.session.apply(e));
    }

    /// The capped pipeline on the wire; the caller's replies.
    fn send(&mut self, capped: Capped) -> RedisResult<Vec<Value>> {
        let bytes = capped.pipe.get_packed_pipeline();
        let values = self.conn.conn.req_packed_commands(&bytes, capped.offset, capped.count);
        // `capped` came from the connection's stand-in, which is still there.
        let Some(stand_in) = self.stand_in.as_mut() else { return values };
        match values {
            Ok(values) => {
                let replies = stand_in.replies(capped, values);
                if let Some(late) = stand_in.late(self.conn.session.is_quiet()) {
                    // As the async flavour's (`send.rs`).
                    let _ = self.conn.conn.req_packed_command(&late.get_packed_command());
                }
                Ok(replies)
            }
            Err(e) => {
                stand_in.lost();
                Err(e)
            }
        }
    }
}

impl Connection {
    /// One command while the node's keys move (a node added warm, in its
    /// window, or drained): through the async flavour's body, the same
    /// protocol (`node/warm.rs`), its futures ready at once.
    #[cold]
    fn moving_one(&mut self, cmd: &[u8]) -> Option<RedisResult<Value>> {
        let pipeline = unpacked(cmd, (0, 1));
        let cmd = pipeline.cmd_iter().next().filter(|_| pipeline.len() == 1)?;
        Some(at_once(one(self, cmd)))
    }

    /// [`moving_one`](Self::moving_one) for a pipeline.
    #[cold]
    fn moving_many(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        at_once(many(self, &unpacked(cmd, (offset, count)), offset, count))
    }
}

/// What a blocking connection is to the async flavour's send body while
/// its node's keys move: its wire is the blocking connection (each future
/// ready at once), and a resize's own reads and deletes of other nodes'
/// copies run on its pool's runtime while it waits.
impl Observed for Connection {
    type Wire = TrackedConn<redis::Connection>;
    fn wire(&mut self) -> &mut Self::Wire {
        &mut self.conn
    }
    fn observe(&mut self, failure: Option<Failure<'_>>) {
        self.conn.in_flight = false;
        self.conn.observe(failure);
    }
    pooled_parts!();
    fn resized<T: Send + 'static>(
        &self,
        work: BoxFuture<'static, RedisResult<T>>,
    ) -> BoxFuture<'static, RedisResult<T>> {
        let stopped = || {
            let detail = "the pool was closed or dropped".to_owned();
            Err(RedisError::from((ErrorKind::Client, "the pool's runtime stopped", detail)))
        };
        let done = run(&self.runtime, work).unwrap_or_else(stopped);
        Box::pin(std::future::ready(done))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        if self.moving()
            && let Some(result) = self.moving_one(cmd)
        {
            return result;
        }
        self.follow(cmd);
        let result = match self.capped(cmd, (0, 1)) {
            None => self.conn.conn.req_packed_command(cmd),
            Some(capped) => self.send(capped).and_then(only_reply),
        };
        let result = result.map_err(timed_out);
        self.conn.observe(failure(&result));
        unmarked(result)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        if self.moving() {
            return self.moving_many(cmd, offset, count);
        }
        self.follow(cmd);
        let result = match self.capped(cmd, (offset, count)) {
            None => self.conn.conn.req_packed_commands(cmd, offset, count),
            Some(capped) => self.send(capped),
        };
        let result = result.map_err(timed_out);
        self.conn.observe(failure(&result));
        unmarked(result)
    }

    fn get_db(&self) -> i64 {
        self.conn.conn.get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.conn.conn.check_connection()
    }

    fn is_open(&self) -> bool {
        self.conn.conn.is_open()
    }
}
