//! The axum and actix-web examples' real routers against real nodes: kill a
//! node, `/metrics` shows it down and `/counter` keeps answering; restart
//! it, and the gauge returns to 1.

// Each example carries the server harness as its own module, as does this
// test: three copies of one file, on purpose.
#![allow(clippy::duplicate_mod)]

#[path = "../examples/actix.rs"]
#[allow(dead_code)]
mod actix_example;
#[path = "../examples/axum.rs"]
#[allow(dead_code)]
mod axum_example;

mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use fluster::ShardedPool;
use serde_json::Value;
use support::{RedisServer, keys_homed_on, start_servers};
use tower::ServiceExt;

async fn pool_of(servers: &[RedisServer]) -> ShardedPool {
    support::builder_for(servers)
        .penalty_min_wait(Duration::from_millis(100))
        .penalty_max_wait(Duration::from_millis(200))
        .build()
        .await
        .unwrap()
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
    let metrics = support::install_prometheus();
    let mut servers = start_servers(3);
    let pool = pool_of(&servers).await;
    let victim = servers[0].name();
    let keys = keys_homed_on(&pool, "web");
    let victim_key = keys.iter().find(|(n, _)| *n == victim).unwrap().1.clone();
    let app = axum_example::app(axum_example::AppState { pool: pool.clone(), metrics });

    let (code, body) = axum_get(&app, format!("/counter/{victim_key}")).await;
    assert_eq!(code, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["node"], victim.as_str());
    assert_eq!(reply["value"], 1);
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

    let metrics = support::install_prometheus();
    let mut servers = start_servers(3);
    let pool = pool_of(&servers).await;
    let victim = servers[1].name();
    let victim_key =
        keys_homed_on(&pool, "actix").into_iter().find(|(n, _)| *n == victim).unwrap().1;
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
