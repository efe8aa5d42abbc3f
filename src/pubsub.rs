//! Pub/sub by channel: one subscriber connection per node, each channel
//! (or pattern) subscribed on the node its name routes to, and moved when
//! that changes (its node boxed, back, warmed up, added or removed).
//!
//! It sits above the pool's core and asks it three things: where a name
//! routes now, a pub/sub connection to a node (whose outcome its health
//! hears), and each node's count of topics for the metrics.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use redis::aio::PubSubSink;
use redis::{Msg, RedisResult};
use tokio::sync::{mpsc, oneshot};

use crate::backend::manager::RedisManager;
use crate::node::Bb8;
use crate::route::NodeName;
use crate::runtime::core::Core;

/// Messages a subscription may hold unread; past that, new ones are
/// dropped (pub/sub delivers at most once anyway).
const BACKLOG: usize = 1024;

/// The core the hub asks: the async flavour's, of Redis nodes.
type Pool = Core<RedisManager, Bb8<RedisManager>>;

/// A channel, or a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Topic {
    name: Vec<u8>,
    pattern: bool,
}

/// Each topic's subscribers: their ids, and where their messages go.
type Routes = HashMap<Topic, Vec<(u64, mpsc::Sender<Msg>)>>;

/// The subscriptions of one pool.
///
/// No lock is held across a network wait: each node's subscriber
/// connection is driven by its own task, which takes (un)subscriptions in
/// order and bounds each wait (connect by `connect_timeout`, a reply by
/// `response_timeout`); a link that misses one is dropped, not retried,
/// and its topics are placed again. A hung node delays nobody else.
pub(crate) struct Hub {
    pool: Weak<Pool>,
    /// Where each topic is subscribed, and the subscriber connections;
    /// changed only between network waits, never across one.
    state: Mutex<State>,
    /// Who receives each topic's messages; read by every message.
    routes: Mutex<Routes>,
    next_id: AtomicU64,
    /// A subscriber connection ended: its topics need placing again.
    pub(crate) relink: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// The node each topic is subscribed on (or asked to be), if any can
    /// take it.
    placed: HashMap<Topic, Option<NodeName>>,
    /// Each node's subscriber connection.
    links: HashMap<NodeName, Link>,
    next_link: u64,
    /// The nodes whose subscriptions gauge was last set above zero.
    counted: Vec<NodeName>,
}

impl State {
    /// Closes the links that carry no topic any more (their channels moved
    /// away, were left, or the pool closed): no socket is held for nothing.
    fn prune(&mut self) {
        let placed = &self.placed;
        self.links.retain(|node, _| placed.values().any(|n| n.as_ref() == Some(node)));
    }
}

/// What a link's task is asked to do, in order.
enum Order {
    /// Subscribe; the sender hears when the node confirmed it.
    Subscribe(Topic, Option<oneshot::Sender<()>>),
    Unsubscribe(Topic),
}

/// One node's subscriber connection: the queue of its task, which owns
/// the connection (and the task reading its messages), and ends with it.
struct Link {
    orders: mpsc::UnboundedSender<Order>,
    id: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // The task owns the sink and the reader, the reader the stream, and
        // the stream the socket: aborting it closes the connection without
        // waiting on the node.
        self.task.abort();
    }
}

/// Aborts the reader when its link's task ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Hub {
    pub(crate) fn new(pool: Weak<Pool>) -> Arc<Self> {
        Arc::new(Hub {
            pool,
            state: Default::default(),
            routes: Default::default(),
            next_id: AtomicU64::new(0),
            relink: tokio::sync::Notify::new(),
        })
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new subscription to a channel (or a pattern); returns once its
    /// node confirmed it, or once that node missed its time (then the
    /// subscription follows at the next placing, like any move).
    pub(crate) async fn subscribe(self: &Arc<Self>, name: &[u8], pattern: bool) -> Subscription {
        let topic = Topic { name: name.to_vec(), pattern };
        let (tx, rx) = mpsc::channel(BACKLOG);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.routes().entry(topic.clone()).or_default().push((id, tx));
        let confirmed = {
            let mut state = self.state();
            match state.placed.contains_key(&topic) {
                true => None,
                false => {
                    state.placed.insert(topic.clone(), None);
                    let confirmed = self.place(&mut state, &topic);
                    self.settle(&mut state);
                    confirmed
                }
            }
        };
        if let Some(confirmed) = confirmed {
            // Bounded by the link's task: it ends at its first missed wait.
            let _ = confirmed.await;
        }
        Subscription { rx, hub: self.clone(), topic, id }
    }

    /// Puts every topic on the node it routes to now.
    pub(crate) async fn rebalance(self: &Arc<Self>) {
        let mut state = self.state();
        let topics: Vec<Topic> = state.placed.keys().cloned().collect();
        for topic in topics {
            self.place(&mut state, &topic);
        }
        self.settle(&mut state);
    }

    /// After topics moved: closes the links left carrying nothing and
    /// reports each node's topics, counted in one pass.
    fn settle(&self, state: &mut State) {
        state.prune();
        let Some(pool) = self.pool.upgrade() else { return };
        let mut counts: HashMap<&NodeName, usize> =
            state.counted.iter().map(|node| (node, 0)).collect();
        for node in state.placed.values().flatten() {
            *counts.entry(node).or_default() += 1;
        }
        if let Ok(table) = pool.open_table() {
            for (node, topics) in &counts {
                if let Some(node) = table.node(node) {
                    node.health().metrics.subscriptions(*topics);
                }
            }
        }
        state.counted = counts.into_iter().filter(|(_, n)| *n > 0).map(|(node, _)| *node).collect();
    }

    /// Asks for `topic` to be subscribed where it routes now, and left
    /// where it was: orders to the links' tasks, nothing awaited. A link
    /// to a node that is no longer up is dropped, not asked to
    /// unsubscribe (a hung node would never answer). Returns what hears
    /// the node's confirmation, if the topic was sent anywhere.
    fn place(self: &Arc<Self>, state: &mut State, topic: &Topic) -> Option<oneshot::Receiver<()>> {
        let pool = self.pool.upgrade()?;
        let want = pool.node_for(&topic.name);
        let was = state.placed.get(topic).cloned().flatten();
        let linked = |state: &State, node: &Option<NodeName>| {
            node.as_ref().is_some_and(|n| state.links.contains_key(n))
        };
        if want == was && linked(state, &was) {
            return None;
        }
        if let Some(was) = &was {
            match is_up(&pool, was) {
                true => {
                    if let Some(link) = state.links.get(was) {
                        let _ = link.orders.send(Order::Unsubscribe(topic.clone()));
                    }
                }
                // Its other topics move too: none can stay on it.
                false => drop(state.links.remove(was)),
            }
        }
        let Some(node) = want else {
            state.placed.insert(topic.clone(), None);
            return None;
        };
        let (tx, rx) = oneshot::channel();
        let mut order = Order::Subscribe(topic.clone(), Some(tx));
        // A link whose task has ended is replaced once.
        for _ in 0..2 {
            let link = match state.links.get(&node) {
                Some(link) => link,
                None => {
                    state.next_link += 1;
                    let link = self.link(&pool, node, state.next_link);
                    state.links.entry(node).or_insert(link)
                }
            };
            match link.orders.send(order) {
                Ok(()) => break,
                Err(mpsc::error::SendError(back)) => {
                    order = back;
                    state.links.remove(&node);
                }
            }
        }
        state.placed.insert(topic.clone(), Some(node));
        Some(rx)
    }

    /// A new link to `node`, its task started.
    fn link(self: &Arc<Self>, pool: &Arc<Pool>, node: NodeName, id: u64) -> Link {
        let (orders, queue) = mpsc::unbounded_channel();
        let reply = pool.settings.response_timeout;
        let task = tokio::spawn(drive(Arc::downgrade(self), node, id, queue, reply));
        Link { orders, id, task }
    }

    /// Link `id` of `node` ended: forgets it (the node may have a newer
    /// one by now), and, if `relink`, asks for its topics to be placed
    /// again (on the same node if it answers, which tells its health;
    /// elsewhere once it is boxed).
    fn unlink(&self, node: &NodeName, id: u64, relink: bool) {
        let link = {
            let mut state = self.state();
            match state.links.get(node).is_some_and(|link| link.id == id) {
                true => state.links.remove(node),
                false => None,
            }
        };
        // Dropped outside the lock: it aborts this link's own task, which
        // ends at its next await (there is none left).
        drop(link);
        if relink {
            self.relink.notify_one();
        }
    }

    /// A subscription was dropped: when its topic has no subscriber left,
    /// it is unsubscribed.
    async fn leave(self: Arc<Self>, topic: Topic, id: u64) {
        let mut state = self.state();
        {
            let mut routes = self.routes();
            let Some(subscribers) = routes.get_mut(&topic) else { return };
            subscribers.retain(|(other, _)| *other != id);
            if !subscribers.is_empty() {
                return;
            }
            routes.remove(&topic);
        }
        if let Some(Some(node)) = state.placed.remove(&topic) {
            if let Some(link) = state.links.get(&node) {
                let _ = link.orders.send(Order::Unsubscribe(topic));
            }
            self.settle(&mut state);
        }
    }

    /// Hands one message to its topic's subscribers.
    fn deliver(&self, msg: Msg) {
        let topic = if msg.from_pattern() {
            Topic { name: msg.get_pattern().unwrap_or_default(), pattern: true }
        } else {
            Topic { name: msg.get_channel().unwrap_or_default(), pattern: false }
        };
        if let Some(subscribers) = self.routes().get(&topic) {
            for (_, tx) in subscribers {
                // A full backlog drops the message: at most once.
                let _ = tx.try_send(msg.clone());
            }
        }
    }
}

/// Whether `node` is in the pool and up.
fn is_up(pool: &Pool, node: &NodeName) -> bool {
    pool.open_table().ok().and_then(|table| table.node(node).map(|n| n.is_up())).unwrap_or(false)
}

/// A pub/sub connection to `node` (within `connect_timeout`), its outcome
/// reported to the node.
async fn connect(pool: &Pool, node: &NodeName) -> Option<redis::aio::PubSub> {
    let table = pool.open_table().ok()?;
    let node = table.node(node)?;
    node.pubsub().await
}

/// One link's task: connects, starts the reader, then carries out the
/// orders in turn, each within `reply`. A connection that fails ends the
/// link quietly (its outcome went to the node's health, which moves the
/// topics if it boxes the node); a reply missed or failed ends it and
/// asks for its topics to be placed again.
async fn drive(
    hub: Weak<Hub>,
    node: NodeName,
    id: u64,
    mut queue: mpsc::UnboundedReceiver<Order>,
    reply: Duration,
) {
    let connection = match hub.upgrade().and_then(|hub| hub.pool.upgrade()) {
        Some(pool) => connect(&pool, &node).await,
        None => return,
    };
    let Some(connection) = connection else {
        if let Some(hub) = hub.upgrade() {
            hub.unlink(&node, id, false);
        }
        return;
    };
    let (mut sink, stream) = connection.split();
    let _reader = AbortOnDrop(tokio::spawn(read(hub.clone(), node, id, stream)));
    while let Some(order) = queue.recv().await {
        let (done, confirmed) = match order {
            Order::Subscribe(topic, confirmed) => {
                (tokio::time::timeout(reply, subscribe(&mut sink, &topic)).await, confirmed)
            }
            Order::Unsubscribe(topic) => {
                (tokio::time::timeout(reply, unsubscribe(&mut sink, &topic)).await, None)
            }
        };
        match done {
            Ok(Ok(())) => {
                if let Some(confirmed) = confirmed {
                    let _ = confirmed.send(());
                }
            }
            _ => {
                if let Some(hub) = hub.upgrade() {
                    hub.unlink(&node, id, true);
                }
                return;
            }
        }
    }
}

async fn subscribe(sink: &mut PubSubSink, topic: &Topic) -> RedisResult<()> {
    match topic.pattern {
        true => sink.psubscribe(&topic.name).await,
        false => sink.subscribe(&topic.name).await,
    }
}

async fn unsubscribe(sink: &mut PubSubSink, topic: &Topic) -> RedisResult<()> {
    match topic.pattern {
        true => sink.punsubscribe(&topic.name).await,
        false => sink.unsubscribe(&topic.name).await,
    }
}

/// Reads one node's subscriber connection until it ends; then its link
/// ends, and its topics are placed again.
async fn read(hub: Weak<Hub>, node: NodeName, id: u64, mut stream: redis::aio::PubSubStream) {
    while let Some(msg) = stream.next().await {
        match hub.upgrade() {
            Some(hub) => hub.deliver(msg),
            None => return,
        }
    }
    if let Some(hub) = hub.upgrade() {
        hub.unlink(&node, id, true);
    }
}

/// Messages of one channel (or pattern), from
/// [`ShardedPool::subscribe`](crate::ShardedPool::subscribe): an `Unpin`
/// [`Stream`] of [`redis::Msg`], so `sub.next().await` works as is.
///
/// It follows its channel to whichever node the channel routes to. Messages
/// published while it moves (its node just failed, or came back) can be
/// lost: pub/sub delivers at most once anyway. Dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::Receiver<Msg>,
    hub: Arc<Hub>,
    topic: Topic,
    id: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &String::from_utf8_lossy(&self.topic.name))
            .field("pattern", &self.topic.pattern)
            .finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Msg;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Msg>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.hub.clone().leave(self.topic.clone(), self.id));
        }
    }
}
