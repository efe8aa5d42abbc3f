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

use futures_util::{Stream, StreamExt};
use redis::aio::PubSubSink;
use redis::{Msg, RedisResult};
use tokio::sync::mpsc;

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
pub(crate) struct Hub {
    pool: Weak<Pool>,
    /// Where each topic is subscribed, and the subscriber connections;
    /// held across the network calls that change them.
    state: tokio::sync::Mutex<State>,
    /// Who receives each topic's messages; read by every message.
    routes: Mutex<Routes>,
    next_id: AtomicU64,
    /// A subscriber connection ended: its topics need placing again.
    pub(crate) relink: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// The node each topic is subscribed on, if any can take it.
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

/// One node's subscriber connection: where to send (un)subscriptions, and
/// the task reading its messages, which ends with it.
struct Link {
    sink: PubSubSink,
    id: u64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // The reader owns the stream, and the stream the socket.
        self.reader.abort();
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

    /// A new subscription to a channel (or a pattern).
    pub(crate) async fn subscribe(self: &Arc<Self>, name: &[u8], pattern: bool) -> Subscription {
        let topic = Topic { name: name.to_vec(), pattern };
        let (tx, rx) = mpsc::channel(BACKLOG);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.routes().entry(topic.clone()).or_default().push((id, tx));
        let mut state = self.state.lock().await;
        if !state.placed.contains_key(&topic) {
            state.placed.insert(topic.clone(), None);
            self.place(&mut state, &topic).await;
            self.settle(&mut state);
        }
        Subscription { rx, hub: self.clone(), topic, id }
    }

    /// Puts every topic on the node it routes to now.
    pub(crate) async fn rebalance(self: &Arc<Self>) {
        let mut state = self.state.lock().await;
        let topics: Vec<Topic> = state.placed.keys().cloned().collect();
        for topic in topics {
            self.place(&mut state, &topic).await;
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
                    node.cell.metrics.subscriptions(*topics);
                }
            }
        }
        state.counted = counts.into_iter().filter(|(_, n)| *n > 0).map(|(node, _)| *node).collect();
    }

    /// Subscribes `topic` where it routes now, leaving where it was.
    async fn place(self: &Arc<Self>, state: &mut State, topic: &Topic) {
        let Some(pool) = self.pool.upgrade() else { return };
        let want = pool.node_for(&topic.name);
        let was = state.placed.get(topic).cloned().flatten();
        let linked = |state: &State, node: &Option<NodeName>| {
            node.as_ref().is_some_and(|n| state.links.contains_key(n))
        };
        if want == was && linked(state, &was) {
            return;
        }
        if let Some(link) = was.as_ref().and_then(|n| state.links.get_mut(n)) {
            // Best effort: a dead node's link fails, and that is fine.
            let _ = unsubscribe(&mut link.sink, topic).await;
        }
        let mut placed = None;
        // A link found dead is replaced once.
        for _ in 0..2 {
            let Some(node) = want else { break };
            if !state.links.contains_key(&node) {
                let Some(connection) = connect(&pool, &node).await else { break };
                let (sink, stream) = connection.split();
                state.next_link += 1;
                let id = state.next_link;
                let reader = tokio::spawn(read(Arc::downgrade(self), node, id, stream));
                state.links.insert(node, Link { sink, id, reader });
            }
            let Some(link) = state.links.get_mut(&node) else { break };
            match subscribe(&mut link.sink, topic).await {
                Ok(()) => {
                    placed = Some(node);
                    break;
                }
                Err(_) => drop(state.links.remove(&node)),
            }
        }
        state.placed.insert(topic.clone(), placed);
    }

    /// A subscription was dropped: when its topic has no subscriber left,
    /// it is unsubscribed.
    async fn leave(self: Arc<Self>, topic: Topic, id: u64) {
        let mut state = self.state.lock().await;
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
            if let Some(link) = state.links.get_mut(&node) {
                let _ = unsubscribe(&mut link.sink, &topic).await;
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

/// A pub/sub connection to `node`, its outcome reported to the node.
async fn connect(pool: &Pool, node: &NodeName) -> Option<redis::aio::PubSub> {
    let table = pool.open_table().ok()?;
    let node = table.node(node)?;
    let epoch = node.cell.epoch();
    node.cell.connected(epoch, node.manager.pubsub().await).ok()
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

/// Reads one node's subscriber connection until it ends; then asks for
/// its topics to be placed again (on the same node if it answers, which
/// tells its health; elsewhere once it is boxed).
async fn read(hub: Weak<Hub>, node: NodeName, id: u64, mut stream: redis::aio::PubSubStream) {
    while let Some(msg) = stream.next().await {
        match hub.upgrade() {
            Some(hub) => hub.deliver(msg),
            None => return,
        }
    }
    let Some(hub) = hub.upgrade() else { return };
    let mut state = hub.state.lock().await;
    // Only its own link: the node may have a newer one by now.
    if state.links.get(&node).is_some_and(|link| link.id == id) {
        // Aborting this very task takes effect at an await; none is left.
        state.links.remove(&node);
    }
    drop(state);
    hub.relink.notify_one();
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
