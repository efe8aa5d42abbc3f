//! AUTH with `requirepass` and with an ACL user: right credentials work,
//! wrong ones give a clear error and box the node, and the credentials
//! never appear in status, `Debug`, `Display`, errors or tracing output.

mod support;

use std::time::Duration;

use fluster::{Error, FailureKind, ShardedPool};
use futures_util::StreamExt;
use redis::AsyncCommands;
use support::RedisServer;
use support::logs::{Captured, capture};

const PASSWORD: &str = "s3cret-pass";
const ACL_USER: &str = "alice-acl";
const ACL_PASSWORD: &str = "wonderland-pw";

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

/// A wrong password is not an outage: a node that refuses the credentials
/// at `build` (a wrong password, a wrong ACL user's password, no password
/// where one is required) fails the build naming the node and the reason,
/// whatever `require_healthy` says, in words that show no secret. A node
/// that merely cannot be reached still starts in the box.
#[tokio::test]
async fn wrong_credentials_fail_the_build_naming_the_node_and_never_leak() {
    let (captured, _guard) = capture();
    let (password, acl) = servers();
    let plain = RedisServer::start();
    let right = plain.url();
    let cases = [
        (
            format!("redis://:wrong-pass@127.0.0.1:{}", password.port()),
            "Password authentication failed - AuthenticationFailed",
        ),
        (
            format!("redis://{ACL_USER}:wrong-pass@127.0.0.1:{}", acl.port()),
            "Password authentication failed - AuthenticationFailed",
        ),
        (format!("redis://127.0.0.1:{}", password.port()), "\"NOAUTH\": Authentication required."),
    ];
    let mut shown = String::new();
    for (url, reason) in cases {
        let built = ShardedPool::builder()
            .named_node("good", &right)
            .named_node("locked", &url)
            .named_node("unreachable", "redis://127.0.0.1:1")
            .require_healthy(0)
            .build()
            .await;
        let e = built.expect_err("a node that refuses the credentials fails the build");
        // A URL without a password, to a server that wants one, is told so.
        let hint = match reason.contains("NOAUTH") {
            true => {
                "the server wants a password: give it in the node's URL, \
                     `redis://[user]:password@host:port`"
            }
            false => "check the user name and password in its URL",
        };
        assert_eq!(
            e.to_string(),
            format!("node `locked` refused the credentials: {reason} ({hint})")
        );
        match &e {
            Error::Credentials { node, failure, .. } => {
                assert_eq!((node.as_str(), *failure), ("locked", FailureKind::Auth));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(e.node(), Some("locked"));
        shown += &format!("{e}\n{e:?}\n");
    }
    // The unreachable node alone: built, boxed, as before.
    let pool = ShardedPool::builder()
        .named_node("good", &right)
        .named_node("unreachable", "redis://127.0.0.1:1")
        .build()
        .await
        .unwrap();
    assert!(!support::status_of(&pool, "unreachable").up);
    assert!(support::status_of(&pool, "good").up);
    // `add_node` probes the same way: a refusing node is not added.
    let wrong = format!("redis://:wrong-pass@127.0.0.1:{}", password.port());
    let e = pool.add_node("added", &wrong).await.expect_err("a refusing node is not added");
    assert!(matches!(e, Error::Credentials { failure: FailureKind::Auth, .. }), "{e:?}");
    assert_eq!(pool.nodes(), ["good", "unreachable"]);
    shown += &format!("{:?}\n{pool:?}\n", pool.status());
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
    // What the log says of a refusal at `build` or `add_node` is what
    // happens: the call fails; no key is served elsewhere.
    for node in ["node=locked", "node=added"] {
        let refused: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(node) && l.contains("refuses the pool's credentials"))
            .collect();
        let expected = if node == "node=locked" { 3 } else { 1 };
        assert_eq!(refused.len(), expected, "one ERROR per refusal at start:\n{logs}");
        for line in refused {
            assert!(line.contains("ERROR") && line.contains("node refused at start"), "{line}");
            assert!(line.contains("fails with Error::Credentials"), "{line}");
        }
        let elsewhere = logs
            .lines()
            .filter(|l| l.contains(node))
            .find(|l| l.contains("elsewhere") || l.contains("served by other nodes"));
        assert_eq!(elsewhere, None, "a failed build serves no key elsewhere");
    }
    assert_no_secret("tracing output", &logs);
    assert_no_secret("status, Debug and errors", &shown);
}

/// A password rotated under a running pool: the node is boxed as any
/// failed node (its keys served elsewhere), and the refusal is logged at
/// `error` level once per stay in the box, naming the node, however many
/// probes meet it; a second rotation after its return is logged again.
#[tokio::test]
async fn a_rotated_password_boxes_the_node_and_is_logged_once_per_stay() {
    let (captured, _guard) = capture();
    let (password, _) = servers();
    let other = RedisServer::start();
    let pool = ShardedPool::builder()
        .named_node("rotated", &format!("redis://:{PASSWORD}@127.0.0.1:{}", password.port()))
        .named_node("other", &other.url())
        .penalty_min_wait(Duration::from_millis(20))
        .penalty_max_wait(Duration::from_millis(40))
        .build()
        .await
        .unwrap();
    let key = support::key_on(&pool, "rotated", "rotate");
    let admin_url = format!("redis://:{PASSWORD}@127.0.0.1:{}", password.port());
    let mut admin = redis::Client::open(admin_url).unwrap().get_connection().unwrap();
    let refusals = || {
        let logs = captured.text();
        let told: Vec<&str> =
            logs.lines().filter(|l| l.contains("refuses the pool's credentials")).collect();
        for line in &told {
            assert!(line.contains("ERROR") && line.contains("node=rotated"), "{line}");
        }
        told.len()
    };
    for episode in 1..=2 {
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "requirepass", "rotated-pass"][..])
            .query(&mut admin)
            .unwrap();
        let _: () =
            redis::cmd("CLIENT").arg(&["KILL", "TYPE", "normal"][..]).query(&mut admin).unwrap();
        // The pool's sockets are gone: the next command fails, the node is
        // boxed, and every probe meets the new password.
        let mut conn = pool.get(&key).await.unwrap();
        let _ = redis::cmd("PING").query_async::<()>(&mut *conn).await;
        drop(conn);
        let probed = support::eventually(Duration::from_secs(10), || {
            let status = support::status_of(&pool, "rotated");
            !status.up && status.boxed_for == Some(FailureKind::Auth) && status.failed_probes >= 3
        })
        .await;
        assert!(probed, "{:?}", support::status_of(&pool, "rotated"));
        assert_eq!(pool.get(&key).await.unwrap().node(), "other", "its keys are served elsewhere");
        assert_eq!(refusals(), episode, "told once per stay:\n{}", captured.text());
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "requirepass", PASSWORD][..])
            .query(&mut admin)
            .unwrap();
        let back = support::eventually(Duration::from_secs(10), || {
            support::status_of(&pool, "rotated").up
        })
        .await;
        assert!(back, "{:?}", support::status_of(&pool, "rotated"));
    }
    assert_no_secret("tracing output", &captured.text());
    assert!(!captured.text().contains("rotated-pass"));
}

/// The two halves of every secret in [`no_url_text_shows_a_secret`]: a
/// text that holds either holds a piece of a password or user name.
const HALVES: [&str; 4] = ["Qx7k", "Vm3j", "Ub8n", "Yt5h"];

/// Each kind of character a password or user name may hold, among them
/// those that end a URL's user-info when written as they are (`/`, `?`,
/// `#`), `@` and `:`, a `%` that starts no escape or a valid one, spaces,
/// quotes and letters outside ASCII.
const CHARACTERS: &[&str] = &[
    "/",
    "#",
    "?",
    "@",
    ":",
    "%",
    "%2F",
    "%zz",
    " ",
    "&",
    "=",
    ";",
    ",",
    "+",
    "[",
    "]",
    "\\",
    "'",
    "\"",
    "<",
    ">",
    "`",
    "$",
    "!",
    "*",
    "(",
    ")",
    "~",
    "|",
    "^",
    "{",
    "}",
    "é",
    "密",
    "🔑",
    "\t",
    "//",
    "@@",
    ":@",
    "?pass=",
    "#insecure",
];

/// `text` with every byte outside the unreserved set escaped: how a
/// careful user writes a secret into a URL.
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every label value of every metric recorded so far.
fn labels(snapshotter: &metrics_util::debugging::Snapshotter) -> String {
    let mut text = String::new();
    for (key, ..) in snapshotter.snapshot().into_vec() {
        for label in key.key().labels() {
            text += &format!("{}={} ", label.key(), label.value());
        }
    }
    text
}

/// Every text a pool of either flavour shows about the node at `url`:
/// the builder's and configuration's `Debug`, then the build's error
/// (`Display` and `Debug`) or the pool's `Debug`, node names and status.
async fn texts_about(url: &str, port: u16) -> String {
    let mut shown = String::new();
    let builder = ShardedPool::builder()
        .node(url)
        .named_node("plain", &format!("redis://127.0.0.1:{port}"))
        .probe_timeout(Duration::from_millis(300))
        .penalty_min_wait(Duration::from_millis(20));
    shown += &format!("{builder:?}\n");
    match builder.build().await {
        Err(e) => shown += &format!("{e}\n{e:?}\n"),
        Ok(pool) => {
            shown += &format!("{pool:?}\n{:?}\n{:?}\n", pool.nodes(), pool.status());
            for status in pool.status() {
                shown += &format!("{}\n{}\n", status.name, status.last_error.unwrap_or_default());
            }
            shown += &format!("{:?}\n", pool.node_for("k"));
            pool.close();
        }
    }
    #[cfg(feature = "serde")]
    {
        let as_list = serde_json::json!({ "nodes": [url] });
        let as_table = serde_json::json!({ "nodes": [{ "url": url, "weight": 2.0 }] });
        for json in [as_list, as_table] {
            let config: fluster::Config = serde_json::from_value(json).unwrap();
            shown += &format!("{config:?}\n{:?}\n{:?}\n", config.settings, config.nodes);
            // Its build is the builder's, above.
            shown += &format!("{:?}\n", config.into_builder());
        }
    }
    #[cfg(feature = "r2d2")]
    {
        let url = url.to_owned();
        let built = tokio::task::spawn_blocking(move || {
            let builder = fluster::sync::ShardedPool::builder()
                .node(&url)
                .probe_timeout(Duration::from_millis(300));
            let mut shown = format!("{builder:?}\n");
            match builder.build() {
                Err(e) => shown += &format!("{e}\n{e:?}\n"),
                Ok(pool) => {
                    shown += &format!("{pool:?}\n{:?}\n{:?}\n", pool.nodes(), pool.status());
                    pool.close();
                }
            }
            shown
        });
        shown += &built.await.unwrap();
    }
    shown
}

/// A password or user name holding any kind of character, written into a
/// URL as it is or escaped, in every form a node URL takes (user and
/// password, password alone, a socket's query), never shows in any text:
/// errors (`Display`, `Debug`), `Debug` of the builder, `Config`,
/// `Settings` and `NodeConfig`, node names, status, metric labels and logs,
/// in both flavours. Each secret is two halves around the character, and
/// neither half may show.
#[tokio::test]
async fn no_url_text_shows_a_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _metrics = metrics::set_default_local_recorder(&recorder);

    let server = RedisServer::start();
    let port = server.port();
    let mut admin = server.client();
    let secret = |c: &str| (format!("Qx7k{c}Vm3j"), format!("Ub8n{c}Yt5h"));
    // The default user takes every password as it is, so that URLs the
    // `url` crate reads the way the user meant connect; each user name
    // without spaces is an ACL user with its password.
    let mut rule = vec!["on".to_owned(), "resetpass".to_owned(), "allkeys".to_owned()];
    for c in CHARACTERS {
        rule.push(format!(">{}", secret(c).0));
        let (password, user) = secret(c);
        if !user.contains(char::is_whitespace) {
            redis::cmd("ACL")
                .arg(&["SETUSER", &user, "on", &format!(">{password}"), "~*", "&*", "+@all"][..])
                .query::<()>(&mut admin)
                .unwrap();
        }
    }
    redis::cmd("ACL").arg("SETUSER").arg("default").arg(&rule).query::<()>(&mut admin).unwrap();
    drop(admin);

    let mut urls = Vec::new();
    for c in CHARACTERS {
        let (password, user) = secret(c);
        let (p, u) = (encoded(&password), encoded(&user));
        let mut forms = vec![
            format!("redis://:{password}@127.0.0.1:{port}"),
            format!("redis://{user}:{password}@127.0.0.1:{port}/0"),
            format!("redis://{user}@127.0.0.1:{port}"),
            format!("redis://:{p}@127.0.0.1:{port}"),
            format!("redis://{u}:{p}@127.0.0.1:{port}/0"),
            format!("redis+unix:///tmp/fluster-no-such.sock?pass={password}"),
            format!("redis+unix:///tmp/fluster-no-such.sock?db=1&user={user}&pass={password}"),
            format!("unix:///tmp/fluster-no-such.sock?pass={p}&user={u}"),
            format!("redis://:{password}@127.0.0.1:0"),
            format!("redis://{user}:{password}@127.0.0.1:{port}:9/0"),
            format!("redis://{user}:{password}@localhost:{port}/0?protocol=resp3"),
        ];
        if cfg!(feature = "tls") {
            forms.push(format!("rediss://{user}:{password}@127.0.0.1:{port}"));
        }
        urls.extend(forms);
    }
    // A few at a time: each builds a pool of each flavour.
    let texts: Vec<(String, String)> = futures_util::stream::iter(&urls)
        .map(|url| async move { (url.clone(), texts_about(url, port).await) })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(texts.len(), urls.len());
    // Escaped, every secret gets through: the texts above include those
    // of pools that connected.
    for c in ["/", "#", "?", "@", "%", " ", "🔑"] {
        let (password, user) = secret(c);
        let (p, u) = (encoded(&password), encoded(&user));
        let mut urls = vec![format!("redis://:{p}@127.0.0.1:{port}")];
        if c != " " {
            urls.push(format!("redis://{u}:{p}@127.0.0.1:{port}/0"));
        }
        for url in urls {
            let pool = ShardedPool::builder().node(&url).build().await.unwrap();
            assert!(pool.status()[0].up, "{c:?}: {:?}", pool.status());
            pool.close();
        }
    }
    let labels = labels(&snapshotter);
    assert!(labels.contains("node=plain"), "no labels recorded: {labels}");
    for (url, shown) in texts.iter().chain([&("labels".to_owned(), labels.clone())]) {
        for half in HALVES {
            assert!(!shown.contains(half), "`{half}` of {url:?} shows:\n{shown}");
        }
    }
    let logs = captured.text();
    assert!(logs.contains("node down at start"), "nothing captured:\n{logs}");
    for half in HALVES {
        assert!(!logs.contains(half), "`{half}` shows in the logs:\n{logs}");
    }
}
