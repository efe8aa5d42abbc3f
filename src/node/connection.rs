//! The connections handed to callers: [`Connection`] from a node's pool,
//! [`SharedConnection`] a clone of its multiplexed connection. Both report
//! every outcome, error *or* error reply, to their node through one
//! [`ConnectionLike`] body, which also hides `aside`'s leases from their
//! readers (`lease.rs`).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bb8::PooledConnection;
use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::backend::manager::RedisManager;
use crate::backend::near::{Fence, HeldFence, Look, NearCache};
use crate::backend::resp2::{self, Doubles};
use crate::command::read::{self, Read};
use crate::command::session::{Effect, effect};
use crate::command::table::Known;
use crate::command::words::words;
use crate::health::failure::{Failure, FailureKind, Replies, failure};
use crate::node::lease::unmarked;
use crate::node::shared::Muxed;
use crate::node::tracked::{ConnectionAbilities, NodeManager, Tracked};
use crate::node::warm::{self, Elder, Plan};
use crate::stand_in::writes::{Capped, StandIn};

/// A connection checked out of one node's pool; it goes back when dropped.
///
/// It derefs to the manager's connection (for [`RedisManager`] a
/// [`redis::aio::MultiplexedConnection`]). For Redis connections it also
/// implements [`redis::aio::ConnectionLike`] itself, so `query_async` and
/// [`redis::AsyncCommands`] work on it directly, and every reply is checked:
/// an I/O error, a timeout or a node's error reply (`LOADING`, `READONLY`,
/// `NOAUTH`, `MASTERDOWN`) marks the connection broken (the pool drops it
/// instead of reusing it) and counts against its node's health. So does a
/// command whose future was dropped before its reply came. A string reply
/// that is an [`aside`](crate::ShardedPool::aside) lease reads as nil (a
/// miss), alone or inside an array. Commands sent through the deref'd
/// inner connection bypass those checks.
pub struct Connection<M: NodeManager = RedisManager> {
    conn: PooledConnection<'static, Tracked<M>>,
    home: bool,
    stand_in: Option<Box<StandIn>>,
    /// The near-cache fences of the writes queued in its open transaction,
    /// lifted after `EXEC`'s or `DISCARD`'s reply, or when it goes back.
    queued: Vec<HeldFence>,
    /// The node was added warm and its window is open (`node/warm.rs`).
    warm: Option<Arc<dyn Elder>>,
}

impl<M: NodeManager> Connection<M> {
    pub(crate) fn new(
        conn: PooledConnection<'static, Tracked<M>>,
        home: bool,
        stand_in: Option<Box<StandIn>>,
    ) -> Self {
        Connection { conn, home, stand_in, queued: Vec::new(), warm: None }
    }

    /// The connection with its node's warm window, if it has one.
    pub(crate) fn warmed(self, warm: Option<Arc<dyn Elder>>) -> Self {
        Connection { warm, ..self }
    }

    /// The name of the node this connection belongs to.
    pub fn node(&self) -> &str {
        &self.conn.cell.name
    }

    /// Whether this node is the key's home. False when a stand-in serves
    /// the key (its home is boxed, or still warming up): what is written
    /// here will be stale once the key goes home, so give it a short TTL.
    pub fn is_home(&self) -> bool {
        self.home
    }

    /// Reports a failure seen on this connection: the connection is dropped
    /// instead of returned to the pool, and the failure counts against the
    /// node (a [`FailureKind::Timeout`] boxes it only after several in a
    /// row). Redis connections report by themselves; this is for
    /// connections of other managers, whose replies the pool cannot see.
    pub fn report_failure(&mut self, kind: FailureKind) {
        self.conn.observe(Some((kind, &"reported by the caller")));
    }
}

impl<M: NodeManager> Deref for Connection<M> {
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        &self.conn.conn
    }
}

impl<M: NodeManager> DerefMut for Connection<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self.conn.conn
    }
}

impl<M: NodeManager> fmt::Debug for Connection<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("node", &self.conn.cell.name).finish_non_exhaustive()
    }
}

/// A clone of one node's multiplexed connection, from
/// [`ShardedPool::get_shared`](crate::ShardedPool::get_shared).
///
/// Cheap to get and to drop (nothing goes back to a pool); many tasks' clones
/// pipeline their commands on the same socket. Like [`Connection`] it
/// implements [`redis::aio::ConnectionLike`] and reports every failure: the
/// multiplexed connection is then replaced on the next `get_shared`, and the
/// failure counts against the node. Not for commands that change the
/// connection's state (`SELECT`, `SUBSCRIBE`, `MULTI`/`WATCH`, blocking
/// pops): those need a connection of their own, from
/// [`get`](crate::ShardedPool::get).
pub struct SharedConnection<M: NodeManager = RedisManager> {
    conn: M::Connection,
    mux: Arc<Muxed<M::Connection>>,
    home: bool,
    stand_in: Option<Box<StandIn>>,
    /// The node was added warm and its window is open (`node/warm.rs`).
    warm: Option<Arc<dyn Elder>>,
}

impl<M: NodeManager> SharedConnection<M>
where
    M::Connection: Clone,
{
    pub(crate) fn new(
        mux: Arc<Muxed<M::Connection>>,
        home: bool,
        stand_in: Option<Box<StandIn>>,
    ) -> Self {
        SharedConnection { conn: mux.conn.clone(), mux, home, stand_in, warm: None }
    }

    /// The connection with its node's warm window, if it has one.
    pub(crate) fn warmed(self, warm: Option<Arc<dyn Elder>>) -> Self {
        SharedConnection { warm, ..self }
    }
}

impl<M: NodeManager> SharedConnection<M> {
    /// The name of the node this connection belongs to.
    pub fn node(&self) -> &str {
        &self.mux.cell.name
    }

    /// Whether this node is the key's home; see [`Connection::is_home`].
    pub fn is_home(&self) -> bool {
        self.home
    }

    /// Its node's near cache, if it has one.
    pub(crate) fn near_cache(&self) -> Option<&NearCache> {
        self.mux.near.as_deref()
    }
}

impl<M: NodeManager> Deref for SharedConnection<M> {
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        &self.conn
    }
}

impl<M: NodeManager> DerefMut for SharedConnection<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self.conn
    }
}

impl<M: NodeManager> fmt::Debug for SharedConnection<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedConnection")
            .field("node", &self.mux.cell.name)
            .finish_non_exhaustive()
    }
}

/// A reply's error, if it is one: what `req_packed_command` returns.
pub(crate) fn own_reply(value: Value) -> RedisResult<Value> {
    match value {
        Value::ServerError(e) => Err(e.into()),
        value => Ok(value),
    }
}

/// The one reply of a command sent with its stand-in's own
/// ([`StandIn::replies`] hands back the caller's alone), as
/// `req_packed_command` returns it.
pub(crate) fn only_reply(values: Vec<Value>) -> RedisResult<Value> {
    let missing = || RedisError::from((ErrorKind::Client, "no reply to the command"));
    values.into_iter().next().ok_or_else(missing).and_then(own_reply)
}

/// The stand-in's `capped` commands in one round trip (see [`Capped`]);
/// the caller's own replies.
async fn capped<O: Observed>(conn: &mut O, capped: Capped) -> RedisResult<Vec<Value>> {
    let values = conn.wire().req_packed_commands(&capped.pipe, capped.offset, capped.count).await;
    // `capped` came from the connection's stand-in, which is still there.
    let Some(stand_in) = conn.stand_in() else { return values };
    match values {
        Ok(values) => Ok(stand_in.replies(capped, values)),
        Err(e) => {
            stand_in.lost();
            Err(e)
        }
    }
}

/// A connection handed to a caller: the wire its commands go on, and where
/// their outcomes go.
trait Observed: Send {
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
    /// Its node's warm window, if it was added warm and the window is open.
    fn elder(&self) -> Option<&Arc<dyn Elder>>;
    /// Its node's command table.
    fn commands(&self) -> &Known;
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
    fn admit<'c>(&mut self, cmds: impl Iterator<Item = &'c Cmd>) -> RedisResult<()> {
        for cmd in cmds {
            let effect = effect(words(cmd), &self.conn.cell.commands);
            self.conn.session.apply(effect);
        }
        Ok(())
    }
    fn arm(&mut self) {
        self.conn.in_flight = true;
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
    fn stand_in(&mut self) -> Option<&mut StandIn> {
        self.stand_in.as_deref_mut()
    }
    fn near(&self) -> Option<&Arc<NearCache>> {
        self.conn.near.as_ref()
    }
    fn elder(&self) -> Option<&Arc<dyn Elder>> {
        self.warm.as_ref()
    }
    fn commands(&self) -> &Known {
        &self.conn.cell.commands
    }
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
    fn elder(&self) -> Option<&Arc<dyn Elder>> {
        self.warm.as_ref()
    }
    fn commands(&self) -> &Known {
        &self.mux.cell.commands
    }
    fn reads_near(&self) -> bool {
        self.mux.near.is_some()
    }
}

/// Sends `cmd` (with its stand-in's records and caps), and reports the
/// outcome.
async fn send<O: Observed>(conn: &mut O, cmd: &Cmd) -> RedisResult<Value> {
    let wrapped = conn.wrap((std::iter::once(cmd), false), (0, 1));
    conn.arm();
    let result = match wrapped {
        None => conn.wire().send_packed(cmd).await,
        // Rare, and kept out of the common path's future (boxed).
        Some(wrapped) => Box::pin(capped(conn, wrapped)).await.and_then(only_reply),
    };
    let result = judged(conn, result);
    result.map(|value| resp2::reply(cmd, value, conn.resp2()))
}

/// The end of every command sent for a caller: its outcome reported to
/// its node, its replies as fluster's readers see them (an `aside` lease
/// reads as a miss: see [`lease`](crate::node::lease)).
fn judged<O: Observed, V: Replies>(conn: &mut O, result: RedisResult<V>) -> RedisResult<V> {
    conn.observe(failure(&result));
    unmarked(result)
}

/// One command, admitted (and, with a near cache, looked up or fenced)
/// before its future is built: a connection without a near cache sends it
/// in one future, and a near-cache hit is answered by a future that holds
/// nothing but the value.
fn one<'a, O: Observed>(conn: &'a mut O, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
    if let Err(refused) = conn.admit(std::iter::once(cmd)) {
        return Box::pin(std::future::ready(Err(refused)));
    }
    if conn.elder().is_some() {
        // Rare (a node added warm, in its window): kept out of the common
        // path.
        return Box::pin(warmed(conn, cmd));
    }
    admitted(conn, cmd)
}

/// [`one`] once admitted.
fn admitted<'a, O: Observed>(conn: &'a mut O, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
    let Some(cache) = conn.near() else { return Box::pin(send(conn, cmd)) };
    let words: smallvec::SmallVec<[&[u8]; 4]> = words(cmd).collect();
    if conn.reads_near()
        && let Some(read) = read::read(&words)
    {
        return match cache.look(&read, &words) {
            // Counted against Tokio's budget, as a socket read is: a task
            // looping over hits still lets the others run.
            Look::Hit(value) => Box::pin(async move {
                tokio::task::coop::consume_budget().await;
                Ok(value)
            }),
            Look::Pass => Box::pin(send(conn, cmd)),
            Look::Fill(tickets) => Box::pin(fill(conn, cmd, read, words.to_vec(), tickets)),
        };
    }
    // A write's keys are fenced until its reply is in (or its future is
    // dropped); a write queued in a transaction, until the transaction's.
    let fence = cache.fence(&words);
    let fence = fence.and_then(|fence| conn.queue(fence));
    Box::pin(async move {
        let _fence = fence;
        send(conn, cmd).await
    })
}

/// One command on a connection to a node added warm, in its window: a
/// plain `GET` of a moved key that misses is read through from its old
/// home; a write of moved keys deletes their old copies first
/// (`node/warm.rs`). A moved key's `GET` passes the near cache by.
async fn warmed<O: Observed>(conn: &mut O, cmd: &Cmd) -> RedisResult<Value> {
    let Some(elder) = conn.elder().cloned() else { return admitted(conn, cmd).await };
    let words: smallvec::SmallVec<[&[u8]; 4]> = words(cmd).collect();
    match warm::plan(&words, &*elder, conn.commands()) {
        Plan::Plain => admitted(conn, cmd).await,
        Plan::Write(keys) => {
            elder.forget(keys).await;
            admitted(conn, cmd).await
        }
        Plan::Get(key) => {
            let value = send(conn, cmd).await?;
            if value != Value::Nil {
                return Ok(value);
            }
            Box::pin(read_through(conn, &*elder, key)).await
        }
    }
}

/// A moved key's miss on its new home: a marker there, the old home's
/// value and TTL, then the copy if the marker is still there. The value
/// read is returned whether or not it was copied; any failure of the
/// read-through reads as the miss it started from.
async fn read_through<O: Observed>(
    conn: &mut O,
    elder: &dyn Elder,
    key: &[u8],
) -> RedisResult<Value> {
    let token = warm::token();
    let marked = own(conn, &warm::marker(key, &token), key).await?;
    // The old home is asked now, after the marker: a write that could not
    // delete its copy there has ruled it out before our marker went in.
    let Some(read) = elder.read(key) else {
        if marked != Value::Nil {
            own(conn, &warm::copy(key, &token, None), key).await?;
        }
        return Ok(Value::Nil);
    };
    let (value, ttl) = read.await.unwrap_or((Value::Nil, -2));
    if marked == Value::Nil {
        // Another reader's marker, or a write since the miss: return what
        // the old home held then, copy nothing.
        return Ok(value);
    }
    let copied = match &value {
        Value::BulkString(bytes) if ttl != -2 && ttl != 0 => Some((bytes.as_slice(), ttl)),
        _ => None,
    };
    own(conn, &warm::copy(key, &token, copied), key).await?;
    Ok(value)
}

/// One of the pool's own commands on `key` (a marker, a copy) on the
/// caller's connection: the key fenced in the near cache while it is in
/// flight, the outcome judged.
async fn own<O: Observed>(conn: &mut O, cmd: &Cmd, key: &[u8]) -> RedisResult<Value> {
    let _fence = conn.near().and_then(|cache| cache.fence(&[b"DEL".as_slice(), key]));
    conn.arm();
    let result = conn.wire().send_packed(cmd).await;
    judged(conn, result)
}

/// A near-cache miss: `cmd` and each key's `PTTL` in one round trip, the
/// replies kept under `tickets`.
async fn fill<O: Observed>(
    conn: &mut O,
    cmd: &Cmd,
    read: Read<'_>,
    words: Vec<&[u8]>,
    tickets: Vec<u64>,
) -> RedisResult<Value> {
    let mut pipe = redis::pipe();
    pipe.add_command(cmd.clone());
    for key in read.keys() {
        pipe.cmd("PTTL").arg(key);
    }
    conn.arm();
    let result = conn.wire().req_packed_commands(&pipe, 0, pipe.len()).await;
    let mut values = judged(conn, result)?;
    let ttls = values.split_off(1);
    let value = resp2::reply(cmd, values.pop().unwrap_or(Value::Nil), conn.resp2());
    let replies = match (&read, &value) {
        (Read::Many(_), Value::Array(items)) => items.clone(),
        (Read::Many(_), _) => Vec::new(),
        (Read::One(_), value) => vec![value.clone()],
    };
    if let Some(cache) = conn.near() {
        cache.keep(&read, &words, &tickets, replies, &ttls);
    }
    own_reply(value)
}

/// A pipeline: sent with its caps, each write fenced in the near cache
/// while it is in flight (reads inside a pipeline go to the server).
async fn many<O: Observed>(
    conn: &mut O,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    conn.admit(pipeline.cmd_iter())?;
    if let Some(elder) = conn.elder().cloned() {
        let moved = pipeline.cmd_iter().flat_map(|cmd| {
            match warm::plan(&words(cmd).collect::<Vec<_>>(), &*elder, conn.commands()) {
                Plan::Write(keys) => keys,
                _ => Vec::new(),
            }
        });
        let moved: Vec<Vec<u8>> = moved.collect();
        if !moved.is_empty() {
            elder.forget(moved).await;
        }
    }
    let fences: Vec<Fence<&[u8]>> = match conn.near() {
        Some(cache) => pipeline
            .cmd_iter()
            .filter_map(|cmd| cache.fence(&words(cmd).collect::<Vec<_>>()))
            .collect(),
        None => Vec::new(),
    };
    let _fences: Vec<_> = fences.into_iter().filter_map(|fence| conn.queue(fence)).collect();
    let wrapped = conn.wrap((pipeline.cmd_iter(), pipeline.is_transaction()), (offset, count));
    conn.arm();
    let result = match wrapped {
        None => conn.wire().req_packed_commands(pipeline, offset, count).await,
        Some(wrapped) => capped(conn, wrapped).await,
    };
    let result = judged(conn, result);
    result.map(|values| resp2::replies(pipeline, offset, values, conn.resp2()))
}

/// The one body of both connections' [`ConnectionLike`]: sends on the
/// wire and reports the outcome.
macro_rules! connection_like {
    ($($conn:ident),*) => {$(
        impl<M> ConnectionLike for $conn<M>
        where
            M: NodeManager,
            M::Connection: ConnectionLike + Send,
        {
            fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
                one(self, cmd)
            }

            fn req_packed_commands<'a>(
                &'a mut self,
                pipeline: &'a Pipeline,
                offset: usize,
                count: usize,
            ) -> RedisFuture<'a, Vec<Value>> {
                Box::pin(many(self, pipeline, offset, count))
            }

            fn get_db(&self) -> i64 {
                self.conn.get_db()
            }
        }
    )*};
}

connection_like!(Connection, SharedConnection);
