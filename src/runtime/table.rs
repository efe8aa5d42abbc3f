//! A pool's table of nodes (those that hold keys, then the gutter) with
//! the routers over their names, and [`Route`]: the routing policy's steps
//! for one call over it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::Guard;

use crate::error::Error;
use crate::health::pool_wide::PoolWide;
use crate::node::tracked::NodeManager;
use crate::node::{CheckoutError, Node, Store};
use crate::route::policy::{Cursor, Miss};
use crate::route::{NodeName, Router};
use crate::settings::Failover;
use crate::stand_in::writes::Homes;

/// The nodes of a pool and the routers over their names, in the same
/// order: the nodes that hold keys first, then the gutter nodes.
pub(crate) struct Table<M: NodeManager, S> {
    /// Over the nodes that hold keys: `nodes[..router.len()]`.
    pub(crate) router: Router,
    /// Over the gutter nodes: `nodes[router.len()..]`.
    gutter: Router,
    pub(crate) nodes: Vec<Arc<Node<M, S>>>,
    /// The router again with each node's journal and health: what a stand-in's
    /// connection is handed. A copy of the router, not a share of it, so
    /// routing reaches its own without one more pointer to follow.
    pub(crate) homes: Arc<Homes>,
    pub(crate) pool_wide: Arc<PoolWide>,
}

impl<M: NodeManager, S: Store<M>> Table<M, S> {
    pub(crate) fn new(mut nodes: Vec<Arc<Node<M, S>>>, pool_wide: &Arc<PoolWide>) -> Self {
        nodes.sort_by_key(|n| n.is_gutter()); // stable: each kind keeps its order
        let keyed = nodes.iter().take_while(|n| !n.is_gutter()).count();
        let over = |nodes: &[Arc<Node<M, S>>]| {
            Router::new(nodes.iter().map(|n| (&**n.name(), n.weight())))
        };
        let (router, gutter) = (over(&nodes[..keyed]), over(&nodes[keyed..]));
        let journals = nodes[..keyed].iter().map(|n| n.journal().clone()).collect();
        // Every node's, the gutter's last: a node reads a write's keys by its own table.
        let cells = nodes.iter().map(|n| n.health().clone()).collect();
        let homes = Arc::new(Homes { router: router.clone(), journals, cells });
        Table { router, gutter, nodes, homes, pool_wide: pool_wide.clone() }
    }

    /// The name of the node at `index`, of either kind: from the router
    /// that routed to it, whose names sit beside its seeds, not through
    /// the node and its health cell (two more pointers to follow, which
    /// were most of `node_for`'s own time).
    #[inline]
    pub(crate) fn name(&self, index: usize) -> &NodeName {
        match index.checked_sub(self.router.len()) {
            None => self.router.name(index),
            Some(gutter) => self.gutter.name(gutter),
        }
    }

    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| **n.name() == *name)
    }

    pub(crate) fn node(&self, name: &str) -> Option<&Arc<Node<M, S>>> {
        self.position(name).map(|index| &self.nodes[index])
    }

    /// The routing policy for the key of `hash`.
    pub(crate) fn route(&self, hash: u64, failover: Failover) -> Route<'_, M, S> {
        Route { table: self, order: Order::Key(Cursor::new(hash, failover)), counted: false }
    }

    /// Whether the key of `hash` may be routed to each node now (by
    /// index): to every node while none is boxed or warming up (one load of
    /// a line written only when a node changes state), else as each node's
    /// word says (`warm`: a warming node takes only its share of keys).
    fn routable(&self, hash: u64, warm: bool) -> impl Fn(usize) -> bool + '_ {
        let settled = self.pool_wide.unsettled.load(Ordering::Acquire) == 0;
        move |index| settled || self.nodes[index].health().routable(hash, warm)
    }

    /// `GET key` from the near cache of the key's home, if the key is
    /// routed there now and the cache holds the reply. (A key whose home
    /// is out goes the ordinary way, through its stand-in's cache.)
    pub(crate) fn near_hit(&self, key: &[u8]) -> Option<redis::Value> {
        let hash = crate::route::key_hash(key);
        let home = self.router.home_hashed(hash)?;
        self.routable(hash, true)(home).then(|| self.nodes[home].near_hit(key))?
    }

    /// Every node that holds keys in turn, from the one at `start`: the
    /// routing policy for a call without a key.
    pub(crate) fn turn(&self, start: usize) -> Route<'_, M, S> {
        Route { table: self, order: Order::Turn { start, tried: 0 }, counted: false }
    }

    /// Whether the keys of hashes `a` and `b` go to one node whatever the
    /// nodes' health: under [`Failover::FailFast`] they share their home;
    /// under [`Failover::Reroute`] also each stand-in, which their rankings
    /// over the nodes and over the gutter decide, unless a node warming
    /// up (`warm`: the pool has a warm-up) lets one in before the other,
    /// which only the same hash rules out.
    pub(crate) fn routes_alike(&self, a: u64, b: u64, failover: Failover, warm: bool) -> bool {
        let same = |router: &Router| router.ranking_hashed(a) == router.ranking_hashed(b);
        a == b
            || match failover {
                Failover::FailFast => self.router.home_hashed(a) == self.router.home_hashed(b),
                Failover::Reroute => !warm && same(&self.router) && same(&self.gutter),
            }
    }

    /// The key's ranking alone, never the gutter: the members of its
    /// replicas (`get_n`).
    pub(crate) fn members(&self, hash: u64) -> Route<'_, M, S> {
        let cursor = Cursor::new(hash, Failover::Reroute).ranking_only();
        Route { table: self, order: Order::Key(cursor), counted: false }
    }
}

/// The order in which a [`Route`] offers nodes.
enum Order {
    /// A key's: its [`Cursor`].
    Key(Cursor),
    /// No key: every node in turn, from `start`, `tried` of them passed.
    Turn { start: usize, tried: usize },
}

/// The one routing policy's steps for one call: which node to try
/// ([`next`](Self::next)), and what a checkout's outcome there means
/// ([`outcome`](Self::outcome)): done (a failover counted if a stand-in
/// served), the next node (it was found boxed), or an error for the
/// caller. Every path drives one: `get`, `get_any`, `get_shared`, `get_n`,
/// the by-node split, pub/sub, both flavours.
pub(crate) struct Route<'t, M: NodeManager, S> {
    table: &'t Table<M, S>,
    order: Order,
    /// Whether a success was counted already (`get_n` takes several).
    counted: bool,
}

impl<'t, M: NodeManager, S: Store<M>> Route<'t, M, S> {
    /// The node to try now.
    #[inline]
    pub(crate) fn next(&mut self) -> Result<usize, Error> {
        let table = self.table;
        match &mut self.order {
            Order::Key(cursor) => {
                let hash = cursor.hash();
                let warm = cursor.failover() == Failover::Reroute;
                let routable = table.routable(hash, warm);
                cursor.next(&table.router, &table.gutter, routable).map_err(|miss| match miss {
                    Miss::Empty => Error::Closed,
                    Miss::Home(home) => Error::NodeDown { node: table.name(home).to_string() },
                    Miss::None => Error::NoHealthyNodes,
                })
            }
            Order::Turn { start, tried } => {
                // Not the gutter: it holds no keys, so nothing to read.
                let n = table.router.len();
                let up =
                    (*tried..n).find(|&offset| table.nodes[start.wrapping_add(offset) % n].is_up());
                let offset = up.ok_or(Error::NoHealthyNodes)?;
                *tried = offset;
                Ok(start.wrapping_add(offset) % n)
            }
        }
    }

    /// Passes over `index` from now on: found boxed, or (`get_n`) taken.
    pub(crate) fn skip(&mut self, index: usize) {
        match &mut self.order {
            Order::Key(cursor) => cursor.skip(index),
            Order::Turn { tried, .. } => *tried += 1,
        }
    }

    /// Whether `index` is the key's home (always, without a key).
    pub(crate) fn is_home(&self, index: usize) -> bool {
        match &self.order {
            Order::Key(cursor) => cursor.home() == Some(index),
            Order::Turn { .. } => true,
        }
    }

    /// `index` served the call: a failover if it is not the key's home.
    fn served(&mut self, index: usize) {
        if let Order::Key(cursor) = &self.order
            && let Some(home) = cursor.home().filter(|&home| home != index && !self.counted)
        {
            self.table.nodes[home].health().metrics.failover();
        }
        self.counted = true;
    }

    /// What a checkout from `index` means for the call: its connection,
    /// `None` to try the next node, or the caller's error.
    #[inline]
    pub(crate) fn outcome<T>(
        &mut self,
        index: usize,
        result: Result<T, CheckoutError>,
    ) -> Result<Option<T>, Error> {
        match result {
            Ok(conn) => {
                self.served(index);
                Ok(Some(conn))
            }
            Err(CheckoutError::Boxed) => {
                self.skip(index);
                Ok(None)
            }
            Err(e) => Err(e.into_error(self.table.name(index))),
        }
    }
}

/// The table as a call holds it: a guard, not a clone of the `Arc`, so
/// the hot path writes no reference count every thread shares.
pub(crate) type Held<M, S> = Guard<Arc<Table<M, S>>>;
