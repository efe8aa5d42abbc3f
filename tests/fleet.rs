//! The fleet (`Builder::fleet`), across real processes: this test binary
//! starts copies of itself (the ignored test `process`), each with a pool
//! of its own over the same real servers, one writing increasing versions
//! to keys homed on one node and the others reading them while that node
//! is paused and resumed. Each process logs what it saw; the parent reads
//! the logs.
//!
//! A read is stale if it returned a version older than one whose write was
//! acknowledged before the read began (a miss is not stale: the key is
//! then read from where it belongs).

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use fluster::{News, NodeEvent, ShardedPool};
use futures_util::StreamExt;
use redis::AsyncCommands;
use support::process::{self, Process};
use support::proxy::Proxy;
use support::{RedisServer, builder_for, eventually, keys_on, start_servers, status_of};

/// How long the home is paused.
const PAUSE: Duration = Duration::from_secs(3);
/// The processes' scenarios run one at a time: each is a handful of
/// processes on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Nanoseconds of the wall clock, which every process on the machine
/// shares.
fn now_ns() -> u128 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos()
}

fn env(name: &str) -> String {
    std::env::var(format!("FLUSTER_FLEET_{name}")).unwrap_or_default()
}

/// One process of a scenario, started by it; does nothing when run
/// otherwise.
#[test]
#[ignore = "a process of the fleet's scenarios, which start it themselves"]
fn process() {
    let Some(line) = process::log() else { return };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
    runtime.unwrap().block_on(run(env("ROLE") == "writer", line));
}

async fn run(writer: bool, line: impl Fn(String) + Clone + Send + Sync + 'static) {
    let urls: Vec<String> = env("NODES").split(',').map(str::to_owned).collect();
    let keys: Vec<String> = env("KEYS").split(',').map(str::to_owned).collect();
    let stop = PathBuf::from(env("STOP"));
    let wait = Duration::from_millis(env("WAIT").parse().unwrap());
    let mut builder = urls.iter().fold(ShardedPool::builder(), |b, url| b.node(url));
    if !env("NAME").is_empty() {
        builder = builder.fleet(&env("NAME"));
    }
    let pool = builder
        .stand_in_ttl(Duration::from_millis(env("TTL").parse().unwrap()))
        .invalidate_on_return(true)
        .penalty_min_wait(wait)
        .response_timeout(Duration::from_millis(200))
        .probe_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let mut events = pool.events();
    let told = line.clone();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                NodeEvent::Boxed { node, .. } => told(format!("boxed {} {node}", now_ns())),
                NodeEvent::Returned { node, .. } => told(format!("returned {} {node}", now_ns())),
                _ => {}
            }
        }
    });
    line("ready".into());
    let mut version = 0u64;
    while !stop.exists() {
        for key in &keys {
            let Ok(mut conn) = pool.get(key).await else { continue };
            if writer {
                version += 1;
                if conn.set::<_, _, ()>(key, version).await.is_ok() {
                    line(format!("ack {} {key} {version}", now_ns()));
                }
            } else {
                let began = now_ns();
                if let Ok(Some(read)) = conn.get::<_, Option<u64>>(key).await {
                    line(format!("read {began} {key} {read}"));
                }
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
}

/// What one scenario saw.
#[derive(Debug)]
struct Seen {
    /// Stale reads of each reader.
    stale: Vec<usize>,
    reads: usize,
    /// From the first process's return of the home to the last's.
    spread: Duration,
}

fn has(p: &Process, prefix: &str, node: &str) -> bool {
    p.lines().iter().any(|l| l.starts_with(prefix) && l.ends_with(node))
}

/// What a scenario does.
#[derive(Debug, Clone, Copy)]
struct Setup {
    /// Whether the processes form a fleet.
    fleet: bool,
    /// Whether the writer is killed while the home is boxed.
    kill: bool,
    readers: usize,
    /// The writer's and the readers' `penalty_min_wait`, in milliseconds.
    waits: (u64, u64),
    /// How long the home is paused.
    pause: Duration,
    /// The processes' `stand_in_ttl`.
    stand_in_ttl: Duration,
}

/// The tests' setup: four readers, and a writer that waits longer in the
/// box than they do, so that without a fleet they let the home back in
/// well before it.
const SETUP: Setup = Setup {
    fleet: true,
    kill: false,
    readers: 4,
    waits: (5_000, 200),
    pause: PAUSE,
    stand_in_ttl: Duration::from_secs(30),
};

/// One writer and some readers around a paused home.
async fn scenario(Setup { fleet, kill, readers, waits, pause, stand_in_ttl }: Setup) -> Seen {
    let _one = ONE_AT_A_TIME.lock().await;
    let servers = start_servers(3);
    let home = servers[0].name();
    let routing = builder_for(&servers).probe_at_build(false).build().await.unwrap();
    let keys = keys_on(&routing, &home, "fleet", 40).join(",");
    drop(routing);
    let dir =
        std::env::temp_dir().join(format!("fluster-fleet-{}-{}", std::process::id(), now_ns()));
    std::fs::create_dir_all(&dir).unwrap();
    let stop = dir.join("stop");
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let start = |role: &str, wait: u64| {
        let vars = [
            ("FLUSTER_FLEET_ROLE", role.to_owned()),
            ("FLUSTER_FLEET_NODES", urls.join(",")),
            ("FLUSTER_FLEET_KEYS", keys.clone()),
            ("FLUSTER_FLEET_NAME", if fleet { "test-fleet" } else { "" }.to_owned()),
            ("FLUSTER_FLEET_STOP", stop.display().to_string()),
            ("FLUSTER_FLEET_WAIT", wait.to_string()),
            ("FLUSTER_FLEET_TTL", stand_in_ttl.as_millis().to_string()),
        ];
        Process::start("process", &vars)
    };
    let mut writer = start("writer", waits.0);
    let all: Vec<Process> = (0..readers).map(|_| start("reader", waits.1)).collect();
    let ready = |p: &Process| p.lines().first().is_some_and(|l| l == "ready");
    let up = eventually(Duration::from_secs(20), || ready(&writer) && all.iter().all(ready)).await;
    assert!(up, "the processes did not start");
    tokio::time::sleep(Duration::from_secs(1)).await; // traffic with every node up
    servers[0].pause();
    let boxed = |p: &Process| has(p, "boxed", &home);
    assert!(eventually(Duration::from_secs(10), || boxed(&writer) && all.iter().all(boxed)).await);
    tokio::time::sleep(pause / 2).await;
    if kill {
        writer.kill();
    }
    tokio::time::sleep(pause / 2).await;
    servers[0].resume();
    let back = |p: &Process| has(p, "returned", &home);
    let returned =
        eventually(Duration::from_secs(20), || (kill || back(&writer)) && all.iter().all(back))
            .await;
    assert!(returned, "not every process let the home back in");
    tokio::time::sleep(Duration::from_secs(1)).await; // traffic after the return
    std::fs::write(&stop, "").unwrap();
    let mut processes = all;
    for p in processes.iter_mut().chain(std::iter::once(&mut writer)) {
        assert!(eventually(Duration::from_secs(10), || p.ended()).await, "a process did not stop");
    }
    // Acknowledged writes, per key, in order.
    let mut acks: HashMap<String, Vec<(u128, u64)>> = HashMap::new();
    for l in writer.lines() {
        if let ["ack", at, key, version] = l.split(' ').collect::<Vec<_>>()[..] {
            acks.entry(key.into())
                .or_default()
                .push((at.parse().unwrap(), version.parse().unwrap()));
        }
    }
    let newest_before = |key: &str, at: u128| {
        let acks = acks.get(key).map_or(&[][..], Vec::as_slice);
        acks[..acks.partition_point(|(t, _)| *t < at)].last().map_or(0, |(_, v)| *v)
    };
    let (mut stale, mut reads) = (Vec::new(), 0);
    let mut returns = Vec::new();
    for p in processes.iter().chain((!kill).then_some(&writer)) {
        let mut found = 0;
        for l in p.lines() {
            match l.split(' ').collect::<Vec<_>>()[..] {
                ["read", at, key, version] => {
                    reads += 1;
                    let version: u64 = version.parse().unwrap();
                    found += usize::from(version < newest_before(key, at.parse().unwrap()));
                }
                ["returned", at, node] if node == home => returns.push(at.parse::<u128>().unwrap()),
                _ => {}
            }
        }
        if !std::ptr::eq(p, &writer) {
            stale.push(found);
        }
    }
    let spread = returns.iter().max().unwrap() - returns.iter().min().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Seen { stale, reads, spread: Duration::from_nanos(spread as u64) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_fleet_no_reader_reads_a_stale_copy_and_the_return_is_together() {
    let seen = scenario(SETUP).await;
    println!("with a fleet: {seen:?}");
    assert!(seen.reads > 1_000, "the readers read: {seen:?}");
    assert!(seen.stale.iter().all(|&s| s == 0), "stale reads: {seen:?}");
    // Tens of ms on a quiet machine (BENCHMARKS.md measures it); the test
    // only tells a fleet's return (together) from the back-offs' (0.6 s
    // apart and more), which two CPU hogs must not blur: 300 ms.
    assert!(seen.spread < Duration::from_millis(300), "the return was spread: {seen:?}");
}

/// The same processes without a fleet read stale copies: the test above
/// measures something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fleet_readers_read_the_homes_old_copies() {
    let seen = scenario(Setup { fleet: false, ..SETUP }).await;
    println!("without a fleet: {seen:?}");
    assert!(seen.stale.iter().sum::<usize>() > 0, "no stale read: {seen:?}");
    assert!(seen.spread > Duration::from_millis(200), "the return was together: {seen:?}");
}

/// The writer dies while the home is boxed: its journal is in Redis, and
/// the first reader to let the home back in deletes its copies and the
/// home's older ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_writers_copies_are_found_in_redis() {
    let seen = scenario(Setup { kill: true, readers: 3, ..SETUP }).await;
    println!("writer killed: {seen:?}");
    assert!(seen.reads > 1_000, "the readers read: {seen:?}");
    assert!(seen.stale.iter().all(|&s| s == 0), "stale reads: {seen:?}");
}

/// The writer dies while the home is boxed, and the home stays boxed far
/// longer than `stand_in_ttl`: its copies expire, but its records of them
/// outlive them (kept alive by every process that has the home boxed), so
/// the home's older copies are still deleted at its return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_writers_records_outlive_its_copies() {
    let setup = Setup { kill: true, readers: 3, stand_in_ttl: Duration::from_millis(300), ..SETUP };
    let seen = scenario(setup).await;
    println!("writer killed, copies expired: {seen:?}");
    assert!(seen.reads > 1_000, "the readers read: {seen:?}");
    assert!(seen.stale.iter().all(|&s| s == 0), "stale reads: {seen:?}");
}

/// The figures of `BENCHMARKS.md`: seven processes with the same settings
/// (one writer, six readers, `penalty_min_wait` at its default), the home
/// paused for 4 s, with and without a fleet, three rounds each.
///
///     cargo test --test fleet measure -- --ignored --nocapture
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it by name"]
async fn measure() {
    for fleet in [false, true, false, true, false, true] {
        let setup =
            Setup { fleet, readers: 6, waits: (200, 200), pause: PAUSE + PAUSE / 3, ..SETUP };
        let seen = scenario(setup).await;
        let stale: usize = seen.stale.iter().sum();
        println!(
            "fleet {fleet:5}: stale {stale:4} of {:6} reads, return spread {:7.1} ms",
            seen.reads,
            seen.spread.as_secs_f64() * 1e3
        );
    }
}

/// A pool of a fleet named `fleet` over `urls` (nodes named `a`, `b`,
/// ...), quick to box and to probe, with a heartbeat that finds an idle
/// node's death at once.
async fn member(urls: &[String], fleet: &str) -> ShardedPool {
    let names = ["a", "b", "c"];
    let builder = urls
        .iter()
        .zip(names)
        .fold(ShardedPool::builder(), |b, (url, name)| b.named_node(name, url));
    builder
        .fleet(fleet)
        .invalidate_on_return(true)
        .heartbeat(Duration::from_millis(50))
        .timeouts_before_penalty(1)
        .response_timeout(Duration::from_millis(200))
        .probe_timeout(Duration::from_millis(300))
        .penalty_min_wait(Duration::from_millis(100))
        .penalty_max_wait(Duration::from_millis(400))
        .build()
        .await
        .unwrap()
}

/// Every message published on `channel` on `server`, counted as it comes.
async fn count_messages(server: &RedisServer, channel: &str) -> std::sync::Arc<Mutex<Vec<String>>> {
    let client = redis::Client::open(server.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(channel).await.unwrap();
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            into.lock().unwrap().push(message.get_payload::<String>().unwrap());
        }
    });
    seen
}

fn heard(events: &mut tokio::sync::broadcast::Receiver<NodeEvent>) -> Vec<(String, News)> {
    let mut heard = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let NodeEvent::Heard { node, news, .. } = event {
            heard.push((node.to_string(), news));
        }
    }
    heard
}

/// A node that flaps makes no storm: each process tells each of its own
/// changes once at most, and what it then hears from itself sets off
/// nothing; the others, told first, do not echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_node_makes_no_storm_and_no_process_hears_itself() {
    let mut servers = start_servers(3);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let messages = count_messages(&servers[1], "storm").await;
    let alone = member(&urls, "storm").await;
    let mut own = alone.events();
    let flaps = 3;
    for _ in 0..flaps {
        servers[0].kill();
        assert!(eventually(Duration::from_secs(5), || !status_of(&alone, "a").up).await);
        servers[0].restart();
        assert!(eventually(Duration::from_secs(5), || status_of(&alone, "a").up).await);
    }
    let told = eventually(Duration::from_secs(2), || messages.lock().unwrap().len() == 2 * flaps);
    assert!(told.await, "one message per change: {:?}", messages.lock().unwrap());
    assert_eq!(heard(&mut own), [], "a process heard its own news");

    // Three processes: news of each change comes from a few of them, not
    // from every one for every message it hears.
    let (members, mut events) = {
        let mut members = Vec::new();
        for _ in 0..3 {
            members.push(member(&urls, "storm").await);
        }
        let events: Vec<_> = members.iter().map(ShardedPool::events).collect();
        (members, events)
    };
    messages.lock().unwrap().clear();
    for _ in 0..flaps {
        servers[0].kill();
        let all = |up: bool| members.iter().all(|m| status_of(m, "a").up == up);
        assert!(eventually(Duration::from_secs(5), || all(false)).await);
        servers[0].restart();
        assert!(eventually(Duration::from_secs(5), || all(true)).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // late messages would show
    let count = messages.lock().unwrap().len();
    assert!(count >= 2 * flaps, "each change was told: {count}");
    let processes = members.len() + 1; // `alone` is one of the fleet too
    assert!(count <= 2 * flaps * processes, "at most one per change per process: {count}");
    let heard: usize = events.iter_mut().map(|e| heard(e).len()).sum();
    println!("{flaps} flaps, {processes} processes: {count} messages, {heard} acted on");
    drop(alone);
}

/// One process cut off from a node the others reach (a proxy that keeps
/// its sockets open and passes nothing): it boxes the node and tells the
/// others, who check for themselves and keep it; it keeps its own view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_cut_off_from_a_node_does_not_box_it_for_the_others() {
    let servers = start_servers(3);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let proxy = Proxy::start(servers[0].port());
    let mut cut_urls = urls.clone();
    cut_urls[0] = proxy.url();
    let cut = member(&cut_urls, "partition").await;
    let others = [member(&urls, "partition").await, member(&urls, "partition").await];
    let mut events: Vec<_> = others.iter().map(ShardedPool::events).collect();
    proxy.silence();
    assert!(eventually(Duration::from_secs(5), || !status_of(&cut, "a").up).await);
    let checked = |events: &mut Vec<tokio::sync::broadcast::Receiver<NodeEvent>>| {
        events.iter_mut().all(|e| heard(e).contains(&("a".to_owned(), News::Boxed)))
    };
    let mut told = false;
    for _ in 0..200 {
        told = told || checked(&mut events);
        if told {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(told, "the others did not act on the news");
    // For a second, long after their checks ended: the others keep the
    // node, the cut-off process keeps it boxed.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert!(others.iter().all(|o| status_of(o, "a").up), "a process boxed a node it reaches");
        assert!(!status_of(&cut, "a").up, "the cut-off process let the node back in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What it costs: the others write a key on its home; the cut-off
    // process writes it on a stand-in, and the others never see that write
    // while the partition lasts (a cache's miss at worst once it heals).
    let key = keys_on(&others[0], "a", "partition", 1).remove(0);
    let mut conn = others[0].get(&key).await.unwrap();
    assert!(conn.is_home(), "the others serve the node's keys from it");
    let _: () = conn.set(&key, "before").await.unwrap();
    let mut stand_in = cut.get(&key).await.unwrap();
    assert!(!stand_in.is_home());
    let _: () = stand_in.set(&key, "cut off").await.unwrap();
    let read: Option<String> = conn.get(&key).await.unwrap();
    assert_eq!(read.as_deref(), Some("before"), "the others read the home's older value");
    // Its write is recorded on the stand-in, and counted in its status.
    let recorded = || status_of(&cut, "a").stand_in_recorded;
    assert!(eventually(Duration::from_secs(3), || recorded() == Some(1)).await, "{:?}", recorded());
    assert_eq!(status_of(&others[0], "a").stand_in_recorded, Some(0));
    proxy.restore();
    assert!(eventually(Duration::from_secs(5), || status_of(&cut, "a").up).await);
    let read: Option<String> = conn.get(&key).await.unwrap();
    assert_eq!(read, None, "its return deleted the home's copy, older than its write");
    assert_eq!(recorded(), Some(0), "the record was taken at the return");
}

/// A pool of a fleet holds one subscriber connection per node, and lets
/// them go when it is closed or dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleets_connections_end_with_its_pool() {
    let servers = start_servers(2);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    for close in [true, false] {
        let pool = member(&urls, "ends").await;
        let subscribed = |s: &RedisServer| {
            let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut s.client()).unwrap();
            list.lines().filter(|l| l.contains("cmd=subscribe")).count()
        };
        let linked = || servers.iter().all(|s| subscribed(s) == 1);
        assert!(eventually(Duration::from_secs(3), linked).await, "one subscriber per node");
        if close {
            pool.close();
        } else {
            drop(pool);
        }
        let gone = || servers.iter().all(|s| subscribed(s) == 0);
        assert!(eventually(Duration::from_secs(3), gone).await, "subscribers left behind");
    }
}

/// Two processes of a fleet (two pools here, each reaching the home
/// through a proxy of its own) return the same home at once while its
/// deletes are held (`CLIENT PAUSE ... WRITE` on the home). The one that
/// returns second finds the records the first is still acting on, and
/// deletes too before it routes a key home: no read through it returns
/// the home's old value after a newer write was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_returning_while_another_deletes_waits_for_the_deletes() {
    let servers = start_servers(2);
    let (to_first, to_second) = (Proxy::start(servers[0].port()), Proxy::start(servers[0].port()));
    let member = |via: &Proxy| {
        ShardedPool::builder()
            .named_node("h", &via.url())
            .named_node("s", &servers[1].url())
            .fleet("together")
            .stand_in_ttl(Duration::from_secs(30))
            .invalidate_on_return(true)
            .heartbeat(Duration::from_millis(50))
            .response_timeout(Duration::from_millis(500))
            // Long enough for a delete held by the pause.
            .probe_timeout(Duration::from_secs(5))
            .penalty_min_wait(Duration::from_millis(100))
            .penalty_max_wait(Duration::from_millis(200))
            .build()
    };
    let (first, second) = (member(&to_first).await.unwrap(), member(&to_second).await.unwrap());
    let key = keys_on(&first, "h", "together", 1).remove(0);
    let _: () = first.get(&key).await.unwrap().set(&key, "v1").await.unwrap();

    to_first.refuse();
    to_second.refuse();
    let boxed = || !status_of(&first, "h").up && !status_of(&second, "h").up;
    assert!(eventually(Duration::from_secs(5), boxed).await, "the home was not boxed in both");
    // The first writes a newer value on the stand-in, recorded there.
    let mut conn = first.get(&key).await.unwrap();
    assert!(!conn.is_home());
    let _: () = conn.set(&key, "v2").await.unwrap();
    drop(conn);
    let recorded: bool = redis::cmd("SISMEMBER")
        .arg("fluster:fleet:together:journal:h")
        .arg(&key)
        .query(&mut servers[1].client())
        .unwrap();
    assert!(recorded, "the stand-in write was not recorded on the stand-in");

    // The home holds every write for 4 s: the returns' deletes wait.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(4_000)
        .arg("WRITE")
        .query(&mut servers[0].client())
        .unwrap();
    to_first.restore();
    // The first is in its return: its journal taken, the home still out.
    let returning = || {
        let status = status_of(&first, "h");
        !status.up && status.stand_in_keys == 0
    };
    assert!(eventually(Duration::from_secs(3), returning).await, "{:?}", status_of(&first, "h"));
    to_second.restore();
    assert!(eventually(Duration::from_secs(10), || status_of(&second, "h").up).await);
    let read: Option<String> = second.get(&key).await.unwrap().get(&key).await.unwrap();
    assert!(
        read.is_none() || read.as_deref() == Some("v2"),
        "read {read:?} through the second after its return: older than the acknowledged v2"
    );
    assert!(eventually(Duration::from_secs(10), || status_of(&first, "h").up).await);
}

/// Forged "returned" news every 20 ms about a dead node: it may bring a
/// probe forward, but at most once per `penalty_min_wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_return_news_makes_no_probe_storm() {
    let mut servers = start_servers(2);
    let min_wait = Duration::from_millis(500);
    let pool = builder_for(&servers)
        .fleet("forged")
        .penalty_min_wait(min_wait)
        .penalty_max_wait(Duration::from_secs(60))
        // Each failed probe quadruples the stay: left alone, the dead node
        // is probed about twice in the run.
        .penalty_multiplier(4.0)
        .penalty_jitter(0.0)
        .build()
        .await
        .unwrap();
    let dead = servers[1].name();
    let key = support::key_on(&pool, &dead, "forged");
    servers[1].kill();
    if let Ok(mut conn) = pool.get(&key).await {
        let _: Result<(), _> = conn.set(&key, 1).await;
    }
    assert!(eventually(Duration::from_secs(5), || !status_of(&pool, &dead).up).await);
    // The fleet listens on the live node.
    let mut forger = servers[0].client();
    let listening = eventually(Duration::from_secs(5), || {
        let n: Vec<(String, usize)> =
            redis::cmd("PUBSUB").arg("NUMSUB").arg("forged").query(&mut forger).unwrap();
        n[0].1 > 0
    });
    assert!(listening.await, "the fleet never subscribed");
    let before = status_of(&pool, &dead).failed_probes;
    let run = Duration::from_secs(3);
    let started = Instant::now();
    let mut seq = 0u64;
    while started.elapsed() < run {
        seq += 1;
        let forged = format!("fluster1 returned 00000000deadbeef {seq} {dead}");
        let _: () = redis::cmd("PUBLISH").arg("forged").arg(forged).query(&mut forger).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let probes = status_of(&pool, &dead).failed_probes - before;
    let bound = (run.as_millis() / min_wait.as_millis()) as u32 + 1;
    println!("{seq} forged messages in {run:?}: {probes} probes of the dead node (bound {bound})");
    assert!(probes >= 1, "the news brought no probe forward at all");
    assert!(probes <= bound, "{probes} probes in {run:?} (at most {bound})");
}
