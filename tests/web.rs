//! The axum and actix-web examples, built from nothing but their own files,
//! against real nodes: kill a node, `/metrics` shows it down and `/counter`
//! keeps answering; restart it, and the gauge returns to 1. The axum one is
//! also served on a real socket and scraped as Prometheus would.

#[path = "../examples/actix.rs"]
#[allow(dead_code)]
mod actix_example;
#[path = "../examples/axum.rs"]
#[allow(dead_code)]
mod axum_example;
#[path = "../examples/fan_out.rs"]
#[allow(dead_code)]
mod fan_out_example;

mod support;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use support::{RedisServer, keys_homed_on, start_servers};
use tower::ServiceExt;

/// The examples' recorder, installed once for this process (a recorder is
/// global), exactly as `examples/axum.rs` installs it.
fn metrics() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| axum_example::install_metrics().unwrap()).clone()
}

/// The environment the examples read, with `FLUSTER__NODES` for `servers`
/// and any further variables.
fn environment(servers: &[RedisServer], more: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    let nodes = servers.iter().map(RedisServer::url).collect::<Vec<_>>().join(", ");
    let more = more.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Some(std::iter::once(("FLUSTER__NODES".to_owned(), nodes)).chain(more).collect())
}

fn node_up_line(metrics: &str, node: &str) -> Option<String> {
    let prefix = format!("fluster_node_up{{node=\"{node}\"}} ");
    metrics.lines().find(|l| l.starts_with(&prefix)).map(str::to_owned)
}

/// Sends GET requests through `call` until `done` holds for the response
/// body, or panics after five seconds.
async fn poll<F, Fut>(what: &str, mut call: F, done: impl Fn(u16, &str) -> bool)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (u16, String)>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, body) = call().await;
        if done(code, &body) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: last answer {code} {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn axum_get(app: &axum::Router, uri: String) -> (u16, String) {
    let response =
        app.clone().oneshot(Request::get(&uri).body(Body::empty()).unwrap()).await.unwrap();
    let code = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (code, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn axum_service_survives_a_node_and_reports_it() {
    let metrics = metrics();
    let mut servers = start_servers(3);
    let pool = support::pool_of(&servers, Duration::from_millis(100)).await;
    let victim = servers[0].name();
    // The route's counter `name` is the key `counter:{name}`.
    let keys = keys_homed_on(&pool, "counter:web");
    let keys: Vec<(String, String)> =
        keys.into_iter().map(|(n, k)| (n, k["counter:".len()..].to_owned())).collect();
    let victim_key = keys.iter().find(|(n, _)| *n == victim).unwrap().1.clone();
    let app = axum_example::app(axum_example::AppState { pool: pool.clone(), metrics });

    let (code, body) = axum_get(&app, format!("/counter/{victim_key}")).await;
    assert_eq!(code, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["node"], victim.as_str());
    assert_eq!(reply["value"], 1);
    // Cache-aside: the first read fills from the "database", the second
    // is a hit (the value is in Redis).
    for _ in 0..2 {
        let (code, body) = axum_get(&app, "/user/42".into()).await;
        assert_eq!((code, body.as_str()), (200, r#"{"id":42,"name":"user 42"}"#));
    }
    let mut conn = pool.get("user:42").await.unwrap();
    let cached: Option<String> =
        redis::cmd("GET").arg("user:42").query_async(&mut conn).await.unwrap();
    assert_eq!(cached.as_deref(), Some("user 42"));
    // Key spaces of their own: a counter named like a user's key, in
    // either order, leaves the user alone and counts from 1.
    let (code, body) = axum_get(&app, "/counter/user:42".into()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["value"], 1, "{body}");
    let (code, body) = axum_get(&app, "/user/42".into()).await;
    assert_eq!((code, body.as_str()), (200, r#"{"id":42,"name":"user 42"}"#));
    let (code, body) = axum_get(&app, "/user/43".into()).await;
    assert_eq!((code, body.as_str()), (200, r#"{"id":43,"name":"user 43"}"#));
    let (code, body) = axum_get(&app, "/counter/user:43".into()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["value"], 1, "{body}");
    let (_, text) = axum_get(&app, "/metrics".into()).await;
    assert_eq!(
        node_up_line(&text, &victim).unwrap(),
        format!("fluster_node_up{{node=\"{victim}\"}} 1")
    );
    assert!(
        text.contains("fluster_checkout_seconds_bucket{node=\""),
        "histogram buckets, not a summary"
    );

    servers[0].kill();
    // At most the request in flight on the dead socket fails; then the
    // key is answered by another node.
    poll(
        "counter after kill",
        || axum_get(&app, format!("/counter/{victim_key}")),
        |code, body| code == 200 && !body.contains(&victim),
    )
    .await;
    for (_, key) in &keys {
        let (code, body) = axum_get(&app, format!("/counter/{key}")).await;
        assert_eq!(code, 200, "{body}");
    }
    let (_, text) = axum_get(&app, "/metrics".into()).await;
    assert_eq!(
        node_up_line(&text, &victim).unwrap(),
        format!("fluster_node_up{{node=\"{victim}\"}} 0")
    );
    let (_, status) = axum_get(&app, "/status".into()).await;
    let status: Value = serde_json::from_str(&status).unwrap();
    let down = status.as_array().unwrap().iter().find(|n| n["name"] == victim.as_str()).unwrap();
    assert_eq!(down["up"], false);
    assert!(down["penalty_wait_ms"].as_f64().unwrap() > 0.0);

    servers[0].restart();
    poll(
        "gauge after restart",
        || axum_get(&app, "/metrics".into()),
        |_, text| {
            node_up_line(text, &victim).as_deref()
                == Some(&format!("fluster_node_up{{node=\"{victim}\"}} 1"))
        },
    )
    .await;
    let (code, body) = axum_get(&app, format!("/counter/{victim_key}")).await;
    assert_eq!(code, 200);
    assert!(body.contains(&victim), "key went home: {body}");
}

#[actix_web::test]
async fn actix_service_survives_a_node_and_reports_it() {
    use actix_web::{App, test, web};

    let metrics = metrics();
    let mut servers = start_servers(3);
    let pool = support::pool_of(&servers, Duration::from_millis(100)).await;
    let victim = servers[1].name();
    let victim_key = keys_homed_on(&pool, "counter:actix").into_iter().find(|(n, _)| *n == victim);
    let victim_key = victim_key.unwrap().1["counter:".len()..].to_owned();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(pool.clone()))
            .app_data(web::Data::new(metrics))
            .configure(actix_example::routes),
    )
    .await;
    let get = |uri: String| {
        let app = &app;
        async move {
            let response =
                test::call_service(app, test::TestRequest::get().uri(&uri).to_request()).await;
            let code = response.status().as_u16();
            let body = test::read_body(response).await;
            (code, String::from_utf8(body.to_vec()).unwrap())
        }
    };

    let (code, body) = get(format!("/counter/{victim_key}")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&victim));
    // The same service as the axum one: cache-aside on `/user`, filled
    // once then a hit, in a key space of its own.
    for _ in 0..2 {
        let (code, body) = get("/user/42".into()).await;
        assert_eq!((code, body.as_str()), (200, r#"{"id":42,"name":"user 42"}"#));
    }
    let (code, body) = get("/counter/user:42".into()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["value"], 1, "{body}");
    let (code, body) = get("/user/42".into()).await;
    assert_eq!((code, body.as_str()), (200, r#"{"id":42,"name":"user 42"}"#));

    servers[1].kill();
    poll(
        "counter after kill",
        || get(format!("/counter/{victim_key}")),
        |code, body| code == 200 && !body.contains(&victim),
    )
    .await;
    let (_, text) = get("/metrics".into()).await;
    assert_eq!(
        node_up_line(&text, &victim).unwrap(),
        format!("fluster_node_up{{node=\"{victim}\"}} 0")
    );
    let (code, status) = get("/status".into()).await;
    assert_eq!(code, 200);
    assert!(status.contains("\"up\":false"), "{status}");

    servers[1].restart();
    poll(
        "gauge after restart",
        || get("/metrics".into()),
        |_, text| {
            node_up_line(text, &victim).as_deref()
                == Some(&format!("fluster_node_up{{node=\"{victim}\"}} 1"))
        },
    )
    .await;
}

#[tokio::test]
async fn each_example_builds_its_pool_from_the_environment_as_config_reads_it() {
    let servers = start_servers(2);
    let env = || environment(&servers, &[("FLUSTER__PENALTY_MAX_WAIT", "10s")]);
    for pool in [
        axum_example::pool_from(None, env()).await.unwrap(),
        actix_example::pool_from(None, env()).await.unwrap(),
        fan_out_example::pool_from(None, env()).await.unwrap(),
    ] {
        assert_eq!(pool.nodes(), [servers[0].name(), servers[1].name()]);
        assert!(pool.status().iter().all(|s| s.up));
    }
    let bad = environment(&[], &[("FLUSTER__NODES", "127.0.0.1:6379")]);
    let bad = axum_example::pool_from(None, bad).await.unwrap_err().to_string();
    assert!(bad.contains("no scheme"), "{bad}");
    let none = axum_example::pool_from(None, Some(HashMap::new())).await.unwrap_err().to_string();
    assert!(none.contains("FLUSTER__NODES") && none.contains("fluster.toml"), "{none}");
    let typo = environment(&servers, &[("FLUSTER__PENALTY_MAXWAIT", "10s")]);
    let typo = actix_example::pool_from(None, typo).await.unwrap_err().to_string();
    assert!(typo.contains("FLUSTER__PENALTY_MAXWAIT"), "{typo}");
}

/// A settings file of this test's own, removed when dropped.
struct SettingsFile(std::path::PathBuf);

impl SettingsFile {
    fn new(text: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("fluster-web-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        SettingsFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for SettingsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn each_example_reads_a_settings_file_with_the_environment_over_it() {
    let servers = start_servers(2);
    let file = SettingsFile::new(&format!(
        "nodes = [\"{}\"]\npenalty_max_wait = \"7s\"\nlease = \"2s\"\n",
        servers[0].url()
    ));
    let file = Some(file.path());
    let none: Option<HashMap<String, String>> = Some(HashMap::new());
    let over = || {
        let vars = [("FLUSTER__NODES", servers[1].url()), ("FLUSTER__LEASE", "5s".to_owned())];
        Some(vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<HashMap<_, _>>())
    };
    type Read =
        fn(Option<&str>, Option<HashMap<String, String>>) -> Result<fluster::Config, BoxError>;
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let readers: [(&str, Read); 3] = [
        ("axum", axum_example::config_from),
        ("actix", actix_example::config_from),
        ("fan_out", fan_out_example::config_from),
    ];
    for (example, read) in readers {
        let alone = read(file, none.clone()).unwrap();
        assert_eq!(alone.nodes.len(), 1, "{example}");
        assert_eq!(alone.settings.penalty_max_wait, Duration::from_secs(7), "{example}");
        assert_eq!(alone.settings.lease, Duration::from_secs(2), "{example}");
        let pool = alone.build().await.unwrap();
        assert_eq!(pool.nodes(), [servers[0].name()], "{example}: the file's nodes");
        // The environment goes over the file: its nodes replace the file's.
        let both = read(file, over()).unwrap();
        assert_eq!(both.settings.penalty_max_wait, Duration::from_secs(7), "{example}");
        assert_eq!(both.settings.lease, Duration::from_secs(5), "{example}");
        let pool = both.build().await.unwrap();
        assert_eq!(pool.nodes(), [servers[1].name()], "{example}: the environment's nodes");
        // A file named but missing is an error, not an empty pool.
        let missing = read(Some("/nonexistent/fluster.toml"), none.clone()).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/fluster.toml"), "{example}: {missing}");
    }
    // The examples' own file reads as a `Config` (three loopback nodes).
    let shipped = axum_example::config_from(Some("examples/fluster.toml"), none).unwrap();
    assert_eq!(shipped.nodes.len(), 3);
}

/// GET over a real TCP connection, as a scraper does.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

/// The sum of the `name` samples of `node` on a Prometheus page.
fn total(page: &str, name: &str, node: &str) -> f64 {
    let label = format!("node=\"{node}\"");
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_every_series_from_the_start_and_the_first_failure() {
    let metrics = metrics();
    let mut servers = start_servers(3);
    let pool = axum_example::pool_from(None, environment(&servers, &[])).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = axum_example::AppState { pool: pool.clone(), metrics };
    tokio::spawn(axum_example::serve(listener, state));

    let (code, page) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for server in &servers {
        let node = format!("node=\"{}\"", server.name());
        for kind in fluster::FailureKind::ALL {
            let kind = format!("kind=\"{kind}\"");
            let present = page.lines().any(|l| {
                l.starts_with("fluster_failures_total{") && l.contains(&node) && l.contains(&kind)
            });
            assert!(present, "no fluster_failures_total{{{node},{kind}}} at start");
        }
        for result in ["ok", "failed"] {
            let result = format!("result=\"{result}\"");
            let present = page.lines().any(|l| {
                l.starts_with("fluster_probes_total{") && l.contains(&node) && l.contains(&result)
            });
            assert!(present, "no fluster_probes_total{{{node},{result}}} at start");
        }
    }
    let victim = servers[0].name();
    let before = total(&page, "fluster_failures_total", &victim);

    let key = keys_homed_on(&pool, "counter:scrape").into_iter().find(|(n, _)| *n == victim);
    let key = key.unwrap().1["counter:".len()..].to_owned();
    assert_eq!(http_get(addr, &format!("/counter/{key}")).await.0, 200);
    servers[0].kill();
    let path = format!("/counter/{key}");
    poll(
        "counter after kill",
        || http_get(addr, &path),
        |code, body| code == 200 && !body.contains(&victim),
    )
    .await;
    let (_, page) = http_get(addr, "/metrics").await;
    let after = total(&page, "fluster_failures_total", &victim);
    assert!(after >= before + 1.0, "failures of {victim}: {before} then {after}");
    assert!(page.contains("fluster_checkout_seconds_bucket{"), "a histogram, not a summary");

    // When Prometheus's own checker is installed, it must accept the page.
    if let Ok(mut promtool) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        promtool.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
        let out = promtool.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool check metrics: {said}");
    }
}
