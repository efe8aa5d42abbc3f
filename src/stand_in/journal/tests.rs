//! The journal alone: its bound, the writes in flight a return waits for,
//! and with a fleet its record on a stand-in, against a real
//! `redis-server`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::health::record::{RelayCounters, StandInCounters};

use super::*;

/// A `redis-server` of the test's own (`FLUSTER_REDIS_SERVER`, else
/// `redis-server` on the `PATH`, as `tests/support` starts them) on a unix
/// socket in a directory of its own: no port to share; killed when dropped.
struct Server {
    child: Child,
    dir: PathBuf,
}

impl Server {
    fn start() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fluster-unit-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("redis.sock");
        let binary =
            std::env::var("FLUSTER_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let child = Command::new(binary)
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocket"])
            .arg(&socket)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server 7.0 or later on the PATH (or FLUSTER_REDIS_SERVER)");
        let server = Server { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.client_now().is_none() {
            assert!(Instant::now() < deadline, "redis-server did not answer on {socket:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    fn client_now(&self) -> Option<redis::Connection> {
        let url = format!("redis+unix://{}", self.dir.join("redis.sock").display());
        let mut conn = redis::Client::open(url).ok()?.get_connection().ok()?;
        redis::cmd("PING").query::<String>(&mut conn).ok()?;
        Some(conn)
    }

    fn client(&self) -> redis::Connection {
        self.client_now().expect("the server answers")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_journal_holds_at_most_its_room() {
    let journal =
        Arc::new(Journal::new(StandInCounters::noop(), None, "a", (0, RelayCounters::noop())));
    let key = |k: &[u8]| vec![k.to_vec().into_boxed_slice()];
    drop(journal.depart(key(b"k")));
    drop(journal.depart(key(b"k")));
    assert_eq!(journal.len(), 1, "a key is remembered once");
    for i in 1..JOURNAL_KEYS {
        drop(journal.depart(key(i.to_string().as_bytes())));
    }
    drop(journal.depart(key(b"one too many")));
    assert_eq!(journal.counts(), (0, 1), "what found no room is counted as dropped");
    let taken = journal.take();
    assert_eq!((taken.len(), journal.len()), (JOURNAL_KEYS, 0));
    journal.restore(taken);
    assert_eq!(journal.len(), JOURNAL_KEYS);
    assert_eq!(journal.counts(), (0, 1), "all of it found room again");
}

/// A write in flight keeps its key through a return's take, and a return
/// waits for it: what a write that lands after the deletes would escape.
#[tokio::test]
async fn a_write_in_flight_stays_remembered_until_it_lands() {
    let journal =
        Arc::new(Journal::new(StandInCounters::noop(), None, "a", (0, RelayCounters::noop())));
    let flight = journal.depart(vec![b"k".to_vec().into_boxed_slice()]);
    let mark = journal.mark();
    let short = Duration::from_millis(20);
    assert!(!journal.landed(mark, short).await, "a flight in the air is waited for");
    assert_eq!(journal.take().len(), 1, "taken, to be deleted now");
    assert_eq!(journal.len(), 1, "and still remembered while in flight");
    let later = journal.depart(vec![b"j".to_vec().into_boxed_slice()]);
    let landing = tokio::spawn({
        let journal = journal.clone();
        async move { journal.landed(mark, Duration::from_secs(10)).await }
    });
    drop(flight);
    assert!(landing.await.unwrap(), "the wait ends when the flight lands, not a later one");
    drop(later);
    let mut taken = journal.take();
    taken.sort();
    assert_eq!(taken, [b"j".to_vec().into_boxed_slice(), b"k".to_vec().into_boxed_slice()]);
    assert_eq!(journal.len(), 0, "landed: taken for good");
}

/// The record a fleet keeps on a stand-in: what `record` writes (before
/// the copy, in the same round trip), `read_recorded` reads and leaves,
/// and `deletes` removes with the copies, in one transaction, exactly the
/// members read; the set's TTL follows `stand_in_ttl`.
#[test]
fn the_record_on_a_stand_in_goes_only_with_its_copies() {
    let server = Server::start();
    let mut conn = server.client();
    let counters = || StandInCounters::noop();
    let relayed = || (0, RelayCounters::noop());
    let journal = Journal::new(counters(), Some("orders"), "cache-a", relayed());
    let alone = Journal::new(counters(), None, "cache-a", relayed());
    assert!(alone.read_recorded().is_none());
    let ttl = Duration::from_secs(30);
    let mut pipe = redis::pipe();
    for key in ["k1", "k2", "k1"] {
        for cmd in journal.record(key.as_bytes(), Some(ttl)) {
            pipe.add_command(cmd);
        }
        pipe.cmd("SET").arg(key).arg("copy");
    }
    let _: () = pipe.query(&mut conn).unwrap();
    let set = "fluster:fleet:orders:journal:cache-a";
    let pttl: i64 = redis::cmd("PTTL").arg(set).query(&mut conn).unwrap();
    assert!(pttl > 29_000 && pttl <= 30_000, "the record lives as long as the copies: {pttl}");
    let send = |conn: &mut redis::Connection, pipe: &redis::Pipeline| -> Vec<redis::Value> {
        let packed = pipe.get_packed_pipeline();
        redis::ConnectionLike::req_packed_commands(conn, &packed, 0, pipe.len()).unwrap()
    };
    let mut members = Journal::recorded(send(&mut conn, &journal.read_recorded().unwrap()));
    members.sort();
    let k = |k: &str| k.as_bytes().to_vec().into_boxed_slice();
    assert_eq!(members, [k("k1"), k("k2")]);
    let left: i64 = redis::cmd("SCARD").arg(set).query(&mut conn).unwrap();
    assert_eq!(left, 2, "reading the record leaves it");
    // Meanwhile another write records k3: it stays, with its copy.
    for cmd in journal.record(b"k3", Some(ttl)) {
        let _: () = cmd.query(&mut conn).unwrap();
    }
    let _: () = redis::cmd("SET").arg("k3").arg("copy").query(&mut conn).unwrap();
    let replies = send(&mut conn, &journal.deletes(&members, &members));
    assert!(replies.iter().all(|r| !matches!(r, redis::Value::ServerError(_))), "{replies:?}");
    let copies: i64 = redis::cmd("EXISTS").arg("k1").arg("k2").arg("k3").query(&mut conn).unwrap();
    let left: Vec<String> = redis::cmd("SMEMBERS").arg(set).query(&mut conn).unwrap();
    assert_eq!((copies, left), (1, vec!["k3".to_owned()]), "the deleted go, the new one stays");
}
