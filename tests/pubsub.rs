//! Pub/sub by channel: publishers and subscribers meet on the node the
//! channel routes to; a subscription follows its channel to the stand-in
//! when that node dies, and home when it returns.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fluster::{ShardedPool, Subscription};
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use support::{RedisServer, builder_for, eventually, start_servers};

/// One subscriber: a subscription per channel, read as one stream.
async fn subscriber(pool: &ShardedPool, channels: &[String]) -> SelectAll<Subscription> {
    let mut all = SelectAll::new();
    for channel in channels {
        all.push(pool.subscribe(channel).await.unwrap());
    }
    all
}

/// The channels of the messages that arrive within `wait` of each other.
async fn drain(sub: &mut SelectAll<Subscription>, wait: Duration) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(wait, sub.next()).await {
        got.push(msg.get_channel_name().to_owned());
    }
    got
}

/// Publishes once on every channel; both subscribers must get every one.
async fn all_arrive(pool: &ShardedPool, channels: &[String], subs: &mut [SelectAll<Subscription>]) {
    for channel in channels {
        pool.publish(channel, "hello").await.unwrap();
    }
    for sub in subs.iter_mut() {
        let mut got: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < channels.len() && Instant::now() < deadline {
            got.extend(drain(sub, Duration::from_millis(200)).await);
        }
        let want: HashSet<&String> = channels.iter().collect();
        assert_eq!(got.iter().collect::<HashSet<_>>(), want, "not every message arrived");
        assert_eq!(got.len(), channels.len(), "a message arrived twice");
    }
}

/// Publishes on `channels` until both subscribers hear every one of them;
/// returns how many of those messages reached no subscriber.
async fn through_a_move(
    pool: &ShardedPool,
    channels: &[String],
    subs: &mut [SelectAll<Subscription>],
) -> usize {
    let mut heard = vec![HashSet::new(); subs.len()];
    let mut lost = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while heard.iter().any(|h| h.len() < channels.len()) {
        assert!(Instant::now() < deadline, "subscriptions never followed their channels");
        for channel in channels {
            // Zero receivers, or no node to publish on: that message is lost.
            if pool.publish(channel, "moving").await.unwrap_or(0) == 0 {
                lost += 1;
            }
        }
        for (sub, heard) in subs.iter_mut().zip(&mut heard) {
            heard.extend(drain(sub, Duration::from_millis(50)).await);
        }
    }
    // Let the stragglers of the last round in before the next phase.
    for sub in subs.iter_mut() {
        drain(sub, Duration::from_millis(300)).await;
    }
    lost
}

/// Subscriber connections (`CLIENT LIST TYPE pubsub`) on `server`.
fn pubsub_clients(server: &RedisServer) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut server.client())
        .unwrap();
    list.lines().count()
}

/// Whether `server` has a subscriber on every one of `channels`.
fn subscribed_on(server: &RedisServer, channels: &[String]) -> bool {
    let counts: Vec<(String, usize)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channels)
        .query(&mut server.client())
        .unwrap_or_default();
    counts.len() == channels.len() && counts.iter().all(|(_, n)| *n == 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_follow_their_channels_through_a_kill_and_a_return() {
    let mut servers = start_servers(3);
    let pool = builder_for(&servers)
        .penalty_min_wait(Duration::from_millis(300))
        .penalty_max_wait(Duration::from_millis(300))
        .penalty_jitter(0.0)
        .build()
        .await
        .unwrap();
    let channels: Vec<String> = (0..100).map(|i| format!("news:{i}")).collect();
    let mut subs = [subscriber(&pool, &channels).await, subscriber(&pool, &channels).await];

    all_arrive(&pool, &channels, &mut subs).await;
    // 200 subscriptions, one subscriber connection per node.
    assert!(servers.iter().all(|s| pubsub_clients(s) == 1));

    let home = servers[0].name();
    let theirs: Vec<String> = channels
        .iter()
        .filter(|c| pool.home_node_for(c).as_deref() == Some(home.as_str()))
        .cloned()
        .collect();
    assert!(!theirs.is_empty());
    servers[0].kill();
    let lost = through_a_move(&pool, &theirs, &mut subs).await;
    println!("moving {} channels to their stand-ins lost {lost} messages", theirs.len());
    all_arrive(&pool, &channels, &mut subs).await;

    servers[0].restart();
    // Publish all along: between the node's return (publishers go home at
    // once) and its subscriptions following, messages can be lost.
    let (mut lost, deadline) = (0, Instant::now() + Duration::from_secs(10));
    while !subscribed_on(&servers[0], &theirs) {
        assert!(Instant::now() < deadline, "the channels never came home");
        for channel in &theirs {
            if pool.publish(channel, "returning").await.unwrap_or(0) == 0 {
                lost += 1;
            }
        }
        for sub in subs.iter_mut() {
            drain(sub, Duration::from_millis(20)).await;
        }
    }
    lost += through_a_move(&pool, &theirs, &mut subs).await;
    println!("moving them home again lost {lost} messages");
    all_arrive(&pool, &channels, &mut subs).await;
    // They arrive from the home node: it holds their subscriptions, the
    // stand-ins no longer do.
    assert!(subscribed_on(&servers[0], &theirs));
    for stand_in in &servers[1..] {
        let counts: Vec<(String, usize)> =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&theirs).query(&mut stand_in.client()).unwrap();
        assert!(counts.iter().all(|(_, n)| *n == 0), "a stand-in kept a subscription");
    }
    assert!(servers.iter().all(|s| pubsub_clients(s) == 1));

    // Dropping every subscription unsubscribes, and closes the subscriber
    // connections that carry nothing any more.
    drop(subs);
    let gone = eventually(Duration::from_secs(5), || {
        servers.iter().all(|s| {
            let channels: Vec<String> =
                redis::cmd("PUBSUB").arg("CHANNELS").query(&mut s.client()).unwrap();
            channels.is_empty() && pubsub_clients(s) == 0
        })
    });
    assert!(gone.await);
}

#[tokio::test]
async fn patterns_route_by_their_hash_tag() {
    let servers = start_servers(3);
    let pool = builder_for(&servers).build().await.unwrap();
    let mut sport = pool.psubscribe("{news}.*").await.unwrap();
    for channel in ["{news}.sport", "{news}.weather"] {
        assert_eq!(pool.node_for(channel), pool.node_for("{news}.*"));
        assert_eq!(pool.publish(channel, "kick-off").await.unwrap(), 1);
        let msg =
            tokio::time::timeout(Duration::from_secs(5), sport.next()).await.unwrap().unwrap();
        assert_eq!(msg.get_channel_name(), channel);
        assert_eq!(msg.get_payload::<String>().unwrap(), "kick-off");
    }
}

/// A channel whose home is `node`.
fn channel_on(pool: &ShardedPool, node: &str, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .find(|c| pool.home_node_for(c).as_deref() == Some(node))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_neither_keeps_its_channels_nor_stalls_other_subscriptions() {
    let servers = start_servers(2);
    let response_timeout = Duration::from_millis(500);
    let pool = builder_for(&servers)
        .response_timeout(response_timeout)
        .penalty_min_wait(Duration::from_secs(30))
        .penalty_max_wait(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let (hung, healthy) = (servers[0].name(), servers[1].name());
    let moving = channel_on(&pool, &hung, "moving");
    let mut sub = pool.subscribe(&moving).await.unwrap();
    // A subscription on the healthy node too: its link exists before.
    let _kept = pool.subscribe(channel_on(&pool, &healthy, "kept")).await.unwrap();
    assert_eq!(pool.publish(&moving, "before").await.unwrap(), 1);
    tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();

    servers[0].pause();
    let boxed = eventually(Duration::from_secs(15), || {
        pool.status().iter().any(|s| s.name == hung && !s.up)
    });
    assert!(boxed.await, "the hung node was never boxed");

    // Subscribing to a channel of the healthy node waits on nobody hung.
    let started = Instant::now();
    let other = channel_on(&pool, &healthy, "other");
    let mut fresh = tokio::time::timeout(Duration::from_secs(5), pool.subscribe(&other))
        .await
        .expect("a subscribe on the healthy node waited on the hung one")
        .unwrap();
    let waited = started.elapsed();
    assert!(waited < response_timeout * 2, "subscribe took {waited:?}");
    assert_eq!(pool.publish(&other, "hello").await.unwrap(), 1);
    tokio::time::timeout(Duration::from_secs(2), fresh.next()).await.unwrap().unwrap();

    // The moved channel's messages arrive from its stand-in: publish until
    // the subscription is there (one move: a response_timeout at most).
    let (mut heard, deadline) = (false, Instant::now() + Duration::from_secs(5));
    while !heard && Instant::now() < deadline {
        pool.publish(&moving, "after").await.unwrap();
        heard = matches!(
            tokio::time::timeout(Duration::from_millis(100), sub.next()).await,
            Ok(Some(msg)) if msg.get_payload::<String>().unwrap() == "after"
        );
    }
    assert!(heard, "the channel of the hung node never reached its stand-in");
    // Once moved, every message arrives.
    for i in 0..30 {
        pool.publish(&moving, format!("then {i}")).await.unwrap();
    }
    let mut then = Vec::new();
    while then.len() < 30 {
        let msg = tokio::time::timeout(Duration::from_secs(2), sub.next()).await.unwrap().unwrap();
        let got: String = msg.get_payload().unwrap();
        if got != "after" {
            then.push(got);
        }
    }
    assert_eq!(then, (0..30).map(|i| format!("then {i}")).collect::<Vec<_>>());
    servers[0].resume();
}
