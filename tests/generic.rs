//! `ShardedPool<M>` over managers other than the default one.

mod support;

use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use fluster::{Builder, ClassifyFailure, FailureKind, ShardedPool};
use redis::AsyncCommands;
use support::{eventually, start_servers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn bb8_redis_managers_can_be_sharded() {
    let mut servers = start_servers(3);
    let mut builder = Builder::new();
    for (i, s) in servers.iter().enumerate() {
        builder =
            builder.manager(&format!("bb8-{i}"), RedisConnectionManager::new(s.url()).unwrap());
    }
    // A fleet's news travels by Redis pub/sub, which another manager's
    // nodes are not known to speak: refused, naming the node.
    let fleet = Builder::new()
        .manager("bb8-x", RedisConnectionManager::new(servers[0].url()).unwrap())
        .fleet("orders")
        .build()
        .await;
    match fleet {
        Err(fluster::Error::Config { setting, reason }) => {
            assert_eq!(setting, "fleet");
            assert!(reason.contains("node `bb8-x`"), "{reason}");
        }
        other => panic!("expected a configuration error, got {:?}", other.map(|_| ())),
    }
    let pool: ShardedPool<RedisConnectionManager> = builder
        .penalty_min_wait(Duration::from_secs(10))
        .penalty_max_wait(Duration::from_secs(10))
        .build()
        .await
        .unwrap();

    // The connection speaks Redis directly, through the pool's tracking.
    let mut homes = std::collections::HashSet::new();
    for i in 0..30 {
        let key = format!("generic:{i}");
        let mut conn = pool.get(&key).await.unwrap();
        let _: () = conn.set(&key, i).await.unwrap();
        let back: i64 = conn.get(&key).await.unwrap();
        assert_eq!(back, i);
        assert_eq!(Some(conn.node()), pool.node_for(&key).as_deref());
        homes.insert(conn.node().to_owned());
    }
    assert_eq!(homes.len(), 3);

    // A killed node is boxed by the first command that meets it, and its
    // keys move.
    let key = support::key_on(&pool, "bb8-0", "moving");
    servers[0].kill();
    let mut conn = pool.get(&key).await.unwrap();
    assert!(conn.incr::<_, _, i64>(&key, 1).await.is_err());
    drop(conn);
    assert!(eventually(Duration::from_secs(2), || !pool.status()[0].up).await);
    let conn = pool.get(&key).await.unwrap();
    assert_ne!(conn.node(), "bb8-0");
}

/// A manager that is not Redis at all: raw TCP sockets speaking inline
/// PING, with `std::io::Error` as its error type.
struct PingManager {
    addr: String,
}

/// Its connection, which says it can do nothing for the pool beyond
/// `is_valid`.
struct PingConnection(TcpStream);

impl fluster::ConnectionAbilities for PingConnection {}

impl bb8::ManageConnection for PingManager {
    type Connection = PingConnection;
    type Error = std::io::Error;

    async fn connect(&self) -> Result<PingConnection, std::io::Error> {
        Ok(PingConnection(TcpStream::connect(&self.addr).await?))
    }

    async fn is_valid(&self, conn: &mut PingConnection) -> Result<(), std::io::Error> {
        ping(conn).await
    }

    fn has_broken(&self, _: &mut PingConnection) -> bool {
        false
    }
}

async fn ping(PingConnection(conn): &mut PingConnection) -> std::io::Result<()> {
    conn.write_all(b"PING\r\n").await?;
    let mut reply = [0u8; 7];
    conn.read_exact(&mut reply).await?;
    if &reply == b"+PONG\r\n" { Ok(()) } else { Err(std::io::Error::other("unexpected reply")) }
}

#[tokio::test]
async fn any_manager_with_a_classified_error_can_be_sharded() {
    let mut servers = start_servers(2);
    let pool = Builder::new()
        .manager("tcp-a", PingManager { addr: servers[0].name() })
        .manager("tcp-b", PingManager { addr: servers[1].name() })
        .penalty_min_wait(Duration::from_millis(50))
        .penalty_max_wait(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let key = support::key_on(&pool, "tcp-a", "raw");
    let mut conn = pool.get(&key).await.unwrap();
    assert_eq!(conn.node(), "tcp-a");
    ping(&mut conn).await.unwrap();
    drop(conn);

    // The pool cannot see this connection's replies; the caller reports.
    servers[0].kill();
    let mut conn = pool.get(&key).await.unwrap();
    let err = ping(&mut conn).await.unwrap_err();
    conn.report_failure(err.failure_kind().unwrap());
    drop(conn);
    let status = pool.status();
    assert!(!status[0].up);
    assert!(matches!(
        status[0].boxed_for,
        Some(FailureKind::Dropped | FailureKind::Io | FailureKind::Refused)
    ));
    let mut conn = pool.get(&key).await.unwrap();
    assert_eq!(conn.node(), "tcp-b");
    ping(&mut conn).await.unwrap();
    drop(conn);

    servers[0].restart();
    assert!(eventually(Duration::from_secs(5), || pool.status()[0].up).await);
    assert_eq!(pool.get(&key).await.unwrap().node(), "tcp-a");
}

/// A Redis connection of the user's own, which says nothing of itself
/// beyond `ConnectionLike`: its commands take the default
/// `ConnectionAbilities::send_packed` (through `req_packed_command`).
#[derive(Clone)]
struct Wrapped(redis::aio::MultiplexedConnection);

impl fluster::ConnectionAbilities for Wrapped {}

impl redis::aio::ConnectionLike for Wrapped {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

struct WrappedManager(redis::Client);

impl bb8::ManageConnection for WrappedManager {
    type Connection = Wrapped;
    type Error = redis::RedisError;

    async fn connect(&self) -> Result<Wrapped, redis::RedisError> {
        Ok(Wrapped(self.0.get_multiplexed_async_connection().await?))
    }

    async fn is_valid(&self, conn: &mut Wrapped) -> Result<(), redis::RedisError> {
        redis::cmd("PING").query_async(conn).await
    }

    fn has_broken(&self, _: &mut Wrapped) -> bool {
        false
    }
}

#[tokio::test]
async fn a_connection_without_an_unboxed_send_is_judged_all_the_same() {
    let mut servers = start_servers(2);
    let mut builder = Builder::new();
    for (i, s) in servers.iter().enumerate() {
        builder = builder
            .manager(&format!("w-{i}"), WrappedManager(redis::Client::open(s.url()).unwrap()));
    }
    let pool = builder.penalty_min_wait(Duration::from_secs(10)).build().await.unwrap();
    for i in 0..10 {
        let key = format!("wrapped:{i}");
        let mut conn = pool.get(&key).await.unwrap();
        let _: () = conn.set(&key, i).await.unwrap();
        let mut shared = pool.get_shared(&key).await.unwrap();
        assert_eq!(shared.get::<_, i64>(&key).await.unwrap(), i);
    }
    // A failure seen through the default send counts against the node as
    // any does: its server killed under an open connection boxes it.
    let key = support::key_on(&pool, "w-0", "wrapped");
    let mut conn = pool.get(&key).await.unwrap();
    servers[0].kill();
    assert!(conn.get::<_, Option<i64>>(&key).await.is_err());
    drop(conn);
    assert!(eventually(Duration::from_secs(2), || !pool.status()[0].up).await);
}
