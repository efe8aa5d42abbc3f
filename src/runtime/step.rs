//! The routing policy's steps, which every path takes: one single step
//! ([`Core::take`]: `get`, `get_any`, `get_shared`, `get_n`, pub/sub and
//! both flavours) and one batch step ([`Core::batch`]: pipelines and the
//! multi-key commands split by node); beside them the one call that
//! follows no route ([`Core::every`]: `fan_out`). Each takes a
//! connection with a [`Take`], so what a connection is (pooled, shared,
//! blocking) is the caller's, and how a key is routed, failed over,
//! counted and capped is here alone.

use std::collections::BTreeMap;
use std::future::Future;

use futures_util::future::join_all;

use crate::error::Error;
use crate::node::clock::Clock;
use crate::node::tracked::NodeManager;
use crate::node::{CheckoutError, Node, Store};
use crate::route::{self, NodeName};
use crate::runtime::core::Core;
use crate::runtime::table::{Held, Route, Table};
use crate::settings::{Failover, GUTTER_TTL};
use crate::stand_in::writes::{Judge, StandIn};

/// How a caller takes a connection from one node: the node's checkout
/// itself (no future of its own around it), then what the caller is
/// handed. The blocking flavour's checkout blocks, and its future is ready
/// at once.
pub(crate) trait Take<M: NodeManager, S> {
    /// What the node's checkout gives.
    type Raw;
    /// What the caller gets.
    type Conn;
    /// The checkout from `node`.
    fn take<'a>(
        node: &'a Node<M, S>,
        clock: &'a Clock,
    ) -> impl Future<Output = Result<Self::Raw, CheckoutError>> + Send + 'a;
    /// The caller's connection; `home` says whether it is the key's home,
    /// `stand_in` what a stand-in's connection needs.
    fn into_conn(raw: Self::Raw, home: bool, stand_in: Option<Box<StandIn>>) -> Self::Conn;
}

impl<M: NodeManager, S: Store<M>> Core<M, S> {
    /// The routing policy for a call on `key` (`None`: any node, in turn).
    pub(crate) fn route<'t>(&self, table: &'t Table<M, S>, key: Option<&[u8]>) -> Route<'t, M, S> {
        match key {
            Some(key) => table.route(route::key_hash(key), self.settings.failover),
            None => table.turn(self.next_any()),
        }
    }

    /// The node a key's `get` would use now.
    pub(crate) fn node_for(&self, key: &[u8]) -> Option<NodeName> {
        let table = self.current();
        let index = self.route(&table, Some(key)).next().ok()?;
        Some(*table.name(index))
    }

    /// The single step: `T`'s connection for a call on `key` (`None`: any
    /// node, in turn) from the node its route offers, and on to the next
    /// while the one offered is found boxed; or the caller's error.
    pub(crate) async fn take<T: Take<M, S>>(&self, key: Option<&[u8]>) -> Result<T::Conn, Error> {
        let table = self.open_table()?;
        let clock = self.clock();
        let mut route = self.route(&table, key);
        loop {
            let (index, home, stand_in) = self.offer(&table, &mut route, key)?;
            let taken = T::take(&table.nodes[index], &clock).await;
            if let Some(raw) = route.outcome(index, taken)? {
                return Ok(T::into_conn(raw, home, stand_in));
            }
        }
    }

    /// `T`'s connections to the first `n` nodes of the key's ranking
    /// (never the gutter) that are not boxed: the single step again after
    /// each taken, the route passing the taken one over. Fewer when fewer
    /// are up; [`Error::NoHealthyNodes`] when none is. Members are replicas
    /// by design, never stand-ins: their writes are not capped.
    pub(crate) async fn take_n<T: Take<M, S>>(
        &self,
        key: &[u8],
        n: usize,
    ) -> Result<Vec<T::Conn>, Error> {
        let table = self.open_table()?;
        let clock = self.clock();
        let mut route = table.members(route::key_hash(key));
        let mut conns = Vec::with_capacity(n);
        while conns.len() < n {
            let Ok(index) = route.next() else { break };
            let home = route.is_home(index);
            let taken = T::take(&table.nodes[index], &clock).await;
            if let Some(raw) = route.outcome(index, taken)? {
                conns.push(T::into_conn(raw, home, None));
                route.skip(index);
            }
        }
        if conns.is_empty() && n > 0 {
            return Err(Error::NoHealthyNodes);
        }
        Ok(conns)
    }

    /// The first half of the single step: the node to try now, whether it
    /// is the key's home, and what its connection needs if it stands in.
    /// The second half is [`Route::outcome`].
    fn offer(
        &self,
        table: &Held<M, S>,
        route: &mut Route<'_, M, S>,
        key: Option<&[u8]>,
    ) -> Result<(usize, bool, Option<Box<StandIn>>), Error> {
        let index = route.next()?;
        let home = route.is_home(index);
        let stand_in = match key {
            Some(_) => self.stand_in(table, index, key, home),
            // `get_any`: no key to judge by, so each written one is.
            None => self.stand_in_live(table, index),
        };
        Ok((index, home, stand_in))
    }

    /// The batch step: groups the positions of `hashes` by the node each
    /// one's [`Route`] offers, runs `run` on one `T` connection per group
    /// concurrently, and routes again the positions of groups whose node
    /// turned out to be boxed, until each has run or has its error.
    /// Returns each group's positions with its outcome.
    pub(crate) async fn batch<T, R, F, Fut>(
        &self,
        hashes: &[u64],
        run: F,
    ) -> Result<Vec<(Vec<usize>, Result<R, Error>)>, Error>
    where
        T: Take<M, S>,
        F: Fn(T::Conn, Vec<usize>) -> Fut,
        Fut: Future<Output = Result<R, Error>>,
    {
        let table = self.open_table()?;
        let clock = self.clock();
        let failover = self.settings.failover;
        let mut routes: Vec<Route<'_, M, S>> =
            hashes.iter().map(|&hash| table.route(hash, failover)).collect();
        let mut done = Vec::new();
        let mut pending: Vec<usize> = (0..hashes.len()).collect();
        // Each round either finishes a position or skips a node in its
        // route, so it ends within one round per node.
        while !pending.is_empty() {
            let mut groups = BTreeMap::<usize, Vec<usize>>::new();
            for p in pending.drain(..) {
                match routes[p].next() {
                    Ok(index) => groups.entry(index).or_default().push(p),
                    Err(e) => done.push((vec![p], Err(e))),
                }
            }
            let runs = groups.into_iter().map(|(index, positions)| {
                let home = positions.iter().all(|&p| routes[p].is_home(index));
                let stand_in = self.stand_in(&table, index, None, home);
                let (run, table, clock) = (&run, &table, &clock);
                async move {
                    let outcome = match T::take(&table.nodes[index], clock).await {
                        Ok(raw) => {
                            Ok(run(T::into_conn(raw, home, stand_in), positions.clone()).await)
                        }
                        Err(e) => Err(e),
                    };
                    (index, positions, outcome)
                }
            });
            for (index, positions, outcome) in join_all(runs).await {
                let Some((&first, others)) = positions.split_first() else { continue };
                // The second half of the step, for each key of the group:
                // they tried one node with one checkout, so each route
                // answers as the first one does (each counts its own
                // failover, or passes the node over).
                let checkout = outcome.as_ref().map(drop).map_err(|e| *e);
                for &p in others {
                    let _alike = routes[p].outcome(index, checkout);
                }
                match routes[first].outcome(index, outcome) {
                    Ok(Some(result)) => done.push((positions, result)),
                    Ok(None) => pending.extend(positions),
                    Err(e) => done.push((positions, Err(e))),
                }
            }
        }
        Ok(done)
    }

    /// Runs `f` on a `T` connection to every node that is up, concurrently,
    /// and returns each node's name with its result (or the error that
    /// kept it from a connection), in the table's order. Follows no route:
    /// no failover is counted; a connection to a node that holds keys is
    /// home, a gutter node's is not, and each key a connection writes is
    /// judged when it is sent ([`Core::stand_in_live`]).
    pub(crate) async fn every<T, R, F, Fut>(&self, f: F) -> Vec<(String, Result<R, Error>)>
    where
        T: Take<M, S>,
        F: Fn(T::Conn) -> Fut,
        Fut: Future<Output = R>,
    {
        let Ok(table) = self.open_table() else {
            return Vec::new();
        };
        let clock = self.clock();
        let up = (0..table.nodes.len()).filter(|&index| table.nodes[index].is_up());
        let runs = up.map(|index| {
            let (f, clock, node) = (&f, &clock, &table.nodes[index]);
            let stand_in = self.stand_in_live(&table, index);
            async move {
                let name = node.name().to_string();
                let result = match T::take(node, clock).await {
                    Ok(raw) => Ok(f(T::into_conn(raw, !node.is_gutter(), stand_in)).await),
                    Err(e) => Err(e.into_error(&name)),
                };
                (name, result)
            }
        });
        join_all(runs).await
    }

    /// What a connection from `index` needs to cap and remember its writes,
    /// if it is not the key's home and the settings watch stand-ins, or it
    /// is a gutter node's (every write there is capped, by
    /// [`GUTTER_TTL`] if `stand_in_ttl` is unset): [`Judge::Routed`].
    fn stand_in(
        &self,
        table: &Held<M, S>,
        index: usize,
        key: Option<&[u8]>,
        home: bool,
    ) -> Option<Box<StandIn>> {
        if home {
            return None;
        }
        self.watch(table, index, key, Judge::Routed)
    }

    /// What a connection from `index` taken for no key (`get_any`,
    /// `fan_out`) needs to cap and remember the writes that are a
    /// stand-in's: of keys whose home does not serve them now, or any on a
    /// gutter node ([`Judge::Live`]).
    fn stand_in_live(&self, table: &Held<M, S>, index: usize) -> Option<Box<StandIn>> {
        let warm = self.settings.failover == Failover::Reroute;
        self.watch(table, index, None, Judge::Live { warm })
    }

    fn watch(
        &self,
        table: &Held<M, S>,
        index: usize,
        key: Option<&[u8]>,
        judge: Judge,
    ) -> Option<Box<StandIn>> {
        let gutter = table.nodes[index].is_gutter();
        if !(gutter || self.settings.watches_stand_ins()) {
            return None;
        }
        let ttl = self.settings.stand_in_ttl;
        let ttl = if gutter { Some(ttl.unwrap_or(GUTTER_TTL)) } else { ttl };
        let remember = self.settings.invalidate_on_return;
        Some(Box::new(StandIn::new(table.homes.clone(), index, key, (ttl, remember), judge)))
    }
}

/// Runs a future that never waits to its end on this thread: the blocking
/// flavour's single step, whose checkouts block instead of waiting (its
/// [`Take`] is ready at once), so it drives the async flavour's step
/// rather than a copy of it. Were it ever to wait, it is polled again
/// after a yield of the thread, never left hanging.
#[cfg(feature = "r2d2")]
pub(crate) fn at_once<F: Future>(future: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::yield_now();
    }
}
