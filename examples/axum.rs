//! fluster in an axum service: the pool in app state, Prometheus metrics,
//! a JSON status page.
//!
//!     cargo run --example axum --features serde
//!     curl 127.0.0.1:3000/counter/user:42
//!     curl 127.0.0.1:3000/status
//!     curl 127.0.0.1:3000/metrics
//!
//! Nodes come from `FLUSTER_NODES=redis://...,redis://...`; without it,
//! three local `redis-server` nodes are started for the run. The address
//! is `FLUSTER_LISTEN` (default `127.0.0.1:3000`).

#[path = "../tests/support/mod.rs"]
mod support;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fluster::{NodeStatus, ShardedPool};
use metrics_exporter_prometheus::PrometheusHandle;
use redis::AsyncCommands;
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
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// `INCR key` on the key's node (or its stand-in while that one is boxed).
async fn counter(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, AppError> {
    let mut conn = state.pool.get(&key).await?;
    let value: i64 = conn.incr(&key, 1).await?;
    Ok(Json(json!({ "key": key, "value": value, "node": conn.node() })))
}

async fn status(State(state): State<AppState>) -> Json<Vec<NodeStatus>> {
    Json(state.pool.status())
}

async fn metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}

/// fluster's errors as HTTP: no healthy node or a busy one is 503 (retry
/// later), a failed command 502.
pub struct AppError(fluster::Error);

impl<E: Into<fluster::Error>> From<E> for AppError {
    fn from(e: E) -> Self {
        AppError(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let code = match self.0 {
            fluster::Error::Redis(_) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        (code, Json(json!({ "error": self.0.to_string() }))).into_response()
    }
}

#[allow(dead_code)] // the tests include this file for `app` alone
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    // The recorder must be installed before the pool registers its metrics.
    let metrics = support::install_prometheus();
    let (pool, _local_servers) = support::example_pool(3).await?;
    let listen = std::env::var("FLUSTER_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{listen} (nodes: {:?})", pool.nodes());
    axum::serve(listener, app(AppState { pool, metrics }))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
