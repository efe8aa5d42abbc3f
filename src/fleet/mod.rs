//! The fleet ([`Builder::fleet`](crate::Builder::fleet)): processes over
//! the same nodes tell each other, through the nodes themselves, when they
//! box a node or let one back in.
//!
//! One task per pool: it keeps a subscriber connection on each node (on
//! the channel named after the fleet), publishes this pool's own changes
//! on the other up nodes, and acts on what the others tell, as a hint: a
//! probe soon of a node said to be back, a check now of a node said to be
//! boxed. Each process still decides on its own evidence. (The journal
//! kept on the stand-ins is the stand-in room's, read by the return.)
//!
//! It also carries the relay (`relay.rs`): deletes another process asks
//! for while it alone has a node boxed, done here on that node if this
//! process reaches it; and whether this process is alone with a node
//! boxed (another was heard to have it boxed too, or let it back in).

mod news;
mod relay;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::health::event::{News, NodeEvent};
use crate::health::record::Way;
use crate::node::tracked::NodeManager;
use crate::node::{Node, Store, send_to_others};
use crate::random::jitter;
use crate::route::NodeName;
use crate::runtime::core::Core;
use news::{Heard, Message};
use relay::Deleters;

/// The most a probe or check set off by one message waits: a thousand
/// processes that hear it do not reach the node in the same millisecond.
const JITTER: Duration = Duration::from_millis(20);

/// How often lost subscriber connections are made again.
const RELINK: Duration = Duration::from_secs(1);

/// Messages read off the subscriber connections, waiting to be acted on.
const BACKLOG: usize = 256;

/// One node's subscriber connection, read by a task of its own that ends
/// with it (or is ended when the link is dropped).
struct Link(JoinHandle<()>);

impl Drop for Link {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The fleet's task for one pool: it ends when the pool is closed or
/// dropped.
pub(crate) async fn run<M: NodeManager, S: Store<M>>(core: Weak<Core<M, S>>, name: String) {
    let Some((mut events, teller)) =
        core.upgrade().map(|core| (core.pool_wide.events.subscribe(), core.pool_wide.teller))
    else {
        return;
    };
    let mut fleet = Fleet {
        channel: name,
        teller,
        seq: 0,
        heard: Heard::default(),
        checked: HashMap::new(),
        hastened: HashMap::new(),
        vouched: HashMap::new(),
        deleters: Deleters::default(),
        links: HashMap::new(),
        longest: Arc::default(),
    };
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(BACKLOG);
    let mut relink = tokio::time::interval(RELINK);
    relink.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            _ = relink.tick() => None,
            event = events.recv() => match event {
                Ok(event) => Some(event),
                Err(broadcast::error::RecvError::Lagged(_)) => None,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            Some(payload) = rx.recv() => {
                let Some(core) = core.upgrade() else { return };
                fleet.hear(&core, &payload);
                continue;
            }
        };
        let Some(core) = core.upgrade().filter(|core| !core.is_closed()) else { return };
        match event {
            Some(NodeEvent::Boxed { node, .. }) => {
                fleet.agree_if_heard(&core, node);
                fleet.tell(&core, News::Boxed, node);
            }
            Some(NodeEvent::Returned { node }) => fleet.tell(&core, News::Returned, node),
            _ => {
                fleet.link(&core, &tx);
                count_records(&core);
            }
        }
    }
}

/// What the task keeps.
struct Fleet {
    channel: String,
    /// This pool's id in its messages: its own come back to it, and are
    /// ignored.
    teller: u64,
    seq: u64,
    heard: Heard,
    /// When each node was last checked on news of its boxing.
    checked: HashMap<NodeName, Instant>,
    /// When news of each node's return last brought its probe forward.
    hastened: HashMap<NodeName, Instant>,
    /// When this process last told that it has a node boxed too, on
    /// hearing another relay deletes for it.
    vouched: HashMap<NodeName, Instant>,
    /// The relayed deletes this process does for others.
    deleters: Deleters,
    links: HashMap<NodeName, Link>,
    /// The longest name of the pool's nodes: a message longer than any
    /// that can name one is dropped unread.
    longest: Arc<AtomicUsize>,
}

impl Fleet {
    /// Links every node that has no live link, and drops the links of
    /// nodes that left the pool.
    fn link<M: NodeManager, S: Store<M>>(&mut self, core: &Core<M, S>, tx: &mpsc::Sender<Vec<u8>>) {
        let Ok(table) = core.open_table() else { return };
        self.links.retain(|name, link| table.node(name).is_some() && !link.0.is_finished());
        // What is remembered per node is remembered for the pool's nodes only.
        self.checked.retain(|name, _| table.node(name).is_some());
        self.hastened.retain(|name, _| table.node(name).is_some());
        self.vouched.retain(|name, _| table.node(name).is_some());
        self.deleters.keep(|name| table.node(name).is_some());
        self.heard.keep(|name| table.node(name).is_some());
        let longest = table.nodes.iter().map(|node| node.name().len()).max().unwrap_or(0);
        self.longest.store(longest, Ordering::Relaxed);
        for node in &table.nodes {
            if !self.links.contains_key(node.name()) && node.listen().is_some() {
                let task =
                    listen(node.clone(), self.channel.clone(), tx.clone(), self.longest.clone());
                self.links.insert(*node.name(), Link(tokio::spawn(task)));
            }
        }
    }

    /// Tells the fleet this pool's own change of `node`, on every other
    /// up node, unless it follows the same news heard from another process.
    fn tell<M: NodeManager, S: Store<M>>(&mut self, core: &Core<M, S>, news: News, node: NodeName) {
        let window = core.settings.probe_timeout * 2 + JITTER;
        if self.heard.follows(&node, news, Instant::now(), window) {
            return;
        }
        self.publish(core, news, node);
    }

    /// With its own boxing of `node`: if another process was heard to box
    /// it within the check's time, this one is not alone with it boxed,
    /// and relays nothing.
    fn agree_if_heard<M: NodeManager, S: Store<M>>(&self, core: &Core<M, S>, node: NodeName) {
        let window = core.settings.probe_timeout * 2 + JITTER;
        let Ok(table) = core.open_table() else { return };
        let Some(home) = table.node(&node) else { return };
        let heard = self.heard.heard_at(&node, News::Boxed);
        if heard.is_some_and(|at| at.elapsed() <= window)
            && let Some(relay) = home.journal().relay()
        {
            relay.agree(home.health().epoch());
        }
    }

    /// Publishes `news` of `node` on every other up node.
    fn publish<M: NodeManager, S: Store<M>>(
        &mut self,
        core: &Core<M, S>,
        news: News,
        node: NodeName,
    ) {
        self.seq += 1;
        let message = Message { news, teller: self.teller, seq: self.seq, node: node.to_string() };
        let mut publish = redis::pipe();
        publish.cmd("PUBLISH").arg(&self.channel).arg(message.encode());
        let Ok(table) = core.open_table() else { return };
        let nodes = table.nodes.clone();
        if let Some(told) = table.node(&node) {
            told.health().metrics.fleet_news(news, Way::Sent);
        }
        tracing::debug!(%node, news = news.as_str(), "telling the fleet");
        // Best effort: the other nodes carry the news.
        tokio::spawn(async move { send_to_others(&nodes, &node, &publish).await });
    }

    /// Acts on a message from the channel: a probe soon of a node said to
    /// be back while this pool has it boxed, a check now of a node said to
    /// be boxed while this pool has it up. Its own messages, repeats
    /// through other nodes and news of nodes it does not have do nothing.
    fn hear<M: NodeManager, S: Store<M>>(&mut self, core: &Core<M, S>, payload: &[u8]) {
        let Some(message) = Message::parse(payload) else {
            return self.hear_relay(core, payload);
        };
        let now = Instant::now();
        // News of a node this pool does not have is dropped before
        // anything of it is remembered.
        let Ok(table) = core.open_table() else { return };
        let Some(node) = table.node(&message.node) else { return };
        if message.teller == self.teller || !self.heard.note(&message, now) {
            return;
        }
        let (name, news) = (*node.name(), message.news);
        node.health().metrics.fleet_news(news, Way::Heard);
        if let Some(relay) = node.journal().relay() {
            match news {
                // Another has it boxed too: this process is not alone.
                News::Boxed if !node.is_up() => relay.agree(node.health().epoch()),
                News::Boxed => {}
                // Another reaches it: this process may be alone now.
                News::Returned => relay.doubt(),
            }
        }
        let acted = match news {
            News::Returned => {
                !node.is_up() && self.hasten(node, now, core.settings.penalty_min_wait)
            }
            News::Boxed => node.is_up() && self.check(node, now, core.settings.probe_timeout),
        };
        if acted {
            tracing::info!(node = %name, news = news.as_str(), "news from the fleet; checking");
            node.health().pool_wide.send(NodeEvent::Heard { node: name, news });
        }
    }

    /// Acts on a relay message (deletes asked by a process that has its
    /// home boxed): queued for the home if this process reaches it; if it
    /// has the home boxed too, it tells the fleet so (at most once per
    /// check's time), and the sender stops relaying.
    fn hear_relay<M: NodeManager, S: Store<M>>(&mut self, core: &Core<M, S>, payload: &[u8]) {
        let Ok(table) = core.open_table() else { return };
        let node = |name: &str| table.node(name).cloned();
        let heard = self.deleters.hear(node, (self.teller, &self.channel), payload);
        let relay::Heard::BoxedHere(name) = heard else { return };
        let (now, window) = (Instant::now(), core.settings.probe_timeout * 2 + JITTER);
        if self.vouched.get(&name).is_some_and(|at| now < *at + window) {
            return;
        }
        self.vouched.insert(name, now);
        drop(table);
        self.publish(core, News::Boxed, name);
    }

    /// Brings `node`'s probe forward (after a little jitter), at most once
    /// per `min_wait`: news, forged or not, cannot probe a dead node more
    /// often than its shortest stay in the box.
    fn hasten<M: NodeManager, S: Store<M>>(
        &mut self,
        node: &Arc<Node<M, S>>,
        now: Instant,
        min_wait: Duration,
    ) -> bool {
        if self.hastened.get(node.name()).is_some_and(|at| now < *at + min_wait) {
            return false;
        }
        let moved = node.health().hasten_probe(now + jitter(JITTER));
        if moved {
            self.hastened.insert(*node.name(), now);
        }
        moved
    }

    /// Checks `node` after a little jitter, unless a check of it is still
    /// under way (one at a time, however many processes tell).
    fn check<M: NodeManager, S: Store<M>>(
        &mut self,
        node: &Arc<Node<M, S>>,
        now: Instant,
        timeout: Duration,
    ) -> bool {
        let busy = self.checked.get(node.name()).is_some_and(|at| now < *at + timeout + JITTER);
        if busy {
            return false;
        }
        self.checked.insert(*node.name(), now);
        let node = node.clone();
        tokio::spawn(async move {
            tokio::time::sleep(jitter(JITTER)).await;
            node.check().await;
        });
        true
    }
}

/// Counts, for each boxed node, the keys every process recorded for it on
/// the other up nodes (one `SCARD` each), for `status()`, and keeps those
/// records alive while the node is boxed (one `PEXPIRE … GT` each).
fn count_records<M: NodeManager, S: Store<M>>(core: &Core<M, S>) {
    let Ok(table) = core.open_table() else { return };
    for home in table.nodes.iter().filter(|node| !node.is_up()) {
        let Some(scard) = home.journal().count_recorded() else { return };
        let Some(keep) = home.journal().keep_recorded() else { return };
        let (home, nodes) = (home.clone(), table.nodes.clone());
        tokio::spawn(async move {
            let mut pipe = redis::pipe();
            pipe.add_command(scard).add_command(keep);
            let replies = send_to_others(&nodes, home.name(), &pipe).await;
            // Each node's first reply is its count.
            let counts = replies.into_iter().filter_map(|(_, replies)| replies.into_iter().next());
            let keys = counts.filter_map(|reply| redis::from_redis_value::<u64>(reply).ok());
            let keys = keys.sum();
            // A count that comes back after the return is stale.
            if !home.is_up() {
                home.journal().counted(keys);
            }
        });
    }
}

/// Reads the fleet's channel on `node` until its connection ends, handing
/// each message to the task. A connect that fails ends it too: the task
/// links again within [`RELINK`]. Its failures say nothing of the node's
/// health, which its own traffic and heartbeat tell.
async fn listen<M: NodeManager, S: Store<M>>(
    node: Arc<Node<M, S>>,
    channel: String,
    tx: mpsc::Sender<Vec<u8>>,
    longest: Arc<AtomicUsize>,
) {
    let Some(listen) = node.listen() else { return };
    let subscribed = async {
        let mut pubsub = listen().await.ok()?;
        pubsub.subscribe(&channel).await.ok()?;
        Some(pubsub)
    };
    let Ok(Some(pubsub)) = tokio::time::timeout(node.probe_timeout(), subscribed).await else {
        return;
    };
    let mut messages = pubsub.into_on_message();
    while let Some(message) = messages.next().await {
        // redis-rs cannot bound a reply's size: a payload longer than any
        // real message is dropped here, before it is copied or queued.
        let payload = message.get_payload_bytes();
        let name = longest.load(Ordering::Relaxed);
        if payload.len() > news::longest(name).max(crate::stand_in::relay::longest(name)) {
            continue;
        }
        if tx.send(payload.to_vec()).await.is_err() {
            return;
        }
    }
}
