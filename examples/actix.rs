//! fluster in an actix-web service: the pool in `web::Data`, Prometheus
//! metrics, a JSON status page. The same service as `examples/axum.rs`;
//! copy it: with the dependencies below, it needs nothing but this file.
//!
//!     FLUSTER__NODES=redis://127.0.0.1:7001,redis://127.0.0.1:7002 \
//!         cargo run --example actix --features serde
//!     curl 127.0.0.1:3000/counter/user:42
//!
//! In your own `Cargo.toml` (CI builds this file as a crate of its own with
//! exactly these; the exporter's default features add an HTTP server and a
//! push gateway this service does not need):
//!
//!     [dependencies]
//!     fluster = { version = "0.1", features = ["serde"] }
//!     actix-web = "4"
//!     config = { version = "0.15", default-features = false }
//!     metrics-exporter-prometheus = { version = "0.18", default-features = false }
//!     serde_json = "1"
//!     tracing-subscriber = "0.3"
//!
//! The pool is configured from the environment as the README's `Config` is
//! (`FLUSTER__NODES`, `FLUSTER__PENALTY_MAX_WAIT=10s`, ...); the address to
//! listen on is `LISTEN` (default `127.0.0.1:3000`). SIGTERM or Ctrl-C stops
//! it (actix-web handles both) and closes the pool.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, ResponseError, get, web};
use fluster::ShardedPool;
use fluster::metrics::{CHECKOUT_BUCKETS, CHECKOUT_SECONDS};
use fluster::redis::AsyncCommands;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

/// Registers the routes; `App::new().configure(routes)` in `main` and in
/// the tests.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(counter).service(status).service(metrics);
}

/// `INCR key` on the key's node (or its stand-in while that one is boxed).
#[get("/counter/{key}")]
async fn counter(
    pool: web::Data<ShardedPool>,
    key: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let key = key.into_inner();
    let mut conn = pool.get(&key).await?;
    let value: i64 = conn.incr(&key, 1).await?;
    Ok(HttpResponse::Ok().json(json!({ "key": key, "value": value, "node": conn.node() })))
}

#[get("/status")]
async fn status(pool: web::Data<ShardedPool>) -> HttpResponse {
    HttpResponse::Ok().json(pool.status())
}

#[get("/metrics")]
async fn metrics(handle: web::Data<PrometheusHandle>) -> String {
    handle.render()
}

/// fluster's errors as HTTP: no healthy node or a busy one is 503 (retry
/// later), a failed command 502.
#[derive(Debug)]
pub struct AppError(fluster::Error);

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: Into<fluster::Error>> From<E> for AppError {
    fn from(e: E) -> Self {
        AppError(e.into())
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self.0 {
            fluster::Error::Redis(_) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({ "error": self.0.to_string() }))
    }
}

#[allow(dead_code)] // the tests include this file for `routes` alone
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A Prometheus recorder with real buckets for the checkout latency,
/// installed before the pool is built (nodes register their metrics then).
pub fn install_metrics() -> Result<PrometheusHandle, BoxError> {
    let buckets = Matcher::Full(CHECKOUT_SECONDS.into());
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(buckets, CHECKOUT_BUCKETS)?
        .install_recorder()?)
}

/// The pool the environment describes, read exactly as the README's
/// `Config` is: `FLUSTER__NODES` (comma-separated URLs) and any setting as
/// `FLUSTER__<SETTING>` (`FLUSTER__PENALTY_MAX_WAIT=10s`). `vars` stands in
/// for the process's environment when given (the tests do).
pub async fn pool_from_env(vars: Option<HashMap<String, String>>) -> Result<ShardedPool, BoxError> {
    let environment = config::Environment::with_prefix("FLUSTER")
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .with_list_parse_key("nodes")
        .try_parsing(true)
        .source(vars);
    let config: fluster::Config =
        config::Config::builder().add_source(environment).build()?.try_deserialize()?;
    if config.nodes.is_empty() {
        return Err(
            "set FLUSTER__NODES to comma-separated URLs, e.g. redis://127.0.0.1:6379".into()
        );
    }
    Ok(config.build().await?)
}

#[actix_web::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt().init();
    let handle = install_metrics()?;
    let pool = pool_from_env(None).await?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    println!("listening on http://{listen} (nodes: {:?})", pool.nodes());
    let (data, handle) = (web::Data::new(pool.clone()), web::Data::new(handle));
    // `run` returns once a SIGTERM, SIGINT or Ctrl-C has stopped the server.
    actix_web::HttpServer::new(move || {
        App::new().app_data(data.clone()).app_data(handle.clone()).configure(routes)
    })
    .bind(&listen)?
    .run()
    .await?;
    pool.close();
    Ok(())
}
