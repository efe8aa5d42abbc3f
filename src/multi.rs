//! Operations over several nodes at once: sharded pipelines, multi-key
//! commands split by node, fan-out to every healthy node, and replica sets
//! of connections. Here they build their commands and merge the replies;
//! the routing is the runtime's, in its single and batch steps
//! (`runtime/step.rs`).

use std::future::Future;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, ToRedisArgs, Value};

use crate::backend::manager::RedisManager;
use crate::error::{Error, OnNode};
use crate::node::connection::{Connection, own_reply};
use crate::node::tracked::NodeManager;
use crate::pool::{Pooled, ShardedPool};
use crate::route;

/// Commands for several nodes, each with the key that routes it, sent as one
/// pipeline per node. From [`ShardedPool::pipeline`].
///
/// [`query_async`](Self::query_async) groups the commands by node, sends each
/// group as one pipeline on one connection, runs the groups concurrently and
/// returns every reply in the order the commands were added. A group whose
/// node turns out to be boxed is re-routed, before anything is sent, like
/// a `get` of its keys; a command that fails gets its error in its place,
/// the others their replies.
///
/// ```no_run
/// # async fn run(pool: fluster::ShardedPool) -> Result<(), fluster::Error> {
/// let mut pipe = pool.pipeline();
/// for user in ["alice", "bob", "carol"] {
///     let key = format!("visits:{user}");
///     pipe.add(&key, redis::cmd("INCR").arg(&key).clone());
/// }
/// for reply in pipe.query_async().await? {
///     let visits: i64 = redis::from_redis_value(reply?)?;
///     println!("{visits}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ShardedPipeline<'p, M: NodeManager = RedisManager> {
    pool: &'p ShardedPool<M>,
    commands: Vec<(u64, Cmd)>,
}

impl<M: NodeManager> ShardedPool<M> {
    /// An empty [`ShardedPipeline`] on this pool.
    pub fn pipeline(&self) -> ShardedPipeline<'_, M> {
        ShardedPipeline { pool: self, commands: Vec::new() }
    }
}

impl<M> ShardedPipeline<'_, M>
where
    M: NodeManager,
    M::Connection: ConnectionLike + Send,
{
    /// Adds `cmd`, routed by `key` (hash tags honoured).
    pub fn add<K: AsRef<[u8]>>(&mut self, key: K, cmd: Cmd) -> &mut Self {
        self.commands.push((route::key_hash(key.as_ref()), cmd));
        self
    }

    /// Number of commands added.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether no command was added.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Sends every group and returns the replies in the order the commands
    /// were added. The outer error is for the whole call ([`Error::Closed`]);
    /// each command has its own result, so one node's failure does not hide
    /// the others' replies.
    pub async fn query_async(&self) -> Result<Vec<Result<Value, Error>>, Error> {
        let hashes: Vec<u64> = self.commands.iter().map(|(hash, _)| *hash).collect();
        let groups = self
            .pool
            .core
            .batch::<Pooled, _, _, _>(&hashes, |mut conn, positions| async move {
                let mut pipe = redis::pipe();
                for &p in &positions {
                    pipe.add_command(self.commands[p].1.clone());
                }
                let values = conn.req_packed_commands(&pipe, 0, positions.len()).await;
                let node = conn.node();
                Ok(values.on(node)?.into_iter().map(|v| own_reply(v).on(node)).collect::<Vec<_>>())
            })
            .await?;
        let mut replies: Vec<Option<Result<Value, Error>>> =
            std::iter::repeat_with(|| None).take(hashes.len()).collect();
        for (positions, outcome) in groups {
            match outcome {
                Ok(values) => {
                    for (p, value) in positions.into_iter().zip(values) {
                        replies[p] = Some(value);
                    }
                }
                Err(e) => {
                    for p in positions {
                        replies[p] = Some(Err(e.clone()));
                    }
                }
            }
        }
        Ok(replies.into_iter().map(|r| r.unwrap_or(Err(Error::NoHealthyNodes))).collect())
    }
}

impl<M> ShardedPool<M>
where
    M: NodeManager,
    M::Connection: ConnectionLike + Send,
{
    /// An optimistic transaction on the node of `key`: `WATCH`es `watched`,
    /// then calls `f` with the connection and an atomic pipeline. `f` reads
    /// what it needs, queues its writes and runs the pipeline
    /// (`pipe.query_async(conn)`), returning `Ok(None)` when `EXEC` was
    /// aborted because a watched key changed: then it all runs again.
    ///
    /// Failover happens only before the first command: once `WATCH` is
    /// sent, the transaction stays on its node (an error ends it).
    ///
    /// Every watched key must go wherever `key` goes, whatever the nodes'
    /// health, or a write to it through a stand-in the transaction does not
    /// use would go unseen: give them one hash tag (`{cart:7}.items`,
    /// `{cart:7}.total`). A watched key without `key`'s tag is refused with
    /// [`Error::Config`] naming it unless its route is `key`'s: the same
    /// ranking over the nodes and over the gutter nodes (sharing the home
    /// today is not enough: when it is boxed, each key goes to the next in
    /// its own ranking), and with a [`warmup`](crate::Builder::warmup), in
    /// which a returning node takes keys back by their hash, the same hash.
    /// Under [`Failover::FailFast`](crate::Failover::FailFast) the same home
    /// is enough: no key goes elsewhere.
    ///
    /// ```no_run
    /// # async fn run(pool: fluster::ShardedPool) -> Result<(), fluster::Error> {
    /// use redis::AsyncCommands;
    /// let doubled: i64 = pool
    ///     .transaction("{acct}.balance", &["{acct}.balance"], async |conn, pipe| {
    ///         let balance: i64 = conn.get("{acct}.balance").await?;
    ///         pipe.set("{acct}.balance", balance * 2).ignore();
    ///         let done: Option<()> = pipe.query_async(conn).await?;
    ///         Ok(done.map(|()| balance * 2))
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction<K, T, F>(&self, key: K, watched: &[&str], mut f: F) -> Result<T, Error>
    where
        K: AsRef<[u8]>,
        F: AsyncFnMut(&mut Connection<M>, &mut redis::Pipeline) -> Result<Option<T>, Error>,
    {
        let stray = watched.iter().find(|w| !self.core.routes_alike(key.as_ref(), w.as_bytes()));
        if let Some(stray) = stray {
            let key = String::from_utf8_lossy(key.as_ref());
            return Err(Error::config(
                format!("watched key `{stray}`"),
                format!(
                    "is not routed like the transaction's key `{key}`: while a node is boxed \
                     they may go to different nodes; give them one hash tag (`{{tag}}.a`, \
                     `{{tag}}.b`)"
                ),
            ));
        }
        let mut conn = self.get(key).await?;
        loop {
            if !watched.is_empty() {
                let watch = redis::cmd("WATCH").arg(watched).query_async::<()>(&mut conn).await;
                watch.on(conn.node())?;
            }
            let mut pipe = redis::pipe();
            pipe.atomic();
            if let Some(done) = f(&mut conn, &mut pipe).await? {
                return Ok(done);
            }
        }
    }

    /// `GET` of many keys, as one `MGET` per node, run concurrently; the
    /// values come back in the order of `keys`. Fails as a whole if any
    /// node's `MGET` fails.
    pub async fn mget<K, V>(&self, keys: &[K]) -> Result<Vec<Option<V>>, Error>
    where
        K: AsRef<[u8]> + Sync,
        V: FromRedisValue,
    {
        let groups = self
            .per_node::<Vec<Value>, _>("MGET", keys.iter().map(|k| k.as_ref()), |cmd, p| {
                cmd.arg(keys[p].as_ref());
            })
            .await?;
        let mut values: Vec<Option<V>> = std::iter::repeat_with(|| None).take(keys.len()).collect();
        for (positions, outcome) in groups {
            for (p, value) in positions.into_iter().zip(outcome?) {
                values[p] = redis::from_redis_value(value)?;
            }
        }
        Ok(values)
    }

    /// `SET` of many key-value pairs, as one `MSET` per node, run
    /// concurrently. Not atomic across nodes: if one node's `MSET` fails,
    /// the others may have been applied.
    pub async fn mset<K, V>(&self, pairs: &[(K, V)]) -> Result<(), Error>
    where
        K: AsRef<[u8]> + Sync,
        V: ToRedisArgs + Sync,
    {
        let groups = self
            .per_node::<(), _>("MSET", pairs.iter().map(|(k, _)| k.as_ref()), |cmd, p| {
                cmd.arg(pairs[p].0.as_ref()).arg(&pairs[p].1);
            })
            .await?;
        groups.into_iter().try_for_each(|(_, outcome)| outcome)
    }

    /// `DEL` of many keys, as one `DEL` per node, run concurrently; returns
    /// how many keys were removed in all.
    pub async fn del<K: AsRef<[u8]> + Sync>(&self, keys: &[K]) -> Result<u64, Error> {
        let groups = self
            .per_node::<u64, _>("DEL", keys.iter().map(|k| k.as_ref()), |cmd, p| {
                cmd.arg(keys[p].as_ref());
            })
            .await?;
        groups.into_iter().map(|(_, outcome)| outcome).sum()
    }

    /// One `name` command per node over the positions of `keys` (`args`
    /// adds one position's arguments), run concurrently through the
    /// runtime's batch step (`Core::batch`).
    async fn per_node<'k, R: FromRedisValue, I: Iterator<Item = &'k [u8]>>(
        &self,
        name: &str,
        keys: I,
        args: impl Fn(&mut Cmd, usize) + Sync,
    ) -> Result<Vec<(Vec<usize>, Result<R, Error>)>, Error> {
        let hashes: Vec<u64> = keys.map(route::key_hash).collect();
        self.core
            .batch::<Pooled, _, _, _>(&hashes, |mut conn, positions| {
                let mut cmd = redis::cmd(name);
                positions.iter().for_each(|&p| args(&mut cmd, p));
                async move { cmd.query_async::<R>(&mut conn).await.on(conn.node()) }
            })
            .await
    }
}

impl<M: NodeManager> ShardedPool<M> {
    /// Runs `f` on a connection to every healthy node, concurrently, and
    /// returns each node's name with its result (or the error that kept it
    /// from getting a connection): the nodes that hold keys in the order
    /// they were added, then the gutter nodes (which hold a boxed node's
    /// keys meanwhile).
    ///
    /// For the work a sharded store does on all shards: merging sorted sets,
    /// scanning, a queue consumer polling every node. It follows no key's
    /// route, on purpose: no key is asked for, so there is no home to fail
    /// over from; a boxed node is left out (its keys live on the others
    /// meanwhile) and no failover is counted. A connection to a node that
    /// holds keys says [`is_home`](Connection::is_home) (it is home to
    /// what it holds); a gutter node's does not.
    ///
    /// Its writes follow the stand-in rules key by key, judged when each
    /// command is sent (the keys from Redis's command table, as on every
    /// path): a write of a key whose home is another node that does not
    /// serve it now (boxed, or warming up and not yet given it) is a
    /// stand-in's write, and every write on a gutter node is one: capped by
    /// `stand_in_ttl` (on a gutter node by [`GUTTER_TTL`](crate::GUTTER_TTL)
    /// if unset) and, with `invalidate_on_return`, remembered and deleted
    /// when the home returns. A write of a key whose home is up is yours:
    /// left as it is on every node you sent it to.
    pub async fn fan_out<T, F, Fut>(&self, f: F) -> Vec<(String, Result<T, Error>)>
    where
        F: Fn(Connection<M>) -> Fut,
        Fut: Future<Output = T>,
    {
        self.core.every::<Pooled, _, _, _>(f).await
    }

    /// Connections to the key's first `n` healthy nodes in its ranking, for
    /// data kept on several nodes (write to all, read from any). A node
    /// boxed meanwhile is skipped for the next one in the ranking, so the
    /// other members stay the same. Returns fewer than `n` when fewer nodes
    /// are healthy, and [`Error::NoHealthyNodes`] when none is. Members are
    /// taken in ranking order whatever the failover policy: a replica set
    /// is the ranking's head. Their writes are never taken for a stand-in's
    /// (`stand_in_ttl` does not cap them).
    pub async fn get_n<K: AsRef<[u8]>>(
        &self,
        key: K,
        n: usize,
    ) -> Result<Vec<Connection<M>>, Error> {
        self.core.take_n::<Pooled>(key.as_ref(), n).await
    }
}
