//! Work on every node at once with `fan_out`: a leaderboard kept as one
//! sorted set per node, merged on read (highest score wins, as the original
//! Python fluster's `zrevrange_with_int_score` did), and a queue consumer
//! that pops from every healthy node, following nodes as they leave and
//! return.
//!
//!     for port in 7001 7002 7003; do redis-server --port $port --save "" --daemonize yes; done
//!     FLUSTER_CONFIG=examples/fluster.toml cargo run --example fan_out --features serde -- 60
//!
//! The consumer runs for the seconds given (default 30) while a producer
//! pushes a job every 50 ms to a node of its choice: kill a node
//! (`redis-cli -p 7002 shutdown nosave`) and start it again meanwhile, and
//! each round's line shows the consumer leave it and come back (jobs
//! pushed to a node that dies die with it). `tests/multi.rs` does exactly
//! that.
//!
//! In your own `Cargo.toml` (CI builds this file as a crate of its own with
//! exactly these):
//!
//!     [dependencies]
//!     fluster = { path = "../fluster", features = ["serde"] } # not on crates.io yet
//!     config = { version = "0.15", default-features = false, features = ["toml"] }
//!     tokio = { version = "1", features = ["full"] }
//!
//! The pool is configured as the README's quick start configures it: the
//! file `FLUSTER_CONFIG` names (`examples/fluster.toml` here), else
//! `fluster.toml` in the working directory if there is one, then the
//! environment over it (`FLUSTER__NODES=redis://127.0.0.1:7001,...`,
//! `FLUSTER__PENALTY_MAX_WAIT=10s`, ...).

use std::collections::HashMap;
use std::time::Duration;

use fluster::ShardedPool;
use fluster::redis::AsyncCommands;

/// The `limit` highest-scored members of the sorted set `key` across every
/// healthy node; a member found on several nodes keeps its highest score.
/// Ties are ordered by member, so the result does not depend on which node
/// answered first. Nodes that fail are left out; if all fail, the first
/// error is returned.
pub async fn zrevrange_merged(
    pool: &ShardedPool,
    key: &str,
    limit: usize,
) -> Result<Vec<(String, i64)>, fluster::Error> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let per_node = pool
        .fan_out(|mut conn| async move {
            // Each node's own top `limit` is enough: the merged top `limit`
            // can only come from them.
            conn.zrevrange_withscores::<_, Vec<(String, i64)>>(key, 0, limit as isize - 1).await
        })
        .await;
    let mut best: HashMap<String, i64> = HashMap::new();
    let mut first_error = None;
    let mut answered = 0;
    for (_node, result) in per_node {
        match result.and_then(|r| r.map_err(fluster::Error::from)) {
            Ok(members) => {
                answered += 1;
                for (member, score) in members {
                    let entry = best.entry(member).or_insert(score);
                    *entry = (*entry).max(score);
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if answered == 0 {
        return Err(first_error.unwrap_or(fluster::Error::NoHealthyNodes));
    }
    let mut merged: Vec<(String, i64)> = best.into_iter().collect();
    merged.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    merged.truncate(limit);
    Ok(merged)
}

/// One round of a queue consumer: `BRPOP queue` on every healthy node at
/// once, each waiting up to `wait`; returns the jobs popped. Run it in a
/// loop: each round asks the nodes that are healthy *then*, so the consumer
/// leaves a node while it is boxed and comes back to it when it returns.
pub async fn pop_round(pool: &ShardedPool, queue: &str, wait: Duration) -> Vec<String> {
    pool.fan_out(|mut conn| async move {
        let popped: Option<(String, String)> = conn.brpop(queue, wait.as_secs_f64()).await.ok()?;
        popped.map(|(_, job)| job)
    })
    .await
    .into_iter()
    .filter_map(|(_, result)| result.ok().flatten())
    .collect()
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let seconds: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|_| format!("seconds to run: a number, not `{arg}`"))?,
        None => 30,
    };
    let pool = pool_from(std::env::var("FLUSTER_CONFIG").ok().as_deref(), None).await?;

    // A leaderboard written wherever each game server happened to write.
    let scores = [("ann", 31), ("bob", 17), ("cyd", 45), ("ann", 52), ("dee", 8), ("bob", 29)];
    for (i, (member, score)) in scores.iter().enumerate() {
        let mut conn = pool.get(format!("writer:{i}")).await?;
        let _: () = conn.zadd("leaderboard", *member, *score).await?;
    }
    println!("top 3 across all nodes: {:?}", zrevrange_merged(&pool, "leaderboard", 3).await?);

    // A producer pushes a job every 50 ms to any healthy node; one consumer
    // drains them all, round after round, for `seconds`.
    let producer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut pushed = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                let Ok(mut conn) = pool.get_any().await else { continue };
                if conn.lpush::<_, _, ()>("jobs", format!("job-{pushed}")).await.is_ok() {
                    pushed += 1;
                }
            }
        })
    };
    println!("consuming for {seconds} s: kill a node and start it again meanwhile");
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let (mut done, mut round) = (0, 0);
    while tokio::time::Instant::now() < end {
        let jobs = pop_round(&pool, "jobs", Duration::from_millis(200)).await;
        done += jobs.len();
        round += 1;
        let up: Vec<String> = pool.status().into_iter().filter(|s| s.up).map(|s| s.name).collect();
        println!("round {round:>3}: popped {:>2} jobs from {:?}", jobs.len(), up);
    }
    producer.abort();
    println!("{done} jobs consumed");
    pool.close();
    Ok(())
}
