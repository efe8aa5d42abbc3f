//! Sentinel shards (issue 40): in some runs one node of the pools is a
//! shard served by a Sentinel master group (README: "shards served by Redis
//! Sentinel master groups"; `SentinelShard`): a master, its replica and one
//! sentinel (quorum 1), all on loopback ports of their own, all stopped
//! with the run. The pools reach it through the sentinel, straight (not
//! through the fault proxies: a proxy's faults on it cut nothing).
//!
//! Drawn from a stream of its own. The nemesis's faults on that node move
//! to the next node, but one, far enough from the run's end, which becomes
//! a [`FaultKind::FailOver`]: its master killed with `kill -9` and kept
//! down while the sentinel names the replica master (down-after 600 ms),
//! then started again, empty, as the new master's replica. Writes that
//! the killed master had acknowledged but not yet sent to its replica are
//! lost (Redis's replication is asynchronous): the checker's
//! [`FAILOVER_LOST`] allowance.
//!
//! [`FAILOVER_LOST`]: fluster_torture::check::allowance::FAILOVER_LOST

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use fluster::redis;
use fluster_torture::history::{FaultKind, RunConfig};

use crate::plan::Planned;
use crate::world::{DieWithParent, Node, free_port, server_binary};

/// How long a failover's master stays down (ms): Sentinel's down-after,
/// its election and the promotion fit well inside.
pub const DOWN_MS: u64 = 2_500;

/// Makes one node a Sentinel shard in a quarter of the runs, and one
/// fault on it a failover (the others move to the next node).
pub fn draw(config: &mut RunConfig, faults: &mut [Planned], end_ms: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x7365_6e74);
    if !rng.random_bool(0.25) {
        return;
    }
    let n = config.nodes.len();
    let shard = rng.random_range(0..n);
    config.sentinel = Some(config.nodes[shard].clone());
    let mut failed_over = false;
    for f in faults.iter_mut().filter(|f| f.node == shard) {
        let room = f.at_ms + DOWN_MS + 500 <= end_ms;
        let on_node = !matches!(
            f.kind,
            FaultKind::KillProcess | FaultKind::PauseProcess | FaultKind::ForgedNews
        );
        if !failed_over && room && on_node && !f.race {
            failed_over = true;
            f.kind = FaultKind::FailOver;
            f.length_ms = DOWN_MS;
            f.stutter = false;
        } else {
            f.node = (shard + 1) % n;
        }
    }
}

/// A shard's replica and its sentinel (the master is the world's node).
pub struct Group {
    /// The replica.
    pub replica: Node,
    sentinel: Child,
    /// The sentinel's port.
    pub port: u16,
}

impl Group {
    /// Starts a replica of `master` and a sentinel watching it under
    /// `master.name`, and waits until the sentinel knows the replica.
    pub fn start(master: &Node, dir: &Path) -> Group {
        let replicaof = ["--replicaof".to_owned(), "127.0.0.1".into(), master.port.to_string()];
        let replica = Node::start_with(&format!("{}-replica", master.name), dir, &replicaof);
        // The sentinel learns the replica from the master's first `INFO`
        // (then only every 10 s): the replica is connected before it starts.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !info(master.port).contains("connected_slaves:1") {
            std::thread::sleep(Duration::from_millis(20));
        }
        let port = free_port();
        let home = dir.join(format!("{}-sentinel", master.name));
        std::fs::create_dir_all(&home).unwrap();
        let home = std::fs::canonicalize(&home).unwrap();
        let conf = home.join("sentinel.conf");
        let name = &master.name;
        let text = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
             sentinel resolve-hostnames no\n\
             sentinel monitor {name} 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds {name} 600\n\
             sentinel failover-timeout {name} 3000\n\
             sentinel parallel-syncs {name} 1\n",
            home.display(),
            master.port
        );
        std::fs::write(&conf, text).unwrap();
        let sentinel = Command::new(server_binary())
            .arg(&conf)
            .arg("--sentinel")
            .current_dir(&home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .die_with_parent()
            .spawn()
            .expect("redis-server --sentinel could not be started");
        let group = Group { replica, sentinel, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && !group.knows_replica(name) {
            std::thread::sleep(Duration::from_millis(50));
        }
        group
    }

    /// The sentinel's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn knows_replica(&self, name: &str) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else { return false };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
        let replicas: Vec<redis::Value> =
            redis::cmd("SENTINEL").arg("REPLICAS").arg(name).query(&mut conn).unwrap_or_default();
        !replicas.is_empty()
    }
}

/// `INFO replication` of the server on `port`, or nothing.
fn info(port: u16) -> String {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
        return String::new();
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
        return String::new();
    };
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    redis::cmd("INFO").arg("replication").query(&mut conn).unwrap_or_default()
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::Plan;
    use fluster_torture::history::FaultKind;

    #[test]
    fn a_shard_is_drawn_in_some_runs_with_at_most_one_failover_on_it() {
        let (mut shards, mut failovers) = (Vec::new(), 0);
        for seed in 1..=200 {
            let plan = Plan::draw(seed, 5.0, 4, 4);
            let c = &plan.config;
            let Some(shard) = &c.sentinel else {
                assert!(plan.faults.iter().all(|f| f.kind != FaultKind::FailOver));
                continue;
            };
            shards.push(seed);
            let index = c.nodes.iter().position(|n| n == shard).unwrap();
            let on: Vec<_> = plan.faults.iter().filter(|f| f.node == index).collect();
            assert!(on.len() <= 1, "seed {seed}: {on:?}");
            if let Some(f) = on.first() {
                assert_eq!(f.kind, FaultKind::FailOver, "seed {seed}");
                assert!(f.at_ms + super::DOWN_MS + 500 <= 5_000);
                failovers += 1;
            }
        }
        println!("seeds with a Sentinel shard: {shards:?}");
        assert!((30..=75).contains(&shards.len()) && failovers >= 10, "{failovers}");
    }
}
