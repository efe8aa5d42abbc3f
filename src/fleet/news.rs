//! The fleet's messages as they travel, and what a process remembers of
//! them: which it has already acted on (each arrives once through every
//! node), and what it was told lately (so that it does not echo news back).
//!
//! A message is one line of text, `fluster1 <news> <teller> <seq> <node>`:
//! `news` is `boxed` or `returned`, `teller` the random id of the pool
//! that sent it, `seq` that pool's count of messages, and `node` the node's
//! name, last, so that it may hold spaces.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::health::event::News;

const VERSION: &str = "fluster1";

/// Message ids remembered to act once on a message that arrives through
/// several nodes: far more than can arrive within one round of them.
const REMEMBERED: usize = 1024;

/// Distinct pieces of news remembered (`told`): one per node and kind for
/// the pool's nodes; past the bound, the oldest is forgotten.
const TOLD: usize = 1024;

/// The longest a real message can be when no node's name is longer than
/// `name` bytes: the version, the news, the teller and the seq, at their
/// longest, and the name.
pub(crate) fn longest(name: usize) -> usize {
    VERSION.len() + " returned ".len() + 16 + 1 + 20 + 1 + name
}

/// One message of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) news: News,
    pub(crate) teller: u64,
    pub(crate) seq: u64,
    pub(crate) node: String,
}

impl Message {
    /// The message as it is published.
    pub(crate) fn encode(&self) -> String {
        let Message { news, teller, seq, node } = self;
        format!("{VERSION} {} {teller:016x} {seq} {node}", news.as_str())
    }

    /// A message read off the channel, or `None` if it is not one (another
    /// client publishing there, or a later version of fluster).
    pub(crate) fn parse(payload: &[u8]) -> Option<Message> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut words = text.splitn(5, ' ');
        if words.next()? != VERSION {
            return None;
        }
        let news = match words.next()? {
            "boxed" => News::Boxed,
            "returned" => News::Returned,
            _ => return None,
        };
        let teller = u64::from_str_radix(words.next()?, 16).ok()?;
        let seq = words.next()?.parse().ok()?;
        let node = words.next().filter(|node| !node.is_empty())?.to_owned();
        Some(Message { news, teller, seq, node })
    }
}

/// What a process remembers of the messages it heard.
#[derive(Debug, Default)]
pub(crate) struct Heard {
    /// The latest ids, oldest first, to act on each message once.
    ids: VecDeque<(u64, u64)>,
    /// When each piece of news about each node was last heard.
    told: HashMap<(String, News), Instant>,
    /// When this process last changed each node's state itself.
    changed: HashMap<String, Instant>,
}

impl Heard {
    /// Notes `message`, heard at `now`: true if it is new (not heard
    /// through another node already).
    pub(crate) fn note(&mut self, message: &Message, now: Instant) -> bool {
        let id = (message.teller, message.seq);
        if self.ids.contains(&id) {
            return false;
        }
        if self.ids.len() == REMEMBERED {
            self.ids.pop_front();
        }
        self.ids.push_back(id);
        if self.told.len() >= TOLD && !self.told.contains_key(&(message.node.clone(), message.news))
        {
            let oldest = self.told.iter().min_by_key(|(_, at)| **at).map(|(key, _)| key.clone());
            oldest.map(|key| self.told.remove(&key));
        }
        self.told.insert((message.node.clone(), message.news), now);
        true
    }

    /// When `news` of `node` was last heard from another process.
    pub(crate) fn heard_at(&self, node: &str, news: News) -> Option<Instant> {
        self.told.get(&(node.to_owned(), news)).copied()
    }

    /// Forgets what was heard or done about nodes `keep` refuses (nodes
    /// that left the pool).
    pub(crate) fn keep(&mut self, keep: impl Fn(&str) -> bool) {
        self.told.retain(|(node, _), _| keep(node));
        self.changed.retain(|node, _| keep(node));
    }

    /// Notes this process's own change of `node` to `news` at `now`, and
    /// says whether it follows the same news from another process: heard
    /// since this process last changed the node (the other way), or, for
    /// its first change, within `window`. Telling it then would only echo.
    pub(crate) fn follows(
        &mut self,
        node: &str,
        news: News,
        now: Instant,
        window: Duration,
    ) -> bool {
        let last = self.changed.insert(node.to_owned(), now);
        let Some(&heard) = self.told.get(&(node.to_owned(), news)) else { return false };
        match last {
            Some(last) => heard >= last,
            None => now.saturating_duration_since(heard) <= window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(news: News, seq: u64, node: &str) -> Message {
        Message { news, teller: 0xfeed_0000_beef, seq, node: node.into() }
    }

    #[test]
    fn a_message_reads_back_as_it_was_sent() {
        for m in [message(News::Boxed, 1, "cache-a"), message(News::Returned, 9, "a node")] {
            assert_eq!(Message::parse(m.encode().as_bytes()), Some(m));
        }
        assert_eq!(message(News::Boxed, 7, "n").encode(), "fluster1 boxed 0000feed0000beef 7 n");
    }

    #[test]
    fn anything_else_on_the_channel_is_ignored() {
        for payload in [
            &b""[..],
            b"hello",
            b"fluster2 boxed 01 1 a",
            b"fluster1 gone 01 1 a",
            b"fluster1 boxed zz 1 a",
            b"fluster1 boxed 01 x a",
            b"fluster1 boxed 01 1",
            b"fluster1 boxed 01 1 ",
            b"\xff\xfe",
        ] {
            assert_eq!(Message::parse(payload), None, "{payload:?}");
        }
    }

    #[test]
    fn each_message_is_acted_on_once_and_news_is_not_echoed() {
        let (mut heard, now) = (Heard::default(), Instant::now());
        let m = message(News::Returned, 1, "a");
        assert!(heard.note(&m, now));
        assert!(!heard.note(&m, now), "the same message through another node");
        assert!(heard.note(&message(News::Returned, 2, "a"), now));
    }

    #[test]
    fn a_change_that_follows_the_same_news_is_not_told_again() {
        let (mut heard, t0, window) = (Heard::default(), Instant::now(), Duration::from_secs(2));
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(!heard.follows("a", News::Boxed, at(0), window), "nothing heard: tell");
        heard.note(&message(News::Returned, 1, "a"), at(10));
        assert!(heard.follows("a", News::Returned, at(30), window), "told first: an echo");
        assert!(!heard.follows("a", News::Boxed, at(100), window));
        assert!(!heard.follows("a", News::Returned, at(200), window), "heard before the boxing");
        assert!(!heard.follows("b", News::Returned, at(200), window), "another node");
        heard.note(&message(News::Boxed, 2, "c"), at(0));
        assert!(heard.follows("c", News::Boxed, at(1_000), window), "a first change, just told");
        heard.note(&message(News::Boxed, 3, "d"), at(0));
        assert!(!heard.follows("d", News::Boxed, at(5_000), window), "a first change, old news");
    }

    #[test]
    fn longest_fits_the_longest_real_message() {
        let name = "n".repeat(300);
        let m = Message { news: News::Returned, teller: u64::MAX, seq: u64::MAX, node: name };
        assert_eq!(m.encode().len(), longest(300));
    }

    #[test]
    fn news_of_many_nodes_is_remembered_up_to_a_bound() {
        let (mut heard, now) = (Heard::default(), Instant::now());
        for seq in 0..10_000u64 {
            heard.note(&message(News::Returned, seq, &format!("node-{seq}")), now);
        }
        assert!(heard.told.len() <= 1024, "{} pieces of news remembered", heard.told.len());
        assert!(heard.ids.len() <= 1024);
        heard.keep(|node| node == "node-9999");
        assert_eq!(heard.told.len(), 1, "news of nodes that left is forgotten");
    }

    #[test]
    fn ids_are_remembered_up_to_a_bound() {
        let (mut heard, now) = (Heard::default(), Instant::now());
        for seq in 0..(REMEMBERED as u64 + 10) {
            assert!(heard.note(&message(News::Boxed, seq, "a"), now));
        }
        assert_eq!(heard.ids.len(), REMEMBERED);
    }
}
