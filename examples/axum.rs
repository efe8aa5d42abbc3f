//! fluster in an axum service: the pool in app state, a counter, a cache
//! (`aside`) in front of a slow "database", Prometheus metrics, a JSON
//! status page. Copy it: with the dependencies below, it needs nothing but
//! this file.
//!
//!     for port in 7001 7002 7003; do redis-server --port $port --save "" --daemonize yes; done
//!     FLUSTER_CONFIG=examples/fluster.toml cargo run --example axum --features serde
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
//!     axum = "0.8"
//!     config = { version = "0.15", default-features = false, features = ["toml"] }
//!     metrics-exporter-prometheus = { version = "0.18", default-features = false }
//!     serde_json = "1"
//!     tokio = { version = "1", features = ["full"] }
//!     tracing-subscriber = "0.3"
//!
//! The pool is configured as the README's quick start configures it: the
//! file `FLUSTER_CONFIG` names (`examples/fluster.toml` here), else
//! `fluster.toml` in the working directory if there is one, then the
//! environment over it (`FLUSTER__NODES=redis://127.0.0.1:7001,...`,
//! `FLUSTER__PENALTY_MAX_WAIT=10s`, ...). The address to listen on is
//! `LISTEN` (default `127.0.0.1:3000`). SIGTERM or Ctrl-C stops it and
//! closes the pool.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fluster::metrics::{CHECKOUT_BUCKETS, CHECKOUT_SECONDS};
use fluster::redis::AsyncCommands;
use fluster::{NodeStatus, ShardedPool};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};

/// What every handler gets: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: ShardedPool,
    pub metrics: PrometheusHandle,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/counter/{key}", get(counter))
        .route("/user/{id}", get(user))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// `INCR counter:{name}` on the key's node (or its stand-in while that one
/// is boxed).
async fn counter(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    let key = format!("counter:{name}");
    let mut conn = state.pool.get(&key).await?;
    let value: i64 = conn.incr(&key, 1).await?;
    Ok(Json(json!({ "key": key, "value": value, "node": conn.node() })))
}

/// Cache-aside: the user from the cache, or from the database on a miss,
/// which one caller asks while the others wait for its value (a lease), so
/// an expired hot key sends one query to the database, not one per caller.
async fn user(State(state): State<AppState>, Path(id): Path<u64>) -> Result<Json<Value>, AppError> {
    let key = format!("user:{id}");
    let ttl = std::time::Duration::from_secs(300);
    let name: String = state.pool.aside(&key, ttl, || load_user(id)).await?;
    Ok(Json(json!({ "id": id, "name": name })))
}

/// Your database: here, a query that takes 20 ms.
async fn load_user(id: u64) -> Result<String, std::io::Error> {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    Ok(format!("user {id}"))
}

async fn status(State(state): State<AppState>) -> Json<Vec<NodeStatus>> {
    Json(state.pool.status())
}

async fn metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}

/// fluster's errors as HTTP: no healthy node or a busy one is 503 (retry
/// later), a failed command or database 502.
pub struct AppError(fluster::Error);

impl<E: Into<fluster::Error>> From<E> for AppError {
    fn from(e: E) -> Self {
        AppError(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let code = match self.0 {
            fluster::Error::Redis(_) | fluster::Error::Command { .. } | fluster::Error::Fill(_) => {
                StatusCode::BAD_GATEWAY
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        (code, Json(json!({ "error": self.0.to_string() }))).into_response()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A Prometheus recorder with real buckets for the checkout latency. It
/// must be installed before the pool is built: nodes register their
/// metrics then.
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

/// Resolves on SIGTERM (how a service manager stops a service) or Ctrl-C.
pub async fn shutdown() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Serves the app on `listener` until [`shutdown`], then closes the pool.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    let pool = state.pool.clone();
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown()).await?;
    pool.close();
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt().init(); // INFO and up (`RUST_LOG` needs its "env-filter" feature)
    let metrics = install_metrics()?;
    let pool = pool_from(std::env::var("FLUSTER_CONFIG").ok().as_deref(), None).await?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{listen} (nodes: {:?})", pool.nodes());
    serve(listener, AppState { pool, metrics }).await?;
    Ok(())
}
