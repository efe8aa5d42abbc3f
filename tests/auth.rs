//! AUTH with `requirepass` and with an ACL user: right credentials work,
//! wrong ones give a clear error and box the node, and the credentials
//! never appear in status, `Debug`, `Display`, errors or tracing output.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fluster::{FailureKind, ShardedPool};
use redis::AsyncCommands;
use support::RedisServer;

const PASSWORD: &str = "s3cret-pass";
const ACL_USER: &str = "alice-acl";
const ACL_PASSWORD: &str = "wonderland-pw";

/// Everything the tracing subscriber writes, kept for searching.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn servers() -> (RedisServer, RedisServer) {
    let password = RedisServer::start_with(&["--requirepass", PASSWORD]);
    // ACL users are set up through a direct client (the command line would
    // take the whole rule as the user's name): one user, default disabled.
    let acl = RedisServer::start();
    let mut admin = acl.client();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(ACL_USER)
        .arg(&["on", &format!(">{ACL_PASSWORD}"), "~*", "&*", "+@all"][..])
        .query::<()>(&mut admin)
        .unwrap();
    redis::cmd("ACL").arg(&["SETUSER", "default", "off"][..]).query::<()>(&mut admin).unwrap();
    (password, acl)
}

async fn pool(urls: &[String]) -> ShardedPool {
    let mut builder = ShardedPool::builder()
        .penalty_min_wait(Duration::from_millis(20))
        .penalty_max_wait(Duration::from_millis(40));
    for url in urls {
        builder = builder.node(url);
    }
    builder.build().await.unwrap()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [PASSWORD, ACL_USER, ACL_PASSWORD, "wrong-pass"] {
        assert!(!text.contains(secret), "{what} shows `{secret}`:\n{text}");
    }
}

#[tokio::test]
async fn right_credentials_work() {
    let (password, acl) = servers();
    let pool = pool(&[
        format!("redis://:{PASSWORD}@127.0.0.1:{}", password.port()),
        format!("redis://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{}/0", acl.port()),
    ])
    .await;
    assert!(pool.status().iter().all(|s| s.up), "{:?}", pool.status());
    for i in 0..40 {
        let key = format!("auth:{i}");
        let mut conn = pool.get(&key).await.unwrap();
        let _: () = conn.set(&key, i).await.unwrap();
    }
    assert_no_secret("status", &format!("{:?}", pool.status()));
    assert_no_secret("Debug", &format!("{pool:?}"));
}

#[tokio::test]
async fn wrong_credentials_box_the_node_and_never_leak() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The runtime of this test is single-threaded, so every task's events
    // reach this thread's default subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (password, acl) = servers();
    let pool = pool(&[
        format!("redis://:wrong-pass@127.0.0.1:{}", password.port()),
        format!("redis://{ACL_USER}:wrong-pass@127.0.0.1:{}", acl.port()),
        format!("redis://:{PASSWORD}@127.0.0.1:{}", password.port())
            .replace("127.0.0.1", "localhost"),
    ])
    .await;
    let status = pool.status();
    for node in &status[..2] {
        assert!(!node.up, "{node:?}");
        assert_eq!(node.boxed_for, Some(FailureKind::Auth), "{node:?}");
        let error = node.last_error.as_deref().unwrap().to_lowercase();
        assert!(error.contains("wrongpass") || error.contains("auth"), "unclear error: {error}");
    }
    assert!(status[2].up, "the right password still works: {:?}", status[2]);

    // Let a few probes fail, so their events are captured too.
    let probed = support::eventually(Duration::from_secs(5), || {
        pool.status()[..2].iter().all(|s| s.failed_probes >= 2)
    })
    .await;
    assert!(probed);

    let mut shown = String::new();
    shown += &format!("{status:?}\n{pool:?}\n");
    match ShardedPool::builder()
        .node(&format!("redis://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:0"))
        .build()
        .await
    {
        Err(e) => shown += &format!("{e}\n{e:?}\n"),
        Ok(_) => panic!("port 0 must be rejected"),
    }
    let logs = captured.text();
    assert!(logs.contains("node down at start"), "nothing captured:\n{logs}");
    assert!(logs.contains("probe failed"), "probes not captured:\n{logs}");
    assert_no_secret("tracing output", &logs);
    assert_no_secret("status, Debug and errors", &shown);
}
