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
    let names: Vec<String> = env("NAMES").split(',').map(str::to_owned).collect();
    let keys: Vec<String> = env("KEYS").split(',').map(str::to_owned).collect();
    let stop = PathBuf::from(env("STOP"));
    let wait = Duration::from_millis(env("WAIT").parse().unwrap());
    let mut builder = match env("NAMES").is_empty() {
        true => urls.iter().fold(ShardedPool::builder(), |b, url| b.node(url)),
        false => urls
            .iter()
            .zip(&names)
            .fold(ShardedPool::builder(), |b, (url, name)| b.named_node(name, url)),
    };
    if !env("NAME").is_empty() {
        builder = builder.fleet(&env("NAME"));
    }
    let pool = builder
        .stand_in_ttl(Duration::from_millis(env("TTL").parse().unwrap_or(30_000)))
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
                match conn.get::<_, Option<u64>>(key).await {
                    Ok(Some(read)) => line(format!("read {began} {key} {read}")),
                    Ok(None) => line(format!("miss {began} {key}")),
                    Err(_) => {}
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
    let acks = Acks::of(&writer);
    let (mut stale, mut reads) = (Vec::new(), 0);
    let mut returns = Vec::new();
    for p in processes.iter().chain((!kill).then_some(&writer)) {
        let judged = acks.judge(p);
        reads += judged.reads;
        for l in p.lines() {
            if let ["returned", at, node] = l.split(' ').collect::<Vec<_>>()[..]
                && node == home
            {
                returns.push(at.parse::<u128>().unwrap());
            }
        }
        if !std::ptr::eq(p, &writer) {
            stale.push(judged.late.len());
        }
    }
    let spread = returns.iter().max().unwrap() - returns.iter().min().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Seen { stale, reads, spread: Duration::from_nanos(spread as u64) }
}

/// A writer's acknowledged writes, per key, in order (wall clock in ns,
/// version).
struct Acks(HashMap<String, Vec<(u128, u64)>>);

/// What one process read.
#[derive(Debug, Default)]
struct Judged {
    /// Reads that returned a value, and misses.
    reads: usize,
    misses: usize,
    /// For each stale read: how long after the write it missed was
    /// acknowledged it began.
    late: Vec<Duration>,
}

impl Acks {
    fn of(writer: &Process) -> Self {
        let mut acks: HashMap<String, Vec<(u128, u64)>> = HashMap::new();
        for l in writer.lines() {
            if let ["ack", at, key, version] = l.split(' ').collect::<Vec<_>>()[..] {
                acks.entry(key.into())
                    .or_default()
                    .push((at.parse().unwrap(), version.parse().unwrap()));
            }
        }
        Acks(acks)
    }

    /// A read is stale if it returned a version older than one whose
    /// write was acknowledged before it began; it is as late as the first
    /// such acknowledgement is old.
    fn judge(&self, p: &Process) -> Judged {
        let mut judged = Judged::default();
        for l in p.lines() {
            match l.split(' ').collect::<Vec<_>>()[..] {
                ["read", at, key, version] => {
                    judged.reads += 1;
                    let (at, version): (u128, u64) =
                        (at.parse().unwrap(), version.parse().unwrap());
                    let acks = self.0.get(key).map_or(&[][..], Vec::as_slice);
                    let before = &acks[..acks.partition_point(|(t, _)| *t < at)];
                    if let Some((acked, _)) = before.iter().find(|(_, v)| *v > version) {
                        judged.late.push(Duration::from_nanos((at - acked) as u64));
                    }
                }
                ["miss", ..] => judged.misses += 1,
                _ => {}
            }
        }
        judged
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_fleet_no_reader_reads_a_stale_copy_and_the_return_is_together() {
    let seen = scenario(SETUP).await;
    println!("with a fleet: {seen:?}");
    assert!(seen.reads > 1_000, "the readers read: {seen:?}");
    assert!(seen.stale.iter().all(|&s| s == 0), "stale reads: {seen:?}");
    // Tens of ms on a quiet machine (BENCHMARKS.md measures it); the test
    // only tells a fleet's return (together) from the back-offs' (0.6 s
    // apart and more), which two CPU hogs must not blur: 500 ms (two hogs
    // stretched it to 302 ms once).
    assert!(seen.spread < Duration::from_millis(500), "the return was spread: {seen:?}");
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
    // process writes it on a stand-in, and relays its delete on the home
    // (it alone has the node boxed): the others miss it there instead of
    // reading the older value, after the relay's trip.
    let key = keys_on(&others[0], "a", "partition", 1).remove(0);
    let mut conn = others[0].get(&key).await.unwrap();
    assert!(conn.is_home(), "the others serve the node's keys from it");
    let _: () = conn.set(&key, "before").await.unwrap();
    let mut relayed: Vec<_> = others.iter().map(ShardedPool::events).collect();
    let mut stand_in = cut.get(&key).await.unwrap();
    assert!(!stand_in.is_home());
    let _: () = stand_in.set(&key, "cut off").await.unwrap();
    let mut read: Option<String> = conn.get(&key).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while read.is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        read = conn.get(&key).await.unwrap();
    }
    assert_eq!(read, None, "the relayed delete did not reach the home");
    let mut deleted = 0;
    let mut count = |relayed: &mut Vec<tokio::sync::broadcast::Receiver<NodeEvent>>| {
        for e in relayed.iter_mut() {
            while let Ok(event) = e.try_recv() {
                if let NodeEvent::Relayed { node, keys, .. } = event {
                    assert_eq!(node.to_string(), "a");
                    deleted += keys;
                }
            }
        }
        deleted
    };
    assert!(eventually(Duration::from_secs(2), || count(&mut relayed) > 0).await);
    // Both others heard it; a second delete would come at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&mut relayed), 1, "the key is deleted once, however many hear it");
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

/// How long the cut-off scenario's writer is cut off.
const CUT: Duration = Duration::from_secs(3);

/// What the cut-off scenario's readers saw, all told.
#[derive(Debug)]
struct CutOff {
    reads: usize,
    misses: usize,
    /// How late each stale read was.
    late: Vec<Duration>,
    /// The writer's acknowledged writes.
    acks: usize,
}

/// One writer cut off alone from the node `a` for [`CUT`] (a proxy that
/// keeps its sockets open and passes nothing, in front of `a` for it
/// only), writing to stand-ins, and four readers that reach `a`, of the
/// writer's fleet if `hear` (they hear its relay), or of another (the
/// relay off: its messages reach nobody).
async fn cut_off(hear: bool) -> CutOff {
    let _one = ONE_AT_A_TIME.lock().await;
    let servers = start_servers(3);
    let proxy = Proxy::start(servers[0].port());
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let names = ["a", "b", "c"];
    let routing = urls
        .iter()
        .zip(names)
        .fold(ShardedPool::builder(), |b, (url, name)| b.named_node(name, url));
    let routing = routing.probe_at_build(false).build().await.unwrap();
    let keys = keys_on(&routing, "a", "cut", 40).join(",");
    drop(routing);
    let dir = std::env::temp_dir().join(format!("fluster-cut-{}-{}", std::process::id(), now_ns()));
    std::fs::create_dir_all(&dir).unwrap();
    let stop = dir.join("stop");
    let start = |role: &str, nodes: &[String], fleet: &str| {
        let vars = [
            ("FLUSTER_FLEET_ROLE", role.to_owned()),
            ("FLUSTER_FLEET_NODES", nodes.join(",")),
            ("FLUSTER_FLEET_NAMES", names.join(",")),
            ("FLUSTER_FLEET_KEYS", keys.clone()),
            ("FLUSTER_FLEET_NAME", fleet.to_owned()),
            ("FLUSTER_FLEET_STOP", stop.display().to_string()),
            ("FLUSTER_FLEET_WAIT", "200".to_owned()),
        ];
        Process::start("process", &vars)
    };
    let mut cut_urls = urls.clone();
    cut_urls[0] = proxy.url();
    let mut writer = start("writer", &cut_urls, "cut");
    let readers: Vec<Process> =
        (0..4).map(|_| start("reader", &urls, if hear { "cut" } else { "elsewhere" })).collect();
    let ready = |p: &Process| p.lines().first().is_some_and(|l| l == "ready");
    let up = eventually(Duration::from_secs(20), || ready(&writer) && readers.iter().all(ready));
    assert!(up.await, "the processes did not start");
    tokio::time::sleep(Duration::from_secs(1)).await; // traffic with every node up
    proxy.silence();
    assert!(eventually(Duration::from_secs(10), || has(&writer, "boxed", "a")).await);
    tokio::time::sleep(CUT).await;
    proxy.restore();
    let back = eventually(Duration::from_secs(20), || has(&writer, "returned", "a")).await;
    assert!(back, "the writer did not let the node back in");
    tokio::time::sleep(Duration::from_secs(1)).await; // traffic after the heal
    std::fs::write(&stop, "").unwrap();
    let mut readers = readers;
    for p in readers.iter_mut().chain(std::iter::once(&mut writer)) {
        assert!(eventually(Duration::from_secs(10), || p.ended()).await, "a process did not stop");
    }
    assert!(readers.iter().all(|r| !has(r, "boxed", "a")), "a reader boxed the node it reaches");
    let acks = Acks::of(&writer);
    let mut seen =
        CutOff { reads: 0, misses: 0, late: Vec::new(), acks: acks.0.values().map(Vec::len).sum() };
    for judged in readers.iter().map(|r| acks.judge(r)) {
        seen.reads += judged.reads;
        seen.misses += judged.misses;
        seen.late.extend(judged.late);
    }
    seen.late.sort();
    let _ = std::fs::remove_dir_all(&dir);
    seen
}

/// A process cut off alone from a node the others reach relays its
/// stand-in writes as deletes on that node: side by side with the relay
/// off (readers of another fleet, which do not hear it), at least 99%
/// fewer stale reads, and none later than 50 ms after the write it missed
/// was acknowledged (the relay's trip; a few ms on a quiet machine, and
/// two CPU hogs beside the test do not push it past 50 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_cut_off_alone_relays_its_writes_as_deletes_on_the_home() {
    let off = cut_off(false).await;
    let on = cut_off(true).await;
    let worst = |seen: &CutOff| seen.late.last().copied().unwrap_or_default();
    println!(
        "relay off: {} stale of {} reads ({} misses), worst {:?}; relay on: {} stale of {} reads \
         ({} misses), worst {:?}, p99 {:?}",
        off.late.len(),
        off.reads,
        off.misses,
        worst(&off),
        on.late.len(),
        on.reads,
        on.misses,
        worst(&on),
        on.late.get(on.late.len() * 99 / 100).copied().unwrap_or_default(),
    );
    assert!(off.acks > 1_000 && on.acks > 1_000, "the writer wrote: {off:?} {on:?}");
    assert!(on.reads + on.misses > 1_000, "the readers read: {on:?}");
    assert!(off.late.len() >= 1_000, "the relay off, readers read stale values: {off:?}");
    assert!(
        on.late.len() * 100 <= off.late.len(),
        "not 99% fewer: {} against {}",
        on.late.len(),
        off.late.len()
    );
    assert!(worst(&on) <= Duration::from_millis(50), "a stale read too late: {:?}", on.late);
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

/// A relay message as a process of the fleet sends it: `fluster1 delete`,
/// the teller and its count, the number of keys, then the home and each
/// key as `<len>:<bytes>`.
fn relay_message(seq: u64, home: &str, keys: &[&str]) -> Vec<u8> {
    let head = format!("fluster1 delete 00000000deadbeef {seq} {} ", keys.len());
    let mut message = head.into_bytes();
    for part in std::iter::once(home).chain(keys.iter().copied()) {
        message.extend(format!("{}:{part}", part.len()).bytes());
    }
    message
}

/// A member of the fleet `fleet` over three servers, `keys` of its node
/// `a` set to "kept", and an outside client on node `b` once the member
/// listens there.
async fn forged(fleet: &str, keys: usize) -> (Vec<RedisServer>, ShardedPool, Vec<String>) {
    let servers = start_servers(3);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let pool = member(&urls, fleet).await;
    let kept = keys_on(&pool, "a", "kept", keys);
    for key in &kept {
        let _: () = pool.get(key).await.unwrap().set(key, "kept").await.unwrap();
    }
    let mut forger = servers[1].client();
    let listening = eventually(Duration::from_secs(5), || {
        let n: Vec<(String, usize)> =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(fleet).query(&mut forger).unwrap();
        n[0].1 > 0
    });
    assert!(listening.await, "the fleet never subscribed");
    (servers, pool, kept)
}

/// Publishes, every 50 ms, a relay message naming only the key `sentinel`
/// (set on `a` first) until it is deleted there: every message published
/// before has been heard and acted on (one subscriber connection, in
/// order) or dropped. Whether it was deleted within `within`.
async fn sentinel(
    servers: &[RedisServer],
    pool: &ShardedPool,
    fleet: &str,
    within: Duration,
) -> bool {
    let key = keys_on(pool, "a", "sentinel", 1).remove(0);
    let _: () = pool.get(&key).await.unwrap().set(&key, 1).await.unwrap();
    let (mut forger, mut home) = (servers[1].client(), servers[0].client());
    let deadline = Instant::now() + within;
    for seq in 1_000_000.. {
        let message = relay_message(seq, "a", &[&key]);
        let _: () = redis::cmd("PUBLISH").arg(fleet).arg(message).query(&mut forger).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut home).unwrap();
        if !exists || Instant::now() > deadline {
            return !exists;
        }
    }
    false
}

/// The values of `keys` on the server.
fn values(server: &RedisServer, keys: &[String]) -> Vec<Option<String>> {
    redis::cmd("MGET").arg(keys).query(&mut server.client()).unwrap()
}

/// Garbage on the fleet's channel, and relay messages that name nodes the
/// pool does not have (or name them wrong), delete nothing anywhere and
/// leave the relay working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_relays_of_garbage_or_unknown_nodes_delete_nothing() {
    let (servers, pool, kept) = forged("forged-relay", 8).await;
    let mut events = pool.events();
    let keys: Vec<&str> = kept.iter().map(String::as_str).collect();
    let long = "k".repeat(600);
    let mut garbage: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"hello".to_vec(),
        b"fluster1 delete".to_vec(),
        b"fluster1 delete 01 1 1 1:a".to_vec(),
        b"fluster1 delete 01 1 999999 1:a1:k".to_vec(),
        b"fluster1 delete 01 1 1 99999999999999999999:a".to_vec(),
        vec![b'x'; 1 << 20],
        b"\xff\xfe\x00".to_vec(),
        relay_message(1, "zz", &keys),
        relay_message(2, "A", &keys),
        relay_message(3, "a", &[&long]),
    ];
    let mut truncated = relay_message(4, "a", &keys);
    truncated.pop();
    garbage.push(truncated);
    let mut forger = servers[1].client();
    for payload in &garbage {
        let _: () =
            redis::cmd("PUBLISH").arg("forged-relay").arg(payload).query(&mut forger).unwrap();
    }
    assert!(sentinel(&servers, &pool, "forged-relay", Duration::from_secs(10)).await);
    let all_kept = vec![Some("kept".to_owned()); kept.len()];
    assert_eq!(values(&servers[0], &kept), all_kept, "a key of a was deleted");
    for server in &servers[1..] {
        let stray: Vec<Option<String>> = values(server, &kept);
        assert!(stray.iter().all(Option::is_none), "nothing was written elsewhere");
    }
    let relayed: usize = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| match e {
            NodeEvent::Relayed { keys, .. } => keys,
            _ => 0,
        })
        .sum();
    assert_eq!(relayed, 1, "only the sentinel was deleted");
}

/// The process's resident memory, in KiB.
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A flood of well-formed forged relays (73 MB of them, as fast as one
/// client publishes) costs the pool bounded memory (queues of bounded
/// messages; what finds no room is dropped), and deletes only keys they
/// name: the others' keys stay, and the relay still works after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_relays_costs_bounded_memory_and_only_misses_of_named_keys() {
    let (servers, pool, kept) = forged("flooded", 20).await;
    let before = resident_kib();
    let port = servers[1].port();
    let published = tokio::task::spawn_blocking(move || {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut forger = client.get_connection().unwrap();
        let pad = "p".repeat(180);
        let mut bytes = 0;
        for round in 0..120u64 {
            let mut pipe = redis::pipe();
            for i in 0..100 {
                let names: Vec<String> =
                    (0..32).map(|j| format!("flood:{round}:{i}:{j}:{pad}")).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let message = relay_message(round * 100 + i, "a", &names);
                bytes += message.len();
                pipe.cmd("PUBLISH").arg("flooded").arg(message).ignore();
            }
            let _: () = pipe.query(&mut forger).unwrap();
        }
        bytes
    });
    let published = published.await.unwrap();
    let done = sentinel(&servers, &pool, "flooded", Duration::from_secs(30)).await;
    let grown = resident_kib().saturating_sub(before);
    println!("{} MB of forged relays: the process grew by {} MB", published >> 20, grown >> 10);
    assert!(done, "the relay no longer works after the flood");
    assert!(published > 70 << 20, "{published} bytes published");
    assert!(grown < 40 << 10, "the process grew by {grown} KiB");
    let all_kept = vec![Some("kept".to_owned()); kept.len()];
    assert_eq!(values(&servers[0], &kept), all_kept, "a key the flood did not name was deleted");
    let mut conn = pool.get(&kept[0]).await.unwrap();
    assert!(conn.is_home(), "the flood boxed the node");
    let read: Option<String> = conn.get(&kept[0]).await.unwrap();
    assert_eq!(read.as_deref(), Some("kept"));
}
