//! Relayed deletes as the fleet's task hears them (the messages are the
//! stand-in room's, [`crate::stand_in::relay`]): a home this process
//! reaches gets the keys deleted by a task of its own per home, a batch
//! at a time, within a bounded queue (a message that finds no room is
//! counted as dropped); a home this process has boxed too means the
//! sender is not alone, which this process then tells it.
//!
//! What a message can do, forged or not: delete, once, the keys it names
//! on a node of the pool. Nothing of it is remembered but the queued
//! messages, each at most [`relay::longest`] bytes.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::health::event::NodeEvent;
use crate::node::tracked::NodeManager;
use crate::node::{Node, Store};
use crate::route::NodeName;
use crate::stand_in::relay;

/// Relayed messages waiting for their home's deletes, per home.
const QUEUED: usize = 256;

/// The most messages deleted in one round trip to the home.
const BATCH: usize = 64;

/// What the relay's hearing side keeps: a queue, and a task that empties
/// it, per home that relayed deletes were heard for.
#[derive(Default)]
pub(super) struct Deleters {
    queues: HashMap<NodeName, mpsc::Sender<Box<[u8]>>>,
}

/// What hearing a relay message asks of the fleet's task.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Heard {
    /// Nothing more: not a relay for this pool, or queued for the home.
    Done,
    /// The home is boxed here too: the sender is not alone.
    BoxedHere(NodeName),
}

impl Deleters {
    /// Forgets the queues of nodes `keep` refuses (nodes that left the
    /// pool); their tasks end with them.
    pub(super) fn keep(&mut self, keep: impl Fn(&str) -> bool) {
        self.queues.retain(|name, queue| keep(name) && !queue.is_closed());
    }

    /// Acts on `payload` if it is a relay message of another process
    /// (`teller` is this pool's own id) about a node of the pool.
    pub(super) fn hear<M: NodeManager, S: Store<M>>(
        &mut self,
        node: impl Fn(&str) -> Option<Arc<Node<M, S>>>,
        (teller, fleet): (u64, &str),
        payload: &[u8],
    ) -> Heard {
        let Some(heard) = relay::parse(payload) else { return Heard::Done };
        if heard.teller == teller {
            return Heard::Done;
        }
        let Some(home) = node(heard.home) else { return Heard::Done };
        let Some(relay) = home.journal().relay() else { return Heard::Done };
        if !home.is_up() {
            relay.agree(home.health().epoch());
            return Heard::BoxedHere(*home.name());
        }
        let queue = self.queues.entry(*home.name()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUED);
            tokio::spawn(delete(home.clone(), fleet.to_owned(), rx));
            tx
        });
        if queue.try_send(payload.into()).is_err() {
            relay.dropped(heard.keys.len());
        }
        Heard::Done
    }
}

/// Deletes, on `home`, the keys of each relay message queued for it, a
/// batch per round trip, each message's once for the whole fleet; ends
/// when the queue is dropped.
async fn delete<M: NodeManager, S: Store<M>>(
    home: Arc<Node<M, S>>,
    fleet: String,
    mut queue: mpsc::Receiver<Box<[u8]>>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let Some(relay) = home.journal().relay() else { return };
        let mut pipe = redis::pipe();
        let mut counts = Vec::with_capacity(batch.len());
        for payload in &batch {
            let Some(heard) = relay::parse(payload) else { continue };
            pipe.add_command(relay::delete_once(&fleet, payload, &heard.keys));
            counts.push(heard.keys.len());
        }
        batch.clear();
        let replies = match home.send_own(&pipe).await {
            Ok(Some(replies)) => replies,
            _ => Vec::new(),
        };
        let mut deleted = 0;
        for (i, keys) in counts.into_iter().enumerate() {
            match replies.get(i).map(redis::from_redis_value_ref::<i64>) {
                Some(Ok(n)) if n >= 0 => {
                    relay.heard(keys, true);
                    deleted += keys;
                }
                Some(Ok(_)) => relay.heard(keys, false),
                _ => relay.dropped(keys),
            }
        }
        if deleted > 0 {
            tracing::debug!(node = %home.name(), keys = deleted, "relayed deletes done");
            home.health().pool_wide.send(NodeEvent::Relayed { node: *home.name(), keys: deleted });
        }
    }
}
