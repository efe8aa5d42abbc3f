//! fluster in an actix-web service: the pool in `web::Data`, a counter, a
//! cache (`aside`) in front of a slow "database", Prometheus metrics, a
//! JSON status page: the same service as `examples/axum.rs`, route for
//! route. Copy it: with the dependencies below, it needs nothing but this
//! file.
//!
//!     for port in 7001 7002 7003; do redis-server --port $port --save "" --daemonize yes; done
//!     FLUSTER_CONFIG=examples/fluster.toml cargo run --example actix --features serde
//!     curl 127.0.0.1:3000/counter/visits   # INCR counter:visits
//!     curl 127.0.0.1:3000/user/42          # user:42, filled once from the "database"
//!     curl 127.0.0.1:3000/status
//!     curl 127.0.0.1:3000/metrics
//!
//! The two routes have key spaces of their own (`counter:...`, `user:...`):
//! no counter name reaches a cached user.
//!
//! In your own `Cargo.toml` (CI builds this file as a crate of its own with
//! exactly these; the exporter's default features add an HTTP server and a
//! push gateway this service does not need):
//!
//!     [dependencies]
//!     fluster = { path = "../fluster", features = ["serde"] } # not on crates.io yet
//!     actix-web = "4"
//!     config = { version = "0.15", default-features = false, features = ["toml"] }
//!     metrics-exporter-prometheus = { version = "0.18", default-features = false }
//!     serde_json = "1"
//!     tracing-subscriber = "0.3"
//!
//! The pool is configured as the README's quick start configures it: the
//! file `FLUSTER_CONFIG` names (`examples/fluster.toml` here), else
//! `fluster.toml` in the working directory if there is one, then the
//! environment over it (`FLUSTER__NODES=redis://127.0.0.1:7001,...`,
//! `FLUSTER__PENALTY_MAX_WAIT=10s`, ...). The address to listen on is
//! `LISTEN` (default `127.0.0.1:3000`). SIGTERM or Ctrl-C stops it
//! (actix-web handles both) and closes the pool.

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
    cfg.service(counter).service(user).service(status).service(metrics);
}

/// `INCR counter:{name}` on the key's node (or its stand-in while that one
/// is boxed).
#[get("/counter/{name}")]
async fn counter(
    pool: web::Data<ShardedPool>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let key = format!("counter:{name}");
    let mut conn = pool.get(&key).await?;
    let value: i64 = conn.incr(&key, 1).await?;
    Ok(HttpResponse::Ok().json(json!({ "key": key, "value": value, "node": conn.node() })))
}

/// Cache-aside: the user from the cache, or from the database on a miss,
/// which one caller asks while the others wait for its value (a lease), so
/// an expired hot key sends one query to the database, not one per caller.
#[get("/user/{id}")]
async fn user(pool: web::Data<ShardedPool>, id: web::Path<u64>) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let key = format!("user:{id}");
    let ttl = std::time::Duration::from_secs(300);
    let name: String = pool.aside(&key, ttl, || load_user(id)).await?;
    Ok(HttpResponse::Ok().json(json!({ "id": id, "name": name })))
}

/// Your database: here, a query that takes 20 ms.
async fn load_user(id: u64) -> Result<String, std::io::Error> {
    actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    Ok(format!("user {id}"))
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
/// later), a failed command or database 502.
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
            fluster::Error::Redis(_) | fluster::Error::Command { .. } | fluster::Error::Fill(_) => {
                StatusCode::BAD_GATEWAY
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({ "error": self.0.to_string() }))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A Prometheus recorder with real buckets for the checkout latency,
/// installed before the pool is built (nodes register their metrics then).
pub fn install_metrics() -> Result<PrometheusHandle, BoxError> {
    let buckets = Matcher::Full(CHECKOUT_SECONDS.into());
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(buckets, CHECKOUT_BUCKETS)?
        .install_recorder()?)
}

/// The settings a file and the environment describe, read as the README's
/// quick start reads them: the TOML file at `file` (which must exist), or
/// without one `fluster.toml` in the working directory if there is one;
/// then every `FLUSTER__<SETTING>` variable over it (`FLUSTER__NODES`,
/// comma-separated URLs, replaces the file's nodes). `vars` stands in for
/// the process's environment when given (the tests do).
pub fn config_from(
    file: Option<&str>,
    vars: Option<HashMap<String, String>>,
) -> Result<fluster::Config, BoxError> {
    let file = match file {
        Some(path) => config::File::new(path, config::FileFormat::Toml),
        None => config::File::new("fluster.toml", config::FileFormat::Toml).required(false),
    };
    let environment = config::Environment::with_prefix("FLUSTER")
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .with_list_parse_key("nodes")
        .try_parsing(true)
        .source(vars);
    let config: fluster::Config = config::Config::builder()
        .add_source(file)
        .add_source(environment)
        .build()?
        .try_deserialize()?;
    if config.nodes.is_empty() {
        return Err(
            "no nodes: set `nodes` in fluster.toml (or in the file FLUSTER_CONFIG names), \
                    or FLUSTER__NODES=redis://127.0.0.1:7001,redis://127.0.0.1:7002"
                .into(),
        );
    }
    Ok(config)
}

/// The pool of [`config_from`].
pub async fn pool_from(
    file: Option<&str>,
    vars: Option<HashMap<String, String>>,
) -> Result<ShardedPool, BoxError> {
    Ok(config_from(file, vars)?.build().await?)
}

#[actix_web::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt().init(); // INFO and up (`RUST_LOG` needs its "env-filter" feature)
    let handle = install_metrics()?;
    let pool = pool_from(std::env::var("FLUSTER_CONFIG").ok().as_deref(), None).await?;
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
