//! What a connection to a stand-in needs to cap and remember its writes:
//! where each key lives ([`Homes`], data handed down with the table the
//! call was routed by), and the caps for the commands it sends
//! ([`StandIn::caps`]).

use std::sync::Arc;
use std::time::Duration;

use redis::Cmd;

use super::cap::cap;
use super::journal::Journal;
use super::table::{Reach, written};
use crate::route::Router;

/// Where keys live: the pool's router and, by the same index, each node's
/// journal. Built with each table of nodes.
#[derive(Debug)]
pub(crate) struct Homes {
    pub(crate) router: Router,
    pub(crate) journals: Vec<Arc<Journal>>,
}

/// What a connection to a stand-in needs to cap and remember its writes
/// of keys whose home is elsewhere (`stand_in_ttl`,
/// `invalidate_on_return`). Only such connections carry one.
#[derive(Debug)]
pub(crate) struct StandIn {
    pub(crate) homes: Arc<Homes>,
    /// The node serving, by index in `homes`.
    pub(crate) serving: usize,
    /// The key the connection was taken for, if one was.
    pub(crate) key: Option<Box<[u8]>>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) remember: bool,
}

impl StandIn {
    /// The caps to send with `cmds` (each its words): one per key they
    /// write whose home is not the serving node, each remembered first, so
    /// that a return that invalidates meanwhile sees it.
    pub(crate) fn caps<'w>(&self, cmds: impl Iterator<Item = Vec<&'w [u8]>>) -> Vec<Cmd> {
        let mut caps = Vec::new();
        for words in cmds {
            let (keys, reach) = written(&words);
            let taken = self.key.as_deref().filter(|_| reach == Reach::More);
            for key in keys.into_iter().chain(taken) {
                let Some(home) = self.homes.router.home(key).filter(|&h| h != self.serving) else {
                    continue;
                };
                if self.remember {
                    self.homes.journals[home].remember(key);
                }
                caps.extend(self.ttl.map(|ttl| cap(key, ttl)));
            }
        }
        caps
    }
}
