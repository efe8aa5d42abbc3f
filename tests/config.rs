//! Bad input gets a clear error naming what is wrong, never a panic.

mod support;

use std::time::Duration;

use fluster::{ClassifyFailure, Error, FailureKind, RedisManager, ShardedPool};
use redis::AsyncCommands;
use redis::{ErrorKind, RedisError, ServerErrorKind};

async fn build_err(builder: fluster::Builder) -> String {
    match builder.build().await {
        Err(Error::Config { setting, reason }) => format!("{setting}: {reason}"),
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("expected a configuration error, the pool was built"),
    }
}

fn one_node() -> fluster::Builder {
    // Never contacted: every case below fails validation first.
    ShardedPool::builder().node("redis://127.0.0.1:1")
}

#[tokio::test]
async fn each_bad_setting_is_named() {
    let cases: Vec<(fluster::Builder, &str)> = vec![
        (ShardedPool::builder(), "nodes: no nodes were added"),
        (one_node().named_node("127.0.0.1:1", "redis://127.0.0.1:2"), "node name `127.0.0.1:1`"),
        (one_node().named_node("", "redis://127.0.0.1:2"), "node name"),
        (
            one_node().weighted_node("w", "redis://127.0.0.1:2", 0.0),
            "weight of node `w`: must be finite and greater than 0, got 0",
        ),
        (one_node().weighted_node("w", "redis://127.0.0.1:2", -1.0), "got -1"),
        (one_node().weighted_node("w", "redis://127.0.0.1:2", f64::NAN), "got NaN"),
        (one_node().weighted_node("w", "redis://127.0.0.1:2", f64::INFINITY), "got inf"),
        (
            one_node().penalty_multiplier(0.5),
            "penalty_multiplier: must be finite and at least 1, got 0.5",
        ),
        (one_node().penalty_multiplier(f64::NAN), "penalty_multiplier"),
        (
            one_node()
                .penalty_min_wait(Duration::from_secs(2))
                .penalty_max_wait(Duration::from_secs(1)),
            "penalty_max_wait: must be at least penalty_min_wait (2s), got 1s",
        ),
        (
            one_node().penalty_min_wait(Duration::ZERO),
            "penalty_min_wait: must be greater than zero",
        ),
        (one_node().penalty_jitter(1.5), "penalty_jitter: must be between 0 and 1, got 1.5"),
        (one_node().connect_timeout(Duration::ZERO), "connect_timeout"),
        (
            one_node().stand_in_ttl(Duration::from_micros(10)),
            "stand_in_ttl: must be at least 1 ms, got 10µs",
        ),
        (one_node().response_timeout(Duration::ZERO), "response_timeout"),
        (one_node().checkout_timeout(Duration::ZERO), "checkout_timeout"),
        (one_node().probe_timeout(Duration::ZERO), "probe_timeout"),
        (one_node().timeouts_before_penalty(0), "timeouts_before_penalty"),
        (
            one_node().max_connections(0),
            "max_connections: must be from 1 to 10000 (per node), got 0",
        ),
        (
            one_node().heartbeat(Duration::from_millis(1)),
            "heartbeat: must be zero (off) or at least 10 ms, got 1ms",
        ),
        (
            one_node().near_cache(100).heartbeat(Duration::ZERO),
            "heartbeat: must be greater than zero with a near cache",
        ),
        (
            one_node().max_connections(2).min_idle(Some(3)),
            "min_idle: must not exceed max_connections (2), got 3",
        ),
    ];
    for (builder, expected) in cases {
        let message = build_err(builder).await;
        assert!(message.contains(expected), "`{message}` does not say `{expected}`");
    }
}

#[tokio::test]
async fn bad_urls_are_named_without_their_credentials() {
    for (url, expected) in [
        ("garbage", "node URL `garbage`"),
        ("http://127.0.0.1:6000", "node URL `http://127.0.0.1:6000`"),
        ("redis://127.0.0.1:0", "port 0"),
        ("redis://127.0.0.1:70000", "node URL"),
        ("redis://", "node URL"),
        ("redis://127.0.0.1:6000/notadb", "database"),
        ("redis://127.0.0.1:6000/-2", "must not be negative"),
        ("redis://alice:s3cret@127.0.0.1:70000", "node URL `redis://***@127.0.0.1:70000`"),
        ("redis://alice:s3cret@127.0.0.1:6000/x", "redis://***@127.0.0.1:6000/x"),
    ] {
        let message = build_err(ShardedPool::builder().node(url)).await;
        assert!(message.contains(expected), "`{message}` does not say `{expected}`");
        assert!(!message.contains("s3cret") && !message.contains("alice"), "{message}");
    }
}

#[tokio::test]
async fn credentials_never_reach_names_status_or_debug() {
    let pool =
        ShardedPool::builder().node("redis://alice:s3cret@127.0.0.1:1/2").build().await.unwrap();
    let status = pool.status();
    assert_eq!(status[0].name, "127.0.0.1:1");
    let shown = format!("{pool:?} {status:?} {:?}", pool.node_for("k"));
    assert!(!shown.contains("s3cret") && !shown.contains("alice"), "{shown}");
    let err = pool.get("k").await.unwrap_err();
    assert!(matches!(err, Error::NoHealthyNodes));
}

#[tokio::test]
async fn odd_keys_route_and_work() {
    let server = support::RedisServer::start();
    let pool = ShardedPool::builder().node(&server.url()).build().await.unwrap();
    let big = vec![b'x'; 1 << 20];
    let braces = "{".repeat(1000) + &"}".repeat(1000);
    let keys: Vec<Vec<u8>> =
        vec![Vec::new(), big, vec![0xff, 0xfe, 0x00, b'{', 0x80, b'}'], braces.into_bytes()];
    for key in keys {
        let mut conn = pool.get(&key).await.unwrap();
        let _: () = conn.set(&key, 7).await.unwrap();
        let back: i64 = conn.get(&key).await.unwrap();
        assert_eq!(back, 7);
    }
}

#[test]
fn url_errors_name_the_url_without_credentials() {
    for url in [
        "redis://user:hunter2@127.0.0.1:70000",
        "redis://user:hunter2@127.0.0.1:1/notadb",
        "redis://user:hunter2@127.0.0.1:0",
        "http://user:hunter2@127.0.0.1:1",
        "redis://user:hunter2@127.0.0.1:1/-1",
        "redis://user:@127.0.0.1:1",
    ] {
        let err = RedisManager::new(url).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("***@127.0.0.1"), "{text}");
    }
    assert!(RedisManager::new("redis://").is_err());
    assert!(RedisManager::new("").is_err());
    assert!(RedisManager::new("127.0.0.1:6379").is_err());
}

#[test]
fn manager_debug_shows_no_credentials() {
    let m = RedisManager::new("redis://alice:hunter2@127.0.0.1:7001/3").unwrap();
    let text = format!("{m:?}");
    assert!(!text.contains("hunter2") && !text.contains("alice"), "{text}");
    assert!(text.contains("127.0.0.1:7001"));
    assert_eq!(m.address(), "127.0.0.1:7001");
}

#[test]
fn classification() {
    let refused: RedisError =
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "x").into();
    let reset: RedisError = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "x").into();
    let timeout: RedisError = std::io::Error::new(std::io::ErrorKind::TimedOut, "x").into();
    let other: RedisError = std::io::Error::other("x").into();
    let reply: RedisError = (ErrorKind::Server(ServerErrorKind::ResponseError), "ERR").into();
    let loading: RedisError = (ErrorKind::Server(ServerErrorKind::BusyLoading), "x").into();
    let auth: RedisError = (ErrorKind::AuthenticationFailed, "x").into();
    let wrongtype: RedisError = (ErrorKind::UnexpectedReturnType, "x").into();
    assert_eq!(refused.failure_kind(), Some(FailureKind::Refused));
    assert_eq!(reset.failure_kind(), Some(FailureKind::Dropped));
    assert_eq!(timeout.failure_kind(), Some(FailureKind::Timeout));
    assert_eq!(other.failure_kind(), Some(FailureKind::Io));
    assert_eq!(loading.failure_kind(), Some(FailureKind::Loading));
    assert_eq!(auth.failure_kind(), Some(FailureKind::Auth));
    assert_eq!(reply.failure_kind(), None);
    assert_eq!(wrongtype.failure_kind(), None);
    // A connection's `SELECT` of a database the server lacks, as `redis`
    // reports it, is the node's; the same words answering a caller's
    // command are an ordinary error reply.
    let range = || "DB index is out of range".to_owned();
    let response = ErrorKind::Server(ServerErrorKind::ResponseError);
    let select: RedisError = (response, "Redis server refused to switch database", range()).into();
    let own: RedisError = (response, "An error was signalled by the server", range()).into();
    assert_eq!(select.failure_kind(), Some(FailureKind::Database));
    assert_eq!(own.failure_kind(), None);
}

/// The `Error::Config` text of building `builder`.
async fn config_error(builder: fluster::Builder) -> String {
    match builder.probe_at_build(false).build().await {
        Err(e @ Error::Config { .. }) => e.to_string(),
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("expected a configuration error, the pool was built"),
    }
}

#[tokio::test]
async fn node_urls_that_cannot_work_say_what_is_wrong_and_what_one_looks_like() {
    let cases = [
        ("127.0.0.1:6379", "no scheme"),
        ("", "it is empty"),
        (" ", "it is empty"),
        ("http://127.0.0.1:6379", "`http://` is not a Redis scheme"),
        ("redis://127.0.0.1:99999", "`99999` is not a TCP port"),
        ("redis://user:hunter2@127.0.0.1:99999", "not a TCP port"),
        // Without an `@`, what follows the `:` could be a password.
        ("redis://127.0.0.1:port", "what follows the host's `:` is not a TCP port"),
        ("redis://::1:6379", "an IPv6 address goes in brackets"),
        ("redis://u:hunter2@127.0.0.1:7304:99", "`:99` follows the port `7304`"),
        ("redis://cache-a:6379:2", "a node URL has one port"),
    ];
    for (url, what) in cases {
        let text = config_error(ShardedPool::builder().node(url)).await;
        assert!(text.contains(what), "{url}: {text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redis://") || text.contains("port"), "{url}: no example: {text}");
    }
}

#[tokio::test]
async fn node_urls_are_trimmed() {
    let pool = ShardedPool::builder()
        .node(" redis://127.0.0.1:7001 ")
        .node("\tredis://127.0.0.1:7002\n")
        .probe_at_build(false)
        .build()
        .await
        .unwrap();
    assert_eq!(pool.nodes(), ["127.0.0.1:7001", "127.0.0.1:7002"]);
}

#[tokio::test]
async fn ipv6_node_names_keep_their_brackets() {
    let pool = ShardedPool::builder()
        .node("redis://[::1]:6390")
        .node("redis://[::1]:6391/2")
        .probe_at_build(false)
        .build()
        .await
        .unwrap();
    assert_eq!(pool.nodes(), ["[::1]:6390", "[::1]:6391"]);
}

#[tokio::test]
async fn a_node_name_holding_credentials_is_refused_without_echoing_them() {
    let url = "redis://alice:hunter2@127.0.0.1:7001";
    let text = config_error(ShardedPool::builder().named_node(url, url)).await;
    assert!(text.contains("credentials") && !text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn one_server_under_two_spellings_is_refused() {
    for (a, b) in [
        ("redis://127.0.0.1:7001", "redis://127.0.0.1:7001/0"),
        ("redis://LOCALHOST:7001/3", "redis://localhost:7001/3"),
        ("redis://127.0.0.1:7001", "redis://:secret@127.0.0.1:7001"),
    ] {
        let text = config_error(ShardedPool::builder().named_node("a", a).named_node("b", b)).await;
        assert!(text.contains("same server and database") && text.contains("`a`"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
    // Other databases of one server are other nodes.
    let two_dbs = ShardedPool::builder()
        .named_node("a", "redis://127.0.0.1:7001/1")
        .named_node("b", "redis://127.0.0.1:7001/2")
        .probe_at_build(false)
        .build()
        .await;
    assert!(two_dbs.is_ok());
}

#[tokio::test]
async fn require_healthy_names_each_node_that_is_down_and_why() {
    let up = support::RedisServer::start();
    // (A node that refuses the credentials fails the build whatever
    // `require_healthy` says: tests/auth.rs.)
    let builder = ShardedPool::builder()
        .named_node("up", &up.url())
        .named_node("refused", "redis://127.0.0.1:1")
        .named_node("locked", "redis://:hunter2@127.0.0.1:2")
        .require_healthy(2);
    match builder.build().await {
        Err(e @ Error::NotEnoughHealthy { healthy: 1, required: 2, .. }) => {
            let text = e.to_string();
            assert!(text.contains("`refused`") && text.contains("`locked`"), "{text}");
            assert!(!text.contains("`up`"), "{text}");
            assert!(text.to_lowercase().contains("refused"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        other => panic!("expected NotEnoughHealthy, got {other:?}"),
    }
    let text = config_error(ShardedPool::builder().node(&up.url()).require_healthy(2)).await;
    assert!(text.contains("require_healthy"), "{text}");
    let pool = ShardedPool::builder().node(&up.url()).require_healthy(1).build().await.unwrap();
    assert!(pool.status()[0].up);
    assert!(Error::NoHealthyNodes.to_string().contains("status"));
}

/// A build that fails hands no pool out: its log tells of no pool closed
/// (the user never had one), and what it opened is let go all the same. A
/// pool its user closes says so, before and after (which also shows the
/// capture hears that line).
#[tokio::test]
async fn a_failed_build_logs_no_pool_closed_and_keeps_no_connection() {
    let (captured, _guard) = support::logs::capture();
    let closed = || captured.text().matches("pool closed").count();
    let up = support::RedisServer::start();
    let locked = support::RedisServer::start_with(&["--requirepass", "right-pass"]);
    ShardedPool::builder().node(&up.url()).build().await.unwrap().close();
    assert_eq!(closed(), 1, "a pool its user closes says so:\n{}", captured.text());
    let builds = [
        ("every node down", ShardedPool::builder().node("redis://127.0.0.1:1").require_healthy(1)),
        (
            "one of two down",
            ShardedPool::builder().node(&up.url()).node("redis://127.0.0.1:1").require_healthy(2),
        ),
        (
            "a wrong password",
            ShardedPool::builder()
                .node(&up.url())
                .node(&format!("redis://:wrong-pass@127.0.0.1:{}", locked.port())),
        ),
    ];
    for (what, builder) in builds {
        match builder.build().await {
            Err(Error::NotEnoughHealthy { .. } | Error::Credentials { .. }) => {}
            other => panic!("{what}: expected the build to fail, got {other:?}"),
        }
        assert_eq!(closed(), 1, "{what}: a failed build logs a pool closed:\n{}", captured.text());
        let gone = support::eventually(Duration::from_secs(5), || support::clients(&up) == 0);
        assert!(gone.await, "{what}: the failed build keeps {} connections", support::clients(&up));
    }
    ShardedPool::builder().node(&up.url()).build().await.unwrap().close();
    assert_eq!(closed(), 2, "{}", captured.text());
}

/// What a `main` returning `Result<(), Box<dyn std::error::Error>>` (the
/// README's quick start) prints when `?` carries an error out of it: the
/// error's `Debug`, which reads as its message, then each cause the
/// message does not tell; `{:#?}` adds the variant's name.
#[tokio::test]
async fn error_debug_reads_as_the_message_and_its_causes() {
    async fn main_like() -> Result<(), Box<dyn std::error::Error>> {
        one_node().penalty_multiplier(0.5).build().await?;
        Ok(())
    }
    let e = main_like().await.unwrap_err();
    let message = "invalid penalty_multiplier: must be finite and at least 1, got 0.5";
    assert_eq!(format!("{e}"), message);
    assert_eq!(format!("{e:?}"), message);
    assert_eq!(format!("{e:#?}"), format!("Error::Config: {message}"));

    /// An error with a cause of its own, as a fill may return.
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("loading user 42")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "database refused");
    let e = Error::Fill(std::sync::Arc::new(Outer(refused)));
    assert_eq!(
        format!("{e:?}"),
        "the fill failed: loading user 42\n\nCaused by:\n    database refused"
    );
}

/// One bad URL among three nodes is named by its place in the list (and
/// its name, if it has one), with as much of it shown as holds no secret;
/// a password never shows, in `Display` or `Debug`.
#[tokio::test]
async fn a_bad_url_among_three_is_named_by_its_place() {
    let three = |bad: &str| {
        ShardedPool::builder()
            .node("redis://127.0.0.1:7001")
            .node(bad)
            .named_node("cache-c", "redis://127.0.0.1:7003")
    };
    let err = build_err(three("redis://127.0.0.1:70O2")).await;
    assert_eq!(
        err,
        "node URL `redis://127.0.0.1:***` (node #2 of 3): what follows the host's `:` \
         is not a TCP port (1 to 65535)"
    );
    // After an `@`, only the credentials are masked.
    let err = build_err(three("redis://alice:hunter2@cache-b.internal:70O2")).await;
    assert!(
        err.starts_with("node URL `redis://***@cache-b.internal:70O2` (node #2 of 3)"),
        "{err}"
    );
    // A named node is named too; the first bad one is the one told.
    let builder = ShardedPool::builder()
        .node("redis://127.0.0.1:7001")
        .named_node("cache-b", "redis://127.0.0.1:7002")
        .named_node("cache-c", "redis//127.0.0.1:7003")
        .node("redis://:hunter2");
    let err = build_err(builder).await;
    assert!(err.starts_with("node URL `redis//127.0.0.1:7003` (node #3 of 4, `cache-c`)"), "{err}");
    // A URL that lost its `@host`: the password is all that is left.
    for url in ["redis://alice:hunter2", "redis://:hunter2", "redis://alice:hunter2@"] {
        let e = three(url).build().await.expect_err("a bad URL fails the build");
        let text = format!("{e} {e:?} {e:#?}");
        assert!(text.contains("(node #2 of 3)"), "{text}");
        assert!(!text.contains("hunter2") && !text.contains("alice"), "{text}");
    }
}

/// A typo in a URL with no place a password could be in (no `@`, no `:`
/// that a port does not explain) is shown as typed, in `Display` and
/// `Debug`, by the builder and by `RedisManager::new`; one
/// that may hold a password still shows none of it.
#[tokio::test]
async fn a_typo_without_credentials_is_shown_as_typed() {
    let said = |e: Error| format!("{e}\n{e:?}\n{e:#?}");
    for (typo, shown) in [
        ("redis//127.0.0.1:7000", "node URL `redis//127.0.0.1:7000`"),
        ("redis://127.0.0.1:70000", "node URL `redis://127.0.0.1:70000`"),
        ("redis://cache-b.internal:70000", "node URL `redis://cache-b.internal:70000`"),
        ("redis://localhost/x", "node URL `redis://localhost/x`"),
        // A password typed with the typo stays masked, whatever is around it.
        ("redis//alice:hunter2", "node URL `***`"),
        ("redis//:hunter2@127.0.0.1:7000", "node URL `***@127.0.0.1:7000`"),
        ("redis//127.0.0.1:7000/hunter2", "node URL `***`"),
        ("redis//127.0.0.1:hunter2", "node URL `***`"),
        ("redis://127.0.0.1:7000/hunter2", "node URL `redis://127.0.0.1:***`"),
    ] {
        let built = ShardedPool::builder().node(typo).probe_at_build(false).build().await;
        let manager = RedisManager::new(typo).map(|_| ());
        for text in [built.map(|_| ()), manager].map(|r| said(r.expect_err(typo))) {
            assert!(text.contains(shown), "{typo}: `{text}` does not say `{shown}`");
            assert!(!text.contains("hunter2") && !text.contains("alice"), "{text}");
        }
    }
}

/// A database number the server does not have (`SELECT` answers `ERR DB
/// index is out of range`) is a wrong setting, not an outage: like a wrong
/// password, `build` and `add_node` fail naming the node and saying the
/// server has fewer databases, whatever `require_healthy` says; the pool
/// is not built with the node in the box. No password shows.
#[tokio::test]
async fn a_database_the_server_lacks_fails_the_build_naming_the_node() {
    let (captured, _guard) = support::logs::capture();
    let good = support::RedisServer::start();
    let locked = support::RedisServer::start_with(&["--requirepass", "hunter2"]);
    let far = format!("redis://:hunter2@127.0.0.1:{}/99", locked.port());
    let mut shown = String::new();
    let check = |e: Error, node: &str, shown: &mut String| {
        let text = e.to_string();
        assert!(matches!(e, Error::Config { .. }), "expected a configuration error: {e:?}");
        assert!(text.contains(&format!("node `{node}`")), "{text}");
        assert!(text.contains("fewer databases"), "{text}");
        assert!(text.contains("`ERR DB index is out of range`"), "{text}");
        *shown += &format!("{e}\n{e:?}\n");
    };
    let built = ShardedPool::builder()
        .named_node("good", &good.url())
        .named_node("far", &far)
        .named_node("unreachable", "redis://127.0.0.1:1")
        .require_healthy(0)
        .build()
        .await;
    check(built.expect_err("a database the server lacks fails the build"), "far", &mut shown);
    // Named after its address, it is named so.
    let built = ShardedPool::builder().node(&far).build().await;
    check(built.expect_err("alone too"), &locked.name(), &mut shown);
    // `add_node` probes the same way: the node is not added.
    let pool = ShardedPool::builder().named_node("good", &good.url()).build().await.unwrap();
    let e = pool.add_node("far", &far).await.expect_err("a database the server lacks");
    check(e, "far", &mut shown);
    assert_eq!(pool.nodes(), ["good"]);
    // The server's last database (of 16) is a database.
    let last = format!("redis://:hunter2@127.0.0.1:{}/15", locked.port());
    pool.add_node("last", &last).await.unwrap();
    assert!(support::status_of(&pool, "last").up);
    shown += &format!("{:?}\n{pool:?}\n{}", pool.status(), captured.text());
    assert!(!shown.contains("hunter2"), "{shown}");
}
