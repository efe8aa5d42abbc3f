//! Recipe: empty a node when it returns from the penalty box.
//!
//! While a node was boxed, stand-ins served and wrote its keys. If it kept
//! its data (it was paused or cut off, not restarted), what it holds is now
//! older than what the stand-ins saw, and its keys come home to it. For a
//! cache the safe answer is to empty it on its return: a miss costs one read
//! of the database, a stale hit serves an old value.
//!
//!     FLUSTER_NODES=redis://127.0.0.1:7001,redis://127.0.0.1:7002 \
//!         cargo run --example flush_on_return
//!
//! Writes that reach the node between its return and the flush are emptied
//! too (they become misses). With `Builder::warmup`, few keys are home yet
//! when the flush runs.

use fluster::{NodeEvent, ShardedPool};
use tokio::sync::broadcast::error::RecvError;

/// Empties each node that returns from the box, from now on. The task runs
/// as long as the pool lives; abort it to stop sooner.
pub fn flush_returning_nodes(pool: &ShardedPool) -> tokio::task::JoinHandle<()> {
    let mut events = pool.events();
    let pool = pool.clone();
    tokio::spawn(async move {
        loop {
            let node = match events.recv().await {
                Ok(NodeEvent::Returned { node, .. }) => node,
                Ok(_) => continue,
                // Events were lost while this task was behind; a Returned
                // among them would go unflushed, so say so.
                Err(RecvError::Lagged(lost)) => {
                    eprintln!("flush_on_return: {lost} node events lost");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let node = &node;
            let flushed = pool
                .fan_out(|mut conn| async move {
                    if conn.node() != &**node {
                        return Ok(false);
                    }
                    redis::cmd("FLUSHDB").query_async::<()>(&mut conn).await.map(|()| true)
                })
                .await;
            match flushed.iter().find(|(name, _)| name == &**node) {
                Some((_, Ok(Ok(true)))) => println!("flushed {node} on its return"),
                other => eprintln!("could not flush {node}: {other:?}"),
            }
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(nodes) = std::env::var("FLUSTER_NODES") else {
        eprintln!("set FLUSTER_NODES to comma-separated redis:// URLs");
        std::process::exit(2);
    };
    let pool = nodes
        .split(',')
        .fold(ShardedPool::builder(), |builder, url| builder.node(url.trim()))
        .build()
        .await?;
    let flusher = flush_returning_nodes(&pool);
    println!("flushing nodes as they return; Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    flusher.abort();
    pool.close();
    Ok(())
}
